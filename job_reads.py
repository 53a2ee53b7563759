"""The jobs' read model: what the job API answers about running and finished jobs, read from the
Durable runtime (statuses and histories) at request time. A running job's progress adds what its
live fan-outs and running chunks finished since it last updated; a job's tasks are read from its
histories and its chunks'. What is read is remembered (``cachetools``) where it cannot change (a
finished instance) or for half a second (a busy chunk polled by many clients).

Which functions finish a file or a tile is named by their function objects (``TASK_NAMES``): a
renamed activity fails here at import time instead of silently emptying /tasks and progress.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import azure.durable_functions as df
import cachetools

import activities as act
import job_history
import orchestrators
from job_history import TaskNames, TaskRecord
from models import Progress, chunk_instance_id
from orchestration import name_of

RS = df.OrchestrationRuntimeStatus
RUNNING_STATES = {RS.Running, RS.Pending, RS.Suspended, RS.ContinuedAsNew}

#: The tasks that finish one file or one tile of a job (its progress counts them; an
#: ``inspect_raster`` or ``describe_blob`` is only a step towards one), the sub-orchestrations
#: that finish one file (a large raster tiled, a cube, within a conversion), and the item tasks
#: /tasks lists.
TASK_NAMES = TaskNames(
    progress_activities=frozenset(map(name_of, (act.catalog_blob, act.convert_blob, act.convert_tile,
                                                act.remove_outputs, act.catalog_cube, act.convert_cube_group))),
    progress_orchestrations=frozenset(map(name_of, (orchestrators.process_tiled_raster, orchestrators.convert_cube))),
    item_activities=frozenset(map(name_of, (act.catalog_blob, act.convert_blob, act.convert_tile, act.inspect_raster,
                                            act.validate_blob, act.prepare_import_item, act.write_import_item,
                                            act.remove_outputs, act.catalog_cube, act.inspect_cube,
                                            act.convert_cube_group))),
    describe=name_of(act.describe_blob))


def history_progress(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(done, failed) of the file and tile tasks finished in one instance's history."""
    return job_history.history_progress(events, TASK_NAMES)


def job_tasks(histories: list[list[dict[str, Any]]]) -> list[TaskRecord]:
    """The item tasks found in a job's histories (its own and its chunks'), in schedule order."""
    return job_history.job_tasks(histories, TASK_NAMES)


def status_body(status: df.DurableOrchestrationStatus) -> dict[str, Any]:
    """What GET /api/jobs/{id} answers: runtime status, operation, times, progress and output."""
    return {
        "instanceId": status.instance_id,
        "operation": status.name,
        "runtimeStatus": status.runtime_status.name if status.runtime_status else None,
        "createdTime": status.created_time,
        "lastUpdatedTime": status.last_updated_time,
        "customStatus": status.custom_status,
        "output": status.output,
    }


async def live_progress(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> Any:
    """A running job's progress: its own (the chunks it has merged) plus what it has not counted
    yet: the files and tiles finished in its own live fan-out and in its running chunks, counted
    from their histories, and the final counts of the chunks that finished since it last updated.
    A job that runs its chunks in segments (``Progress.segments``) counts each running segment
    the same way, one level down.

    Only running chunks are listed (a job runs a few at a time); the finished ones it has not
    merged are among those its status names as running (``Progress.chunks``). A status that names
    none (an older job, a wide window) falls back to listing every chunk of the job."""
    prefix = f"{status.instance_id}:"
    mine = status.custom_status
    parts, now = [], status.last_updated_time or dt.datetime.now(dt.timezone.utc)
    if _is_live(mine):  # its own fan-out (a tiled raster's tiles): on top of what it counted
        parts.append(await _history_counts(client, status))
    kind = "segment" if isinstance(mine.get("segments"), list) else "chunk"
    named = mine.get(f"{kind}s") if isinstance(mine.get(f"{kind}s"), list) else None
    if named is None:
        chunks = await client.get_status_by(instance_id_prefix=prefix)
    else:
        chunks = await client.get_status_by(instance_id_prefix=prefix, runtime_status=list(RUNNING_STATES))
    chunks = {c.instance_id: c for c in chunks if ":" not in c.instance_id[len(prefix):]}
    if named is not None:  # finished since the job's last update: the ones it named, no longer running
        for index in named:
            chunk_id = chunk_instance_id(status.instance_id, kind, int(index))
            if chunk_id not in chunks:
                found = await client.get_status(chunk_id)
                if found and found.runtime_status == RS.Completed:
                    chunks[chunk_id] = found
    since = status.last_updated_time
    for chunk in chunks.values():
        if not isinstance(chunk.custom_status, dict):
            continue
        if chunk.runtime_status in RUNNING_STATES:
            if kind == "segment":  # a segment's own chunks, counted as a job's
                counted = await live_progress(client, chunk)
                parts.append((counted.get("done", 0), counted.get("failed", 0)))
            elif _is_live(chunk.custom_status):  # what it counted, and the files finished since
                counted = await _history_counts(client, chunk)
                parts.append((chunk.custom_status.get("done", 0) + counted[0],
                              chunk.custom_status.get("failed", 0) + counted[1]))
        elif chunk.runtime_status == RS.Completed and (named is not None or (
                since and chunk.last_updated_time and chunk.last_updated_time > since)):
            parts.append((chunk.custom_status.get("done", 0), chunk.custom_status.get("failed", 0)))
        else:
            continue
        if chunk.last_updated_time and chunk.last_updated_time > now:
            now = chunk.last_updated_time
    return Progress.combined(mine, parts, now)


def _is_live(custom_status: Any) -> bool:
    return isinstance(custom_status, dict) and custom_status.get("live") is True


# Finished-task counts of live instances, by instance id: (last update, when read, counts). An
# instance is read again only when it has updated since (``lastUpdatedTime`` has whole seconds,
# so one read in the second of its last update, or just after it, is not trusted), and at most
# every LIVE_MAX_AGE: however often a job is polled, a busy chunk's history is read twice a second.
LIVE_COUNTS_KEPT = 10_000
_LIVE_COUNTS: cachetools.LRUCache = cachetools.LRUCache(maxsize=LIVE_COUNTS_KEPT)
LIVE_TRUST_AFTER = dt.timedelta(seconds=2)
LIVE_MAX_AGE = dt.timedelta(seconds=0.5)
LIVE_JOBS_LISTED = 20  # running jobs whose progress a listing counts per file (the rest: per chunk)


async def _history_counts(client: df.DurableOrchestrationClient,
                          status: df.DurableOrchestrationStatus) -> tuple[int, int]:
    """(done, failed) of the files and tiles finished in a live instance's history, read again
    only when it changed since the last read."""
    cached = _LIVE_COUNTS.get(status.instance_id)
    updated = status.last_updated_time
    read_at = dt.datetime.now(dt.timezone.utc)
    if cached is not None and updated is not None and (
            read_at - cached[1] < LIVE_MAX_AGE or (cached[0] == updated and cached[1] >= updated + LIVE_TRUST_AFTER)):
        return cached[2]
    full = await client.get_status(status.instance_id, show_history=True, show_history_output=True, show_input=False)
    counts = history_progress(full.historyEvents or []) if full else (0, 0)
    if updated is not None:
        _LIVE_COUNTS[status.instance_id] = (updated, read_at, counts)
    return counts


# The sub-orchestrations of finished jobs, by (job id, last update): listing the 200 chunks of a
# 20,000-file job through the client takes ~100 ms, and a finished job's chunks no longer change.
FINISHED_CHILDREN_KEPT = 64  # jobs
_FINISHED_CHILDREN: cachetools.LRUCache = cachetools.LRUCache(maxsize=FINISHED_CHILDREN_KEPT)


async def children(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> list:
    """A job's sub-orchestrations (its chunks, and theirs), remembered once the job completed (a
    terminated job's chunks may still run)."""
    key = (status.instance_id, status.last_updated_time)
    if status.runtime_status != RS.Completed or status.last_updated_time is None:
        return await client.get_status_by(instance_id_prefix=f"{status.instance_id}:")
    if key not in _FINISHED_CHILDREN:
        _FINISHED_CHILDREN[key] = await client.get_status_by(instance_id_prefix=f"{status.instance_id}:")
    return _FINISHED_CHILDREN[key]


# The tasks of finished instances, by (instance id, last update): their histories no longer
# change, so a page of a large finished job is not rebuilt from every chunk's history each time.
# Weighed by their task records (about 1 KB each).
FINISHED_TASKS_KEPT = 200_000
_FINISHED_TASKS: cachetools.LRUCache = cachetools.LRUCache(maxsize=FINISHED_TASKS_KEPT,
                                                           getsizeof=lambda tasks: max(1, len(tasks)))


async def instance_tasks(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> list:
    """The item tasks in one instance's history (``job_tasks``), remembered once it ended."""
    key = (status.instance_id, status.last_updated_time)
    finished = status.runtime_status not in RUNNING_STATES
    if finished and key in _FINISHED_TASKS:
        return _FINISHED_TASKS[key]
    full = await client.get_status(status.instance_id, show_history=True, show_history_output=True)
    tasks = job_tasks([full.historyEvents or []]) if full else []
    if finished and len(tasks) <= FINISHED_TASKS_KEPT:
        _FINISHED_TASKS[key] = tasks
    return tasks


def partly_failed(status: df.DurableOrchestrationStatus) -> bool:
    """Completed, with some of its files or tiles failed (``completed_with_errors`` output)."""
    output = status.output if isinstance(status.output, dict) else {}
    return status.runtime_status == RS.Completed and bool(output.get("completed_with_errors"))
