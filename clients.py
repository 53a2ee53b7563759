"""The clients every activity and route works through: the blob store, the catalog and the change
events' delivery, built once per process and per configuration, lazily (nothing on the network
at import time), and the static catalog's store on a blob container."""
from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Iterator

import event_delivery
import pgstac_catalog
import stac_validation
import static_catalog
from settings import CatalogBackend, Settings, StorageBackend, get_settings
from storage import BlobNotFound, BlobStore, store_from_settings


def settings() -> Settings:
    return get_settings()


@functools.lru_cache(maxsize=4)
def _store_for(config_json: str) -> BlobStore:
    return store_from_settings(Settings.model_validate_json(config_json))


@functools.lru_cache(maxsize=4)
def _catalog_for(config_json: str):
    config = Settings.model_validate_json(config_json)
    # Every item and collection is validated before it is written: core schemas (bundled in
    # pystac) and the extension schemas shipped in stac_schemas/ (plus RMH_STAC_SCHEMA_DIR's).
    validator = stac_validation.StacValidator(config.stac_schema_dir)
    # Change events are recorded with each write when some target is configured, and a delivery
    # is attempted as soon as the write commits (event_delivery.Delivery.deliver_soon).
    events = {"event_source": config.event_source, "on_events": _deliver_after_write} if config.events_enabled else {}
    if config.catalog_backend is CatalogBackend.pgstac:
        token = _aad_token_provider() if config.pgstac_use_managed_identity else None
        pool = pgstac_catalog.connection_pool(config.pgstac_dsn.get_secret_value(), password_provider=token,
                                              max_size=4)
        return pgstac_catalog.PgStacCatalog(pool, validator=validator, **events)
    store = (BlobCatalogStore(_store_for(config_json), config.static_catalog_container)
             if config.static_catalog_container else config.static_catalog_dir)
    # Hrefs into the local storage directory are written relative to each item file, so the
    # catalog and the storage directory can be moved together.
    storage_root = config.storage_local_dir if config.storage_backend is StorageBackend.local else None
    return static_catalog.StaticCatalog(store, validator=validator, storage_root=storage_root, **events)


def _deliver_after_write(count: int) -> None:
    delivery = event_delivery_for()
    if delivery is not None:
        delivery.deliver_soon()


@functools.lru_cache(maxsize=4)
def _delivery_for(config_json: str) -> event_delivery.Delivery | None:
    config = Settings.model_validate_json(config_json)
    senders: list[event_delivery.Sender] = []
    if config.event_grid_endpoint:
        senders.append(event_delivery.EventGridSender(config.event_grid_endpoint))
    if config.event_webhooks:
        senders.append(event_delivery.WebhookSender(config.event_webhooks))
    if not senders:
        return None
    return event_delivery.Delivery(_catalog_for(config_json).event_outbox(), event_delivery.Senders(senders))


def event_delivery_for() -> event_delivery.Delivery | None:
    """The catalog's event delivery (None when no target is configured)."""
    with _CLIENTS:
        return _delivery_for(_config_json(settings()))


def deliver_events(seconds: float = 50.0) -> event_delivery.DrainReport:
    """Deliver every due change event (the ``deliver_events`` timer), for up to ``seconds``."""
    delivery = event_delivery_for()
    return delivery.deliver_all(seconds) if delivery is not None else event_delivery.DrainReport()


class BlobCatalogStore:
    """static_catalog's ``CatalogStore`` on a blob container, so a static catalog can live next to the
    data on Azure (a blob upload replaces the blob whole: writes are atomic)."""

    def __init__(self, store: BlobStore, container: str):
        self.store, self.container = store, container
        store.create_container(container)

    def read_text(self, key: str) -> str | None:
        try:
            return self.store.download_bytes(self.container, key).decode("utf-8")
        except BlobNotFound:
            return None

    def write_text(self, key: str, text: str) -> None:
        self.store.upload_bytes(self.container, key, text.encode("utf-8"), content_type="application/json")

    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]:
        for blob in self.store.iter_blobs(self.container, prefix):
            if blob.name.endswith(".json") and (max_depth is None or blob.name.count("/") < max_depth):
                yield blob.name

    def delete(self, key: str) -> bool:
        return self.store.delete(self.container, key)


_last_config: tuple[Settings | None, str] = (None, "")


def _config_json(config: Settings) -> str:
    """The settings as JSON (secrets included), the key of the client caches. The settings object
    is built once per process, so its JSON is too (activities ask for clients several times)."""
    global _last_config
    if _last_config[0] is config:
        return _last_config[1]
    data = config.model_dump(mode="json")
    for secret in ("storage_connection_string", "pgstac_dsn"):
        value = getattr(config, secret)
        data[secret] = value.get_secret_value() if value is not None else None
    data["sas_token_keys"] = [key.get_secret_value() for key in config.sas_token_keys]
    _last_config = (config, json.dumps(data, sort_keys=True))
    return _last_config[1]


# Clients are built once per process; a worker process runs activities on several threads, so
# the first calls must not race to build (and then drop) a second connection pool.
_CLIENTS = threading.RLock()


def blob_store() -> BlobStore:
    with _CLIENTS:
        return _store_for(_config_json(settings()))


def catalog():
    with _CLIENTS:
        return _catalog_for(_config_json(settings()))


def _aad_token_provider():
    """An Azure AD access token per new connection, for Azure Database for PostgreSQL."""
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    scope = "https://ossrdbms-aad.database.windows.net/.default"
    return lambda: credential.get_token(scope).token


def catalog_location(config: Settings) -> str:
    """Where users find the catalog: pgSTAC, the static catalog's URL, or its local path."""
    if config.catalog_backend is CatalogBackend.pgstac:
        return "pgstac"
    if config.static_catalog_container:
        return blob_store().url(config.static_catalog_container, "catalog.json")
    return str(Path(config.static_catalog_dir).resolve() / "catalog.json")
