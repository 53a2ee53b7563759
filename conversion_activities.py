"""Activities of converting rasters to COGs: a prefix planned as chunk blobs, a source inspected
(one task, or the tiled path), and one source converted, published last and cataloged."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import azure.durable_functions as df

import cube_jobs
import geo_ops
import output_names
import plan_chunks
import stac_ops
from activity_frame import (ITEM_ERRORS, activity, gdal_config, judged, limits, ride_out, source_file,
                            validated_source)
from catalog_items import item_for
from clients import blob_store, catalog, settings
from faults import Transient
from models import (PLAN_NAMES_SHOWN, ConversionPlan, ConversionPlanRequest, ConvertTask, InspectResult,
                    TaskOutcome)
from storage import BlobNotFound, BlobStore, ContainerNotFound
from work_files import staging_dir

logger = logging.getLogger(__name__)
bp = df.Blueprint()


@activity(bp, ConversionPlanRequest)
def plan_conversion(request: ConversionPlanRequest) -> ConversionPlan:
    """The raster blobs under a prefix, written as chunk blobs; the files that are not rasters."""
    store, config = blob_store(), settings()
    # rasters, cube files and Zarr stores (one source per store, not one per blob)
    files, ignored = cube_jobs.listed_sources(store.iter_blobs(request.container, request.prefix))
    chunks = plan_chunks.write_chunks(store, config.system_container, request.plan_id, request.chunk_size, files)
    return ConversionPlan(chunks=chunks, files=len(files), ignored=len(ignored),
                          ignored_names=ignored[:PLAN_NAMES_SHOWN])


@activity(bp, ConvertTask, item=source_file,
          failure=lambda task, err, outcome: InspectResult(name=task.file.name, outcome=outcome))
def inspect_raster(task: ConvertTask) -> InspectResult:
    """Validate a source and say whether it fits one task or must take the tiled path."""
    store = blob_store()

    def inspect():
        with validated_source(store, task) as (_gdal, report, dataset):
            # Reprojected (or placed by GCPs/RPCs, always warped), the output's grid is what one
            # task writes (pixels far longer than wide become many square ones): it decides the
            # tiled path, and is refused over the limit.
            pixels = geo_ops.warped_pixels(dataset, task.options.target_crs, limits(),
                                           gcp_transform=task.options.gcp_transform, rpc_dem=settings().rpc_dem)
            return report, pixels

    report, pixels = judged(store, task.container, task.file.name, inspect)
    return InspectResult(name=task.file.name, pixels=pixels, needs_tiling=pixels > settings().max_pixels_per_task,
                         warnings=[w.message for w in report.warnings])


#: Conversion options added after outputs existed, at the value that changes nothing for those
#: outputs: left out of the digest at that value, so outputs made before stay current.
LATER_OPTIONS = {"gcp_transform": "polynomial"}


def options_digest(options: dict[str, Any]) -> str:
    options = {k: v for k, v in options.items() if LATER_OPTIONS.get(k, object()) != v}
    return output_names.digest(json.dumps(options, sort_keys=True))


@activity(bp, ConvertTask, item=source_file)
def convert_blob(task: ConvertTask) -> TaskOutcome:
    """Source blob → COG in the output container (skipped when it exists for the same source ETag
    and options) → STAC item."""
    store, out_name = blob_store(), output_names.cog_name(task.container, task.file.name)
    digest = options_digest(task.options.model_dump(mode="json"))
    if not is_current(store, task.output_container, out_name, task.file.etag, digest):
        item_id = judged(store, task.container, task.file.name, lambda: _write_cog(store, task, out_name, digest))
        status = "done"
    else:
        item_id = ride_out("convert_blob (catalog)", judged, store, task.output_container, out_name,
                           lambda: _catalog_output(store, task, out_name)) if task.catalog else None
        status = "skipped"
    return TaskOutcome(name=task.file.name, status=status, item_id=item_id, output=f"{task.output_container}/{out_name}")


def is_current(store: BlobStore, container: str, name: str, source_etag: str, digest: str) -> bool:
    """True when the output exists and was made from this source ETag with these options."""
    try:
        meta = store.get_properties(container, name).metadata
    except (BlobNotFound, ContainerNotFound):
        return False
    return output_names.is_current(meta, source_etag, digest)


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
                       resampling=opts.resampling, overview_resampling=overview_resampling(opts.resampling),
                       limits=limits(), tmp_dir=tmp, gdal_config=gdal_config(src.config))
        metadata = output_names.provenance(f"{task.container}/{task.file.name}", task.file.etag, digest)
        item = None
        store.create_container(task.output_container)  # hrefs are of blobs in it (nothing is in it yet)
        if task.catalog:
            png = local.with_suffix(".thumbnail.png")
            geo_ops.write_thumbnail(local, png, gdal_config=gdal_config())
            item = item_for(task, raster=str(local), access={}, data=(task.output_container, out_name),
                            data_size=local.stat().st_size,
                            thumbnail=(task.output_container, output_names.thumbnail_name(out_name)))
        with discarded_on_failure(store, task.output_container) as published:
            publish(store, task.output_container, out_name, local, metadata, thumbnail=task.catalog,
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
        except (Transient, *ITEM_ERRORS, ContainerNotFound) as err:
            logger.warning("could not remove %s/%s of a failed file: %s", container, name, type(err).__name__)
    return removed


def publish(store: BlobStore, container: str, name: str, local: Path, metadata: dict[str, str], *,
            thumbnail: bool, published: list[str] | None = None) -> None:
    """Upload a COG and, first, when it is to be cataloged, its PNG thumbnail (so a cataloged
    COG that is current has one; written beside ``local`` unless already there). Each blob
    uploaded is added to ``published``; without that list, a failure removes what was uploaded."""
    if published is None:
        with discarded_on_failure(store, container) as published:
            return publish(store, container, name, local, metadata, thumbnail=thumbnail, published=published)
    store.create_container(container)
    if thumbnail:
        png = local.with_suffix(".thumbnail.png")
        if not png.exists():
            geo_ops.write_thumbnail(local, png, gdal_config=gdal_config())
        published.append(output_names.thumbnail_name(name))
        store.upload_from_path(container, output_names.thumbnail_name(name), png, content_type="image/png",
                               metadata=metadata)
    published.append(name)
    store.upload_from_path(container, name, local, content_type=stac_ops.COG_MEDIA_TYPE, metadata=metadata)


def thumbnail_of(store: BlobStore, container: str, cog_name: str) -> tuple[str, str] | None:
    """The COG's thumbnail blob, when it has one (outputs from before thumbnails have none)."""
    name = output_names.thumbnail_name(cog_name)
    return (container, name) if store.exists(container, name) else None


def overview_resampling(resampling: str) -> str:
    return "nearest" if resampling in ("nearest", "mode") else "average"


def _catalog_output(store: BlobStore, task: ConvertTask, out_name: str) -> str:
    out = store.gdal_read_path(task.output_container, out_name)
    size = store.get_properties(task.output_container, out_name).size
    item = item_for(task, raster=out.path, access=out.config, data=(task.output_container, out_name), data_size=size,
                    thumbnail=thumbnail_of(store, task.output_container, out_name))
    catalog().upsert_items([item], draft=task.draft)
    return item.id
