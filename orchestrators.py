"""Orchestrators: one per operation, each the job's recipe (the plumbing is ``orchestration.py``).

Deterministic by construction: time from ``context.current_utc_datetime``, no I/O, no environment
reads. A recipe deals in models: ``call`` dumps the request and validates the answer. Large
fan-outs go through sub-orchestrations of one chunk each (ids ``<job id>:chunk-00001``), so no
history grows past a few thousand events. The parent reports progress as chunks finish; a
fan-out marks its status ``live`` and the job API counts its finished files and tiles from the
history at read time (``job_reads``), so progress per file costs the orchestrations nothing.
Every top-level job signals the ``job_metrics`` entity of its operation when it starts and ends.
"""
from __future__ import annotations

import functools

import azure.durable_functions as df

import activities as act
import output_names
from catalogs import CatalogHealth, UpsertResult
from drafts import VisibilityResult
from models import (IMPORT_CHUNK_SIZE, SEGMENT_CHUNKS, SYNC_CHUNK_SIZE, BlobDescription, BlobRef, BlobValidation, CatalogChunkTask,
                    CatalogSummary, CatalogTilesResult, CatalogTilesTask, ChunkRef, CollectionRef, CollectionSpec,
                    ConversionPlan, ConversionPlanRequest, ConvertChunkTask, ConvertTask, DiscardTilesTask, FileRef,
                    GreetingTask, HelloWorldRequest, HelloWorldResult, ImportChunkTask, ImportItemTask, ImportPlan,
                    ImportPlanRequest, ImportPrepared, ImportWriteTask, InspectResult, InventorySummary, JobResult,
                    MosaicRegistration, MosaicSummary, MosaicTask, ProcessTiledRasterRequest, StageRef, SyncJobPlan,
                    SettleCollectionsTask, SyncPlanRequest, TaskOutcome, TilePlanResult, TileTask, UnpublishPlan, UnpublishPlanRequest,
                    SegmentTask, UNPUBLISH_NAMES, UnpublishRequest, VisibilityTask)
from cube_jobs import CubeFinished, CubeFinishTask, CubeGroupTask, CubePlan, CubeTask
from orchestration import (call, chunk, chunk_id, each, gather, job, name_of, outcome_of, outcomes, report,  # noqa: F401
                           schedule, settle, starts)

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", input_type=dict)
def hello_world(context: df.DurableOrchestrationContext):
    """Fan out one greeting activity per count, fan in with task_all (no retries: a proof)."""
    request = HelloWorldRequest.model_validate(context.get_input() or {})
    greetings = yield context.task_all([schedule(context, act.say_hello, GreetingTask(name=request.name, index=i),
                                                 retry=None) for i in range(request.count)])
    return HelloWorldResult(greetings=greetings).model_dump(mode="json")


@job(bp)
def list_container(context, request, result: JobResult):
    """Inventory of a container, written as a JSON blob; totals by extension in the output."""
    report(context, "listing", result, 0)
    summary = yield from call(context, act.write_inventory, request, InventorySummary)
    result.total = result.done = summary.count
    result.detail = summary.model_dump(mode="json")
    return result


# -- sync_container ------------------------------------------------------------------------------

@job(bp)
def sync_container(context, request, result: JobResult):
    """Catalog a container: plan by ETag, remove vanished items, one sub-orchestration per chunk."""
    report(context, "planning", result, 0)
    plan = yield from call(context, act.plan_sync, SyncPlanRequest(
        container=request.container, prefix=request.prefix, collection=request.collection,
        collection_title=request.collection_title, collection_description=request.collection_description,
        mode=request.mode, dry_run=request.dry_run, chunk_size=request.chunk_size or SYNC_CHUNK_SIZE,
        plan_id=context.instance_id.replace(":", "-"), draft=request.draft, job=context.instance_id), SyncJobPlan)
    result.detail = {"plan": plan.model_dump(mode="json", exclude={"chunks", "removed_ids", "removed_sources"})}
    if request.dry_run:
        return result
    # A file already cataloged for its ETag is skipped: counted (total, skipped), not scheduled.
    result.total = result.skipped = plan.counts.get("unchanged", 0)
    if plan.removed_sources:
        # a source gone: its whole output goes, through unpublish, UNPUBLISH_NAMES sources at a
        # time (one request names no more); the items removed, None when some group failed
        removed: int | None = 0
        for batch, start in enumerate(range(0, len(plan.removed_sources), UNPUBLISH_NAMES)):
            count = yield from unpublish_sources(context, result, UnpublishRequest(
                container=request.container, blobs=plan.removed_sources[start:start + UNPUBLISH_NAMES],
                segment_chunks=request.segment_chunks), batch)
            removed = None if count is None or removed is None else removed + count
        result.detail["removed"] = removed
    chunks = [CatalogChunkTask(chunk=c, container=request.container, collection=plan.collection, draft=request.draft)
              for c in plan.chunks]
    result = yield from gather_chunks(context, catalog_chunk, chunks, result, stage="cataloging",
                                      total=result.total + sum(c.count for c in plan.chunks), names=list(plan.chunks),
                                      in_flight=request.chunks_in_flight, segment_chunks=request.segment_chunks)
    result.detail["catalog"] = yield from finalize(context, plan.collection)
    return result


def finalize(context, collection: str):
    """Refresh the collection's extent and summaries (and the static catalog's links), then
    register its mosaic (a pgSTAC search titiler-pgstac serves; none on the static catalog)."""
    ref = CollectionRef(collection=collection)
    summary = yield from call(context, act.finalize_catalog, ref, CatalogSummary)
    summary.mosaic = yield from call(context, act.register_mosaic, ref, MosaicRegistration)
    return summary.model_dump(mode="json")


@chunk(bp, CatalogChunkTask)
def catalog_chunk(context, chunk: CatalogChunkTask, result: JobResult):
    """One chunk of a sync: read its file list, catalog each file (progress ``live``), then write
    the items the files staged in one batch."""
    listed = yield from call(context, act.read_chunk, chunk.chunk)
    # The stage is this run's own (a rerun of the chunk id never flushes an older run's items).
    stage = f"{context.instance_id}/{context.new_uuid()}"
    # The payloads are ConvertTask's JSON with each file's listing as read (the activity
    # validates the task): every replay rebuilds them, so no model is dumped per file here.
    base = ConvertTask(container=chunk.container, file=FileRef(name=""), collection=chunk.collection,
                       stage=stage, draft=chunk.draft).model_dump(mode="json")
    done = yield from outcomes(context, [catalog_activity(f.get("form")) for f in listed],
                               [{**base, "file": f} for f in listed], [f["name"] for f in listed],
                               stage="cataloging", result=result)
    yield from flush(context, StageRef(stage=stage, draft=chunk.draft), done)
    result.add(done)
    report(context, "cataloging", result)
    return result


def catalog_activity(form: str | None):
    """The activity that catalogs a source in place: a raster's, or a cube file's or store's."""
    return act.catalog_blob if form in (None, "raster") else act.catalog_cube


def flush(context, stage: StageRef, done: list[TaskOutcome]):
    """Write the items a chunk's tasks staged, in one batch (when any task staged one)."""
    if any(o.status == "done" for o in done):
        yield from call(context, act.flush_items, stage, UpsertResult)


# -- catalog_file, validate_raster, database_health ---------------------------------------------

@job(bp)
def catalog_file(context, request, result: JobResult):
    """One raster → one STAC item upserted."""
    report(context, "cataloging", result, 1)
    source = yield from source_and_collection(context, request, result, holds="rasters", source=request.container)
    if source is None:
        return result
    file, collection = source
    outcome = yield from call(context, catalog_activity(file.form), ConvertTask(
        container=request.container, file=file, collection=collection, datetime=request.datetime,
        draft=request.draft), TaskOutcome)
    result.add([outcome])
    result.detail["catalog"] = yield from finalize(context, collection)
    return result


def source_and_collection(context, request, result: JobResult, *, holds: str, source: str):
    """(the source blob's facts, the collection id, created if needed) of a one-blob request, or
    None with a failed outcome recorded when the blob does not exist."""
    file = yield from describe(context, request.container, request.blob, result)
    if file is None:
        return None
    collection = yield from call(context, act.prepare_collection, collection_spec(
        request, holds=holds, source=source, job=context.instance_id))
    return file, collection


def collection_spec(request, *, holds: str, source: str, job: str | None = None) -> CollectionSpec:
    """What ``prepare_collection`` needs of a request: its collection, title, description, and
    whether a new one is a draft."""
    return CollectionSpec(container=request.container, collection=request.collection,
                          title=request.collection_title, description=request.collection_description,
                          holds=holds, source=source, target_crs=getattr(request, "target_crs", None),
                          draft=getattr(request, "draft", False), job=job)


def describe(context, container: str, blob: str, result: JobResult):
    """The blob's listing facts, or None with a failed outcome recorded when it does not exist."""
    found = yield from call(context, act.describe_blob, BlobRef(container=container, blob=blob), BlobDescription)
    if not found.found:
        result.add([TaskOutcome(name=blob, status="failed", error="BlobNotFound", reason=found.reason)])
        return None
    return found.file


@job(bp)
def validate_raster(context, request, result: JobResult):
    """A validation report of one raster; an invalid raster completes with errors."""
    report(context, "validating", result, 1)
    if (yield from describe(context, request.container, request.blob, result)) is None:
        return result
    validation = yield from call(context, act.validate_blob, BlobRef(container=request.container, blob=request.blob),
                                 BlobValidation)
    errors = validation.errors
    result.add([TaskOutcome(name=request.blob, status="failed" if errors else "done",
                            error=errors[0].code if errors else None,
                            reason="; ".join(e.message for e in errors) or None)])
    result.detail["report"] = validation.model_dump(mode="json")
    return result


@job(bp)
def database_health(context, request, result: JobResult):
    """Catalog reachable, version, counts."""
    health = yield from call(context, act.catalog_health, {}, CatalogHealth)
    result.add([TaskOutcome(name="catalog", status="done" if health.ok else "failed",
                            error=None if health.ok else "CatalogUnavailable", reason=health.detail)])
    result.detail["health"] = health.model_dump(mode="json")
    return result


# -- cog_conversion ------------------------------------------------------------------------------

@job(bp)
def cog_conversion(context, request, result: JobResult):
    """Validate → COG (optionally reprojected) → catalog, per file, in chunks; rasters above the
    per-task pixel budget take the tiled path by themselves."""
    report(context, "listing", result, 0)
    selected = (f"{request.container}/{request.prefix}" if request.prefix is not None else
                f"{request.container}/{request.blobs[0]}" if len(request.blobs) == 1 else request.container)
    collection = yield from call(context, act.prepare_collection, collection_spec(
        request, holds="cogs", source=selected, job=context.instance_id))
    base = ConvertTask(container=request.container, file=FileRef(name=""), collection=collection,
                       output_container=request.output_container, catalog=request.catalog,
                       options=request.cog_options(), draft=request.draft)
    size = request.chunk_size or output_names.CHUNK_SIZE
    if request.prefix is not None:  # listed and chunked by an activity: never through history
        plan = yield from call(context, act.plan_conversion, ConversionPlanRequest(
            container=request.container, prefix=request.prefix, chunk_size=size,
            plan_id=context.instance_id.replace(":", "-")), ConversionPlan)
        result.detail["ignored"] = plan.ignored_names
        total, names = plan.files, list(plan.chunks)
        chunks = [ConvertChunkTask(task=base, chunk=c) for c in plan.chunks]
    else:
        total = len(request.blobs)
        names = [request.blobs[i:i + size] for i in range(0, total, size)]
        chunks = [ConvertChunkTask(task=base, blobs=part) for part in names]
    result = yield from gather_chunks(context, convert_chunk, chunks, result, stage="converting", total=total,
                                      names=names, in_flight=request.chunks_in_flight,
                                      segment_chunks=request.segment_chunks)
    if request.catalog:
        result.detail["catalog"] = yield from finalize(context, collection)
    return result


def chunk_files(context, chunk: ConvertChunkTask, result: JobResult):
    """A conversion chunk's files: read from its chunk blob, or described by name (a missing
    blob is recorded as a failure)."""
    if chunk.chunk is not None:
        return [FileRef.model_validate(f) for f in (yield from call(context, act.read_chunk, chunk.chunk))]
    found = [BlobDescription.model_validate(f) for f in (yield context.task_all([
        schedule(context, act.describe_blob, BlobRef(container=chunk.task.container, blob=b)) for b in chunk.blobs]))]
    result.add([TaskOutcome(name=b, status="failed", error="BlobNotFound", reason=f.reason)
                for b, f in zip(chunk.blobs, found) if not f.found])
    return [f.file for f in found if f.found]


@chunk(bp, ConvertChunkTask)
def convert_chunk(context, chunk: ConvertChunkTask, result: JobResult):
    """One chunk of a conversion: inspect each raster, convert the small ones in one activity each,
    send the large ones down the tiled path and each cube to ``convert_cube``, as sub-orchestrations."""
    files = yield from chunk_files(context, chunk, result)
    total = len(files) + result.total  # with the named blobs found missing
    tasks = [chunk.task.model_copy(update={"file": file}) for file in files]
    cubes = [t for t in tasks if t.file.form != "raster"]  # a sub-orchestration each, below
    tasks = [t for t in tasks if t.file.form == "raster"]
    inspected = yield from each(context, act.inspect_raster, tasks, InspectResult)
    work, names, whole = [], [], {}  # whole: the index of a sub-orchestration -> its file's outcome
    for task, inspection in zip(tasks, inspected):
        if isinstance(inspection, Exception):
            result.add([outcome_of(task.file.name, inspection)])
        elif inspection.outcome is not None:
            result.add([inspection.outcome])
        elif inspection.needs_tiling:
            whole[len(work)] = tiled_outcome
            work.append(schedule(context, process_tiled_raster, ProcessTiledRasterRequest(
                container=task.container, blob=task.file.name, output_container=task.output_container,
                collection=task.collection, catalog=task.catalog, draft=task.draft, **task.options.model_dump()),
                instance_id=chunk_id(context, "tiled", len(work))))
            names.append(task.file.name)
        else:
            work.append(schedule(context, act.convert_blob, task))
            names.append(task.file.name)
    for task in cubes:
        whole[len(work)] = cube_outcome
        work.append(schedule(context, convert_cube, task, instance_id=chunk_id(context, "cube", len(work))))
        names.append(task.file.name)
    report(context, "converting", result, total, live=True)
    for index, (name, outcome) in enumerate(zip(names, (yield from settle(context, work)))):
        result.add([whole[index](name, outcome) if index in whole and not isinstance(outcome, Exception)
                    else outcome_of(name, outcome)])
    report(context, "converting", result)
    return result


def tiled_outcome(name: str, answer: dict) -> TaskOutcome:
    """A file's outcome from the JobResult of its tiled sub-orchestration."""
    tiled = JobResult.model_validate(answer)
    return TaskOutcome(name=name, status="failed" if tiled.failed else "done",
                       output=tiled.detail.get("mosaic", {}).get("path"),
                       error="TileFailed" if tiled.failed else None,
                       reason=f"{tiled.failed} of {tiled.total} tiles failed" if tiled.failed else None,
                       seconds=tiled.seconds or 0.0)


# -- convert_cube (a multidimensional file or a Zarr store) -------------------------------------

@chunk(bp, ConvertTask)
def convert_cube(context, task: ConvertTask, result: JobResult):
    """One cube: plan its slice groups → one activity per group (progress ``live``) → keep its
    outputs, or remove them all when a group failed (a failed file leaves nothing behind)."""
    report(context, "planning", result, 0)
    plan = yield from call(context, act.inspect_cube, CubeTask(task=task, plan_id=context.instance_id.replace(":", "-")),
                           CubePlan)
    if plan.outcome is not None:  # refused by name, or current: the file's own outcome
        result.add([plan.outcome])
        return ended(context, result)
    groups = [CubeGroupTask(task=task, plan=plan.plan, group=g.index, label=g.label) for g in plan.groups]
    result.add((yield from outcomes(context, act.convert_cube_group, groups, [g.label for g in plan.groups],
                                    stage="converting", result=result)))
    finished = yield from call(context, act.finish_cube, CubeFinishTask(task=task, plan=plan.plan,
                                                                        keep=result.failed == 0), CubeFinished)
    result.detail = {"cube": plan.model_dump(mode="json", include={"variables", "slices", "steps",
                                                                   "skipped_variables", "warnings"}),
                     "finished": finished.model_dump(mode="json"),
                     "output": f"{task.output_container}/{task.container}/{task.file.name}/"}
    report(context, "converting", result)
    return ended(context, result)


def ended(context, result: JobResult) -> JobResult:
    """A sub-orchestration's result with its end and duration (a job's come from ``run_job``)."""
    result.finished = context.current_utc_datetime
    result.seconds = (result.finished - result.started).total_seconds()
    return result


def cube_outcome(name: str, answer: dict) -> TaskOutcome:
    """A cube's outcome in its chunk: failed with the first named condition (its plan's, or a
    slice group's), skipped when every group (or the whole file) was current, else done."""
    cube = JobResult.model_validate(answer)
    if cube.failed:
        first = cube.failures[0]
        reason = first.reason if first.name == name else (
            f"{cube.failed} of {cube.total} slice groups failed (nothing of the file was kept): {first.reason}")
        return TaskOutcome(name=name, status="failed", error=first.error, reason=reason, seconds=cube.seconds or 0.0)
    return TaskOutcome(name=name, status="skipped" if cube.skipped == cube.total else "done",
                       output=cube.detail.get("output"), seconds=cube.seconds or 0.0)


# -- process_tiled_raster ------------------------------------------------------------------------

@job(bp)
def process_tiled_raster(context, request, result: JobResult):
    """Plan a tile grid → one activity per tile → mosaic VRT → catalog the tiles; a failed file
    leaves nothing behind."""
    report(context, "planning", result, 0)
    source = yield from source_and_collection(context, request, result, holds="tiles",
                                              source=f"{request.container}/{request.blob}")
    if source is None:
        return result
    file, collection = source
    options = request.cog_options()
    task = ConvertTask(container=request.container, file=file, collection=collection,
                       output_container=request.output_container, options=options,
                       catalog=request.catalog, tile_size=request.tile_size, draft=request.draft)
    planned = yield from call(context, act.plan_raster_tiles, task, TilePlanResult)
    if planned.outcome is not None:  # the source cannot be tiled as asked (unreadable, CRS it cannot map to)
        result.add([planned.outcome])
        return result
    plan = planned.plan
    digest = act.options_digest({**options.model_dump(), "tile_size": plan.tile_size})
    tiles = [TileTask(container=request.container, blob=file.name, source_etag=file.etag,
                      output_container=request.output_container, profile=request.profile,
                      max_z_error=request.max_z_error, options_digest=digest, catalog=request.catalog, tile=tile)
             for tile in plan.tiles]
    done = yield from outcomes(context, act.convert_tile, tiles, [f"tile {t.row},{t.col}" for t in plan.tiles],
                               stage="tiling", result=result)
    result.add(done)
    written = [o.output.split("/", 1)[1] for o in done if o.status != "failed"]
    mosaic = output_names.tiled_mosaic_name(request.container, request.blob)
    if result.failed == 0 and written:
        try:
            report(context, "mosaicking", result)
            summary = yield from call(context, act.build_tile_mosaic, MosaicTask(
                output_container=request.output_container, tiles=written, mosaic=mosaic,
                source=f"{request.container}/{request.blob}", source_etag=file.etag), MosaicSummary)
            result.detail["mosaic"] = summary.model_dump(mode="json")
            if request.catalog:
                items = yield from call(context, act.catalog_tiles, CatalogTilesTask(task=task, tiles=written),
                                        CatalogTilesResult)
                result.detail["items"] = items.model_dump(mode="json")
        except Exception as err:  # the mosaic or the tiles' items failed beyond their retries: the file failed
            result.add([outcome_of(request.blob, err)])
            result.detail.pop("mosaic", None)
    if result.failed and written:  # a failed file leaves nothing behind: its tiles, mosaic, items
        result.detail["discarded"] = yield from call(context, act.discard_tiles, DiscardTilesTask(
            task=task, tiles=written, mosaic=mosaic))
    elif request.catalog and written and not context.parent_instance_id:
        result.detail["catalog"] = yield from finalize(context, collection)
    result.detail["tiles"] = {"count": len(tiles), "rows": plan.rows, "cols": plan.cols, "tile_size": plan.tile_size}
    return result


# -- ingest_blob (blob events) -------------------------------------------------------------------

@job(bp)
def ingest_blob(context, request, result: JobResult):
    """One blob event: catalog the blob as it is now (converted first when asked), or remove its
    output when it is gone."""
    report(context, "ingesting", result, 1)
    found = yield from call(context, act.describe_blob, BlobRef(container=request.container, blob=request.blob),
                            BlobDescription)
    collection = yield from call(context, act.prepare_collection, CollectionSpec(
        container=request.container, collection=request.collection, holds="cogs" if request.convert else "rasters",
        source=request.container))
    if not found.found:  # the blob is gone: its whole output goes, through unpublish
        removed = yield from unpublish_sources(context, result, UnpublishRequest(
            container=request.container, blobs=[request.blob], output_container=request.output_container))
        result.add([TaskOutcome(name=request.blob, status="done" if removed else "skipped")])
        result.detail["removed"] = removed
    elif request.convert:
        task = ConvertTask(container=request.container, file=FileRef(name=""), collection=collection,
                           output_container=request.output_container)
        result.merge((yield from call(context, convert_chunk, ConvertChunkTask(task=task, blobs=[request.blob]),
                                      JobResult, instance_id=chunk_id(context, "chunk", 0))))
    else:
        result.add([(yield from call(context, catalog_activity(found.file.form), ConvertTask(
            container=request.container, file=found.file, collection=collection), TaskOutcome))])
    result.detail["catalog"] = yield from finalize(context, collection)
    return result


# -- import_stac ---------------------------------------------------------------------------------

@job(bp)
def import_stac(context, request, result: JobResult):
    """STAC made elsewhere: read the source into chunk blobs, one sub-orchestration per chunk,
    then refresh each collection the items went to."""
    report(context, "reading", result, 0)
    # The plan id is new per run: the item activities cache chunk blobs by name.
    plan = yield from call(context, act.plan_import, ImportPlanRequest(
        container=request.container, blob=request.blob, prefix=request.prefix, collection=request.collection,
        chunk_size=request.chunk_size or IMPORT_CHUNK_SIZE, draft=request.draft, job=context.instance_id,
        plan_id=f"{context.instance_id.replace(':', '-')}-{context.new_uuid()[:8]}"), ImportPlan)
    result.add(plan.failures)  # documents, links and items that could not be read, by name
    result.add_counted(plan.unlisted_failures)
    result.detail["plan"] = plan.model_dump(mode="json", include={"items", "documents", "collections", "ignored",
                                                                  "ignored_names"})
    chunks = [ImportChunkTask(chunk=c, output_container=request.output_container, options=request.cog_options(),
                              draft=request.draft) for c in plan.chunks]
    result = yield from gather_chunks(context, import_chunk, chunks, result, stage="importing",
                                      total=result.total + plan.items, names=list(plan.chunks),
                                      in_flight=request.chunks_in_flight, segment_chunks=request.segment_chunks)
    result.detail["catalog"] = []
    for collection in plan.collections:
        result.detail["catalog"].append((yield from finalize(context, collection)))
    return result


@chunk(bp, ImportChunkTask)
def import_chunk(context, chunk: ImportChunkTask, result: JobResult):
    """One chunk of an import: prepare each item (validate, resolve, judge its rasters), convert
    the rasters that are not COGs through ``convert_blob`` (each blob once), write each item
    that is ready, flush the chunk's items in one batch."""
    stage = f"{context.instance_id}/{context.new_uuid()}"
    task = ImportItemTask(chunk=chunk.chunk, output_container=chunk.output_container, options=chunk.options,
                          stage=stage, draft=chunk.draft)
    base = task.model_dump(mode="json")
    report(context, "preparing", result, chunk.chunk.count)
    prepared = yield from each(context, act.prepare_import_item, [{**base, "index": i} for i in range(chunk.chunk.count)],
                               ImportPrepared)
    ready: list[tuple[int, ImportPrepared]] = []
    for index, item in enumerate(prepared):
        if isinstance(item, Exception):
            result.add([outcome_of(f"item {index + 1} of {chunk.chunk.blob}", item)])
        elif item.status == "done":
            ready.append((index, item))
        else:
            result.add([TaskOutcome.model_validate(item.model_dump(include=set(TaskOutcome.model_fields)))])
    converted = yield from convert_assets(context, chunk, [p for _, p in ready], result)
    report(context, "writing", result, chunk.chunk.count)
    writes = []
    for index, item in ready:
        failed = [(c.key, converted[(c.container, c.file.name)]) for c in item.conversions
                  if converted[(c.container, c.file.name)].status == "failed"]
        if failed:  # the item is not written with an asset that has no COG
            key, failure = failed[0]
            result.add([TaskOutcome(name=item.name, status="failed", error=failure.error, item_id=item.item_id,
                                    reason=f"{item.location}: raster asset {key!r} was not converted: {failure.reason}")])
            continue
        writes.append(ImportWriteTask(task=task.model_copy(update={"index": index}), prepared=item, outputs={
            c.key: converted[(c.container, c.file.name)].output for c in item.conversions}))
    written = yield from outcomes(context, act.write_import_item, writes, [w.prepared.name for w in writes])
    yield from flush(context, StageRef(stage=stage, draft=chunk.draft), written)
    result.add(written)
    report(context, "importing", result)
    return result


def convert_assets(context, chunk: ImportChunkTask, items: list[ImportPrepared], result: JobResult):
    """Each distinct blob the chunk's items convert, through ``convert_blob`` (not cataloged: the
    item is the source's); its outcome by (container, blob)."""
    blobs = {(c.container, c.file.name): c for item in items for c in item.conversions}
    report(context, "converting", result, chunk.chunk.count)
    done = yield from outcomes(context, act.convert_blob, [ConvertTask(
        container=c.container, file=c.file, output_container=chunk.output_container, options=chunk.options,
        catalog=False) for c in blobs.values()], [c.file.name for c in blobs.values()])
    return dict(zip(blobs, done))


# -- unpublish -----------------------------------------------------------------------------------

@job(bp)
def unpublish(context, request, result: JobResult):
    """Plan the output groups → one sub-orchestration per chunk of groups (in segments past
    ``segment_chunks`` chunks, ``gather_chunks``), one activity per group → settle the collections touched (extent, searches of the emptied, the removed collection)."""
    report(context, "planning", result, 0)
    plan = yield from call(context, act.plan_unpublish, UnpublishPlanRequest(
        request=request, plan_id=context.instance_id.replace(":", "-")), UnpublishPlan)
    result.detail = {"plan": plan.model_dump(mode="json", exclude={"chunks"})}
    if request.dry_run:
        return result
    result = yield from gather_chunks(context, unpublish_chunk, plan.chunks, result, stage="removing",
                                      total=plan.groups, names=list(plan.chunks), in_flight=request.chunks_in_flight,
                                      segment_chunks=request.segment_chunks)
    if plan.collections:
        result.detail["collections"] = yield from call(context, act.settle_collections, SettleCollectionsTask(
            collections=plan.collections, remove=request.collection if request.entire_collection else None))
    if not result.failed:
        result.detail["removed"] = {"items": plan.counts["items"], "blobs": plan.counts["blobs"]}
    return result


@chunk(bp, ChunkRef)
def unpublish_chunk(context, chunk: ChunkRef, result: JobResult):
    """One chunk of an unpublish: read its output groups, remove each in one activity (``live``)."""
    groups = yield from call(context, act.read_chunk, chunk)
    result.add((yield from outcomes(context, act.remove_outputs, groups, [g["name"] for g in groups],
                                    stage="removing", result=result)))
    report(context, "removing", result)
    return result


def unpublish_sources(context, result: JobResult, request: UnpublishRequest, index: int = 0):
    """A job's gone sources unpublished by a sub-orchestration (``<job id>:unpublish-0000<index>``;
    their whole output: items, tiles' items, COGs, tiles, thumbnails, mosaics); its failures become
    the job's. The number of items removed (None when some group failed)."""
    done = yield from call(context, unpublish, request, JobResult, instance_id=chunk_id(context, "unpublish", index))
    if done.failed:
        result.add(done.failures)
        return None
    return done.detail.get("removed", {}).get("items", 0)


# -- publish, revoke -----------------------------------------------------------------------------

@job(bp)
def publish(context, request, result: JobResult):
    """Move a collection's drafts into the public catalog, recorded; refresh its extent."""
    return (yield from visibility(context, request, result, "publish"))


@job(bp)
def revoke(context, request, result: JobResult):
    """Move a collection's items back to the drafts, recorded; refresh its extent."""
    return (yield from visibility(context, request, result, "revoke"))


def visibility(context, request, result: JobResult, action: str):
    report(context, action, result, 1)
    moved = yield from call(context, act.set_visibility, VisibilityTask(
        action=action, collection=request.collection, items=request.items, by=request.requested_by or "anonymous",
        reason=request.reason, job=context.instance_id), VisibilityResult)
    result.add([TaskOutcome(name=request.collection, status="done" if moved.items else "skipped")])
    result.detail["transition"] = moved.model_dump(mode="json")
    result.detail["catalog"] = yield from finalize(context, request.collection)
    return result


# -- segments: a large job's chunks gathered a segment at a time -------------------------------

def gather_chunks(context, chunk_orchestrator, tasks: list, result: JobResult, *, stage: str, total: int,
                  names: list, in_flight: int | None = None, segment_chunks: int | None = None):
    """A job's chunks: one ``chunk_orchestrator`` sub-orchestration per task, run by ``gather``.
    A job of more than ``segment_chunks`` (SEGMENT_CHUNKS) chunks runs them in segments of that
    many (``chunk_segment``, one after another, each running ``in_flight`` chunks at once), so its
    own history grows by one entry per segment and no history by more than one segment's chunks:
    every episode replays its whole history, and a job gathering 1,000 chunks itself paid
    O(chunks²). The size comes from the job's request, never from the environment."""
    size = segment_chunks or SEGMENT_CHUNKS
    if len(tasks) <= size:
        return (yield from gather(context, starts(context, chunk_orchestrator, tasks), result, stage=stage,
                                  total=total, names=names, in_flight=in_flight))
    payloads = [t.model_dump(mode="json") for t in tasks]
    segments = [SegmentTask(orchestrator=name_of(chunk_orchestrator), chunks=payloads[i:i + size],
                            names=names[i:i + size], in_flight=in_flight, stage=stage,
                            total=_files(names[i:i + size])) for i in range(0, len(tasks), size)]
    segment_starts = [functools.partial(schedule, context, chunk_segment, segment,
                                        instance_id=chunk_id(context, "segment", s)) for s, segment in enumerate(segments)]
    return (yield from gather(context, segment_starts, result, stage=stage, total=total, in_flight=1, segments=True,
                              names=[segment.names for segment in segments]))


def _files(names: list) -> int:
    return sum(entry.count if isinstance(entry, ChunkRef) else len(entry) for entry in names)


@bp.orchestration_trigger(context_name="context", input_type=dict)
def chunk_segment(context: df.DurableOrchestrationContext):
    """A segment of a large job's chunks (``gather_chunks``): runs them as the job would, at most
    ``in_flight`` at once, and returns their results merged."""
    segment = SegmentTask.model_validate(context.get_input())
    result = JobResult(operation="chunk_segment", started=context.current_utc_datetime)
    orchestrator = CHUNK_ORCHESTRATORS[segment.orchestrator]
    segment_starts = [functools.partial(schedule, context, orchestrator, chunk, instance_id=chunk_id(context, "chunk", i))
                      for i, chunk in enumerate(segment.chunks)]
    result = yield from gather(context, segment_starts, result, stage=segment.stage, total=segment.total,
                               names=segment.names, in_flight=segment.in_flight)
    return result.model_dump(mode="json")


#: The chunk orchestrators a segment may run (``SegmentTask.orchestrator`` names one).
CHUNK_ORCHESTRATORS = {name_of(f): f for f in (catalog_chunk, convert_chunk, import_chunk, unpublish_chunk)}
