"""The job requests: what a client sends to ``POST /api/jobs/{operation}``.

Each operation has one request model; ``OPERATIONS`` maps the operation name (the URL segment and
the orchestrator's function name) to it. Requests reject unknown fields so a typo is a 400, not a
silently ignored option. Validating a request loads neither GDAL nor PROJ (tests/test_models_light.py).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from cog_profiles import COG_PROFILES, LERC_PROFILES
from output_names import CHUNK_SIZE
from raster_models import MAX_CRS_TEXT
from storage import MAX_BLOB_NAME, check_blob_name, check_container_name


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
CogProfile = Literal[tuple(COG_PROFILES)]  # type: ignore[valid-type]  (cog_profiles: their one home)
Prefix = Annotated[Text, Field(max_length=MAX_BLOB_NAME)]
#: A target CRS: text here (bounded, printable); the HTTP edge parses it once, without files or
#: network (crs_text.canonical_crs), into its canonical text (``EPSG:<code>``, else WKT2), which is
#: what travels to the orchestrators and workers: nothing downstream parses what a client wrote.
TargetCrs = Annotated[MultilineText, Field(min_length=1, max_length=MAX_CRS_TEXT), AfterValidator(str.strip)]
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


#: Files per sync chunk unless a request says otherwise (output_names.CHUNK_SIZE, its one home).
SYNC_CHUNK_SIZE = CHUNK_SIZE
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
        "deflate", description="compression (cog_profiles.COG_PROFILES); deflate, zstd and lzw are "
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
        if value is not None and profile is not None and profile not in LERC_PROFILES:
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
    draft: DraftOutput = False

    @model_validator(mode="after")
    def _one_source(self) -> "ImportStacRequest":
        if (self.blob is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'blob' (an NDJSON, ItemCollection, item, catalog.json "
                             "or collection.json blob) or 'prefix'")
        if self.max_z_error is not None and self.profile not in LERC_PROFILES:
            raise ValueError(f"max_z_error applies only to the lerc and lerc_deflate profiles, not {self.profile!r}")
        return self

    def cog_options(self) -> "CogOptions":
        """How the raster assets are converted (never reprojected: the items describe their grids)."""
        return CogOptions(profile=self.profile, max_z_error=self.max_z_error, resampling=self.resampling)


#: The most source blobs (or items) one unpublish request names; a sync whose gone sources are
#: more runs one unpublish per this many (``orchestrators.sync_container``).
UNPUBLISH_NAMES = 10_000


class UnpublishRequest(ContainerJob):
    """Remove what the service published for source ``blobs`` or a source ``prefix`` in
    ``container``, for ``items`` of ``collection``, or for the ``entire_collection``: items (tile
    items too), COGs, tiles, thumbnails, mosaic VRTs, and the registered searches of a collection
    it empties; only outputs whose metadata says the service wrote them, never a source blob.
    ``collection`` narrows a source selection to one collection. ``dry_run`` returns the plan."""

    blobs: list[BlobName] | None = Field(None, min_length=1, max_length=UNPUBLISH_NAMES)
    prefix: Prefix | None = None
    items: list[ItemId] | None = Field(None, min_length=1, max_length=UNPUBLISH_NAMES)
    entire_collection: bool = False
    collection: CollectionId | None = None
    output_container: ContainerName | None = None
    dry_run: bool = False
    chunk_size: int | None = Field(None, ge=1, le=1000, description="output groups per sub-orchestration")
    chunks_in_flight: ChunksInFlight | None = None
    segment_chunks: SegmentChunks | None = None

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
