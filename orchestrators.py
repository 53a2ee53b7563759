"""Orchestrators: one per operation, each reading like the job's recipe.

Deterministic by construction: time from ``context.current_utc_datetime``, no I/O, no environment
reads; data crosses the Durable boundary as plain JSON and is validated again with pydantic.
Large fan-outs go through sub-orchestrations of one chunk each (ids ``<job id>:chunk-00001``), so
no history grows past a few thousand events. The parent reports progress as chunks finish; a
fan-out marks its status ``live`` and the job API counts its finished files and tiles from the
history at read time (``models.history_progress``), so progress per file costs the
orchestrations nothing: no extra episode, no extra replay.
Every top-level job signals the ``job_metrics`` entity of its operation when it starts and ends.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Generator

import azure.durable_functions as df

import activities as act
import cube_activities as cube_act
from cube_jobs import CubeFinished, CubeFinishTask, CubeGroupTask, CubePlan, CubeTask
from entities import METRICS_ENTITY
from models import (
    CHUNKS_IN_FLIGHT,
    CHUNKS_NAMED,
    SYNC_CHUNK_SIZE,
    BlobDescription,
    BlobRef,
    BlobValidation,
    CatalogChunkTask,
    CatalogFileRequest,
    CatalogSummary,
    CatalogTilesResult,
    CatalogTilesTask,
    DiscardTilesTask,
    ChunkRef,
    CollectionRef,
    ConversionPlan,
    ConversionPlanRequest,
    ConvertChunkTask,
    CogConversionRequest,
    CollectionSpec,
    ConvertTask,
    DatabaseHealthRequest,
    FileRef,
    GreetingTask,
    HelloWorldRequest,
    HelloWorldResult,
    IMPORT_CHUNK_SIZE,
    ImportChunkTask,
    ImportItemTask,
    ImportPlan,
    ImportPlanRequest,
    ImportPrepared,
    ImportStacRequest,
    ImportWriteTask,
    IngestBlobRequest,
    SEGMENT_CHUNKS,
    SegmentTask,
    InspectResult,
    JobEnded,
    JobResult,
    InventorySummary,
    ListContainerRequest,
    MosaicSummary,
    MosaicTask,
    ProcessTiledRasterRequest,
    Progress,
    PublishRequest,
    RevokeRequest,
    SettleCollectionsTask,
    StageRef,
    SyncContainerRequest,
    SyncJobPlan,
    SyncPlanRequest,
    TaskOutcome,
    TilePlanResult,
    TileTask,
    UnpublishPlan,
    UnpublishPlanRequest,
    UnpublishRequest,
    ValidateRasterRequest,
    VisibilityTask,
    chunk_instance_id,
)
from catalogs import CatalogHealth, UpsertResult
from drafts import VisibilityResult

bp = df.Blueprint()

# Transient faults (storage, catalog) are retried here; bad files never raise, so never retry.
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
Body = Callable[[df.DurableOrchestrationContext, JobResult], Generator[Any, Any, JobResult]]


# -- the job frame: metrics, progress, result ----------------------------------------------------

def run_job(context: df.DurableOrchestrationContext, operation: str, body: Body):
    """Run ``body`` as a job: signal metrics at start and end (top-level jobs only), time it, and
    return its JobResult as JSON. A body that raises ends the job Failed, counted as failed."""
    started = context.current_utc_datetime
    metered = not context.parent_instance_id
    entity = df.EntityId(METRICS_ENTITY, operation)
    if metered:
        context.signal_entity(entity, "job_started")
    result = JobResult(operation=operation, started=started)
    try:
        result = yield from body(context, result)
    except Exception:
        if metered:
            seconds = (context.current_utc_datetime - started).total_seconds()
            context.signal_entity(entity, "job_ended", JobEnded(outcome="failed", job_seconds=seconds).model_dump(mode="json"))
        raise
    result.finished = context.current_utc_datetime
    result.seconds = (result.finished - started).total_seconds()
    if metered:
        outcome = "completed_with_errors" if result.completed_with_errors else "completed"
        ended = JobEnded(outcome=outcome, job_seconds=result.seconds, tasks=result.total,
                         tasks_failed=result.failed, task_seconds=result.task_seconds)
        context.signal_entity(entity, "job_ended", ended.model_dump(mode="json"))
    report(context, "completed", result)
    return result.model_dump(mode="json")


def report(context: df.DurableOrchestrationContext, stage: str, result: JobResult,
           total: int | None = None, *, chunks: list[int] | None = None, live: bool = False,
           segments: list[int] | None = None) -> None:
    """Publish progress as the custom status (small JSON, deterministic). ``chunks`` (or
    ``segments``): the numbers of the chunks (segments) running and not merged yet; ``live``: a
    fan-out whose finished tasks the job API counts from this instance's history, on top of what
    ``result`` counted."""
    named = (lambda numbers: numbers if numbers is not None and len(numbers) <= CHUNKS_NAMED else None)
    progress = Progress.at(stage, total=result.total if total is None else total,
                           done=result.done + result.skipped, failed=result.failed,
                           started=result.started, now=context.current_utc_datetime, live=live,
                           chunks=named(chunks), segments=named(segments))
    context.set_custom_status(progress.model_dump(mode="json", exclude=None if segments is not None else {"segments"}))


def gather(context: df.DurableOrchestrationContext, starts: list[Callable[[], Any]], result: JobResult, *,
           stage: str, total: int, names: list, in_flight: int | None = None, segments: bool = False):
    """Run the chunk sub-orchestrations that ``starts`` schedule, at most ``in_flight`` at once
    (the next starts as one finishes), merging each JobResult into ``result`` and updating
    progress. A chunk that failed outright (a fault beyond its retries) counts each of its files
    as failed with the chunk's reason, under the file's real blob name (``names[i]``: the names,
    or the chunk blob they are read from), so a retry of the job redoes exactly them. With
    ``segments`` the starts are segments (``chunk_segment``) and ``names[i]`` their chunks' names."""
    window = in_flight or CHUNKS_IN_FLIGHT
    running: list[tuple[Any, int]] = []
    started = 0

    def start_more() -> None:
        nonlocal started
        while started < len(starts) and len(running) < window:
            running.append((starts[started](), started))
            started += 1
        numbers = [i for _, i in running]
        report(context, stage, result, total, chunks=None if segments else numbers,
               segments=numbers if segments else None)

    start_more()
    while running:
        winner = yield context.task_any([task for task, _ in running])
        index = next(i for task, i in running if task is winner)
        running = [(task, i) for task, i in running if task is not winner]
        if isinstance(winner.result, Exception):
            reason = _first_line(winner.result)
            for chunk_names in (names[index] if segments else [names[index]]):
                if isinstance(chunk_names, ChunkRef):  # a chunk blob: read its file names once, now
                    files = yield context.call_activity_with_retry(
                        act.read_chunk, RETRY, chunk_names.model_dump(mode="json"))
                    chunk_names = [FileRef.model_validate(f).name for f in files]
                result.add([TaskOutcome(name=name, status="failed", error="ChunkFailed", reason=reason)
                            for name in chunk_names])
        else:
            result.merge(JobResult.model_validate(winner.result))
        start_more()
    return result


def gather_chunks(context: df.DurableOrchestrationContext, orchestrator: Any, chunks: list[dict], result: JobResult,
                  *, stage: str, total: int, names: list, in_flight: int | None = None,
                  segment_chunks: int | None = None):
    """A job's chunks: one ``orchestrator`` sub-orchestration per input of ``chunks``, run by
    ``gather``. A job of more than ``segment_chunks`` (SEGMENT_CHUNKS) chunks runs them in
    segments of that many (``chunk_segment``, one after another, each running ``in_flight`` chunks
    at once), so its own history grows by one entry per segment and no history by more than one
    segment's chunks. The size comes from the job's request, never from the environment."""
    size = segment_chunks or SEGMENT_CHUNKS
    if len(chunks) <= size:
        starts = [functools.partial(context.call_sub_orchestrator, orchestrator, chunk, chunk_id(context, "chunk", i),
                                    expected_type=dict) for i, chunk in enumerate(chunks)]
        return (yield from gather(context, starts, result, stage=stage, total=total, names=names,
                                  in_flight=in_flight))
    name = next(key for key, value in CHUNK_ORCHESTRATORS.items() if value is orchestrator)
    segments = [SegmentTask(orchestrator=name, chunks=chunks[i:i + size], names=names[i:i + size],
                            in_flight=in_flight, stage=stage, total=_files(names[i:i + size]))
                for i in range(0, len(chunks), size)]
    starts = [functools.partial(context.call_sub_orchestrator, chunk_segment, segment.model_dump(mode="json"),
                                chunk_id(context, "segment", s), expected_type=dict)
              for s, segment in enumerate(segments)]
    return (yield from gather(context, starts, result, stage=stage, total=total, in_flight=1, segments=True,
                              names=[segment.names for segment in segments]))


def _files(names: list[list[str] | ChunkRef]) -> int:
    return sum(entry.count if isinstance(entry, ChunkRef) else len(entry) for entry in names)


@bp.orchestration_trigger(context_name="context", input_type=dict)
def chunk_segment(context: df.DurableOrchestrationContext):
    """A segment of a large job's chunks (``gather_chunks``): runs them as the job would, at most
    ``in_flight`` at once, and returns their results merged."""
    segment = SegmentTask.model_validate(context.get_input())
    result = JobResult(operation="chunk_segment", started=context.current_utc_datetime)
    orchestrator = CHUNK_ORCHESTRATORS[segment.orchestrator]
    starts = [functools.partial(context.call_sub_orchestrator, orchestrator, chunk, chunk_id(context, "chunk", i),
                                expected_type=dict) for i, chunk in enumerate(segment.chunks)]
    result = yield from gather(context, starts, result, stage=segment.stage, total=segment.total,
                               names=segment.names, in_flight=segment.in_flight)
    return result.model_dump(mode="json")


def settle(context: df.DurableOrchestrationContext, tasks: list):
    """Wait for every task and return their results in order; a task that failed beyond its
    retries gives its exception in its place instead of failing its siblings (``task_all`` fails
    fast on the first failure, which would lend every file of a chunk one file's fault)."""
    waiting = context.task_all(tasks) if tasks else None
    while waiting is not None:
        try:
            yield waiting
        except Exception:  # noqa: BLE001 - each failure is read from its own task below
            pass
        running = [task for task in tasks if not task.is_completed]
        waiting = context.task_all(running) if running else None  # failed fast: wait for the rest
    return [task.result for task in tasks]


def outcome_of(name: str, result: Any) -> TaskOutcome:
    """A file's or tile's outcome from its task's result, or from the fault that failed it."""
    if isinstance(result, Exception):
        return TaskOutcome(name=name, status="failed", error=_condition(result), reason=_first_line(result))
    return TaskOutcome.model_validate(result)


def _condition(err: Exception) -> str:
    """The error class an activity failure names (``... failed: StorageUnavailable: ...``)."""
    match = re.search(r"failed: (\w+):", str(err))
    return match.group(1) if match else "TaskFailed"


def _first_line(err: Exception, limit: int = 500) -> str:
    return str(err).strip().splitlines()[0][:limit] if str(err).strip() else type(err).__name__


def chunk_id(context: df.DurableOrchestrationContext, kind: str, index: int) -> str:
    return chunk_instance_id(context.instance_id, kind, index)


# -- hello_world ---------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def hello_world(context: df.DurableOrchestrationContext):
    """Fan out one greeting activity per count, fan in with task_all."""
    request = HelloWorldRequest.model_validate(context.get_input() or {})
    tasks = [
        context.call_activity(act.say_hello, GreetingTask(name=request.name, index=i).model_dump(mode="json"))
        for i in range(request.count)
    ]
    greetings = yield context.task_all(tasks)
    return HelloWorldResult(greetings=greetings).model_dump(mode="json")


# -- list_container ------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def list_container(context: df.DurableOrchestrationContext):
    """Inventory of a container, written as a JSON blob; totals by extension in the output."""
    return (yield from run_job(context, "list_container", _list_container))


def _list_container(context, result: JobResult):
    request = ListContainerRequest.model_validate(context.get_input())
    report(context, "listing", result, 0)
    summary = InventorySummary.model_validate((yield context.call_activity_with_retry(
        act.write_inventory, RETRY, request.model_dump(mode="json"))))
    result.total = result.done = summary.count
    result.detail = summary.model_dump(mode="json")
    return result


# -- sync_container ------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def sync_container(context: df.DurableOrchestrationContext):
    """Catalog a container: plan by ETag, remove vanished items, one sub-orchestration per chunk."""
    return (yield from run_job(context, "sync_container", _sync_container))


def _sync_container(context, result: JobResult):
    request = SyncContainerRequest.model_validate(context.get_input())
    report(context, "planning", result, 0)
    plan_request = SyncPlanRequest(container=request.container, prefix=request.prefix,
                                   collection=request.collection, collection_title=request.collection_title,
                                   collection_description=request.collection_description, mode=request.mode,
                                   dry_run=request.dry_run, chunk_size=request.chunk_size or SYNC_CHUNK_SIZE,
                                   plan_id=context.instance_id.replace(":", "-"), draft=request.draft,
                                   job=context.instance_id)
    plan = SyncJobPlan.model_validate((yield context.call_activity_with_retry(
        act.plan_sync, RETRY, plan_request.model_dump(mode="json"))))
    result.detail = {"plan": plan.model_dump(mode="json", exclude={"chunks", "removed_ids", "removed_sources"})}
    if request.dry_run:
        return result
    # A file already cataloged for its ETag is skipped: counted (total, skipped), not scheduled.
    result.total = result.skipped = plan.counts.get("unchanged", 0)
    if plan.removed_sources:  # a source gone: its whole output goes, through unpublish
        result.detail["removed"] = yield from unpublish_sources(
            context, result, UnpublishRequest(container=request.container, blobs=plan.removed_sources))
    total = result.total + sum(chunk.count for chunk in plan.chunks)
    chunks = [CatalogChunkTask(chunk=c, container=request.container, collection=plan.collection,
                               draft=request.draft).model_dump(mode="json") for c in plan.chunks]
    result = yield from gather_chunks(context, catalog_chunk, chunks, result, stage="cataloging", total=total,
                                      names=list(plan.chunks), in_flight=request.chunks_in_flight,
                                      segment_chunks=request.segment_chunks)
    result.detail["catalog"] = yield from finalize(context, plan.collection)
    return result


def finalize(context, collection: str):
    """Refresh the collection's extent and summaries (and the static catalog's links), then
    register its mosaic (a pgSTAC search titiler-pgstac serves; none on the static catalog)."""
    ref = CollectionRef(collection=collection).model_dump(mode="json")
    summary = yield context.call_activity_with_retry(act.finalize_catalog, RETRY, ref)
    mosaic = yield context.call_activity_with_retry(act.register_mosaic, RETRY, ref)
    return CatalogSummary.model_validate({**summary, "mosaic": mosaic}).model_dump(mode="json")


@bp.orchestration_trigger(context_name="context", input_type=dict)
def catalog_chunk(context: df.DurableOrchestrationContext):
    """One chunk of a sync: read its file list, catalog each file, fan in (progress ``live``)."""
    chunk = CatalogChunkTask.model_validate(context.get_input())
    result = JobResult(operation="catalog_chunk", started=context.current_utc_datetime)
    listed = yield context.call_activity_with_retry(act.read_chunk, RETRY, chunk.chunk.model_dump(mode="json"))
    files = [FileRef.model_validate(f) for f in listed]
    # Each file's activity stages its item; one flush writes the chunk's items in one batch.
    # The stage is this run's own (a rerun of the chunk id never flushes an older run's items).
    stage = f"{context.instance_id}/{context.new_uuid()}"
    # The payloads are ConvertTask's JSON with each validated file's listing as read (the
    # activity validates the task again); every replay of the chunk rebuilds them, so no
    # model is dumped per file here.
    base = ConvertTask(container=chunk.container, file=FileRef(name=""), collection=chunk.collection,
                       stage=stage, draft=chunk.draft).model_dump(mode="json")
    tasks = [context.call_activity_with_retry(catalog_activity(f.get("form")), RETRY, {**base, "file": f})
             for f in listed]
    report(context, "cataloging", result, len(files), live=True)
    results = yield from settle(context, tasks)
    outcomes = [outcome_of(f.name, r) for f, r in zip(files, results)]
    if any(o.status == "done" for o in outcomes):
        flushed = yield context.call_activity_with_retry(act.flush_items, RETRY, StageRef(
            stage=stage, draft=chunk.draft).model_dump(mode="json"))
        UpsertResult.model_validate(flushed)
    result.add(outcomes)
    report(context, "cataloging", result)
    return result.model_dump(mode="json")


def catalog_activity(form: str | None):
    """The activity that catalogs a source in place: a raster's, or a cube file's or store's."""
    return act.catalog_blob if form in (None, "raster") else cube_act.catalog_cube


# -- catalog_file, validate_raster, database_health ---------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def catalog_file(context: df.DurableOrchestrationContext):
    """One raster → one STAC item upserted."""
    return (yield from run_job(context, "catalog_file", _catalog_file))


def _catalog_file(context, result: JobResult):
    request = CatalogFileRequest.model_validate(context.get_input())
    report(context, "cataloging", result, 1)
    source = yield from source_and_collection(context, request, result, holds="rasters", source=request.container)
    if source is None:
        return result
    file, collection = source
    outcome = yield context.call_activity_with_retry(catalog_activity(file.form), RETRY, ConvertTask(
        container=request.container, file=file, collection=collection,
        datetime=request.datetime, draft=request.draft).model_dump(mode="json"))
    result.add([TaskOutcome.model_validate(outcome)])
    result.detail["catalog"] = yield from finalize(context, collection)
    return result


def source_and_collection(context, request, result: JobResult, *, holds: str, source: str):
    """(the source blob's facts, the collection id, created if needed) of a one-blob request, or
    None with a failed outcome recorded when the blob does not exist."""
    file = yield from describe(context, request.container, request.blob, result)
    if file is None:
        return None
    collection = yield context.call_activity_with_retry(act.prepare_collection, RETRY, collection_spec(
        request, holds=holds, source=source, job=context.instance_id))
    return file, collection


def collection_spec(request, *, holds: str, source: str, job: str | None = None) -> dict:
    """What ``prepare_collection`` needs of a request: its collection, title, description, and
    whether a new one is a draft."""
    return CollectionSpec(container=request.container, collection=request.collection,
                          title=request.collection_title, description=request.collection_description,
                          holds=holds, source=source, target_crs=getattr(request, "target_crs", None),
                          draft=getattr(request, "draft", False), job=job).model_dump(mode="json")


def describe(context, container: str, blob: str, result: JobResult):
    """The blob's listing facts, or None with a failed outcome recorded when it does not exist."""
    found = BlobDescription.model_validate((yield context.call_activity_with_retry(
        act.describe_blob, RETRY, BlobRef(container=container, blob=blob).model_dump(mode="json"))))
    if not found.found:
        result.add([TaskOutcome(name=blob, status="failed", error="BlobNotFound", reason=found.reason)])
        return None
    return found.file


@bp.orchestration_trigger(context_name="context", input_type=dict)
def validate_raster(context: df.DurableOrchestrationContext):
    """A validation report of one raster; an invalid raster completes with errors."""
    return (yield from run_job(context, "validate_raster", _validate_raster))


def _validate_raster(context, result: JobResult):
    request = ValidateRasterRequest.model_validate(context.get_input())
    report(context, "validating", result, 1)
    file = yield from describe(context, request.container, request.blob, result)
    if file is None:
        return result
    validation = BlobValidation.model_validate((yield context.call_activity_with_retry(
        act.validate_blob, RETRY, BlobRef(container=request.container, blob=request.blob).model_dump(mode="json"))))
    errors = validation.errors
    result.add([TaskOutcome(name=request.blob, status="failed" if errors else "done",
                            error=errors[0].code if errors else None,
                            reason="; ".join(e.message for e in errors) or None)])
    result.detail["report"] = validation.model_dump(mode="json")
    return result


@bp.orchestration_trigger(context_name="context", input_type=dict)
def database_health(context: df.DurableOrchestrationContext):
    """Catalog reachable, version, counts."""
    return (yield from run_job(context, "database_health", _database_health))


def _database_health(context, result: JobResult):
    DatabaseHealthRequest.model_validate(context.get_input() or {})
    health = CatalogHealth.model_validate((yield context.call_activity_with_retry(act.catalog_health, RETRY, {})))
    result.add([TaskOutcome(name="catalog", status="done" if health.ok else "failed",
                            error=None if health.ok else "CatalogUnavailable", reason=health.detail)])
    result.detail["health"] = health.model_dump(mode="json")
    return result


# -- cog_conversion ------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def cog_conversion(context: df.DurableOrchestrationContext):
    """Validate → COG (optionally reprojected) → catalog, per file, in chunks; rasters above the
    per-task pixel budget take the tiled path by themselves."""
    return (yield from run_job(context, "cog_conversion", _cog_conversion))


def _cog_conversion(context, result: JobResult):
    request = CogConversionRequest.model_validate(context.get_input())
    report(context, "listing", result, 0)
    selected = (f"{request.container}/{request.prefix}" if request.prefix is not None else
                f"{request.container}/{request.blobs[0]}" if len(request.blobs) == 1 else request.container)
    collection = yield context.call_activity_with_retry(
        act.prepare_collection, RETRY, collection_spec(request, holds="cogs", source=selected, job=context.instance_id))
    base = ConvertTask(container=request.container, file=FileRef(name=""), collection=collection,
                       output_container=request.output_container, catalog=request.catalog,
                       options=request.cog_options(), draft=request.draft)
    size = request.chunk_size or 100
    if request.prefix is not None:  # listed and chunked by an activity: never through history
        plan = ConversionPlan.model_validate((yield context.call_activity_with_retry(
            act.plan_conversion, RETRY, ConversionPlanRequest(
                container=request.container, prefix=request.prefix, chunk_size=size,
                plan_id=context.instance_id.replace(":", "-")).model_dump(mode="json"))))
        result.detail["ignored"] = plan.ignored_names
        total, names = plan.files, list(plan.chunks)
        chunks = [ConvertChunkTask(task=base, chunk=c) for c in plan.chunks]
    else:
        total = len(request.blobs)
        names = [request.blobs[i:i + size] for i in range(0, total, size)]
        chunks = [ConvertChunkTask(task=base, blobs=part) for part in names]
    result = yield from gather_chunks(context, convert_chunk, [chunk.model_dump(mode="json") for chunk in chunks], result,
                                      stage="converting", total=total, names=names, in_flight=request.chunks_in_flight,
                                      segment_chunks=request.segment_chunks)
    if request.catalog:
        result.detail["catalog"] = yield from finalize(context, collection)
    return result


def chunk_files(context, chunk: ConvertChunkTask, result: JobResult):
    """A conversion chunk's files: read from its chunk blob, or described by name (a missing
    blob is recorded as a failure)."""
    if chunk.chunk is not None:
        files = yield context.call_activity_with_retry(act.read_chunk, RETRY, chunk.chunk.model_dump(mode="json"))
        return [FileRef.model_validate(f) for f in files]
    found = [BlobDescription.model_validate(f) for f in (yield context.task_all([
        context.call_activity_with_retry(act.describe_blob, RETRY, BlobRef(
            container=chunk.task.container, blob=b).model_dump(mode="json")) for b in chunk.blobs]))]
    result.add([TaskOutcome(name=b, status="failed", error="BlobNotFound", reason=f.reason)
                for b, f in zip(chunk.blobs, found) if not f.found])
    return [f.file for f in found if f.found]


@bp.orchestration_trigger(context_name="context", input_type=dict)
def convert_chunk(context: df.DurableOrchestrationContext):
    """One chunk of a conversion: inspect each file, convert the small ones in one activity each,
    send the large ones down the tiled path as sub-orchestrations."""
    chunk = ConvertChunkTask.model_validate(context.get_input())
    base = chunk.task
    result = JobResult(operation="convert_chunk", started=context.current_utc_datetime)
    files = yield from chunk_files(context, chunk, result)
    total = len(files) + result.total  # with the named blobs found missing
    tasks = [base.model_copy(update={"file": file}) for file in files]
    cube_tasks = [t for t in tasks if t.file.form != "raster"]  # a sub-orchestration each, below
    tasks = [t for t in tasks if t.file.form == "raster"]
    inspected = yield from settle(context, [context.call_activity_with_retry(
        act.inspect_raster, RETRY, t.model_dump(mode="json")) for t in tasks])
    work, names, tiled_indices, cube_indices = [], [], set(), set()
    for task, raw in zip(tasks, inspected):
        if isinstance(raw, Exception):
            result.add([outcome_of(task.file.name, raw)])
            continue
        inspection = InspectResult.model_validate(raw)
        if inspection.outcome is not None:
            result.add([inspection.outcome])
        elif inspection.needs_tiling:
            tiled = ProcessTiledRasterRequest(container=task.container, blob=task.file.name,
                                              output_container=task.output_container,
                                              collection=task.collection, catalog=task.catalog,
                                              draft=task.draft, **task.options.model_dump())
            tiled_indices.add(len(work))
            work.append(context.call_sub_orchestrator(process_tiled_raster, tiled.model_dump(mode="json"),
                                                      chunk_id(context, "tiled", len(work)), expected_type=dict))
            names.append(task.file.name)
        else:
            work.append(context.call_activity_with_retry(act.convert_blob, RETRY, task.model_dump(mode="json")))
            names.append(task.file.name)
    for task in cube_tasks:
        cube_indices.add(len(work))
        work.append(context.call_sub_orchestrator(convert_cube, task.model_dump(mode="json"),
                                                  chunk_id(context, "cube", len(work)), expected_type=dict))
        names.append(task.file.name)
    report(context, "converting", result, total, live=True)
    outcomes = yield from settle(context, work)
    for index, (name, outcome) in enumerate(zip(names, outcomes)):
        if isinstance(outcome, Exception):
            result.add([outcome_of(name, outcome)])
        elif index in cube_indices:  # a cube's sub-orchestration's JobResult
            result.add([cube_outcome(name, JobResult.model_validate(outcome))])
        elif index in tiled_indices:  # a tiled sub-orchestration's JobResult
            tiled = JobResult.model_validate(outcome)
            status = "failed" if tiled.failed else "done"
            result.add([TaskOutcome(name=name, status=status, output=tiled.detail.get("mosaic", {}).get("path"),
                                    error="TileFailed" if tiled.failed else None,
                                    reason=f"{tiled.failed} of {tiled.total} tiles failed" if tiled.failed else None,
                                    seconds=tiled.seconds or 0.0)])
        else:
            result.add([TaskOutcome.model_validate(outcome)])
    report(context, "converting", result)
    return result.model_dump(mode="json")


# -- convert_cube (a multidimensional file or a Zarr store) -------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def convert_cube(context: df.DurableOrchestrationContext):
    """One cube: plan its slice groups → one activity per group (progress ``live``) → keep its
    outputs, or remove them all when a group failed (a failed file leaves nothing behind)."""
    task = ConvertTask.model_validate(context.get_input())
    result = JobResult(operation="convert_cube", started=context.current_utc_datetime)
    report(context, "planning", result, 0)
    plan = CubePlan.model_validate((yield context.call_activity_with_retry(cube_act.inspect_cube, RETRY, CubeTask(
        task=task, plan_id=context.instance_id.replace(":", "-")).model_dump(mode="json"))))
    if plan.outcome is not None:  # refused by name, or current: the file's own outcome
        result.add([plan.outcome])
        return ended(context, result)
    groups = [context.call_activity_with_retry(cube_act.convert_cube_group, RETRY, CubeGroupTask(
        task=task, plan=plan.plan, group=g.index, label=g.label).model_dump(mode="json")) for g in plan.groups]
    report(context, "converting", result, len(groups), live=True)
    outcomes = yield from settle(context, groups)
    result.add([outcome_of(g.label, o) for g, o in zip(plan.groups, outcomes)])
    finished = CubeFinished.model_validate((yield context.call_activity_with_retry(
        cube_act.finish_cube, RETRY, CubeFinishTask(task=task, plan=plan.plan, keep=result.failed == 0
                                                    ).model_dump(mode="json"))))
    result.detail = {"cube": plan.model_dump(mode="json", include={"variables", "slices", "steps",
                                                                   "skipped_variables", "warnings"}),
                     "finished": finished.model_dump(mode="json"),
                     "output": f"{task.output_container}/{task.container}/{task.file.name}/"}
    report(context, "converting", result)
    return ended(context, result)


def ended(context, result: JobResult) -> dict:
    """A sub-orchestration's result with its end and duration (a job's come from ``run_job``)."""
    result.finished = context.current_utc_datetime
    result.seconds = (result.finished - result.started).total_seconds()
    return result.model_dump(mode="json")


def cube_outcome(name: str, cube: JobResult) -> TaskOutcome:
    """A cube's outcome in its chunk: failed with the first named condition (its plan's, or a
    slice group's), skipped when every group (or the whole file) was current, else done."""
    if cube.failed:
        first = cube.failures[0]
        reason = first.reason if first.name == name else (
            f"{cube.failed} of {cube.total} slice groups failed (nothing of the file was kept): {first.reason}")
        return TaskOutcome(name=name, status="failed", error=first.error, reason=reason, seconds=cube.seconds or 0.0)
    return TaskOutcome(name=name, status="skipped" if cube.skipped == cube.total else "done",
                       output=cube.detail.get("output"), seconds=cube.seconds or 0.0)


# -- process_tiled_raster ------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def process_tiled_raster(context: df.DurableOrchestrationContext):
    """Plan a tile grid → one activity per tile → mosaic VRT → catalog the tiles."""
    return (yield from run_job(context, "process_tiled_raster", _process_tiled_raster))


def _process_tiled_raster(context, result: JobResult):
    request = ProcessTiledRasterRequest.model_validate(context.get_input())
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
    planned = TilePlanResult.model_validate((yield context.call_activity_with_retry(
        act.plan_raster_tiles, RETRY, task.model_dump(mode="json"))))
    if planned.outcome is not None:  # the source cannot be tiled as asked (unreadable, CRS it cannot map to)
        result.add([planned.outcome])
        return result
    plan = planned.plan
    digest = act.options_digest({**options.model_dump(), "tile_size": plan.tile_size})
    tiles = [context.call_activity_with_retry(act.convert_tile, RETRY, TileTask(
        container=request.container, blob=file.name, source_etag=file.etag,
        output_container=request.output_container, profile=request.profile,
        max_z_error=request.max_z_error, options_digest=digest, catalog=request.catalog,
        tile=tile.model_dump(mode="json")).model_dump(mode="json")) for tile in plan.tiles]
    report(context, "tiling", result, len(tiles), live=True)
    results = yield from settle(context, tiles)
    outcomes = [outcome_of(f"tile {t.row},{t.col}", r) for t, r in zip(plan.tiles, results)]
    result.add(outcomes)
    written = [o.output.split("/", 1)[1] for o in outcomes if o.status != "failed"]
    mosaic_name = act.cog_blob_name(request.container, request.blob, suffix="") + "/mosaic.vrt"
    if result.failed == 0 and written:
        try:
            report(context, "mosaicking", result)
            mosaic = yield context.call_activity_with_retry(act.build_tile_mosaic, RETRY, MosaicTask(
                output_container=request.output_container, tiles=written, mosaic=mosaic_name,
                source=f"{request.container}/{request.blob}", source_etag=file.etag).model_dump(mode="json"))
            result.detail["mosaic"] = MosaicSummary.model_validate(mosaic).model_dump(mode="json")
            if request.catalog:
                items = yield context.call_activity_with_retry(act.catalog_tiles, RETRY, CatalogTilesTask(
                    task=task, tiles=written).model_dump(mode="json"))
                result.detail["items"] = CatalogTilesResult.model_validate(items).model_dump(mode="json")
        except Exception as err:  # the mosaic or the tiles' items failed beyond their retries: the file failed
            result.add([outcome_of(request.blob, err)])
            result.detail.pop("mosaic", None)
    if result.failed and written:  # a failed file leaves nothing behind: its tiles, mosaic, items
        result.detail["discarded"] = yield context.call_activity_with_retry(act.discard_tiles, RETRY, DiscardTilesTask(
            task=task, tiles=written, mosaic=mosaic_name).model_dump(mode="json"))
    elif request.catalog and written and not context.parent_instance_id:
        result.detail["catalog"] = yield from finalize(context, collection)
    result.detail["tiles"] = {"count": len(outcomes), "rows": plan.rows, "cols": plan.cols,
                              "tile_size": plan.tile_size}
    return result


# -- ingest_blob (blob events) -------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def ingest_blob(context: df.DurableOrchestrationContext):
    """One blob event: catalog the blob as it is now (converted first when asked), or remove its
    item when it is gone."""
    return (yield from run_job(context, "ingest_blob", _ingest_blob))


def _ingest_blob(context, result: JobResult):
    request = IngestBlobRequest.model_validate(context.get_input())
    report(context, "ingesting", result, 1)
    found = BlobDescription.model_validate((yield context.call_activity_with_retry(
        act.describe_blob, RETRY, BlobRef(container=request.container, blob=request.blob).model_dump(mode="json"))))
    collection = yield context.call_activity_with_retry(act.prepare_collection, RETRY, CollectionSpec(
        container=request.container, collection=request.collection, holds="cogs" if request.convert else "rasters",
        source=request.container).model_dump(mode="json"))
    if not found.found:  # the blob is gone: its whole output goes, through unpublish
        removed = yield from unpublish_sources(context, result, UnpublishRequest(
            container=request.container, blobs=[request.blob], output_container=request.output_container))
        result.add([TaskOutcome(name=request.blob, status="done" if removed else "skipped")])
        result.detail["removed"] = removed
    elif request.convert:
        task = ConvertTask(container=request.container, file=FileRef(name=""), collection=collection,
                           output_container=request.output_container)
        chunk = yield context.call_sub_orchestrator(
            convert_chunk, ConvertChunkTask(task=task, blobs=[request.blob]).model_dump(mode="json"),
            chunk_id(context, "chunk", 0), expected_type=dict)
        result.merge(JobResult.model_validate(chunk))
    else:
        outcome = yield context.call_activity_with_retry(catalog_activity(found.file.form), RETRY, ConvertTask(
            container=request.container, file=found.file, collection=collection).model_dump(mode="json"))
        result.add([TaskOutcome.model_validate(outcome)])
    result.detail["catalog"] = yield from finalize(context, collection)
    return result


# -- import_stac ---------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def import_stac(context: df.DurableOrchestrationContext):
    """STAC made elsewhere: read the source into chunk blobs, one sub-orchestration per chunk,
    then refresh each collection the items went to."""
    return (yield from run_job(context, "import_stac", _import_stac))


def _import_stac(context, result: JobResult):
    request = ImportStacRequest.model_validate(context.get_input())
    report(context, "reading", result, 0)
    # The plan id is new per run: the item activities cache chunk blobs by name.
    plan = ImportPlan.model_validate((yield context.call_activity_with_retry(act.plan_import, RETRY, ImportPlanRequest(
        container=request.container, blob=request.blob, prefix=request.prefix, collection=request.collection,
        chunk_size=request.chunk_size or IMPORT_CHUNK_SIZE,
        plan_id=f"{context.instance_id.replace(':', '-')}-{context.new_uuid()[:8]}").model_dump(mode="json"))))
    result.add(plan.failures)  # documents, links and items that could not be read, by name
    result.add_counted(plan.unlisted_failures)
    result.detail["plan"] = plan.model_dump(mode="json", include={"items", "documents", "collections", "ignored",
                                                                  "ignored_names"})
    total = result.total + plan.items
    chunks = [ImportChunkTask(chunk=c, output_container=request.output_container,
                              options=request.cog_options()).model_dump(mode="json") for c in plan.chunks]
    result = yield from gather_chunks(context, import_chunk, chunks, result, stage="importing", total=total,
                                      names=list(plan.chunks), in_flight=request.chunks_in_flight,
                                      segment_chunks=request.segment_chunks)
    result.detail["catalog"] = []
    for collection in plan.collections:
        result.detail["catalog"].append((yield from finalize(context, collection)))
    return result


@bp.orchestration_trigger(context_name="context", input_type=dict)
def import_chunk(context: df.DurableOrchestrationContext):
    """One chunk of an import: prepare each item (validate, resolve, judge its rasters), convert
    the rasters that are not COGs through ``convert_blob`` (each blob once), write each item
    that is ready, flush the chunk's items in one batch."""
    chunk = ImportChunkTask.model_validate(context.get_input())
    result = JobResult(operation="import_chunk", started=context.current_utc_datetime)
    stage = f"{context.instance_id}/{context.new_uuid()}"
    task = ImportItemTask(chunk=chunk.chunk, output_container=chunk.output_container, options=chunk.options,
                          stage=stage)
    base = task.model_dump(mode="json")
    report(context, "preparing", result, chunk.chunk.count)
    prepared = yield from settle(context, [context.call_activity_with_retry(
        act.prepare_import_item, RETRY, {**base, "index": i}) for i in range(chunk.chunk.count)])
    ready: list[tuple[int, ImportPrepared]] = []
    for index, raw in enumerate(prepared):
        item = (ImportPrepared.model_validate(raw) if not isinstance(raw, Exception)
                else outcome_of(f"item {index + 1} of {chunk.chunk.blob}", raw))
        if isinstance(item, ImportPrepared) and item.status == "done":
            ready.append((index, item))
        else:
            result.add([TaskOutcome.model_validate(item.model_dump(include=set(TaskOutcome.model_fields)))])
    outputs = yield from convert_assets(context, chunk, [p for _, p in ready], result)
    report(context, "writing", result, chunk.chunk.count)
    writes, names = [], []
    for index, item in ready:
        failed = [(c.key, outputs[(c.container, c.file.name)]) for c in item.conversions
                  if outputs[(c.container, c.file.name)].status == "failed"]
        if failed:  # the item is not written with an asset that has no COG
            key, failure = failed[0]
            result.add([TaskOutcome(name=item.name, status="failed", error=failure.error, item_id=item.item_id,
                                    reason=f"{item.location}: raster asset {key!r} was not converted: {failure.reason}")])
            continue
        write = ImportWriteTask(task=task.model_copy(update={"index": index}), prepared=item, outputs={
            c.key: outputs[(c.container, c.file.name)].output for c in item.conversions})
        writes.append(context.call_activity_with_retry(act.write_import_item, RETRY, write.model_dump(mode="json")))
        names.append(item.name)
    written = yield from settle(context, writes)
    outcomes = [outcome_of(name, raw) for name, raw in zip(names, written)]
    if any(o.status == "done" for o in outcomes):
        flushed = yield context.call_activity_with_retry(act.flush_items, RETRY, StageRef(stage=stage).model_dump(mode="json"))
        UpsertResult.model_validate(flushed)
    result.add(outcomes)
    report(context, "importing", result)
    return result.model_dump(mode="json")


def convert_assets(context, chunk: ImportChunkTask, items: list[ImportPrepared], result: JobResult):
    """Each distinct blob the chunk's items convert, through ``convert_blob`` (not cataloged: the
    item is the source's); its outcome by (container, blob)."""
    blobs = {(c.container, c.file.name): c for item in items for c in item.conversions}
    report(context, "converting", result, chunk.chunk.count)
    tasks = [ConvertTask(container=c.container, file=c.file, output_container=chunk.output_container,
                         options=chunk.options, catalog=False) for c in blobs.values()]
    converted = yield from settle(context, [context.call_activity_with_retry(
        act.convert_blob, RETRY, t.model_dump(mode="json")) for t in tasks])
    return {key: outcome_of(c.file.name, raw) for (key, c), raw in zip(blobs.items(), converted)}


# -- unpublish -----------------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def unpublish(context: df.DurableOrchestrationContext):
    """Plan the output groups → one sub-orchestration per chunk of groups, one activity per group
    → settle the collections touched (extent, searches of the emptied, the removed collection)."""
    return (yield from run_job(context, "unpublish", _unpublish))


def _unpublish(context, result: JobResult):
    request = UnpublishRequest.model_validate(context.get_input())
    report(context, "planning", result, 0)
    plan = UnpublishPlan.model_validate((yield context.call_activity_with_retry(
        act.plan_unpublish, RETRY, UnpublishPlanRequest(
            request=request, plan_id=context.instance_id.replace(":", "-")).model_dump(mode="json"))))
    result.detail = {"plan": plan.model_dump(mode="json", exclude={"chunks"})}
    if request.dry_run:
        return result
    starts = [functools.partial(context.call_sub_orchestrator, unpublish_chunk, chunk.model_dump(mode="json"),
                                chunk_id(context, "chunk", i), expected_type=dict) for i, chunk in enumerate(plan.chunks)]
    result = yield from gather(context, starts, result, stage="removing", total=plan.groups,
                               names=list(plan.chunks), in_flight=request.chunks_in_flight)
    if plan.collections:
        result.detail["collections"] = yield context.call_activity_with_retry(
            act.settle_collections, RETRY, SettleCollectionsTask(
                collections=plan.collections,
                remove=request.collection if request.entire_collection else None).model_dump(mode="json"))
    if not result.failed:
        result.detail["removed"] = {"items": plan.counts["items"], "blobs": plan.counts["blobs"]}
    return result


@bp.orchestration_trigger(context_name="context", input_type=dict)
def unpublish_chunk(context: df.DurableOrchestrationContext):
    """One chunk of an unpublish: read its output groups, remove each in one activity (``live``)."""
    chunk = ChunkRef.model_validate(context.get_input())
    result = JobResult(operation="unpublish_chunk", started=context.current_utc_datetime)
    groups = yield context.call_activity_with_retry(act.read_chunk, RETRY, chunk.model_dump(mode="json"))
    tasks = [context.call_activity_with_retry(act.remove_outputs, RETRY, group) for group in groups]
    report(context, "removing", result, len(groups), live=True)
    results = yield from settle(context, tasks)
    result.add([outcome_of(group["name"], r) for group, r in zip(groups, results)])
    report(context, "removing", result)
    return result.model_dump(mode="json")


def unpublish_sources(context, result: JobResult, request: UnpublishRequest):
    """A job's gone sources unpublished by a sub-orchestration (their whole output: items, tiles'
    items, COGs, tiles, thumbnails, mosaics); its failures become the job's. The number of items
    removed (None when some group failed)."""
    done = JobResult.model_validate((yield context.call_sub_orchestrator(
        unpublish, request.model_dump(mode="json"), chunk_id(context, "unpublish", 0), expected_type=dict)))
    if done.failed:
        result.add(done.failures)
        return None
    return done.detail.get("removed", {}).get("items", 0)


# -- publish, revoke -----------------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context", input_type=dict)
def publish(context: df.DurableOrchestrationContext):
    """Move a collection's drafts into the public catalog, recorded; refresh its extent."""
    return (yield from run_job(context, "publish", functools.partial(_visibility, PublishRequest, "publish")))


@bp.orchestration_trigger(context_name="context", input_type=dict)
def revoke(context: df.DurableOrchestrationContext):
    """Move a collection's items back to the drafts, recorded; refresh its extent."""
    return (yield from run_job(context, "revoke", functools.partial(_visibility, RevokeRequest, "revoke")))


def _visibility(model, action: str, context, result: JobResult):
    request = model.model_validate(context.get_input())
    report(context, action, result, 1)
    moved = VisibilityResult.model_validate((yield context.call_activity_with_retry(
        act.set_visibility, RETRY, VisibilityTask(
            action=action, collection=request.collection, items=request.items, by=request.requested_by or "anonymous",
            reason=request.reason, job=context.instance_id).model_dump(mode="json"))))
    result.add([TaskOutcome(name=request.collection, status="done" if moved.items else "skipped")])
    result.detail["transition"] = moved.model_dump(mode="json")
    result.detail["catalog"] = yield from finalize(context, request.collection)
    return result


#: The chunk orchestrators a segment may run (``SegmentTask.orchestrator`` names one).
CHUNK_ORCHESTRATORS = {"catalog_chunk": catalog_chunk, "convert_chunk": convert_chunk, "import_chunk": import_chunk}
