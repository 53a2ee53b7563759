"""One settings object for the whole app, read from the environment (Azure app settings).

Every key is an environment variable with the ``RMH_`` prefix and is listed, with a safe
placeholder, in ``local.settings.sample.json``. Defaults are the embedded ones: a local directory
stands in for blob storage and a static STAC catalog on disk stands in for pgSTAC, so nothing has
to be configured to run on one machine. A bad or missing value fails at start-up with a
:class:`SettingsError` that names the setting.
"""
from __future__ import annotations

import functools
import json
import re
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from href_policy import host_entry
from storage import check_container_name

ENV_PREFIX = "RMH_"
_NCRONTAB_FIELD = re.compile(r"^[\d*/,\-A-Za-z]+$")


class SettingsError(ValueError):
    """The environment holds a bad or missing setting; the message names each one."""


class StorageBackend(str, Enum):
    local = "local"
    azure = "azure"


class CatalogBackend(str, Enum):
    static = "static"
    pgstac = "pgstac"


class Settings(BaseSettings):
    """All configuration of rmhgeoapi. Field ``x`` is read from ``RMH_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Durable task hub (host.json reads it as %RMH_TASK_HUB_NAME%; DfMon points at it).
    task_hub_name: str = Field("rmhgeoapi", pattern=r"^[A-Za-z][A-Za-z0-9]{2,44}$")

    # Storage: a local directory (embedded default) or Azure Blob Storage.
    storage_backend: StorageBackend = StorageBackend.local
    storage_local_dir: Path = Path(".local/storage")
    storage_connection_string: SecretStr | None = None
    storage_account_url: str | None = None
    sas_ttl_minutes: int = Field(60, ge=5, le=7 * 24 * 60)
    # Where consumers read assets: unset, an Azure blob's https URL (private: sign it through the
    # token route) or, on the local backend, a path relative to the static catalog's item file; set,
    # ``<base>/<container>/<blob>`` for every asset (a CDN, or the embedded host's /files/... mount).
    asset_base_url: str | None = Field(None, pattern=r"^https?://[^\s?#]+$")
    # Keys the Planetary-Computer-shaped token route accepts (Ocp-Apim-Subscription-Key), comma
    # separated; unset, the route refuses every request.
    sas_token_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Base URL of a titiler-pgstac serving the pgSTAC catalog (e.g. https://tiler.example.org):
    # set, a job's output and each collection's links carry the mosaic's TileJSON, tiles and map
    # viewer URLs (mosaic_searches.py) and the dashboard draws through it; unset, the search id only.
    tiler_url: str | None = Field(None, pattern=r"^https?://[^\s?#]+$")

    # Containers.
    input_container: str = "rasters"
    output_container: str = "cogs"
    system_container: str = "rmh-system"

    # Catalog: a static STAC catalog directory (embedded default) or pgSTAC.
    catalog_backend: CatalogBackend = CatalogBackend.static
    static_catalog_dir: Path = Path(".local/catalog")
    static_catalog_container: str | None = None
    pgstac_dsn: SecretStr | None = None
    pgstac_use_managed_identity: bool = False
    stac_schema_dir: Path | None = None

    # Scheduled sync.
    sync_containers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    sync_schedule: str = "0 0 */6 * * *"
    sync_chunk_size: int = Field(100, ge=1, le=5000)

    # Event-driven ingest (blob events): containers whose BlobCreated/BlobDeleted events catalog or
    # uncatalog the blob (empty: the input container), and those among them whose rasters are
    # converted to COGs in the output container first.
    event_containers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    event_convert_containers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # import_stac: hosts whose URLs an import may fetch (``host`` or ``host:port``, comma
    # separated; empty: none, only this service's own storage is read), and the most bytes one
    # fetched file may have.
    import_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    import_max_fetch_bytes: int = Field(2 * 1024**3, ge=1024)

    # Change events (change_events.py): one CloudEvent per item created, updated, deleted,
    # published or revoked, delivered to an Event Grid custom topic (its endpoint; the app's
    # managed identity signs) and/or to webhook URLs; with neither, no events are recorded.
    event_grid_endpoint: str | None = Field(None, pattern=r"^https://[^\s?#]+$")
    event_webhooks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    event_source: str = Field("/rmhgeoapi", min_length=1, max_length=500, pattern=r"^\S+$")
    event_drain_schedule: str = "0 * * * * *"

    # Names of function keys for the lifecycle record (who published or revoked): the first 16
    # hex digits of a key's SHA-256 → its name ("name=fingerprint,..."; the key itself never).
    key_names: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # Processing limits.
    max_pixels_per_task: int = Field(64 * 1024 * 1024, ge=256 * 256)
    tile_size: int = Field(4096, ge=256, le=32768)
    max_raster_pixels: int = Field(50_000 * 50_000, ge=1)
    max_raster_bands: int = Field(64, ge=1)
    # A DEM the RPC model of a raster placed by RPCs takes its heights from when it is warped (a
    # GDAL path the workers read: a local file, or /vsi... with its own access); unset, the
    # RPCs' HEIGHT_OFF is the height of the whole scene. Items say which.
    rpc_dem: str | None = Field(None, max_length=2048)

    # Multidimensional inputs (cubes.py): a NetCDF/HDF5/GRIB file or Zarr store is copied to the
    # worker's local disk (work_dir) once per host and version, up to this many bytes; a file may
    # produce at most max_cube_slices 2-D slices (one COG each); one activity converts at most
    # cube_slices_per_task slices (and at most max_pixels_per_task pixels of them).
    max_cube_bytes: int = Field(4 * 1024**3, ge=1024 * 1024)
    max_cube_slices: int = Field(10_000, ge=1)
    cube_slices_per_task: int = Field(64, ge=1, le=10_000)

    # Local working files: every staging directory lives under this one directory (default: the
    # system's temporary directory + /rmhgeoapi); stale ones are removed when a worker starts.
    temp_dir: Path | None = None
    # How long an activity keeps retrying a transient fault (storage or catalog unreachable)
    # with exponential backoff before it gives up and the orchestration's retry takes over.
    outage_seconds: float = Field(90.0, ge=0, le=3600)

    # GDAL configuration options applied around every raster operation (JSON object).
    gdal_options: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MAX_RETRY": "5",
            "GDAL_HTTP_RETRY_DELAY": "1",
            "GDAL_CACHEMAX": "128",
        }
    )

    @property
    def watched_containers(self) -> list[str]:
        """The containers whose blob events are ingested (RMH_EVENT_CONTAINERS, else the input
        container), conversion containers included."""
        watched = self.event_containers or [self.input_container]
        return list(dict.fromkeys([*watched, *self.event_convert_containers]))

    @property
    def events_enabled(self) -> bool:
        """Whether catalog changes are recorded as events (some target is configured)."""
        return bool(self.event_grid_endpoint or self.event_webhooks)

    @property
    def work_dir(self) -> Path:
        """Where staging directories go (``temp_dir``, or the system temp + /rmhgeoapi)."""
        return Path(self.temp_dir) if self.temp_dir else Path(tempfile.gettempdir()) / "rmhgeoapi"

    @field_validator("storage_connection_string", "storage_account_url", "pgstac_dsn",
                     "static_catalog_container", "temp_dir", "asset_base_url", "tiler_url", "event_grid_endpoint",
                     "rpc_dem", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("input_container", "output_container", "system_container")
    @classmethod
    def _container_name(cls, value: str) -> str:
        return check_container_name(value)

    @field_validator("stac_schema_dir", mode="before")
    @classmethod
    def _schema_dir(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a directory of STAC extension schemas "
                             "(<extension>/<version>/schema.json)")
        return value

    @field_validator("static_catalog_container")
    @classmethod
    def _optional_container(cls, value: str | None) -> str | None:
        return None if value is None else check_container_name(value)

    @field_validator("sync_containers", "sas_token_keys", "event_containers",
                     "event_convert_containers", "import_allowed_hosts", "event_webhooks", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("event_webhooks")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        bad = [url for url in value if not re.match(r"^https?://[^\s/?#]+[^\s#]*$", url)]
        if bad:
            raise ValueError(f"{bad[0][:80]!r} is not an http(s) URL")
        return value

    @field_validator("key_names", mode="before")
    @classmethod
    def _key_names(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        names: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, fingerprint = part.partition("=")
            fingerprint = fingerprint.strip().lower()
            if not sep or not name.strip() or not re.fullmatch(r"[0-9a-f]{16}", fingerprint):
                raise ValueError(f"{part[:80]!r} is not name=<16 hex digits of the key's SHA-256>")
            names[fingerprint] = name.strip()
        return names

    @field_validator("asset_base_url", "tiler_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("sas_token_keys")
    @classmethod
    def _strong_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in value):
            raise ValueError("every token API key must be at least 16 characters")
        return value

    @field_validator("sync_containers", "event_containers", "event_convert_containers")
    @classmethod
    def _sync_container_names(cls, value: list[str]) -> list[str]:
        return [cls._container_name(name) for name in value]

    @field_validator("import_allowed_hosts")
    @classmethod
    def _host_entries(cls, value: list[str]) -> list[str]:
        return [host_entry(entry) for entry in value]

    @field_validator("sync_schedule", "event_drain_schedule")
    @classmethod
    def _ncrontab(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
            raise ValueError(
                f"{value!r} is not a six-field NCRONTAB expression "
                "('{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 0 */6 * * *')"
            )
        return value

    @field_validator("gdal_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"must be a JSON object of GDAL options: {err}") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object such as {"GDAL_CACHEMAX": "128"}')
        return {str(k): str(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _backend_requirements(self) -> "Settings":
        if self.storage_backend is StorageBackend.azure:
            if bool(self.storage_connection_string) == bool(self.storage_account_url):
                raise ValueError(
                    "storage_backend=azure needs exactly one of RMH_STORAGE_CONNECTION_STRING "
                    "(Azurite, keys) or RMH_STORAGE_ACCOUNT_URL (managed identity)"
                )
        if self.catalog_backend is CatalogBackend.pgstac and not self.pgstac_dsn:
            raise ValueError("catalog_backend=pgstac needs RMH_PGSTAC_DSN")
        data = {"RMH_INPUT_CONTAINER": [self.input_container], "RMH_OUTPUT_CONTAINER": [self.output_container],
                "RMH_SYNC_CONTAINERS": self.sync_containers, "RMH_EVENT_CONTAINERS": self.event_containers,
                "RMH_EVENT_CONVERT_CONTAINERS": self.event_convert_containers}
        for name, containers in data.items():
            if self.system_container in containers:
                raise ValueError(f"{name} names the system container {self.system_container!r}, which "
                                 "holds the service's own state (plans, inventories), not data")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one SettingsError."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(_describe(err)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings object, built once on first use."""
    return load_settings()


def _describe(err: ValidationError) -> str:
    problems = []
    for error in err.errors():
        loc = error.get("loc") or ()
        name = f"{ENV_PREFIX}{str(loc[0]).upper()}" if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if loc else message)
    return "invalid settings: " + "; ".join(problems)
