"""Activities of cataloging rasters in place: hello_world's greeting, a container's inventory, a
sync's plan and chunks, one blob's item, validation and listing facts, and the catalog steps
every job that writes items ends with (flush, extent, mosaic search)."""
from __future__ import annotations

import functools
import json
from pathlib import PurePosixPath

import azure.durable_functions as df

import cube_jobs
import geo_ops
import mosaic_searches
import output_names
import plan_chunks
import stac_ops
import sync_planner
import unpublish
from activity_frame import activity, gdal_config, judged, limits, scrub, source_file, validated_source
from catalog_items import ensure_collection, item_for, item_id
from clients import blob_store, catalog, catalog_location, settings
from models import (BlobDescription, BlobRef, BlobValidation, CatalogSummary, ChunkRef, CollectionRef, CollectionSpec,
                    ConvertTask, FileRef, ForgetBlobTask, GreetingTask, InventorySummary, ListContainerRequest,
                    RemoveItemsTask, StageRef, SyncJobPlan, SyncPlanRequest, TaskOutcome)
from output_names import plan_chunk_name
from storage import BlobNotFound

bp = df.Blueprint()


@activity(bp, GreetingTask, rides_out=False)
def say_hello(task: GreetingTask) -> str:
    """One greeting of the hello_world job."""
    return f"Hello {task.name} #{task.index + 1}"


@activity(bp, ListContainerRequest)
def write_inventory(request: ListContainerRequest) -> InventorySummary:
    """Page through a container and write its inventory as JSON to the system container."""
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
    name = output_names.inventory_name(container, output_names.digest(prefix))
    store.create_container(config.system_container)
    store.upload_bytes(config.system_container, name, json.dumps({**summary, "blobs": blobs}).encode(),
                       content_type="application/json")
    return InventorySummary(**summary, inventory=BlobRef(container=config.system_container, blob=name))


@activity(bp, SyncPlanRequest)
def plan_sync(request: SyncPlanRequest) -> SyncJobPlan:
    """Compare the container with the catalog by source ETag and write the work as chunk blobs."""
    store, config = blob_store(), settings()
    cat = catalog()
    collection_id = stac_ops.resolve_collection_id(request.container, request.collection)
    exists = cat.get_collection(collection_id) is not None
    if not request.dry_run:  # a dry run writes nothing, not even the collection
        source = f"{request.container}/{request.prefix}" if request.prefix else request.container
        ensure_collection(cat, CollectionSpec(container=request.container, collection=request.collection,
                                              title=request.collection_title,
                                              description=request.collection_description, source=source,
                                              draft=request.draft, job=request.job))
    known = cat.list_item_etags(collection_id) if exists and request.mode == "incremental" else {}
    track = exists and request.mode == "incremental"
    write = None
    if not request.dry_run:
        store.create_container(config.system_container)

        def write(index: int, files: list[FileRef]) -> ChunkRef:
            return plan_chunks.write_chunk(store, config.system_container,
                                           plan_chunk_name(request.plan_id, index, "chunk", "plans"), files)
    # rasters, cube files and Zarr stores (one source per store, not one per blob), listed,
    # compared and written chunk by chunk: memory bounded at any container size (sync_planner)
    planner = sync_planner.SyncPlanner(request, collection_id, known, write, track_present=track)
    sync_planner.plan_listing(planner, lambda: store.iter_blobs(request.container, request.prefix))
    removed, gone = _gone_sources(cat, collection_id, request, planner.present) if track else ([], [])
    plan = planner.finish(removed)
    plan.removed_sources = gone
    return plan


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


@activity(bp, ChunkRef)
def read_chunk(chunk: ChunkRef) -> list:
    """The records of one chunk of a plan (files, output groups)."""
    return plan_chunks.read_chunk(blob_store(), chunk)


@activity(bp, ConvertTask, item=source_file)
def catalog_blob(task: ConvertTask) -> TaskOutcome:
    """One raster blob read in place (GDAL virtual path) → one STAC item upserted (or staged for
    the chunk's batch write)."""
    store = blob_store()

    def build():
        with validated_source(store, task) as (gdal, report, dataset):
            return item_for(task, raster=dataset, access=gdal.config, data=(task.container, task.file.name),
                            data_size=task.file.size, pixels=report.pixels)

    item = judged(store, task.container, task.file.name, build)
    if task.stage:
        catalog().stage_items(task.stage, [item], draft=task.draft)
    else:
        catalog().upsert_items([item], draft=task.draft)
    return TaskOutcome(name=task.file.name, status="done", item_id=item.id)


@activity(bp, CollectionSpec)
def prepare_collection(spec: CollectionSpec) -> str:
    """The collection id for a container (default, or the request's), created when missing."""
    return ensure_collection(catalog(), spec)


@activity(bp, StageRef)
def flush_items(ref: StageRef):
    """Write the items a chunk's activities staged, in one batch."""
    return catalog().flush_staged(ref.stage, draft=ref.draft)


@activity(bp, RemoveItemsTask)
def remove_items(task: RemoveItemsTask) -> int:
    """Delete the items whose source blob is gone."""
    return catalog().delete_items(task.collection, task.item_ids)


@activity(bp, CollectionRef)
def finalize_catalog(ref: CollectionRef) -> CatalogSummary:
    """Recompute the collection's extent and summaries; rebuild static catalog links."""
    cat = catalog()
    collection = cat.refresh_collection(ref.collection)
    cat.finalize()
    extent = collection.extent.spatial.bboxes[0] if collection.extent.spatial.bboxes else None
    return CatalogSummary(collection=collection.id, catalog=catalog_location(settings()), bbox=extent)


@activity(bp, CollectionRef)
def register_mosaic(ref: CollectionRef):
    """Register (or find) the collection's pgSTAC mosaic search and link the collection to it."""
    return mosaic_searches.register_collection_mosaic(catalog(), ref.collection, tiler_url=settings().tiler_url)


@activity(bp, BlobRef)
def validate_blob(ref: BlobRef) -> BlobValidation:
    """A validation report of one blob (errors block, warnings do not); messages name the blob
    as ``container/blob``."""
    store = blob_store()
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
    return BlobValidation(blob=name, etag=props.etag, size=props.size, **body)


@activity(bp, BlobRef)
def describe_blob(ref: BlobRef) -> BlobDescription:
    """The listing facts of one blob (size, ETag, last-modified), or a not-found reason."""
    try:
        props = blob_store().get_properties(ref.container, ref.blob)
    except BlobNotFound as err:
        store = cube_jobs.describe_store(blob_store(), ref.container, ref.blob)  # a Zarr store's prefix
        if store is not None:
            return BlobDescription(found=True, file=store)
        return BlobDescription(found=False, reason=str(err))
    form = "cube" if cube_jobs.form_of_name(props.name) == "cube" else "raster"
    return BlobDescription(found=True, file=FileRef(name=props.name, etag=props.etag, size=props.size,
                                                    last_modified=props.last_modified, form=form))


@activity(bp, rides_out=False)
def catalog_health(payload: dict):
    """Catalog reachability, version and counts."""
    return catalog().health()


@activity(bp, ForgetBlobTask)
def forget_blob(task: ForgetBlobTask) -> int:
    """Remove the item of a blob that is gone, cataloged in place or converted into
    ``output_container`` (0 when the catalog did not have it)."""
    ids = {item_id(task.container, task.blob), item_id(task.container, task.blob, task.output_container)}
    return catalog().delete_items(task.collection, sorted(ids))
