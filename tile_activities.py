"""Activities of the tiled path: a source's tile plan, one tile converted, the mosaic over the
tiles, the tiles' items, and what a failed tiled conversion had published removed."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import azure.durable_functions as df

import geo_ops
import output_names
from activity_frame import Item, activity, gdal_config, judged, limits, source_file
from catalog_items import item_for, item_id
from clients import blob_store, catalog, settings
from conversion_activities import discard_blobs, is_current, overview_resampling, publish, thumbnail_of
from models import (CatalogTilesResult, CatalogTilesTask, ConvertTask, DiscardTilesTask, MosaicSummary, MosaicTask,
                    TaskOutcome, TilePlanResult, TileTask)
from storage import BlobStore
from work_files import staging_dir

bp = df.Blueprint()


@activity(bp, ConvertTask, item=source_file,
          failure=lambda task, err, outcome: TilePlanResult(outcome=outcome))
def plan_raster_tiles(task: ConvertTask) -> TilePlanResult:
    """A deterministic tile plan of one source, in its grid or in the target CRS; a source that
    cannot be tiled as asked (unreadable, a CRS it cannot map to) is a per-file failure, with why.
    No tile is larger than RMH_TILE_SIZE on a side unless the request names a tile size."""
    store, config = blob_store(), settings()
    src = store.gdal_read_path(task.container, task.file.name)
    plan = judged(store, task.container, task.file.name, lambda: geo_ops.plan_tiles(
        src.path, output_prefix=f"{output_names.tiled_folder(task.container, task.file.name)}/tiles",
        tile_size=task.tile_size or None, max_pixels=min(config.max_pixels_per_task, config.tile_size ** 2),
        dst_crs=task.options.target_crs, resampling=task.options.resampling, limits=limits(),
        gdal_config=gdal_config(src.config), gcp_transform=task.options.gcp_transform, rpc_dem=config.rpc_dem))
    return TilePlanResult(plan=plan)


def _tile(task: TileTask) -> Item:
    name = f"tile {task.tile.row},{task.tile.col}"
    return Item(name, f"{task.container}/{task.blob} {name}")


@activity(bp, TileTask, item=_tile)
def convert_tile(task: TileTask) -> TaskOutcome:
    """One tile: windowed (or warped-window) read of the source → COG tile in the output container."""
    store, tile = blob_store(), task.tile
    status = "skipped"
    if not is_current(store, task.output_container, tile.output_path, task.source_etag, task.options_digest):
        judged(store, task.container, task.blob, lambda: _write_tile(store, task))
        status = "done"
    return TaskOutcome(name=_tile(task).name, status=status, output=f"{task.output_container}/{tile.output_path}")


def _write_tile(store: BlobStore, task: TileTask) -> None:
    src, tile = store.gdal_read_path(task.container, task.blob), task.tile
    with staging_dir("tile") as tmp:
        local = Path(tmp) / "tile.tif"
        geo_ops.process_tile(src.path, tile, local, profile=task.profile, max_z_error=task.max_z_error, tmp_dir=tmp,
                             overview_resampling=overview_resampling(tile.resampling),
                             gdal_config=gdal_config(src.config))
        publish(store, task.output_container, tile.output_path, local,
                output_names.provenance(f"{task.container}/{task.blob}", task.source_etag, task.options_digest),
                thumbnail=task.catalog)


@activity(bp, MosaicTask)
def build_tile_mosaic(request: MosaicTask) -> MosaicSummary:
    """A VRT over the tile COGs, next to them in the output container, plus a STAC item for it."""
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
        provenance = (output_names.provenance(request.source, request.source_etag or "")
                      if request.source else None)  # what unpublish finds the mosaic by
        store.upload_from_path(container, vrt_name, local_vrt, content_type="application/xml", metadata=provenance)
    return MosaicSummary(**{**mosaic.model_dump(), "path": f"{container}/{vrt_name}"})


@activity(bp, CatalogTilesTask)
def catalog_tiles(request: CatalogTilesTask) -> CatalogTilesResult:
    """One STAC item per tile COG, upserted in one batch."""
    task = request.task
    store = blob_store()
    items = []
    for name in request.tiles:
        gdal = store.gdal_read_path(task.output_container, name)
        stem = PurePosixPath(name).stem
        items.append(item_for(task, raster=gdal.path, access=gdal.config, data=(task.output_container, name),
                              data_size=None, item_blob_name=f"{task.file.name}/{stem}",
                              title=f"{task.file.name}, {stem}",
                              thumbnail=thumbnail_of(store, task.output_container, name)))
    result = catalog().upsert_items(items, draft=task.draft)
    return CatalogTilesResult(items=len(items), written=result.written)


@activity(bp, DiscardTilesTask)
def discard_tiles(request: DiscardTilesTask) -> int:
    """Remove what a tiled conversion that failed had published: its tiles, their thumbnails,
    their items and its mosaic (what is already gone is skipped); how many blobs were removed."""
    task, store = request.task, blob_store()
    names = [n for tile in request.tiles for n in (tile, output_names.thumbnail_name(tile))]
    removed = discard_blobs(store, task.output_container, names + ([request.mosaic] if request.mosaic else []))
    if task.catalog and request.tiles:
        ids = [item_id(task.container, f"{task.file.name}/{PurePosixPath(t).stem}", task.output_container)
               for t in request.tiles]
        catalog().delete_items(task.collection, ids)
    return removed
