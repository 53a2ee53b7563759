"""A job's tasks and progress read from orchestration histories (the extension's status format,
or raw histories): the runtime's own record, no task table of ours. Which activities finish a
file or a tile is given (``TaskNames``, derived from the function objects by ``job_reads``), so
a renamed function cannot silently empty a job's tasks and progress. Plain pydantic and JSON."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from iso_times import iso_or_none


@dataclass(frozen=True)
class TaskNames:
    """The function names a job's history is read by: the activities (and sub-orchestrations)
    whose completion finishes one file or tile (progress), the item activities a job's task list
    shows, and the activity that finds a named blob missing."""

    progress_activities: frozenset[str]
    progress_orchestrations: frozenset[str]
    item_activities: frozenset[str]
    describe: str


class TaskRecord(BaseModel):
    """One task of a job (a file or a tile), as ``GET /api/jobs/{id}/tasks`` lists it."""

    name: str
    activity: str
    status: Literal["running", "done", "skipped", "failed"]
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    seconds: float | None = None
    work_seconds: float | None = None
    error: str | None = None
    reason: str | None = None


def job_tasks(histories: list[list[dict[str, Any]]], names: TaskNames) -> list[TaskRecord]:
    """The item tasks found in a job's histories (its own and its chunks'), in schedule order.

    Works on the extension's status history format (completions carry ``FunctionName``,
    ``ScheduledTime`` and ``Input``; only unfinished tasks keep their ``TaskScheduled``) and on
    raw histories (completions point at ``TaskScheduled`` by id).
    """
    tasks: list[TaskRecord] = []
    for events in histories:
        scheduled: dict[Any, dict[str, Any]] = {}
        for position, event in enumerate(events):
            kind = event.get("EventType")
            if kind == "TaskScheduled":
                scheduled[event.get("EventId", ("pending", position))] = event
            elif kind in ("TaskCompleted", "TaskFailed"):
                origin = scheduled.pop(event.get("TaskScheduledId"), None) or event
                record = _task_record(event, origin, names)
                if record is not None:
                    tasks.append(record)
        tasks += [TaskRecord(name=_input_name(e), activity=e.get("Name", ""), status="running",
                             start=iso_or_none(e.get("Timestamp")))
                  for e in scheduled.values() if e.get("Name") in names.item_activities]
    return tasks


def _task_record(event: dict[str, Any], origin: dict[str, Any], names: TaskNames) -> TaskRecord | None:
    activity = event.get("FunctionName") or origin.get("Name") or ""
    if activity == names.describe:
        return _missing_blob(event, origin, names.describe)
    if activity not in names.item_activities:
        return None
    start, end = iso_or_none(event.get("ScheduledTime") or origin.get("Timestamp")), iso_or_none(event.get("Timestamp"))
    seconds = (end - start).total_seconds() if start and end else None
    if event["EventType"] == "TaskFailed":
        return TaskRecord(name=_input_name(origin), activity=activity, status="failed", start=start,
                          end=end, seconds=seconds, error="ActivityFailed",
                          reason=str(event.get("Reason") or "")[:1000])
    result = event.get("Result")
    result = json.loads(result) if isinstance(result, str) and result[:1] in "{[" else result
    if not isinstance(result, dict) or "status" not in result:  # e.g. inspect_raster's report
        named = result.get("name") if isinstance(result, dict) else None
        return TaskRecord(name=named or _input_name(origin) or _input_name(event), activity=activity,
                          status="done", start=start, end=end, seconds=seconds)
    return TaskRecord(name=result.get("name", ""), activity=activity, status=result["status"],
                      start=start, end=end, seconds=seconds, work_seconds=result.get("seconds"),
                      error=result.get("error"), reason=result.get("reason"))


def _missing_blob(event: dict[str, Any], origin: dict[str, Any], activity: str) -> TaskRecord | None:
    """A named blob the orchestrator found missing: the job counts it failed, so /tasks lists it."""
    result = event.get("Result")
    try:
        result = json.loads(result) if isinstance(result, str) else result
    except ValueError:
        return None
    if event.get("EventType") != "TaskCompleted" or not isinstance(result, dict) or result.get("found", True):
        return None
    when = iso_or_none(event.get("Timestamp"))
    return TaskRecord(name=_input_name(origin) or "?", activity=activity, status="failed",
                      start=when, end=when, seconds=0.0, error="BlobNotFound",
                      reason=str(result.get("reason") or "")[:1000])


def _input_name(event: dict[str, Any]) -> str:
    raw = event.get("Input")
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return ""
    if isinstance(data, dict):
        file = data.get("file") or {}
        tile = data.get("tile") or {}
        if tile:
            return f"tile {tile.get('row')},{tile.get('col')}"
        if isinstance(data.get("label"), str):  # a cube's slice group
            return data["label"]
        if isinstance(data.get("task"), dict):  # a cube's plan
            return (data["task"].get("file") or {}).get("name") or ""
        return file.get("name") or data.get("blob") or data.get("name") or ""
    return ""


def history_progress(events: list[dict[str, Any]], names: TaskNames) -> tuple[int, int]:
    """(done, failed) of the file and tile tasks finished in one instance's history (the
    extension's status format, with outputs). A task that failed beyond its retries is counted
    when its orchestrator records it, not here (a failed attempt is followed by a retry)."""
    done = failed = 0
    for event in events:
        kind, name = event.get("EventType"), event.get("FunctionName")
        if not ((kind == "TaskCompleted" and name in names.progress_activities) or (
                kind == "SubOrchestrationInstanceCompleted" and name in names.progress_orchestrations)):
            continue
        result = event.get("Result")
        if isinstance(result, str) and result[:1] == "{":
            try:
                result = json.loads(result)
            except ValueError:
                result = None
        # a file's or tile's TaskOutcome, or a tiled raster's JobResult
        bad = isinstance(result, dict) and (result.get("status") == "failed" or bool(result.get("failed")))
        failed += bad
        done += not bad
    return done, failed
