"""Pydantic models for job requests and results: what crosses HTTP and the Durable boundary.

Each operation has one request model; ``OPERATIONS`` maps the operation name (the URL segment in
``POST /api/jobs/{operation}`` and the orchestrator's function name) to it. Requests reject unknown
fields so a typo is a 400, not a silently ignored option.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from storage import check_blob_name, check_container_name

ContainerName = Annotated[str, AfterValidator(check_container_name)]
BlobName = Annotated[str, AfterValidator(check_blob_name)]
CollectionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
CogProfile = Literal["deflate", "lzw", "zstd", "webp", "jpeg", "lerc", "lerc_deflate", "raw"]
ResamplingName = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"]


class JobRequest(BaseModel):
    """Base of every operation's request body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of the request: equal requests give equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def job_hash(self, length: int = 12) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:length]


class HelloWorldRequest(JobRequest):
    """Proof of the pipeline: ``count`` greetings to ``name``, one activity each."""

    name: str = Field("world", min_length=1, max_length=100)
    count: int = Field(3, ge=1, le=1000)


class GreetingTask(BaseModel):
    """Input of one greeting activity."""

    model_config = ConfigDict(extra="forbid")

    name: str
    index: int = Field(ge=0)


class HelloWorldResult(BaseModel):
    greetings: list[str]


class ContainerJob(JobRequest):
    """A job over one container; ``container`` defaults to RMH_INPUT_CONTAINER at submission."""

    container: ContainerName | None = None

    def with_defaults(self, *, input_container: str, output_container: str) -> "ContainerJob":
        updates: dict[str, Any] = {}
        if self.container is None:
            updates["container"] = input_container
        if "output_container" in type(self).model_fields and getattr(self, "output_container") is None:
            updates["output_container"] = output_container
        return self.model_copy(update=updates) if updates else self


class ListContainerRequest(ContainerJob):
    """Inventory of a container, written as a JSON blob to the system container."""

    prefix: str = ""


class SyncContainerRequest(ContainerJob):
    """Catalog every raster of a container; incremental by ETag unless ``mode`` is ``full``."""

    prefix: str = ""
    collection: CollectionId | None = None
    mode: Literal["incremental", "full"] = "incremental"
    dry_run: bool = False
    chunk_size: int | None = Field(None, ge=1, le=5000)


class CatalogFileRequest(ContainerJob):
    """One raster to one STAC item, upserted."""

    blob: BlobName
    collection: CollectionId | None = None
    datetime: dt.datetime | None = None


class ValidateRasterRequest(ContainerJob):
    """A validation report of one raster: readable, georeferenced, sane, COG layout."""

    blob: BlobName


class CogOptions(BaseModel):
    """How rasters are converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: CogProfile = "deflate"
    target_crs: str | None = Field(None, min_length=3, max_length=20000,
                                   description="EPSG code ('EPSG:3857'), WKT or PROJ string")
    resampling: ResamplingName = "bilinear"


class CogConversionRequest(ContainerJob, CogOptions):
    """Validate, convert to COG, validate the COG and catalog it, for the named blobs or a prefix.
    Rasters above the per-task pixel budget take the tiled path by themselves."""

    blobs: list[BlobName] | None = Field(None, min_length=1, max_length=10000)
    prefix: str | None = None
    output_container: ContainerName | None = None
    collection: CollectionId | None = None
    catalog: bool = True

    @model_validator(mode="after")
    def _one_selection(self) -> "CogConversionRequest":
        if (self.blobs is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'blobs' (a list of blob names) or 'prefix'")
        return self


class ProcessTiledRasterRequest(ContainerJob, CogOptions):
    """Cut one raster into COG tiles (reprojected if asked), build a mosaic, catalog the tiles."""

    blob: BlobName
    output_container: ContainerName | None = None
    tile_size: int | None = Field(None, ge=256, le=32768)
    collection: CollectionId | None = None
    catalog: bool = True


class DatabaseHealthRequest(JobRequest):
    """pgSTAC (or the static catalog) reachable, version, counts."""


OPERATIONS: dict[str, type[JobRequest]] = {
    "hello_world": HelloWorldRequest,
    "list_container": ListContainerRequest,
    "sync_container": SyncContainerRequest,
    "catalog_file": CatalogFileRequest,
    "cog_conversion": CogConversionRequest,
    "process_tiled_raster": ProcessTiledRasterRequest,
    "validate_raster": ValidateRasterRequest,
    "database_health": DatabaseHealthRequest,
}


def instance_id_for(operation: str, request: JobRequest) -> str:
    """Instance id of a job: operation name plus a short hash of the canonical request."""
    return f"{operation}-{request.job_hash()}"


def problems_of(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "a.b", "problem": "..."}]`` for a 400 response."""
    out = []
    for error in errors:
        field = ".".join(str(part) for part in error.get("loc", ())) or "(body)"
        message = error["msg"].removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field; remove it"
        out.append({"field": field, "problem": message})
    return out


class Progress(BaseModel):
    """A job's custom status: small JSON that the status URL and the Durable Functions Monitor show.

    Orchestrators build it from ``context.current_utc_datetime`` only, so it is deterministic.
    """

    stage: str
    total: int = 0
    done: int = 0
    failed: int = 0
    percent: float = 0.0
    started: dt.datetime | None = None
    updated: dt.datetime | None = None
    eta: dt.datetime | None = None

    @classmethod
    def at(cls, stage: str, *, total: int, done: int, failed: int = 0,
           started: dt.datetime, now: dt.datetime) -> "Progress":
        """Progress with percent and an estimated completion extrapolated from the rate so far."""
        finished = done + failed
        percent = round(100.0 * finished / total, 1) if total else 100.0
        eta = None
        if 0 < finished < total and now > started:
            eta = now + (now - started) * ((total - finished) / finished)
        return cls(stage=stage, total=total, done=done, failed=failed, percent=percent,
                   started=started, updated=now, eta=eta)
