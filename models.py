"""Pydantic models for job requests and results: what crosses HTTP and the Durable boundary.

Each operation has one request model; ``OPERATIONS`` maps the operation name (the URL segment in
``POST /api/jobs/{operation}`` and the orchestrator's function name) to it. Requests reject unknown
fields so a typo is a 400, not a silently ignored option.
"""
from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)
from pydantic.json_schema import SkipJsonSchema

import geo_ops
from mosaic_searches import MosaicRegistration
from storage import MAX_BLOB_NAME, check_blob_name, check_container_name


def _check_target_crs(value: str | None) -> str | None:
    """A target CRS a worker can use without opening a file or a URL (see geo_ops.parse_crs)."""
    if value is None:
        return None
    try:
        geo_ops.parse_crs(value)
    except geo_ops.GeoOpsError as err:
        raise ValueError(err.reason) from None
    return value.strip()


#: Line breaks and tabs: the only control characters a multi-line text field (a description) holds.
LINE_BREAKS = frozenset("\t\n\r")


def refuse_control_characters(value: str, allowed: frozenset[str] = frozenset()) -> str:
    """``value`` if it holds printable text only, else a ValueError naming the first offending
    character and where it is: a control character (NUL and the rest of C0, DEL, C1: Unicode's
    ``Cc``) or a lone surrogate (JSON's ``\\ud800`` escapes decode to text no UTF-8 encoder, so no
    storage or HTTP call, can take)."""
    for index, char in enumerate(value):
        code = ord(char)
        if (code < 0x20 or 0x7F <= code <= 0x9F) and char not in allowed:
            raise ValueError(f"holds the control character U+{code:04X} at position {index}; "
                             "this field takes printable text only")
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"holds a lone surrogate U+{code:04X} at position {index}, which is "
                             "not Unicode text; send the character itself or its surrogate pair")
    return value


#: Every free-text field of a request: printable text only (checked before the field's own rules).
Text = Annotated[str, AfterValidator(refuse_control_characters)]
#: A multi-line text field (a description, a WKT or PROJJSON CRS): printable text, line breaks and tabs.
MultilineText = Annotated[str, AfterValidator(lambda value: refuse_control_characters(value, LINE_BREAKS))]
ContainerName = Annotated[Text, AfterValidator(check_container_name)]
BlobName = Annotated[Text, AfterValidator(check_blob_name)]
CollectionId = Annotated[Text, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
CogProfile = Literal["deflate", "zstd", "lzw", "lerc", "lerc_deflate", "webp", "jpeg", "none"]
Prefix = Annotated[Text, Field(max_length=MAX_BLOB_NAME)]
TargetCrs = Annotated[MultilineText, Field(min_length=1, max_length=geo_ops.MAX_CRS_TEXT), AfterValidator(_check_target_crs)]
ResamplingName = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode"]
#: How a raster placed by GCPs is warped (georeferencing.GCP_TRANSFORMS; named here so request
#: models load without GDAL).
GcpTransform = Literal["polynomial", "polynomial-1", "polynomial-2", "polynomial-3", "tps"]
CollectionTitle = Annotated[Text, Field(min_length=1, max_length=200, description=(
    "title of the collection the job creates (default: what it holds and where from)"))]
CollectionDescription = Annotated[MultilineText, Field(min_length=1, max_length=4000, description=(
    "description of the collection the job creates (default: what it holds and where from); "
    "line breaks and tabs are its only control characters"))]
ItemId = Annotated[Text, Field(pattern=r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,255}$")]
Reason = Annotated[MultilineText, Field(min_length=1, max_length=1000, description="why: kept with the transition")]
DraftOutput = Annotated[bool, Field(description=(
    "write the items as drafts: invisible to searches and mosaics until `publish` (a new "
    "collection is created as a draft)"))]


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

    name: Text = Field("world", min_length=1, max_length=100)
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

    prefix: Prefix = ""


#: Files per sync chunk unless a request says otherwise (``RMH_SYNC_CHUNK_SIZE`` for the timer):
#: a chunk replays O(its size) per episode, so 100 keeps replays small (``make bench-sync``
#: measures 100 / 500 / 1,000).
SYNC_CHUNK_SIZE = 100
#: Chunks a job runs at once unless a request says otherwise: the next starts as one finishes, so
#: a chunk's catalog write follows its files instead of waiting behind every file of the job
#: (the activity queue is first in, first out), and the job's own progress moves chunk by chunk.
#: 8 chunks of 100 keep 800 tasks queued: far more than one host's workers run at once.
CHUNKS_IN_FLIGHT = 8
ChunksInFlight = Annotated[int, Field(ge=1, le=1000, description=f"chunks run at once (default {CHUNKS_IN_FLIGHT})")]
#: A job of more chunks than this gathers them in segments of this many: one sub-orchestration per
#: segment runs its chunks (``orchestrators.chunk_segment``), the job runs its segments one after
#: another. Every episode of an orchestration replays its whole history, and a job's history holds
#: one entry per chunk it gathers, so a job gathering all its chunks itself costs O(chunks²) over
#: its run (20,000 files: a 30 ms replay per finished chunk; 100,000: ~150 ms). With segments no
#: history holds more than this many chunks, and the cost per file stays that of 10,000 files.
SEGMENT_CHUNKS = 100
SegmentChunks = Annotated[int, Field(ge=2, le=10_000, description=f"chunks per segment of a large job (default "
                                                                  f"{SEGMENT_CHUNKS})")]


class SyncContainerRequest(ContainerJob):
    """Catalog every raster of a container; incremental by ETag unless ``mode`` is ``full``."""

    prefix: Prefix = ""
    collection: CollectionId | None = None
    collection_title: CollectionTitle | None = None
    collection_description: CollectionDescription | None = None
    mode: Literal["incremental", "full"] = "incremental"
    dry_run: bool = False
    chunk_size: int | None = Field(None, ge=1, le=5000)
    chunks_in_flight: ChunksInFlight | None = None
    segment_chunks: SegmentChunks | None = None
    draft: DraftOutput = False


class CatalogFileRequest(ContainerJob):
    """One raster to one STAC item, upserted."""

    blob: BlobName
    collection: CollectionId | None = None
    collection_title: CollectionTitle | None = None
    collection_description: CollectionDescription | None = None
    datetime: dt.datetime | None = None
    draft: DraftOutput = False


class ValidateRasterRequest(ContainerJob):
    """A validation report of one raster: readable, georeferenced, sane, COG layout."""

    blob: BlobName


class CogOptions(BaseModel):
    """How rasters are converted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: CogProfile = Field(
        "deflate", description="compression (geo_ops.COG_PROFILES); deflate, zstd and lzw are "
                               "lossless with the predictor chosen by data type; lerc and "
                               "lerc_deflate are lossless unless max_z_error is set")
    max_z_error: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="LERC only: the largest absolute error a pixel may take (floating-point data)")
    target_crs: TargetCrs | None = Field(
        None, description="EPSG code ('EPSG:3857', 3857), AUTHORITY:CODE, WKT, PROJJSON or a PROJ "
                          "string; never a file name or URL")
    resampling: ResamplingName = "bilinear"
    gcp_transform: GcpTransform = Field(
        "polynomial", description="rasters placed by ground control points (no geotransform) are warped "
                                  "as gdalwarp warps them: 'polynomial' fits the order gdalwarp picks by the "
                                  "GCP count (1 below 6 GCPs, else 2), 'polynomial-1'..'polynomial-3' an "
                                  "order, 'tps' a thin-plate spline through every GCP")

    @field_validator("max_z_error")
    @classmethod
    def _lerc_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        profile = info.data.get("profile")  # absent when it failed validation itself
        if value is not None and profile is not None and profile not in ("lerc", "lerc_deflate"):
            raise ValueError(f"applies only to the lerc and lerc_deflate profiles, not {profile!r}")
        return value

    def cog_options(self) -> "CogOptions":
        """The conversion options alone (without the request's other fields)."""
        return CogOptions.model_validate(self.model_dump(include=set(CogOptions.model_fields)))


class CogConversionRequest(ContainerJob, CogOptions):
    """Validate, convert to COG, validate the COG and catalog it, for the named blobs or a prefix.
    Rasters above the per-task pixel budget take the tiled path by themselves."""

    blobs: list[BlobName] | None = Field(None, min_length=1, max_length=10000)
    prefix: Prefix | None = None
    output_container: ContainerName | None = None
    collection: CollectionId | None = None
    collection_title: CollectionTitle | None = None
    collection_description: CollectionDescription | None = None
    catalog: bool = True
    chunk_size: int | None = Field(None, ge=1, le=1000, description="files per sub-orchestration")
    chunks_in_flight: ChunksInFlight | None = None
    segment_chunks: SegmentChunks | None = None
    draft: DraftOutput = False

    @model_validator(mode="after")
    def _one_selection(self) -> "CogConversionRequest":
        if (self.blobs is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'blobs' (a list of blob names) or 'prefix'")
        return self

    @field_validator("blobs")
    @classmethod
    def _distinct(cls, blobs: list[str] | None) -> list[str] | None:
        """The same blob named twice is one file: converted once, counted once."""
        return None if blobs is None else list(dict.fromkeys(blobs))


class ProcessTiledRasterRequest(ContainerJob, CogOptions):
    """Cut one raster into COG tiles (reprojected if asked), build a mosaic, catalog the tiles."""

    blob: BlobName
    output_container: ContainerName | None = None
    tile_size: int | None = Field(None, ge=256, le=32768)
    collection: CollectionId | None = None
    collection_title: CollectionTitle | None = None
    collection_description: CollectionDescription | None = None
    catalog: bool = True
    draft: DraftOutput = False


class IngestBlobRequest(ContainerJob):
    """Bring the catalog in line with one blob as it is now (the job a blob event starts): a blob
    that exists is cataloged (converted first when ``convert``), one that is gone is removed from
    the catalog. ``event`` and ``version`` (the ETag, or a deletion's sequencer) name the change,
    so the same event delivered twice is the same job; acting on the blob's current state makes
    out-of-order events end in the newest state."""

    blob: BlobName
    event: Literal["created", "deleted"] = "created"
    version: Text = Field("", max_length=256)
    convert: bool = False
    output_container: ContainerName | None = None
    collection: CollectionId | None = None


class DatabaseHealthRequest(JobRequest):
    """pgSTAC (or the static catalog) reachable, version, counts."""


#: Items per import chunk unless a request says otherwise: an item may convert several assets,
#: so a chunk holds fewer items than a sync chunk holds files.
IMPORT_CHUNK_SIZE = 50


class ImportStacRequest(ContainerJob):
    """Bring in STAC made elsewhere from a container: the items of one document (``blob``: NDJSON,
    an ItemCollection, an item, or a static catalog's ``catalog.json`` / ``collection.json`` and
    the ``child`` / ``item`` links under it) or of every NDJSON and STAC JSON blob under
    ``prefix`` (links not followed). Each item is validated, its raster assets that are not valid
    COGs are converted to COGs in ``output_container`` (the original kept as the asset's
    ``source`` alternate), and it is upserted into ``collection``, else its own collection (made
    from the source's collection.json when there is one), else the container's."""

    blob: BlobName | None = None
    prefix: Prefix | None = None
    collection: CollectionId | None = Field(
        None, description="the collection every item goes to (default: each item's own collection, "
                          "else the container's)")
    output_container: ContainerName | None = None
    profile: CogProfile = Field("deflate", description="compression of converted assets (see cog_conversion)")
    max_z_error: float | None = Field(None, ge=0, allow_inf_nan=False,
                                      description="LERC only: the largest absolute error a pixel may take")
    resampling: ResamplingName = Field(
        "bilinear", description="overviews of converted assets: nearest for nearest and mode, average otherwise")
    chunk_size: int | None = Field(None, ge=1, le=1000, description=f"items per sub-orchestration "
                                                                    f"(default {IMPORT_CHUNK_SIZE})")
    chunks_in_flight: ChunksInFlight | None = None
    segment_chunks: SegmentChunks | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ImportStacRequest":
        if (self.blob is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'blob' (an NDJSON, ItemCollection, item, catalog.json "
                             "or collection.json blob) or 'prefix'")
        if self.max_z_error is not None and self.profile not in ("lerc", "lerc_deflate"):
            raise ValueError(f"max_z_error applies only to the lerc and lerc_deflate profiles, not {self.profile!r}")
        return self

    def cog_options(self) -> "CogOptions":
        """How the raster assets are converted (never reprojected: the items describe their grids)."""
        return CogOptions(profile=self.profile, max_z_error=self.max_z_error, resampling=self.resampling)


class UnpublishRequest(ContainerJob):
    """Remove what the service published for source ``blobs`` or a source ``prefix`` in
    ``container``, for ``items`` of ``collection``, or for the ``entire_collection``: items (tile
    items too), COGs, tiles, thumbnails, mosaic VRTs, and the registered searches of a collection
    it empties; only outputs whose metadata says the service wrote them, never a source blob.
    ``collection`` narrows a source selection to one collection. ``dry_run`` returns the plan."""

    blobs: list[BlobName] | None = Field(None, min_length=1, max_length=10000)
    prefix: Prefix | None = None
    items: list[ItemId] | None = Field(None, min_length=1, max_length=10000)
    entire_collection: bool = False
    collection: CollectionId | None = None
    output_container: ContainerName | None = None
    dry_run: bool = False
    chunk_size: int | None = Field(None, ge=1, le=1000, description="output groups per sub-orchestration")
    chunks_in_flight: ChunksInFlight | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> "UnpublishRequest":
        chosen = [name for name, given in (("blobs", self.blobs is not None), ("prefix", self.prefix is not None),
                                           ("items", self.items is not None),
                                           ("entire_collection", self.entire_collection)) if given]
        if len(chosen) != 1:
            raise ValueError("give exactly one of 'blobs' (source blob names), 'prefix' (a source prefix), "
                             "'items' (item ids) or 'entire_collection': true")
        if chosen[0] in ("items", "entire_collection") and self.collection is None:
            raise ValueError(f"'{chosen[0]}' needs 'collection'")
        return self

    @field_validator("blobs", "items")
    @classmethod
    def _distinct(cls, names: list[str] | None) -> list[str] | None:
        return None if names is None else list(dict.fromkeys(names))


class VisibilityRequest(JobRequest):
    """Publish or revoke a collection's items (all of them, or ``items``), saying why."""

    collection: CollectionId
    items: list[ItemId] | None = Field(None, min_length=1, max_length=10000)
    reason: Reason
    # Set by the service (the name or fingerprint of the function key the request came with): a
    # client sending it gets a 400, so it is left out of the schema clients read.
    requested_by: SkipJsonSchema[str | None] = Field(None, max_length=200)

    #: A transition is an act, not a result to reuse: the same request later runs again.
    repeatable: ClassVar[bool] = True


class PublishRequest(VisibilityRequest):
    """Make a draft collection's items (or the named drafts) visible to searches and mosaics."""


class RevokeRequest(VisibilityRequest):
    """Hide a collection's items (or the named ones) from searches and mosaics again, as drafts."""


OPERATIONS: dict[str, type[JobRequest]] = {
    "hello_world": HelloWorldRequest,
    "list_container": ListContainerRequest,
    "sync_container": SyncContainerRequest,
    "catalog_file": CatalogFileRequest,
    "cog_conversion": CogConversionRequest,
    "process_tiled_raster": ProcessTiledRasterRequest,
    "validate_raster": ValidateRasterRequest,
    "database_health": DatabaseHealthRequest,
    "ingest_blob": IngestBlobRequest,
    "import_stac": ImportStacRequest,
    "unpublish": UnpublishRequest,
    "publish": PublishRequest,
    "revoke": RevokeRequest,
}


def instance_id_for(operation: str, request: JobRequest) -> str:
    """Instance id of a job: operation name plus a short hash of the canonical request.

    A (non-dry-run) sync is a singleton per container, ``sync_container-<container>``, so a
    scheduled and a manual sync of the same container never overlap.
    """
    if isinstance(request, SyncContainerRequest) and not request.dry_run:
        return f"sync_container-{request.container}"
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
    ``live``: the instance is fanning out and ``done``/``failed`` count only what it knew before
    (files found missing, skipped at inspection); its file or tile tasks are counted by whoever
    reads the status, from the instance's history (``history_progress``), so an orchestration
    pays nothing per finished task for its progress. ``chunks``: the numbers of the chunks a job
    had running (started, not merged) as of this status, so a reader finds the ones it has not
    counted without listing every chunk of the job; ``segments``: the same for a job that gathers
    its chunks in segments (``SEGMENT_CHUNKS``), each of which reports its own chunks so.
    """

    stage: str
    total: int = 0
    done: int = 0
    failed: int = 0
    percent: float = 0.0
    started: dt.datetime | None = None
    updated: dt.datetime | None = None
    eta: dt.datetime | None = None
    live: bool = False
    chunks: list[int] | None = None
    segments: list[int] | None = None

    @classmethod
    def at(cls, stage: str, *, total: int, done: int, failed: int = 0,
           started: dt.datetime, now: dt.datetime, live: bool = False,
           chunks: list[int] | None = None, segments: list[int] | None = None) -> "Progress":
        """Progress with percent and an estimated completion extrapolated from the rate so far."""
        finished = done + failed
        percent = round(100.0 * finished / total, 1) if total else (100.0 if stage == "completed" else 0.0)
        eta = None
        if 0 < finished < total and now > started:
            eta = now + (now - started) * ((total - finished) / finished)
        return cls(stage=stage, total=total, done=done, failed=failed, percent=percent,
                   started=started, updated=now, eta=eta, live=live, chunks=chunks, segments=segments)

    @classmethod
    def combined(cls, job: dict[str, Any], parts: list[tuple[int, int]], now: dt.datetime) -> dict[str, Any]:
        """A job's progress with what it has not counted yet: ``parts`` are (done, failed) of
        its own live fan-out and of its chunks that it has not merged (each counted from its
        custom status or its history). Custom statuses that are not progress are left as they are."""
        try:
            mine = cls.model_validate(job)
        except ValueError:
            return job
        if not parts or mine.started is None:
            return job
        done = min(mine.total, mine.done + sum(d for d, _ in parts))
        failed = min(mine.total - done, mine.failed + sum(f for _, f in parts))
        return cls.at(mine.stage, total=mine.total, done=done, failed=failed, started=mine.started,
                      now=max(now, mine.updated or mine.started)).model_dump(mode="json", exclude={"live", "chunks", "segments"})


def chunk_instance_id(job_id: str, kind: str, index: int) -> str:
    """The instance id of a job's sub-orchestration: ``<job id>:chunk-00001``."""
    return f"{job_id}:{kind}-{index:05d}"


#: Most running chunks a job names in its status (``Progress.chunks``; more are found by listing).
CHUNKS_NAMED = 64

#: The tasks that finish one file or one tile of a job (its progress counts them; an
#: ``inspect_raster`` or ``describe_blob`` is only a step towards one).
PROGRESS_ACTIVITIES = frozenset({"catalog_blob", "convert_blob", "convert_tile", "remove_outputs", "catalog_cube",
                                 "convert_cube_group"})
#: Sub-orchestrations that finish one file (a large raster tiled, a cube, within a conversion).
PROGRESS_ORCHESTRATIONS = frozenset({"process_tiled_raster", "convert_cube"})


def history_progress(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(done, failed) of the file and tile tasks finished in one instance's history (the
    extension's status format, with outputs). A task that failed beyond its retries is counted
    when its orchestrator records it, not here (a failed attempt is followed by a retry)."""
    done = failed = 0
    for event in events:
        kind, name = event.get("EventType"), event.get("FunctionName")
        if not ((kind == "TaskCompleted" and name in PROGRESS_ACTIVITIES) or (
                kind == "SubOrchestrationInstanceCompleted" and name in PROGRESS_ORCHESTRATIONS)):
            continue
        result = event.get("Result")
        if isinstance(result, str) and result[:1] == "{":
            try:
                result = json.loads(result)
            except ValueError:
                result = None
        # a file's or tile's TaskOutcome, or a tiled raster's JobResult
        bad = isinstance(result, dict) and (result.get("status") == "failed" or bool(result.get("failed")))
        failed += bad
        done += not bad
    return done, failed


# -- what crosses the Durable boundary between orchestrators and activities ---------------------

class TaskOutcome(BaseModel):
    """The result of one file's or one tile's task. ``failed`` carries the condition (``error``,
    the GeoOpsError / StacOpsError class name) and a reason a user can act on."""

    name: str
    status: Literal["done", "skipped", "failed"]
    error: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    item_id: str | None = None
    output: str | None = None


class FileRef(BaseModel):
    """A blob as listed: what a task needs to process it and to stay idempotent."""

    name: str
    etag: str = ""
    size: int | None = None
    last_modified: dt.datetime | None = None
    kind: Literal["added", "changed", "listed"] = "listed"
    # A single-file raster, a multidimensional file, or a Zarr store (a prefix of blobs: name
    # its prefix, ETag a digest of its blobs' ETags, size their sum): see cube_jobs.py.
    form: Literal["raster", "cube", "zarr"] = "raster"


class ChunkRef(BaseModel):
    """One chunk of a sync plan, stored as a JSON blob in the system container."""

    container: str
    blob: str
    count: int


class CollectionSpec(BaseModel):
    """The collection a job writes to (input of ``prepare_collection``): created when missing,
    titled after what it ``holds`` and where from (``source``) unless the request says; an
    existing one is retitled only when the request gives a title or description."""

    container: str
    collection: str | None = None
    title: str | None = None
    description: str | None = None
    holds: Literal["rasters", "cogs", "tiles"] = "rasters"
    source: str | None = None  # "container/prefix" or "container/blob"; default the container
    target_crs: str | None = None
    draft: bool = False  # a collection created by this job is created as a draft
    job: str | None = None  # the job, recorded with that transition


class SyncPlanRequest(BaseModel):
    container: str
    prefix: str = ""
    collection: str | None = None
    collection_title: str | None = None
    collection_description: str | None = None
    mode: Literal["incremental", "full"] = "incremental"
    dry_run: bool = False
    chunk_size: int = SYNC_CHUNK_SIZE
    plan_id: str
    draft: bool = False  # a collection this sync creates is created as a draft
    job: str | None = None


PLAN_NAMES_SHOWN = 1000


class SyncJobPlan(BaseModel):
    """What a sync will do. Names are listed up to PLAN_NAMES_SHOWN per kind (counts are exact)."""

    collection: str
    mode: str
    dry_run: bool
    counts: dict[str, int]
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    ignored: list[str]
    truncated: bool = False
    removed_ids: list[str] = []
    removed_sources: list[str] = []  # sources gone from the container: their whole output is unpublished
    chunks: list[ChunkRef] = []

    @classmethod
    def build(cls, request: SyncPlanRequest, collection: str, work: list[FileRef],
              unchanged: list[str], ignored: list[str], removed: list[str]) -> "SyncJobPlan":
        added = [f.name for f in work if f.kind == "added"]
        changed = [f.name for f in work if f.kind == "changed"]
        lists = {"added": added, "changed": changed, "removed": removed,
                 "unchanged": unchanged, "ignored": ignored}
        return cls(collection=collection, mode=request.mode, dry_run=request.dry_run,
                   counts={k: len(v) for k, v in lists.items()},
                   truncated=any(len(v) > PLAN_NAMES_SHOWN for v in lists.values()),
                   removed_ids=removed, **{k: v[:PLAN_NAMES_SHOWN] for k, v in lists.items()})


class ConvertTask(BaseModel):
    """Input of the per-file activities (inspect, convert, catalog)."""

    container: str
    file: FileRef
    collection: str | None = None
    datetime: dt.datetime | None = None
    output_container: str | None = None
    options: CogOptions = CogOptions()
    catalog: bool = True
    tile_size: int | None = None
    stage: str | None = None  # stage the item for a chunk-level batch write instead of writing it
    draft: bool = False  # the items are written as drafts


class InspectResult(BaseModel):
    name: str
    pixels: int = 0
    needs_tiling: bool = False
    warnings: list[str] = []
    outcome: TaskOutcome | None = None  # set when the file cannot be converted


class TileTask(BaseModel):
    """Input of one tile's activity: the source, where the tile goes, and the self-contained tile
    (window, transform, target CRS and resampling) from geo_ops' plan."""

    container: str
    blob: str
    source_etag: str
    output_container: str
    profile: str = "deflate"
    max_z_error: float | None = None
    options_digest: str
    catalog: bool = True  # a cataloged tile gets a thumbnail beside it
    tile: dict[str, Any]


class BlobRef(BaseModel):
    """One blob: the payload of the per-blob activities (describe, validate)."""

    container: str
    blob: str


class BlobDescription(BaseModel):
    """``describe_blob``'s answer: the blob's listing facts, or why it was not found."""

    found: bool
    file: FileRef | None = None
    reason: str | None = None


class CollectionRef(BaseModel):
    collection: str


class CatalogSummary(BaseModel):
    """``finalize_catalog``'s answer: the collection, where the catalog is, its extent; a job's
    output adds the collection's mosaic (``register_mosaic``)."""

    collection: str
    catalog: str
    bbox: list[float] | None = None
    mosaic: MosaicRegistration | None = None


class RemoveItemsTask(BaseModel):
    collection: str
    item_ids: list[str]


class ForgetBlobTask(BlobRef):
    collection: str
    output_container: str | None = None  # a converting ingest: its COG's item is removed too


class StageRef(BaseModel):
    """The stage a chunk's activities park their items under until the chunk flushes them."""

    stage: str
    draft: bool = False  # flushed as drafts


class UnpublishPlanRequest(BaseModel):
    """Input of ``plan_unpublish``: the request, and the id its chunk blobs are written under."""

    request: UnpublishRequest
    plan_id: str


class UnpublishPlan(BaseModel):
    """What an unpublish removes: output groups (one task each) as chunk blobs, counts, the first
    PLAN_NAMES_SHOWN names of each kind, and the collections it touches."""

    dry_run: bool
    groups: int
    counts: dict[str, int]
    items: list[str]
    blobs: list[str]
    collections: list[str]
    truncated: bool = False
    chunks: list[ChunkRef] = []


class SettleCollectionsTask(BaseModel):
    """After an unpublish: the collections it touched, and the one it removes entirely."""

    collections: list[str]
    remove: str | None = None


class VisibilityTask(BaseModel):
    """Input of ``set_visibility``: publish or revoke, what, by whom, why, from which job."""

    action: Literal["publish", "revoke"]
    collection: str
    items: list[str] | None = None
    by: str
    reason: str
    job: str


class ConversionPlanRequest(BaseModel):
    container: str
    prefix: str = ""
    chunk_size: int
    plan_id: str


class ConversionPlan(BaseModel):
    """The raster blobs under a prefix, as chunk blobs; the names that are not rasters."""

    chunks: list[ChunkRef]
    files: int
    ignored: int
    ignored_names: list[str]


class CatalogChunkTask(BaseModel):
    """Input of a ``catalog_chunk`` sub-orchestration: its chunk blob and where its items go."""

    chunk: ChunkRef
    container: str
    collection: str
    draft: bool = False


class SegmentTask(BaseModel):
    """Input of a ``chunk_segment`` sub-orchestration: the chunk sub-orchestrations it runs (their
    orchestrator and inputs, at most ``in_flight`` at once), the names each counts as failed if it
    fails outright (``orchestrators.gather``), and what its progress counts."""

    orchestrator: Literal["catalog_chunk", "convert_chunk", "import_chunk"]
    chunks: list[dict[str, Any]]
    names: list[list[str] | ChunkRef]
    in_flight: int | None = None
    stage: str
    total: int


class ConvertChunkTask(BaseModel):
    """Input of a ``convert_chunk`` sub-orchestration: the per-file task with an empty file, and
    the chunk's files (a chunk blob of a prefix plan, or blob names to describe)."""

    task: ConvertTask
    chunk: ChunkRef | None = None
    blobs: list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ConvertChunkTask":
        if (self.chunk is None) == (self.blobs is None):
            raise ValueError("a conversion chunk has either a chunk blob or blob names")
        return self


class TilePlanResult(BaseModel):
    """``plan_raster_tiles``'s answer: the plan, or the outcome of a source that cannot be tiled."""

    plan: geo_ops.TilePlan | None = None
    outcome: TaskOutcome | None = None


class MosaicTask(BaseModel):
    output_container: str
    tiles: list[str]
    mosaic: str
    source: str | None = None  # "container/blob" of the tiled source (the mosaic's rmh_source)
    source_etag: str | None = None


class MosaicSummary(geo_ops.MosaicResult):
    """``build_tile_mosaic``'s answer: the mosaic and where it is (``container/blob``)."""

    path: str


class CatalogTilesTask(BaseModel):
    task: ConvertTask
    tiles: list[str]


class DiscardTilesTask(CatalogTilesTask):
    """What a tiled conversion that failed had published: its tiles (with their thumbnails and
    items) and its mosaic, removed so a failed file leaves nothing behind."""

    mosaic: str | None = None


class CatalogTilesResult(BaseModel):
    items: int
    written: int


class InventorySummary(BaseModel):
    """``write_inventory``'s answer: totals, and where the full inventory was written."""

    container: str
    prefix: str
    count: int
    bytes: int
    by_extension: dict[str, dict[str, int]]
    inventory: BlobRef


class BlobValidation(geo_ops.ValidationReport):
    """``validate_blob``'s answer: the validation report of a blob, with its listing facts."""

    blob: str
    etag: str | None = None
    size: int | None = None


# -- import_stac ----------------------------------------------------------------------------------

class ImportPlanRequest(BaseModel):
    """Input of ``plan_import``: the source and where its items go."""

    container: str
    blob: str | None = None
    prefix: str | None = None
    collection: str | None = None
    chunk_size: int = IMPORT_CHUNK_SIZE
    plan_id: str


class ImportPlan(BaseModel):
    """``plan_import``'s answer: the items as chunk blobs, the collections they go to (created
    when missing), the documents and links that could not be read (failures, by name)."""

    chunks: list[ChunkRef]
    items: int
    documents: int
    collections: list[str]
    failures: list[TaskOutcome] = []
    unlisted_failures: dict[str, int] = {}  # condition -> count of failures beyond the listed ones
    ignored: int = 0
    ignored_names: list[str] = []


class ImportEntry(BaseModel):
    """One item of an import chunk blob: its name (id, or where it was read), where it was read,
    the base its relative hrefs resolve against, its target collection, the source item, and
    the condition that blocks it when its collection could not be made."""

    name: str
    location: str
    base: str
    collection: str
    item: dict[str, Any]
    error: str | None = None
    reason: str | None = None


class ImportChunkTask(BaseModel):
    """Input of an ``import_chunk`` sub-orchestration."""

    chunk: ChunkRef
    output_container: str
    options: CogOptions = CogOptions()


class ImportItemTask(BaseModel):
    """Input of the per-item import activities: the item is ``index`` of the chunk blob."""

    chunk: ChunkRef
    index: int = Field(0, ge=0)
    output_container: str
    options: CogOptions = CogOptions()
    stage: str


class AssetConversion(BaseModel):
    """A raster asset to convert: its key and its blob (a fetched one staged in the system container)."""

    key: str
    container: str
    file: FileRef


class ImportPrepared(TaskOutcome):
    """``prepare_import_item``'s answer: ``failed`` or ``skipped`` (unchanged since its last
    import) end the item; ``done`` means ready, with the assets to convert, those kept as
    validated COGs and those fetched from an allow-listed host (key -> staged blob)."""

    location: str = ""
    digest: str | None = None
    conversions: list[AssetConversion] = []
    cogs: list[str] = []
    fetched: dict[str, str] = {}


class ImportWriteTask(BaseModel):
    """Input of ``write_import_item``: the item, what preparing it found, each converted asset's COG."""

    task: ImportItemTask
    prepared: ImportPrepared
    outputs: dict[str, str] = {}  # asset key -> "container/blob" of its COG


FAILURES_SHOWN = 1000


# -- job metrics: fixed-bucket histograms ---------------------------------------------------------

# Upper bounds (seconds) of the duration buckets; the last bucket is open (+inf).
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100,
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
)
# Upper bounds of the tasks-per-job buckets.
COUNT_BOUNDS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class Histogram(BaseModel):
    """Counts per fixed bucket: ``counts[i]`` holds values <= ``bounds[i]`` (and > the previous)."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: int = 0
    sum: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> "Histogram":
        return cls(bounds=bounds, counts=[0] * (len(bounds) + 1))

    @classmethod
    def of(cls, values: list[float], bounds: tuple[float, ...] = DURATION_BOUNDS) -> "Histogram":
        hist = cls.empty(bounds)
        for value in values:
            hist.add(value)
        return hist

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += 1
        self.sum += value

    def merge(self, other: "Histogram") -> None:
        if tuple(other.bounds) != tuple(self.bounds):
            raise ValueError("cannot merge histograms with different bucket bounds")
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.total += other.total
        self.sum += other.sum

    def percentile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-th percentile (None when empty)."""
        if self.total == 0:
            return None
        rank = max(1, -(-self.total * q // 100))  # ceil(total * q / 100), at least the first value
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.total,
            "mean": round(self.sum / self.total, 6) if self.total else None,
            "p50": self.percentile(50), "p95": self.percentile(95), "p99": self.percentile(99),
        }


class JobEnded(BaseModel):
    """What an orchestrator reports of a finished job."""

    outcome: str = Field(pattern="^(completed|completed_with_errors|failed)$")
    job_seconds: float = Field(ge=0)
    tasks: int = Field(0, ge=0)
    tasks_failed: int = Field(0, ge=0)
    task_seconds: Histogram | None = None




class JobResult(BaseModel):
    """A job's output. ``completed_with_errors`` is true when some items failed (listed, with the
    count of each reason) while the rest completed."""

    operation: str
    completed_with_errors: bool = False
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[TaskOutcome] = []
    failure_reasons: dict[str, int] = {}
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    seconds: float | None = None
    task_seconds: Histogram = Field(default_factory=lambda: Histogram.empty(DURATION_BOUNDS))
    detail: dict[str, Any] = {}

    def add(self, outcomes: list[TaskOutcome]) -> None:
        for outcome in outcomes:
            self.total += 1
            self.task_seconds.add(outcome.seconds)
            if outcome.status == "failed":
                self.failed += 1
                self.failure_reasons[outcome.error or "Error"] = self.failure_reasons.get(outcome.error or "Error", 0) + 1
                if len(self.failures) < FAILURES_SHOWN:
                    self.failures.append(outcome)
            elif outcome.status == "skipped":
                self.skipped += 1
            else:
                self.done += 1
        self.completed_with_errors = self.failed > 0

    def add_counted(self, reasons: dict[str, int]) -> None:
        """Failures known by their count per condition only (beyond what a list carries)."""
        for reason, count in reasons.items():
            self.total += count
            self.failed += count
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count
        self.completed_with_errors = self.failed > 0

    def merge(self, other: "JobResult") -> None:
        """Fold a chunk's result into this one (counts, reasons, failures, durations)."""
        self.total += other.total
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        for reason, count in other.failure_reasons.items():
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count
        self.failures.extend(other.failures[:max(0, FAILURES_SHOWN - len(self.failures))])
        self.task_seconds.merge(other.task_seconds)
        self.completed_with_errors = self.failed > 0


# -- a job's tasks, read from the orchestration histories ----------------------------------------

ITEM_ACTIVITIES = frozenset({"catalog_blob", "convert_blob", "convert_tile", "inspect_raster", "validate_blob",
                             "prepare_import_item", "write_import_item", "remove_outputs", "catalog_cube",
                             "inspect_cube", "convert_cube_group"})


class TaskRecord(BaseModel):
    """One task of a job (a file or a tile), as ``GET /api/jobs/{id}/tasks`` lists it."""

    name: str
    activity: str
    status: Literal["running", "done", "skipped", "failed"]
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    seconds: float | None = None
    work_seconds: float | None = None
    error: str | None = None
    reason: str | None = None


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def job_tasks(histories: list[list[dict[str, Any]]]) -> list[TaskRecord]:
    """The item tasks found in a job's histories (its own and its chunks'), in schedule order.

    Works on the extension's status history format (completions carry ``FunctionName``,
    ``ScheduledTime`` and ``Input``; only unfinished tasks keep their ``TaskScheduled``) and on
    raw histories (completions point at ``TaskScheduled`` by id).
    """
    tasks: list[TaskRecord] = []
    for events in histories:
        scheduled: dict[Any, dict[str, Any]] = {}
        for position, event in enumerate(events):
            kind = event.get("EventType")
            if kind == "TaskScheduled":
                scheduled[event.get("EventId", ("pending", position))] = event
            elif kind in ("TaskCompleted", "TaskFailed"):
                origin = scheduled.pop(event.get("TaskScheduledId"), None) or event
                record = _task_record(event, origin)
                if record is not None:
                    tasks.append(record)
        tasks += [TaskRecord(name=_input_name(e), activity=e.get("Name", ""), status="running",
                             start=_when(e.get("Timestamp")))
                  for e in scheduled.values() if e.get("Name") in ITEM_ACTIVITIES]
    return tasks


def _task_record(event: dict[str, Any], origin: dict[str, Any]) -> TaskRecord | None:
    activity = event.get("FunctionName") or origin.get("Name") or ""
    if activity == "describe_blob":
        return _missing_blob(event, origin)
    if activity not in ITEM_ACTIVITIES:
        return None
    start, end = _when(event.get("ScheduledTime") or origin.get("Timestamp")), _when(event.get("Timestamp"))
    seconds = (end - start).total_seconds() if start and end else None
    if event["EventType"] == "TaskFailed":
        return TaskRecord(name=_input_name(origin), activity=activity, status="failed", start=start,
                          end=end, seconds=seconds, error="ActivityFailed",
                          reason=str(event.get("Reason") or "")[:1000])
    result = event.get("Result")
    result = json.loads(result) if isinstance(result, str) and result[:1] in "{[" else result
    if not isinstance(result, dict) or "status" not in result:  # e.g. inspect_raster's report
        named = result.get("name") if isinstance(result, dict) else None
        return TaskRecord(name=named or _input_name(origin) or _input_name(event), activity=activity,
                          status="done", start=start, end=end, seconds=seconds)
    return TaskRecord(name=result.get("name", ""), activity=activity, status=result["status"],
                      start=start, end=end, seconds=seconds, work_seconds=result.get("seconds"),
                      error=result.get("error"), reason=result.get("reason"))


def _missing_blob(event: dict[str, Any], origin: dict[str, Any]) -> TaskRecord | None:
    """A named blob the orchestrator found missing: the job counts it failed, so /tasks lists it."""
    result = event.get("Result")
    try:
        result = json.loads(result) if isinstance(result, str) else result
    except ValueError:
        return None
    if event.get("EventType") != "TaskCompleted" or not isinstance(result, dict) or result.get("found", True):
        return None
    when = _when(event.get("Timestamp"))
    return TaskRecord(name=_input_name(origin) or "?", activity="describe_blob", status="failed",
                      start=when, end=when, seconds=0.0, error="BlobNotFound",
                      reason=str(result.get("reason") or "")[:1000])


def _input_name(event: dict[str, Any]) -> str:
    raw = event.get("Input")
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ""
    if isinstance(data, dict):
        file = data.get("file") or {}
        tile = data.get("tile") or {}
        if tile:
            return f"tile {tile.get('row')},{tile.get('col')}"
        if isinstance(data.get("label"), str):  # a cube's slice group
            return data["label"]
        if isinstance(data.get("task"), dict):  # a cube's plan
            return (data["task"].get("file") or {}).get("name") or ""
        return file.get("name") or data.get("blob") or data.get("name") or ""
    return ""
