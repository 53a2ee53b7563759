"""Activities: thin adapters that validate their payload, call geo_ops / stac_ops / storage and
return a JSON-ready result.

An expected per-item failure (a bad file) is returned as a ``TaskOutcome`` with its reason, because
``task_all`` fails fast on the first raised error; transient faults (storage or catalog
unavailable) raise and are retried by the retry options declared at the call site in the
orchestrator. Activities are idempotent: deterministic output paths, STAC upserts, and a skip when
the output for the same source ETag and options already exists.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, TypeVar

import azure.durable_functions as df
import pystac
import tenacity

import catalogs
import cube_jobs
import drafts
import event_delivery
import geo_ops
import href_policy
import mosaic_searches
import output_names
import pgstac_catalog
import remote_fetch
import stac_collections
import stac_import
import stac_ops
import stac_validation
import static_catalog
import sync_planner
import unpublish
from models import (
    PLAN_NAMES_SHOWN,
    BlobDescription,
    BlobRef,
    BlobValidation,
    CatalogSummary,
    CatalogTilesResult,
    CatalogTilesTask,
    DiscardTilesTask,
    ChunkRef,
    CollectionRef,
    CollectionSpec,
    ConversionPlan,
    ConversionPlanRequest,
    ConvertTask,
    FileRef,
    ForgetBlobTask,
    AssetConversion,
    GreetingTask,
    ImportEntry,
    ImportItemTask,
    ImportPlan,
    ImportPlanRequest,
    ImportPrepared,
    ImportWriteTask,
    InspectResult,
    InventorySummary,
    ListContainerRequest,
    MosaicSummary,
    MosaicTask,
    RemoveItemsTask,
    SettleCollectionsTask,
    StageRef,
    SyncPlanRequest,
    TaskOutcome,
    TilePlanResult,
    TileTask,
    UnpublishPlan,
    UnpublishPlanRequest,
    VisibilityTask,
)
from settings import CatalogBackend, Settings, StorageBackend, get_settings
from storage import (BlobNotFound, BlobStore, ContainerNotFound, GdalPathTooLong, InvalidBlobName,
                     LocalDirStore, StorageRefused, StorageUnavailable, store_from_settings)

logger = logging.getLogger(__name__)
bp = df.Blueprint()
T = TypeVar("T")

# Conditions that describe the file, not the service: a per-item failure, never retried.
ITEM_ERRORS: tuple[type[Exception], ...] = (geo_ops.GeoOpsError, stac_ops.StacOpsError, catalogs.CatalogError,
                                            BlobNotFound, InvalidBlobName, StorageRefused, GdalPathTooLong,
                                            unpublish.UnpublishError)
# Conditions that are the service's fault (storage or catalog unreachable, a network fault while
# reading): retried inside the activity with backoff (``rides_out_outages``), then raised so the
# retry options at the orchestrator's call site apply. Never reported as a bad file.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (geo_ops.SourceUnavailable, catalogs.CatalogUnavailable,
                                                 StorageUnavailable)


def rides_out_outages(activity: Callable[[dict], Any]) -> Callable[[dict], Any]:
    """Run the activity again on a transient fault, with exponential backoff and jitter (1 s
    doubling to 15 s), for up to RMH_OUTAGE_SECONDS; then the fault propagates. Activities are
    idempotent, so a rerun redoes at most the step that failed."""

    @functools.wraps(activity)
    def run(payload: dict) -> Any:
        return ride_out(activity.__name__, activity, payload)

    return run


def ride_out(name: str, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``step(*args, **kwargs)``, run again on a transient fault as ``rides_out_outages`` does: for a step
    after one that must not be judged again (a conversion's catalog write after its COG write:
    rerunning the whole activity would find its own COG current and call the file skipped)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT_ERRORS),
        wait=tenacity.wait_exponential_jitter(multiplier=1, max=15),
        stop=tenacity.stop_after_delay(settings().outage_seconds),
        before_sleep=_log_retry(name), reraise=True)
    return retrying(step, *args, **kwargs)


def _log_retry(name: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        logger.warning("%s: transient %s, attempt %d, retrying in %.1fs: %s", name,
                       type(err).__name__, state.attempt_number, state.upcoming_sleep, scrub(str(err))[:300])
    return log


# -- clients, built once per process and per configuration -------------------------------------

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


#: GDAL options of every raster operation unless RMH_GDAL_OPTIONS says otherwise. The first read
#: of a remote file takes 256 KB: a COG's header and, for a small file, all of it, in one request
#: (GDAL's default, 16 KB, costs a small COG three reads).
GDAL_DEFAULTS = {"GDAL_INGESTED_BYTES_AT_OPEN": "262144"}


def gdal_config(extra: dict[str, str] | None = None) -> dict[str, Any]:
    """GDAL options for one operation: our defaults, the settings' options, then the blob's access
    options, normalised by geo_ops (GDAL_CACHEMAX in bytes, as rasterio wants it). GDAL's own
    temporary files go to the work directory too."""
    return geo_ops.env_options({"CPL_TMPDIR": str(work_dir()), **GDAL_DEFAULTS, **settings().gdal_options,
                                **(extra or {})})


# -- local working files ------------------------------------------------------------------------

STAGING_PREFIX = "rmh-"
_stale_removed: set[str] = set()


def work_dir() -> Path:
    """The one directory all staging directories live in (RMH_TEMP_DIR). The first use in a
    process (a worker starting) removes staging directories older than the function timeout:
    what a killed worker left behind; no live activity can be that old."""
    root = settings().work_dir
    root.mkdir(parents=True, exist_ok=True)
    if str(root) not in _stale_removed:
        _stale_removed.add(str(root))
        removed = remove_stale_staging(root, function_timeout())
        if removed:
            logger.info("removed %d stale staging directories from %s", removed, root)
    return root


def staging_dir(kind: str):
    """A temporary directory for one task's files under ``work_dir()``, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{kind}-", dir=work_dir())


def remove_stale_staging(root: Path, max_age: dt.timedelta) -> int:
    """Remove ``rmh-*`` entries of ``root`` not modified for ``max_age``; returns how many."""
    cutoff = time.time() - max_age.total_seconds()
    removed = 0
    for entry in root.iterdir():
        try:
            if not entry.name.startswith(STAGING_PREFIX) or entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:  # another worker removed it first
            continue
    return removed


@functools.lru_cache(maxsize=1)
def function_timeout() -> dt.timedelta:
    """host.json ``functionTimeout`` (what bounds an activity's life), 30 minutes if unset."""
    try:
        text = json.loads((Path(__file__).parent / "host.json").read_text()).get("functionTimeout", "")
    except (OSError, ValueError, AttributeError):
        text = ""
    match = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+)$", str(text).strip())
    if not match:  # unset or -1 (unbounded on dedicated plans): a day is beyond any activity here
        return dt.timedelta(minutes=30) if not text else dt.timedelta(days=1)
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


# -- what a user reads of a failure -------------------------------------------------------------

def scrub(text: str) -> str:
    """A message with server paths replaced: a local store's files and GDAL's /vsiaz/ paths become
    ``container/blob``, the work directory ``<temp>``."""
    store = blob_store()
    if isinstance(store, LocalDirStore):
        text = text.replace(f"{store.root}/", "")
    text = text.replace(str(settings().work_dir), "<temp>")
    return re.sub(r"/vsiaz/", "", text)


def limits() -> geo_ops.RasterLimits:
    config = settings()
    return geo_ops.RasterLimits(max_pixels=config.max_raster_pixels, max_bands=config.max_raster_bands)


@contextlib.contextmanager
def validated_source(store: BlobStore, task: ConvertTask):
    """``(GDAL access, validation report, open dataset)`` of a task's source, or the GeoOpsError
    that blocks it. What the listing already shows (an empty blob) is refused before GDAL touches
    the file; the dataset stays open so reading the item does not fetch the header again. Only
    the allowed drivers see the file; when they refuse it, its first bytes say why."""
    if task.file.size == 0:
        raise geo_ops.EmptyFile(f"{task.container}/{task.file.name}", "file is empty (0 bytes)")
    gdal = store.gdal_read_path(task.container, task.file.name)
    head = functools.partial(store.read_head, task.container, task.file.name)
    with geo_ops.validated(gdal.path, limits=limits(), gdal_config=gdal_config(gdal.config),
                           head=head) as (report, ds):
        report.raise_for_errors()
        yield gdal, report, ds


def failed(name: str, err: Exception, started: float, *, container: str | None = None) -> dict[str, Any]:
    """The outcome of a per-item failure, named after the condition; the reason names the blob
    as ``container/blob``, never a server path."""
    reason = scrub(err.reason if isinstance(err, geo_ops.GeoOpsError) else str(err))
    where = f"{container}/{name}" if container else name
    if where not in reason:
        reason = f"{where}: {reason}"
    logger.info("task %s failed: %s", where, reason)
    return TaskOutcome(name=name, status="failed", error=type(err).__name__, reason=reason,
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


def judged(store: BlobStore, container: str, name: str, attempt: Callable[[], T]) -> T:
    """``attempt()``, given a second chance before a remote file is judged bad: an outage can
    look like a missing or damaged file to GDAL, so after a per-item error storage is asked for
    the blob (StorageUnavailable propagates: the task is retried, never reported as a bad file;
    BlobNotFound: the blob vanished) and, with storage answering, the attempt runs once more. A
    failure then is the file's. Local files get no second chance: the disk does not blink."""
    try:
        return attempt()
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        if isinstance(store, LocalDirStore) or isinstance(err, BlobNotFound):
            raise
        store.get_properties(container, name)
        logger.info("%s/%s: %s; storage answers, trying once more", container, name, type(err).__name__)
    return attempt()


# -- hello_world --------------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
def say_hello(payload: dict) -> str:
    """One greeting of the hello_world job."""
    task = GreetingTask.model_validate(payload)
    return f"Hello {task.name} #{task.index + 1}"


# -- list_container -----------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def write_inventory(payload: dict) -> dict:
    """Page through a container and write its inventory as JSON to the system container."""
    request = ListContainerRequest.model_validate(payload)
    container, prefix = request.container, request.prefix
    store, config = blob_store(), settings()
    blobs, by_ext, total = [], {}, 0
    for blob in store.iter_blobs(container, prefix):
        ext = PurePosixPath(blob.name).suffix.lower() or "(none)"
        count, size = by_ext.get(ext, (0, 0))
        by_ext[ext] = (count + 1, size + blob.size)
        total += blob.size
        blobs.append(blob.model_dump(mode="json", exclude={"metadata"}))
    summary = {"container": container, "prefix": prefix, "count": len(blobs), "bytes": total,
               "by_extension": {k: {"count": c, "bytes": b} for k, (c, b) in sorted(by_ext.items())}}
    name = f"inventories/{container}/{_digest(prefix)}.json"
    store.create_container(config.system_container)
    store.upload_bytes(config.system_container, name, json.dumps({**summary, "blobs": blobs}).encode(),
                       content_type="application/json")
    return InventorySummary(**summary, inventory=BlobRef(container=config.system_container, blob=name)
                            ).model_dump(mode="json")


# -- sync_container -----------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def plan_sync(payload: dict) -> dict:
    """Compare the container with the catalog by source ETag and write the work as chunk blobs."""
    request = SyncPlanRequest.model_validate(payload)
    store, config = blob_store(), settings()
    cat = catalog()
    collection_id = stac_ops.resolve_collection_id(request.container, request.collection)
    exists = cat.get_collection(collection_id) is not None
    if not request.dry_run:  # a dry run writes nothing, not even the collection
        source = f"{request.container}/{request.prefix}" if request.prefix else request.container
        _ensure_collection(cat, CollectionSpec(container=request.container, collection=request.collection,
                                               title=request.collection_title,
                                               description=request.collection_description, source=source,
                                               draft=request.draft, job=request.job))
    known = cat.list_item_etags(collection_id) if exists and request.mode == "incremental" else {}
    track = exists and request.mode == "incremental"
    write = None
    if not request.dry_run:
        store.create_container(config.system_container)
        write = functools.partial(_write_chunk, store, config.system_container, request.plan_id)
    # rasters, cube files and Zarr stores (one source per store, not one per blob), listed,
    # compared and written chunk by chunk: memory bounded at any container size
    planner = sync_planner.SyncPlanner(request, collection_id, known, write, track_present=track)
    sync_planner.plan_listing(planner, lambda: store.iter_blobs(request.container, request.prefix))
    removed, gone = _gone_sources(cat, collection_id, request, planner.present) if track else ([], [])
    plan = planner.finish(removed)
    plan.removed_sources = gone
    return plan.model_dump(mode="json")


def _write_chunk(store: BlobStore, system: str, plan_id: str, index: int, files: list[FileRef]) -> ChunkRef:
    """One chunk of a plan as a JSON blob in the system container (``plans/<plan id>/chunk-NNNNN.json``)."""
    name = f"plans/{plan_id}/chunk-{index:05d}.json"
    body = json.dumps([f.model_dump(mode="json") for f in files]).encode()
    store.upload_bytes(system, name, body, content_type="application/json")
    return ChunkRef(container=system, blob=name, count=len(files))


def _gone_sources(cat, collection_id: str, request: SyncPlanRequest, present: set[str]) -> tuple[list[str], list[str]]:
    """The collection's items whose source blob (in the synced container, under its prefix) is
    gone, and those sources: a source's every item goes, its tiles' included, and only items
    of this container's sources (a collection may hold other containers' items)."""
    removed, gone = [], set()
    for item in cat.find_items(collection=collection_id, source_container=request.container,
                               source_prefix=request.prefix or None):
        source = unpublish.source_of(item)
        if source is not None and source.startswith(request.prefix) and source not in present:
            removed.append(item.id)
            gone.add(source)
    return sorted(removed), sorted(gone)


def _ensure_collection(cat, spec: CollectionSpec) -> str:
    """The collection's id; created when missing, retitled when the request names a new title or
    description."""
    collection_id = stac_ops.resolve_collection_id(spec.container, spec.collection)
    existing = cat.get_collection(collection_id)
    if existing is None:
        cat.upsert_collection(stac_collections.collection_for_container(
            spec.container, collection_id=collection_id, kind=spec.holds, source=spec.source,
            target_crs=spec.target_crs, title=spec.title, description=spec.description))
        if spec.draft:  # a new collection written as a draft: all of it waits for publish
            cat.mark_draft(collection_id, drafts.Transition(
                collection=collection_id, action="draft", items=0, by=f"job {spec.job or '(unknown)'}",
                reason="created as a draft by the job that writes it", job=spec.job))
    elif (spec.title or existing.title) != existing.title or (spec.description or existing.description) != existing.description:
        existing.title, existing.description = spec.title or existing.title, spec.description or existing.description
        cat.upsert_collection(existing)
    return collection_id


def _write_chunks(store: BlobStore, system: str, plan_id: str, chunk_size: int,
                  files: list[FileRef]) -> list[ChunkRef]:
    """The files as JSON chunk blobs in the system container (``plans/<plan id>/chunk-NNNNN.json``),
    so a plan of any size reaches its chunk sub-orchestrations without passing through history."""
    store.create_container(system)
    chunks = []
    for index in range(0, len(files), chunk_size):
        part = files[index:index + chunk_size]
        name = f"plans/{plan_id}/chunk-{index // chunk_size:05d}.json"
        body = json.dumps([f.model_dump(mode="json") for f in part]).encode()
        store.upload_bytes(system, name, body, content_type="application/json")
        chunks.append(ChunkRef(container=system, blob=name, count=len(part)))
    return chunks


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def read_chunk(payload: dict) -> list:
    """The files of one chunk of a sync plan."""
    chunk = ChunkRef.model_validate(payload)
    return json.loads(blob_store().download_bytes(chunk.container, chunk.blob))


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def catalog_blob(payload: dict) -> dict:
    """One raster blob read in place (GDAL virtual path) → one STAC item upserted."""
    started = time.monotonic()
    task = ConvertTask.model_validate(payload)
    store = blob_store()

    def build():
        with validated_source(store, task) as (gdal, _report, dataset):
            return _item(task, raster=dataset, access=gdal.config, data=(task.container, task.file.name),
                         data_size=task.file.size)

    try:
        item = judged(store, task.container, task.file.name, build)
        if task.stage:
            catalog().stage_items(task.stage, [item], draft=task.draft)
        else:
            catalog().upsert_items([item], draft=task.draft)
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        return failed(task.file.name, err, started, container=task.container)
    return TaskOutcome(name=task.file.name, status="done", item_id=item.id,
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


def _item(task: ConvertTask, *, raster: Any, access: dict[str, str], data: tuple[str, str], data_size: int | None,
          item_blob_name: str | None = None, title: str | None = None, thumbnail: tuple[str, str] | None = None):
    """The STAC item of ``raster``, whose file is the blob ``data`` (container, name); its id comes
    from the source container and ``item_blob_name`` (default: the source blob), qualified by the
    output container when a conversion writes elsewhere than RMH_OUTPUT_CONTAINER; its ``source``
    asset is the source blob, its ``thumbnail`` the PNG blob ``thumbnail``. Every asset href is
    the blob's public href (``RMH_ASSET_BASE_URL``, else the store's URL), with the store's
    alternate hrefs (``vsiaz`` on Azure)."""
    store = blob_store()
    blob_name = item_blob_name or task.file.name
    source_href, source_alternates = asset_hrefs(store, task.container, task.file.name)
    data_href, data_alternates = asset_hrefs(store, *data)
    thumbnail_href, thumbnail_alternates = asset_hrefs(store, *thumbnail) if thumbnail else (None, None)
    return stac_ops.item_from_raster(
        raster, container=task.container, blob_name=blob_name, collection_id=task.collection,
        item_id=item_id(task.container, blob_name, task.output_container), title=title,
        source_href=source_href, source_alternates=source_alternates, source_etag=task.file.etag,
        source_last_modified=task.file.last_modified, source_size=task.file.size,
        data_href=data_href, data_alternates=data_alternates, data_size=data_size,
        thumbnail_href=thumbnail_href, thumbnail_alternates=thumbnail_alternates,
        datetime_override=task.datetime, gdal_config=gdal_config(access),
    )


def item_id(container: str, blob_name: str, output_container: str | None = None) -> str:
    """The id of the item of a blob (cataloged in place, or converted into ``output_container``):
    qualified by the output container only when that is not RMH_OUTPUT_CONTAINER."""
    elsewhere = output_container if output_container not in (None, settings().output_container) else None
    return stac_ops.item_id_for_blob(container, blob_name, output_container=elsewhere)


def asset_hrefs(store: BlobStore, container: str, name: str) -> tuple[str, dict[str, str]]:
    """A blob's asset href (``<RMH_ASSET_BASE_URL>/<container>/<blob>``, else the store's URL:
    the https blob URL, or a local path the static catalog writes relative to each item) and its
    alternate hrefs (``{"vsiaz": "/vsiaz/<container>/<blob>"}`` on Azure)."""
    return store.public_href(container, name, settings().asset_base_url), store.alternate_hrefs(container, name)


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def prepare_collection(payload: dict) -> str:
    """The collection id for a container (default, or the request's), created when missing."""
    return _ensure_collection(catalog(), CollectionSpec.model_validate(payload))


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def flush_items(payload: dict) -> dict:
    """Write the items a chunk's activities staged, in one batch."""
    ref = StageRef.model_validate(payload)
    return catalog().flush_staged(ref.stage, draft=ref.draft).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def remove_items(payload: dict) -> int:
    """Delete the items whose source blob is gone."""
    task = RemoveItemsTask.model_validate(payload)
    return catalog().delete_items(task.collection, task.item_ids)


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def finalize_catalog(payload: dict) -> dict:
    """Recompute the collection's extent and summaries; rebuild static catalog links."""
    cat = catalog()
    collection = cat.refresh_collection(CollectionRef.model_validate(payload).collection)
    cat.finalize()
    where = catalog_location(settings())
    extent = collection.extent.spatial.bboxes[0] if collection.extent.spatial.bboxes else None
    return CatalogSummary(collection=collection.id, catalog=where, bbox=extent).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def register_mosaic(payload: dict) -> dict:
    """Register (or find) the collection's pgSTAC mosaic search and link the collection to it."""
    collection = CollectionRef.model_validate(payload).collection
    return mosaic_searches.register_collection_mosaic(catalog(), collection, tiler_url=settings().tiler_url
                                                      ).model_dump(mode="json")


def catalog_location(config: Settings) -> str:
    """Where users find the catalog: pgSTAC, the static catalog's URL, or its local path."""
    if config.catalog_backend is CatalogBackend.pgstac:
        return "pgstac"
    if config.static_catalog_container:
        return blob_store().url(config.static_catalog_container, "catalog.json")
    return str(Path(config.static_catalog_dir).resolve() / "catalog.json")


# -- validate_raster, catalog_file ---------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def validate_blob(payload: dict) -> dict:
    """A validation report of one blob (errors block, warnings do not); messages name the blob
    as ``container/blob``."""
    store = blob_store()
    ref = BlobRef.model_validate(payload)
    container, name = ref.container, ref.blob
    props = store.get_properties(container, name)
    gdal = store.gdal_read_path(container, name)
    head = functools.partial(store.read_head, container, name)
    report = judged(store, container, name, lambda: geo_ops.validate(
        gdal.path, limits=limits(), gdal_config=gdal_config(gdal.config), head=head))
    body = report.model_dump(mode="json")
    for kind in ("errors", "warnings"):
        for issue in body[kind]:
            issue["message"] = f"{container}/{name}: {scrub(issue['message'])}"
    body["path"] = f"{container}/{name}"
    return BlobValidation(blob=name, etag=props.etag, size=props.size, **body).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def describe_blob(payload: dict) -> dict:
    """The listing facts of one blob (size, ETag, last-modified), or a not-found reason."""
    ref = BlobRef.model_validate(payload)
    try:
        props = blob_store().get_properties(ref.container, ref.blob)
    except BlobNotFound as err:
        store = cube_jobs.describe_store(blob_store(), ref.container, ref.blob)  # a Zarr store's prefix
        if store is not None:
            return BlobDescription(found=True, file=store).model_dump(mode="json")
        return BlobDescription(found=False, reason=str(err)).model_dump(mode="json")
    form = "cube" if cube_jobs.form_of_name(props.name) == "cube" else "raster"
    return BlobDescription(found=True, file=FileRef(name=props.name, etag=props.etag, size=props.size,
                                                    last_modified=props.last_modified, form=form)
                           ).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def plan_conversion(payload: dict) -> dict:
    """The raster blobs under a prefix, written as chunk blobs; the files that are not rasters."""
    request = ConversionPlanRequest.model_validate(payload)
    store, config = blob_store(), settings()
    # rasters, cube files and Zarr stores (one source per store, not one per blob)
    files, ignored = cube_jobs.listed_sources(store.iter_blobs(request.container, request.prefix))
    chunks = _write_chunks(store, config.system_container, request.plan_id, request.chunk_size, files)
    return ConversionPlan(chunks=chunks, files=len(files), ignored=len(ignored),
                          ignored_names=ignored[:PLAN_NAMES_SHOWN]).model_dump(mode="json")


# -- cog_conversion -----------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def inspect_raster(payload: dict) -> dict:
    """Validate a source and say whether it fits one task or must take the tiled path."""
    started = time.monotonic()
    task = ConvertTask.model_validate(payload)
    store = blob_store()

    def inspect():
        with validated_source(store, task) as (_gdal, report, dataset):
            # Reprojected (or placed by GCPs/RPCs, always warped), the output's grid is what one
            # task writes (pixels far longer than wide become many square ones): it decides the
            # tiled path, and is refused over the limit.
            pixels = geo_ops.warped_pixels(dataset, task.options.target_crs, limits(),
                                           gcp_transform=task.options.gcp_transform, rpc_dem=settings().rpc_dem)
            return report, pixels

    try:
        report, pixels = judged(store, task.container, task.file.name, inspect)
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        outcome = failed(task.file.name, err, started, container=task.container)
        return InspectResult(name=task.file.name, outcome=TaskOutcome.model_validate(outcome)).model_dump(mode="json")
    return InspectResult(name=task.file.name, pixels=pixels,
                         needs_tiling=pixels > settings().max_pixels_per_task,
                         warnings=[w.message for w in report.warnings]).model_dump(mode="json")


def cog_blob_name(container: str, blob: str, suffix: str = ".tif") -> str:
    """Deterministic output name of a source blob: ``<container>/<path without extension>.tif``
    (``output_names.py``: the rule unpublish finds outputs by)."""
    return output_names.cog_name(container, blob, suffix)


#: Conversion options added after outputs existed, at the value that changes nothing for those
#: outputs: left out of the digest at that value, so outputs made before stay current.
LATER_OPTIONS = {"gcp_transform": "polynomial"}


def options_digest(options: dict[str, Any]) -> str:
    options = {k: v for k, v in options.items() if LATER_OPTIONS.get(k, object()) != v}
    return _digest(json.dumps(options, sort_keys=True))


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def convert_blob(payload: dict) -> dict:
    """Source blob → COG in the output container (skipped when it exists for the same source ETag
    and options) → STAC item."""
    started = time.monotonic()
    task = ConvertTask.model_validate(payload)
    store, out_name = blob_store(), cog_blob_name(task.container, task.file.name)
    digest = options_digest(task.options.model_dump(mode="json"))
    try:
        status = "skipped" if _output_current(store, task, out_name, digest) else "done"
        if status == "done":
            item_id = judged(store, task.container, task.file.name,
                             lambda: _write_cog(store, task, out_name, digest))
        else:
            item_id = ride_out("convert_blob (catalog)", judged, store, task.output_container, out_name,
                               lambda: _catalog_output(store, task, out_name)) if task.catalog else None
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        return failed(task.file.name, err, started, container=task.container)
    return TaskOutcome(name=task.file.name, status=status, item_id=item_id,
                       output=f"{task.output_container}/{out_name}",
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


def _output_current(store: BlobStore, task: ConvertTask, out_name: str, digest: str) -> bool:
    return _is_current(store, task.output_container, out_name, task.file.etag, digest)


def _is_current(store: BlobStore, container: str, name: str, source_etag: str, digest: str) -> bool:
    """True when the output exists and was made from this source ETag with these options."""
    try:
        meta = store.get_properties(container, name).metadata
    except (BlobNotFound, ContainerNotFound):
        return False
    return meta.get("rmh_source_etag") == source_etag and meta.get("rmh_options") == digest


def _write_cog(store: BlobStore, task: ConvertTask, out_name: str, digest: str) -> str | None:
    """Convert, then publish last: the COG, its thumbnail and (when cataloged) its item are made
    and the item validated from the local files before anything is uploaded; then the
    thumbnail and the COG are uploaded and the item written. If a step after the first upload
    fails, what this run uploaded is deleted before the failure goes on: a file reported failed
    leaves no output behind. Returns the item's id (None when not cataloged)."""
    src = store.gdal_read_path(task.container, task.file.name)
    opts = task.options
    with staging_dir("cog") as tmp:
        local = Path(tmp) / "out.tif"
        geo_ops.to_cog(src.path, local, profile=opts.profile, max_z_error=opts.max_z_error,
                       dst_crs=opts.target_crs, gcp_transform=opts.gcp_transform, rpc_dem=settings().rpc_dem,
                       resampling=opts.resampling, overview_resampling=_overview_resampling(opts.resampling),
                       limits=limits(), tmp_dir=tmp, gdal_config=gdal_config(src.config))
        metadata = {"rmh_source_etag": task.file.etag, "rmh_options": digest,
                    "rmh_source": f"{task.container}/{task.file.name}"}
        item = None
        store.create_container(task.output_container)  # hrefs are of blobs in it (nothing is in it yet)
        if task.catalog:
            png = local.with_suffix(".thumbnail.png")
            geo_ops.write_thumbnail(local, png, gdal_config=gdal_config())
            item = _item(task, raster=str(local), access={}, data=(task.output_container, out_name),
                         data_size=local.stat().st_size,
                         thumbnail=(task.output_container, thumbnail_blob_name(out_name)))
        with discarded_on_failure(store, task.output_container) as published:
            _publish(store, task.output_container, out_name, local, metadata, thumbnail=task.catalog,
                     published=published)
            if item is not None:
                ride_out("convert_blob (catalog)", catalog().upsert_items, [item], draft=task.draft)
    return item.id if item is not None else None


@contextlib.contextmanager
def discarded_on_failure(store: BlobStore, container: str) -> Iterator[list[str]]:
    """A list to record the blobs a step publishes in ``container``; if the step fails they are
    deleted (best effort: a deletion that fails is logged) and the failure goes on."""
    published: list[str] = []
    try:
        yield published
    except BaseException:
        discard_blobs(store, container, published)
        raise


def discard_blobs(store: BlobStore, container: str, names: list[str]) -> int:
    """Delete blobs this service published for a file that failed; how many were there."""
    removed = 0
    for name in names:
        try:
            removed += bool(store.delete(container, name))
        except (*TRANSIENT_ERRORS, *ITEM_ERRORS, ContainerNotFound) as err:
            logger.warning("could not remove %s/%s of a failed file: %s", container, name, type(err).__name__)
    return removed


def thumbnail_blob_name(cog_name: str) -> str:
    """Where a COG's thumbnail goes: beside it, ``<name without .tif>.thumbnail.png``."""
    return output_names.thumbnail_name(cog_name)


def _publish(store: BlobStore, container: str, name: str, local: Path, metadata: dict[str, str], *,
             thumbnail: bool, published: list[str] | None = None) -> None:
    """Upload a COG and, first, when it is to be cataloged, its PNG thumbnail (so a cataloged
    COG that is current has one; written beside ``local`` unless already there). Each blob
    uploaded is added to ``published``; without that list, a failure removes what was uploaded."""
    if published is None:
        with discarded_on_failure(store, container) as published:
            return _publish(store, container, name, local, metadata, thumbnail=thumbnail, published=published)
    store.create_container(container)
    if thumbnail:
        png = local.with_suffix(".thumbnail.png")
        if not png.exists():
            geo_ops.write_thumbnail(local, png, gdal_config=gdal_config())
        published.append(thumbnail_blob_name(name))
        store.upload_from_path(container, thumbnail_blob_name(name), png, content_type="image/png",
                               metadata=metadata)
    published.append(name)
    store.upload_from_path(container, name, local,
                           content_type=stac_ops.COG_MEDIA_TYPE,
                           metadata=metadata)


def _thumbnail(store: BlobStore, container: str, cog_name: str) -> tuple[str, str] | None:
    """The COG's thumbnail blob, when it has one (outputs from before thumbnails have none)."""
    name = thumbnail_blob_name(cog_name)
    return (container, name) if store.exists(container, name) else None


def _overview_resampling(resampling: str) -> str:
    return "nearest" if resampling in ("nearest", "mode") else "average"


def _catalog_output(store: BlobStore, task: ConvertTask, out_name: str) -> str:
    out = store.gdal_read_path(task.output_container, out_name)
    size = store.get_properties(task.output_container, out_name).size
    item = _item(task, raster=out.path, access=out.config, data=(task.output_container, out_name), data_size=size,
                 thumbnail=_thumbnail(store, task.output_container, out_name))
    catalog().upsert_items([item], draft=task.draft)
    return item.id


# -- process_tiled_raster -----------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def plan_raster_tiles(payload: dict) -> dict:
    """A deterministic tile plan of one source, in its grid or in the target CRS."""
    task = ConvertTask.model_validate(payload)
    store, config = blob_store(), settings()
    src = store.gdal_read_path(task.container, task.file.name)
    prefix = cog_blob_name(task.container, task.file.name, suffix="")
    started = time.monotonic()
    try:
        plan = judged(store, task.container, task.file.name, lambda: geo_ops.plan_tiles(
            src.path, output_prefix=f"{prefix}/tiles", tile_size=task.tile_size or None,
            max_pixels=config.max_pixels_per_task, dst_crs=task.options.target_crs,
            resampling=task.options.resampling, limits=limits(), gdal_config=gdal_config(src.config),
            gcp_transform=task.options.gcp_transform, rpc_dem=config.rpc_dem))
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:  # the raster cannot be tiled as asked: a per-file failure, with why
        outcome = TaskOutcome.model_validate(failed(task.file.name, err, started, container=task.container))
        return TilePlanResult(outcome=outcome).model_dump(mode="json")
    return TilePlanResult(plan=plan).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def convert_tile(payload: dict) -> dict:
    """One tile: windowed (or warped-window) read of the source → COG tile in the output container."""
    started = time.monotonic()
    task = TileTask.model_validate(payload)
    store = blob_store()
    tile = geo_ops.Tile.model_validate(task.tile)
    name = f"tile {tile.row},{tile.col}"
    try:
        if not _tile_current(store, task, tile):
            judged(store, task.container, task.blob, lambda: _write_tile(store, task, tile))
            status = "done"
        else:
            status = "skipped"
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        failure = failed(name, err, started)
        failure["reason"] = f"{task.container}/{task.blob} {failure['reason']}"
        return failure
    return TaskOutcome(name=name, status=status, output=f"{task.output_container}/{tile.output_path}",
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


def _tile_current(store: BlobStore, task: TileTask, tile) -> bool:
    return _is_current(store, task.output_container, tile.output_path, task.source_etag, task.options_digest)


def _write_tile(store: BlobStore, task: TileTask, tile) -> None:
    src = store.gdal_read_path(task.container, task.blob)
    with staging_dir("tile") as tmp:
        local = Path(tmp) / "tile.tif"
        geo_ops.process_tile(src.path, tile, local, profile=task.profile,
                             max_z_error=task.max_z_error, tmp_dir=tmp,
                             overview_resampling=_overview_resampling(tile.resampling),
                             gdal_config=gdal_config(src.config))
        _publish(store, task.output_container, tile.output_path, local,
                 {"rmh_source_etag": task.source_etag, "rmh_options": task.options_digest,
                  "rmh_source": f"{task.container}/{task.blob}"}, thumbnail=task.catalog)


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def build_tile_mosaic(payload: dict) -> dict:
    """A VRT over the tile COGs, next to them in the output container, plus a STAC item for it."""
    request = MosaicTask.model_validate(payload)
    container, tiles, vrt_name = request.output_container, request.tiles, request.mosaic
    store = blob_store()
    with staging_dir("vrt") as tmp:
        local_vrt = Path(tmp) / PurePosixPath(vrt_name).name
        paths = [store.gdal_read_path(container, t) for t in tiles]
        config = gdal_config(paths[0].config if paths else None)
        # Tiles named relative to the VRT, so it opens wherever the container is mounted.
        relative = [PurePosixPath(t).relative_to(PurePosixPath(vrt_name).parent).as_posix() for t in tiles]
        mosaic = geo_ops.build_mosaic([p.path for p in paths], local_vrt, relative_paths=relative,
                                      gdal_config=config)
        provenance = ({"rmh_source": request.source, "rmh_source_etag": request.source_etag or ""}
                      if request.source else None)  # what unpublish finds the mosaic by
        store.upload_from_path(container, vrt_name, local_vrt, content_type="application/xml", metadata=provenance)
    return MosaicSummary(**{**mosaic.model_dump(), "path": f"{container}/{vrt_name}"}).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def catalog_tiles(payload: dict) -> dict:
    """One STAC item per tile COG, upserted in one batch."""
    request = CatalogTilesTask.model_validate(payload)
    task = request.task
    store = blob_store()
    items = []
    for name in request.tiles:
        gdal = store.gdal_read_path(task.output_container, name)
        stem = PurePosixPath(name).stem
        items.append(_item(task, raster=gdal.path, access=gdal.config, data=(task.output_container, name),
                           data_size=None, item_blob_name=f"{task.file.name}/{stem}",
                           title=f"{task.file.name}, {stem}", thumbnail=_thumbnail(store, task.output_container, name)))
    result = catalog().upsert_items(items, draft=task.draft)
    return CatalogTilesResult(items=len(items), written=result.written).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def discard_tiles(payload: dict) -> int:
    """Remove what a tiled conversion that failed had published: its tiles, their thumbnails,
    their items and its mosaic (what is already gone is skipped); how many blobs were removed."""
    request = DiscardTilesTask.model_validate(payload)
    task, store = request.task, blob_store()
    names = [n for tile in request.tiles for n in (tile, thumbnail_blob_name(tile))]
    removed = discard_blobs(store, task.output_container, names + ([request.mosaic] if request.mosaic else []))
    if task.catalog and request.tiles:
        ids = [item_id(task.container, f"{task.file.name}/{PurePosixPath(t).stem}", task.output_container)
               for t in request.tiles]
        catalog().delete_items(task.collection, ids)
    return removed


# -- database_health ----------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
def catalog_health(payload: dict) -> dict:
    """Catalog reachability, version and counts."""
    return catalog().health().model_dump(mode="json")


def _digest(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- ingest_blob ---------------------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def forget_blob(payload: dict) -> int:
    """Remove the item of a blob that is gone, cataloged in place or converted into
    ``output_container`` (0 when the catalog did not have it)."""
    task = ForgetBlobTask.model_validate(payload)
    ids = {item_id(task.container, task.blob), item_id(task.container, task.blob, task.output_container)}
    return catalog().delete_items(task.collection, sorted(ids))


# -- import_stac ---------------------------------------------------------------------------------
# STAC made elsewhere: stac_import reads and rewrites it, href_policy decides where its hrefs may
# lead, remote_fetch reads allow-listed hosts; raster assets go through convert_blob (the
# conversion path of cog_conversion), scheduled by the import_chunk orchestrator.

#: Conditions of one imported item (or document): a per-item failure, never retried.
IMPORT_ITEM_ERRORS: tuple[type[Exception], ...] = (*ITEM_ERRORS, stac_import.StacImportError, href_policy.HrefError,
                                                   remote_fetch.RemoteFetchError)


def import_policy() -> href_policy.HrefPolicy:
    """Where an import may read: this storage (its account's blob URLs, RMH_ASSET_BASE_URL, /vsiaz/),
    RMH_IMPORT_ALLOWED_HOSTS, never the system container."""
    config, store = settings(), blob_store()
    own = [config.asset_base_url] if config.asset_base_url else []
    url_prefix = getattr(store, "url_prefix", None)
    if url_prefix is not None:
        own.append(url_prefix())
    return href_policy.HrefPolicy.of(own_prefixes=own, allowed_hosts=config.import_allowed_hosts,
                                     protected_containers=[config.system_container])


class StoreSourceReader:
    """``stac_import.SourceReader`` over storage and the allow-listed hosts."""

    def __init__(self, store: BlobStore, policy: href_policy.HrefPolicy):
        self.store, self.policy = store, policy

    def read(self, location: href_policy.Location) -> bytes:
        limit = stac_import.MAX_DOCUMENT_BYTES
        if isinstance(location, href_policy.UrlLocation):
            try:
                return remote_fetch.fetch_bytes(location.url, allowed=self.policy.url_allowed, max_bytes=limit)
            except remote_fetch.RemoteTooLarge as err:
                raise stac_import.DocumentTooLarge(str(err)) from None
            except remote_fetch.RemoteFetchError as err:
                raise stac_import.DocumentUnavailable(f"{type(err).__name__}: {err}") from None
        try:
            size = self.store.get_properties(location.container, location.name).size
            if size > limit:
                raise stac_import.DocumentTooLarge(f"{location}: {size} bytes; an import reads documents of "
                                                   f"at most {limit} bytes (split it into NDJSON)")
            return self.store.download_bytes(location.container, location.name)
        except (BlobNotFound, ContainerNotFound) as err:
            raise stac_import.DocumentUnavailable(f"{location} does not exist ({err})") from None

    def lines(self, location: href_policy.BlobLocation) -> Iterator[bytes]:
        try:
            with self.store.downloaded(location.container, location.name) as path, open(path, "rb") as handle:
                yield from handle
        except (BlobNotFound, ContainerNotFound) as err:
            raise stac_import.DocumentUnavailable(f"{location} does not exist ({err})") from None


class ImportChunks:
    """The items of a plan written as chunk blobs (``imports/<plan id>/chunk-NNNNN.json`` in the
    system container) as they are read, ``size`` per chunk."""

    def __init__(self, store: BlobStore, system: str, plan_id: str, size: int):
        self.store, self.system, self.plan_id, self.size = store, system, plan_id, size
        self.pending: list[ImportEntry] = []
        self.chunks: list[ChunkRef] = []
        store.create_container(system)

    def add(self, entry: ImportEntry) -> None:
        self.pending.append(entry)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"imports/{self.plan_id}/chunk-{len(self.chunks):05d}.json"
        body = json.dumps([e.model_dump(mode="json") for e in self.pending]).encode()
        self.store.upload_bytes(self.system, name, body, content_type="application/json")
        self.chunks.append(ChunkRef(container=self.system, blob=name, count=len(self.pending)))
        self.pending = []

    @property
    def items(self) -> int:
        return sum(c.count for c in self.chunks) + len(self.pending)


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def plan_import(payload: dict) -> dict:
    """Read the source (one document and its links, or every STAC document under a prefix),
    write its items as chunk blobs, create the collections they go to when missing."""
    request = ImportPlanRequest.model_validate(payload)
    store, config, policy = blob_store(), settings(), import_policy()
    if request.blob is not None:
        roots, ignored = [href_policy.BlobLocation(request.container, request.blob)], []
        strict = follow = True
    else:
        roots, ignored = [], []
        for blob in store.iter_blobs(request.container, request.prefix or ""):
            if stac_import.is_source_name(blob.name):
                roots.append(href_policy.BlobLocation(request.container, blob.name))
            else:
                ignored.append(blob.name)
        strict = follow = False
    chunks = ImportChunks(store, config.system_container, request.plan_id, request.chunk_size)
    failures: list[TaskOutcome] = []
    targets: dict[str, None] = {}
    seen = stac_import.SeenItems()

    def add(item: stac_import.SourceItem) -> None:
        collection = request.collection or item.collection or stac_ops.default_collection_id(request.container)
        try:
            stac_ops.check_id(collection)
            seen.check(item, collection)
        except (stac_ops.StacOpsError, stac_import.StacImportError) as err:
            failures.append(TaskOutcome(name=item.name, status="failed", error=type(err).__name__,
                                        reason=scrub(f"{item.location}: {err}")[:1000]))
            return
        targets[collection] = None
        chunks.add(ImportEntry(name=item.name, location=item.location, base=item.base, collection=collection,
                               item=item.item))

    read = stac_import.read_sources(roots, StoreSourceReader(store, policy), policy, follow_links=follow,
                                    strict=strict, on_item=add)
    chunks.flush()
    failures = [TaskOutcome(name=f.name, status="failed", error=f.error, reason=scrub(f.reason))
                for f in read.failures] + failures
    failures += _import_collections(request, list(targets), read.collections, policy)
    unlisted: dict[str, int] = {}  # an export of many bad lines is counted, not carried through history
    for failure in failures[PLAN_NAMES_SHOWN:]:
        unlisted[failure.error or "Error"] = unlisted.get(failure.error or "Error", 0) + 1
    return ImportPlan(chunks=chunks.chunks, items=chunks.items, documents=read.documents, collections=list(targets),
                      failures=failures[:PLAN_NAMES_SHOWN], unlisted_failures=unlisted,
                      ignored=len(ignored) + len(read.ignored),
                      ignored_names=(ignored + read.ignored)[:PLAN_NAMES_SHOWN]).model_dump(mode="json")


def _import_collections(request: ImportPlanRequest, targets: list[str],
                        sources: dict[str, stac_import.SourceCollection], policy: href_policy.HrefPolicy) -> list[TaskOutcome]:
    """Create each target collection that does not exist: from its source collection.json (for a
    request's ``collection``: the source's only one), else titled after the import. A source
    collection that cannot be brought in is a failure by name; its items still go in, to a
    collection made as if it had none."""
    cat, failures = catalog(), []
    where = f"{request.container}/{request.blob if request.blob is not None else request.prefix or ''}"
    for collection_id in targets:
        if cat.get_collection(collection_id) is not None:
            continue
        source = (sources.get(collection_id) if request.collection is None
                  else next(iter(sources.values())) if len(sources) == 1 else None)
        if source is not None:
            try:
                stac = stac_import.imported_collection(
                    source.stac, collection_id=collection_id, base=href_policy.location_from_text(source.location),
                    policy=policy, public=_public_href)
                cat.upsert_collection(pystac.Collection.from_dict(stac, migrate=False))
                continue
            except TRANSIENT_ERRORS:
                raise
            except (*IMPORT_ITEM_ERRORS, pystac.STACError, KeyError, TypeError, ValueError) as err:
                # pystac's own errors (a collection it cannot read) are named as NotStac
                error = type(err).__name__ if isinstance(err, IMPORT_ITEM_ERRORS) else "NotStac"
                failures.append(TaskOutcome(name=f"collection {collection_id}", status="failed", error=error,
                                            reason=scrub(f"{source.location}: {err}")[:1000]))
        cat.upsert_collection(stac_collections.collection_for_container(
            request.container, collection_id=collection_id, kind="cogs", source=where,
            title=f"STAC imported from {where} ({collection_id})",
            description=f"Items imported from the STAC in {where}; raster assets converted to Cloud "
                        "Optimized GeoTIFFs, the originals kept as each asset's source alternate."))
    return failures


@functools.lru_cache(maxsize=16)
def _import_chunk(container: str, blob: str) -> tuple[ImportEntry, ...]:
    """The entries of an import chunk blob, read once per process (chunk names are unique per run)."""
    return tuple(ImportEntry.model_validate(e) for e in json.loads(blob_store().download_bytes(container, blob)))


@functools.lru_cache(maxsize=2)
def _import_validator(schema_dir: str | None) -> stac_validation.StacValidator:
    return stac_validation.StacValidator(schema_dir)


def _public_href(location: href_policy.BlobLocation) -> stac_import.PublicHref:
    href, alternates = asset_hrefs(blob_store(), location.container, location.name)
    return stac_import.PublicHref(href=href, alternates=alternates)


def _import_failure(entry: ImportEntry, err: Exception, started: float) -> dict:
    """A failed item, named by its id with where it was read and the condition."""
    reason = scrub(err.reason if isinstance(err, geo_ops.GeoOpsError) else str(err))
    logger.info("import of %s (%s) failed: %s", entry.name, entry.location, reason)
    return ImportPrepared(name=entry.name, status="failed", error=type(err).__name__, location=entry.location,
                          reason=f"{entry.location}: {reason}"[:2000],
                          seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def prepare_import_item(payload: dict) -> dict:
    """Validate one source item, resolve its hrefs, skip it when its digest is unchanged, fetch
    its allow-listed remote rasters, and judge each raster asset: a valid COG is kept, any other
    is to be converted."""
    started = time.monotonic()
    task = ImportItemTask.model_validate(payload)
    entry = _import_chunk(task.chunk.container, task.chunk.blob)[task.index]
    try:
        prepared = _prepare_import(blob_store(), task, entry)
    except TRANSIENT_ERRORS:
        raise
    except IMPORT_ITEM_ERRORS as err:
        return _import_failure(entry, err, started)
    prepared.seconds = round(time.monotonic() - started, 4)
    return prepared.model_dump(mode="json")


def _prepare_import(store: BlobStore, task: ImportItemTask, entry: ImportEntry) -> ImportPrepared:
    policy = import_policy()
    item = stac_import.source_item(entry.item)
    schemas = settings().stac_schema_dir
    _import_validator(str(schemas) if schemas else None).validate_item(stac_import.as_member_of(item, entry.collection))
    base = href_policy.location_from_text(entry.base)
    plans = stac_import.plan_assets(item, base, policy)
    rasters = [plan for plan in plans if plan.raster]
    versions = {plan.key: _asset_version(store, plan) for plan in rasters}
    digest = stac_import.import_digest(entry.item, collection=entry.collection, asset_versions=versions,
                                       options=task.options.model_dump(mode="json"))
    prepared = ImportPrepared(name=entry.name, status="done", item_id=item["id"], location=entry.location,
                              digest=digest)
    existing = catalog().get_item(entry.collection, item["id"])
    if existing is not None and existing.properties.get(stac_ops.IMPORT_DIGEST) == digest:
        return prepared.model_copy(update={"status": "skipped"})
    for plan in rasters:
        _prepare_raster(store, plan, prepared)
    return prepared


def _asset_version(store: BlobStore, plan: stac_import.AssetPlan) -> str:
    """What a raster asset is now: its blob's ETag, or (not fetched for this) its URL."""
    if isinstance(plan.location, href_policy.UrlLocation):
        return plan.location.url
    try:
        return store.get_properties(plan.location.container, plan.location.name).etag
    except (BlobNotFound, ContainerNotFound) as err:
        raise BlobNotFound(f"raster asset {plan.key!r}: {err}") from None


def _prepare_raster(store: BlobStore, plan: stac_import.AssetPlan, prepared: ImportPrepared) -> None:
    """Validate one raster asset with the allow-listed drivers: a valid COG is kept, anything
    else is to be converted (within one task's pixel budget)."""
    location, fetched = plan.location, None
    if isinstance(location, href_policy.UrlLocation):
        location, fetched = _fetch_asset(store, prepared.item_id or prepared.name, plan.key, location.url)
    try:
        _judge_raster(store, plan, location, fetched, prepared)
    except BaseException:
        if fetched:  # a copy that is not going to be converted is not kept
            store.delete(location.container, location.name)
        raise


def _judge_raster(store: BlobStore, plan: stac_import.AssetPlan, location: href_policy.BlobLocation,
                  fetched: str | None, prepared: ImportPrepared) -> None:
    props = store.get_properties(location.container, location.name)
    file = FileRef(name=location.name, etag=fetched or props.etag, size=props.size)
    gdal = store.gdal_read_path(location.container, location.name)
    head = functools.partial(store.read_head, location.container, location.name)
    try:
        report = judged(store, location.container, location.name, lambda: geo_ops.validate(
            gdal.path, limits=limits(), gdal_config=gdal_config(gdal.config), head=head))
        report.raise_for_errors()
    except geo_ops.GeoOpsError as err:
        raise type(err)(err.path, f"raster asset {plan.key!r} ({plan.href[:300]}): {err.reason}") from None
    if report.is_cog:
        prepared.cogs.append(plan.key)
        if fetched:  # a remote COG stays where it is; the copy was only for judging it
            store.delete(location.container, location.name)
        return
    pixels = (report.width or 0) * (report.height or 0)
    if pixels > settings().max_pixels_per_task:
        raise stac_import.AssetTooLarge(
            f"raster asset {plan.key!r} ({plan.href[:300]}) is not a COG and has {pixels} pixels, above one "
            f"task's budget ({settings().max_pixels_per_task}, RMH_MAX_PIXELS_PER_TASK): convert it with "
            "cog_conversion or process_tiled_raster first")
    if fetched:
        prepared.fetched[plan.key] = location.name
    prepared.conversions.append(AssetConversion(key=plan.key, container=location.container, file=file))


def _fetch_asset(store: BlobStore, item_id: str, key: str, url: str) -> tuple[href_policy.BlobLocation, str]:
    """An allow-listed remote asset copied into the system container (``imports/remote/<hash of
    the item id and URL>/<name>``: one copy per item, so an item's copy is removed once it is
    written without touching another's), and the SHA-256 of its bytes: its version, so a fetch
    of the same bytes converts nothing again."""
    config, policy = settings(), import_policy()
    leaf = PurePosixPath(urllib.parse.urlsplit(url).path).name
    leaf = re.sub(r"[^A-Za-z0-9._-]", "_", leaf).strip(".") or "asset"
    name = f"imports/remote/{_digest(item_id + chr(10) + url, 24)}/{leaf[:200]}"
    with staging_dir("fetch") as tmp:
        local = Path(tmp) / "asset"
        try:
            fetched = remote_fetch.fetch_to_path(url, local, allowed=policy.url_allowed,
                                                 max_bytes=config.import_max_fetch_bytes)
        except remote_fetch.RemoteFetchError as err:
            raise type(err)(f"raster asset {key!r}: {err}") from None
        store.create_container(config.system_container)
        try:
            current = store.get_properties(config.system_container, name).metadata.get("rmh_sha256")
        except BlobNotFound:
            current = None
        if current != fetched.sha256:
            store.upload_from_path(config.system_container, name, local, metadata={"rmh_sha256": fetched.sha256})
    return href_policy.BlobLocation(config.system_container, name), fetched.sha256


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def write_import_item(payload: dict) -> dict:
    """The item rewritten for this catalog (converted assets pointing at their COGs) and staged
    for the chunk's batch write; fetched copies removed once converted."""
    started = time.monotonic()
    write = ImportWriteTask.model_validate(payload)
    task, prepared = write.task, write.prepared
    entry = _import_chunk(task.chunk.container, task.chunk.blob)[task.index]
    store = blob_store()
    try:
        item = _imported_item(write, entry)
        catalog().stage_items(task.stage, [item])
    except TRANSIENT_ERRORS:
        raise
    except IMPORT_ITEM_ERRORS as err:
        return _import_failure(entry, err, started)
    for staged in prepared.fetched.values():
        store.delete(settings().system_container, staged)
    return TaskOutcome(name=entry.name, status="done", item_id=item["id"],
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


def _imported_item(write: ImportWriteTask, entry: ImportEntry) -> dict[str, Any]:
    policy = import_policy()
    item = stac_import.source_item(entry.item)
    base = href_policy.location_from_text(entry.base)
    plans = stac_import.plan_assets(item, base, policy)
    converted = {key: href_policy.location_from_text(output) for key, output in write.outputs.items()}
    return stac_import.imported_item(item, plans=plans, base=base, policy=policy, collection=entry.collection,
                                     public=_public_href, converted=converted, cogs=write.prepared.cogs,
                                     provenance=entry.location, digest=write.prepared.digest or "")


# -- unpublish (unpublish.py) ---------------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def plan_unpublish(payload: dict) -> dict:
    """The output groups of an unpublish, written as chunk blobs (none for a dry run), with counts
    and the first names of the items and blobs it removes."""
    plan_request = UnpublishPlanRequest.model_validate(payload)
    request, config, store = plan_request.request, settings(), blob_store()
    selection = unpublish.Selection(container=request.container, collection=request.collection,
                                    items=request.items, blobs=request.blobs, prefix=request.prefix,
                                    entire_collection=request.entire_collection)
    outputs = [config.output_container, *([request.output_container] if request.output_container else [])]
    groups = unpublish.plan_groups(catalog(), store, selection, outputs)
    items = [f"{i.collection}/{i.id}" for g in groups for i in g.items]
    blobs = [b.path for g in groups for b in g.blobs]
    collections = sorted({i.collection for g in groups for i in g.items} | (
        {request.collection} if request.entire_collection else set()))
    plan = UnpublishPlan(dry_run=request.dry_run, groups=len(groups),
                         counts={"groups": len(groups), "items": len(items), "blobs": len(blobs)},
                         items=items[:PLAN_NAMES_SHOWN], blobs=blobs[:PLAN_NAMES_SHOWN], collections=collections,
                         truncated=max(len(items), len(blobs)) > PLAN_NAMES_SHOWN)
    if not request.dry_run and groups:
        store.create_container(config.system_container)
        size = request.chunk_size or 100
        for index in range(0, len(groups), size):
            part = groups[index:index + size]
            name = f"plans/{plan_request.plan_id}/unpublish-{index // size:05d}.json"
            store.upload_bytes(config.system_container, name, json.dumps(
                [g.model_dump(mode="json") for g in part]).encode(), content_type="application/json")
            plan.chunks.append(ChunkRef(container=config.system_container, blob=name, count=len(part)))
    return plan.model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def remove_outputs(payload: dict) -> dict:
    """One output group: its blobs, then its items. A blob that cannot be deleted fails the group,
    naming it; its items stay, so a rerun plans the group again."""
    started = time.monotonic()
    group = unpublish.OutputGroup.model_validate(payload)
    try:
        removed = unpublish.remove_group(catalog(), blob_store(), group)
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        return failed(group.name, err, started)
    status = "done" if removed.items or removed.blobs else "skipped"  # already gone: a rerun
    return TaskOutcome(name=group.name, status=status, output=f"{removed.items} items, {removed.blobs} blobs",
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def settle_collections(payload: dict) -> dict:
    """After an unpublish: the collection removed entirely (when asked, and empty), the searches
    registered for each collection it emptied, the extent of the others recomputed."""
    task = SettleCollectionsTask.model_validate(payload)
    cat, report = catalog(), {"removed": [], "emptied": [], "searches_removed": 0, "kept": []}
    for collection in task.collections:
        if cat.get_collection(collection) is None:
            continue
        if cat.count_items(collection):
            cat.refresh_collection(collection)
            report["kept"].append(collection)
            continue
        report["searches_removed"] += cat.remove_searches(collection)
        if collection == task.remove:
            cat.delete_collection(collection)
            report["removed"].append(collection)
        else:
            cat.refresh_collection(collection)
            report["emptied"].append(collection)
    cat.finalize()
    return report


# -- publish, revoke (drafts.py) --------------------------------------------------------------

@bp.activity_trigger(input_name="payload")
@rides_out_outages
def set_visibility(payload: dict) -> dict:
    """Publish a collection's drafts or revoke its items, in one catalog transaction, with the
    transition recorded."""
    task = VisibilityTask.model_validate(payload)
    transition = drafts.Transition(collection=task.collection, action=task.action, items=0, by=task.by,
                                   reason=task.reason, job=task.job)
    return catalog().set_visibility(task.action, task.collection, task.items, transition).model_dump(mode="json")
