"""What crosses the Durable boundary between orchestrators and activities: each activity's input
and answer, and the chunk tasks of the sub-orchestrations (pydantic only: no GDAL, no PROJ)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from raster_models import MosaicResult, Tile, TilePlan, ValidationReport
from request_models import IMPORT_CHUNK_SIZE, SYNC_CHUNK_SIZE, CogOptions, UnpublishRequest


class MosaicLinks(BaseModel):
    """titiler-pgstac's URLs of a registered search, with the collection's default render."""

    tilejson: str
    tiles: str
    viewer: str


class MosaicRegistration(BaseModel):
    """What registering a collection's mosaic did: the search id (None on the static catalog,
    with the ``reason``), whether the row was new, the earlier searches of the collection it
    replaced, its zooms, and the tiler URLs when a tiler base URL is configured."""

    collection: str
    search_id: str | None = None
    registered: bool = False
    replaced: list[str] = []
    minzoom: int | None = None
    maxzoom: int | None = None
    links: MosaicLinks | None = None
    reason: str | None = None


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
    tile: Tile


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
    fails outright (``orchestration.gather``), and what its progress counts."""

    orchestrator: Literal["catalog_chunk", "convert_chunk", "import_chunk", "unpublish_chunk"]
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

    plan: TilePlan | None = None
    outcome: TaskOutcome | None = None


class MosaicTask(BaseModel):
    output_container: str
    tiles: list[str]
    mosaic: str
    source: str | None = None  # "container/blob" of the tiled source (the mosaic's rmh_source)
    source_etag: str | None = None


class MosaicSummary(MosaicResult):
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


class BlobValidation(ValidationReport):
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
    draft: bool = False  # a collection this import creates is created as a draft
    job: str | None = None


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
    draft: bool = False  # the items are written as drafts


class ImportItemTask(BaseModel):
    """Input of the per-item import activities: the item is ``index`` of the chunk blob."""

    chunk: ChunkRef
    index: int = Field(0, ge=0)
    output_container: str
    options: CogOptions = CogOptions()
    stage: str
    draft: bool = False  # the item is written as a draft


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
