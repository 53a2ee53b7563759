"""Activities of multidimensional inputs (NetCDF, HDF5, GRIB2, Zarr stores): adapters of a few
lines over ``cube_jobs``, on a blueprint of their own (registered in function_app.py).

Like every activity, an expected per-file failure (a cube refused by name) is a result, never an
exception; transient faults raise and are retried (``activities.rides_out_outages`` and the
retry options at the orchestrator's call site).
"""
from __future__ import annotations

import time

import azure.durable_functions as df

import activities
import cube_jobs
from activities import ITEM_ERRORS, TRANSIENT_ERRORS, failed, rides_out_outages
from cube_jobs import CubeFinishTask, CubeGroupTask, CubePlan, CubeTask
from models import ConvertTask, TaskOutcome

bp = df.Blueprint()


def services() -> cube_jobs.Services:
    """The storage, catalog and limits of this worker, as the cube tasks take them."""
    config = activities.settings()
    return cube_jobs.Services(
        store=activities.blob_store(), catalog=activities.catalog(), cache_dir=activities.work_dir(),
        staging_dir=lambda: activities.staging_dir("cube-task"), system_container=config.system_container,
        max_bytes=config.max_cube_bytes, max_slices=config.max_cube_slices,
        max_pixels_per_task=config.max_pixels_per_task, slices_per_task=config.cube_slices_per_task,
        gdal_config=activities.gdal_config,
        hrefs=lambda container, name: activities.asset_hrefs(activities.blob_store(), container, name),
        item_id=activities.item_id)


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def catalog_cube(payload: dict) -> dict:
    """One cube file or Zarr store cataloged in place: its whole-file item, staged for the
    chunk's batch write (or upserted)."""
    started = time.monotonic()
    task = ConvertTask.model_validate(payload)
    try:
        item = cube_jobs.catalog_in_place(services(), task)
        if task.stage:
            activities.catalog().stage_items(task.stage, [item])
        else:
            activities.catalog().upsert_items([item])
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        return failed(task.file.name, err, started, container=task.container)
    return TaskOutcome(name=task.file.name, status="done", item_id=item["id"],
                       seconds=round(time.monotonic() - started, 4)).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def inspect_cube(payload: dict) -> dict:
    """A cube's plan (slice groups written as plan blobs), or why it is not converted."""
    started = time.monotonic()
    request = CubeTask.model_validate(payload)
    task = request.task
    try:
        return cube_jobs.inspect(services(), request).model_dump(mode="json")
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        outcome = TaskOutcome.model_validate(failed(task.file.name, err, started, container=task.container))
        return CubePlan(outcome=outcome).model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def convert_cube_group(payload: dict) -> dict:
    """One slice group of a cube: its COGs and its time steps' items."""
    started = time.monotonic()
    request = CubeGroupTask.model_validate(payload)
    try:
        outcome = cube_jobs.convert_group(services(), request)
    except TRANSIENT_ERRORS:
        raise
    except ITEM_ERRORS as err:
        return failed(request.label, err, started, container=request.task.container)
    outcome.seconds = round(time.monotonic() - started, 4)
    return outcome.model_dump(mode="json")


@bp.activity_trigger(input_name="payload")
@rides_out_outages
def finish_cube(payload: dict) -> dict:
    """Keep a converted cube's outputs (removing an earlier version's leftovers), or remove them
    all when a group failed."""
    return cube_jobs.finish(services(), CubeFinishTask.model_validate(payload)).model_dump(mode="json")
