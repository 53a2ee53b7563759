"""The plumbing every job's recipe stands on, written once: calling an activity or a
sub-orchestration with a request model and getting its answer model back (``call``), fanning out
and settling (``outcomes``, ``settle``), chunks run a few at a time (``gather``), the job frame
(metrics, progress, result: ``job``) and the one retry policy of the Durable boundary.

Deterministic: time from ``context.current_utc_datetime``, no I/O, no environment reads. Data
crosses the boundary as plain JSON: requests are dumped here, answers validated here, so a recipe
deals in models only. Functions are named by their function objects (``name_of``), so a rename
fails at import time instead of silently emptying a job's tasks and progress.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Generator, Iterable, TypeVar

import azure.durable_functions as df
from azure.durable_functions.decorators.durable_app import Blueprint
from pydantic import BaseModel

import sync_activities
from entities import METRICS_ENTITY
from faults import BUDGET
from models import (CHUNKS_IN_FLIGHT, CHUNKS_NAMED, OPERATIONS, ChunkRef, FileRef, JobEnded, JobResult, Progress,
                    TaskOutcome, chunk_instance_id)

M = TypeVar("M", bound=BaseModel)
Context = df.DurableOrchestrationContext

#: The retry of every activity a recipe calls (faults.RetryBudget: a task whose transient fault
#: outlived RMH_OUTAGE_SECONDS in place, or whose worker died, is scheduled again). Bad files never
#: raise, so they are never retried.
RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=int(BUDGET.task_retry_seconds * 1000),
                        max_number_of_attempts=BUDGET.task_attempts)


def name_of(function: Any) -> str:
    """The registered name of an activity or orchestrator function object (its Python name)."""
    return function._function.get_function_name()


def _is_orchestrator(function: Any) -> bool:
    return function._function.get_trigger().type == "orchestrationTrigger"


def _payload(request: BaseModel | dict | None) -> Any:
    return request.model_dump(mode="json") if isinstance(request, BaseModel) else request


def schedule(context: Context, function: Any, request: BaseModel | dict | None = None, *,
             instance_id: str | None = None, retry: df.RetryOptions | None = RETRY):
    """The task of one call: an activity (with ``retry``) or a sub-orchestration (``instance_id``).
    ``request`` is a model or its JSON already (a fan-out's payloads built once for many tasks)."""
    if _is_orchestrator(function):
        return context.call_sub_orchestrator(function, _payload(request), instance_id, expected_type=dict)
    if retry is None:
        return context.call_activity(function, _payload(request))
    return context.call_activity_with_retry(function, retry, _payload(request))


def call(context: Context, function: Any, request: BaseModel | dict | None = None,
         answer: type[M] | None = None, *, instance_id: str | None = None) -> Generator[Any, Any, Any]:
    """``result = yield from call(context, act.plan_sync, plan_request, SyncJobPlan)``: schedule
    ``function`` with ``request`` and return its answer validated as ``answer`` (as JSON without)."""
    result = yield schedule(context, function, request, instance_id=instance_id)
    return result if answer is None else answer.model_validate(result)


def settle(context: Context, tasks: list) -> Generator[Any, Any, list]:
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


def each(context: Context, function: Any, requests: Iterable[BaseModel | dict],
         answer: type[M] | None = None) -> Generator[Any, Any, list]:
    """One task per request, all at once, settled: each answer validated as ``answer``, or the
    exception of a task that failed beyond its retries in its place."""
    results = yield from settle(context, [schedule(context, function, r) for r in requests])
    return [r if isinstance(r, Exception) or answer is None else answer.model_validate(r) for r in results]


def outcomes(context: Context, function: Any, requests: Iterable[BaseModel | dict], names: list[str], *,
             stage: str | None = None, result: JobResult | None = None) -> Generator[Any, Any, list[TaskOutcome]]:
    """The fan-out of per-item activities: one task per request, settled, each item's outcome
    (a task that failed beyond its retries counts its item failed, named ``names[i]``). With
    ``stage`` and ``result``, progress is published as ``live`` while the tasks run. ``function``
    is the activity, or a list of one activity per request (items of different kinds)."""
    requests = list(requests)
    functions = function if isinstance(function, list) else [function] * len(requests)
    tasks = [schedule(context, f, r) for f, r in zip(functions, requests)]
    if stage is not None and result is not None:
        report(context, stage, result, result.total + len(tasks), live=True)
    results = yield from settle(context, tasks)
    return [outcome_of(name, r) for name, r in zip(names, results)]


def outcome_of(name: str, result: Any) -> TaskOutcome:
    """A file's or tile's outcome from its task's result, or from the fault that failed it."""
    if isinstance(result, Exception):
        return TaskOutcome(name=name, status="failed", error=_condition(result), reason=first_line(result))
    return TaskOutcome.model_validate(result)


def _condition(err: Exception) -> str:
    """The error class an activity failure names (``... failed: StorageUnavailable: ...``)."""
    match = re.search(r"failed: (\w+):", str(err))
    return match.group(1) if match else "TaskFailed"


def first_line(err: Exception, limit: int = 500) -> str:
    return str(err).strip().splitlines()[0][:limit] if str(err).strip() else type(err).__name__


def chunk_id(context: Context, kind: str, index: int) -> str:
    return chunk_instance_id(context.instance_id, kind, index)


# -- the job frame: metrics, progress, result ----------------------------------------------------

Recipe = Callable[[Context, Any, JobResult], Generator[Any, Any, JobResult]]


def job(bp: Blueprint) -> Callable[[Recipe], Any]:
    """Register a job's recipe as the orchestrator of its operation (the recipe's name, one of
    ``OPERATIONS``): ``recipe(context, request, result)`` gets the validated request and the job's
    JobResult to fill, and returns it; the frame signals metrics, times it and reports progress."""

    def register(recipe: Recipe):
        operation = recipe.__name__
        model = OPERATIONS[operation]  # a recipe without a request model fails at import

        def orchestrator(context: Context):
            given = context.get_input()
            request = model.model_validate({} if given is None and not model.model_fields else given)
            return (yield from run_job(context, operation, lambda c, r: recipe(c, request, r)))

        orchestrator.__name__ = orchestrator.__qualname__ = operation
        orchestrator.__doc__, orchestrator.__module__ = recipe.__doc__, recipe.__module__
        orchestrator.recipe = recipe  # type: ignore[attr-defined]
        return bp.orchestration_trigger(context_name="context", input_type=dict)(orchestrator)

    return register


def run_job(context: Context, operation: str,
            body: Callable[[Context, JobResult], Generator[Any, Any, JobResult]]):
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


def chunk(bp: Blueprint, model: type[M]) -> Callable[[Callable[..., Generator]], Any]:
    """Register a chunk's recipe as a sub-orchestration: ``recipe(context, task, result)`` gets
    its validated task and a JobResult named after it, and returns it (as JSON to its job)."""

    def register(recipe: Callable[..., Generator]):
        name = recipe.__name__

        def orchestrator(context: Context):
            result = JobResult(operation=name, started=context.current_utc_datetime)
            result = yield from recipe(context, model.model_validate(context.get_input()), result)
            return result.model_dump(mode="json")

        orchestrator.__name__ = orchestrator.__qualname__ = name
        orchestrator.__doc__, orchestrator.__module__ = recipe.__doc__, recipe.__module__
        return bp.orchestration_trigger(context_name="context", input_type=dict)(orchestrator)

    return register


def report(context: Context, stage: str, result: JobResult, total: int | None = None, *,
           chunks: list[int] | None = None, live: bool = False, segments: list[int] | None = None) -> None:
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


def starts(context: Context, chunk_orchestrator: Any, tasks: list[BaseModel]) -> list[Callable[[], Any]]:
    """How ``gather`` starts one ``chunk_orchestrator`` per task: ids ``<job id>:chunk-00000``..."""
    return [functools.partial(schedule, context, chunk_orchestrator, task, instance_id=chunk_id(context, "chunk", i))
            for i, task in enumerate(tasks)]


def gather(context: Context, starts: list[Callable[[], Any]], result: JobResult, *, stage: str, total: int,
           names: list, in_flight: int | None = None, segments: bool = False):
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
            reason = first_line(winner.result)
            for chunk_names in (names[index] if segments else [names[index]]):
                if isinstance(chunk_names, ChunkRef):  # a chunk blob: read its file names once, now
                    files = yield from call(context, sync_activities.read_chunk, chunk_names)
                    chunk_names = [FileRef.model_validate(f).name for f in files]
                result.add([TaskOutcome(name=name, status="failed", error="ChunkFailed", reason=reason)
                            for name in chunk_names])
        else:
            result.merge(JobResult.model_validate(winner.result))
        start_more()
    return result
