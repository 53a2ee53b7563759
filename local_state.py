"""Embedded Durable runtime: instance state as the engine and the management API see it.

History events as the SDK reads them (``event``), the in-memory mirror of a live instance
(``Live``: the SDK's task numbering, the action tree and the gate), the engine's error
conditions, and the two shapes the status API returns: the status body and ``historyEvents`` in
the extension's form (see ``history_for_status``).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as HE

from local_store import InstanceRow

OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
HTTP_ACTIVITY = "BuiltIn::HttpActivity"
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
LIVE = frozenset({"Pending", "Running", "Suspended", "ContinuedAsNew"})
COMPLETION_EVENTS = frozenset({
    HE.TASK_COMPLETED, HE.TASK_FAILED,
    HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED, HE.SUB_ORCHESTRATION_INSTANCE_FAILED,
})
FAILURE_EVENTS = frozenset({HE.TASK_FAILED, HE.SUB_ORCHESTRATION_INSTANCE_FAILED})
DECISION_EVENTS = frozenset({HE.TASK_SCHEDULED, HE.TIMER_CREATED,
                             HE.SUB_ORCHESTRATION_INSTANCE_CREATED, HE.EVENT_SENT})
ATOMIC_KINDS = {0: "act", 2: "sub", 5: "timer", 7: "ent", 8: "http", 9: "sig", 4: "can"}
STATUS_CODES = {"Running": 0, "Completed": 1, "ContinuedAsNew": 2, "Failed": 3, "Canceled": 4,
                "Terminated": 5, "Pending": 6, "Suspended": 7}
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
INVALID_ID_CHARS = frozenset("/\\?#")
MAX_INSTANCE_ID = 256


class EngineError(Exception):
    """Base class of the engine's error conditions."""


class UnknownFunction(EngineError):
    """No orchestrator, activity or entity by that name in the app."""


class InvalidInstanceId(EngineError):
    """An instance id or entity key the extension refuses (characters, length, leading '@')."""


class InstanceNotFound(EngineError):
    """No instance with that id exists."""


class InstanceAlreadyRunning(EngineError):
    """Start refused: an instance with that id is pending or running."""


class InstanceNotRunning(EngineError):
    """The operation needs a live instance, but the instance has finished (HTTP 410)."""


class InstanceStillRunning(EngineError):
    """The operation needs a finished instance, but the instance is still live."""


class InstanceNotFailed(EngineError):
    """Rewind needs a Failed instance."""


class RewindImpossible(EngineError):
    """The failed instance's history does not replay to the same decisions, so it cannot be
    rewound safely."""


class RuntimeConfigError(EngineError):
    """The runtime was configured in a way it refuses to run (open non-loopback bind, empty
    key)."""


class UnsupportedOperation(EngineError):
    """An operation or action the embedded runtime does not implement."""


def check_instance_id(instance_id: str) -> str:
    """The extension's rules for instance ids given by a client."""
    if instance_id.startswith("@"):
        raise InvalidInstanceId("Orchestration instance ids must not start with @.")
    if any(c in INVALID_ID_CHARS or ord(c) < 32 or 127 <= ord(c) < 160 for c in instance_id):
        raise InvalidInstanceId(
            "Orchestration instance ids must not contain /, \\, #, ?, or control characters.")
    if len(instance_id) > MAX_INSTANCE_ID:
        raise InvalidInstanceId(
            f"Instance ID lengths must not exceed {MAX_INSTANCE_ID} characters.")
    return instance_id


def check_entity_key(key: str) -> str:
    if any(c in INVALID_ID_CHARS or ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        raise InvalidInstanceId(
            "Entity keys must not contain /, \\, #, ?, or control characters.")
    return key


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """Timestamp text as the extension writes it (tz-aware, trailing Z, microseconds)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    text = text.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in text else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(text[:26], fmt).replace(tzinfo=timezone.utc)


def event(kind: HE, when: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False,
            "Timestamp": iso(when), **fields}


def played(ev: dict[str, Any]) -> str:
    return json.dumps({**ev, "IsPlayed": True})


def input_for_context(input_json: str | None) -> str | None:
    """The context's ``input`` from the stored input token (a JSON string stays as its text)."""
    if input_json is None:
        return None
    token = json.loads(input_json)
    return token if isinstance(token, str) else json.dumps(token)


def loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def short_time(text: str) -> str:
    return text[:19] + "Z"


def split_entity_id(entity_id: str) -> tuple[str, str]:
    """'@name@key' → (name, key)."""
    _, name, key = entity_id.split("@", 2)
    return name, key


def entity_id_of(name: str, key: str) -> str:
    return f"@{name.lower()}@{key}"


# -- live instance state -----------------------------------------------------------------------
@dataclass
class Inboxed:
    """A new event waiting for delivery to an orchestration."""

    row_id: int
    execution_id: str
    event: dict[str, Any]


@dataclass
class Live:
    """A pending/running/suspended instance held in memory: the engine's mirror of the SDK."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    input_json: str | None
    created_time: str
    parent: dict[str, Any] | None
    history: list[str] = field(default_factory=list)
    inbox: list[Inboxed] = field(default_factory=list)
    counter: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    dispatched: int = 0
    waits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    custom_status: str | None = None
    index: dict[Any, dict[str, Any]] = field(default_factory=dict)

    def alloc(self) -> int:
        number = self.counter
        self.counter += 1
        return number

    def engine_json(self) -> str:
        """The mirror as stored; ``history`` is the history length it reflects (episodes that
        only completed tasks of a waiting task_all are not stored: ``catch_up`` redoes them)."""
        return json.dumps({"counter": self.counter, "nodes": self.nodes, "history": len(self.history),
                           "dispatched": self.dispatched, "waits": dict(self.waits)})

    def catch_up(self, text: str | None) -> None:
        """Apply to a mirror loaded from ``text`` the task completions recorded after it was
        stored (``Engine.decide`` records those episodes without storing the mirror)."""
        if not text:
            return
        since = json.loads(text).get("history")
        for line in self.history[since:] if since is not None else ():
            if '"EventType": 5,' not in line and '"EventType": 8,' not in line:
                continue  # (TaskCompleted, SubOrchestrationInstanceCompleted) without parsing
            ev = json.loads(line)
            if ev["EventType"] in (HE.TASK_COMPLETED, HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED):
                node = self.index.pop(ev.get("TaskScheduledId"), None)
                if node is not None:
                    node["done"] = True

    def load_engine_json(self, text: str | None) -> None:
        if not text:
            return
        data = json.loads(text)
        self.counter = data["counter"]
        self.nodes = data["nodes"]
        self.dispatched = data["dispatched"]
        self.waits = defaultdict(int, data["waits"])
        self.index = {}
        for node in self.nodes:
            self._index_node(node)

    def _index_node(self, node: dict[str, Any]) -> None:
        kind = node["k"]
        if kind in ("all", "any"):
            for child in node["c"]:
                self._index_node(child)
        elif node.get("done"):
            return
        elif kind == "retry":
            self.index[node["tmr"] if node["tmr"] is not None else node["cur"]] = node
        elif kind == "ent" and "guid" in node:
            self.index[node["guid"]] = node
        elif "id" in node:
            self.index[node["id"]] = node


def is_complete(node: dict[str, Any]) -> bool:
    kind = node["k"]
    if kind == "all":
        return all(is_complete(c) for c in node["c"])
    if kind == "any":
        return not node["c"] or any(is_complete(c) for c in node["c"])
    return bool(node.get("done"))


@dataclass
class Decisions:
    """What one round decided, carried out when its transaction commits.

    ``dry``: rebuilding a mirror from a stored history (rewind); nothing is written or run, and
    entity calls take the request ids the history recorded (``guids``, by task id)."""

    activities: list[tuple[str, str, int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[float, str, str, int, str]] = field(default_factory=list)
    http: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    dry: bool = False
    guids: dict[int, str] = field(default_factory=dict)
    terminal_failures: list[int] = field(default_factory=list)


@dataclass
class ReplayStats:
    """What replaying orchestrations through the SDK cost this engine: episodes run through the
    SDK (``invoked``, the history events handed to it and the seconds it took, longest episode
    too) and episodes recorded without it (``elided``: they could not change its answer)."""

    invoked: int = 0
    elided: int = 0
    events: int = 0
    seconds: float = 0.0
    longest_events: int = 0
    longest_seconds: float = 0.0

    def record(self, events: int, seconds: float) -> None:
        self.invoked += 1
        self.events += events
        self.seconds += seconds
        if seconds > self.longest_seconds:
            self.longest_events, self.longest_seconds = events, seconds

    def summary(self) -> dict[str, Any]:
        per = self.seconds / self.invoked if self.invoked else 0.0
        return {"invoked": self.invoked, "elided": self.elided, "events": self.events,
                "seconds": round(self.seconds, 3), "ms_per_episode": round(per * 1000, 3),
                "us_per_event": round(self.seconds / self.events * 1e6, 2) if self.events else None,
                "longest_episode": {"events": self.longest_events,
                                    "ms": round(self.longest_seconds * 1000, 2)}}


@dataclass(frozen=True, slots=True)
class ActivityTiming:
    """One activity invocation's moments (seconds since the epoch): ``scheduled`` (its
    TaskScheduled event), ``started`` and ``finished`` in the worker that ran it, ``completed``
    (its TaskCompleted or TaskFailed event). ``worker``: that worker's process and thread."""

    name: str
    worker: str
    scheduled: float
    started: float
    finished: float
    completed: float


class ActivityTimings:
    """Where activities' time went on this engine, per invocation (the last ``keep``, so memory
    stays bounded: about 90 bytes each, 4.4 MB at most): waiting between being scheduled and a
    worker starting it, running in the worker, and coming back as a history event. ``summary`` tells the two kinds of waiting apart:
    a task waiting while every worker is busy (contention: more tasks than workers) and a worker
    idle while a task waits (dispatch latency: the runtime's own cost)."""

    def __init__(self, keep: int = 50_000) -> None:
        self._scheduled: dict[tuple[str, str, int], tuple[str, float]] = {}
        self.records: deque[ActivityTiming] = deque(maxlen=keep)

    def scheduled(self, key: tuple[str, str, int], name: str, when: float) -> None:
        self._scheduled[key] = (name, when)

    def completed(self, key: tuple[str, str, int], started: float | None, finished: float | None,
                  worker: str | None, when: float) -> None:
        name, at = self._scheduled.pop(key, ("", None))
        if at is not None and started is not None and finished is not None:
            self.records.append(ActivityTiming(name, sys.intern(worker or ""), at, started, finished, when))

    def clear(self) -> None:
        """Forget the finished invocations (those in flight keep their scheduled time)."""
        self.records.clear()

    def summary(self) -> dict[str, Any]:
        return timing_summary(list(self.records))


def _spread(values: list[float]) -> dict[str, float]:
    """p50, p95 and sum of seconds, in ms."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0, "sum": 0.0}
    return {"p50": round(statistics.median(ordered) * 1000, 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
            "sum": round(sum(ordered) * 1000, 1)}


def timing_summary(records: list[ActivityTiming]) -> dict[str, Any]:
    """Activity invocations summed up: ``queue_wait_ms`` (scheduled → a worker starts it),
    ``run_ms`` (in the worker), ``result_ms`` (the worker done → its event in the history), each
    p50 / p95 / sum; ``dispatch_gap_ms``: per worker, the time it sat idle between two tasks while
    the second was already scheduled (the runtime's dispatch latency, as against waiting for a
    busy worker); ``span``: the first schedule, first start, last finish and last completion
    (epoch seconds), so a caller can place lead and tail against its own clock; by activity,
    how many ran and their run time."""
    if not records:
        return {"activities": 0}
    by_worker: dict[str, list[ActivityTiming]] = defaultdict(list)
    by_name: dict[str, list[ActivityTiming]] = defaultdict(list)
    for record in records:
        by_worker[record.worker].append(record)
        by_name[record.name].append(record)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda r: r.started)
        gaps += [max(0.0, b.started - max(a.finished, b.scheduled)) for a, b in zip(runs, runs[1:])]
    return {
        "activities": len(records), "workers": len(by_worker),
        "queue_wait_ms": _spread([r.started - r.scheduled for r in records]),
        "run_ms": _spread([r.finished - r.started for r in records]),
        "result_ms": _spread([r.completed - r.finished for r in records]),
        "dispatch_gap_ms": _spread(gaps),
        "span": {"first_scheduled": min(r.scheduled for r in records),
                 "first_started": min(r.started for r in records),
                 "last_finished": max(r.finished for r in records),
                 "last_completed": max(r.completed for r in records)},
        "by_activity": {name: {"count": len(runs), "run_s": round(sum(r.finished - r.started for r in runs), 3),
                               "queue_wait_p50_ms": _spread([r.started - r.scheduled for r in runs])["p50"]}
                        for name, runs in sorted(by_name.items())},
    }


@dataclass
class EntityCall:
    """One queued entity operation."""

    row_id: int
    message: dict[str, Any]


# -- what the status API shows ------------------------------------------------------------------
def status_body(row: InstanceRow, show_input: bool = True) -> dict[str, Any]:
    return {
        "name": row.name, "instanceId": row.instance_id, "runtimeStatus": row.status,
        "input": loads_or_none(row.input) if show_input else None,
        "customStatus": loads_or_none(row.custom_status), "output": loads_or_none(row.output),
        "createdTime": short_time(row.created_time),
        "lastUpdatedTime": short_time(row.last_updated_time),
    }


_EVENT_NAMES = {int(k): "".join(p.capitalize() for p in k.name.split("_")) for k in HE}
_SCHEDULED_BY = {HE.TASK_COMPLETED: HE.TASK_SCHEDULED, HE.TASK_FAILED: HE.TASK_SCHEDULED,
                 HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED: HE.SUB_ORCHESTRATION_INSTANCE_CREATED,
                 HE.SUB_ORCHESTRATION_INSTANCE_FAILED: HE.SUB_ORCHESTRATION_INSTANCE_CREATED}
_DROPPED_KEYS = {
    HE.TASK_SCHEDULED: ("Version",), HE.SUB_ORCHESTRATION_INSTANCE_CREATED: ("Version",),
    HE.EXECUTION_STARTED: ("Name", "OrchestrationInstance", "ParentInstance", "Version", "Tags"),
    HE.TIMER_FIRED: ("TimerId",),
}


def _result_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def history_for_status(history: list[str], show_output: bool,
                       show_input: bool = True) -> list[dict[str, Any]]:
    """``historyEvents`` as the extension's status API returns them.

    The orchestrator episode markers go; a completed or failed task or sub-orchestration absorbs
    its scheduling event (``FunctionName``, ``ScheduledTime``, ``Input``); ``EventId``,
    ``IsPlayed`` and ``TaskScheduledId`` go; ExecutionStarted carries ``FunctionName``;
    ExecutionCompleted names its ``OrchestrationStatus``; results only with ``showHistoryOutput``
    (as JSON values); inputs not at all with ``showInput=false``."""
    events = [json.loads(text) for text in history]
    scheduled: dict[tuple[int, int], int] = {}
    merged: set[int] = set()
    shown: list[tuple[int, dict[str, Any]]] = []
    for position, ev in enumerate(events):
        etype = ev["EventType"]
        if etype in (HE.ORCHESTRATOR_STARTED, HE.ORCHESTRATOR_COMPLETED):
            continue
        item = {k: v for k, v in ev.items()
                if k not in ("EventId", "IsPlayed", *_DROPPED_KEYS.get(etype, ()))}
        item["EventType"] = _EVENT_NAMES.get(etype, str(etype))
        if etype in (HE.TASK_SCHEDULED, HE.SUB_ORCHESTRATION_INSTANCE_CREATED):
            scheduled[(etype, ev["EventId"])] = position
        elif etype in _SCHEDULED_BY:
            origin = scheduled.get((_SCHEDULED_BY[etype], item.pop("TaskScheduledId", None)))
            if origin is not None:
                merged.add(origin)
                item["ScheduledTime"] = events[origin]["Timestamp"]
                item["FunctionName"] = events[origin].get("Name")
                item["Input"] = events[origin].get("Input")
            _show_result(item, show_output and etype in (
                HE.TASK_COMPLETED, HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED))
        elif etype == HE.EXECUTION_STARTED:
            item["FunctionName"] = ev.get("Name")
        elif etype == HE.EXECUTION_COMPLETED:
            item["OrchestrationStatus"] = STATUS_NAMES.get(ev.get("OrchestrationStatus"),
                                                           ev.get("OrchestrationStatus"))
            _show_result(item, show_output)
        if not show_input:
            item.pop("Input", None)
        shown.append((position, item))
    return [item for position, item in shown if position not in merged]


def _show_result(item: dict[str, Any], show: bool) -> None:
    if not show:
        item.pop("Result", None)
    elif "Result" in item:
        item["Result"] = _result_value(item["Result"])
