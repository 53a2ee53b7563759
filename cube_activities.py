"""Activities of multidimensional inputs (NetCDF, HDF5, GRIB2, Zarr stores): adapters of a few
lines over ``cube_jobs``, a room of their own (``activities.BLUEPRINTS`` registers it).

Written on ``activity_frame.activity`` like every activity: an expected per-file failure (a cube
refused by name) is an answer, never an exception; a transient fault is ridden out within the
retry budget, then raised for the orchestrator's attempts.
"""
from __future__ import annotations

import azure.durable_functions as df

import cube_jobs
from activity_frame import Item, activity, gdal_config, source_file
from catalog_items import asset_hrefs, item_id
from clients import blob_store, catalog, settings
from cube_jobs import CubeFinished, CubeFinishTask, CubeGroupTask, CubePlan, CubeTask
from models import ConvertTask, TaskOutcome
from work_files import staging_dir, work_dir

bp = df.Blueprint()


def services() -> cube_jobs.Services:
    """The storage, catalog and limits of this worker, as the cube tasks take them."""
    config = settings()
    return cube_jobs.Services(
        store=blob_store(), catalog=catalog(), cache_dir=work_dir(),
        staging_dir=lambda: staging_dir("cube-task"), system_container=config.system_container,
        max_bytes=config.max_cube_bytes, max_slices=config.max_cube_slices,
        max_pixels_per_task=config.max_pixels_per_task, slices_per_task=config.cube_slices_per_task,
        gdal_config=gdal_config, hrefs=lambda container, name: asset_hrefs(blob_store(), container, name),
        item_id=item_id)


@activity(bp, ConvertTask, item=source_file)
def catalog_cube(task: ConvertTask) -> TaskOutcome:
    """One cube file or Zarr store cataloged in place: its whole-file item, staged for the
    chunk's batch write (or upserted)."""
    item = cube_jobs.catalog_in_place(services(), task)
    if task.stage:
        catalog().stage_items(task.stage, [item], draft=task.draft)
    else:
        catalog().upsert_items([item], draft=task.draft)
    return TaskOutcome(name=task.file.name, status="done", item_id=item["id"])


def _planned_file(request: CubeTask) -> Item:
    return source_file(request.task)


@activity(bp, CubeTask, item=_planned_file, failure=lambda request, err, outcome: CubePlan(outcome=outcome))
def inspect_cube(request: CubeTask) -> CubePlan:
    """A cube's plan (slice groups written as plan blobs), or why it is not converted."""
    return cube_jobs.inspect(services(), request)


def _group(request: CubeGroupTask) -> Item:
    return Item(request.label, f"{request.task.container}/{request.label}")


@activity(bp, CubeGroupTask, item=_group)
def convert_cube_group(request: CubeGroupTask) -> TaskOutcome:
    """One slice group of a cube: its COGs and its time steps' items."""
    return cube_jobs.convert_group(services(), request)


@activity(bp, CubeFinishTask)
def finish_cube(request: CubeFinishTask) -> CubeFinished:
    """Keep a converted cube's outputs (removing an earlier version's leftovers), or remove them
    all when a group failed."""
    return cube_jobs.finish(services(), request)
