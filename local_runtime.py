"""Embedded Durable runtime: run the app's orchestrations on one machine, durably.

A one-machine host playing the Durable Task extension's role, so the same ``function_app.py``
runs here and on Azure. This module holds everything but the HTTP side (``local_http.py``), in
sections in dependency order:

1. Store: SQLite persistence of the task hub (``Store``, ``InstanceRow``).
2. Discovery: loading and indexing the app's functions (``load_app``, ``index_app``,
   ``FunctionIndex``, ``with_context``) and NCRONTAB timer schedules (``CronSchedule``).
3. Engine: the scheduler that drives the SDK's orchestrators, activities and entities
   (``Engine``, its error conditions, ``status_body``).
4. Runtime API: ``LocalRuntime``, the thread-safe facade (engine + SQLite + HTTP + timers).
5. CLI: ``serve`` and the host.json / local.settings.json reading it uses.

``local_http.py`` imports from this module; this module imports it only lazily (``_http_module()``).

Python API::

    with LocalRuntime("function_app:app", db_path="data/hub.sqlite", port=0) as rt:
        instance_id = rt.start_new("hello_world", {"names": ["a"]})
        status = rt.wait_for(instance_id, timeout=30)

CLI::

    python local_runtime.py serve --app function_app:app --db data/hub.sqlite --port 7071
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import heapq
import importlib
import importlib.util
import inspect
import ipaddress
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Mapping, TypeVar

import azure.functions as func
from aiohttp import web
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as HE
from azure.functions._durable_functions import df_dumps
from azure.functions.durable_functions import ActivityTriggerConverter
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequest

if TYPE_CHECKING:
    import local_http

logger = logging.getLogger(__name__)

T = TypeVar("T")


# ==================================================================================================
# 1. Store: SQLite persistence of the task hub
# ==================================================================================================
# One file holds the task hub: instances, their history, pending new events (inbox), pending
# work (activities and durable timers), and entity state and queues. The engine runs every mutation
# of one scheduling round inside one transaction, so a ``kill -9`` leaves either the round or
# nothing.
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
    instance_id       TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    execution_id      TEXT NOT NULL,
    status            TEXT NOT NULL,
    input             TEXT,      -- JSON text of the input token as received
    output            TEXT,      -- JSON text
    custom_status     TEXT,      -- JSON text
    created_time      TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    parent            TEXT,      -- JSON {instance_id, execution_id, task_id} or NULL
    engine            TEXT       -- JSON bookkeeping of the live execution, NULL when finished
);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_time, instance_id);
CREATE TABLE IF NOT EXISTS history(
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY(instance_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    event        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox(instance_id);
CREATE TABLE IF NOT EXISTS work(
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id      INTEGER NOT NULL,
    kind         TEXT NOT NULL,   -- 'activity' | 'timer'
    due_at       REAL,            -- epoch seconds, timers only
    payload      TEXT NOT NULL,   -- JSON
    PRIMARY KEY(instance_id, execution_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities(
    entity_id     TEXT PRIMARY KEY,  -- '@name@key', name lower-cased
    exists_       INTEGER NOT NULL,
    state         TEXT,              -- entityState text exactly as the SDK returned it
    last_modified TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entity_queue(
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id TEXT NOT NULL,
    message   TEXT NOT NULL
);
"""

INSTANCE_COLUMNS = (
    "instance_id", "name", "execution_id", "status", "input", "output", "custom_status",
    "created_time", "last_updated_time", "parent", "engine",
)


@dataclass
class InstanceRow:
    """One row of ``instances``."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_time: str
    last_updated_time: str
    parent: str | None
    engine: str | None


class Store:
    """Thin typed access to the task hub file; used from one thread only (the engine loop)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; nested use joins the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    @contextmanager
    def savepoint(self, name: str = "episode") -> Iterator[None]:
        """A nested unit inside a transaction: rolled back alone if its body raises."""
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            raise
        self._db.execute(f"RELEASE {name}")

    # -- instances -------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> InstanceRow | None:
        row = self._db.execute(
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances WHERE instance_id = ?",
            (instance_id,),
        ).fetchone()
        return InstanceRow(*row) if row else None

    def live_instances(self) -> list[InstanceRow]:
        rows = self._db.execute(
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances "
            "WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')"
        ).fetchall()
        return [InstanceRow(*row) for row in rows]

    def put_instance(self, row: InstanceRow) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO instances({', '.join(INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))})",
            tuple(getattr(row, c) for c in INSTANCE_COLUMNS),
        )

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE instances SET {assignments} WHERE instance_id = ?",
            (*fields.values(), instance_id),
        )

    def query_instances(
        self,
        *,
        statuses: Sequence[str] | None = None,
        created_from: str | None = None,
        created_to: str | None = None,
        prefix: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[InstanceRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if created_from:
            clauses.append("created_time >= ?")
            params.append(created_from)
        if created_to:
            clauses.append("created_time <= ?")
            params.append(created_to)
        if prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(prefix), prefix])
        if after:
            clauses.append("(created_time, instance_id) > (?, ?)")
            params.extend(after)
        sql = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_time, instance_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [InstanceRow(*row) for row in self._db.execute(sql, params).fetchall()]

    def delete_instance(self, instance_id: str) -> None:
        for table in ("instances", "history", "inbox", "work"):
            self._db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))

    # -- history ---------------------------------------------------------------------------
    def history(self, instance_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def append_history(self, instance_id: str, start: int, events: Sequence[str]) -> None:
        self._db.executemany(
            "INSERT INTO history(instance_id, seq, event) VALUES (?, ?, ?)",
            ((instance_id, start + i, e) for i, e in enumerate(events)),
        )

    def clear_history(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))

    # -- inbox -----------------------------------------------------------------------------
    def add_inbox(self, instance_id: str, execution_id: str, event: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?, ?, ?)",
            (instance_id, execution_id, json.dumps(event)),
        )
        return int(cur.lastrowid or 0)

    def inbox(self, instance_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, execution_id, event FROM inbox WHERE instance_id = ? ORDER BY id",
            (instance_id,),
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def delete_inbox(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM inbox WHERE id = ?", ((i,) for i in ids))

    def clear_inbox(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    # -- work ------------------------------------------------------------------------------
    def add_work(self, rows: Sequence[tuple[str, str, int, str, float | None, str]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO work(instance_id, execution_id, task_id, kind, due_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def delete_work(self, keys: Iterable[tuple[str, str, int]]) -> None:
        self._db.executemany(
            "DELETE FROM work WHERE instance_id = ? AND execution_id = ? AND task_id = ?", keys
        )

    def clear_work(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM work WHERE instance_id = ?", (instance_id,))

    def all_work(self) -> list[tuple[str, str, int, str, float | None, str]]:
        return self._db.execute(
            "SELECT instance_id, execution_id, task_id, kind, due_at, payload FROM work"
        ).fetchall()

    # -- entities --------------------------------------------------------------------------
    def get_entity(self, entity_id: str) -> tuple[bool, str | None] | None:
        row = self._db.execute(
            "SELECT exists_, state FROM entities WHERE entity_id = ?", (entity_id,)
        ).fetchone()
        return (bool(row[0]), row[1]) if row else None

    def put_entity(self, entity_id: str, exists: bool, state: str | None, when: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entities(entity_id, exists_, state, last_modified)"
            " VALUES (?, ?, ?, ?)",
            (entity_id, int(exists), state, when),
        )

    def add_entity_message(self, entity_id: str, message: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO entity_queue(entity_id, message) VALUES (?, ?)",
            (entity_id, json.dumps(message)),
        )
        return int(cur.lastrowid or 0)

    def entity_messages(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, entity_id, message FROM entity_queue ORDER BY id"
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def delete_entity_messages(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM entity_queue WHERE id = ?", ((i,) for i in ids))


# ==================================================================================================
# 2. Discovery: what the Functions host learns from the app
# ==================================================================================================
# ``index_app(app)`` calls ``app.get_functions()`` once per app object (a second call raises in the
# SDK) and caches the result, so several runtimes can be created over the same app.
# Also: six-field NCRONTAB schedules for timer triggers.
class DiscoveryError(Exception):
    """Base class of app loading and indexing errors."""


class AppImportError(DiscoveryError):
    """The 'module:attr' import string does not name an app object."""


class InvalidSchedule(DiscoveryError):
    """A timer schedule is not a six-field NCRONTAB expression."""


@dataclass(frozen=True)
class NamedFunction:
    """An orchestrator or entity: the SDK ``handle`` wrapper under its registered name."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class ActivityFunction:
    """An activity: the user function and the name of its trigger parameter."""

    name: str
    fn: Callable[..., Any]
    param: str


@dataclass(frozen=True)
class HttpFunction:
    """An HTTP-triggered function (async middleware when it has a durable client binding)."""

    name: str
    fn: Callable[..., Any]
    param: str
    client_param: str | None
    route: str
    methods: tuple[str, ...] | None
    auth_level: str


@dataclass(frozen=True)
class TimerFunction:
    """A timer-triggered function and its (unresolved) schedule."""

    name: str
    fn: Callable[..., Any]
    param: str
    client_param: str | None
    schedule: str
    run_on_startup: bool


@dataclass
class FunctionIndex:
    """Everything the runtime needs from the app, keyed case-insensitively."""

    orchestrators: dict[str, NamedFunction] = field(default_factory=dict)
    activities: dict[str, ActivityFunction] = field(default_factory=dict)
    entities: dict[str, NamedFunction] = field(default_factory=dict)
    http: list[HttpFunction] = field(default_factory=list)
    timers: dict[str, TimerFunction] = field(default_factory=dict)

    def orchestrator(self, name: str) -> NamedFunction | None:
        return self.orchestrators.get(name.lower())

    def activity(self, name: str) -> ActivityFunction | None:
        return self.activities.get(name.lower())

    def entity(self, name: str) -> NamedFunction | None:
        return self.entities.get(name.lower())


class InvocationContext(func.Context):
    """The ``context: func.Context`` argument the Functions worker injects when declared."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


def with_context(fn: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Add a ``context`` argument if the user function declares one the bindings did not fill."""
    if "context" in kwargs:
        return kwargs
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if "context" in parameters:
        return {**kwargs, "context": InvocationContext(name)}
    return kwargs


_INDEX_CACHE: dict[int, tuple[Any, FunctionIndex]] = {}
_INDEX_LOCK = threading.Lock()


def load_app(app_or_ref: Any) -> Any:
    """An app object, or 'module:attr' / 'path/to/file.py:attr' resolved to one."""
    if not isinstance(app_or_ref, str):
        return app_or_ref
    module_ref, _, attr = app_or_ref.rpartition(":")
    if not module_ref:
        module_ref, attr = app_or_ref, "app"
    try:
        if module_ref.endswith(".py") or "/" in module_ref:
            path = Path(module_ref).resolve()
            name = path.stem
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
                module = sys.modules[name]
            else:
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise AppImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_ref)
        return getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as err:
        raise AppImportError(f"cannot import app {app_or_ref!r}: {err}") from err


def index_app(app: Any) -> FunctionIndex:
    """Index the app's functions once per app object."""
    with _INDEX_LOCK:
        cached = _INDEX_CACHE.get(id(app))
        if cached is not None and cached[0] is app:
            return cached[1]
        index = _build_index(app.get_functions())
        _INDEX_CACHE[id(app)] = (app, index)
        return index


def _client_param(function: Any) -> str | None:
    for binding in function.get_bindings():
        if binding.type == "durableClient":
            return str(binding.name)
    return None


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _build_index(functions: list[Any]) -> FunctionIndex:
    index = FunctionIndex()
    for function in functions:
        trigger = function.get_trigger()
        name = function.get_function_name()
        user_fn = function.get_user_function()
        kind = trigger.type
        if kind == "orchestrationTrigger":
            name = getattr(trigger, "orchestration", None) or name
            index.orchestrators[name.lower()] = NamedFunction(name, user_fn)
        elif kind == "activityTrigger":
            name = getattr(trigger, "activity", None) or name
            index.activities[name.lower()] = ActivityFunction(name, user_fn, trigger.name)
        elif kind == "entityTrigger":
            name = getattr(trigger, "entity_name", None) or name
            index.entities[name.lower()] = NamedFunction(name, user_fn)
        elif kind == "httpTrigger":
            methods = getattr(trigger, "methods", None)
            index.http.append(HttpFunction(
                name, user_fn, trigger.name, _client_param(function),
                getattr(trigger, "route", None) or name,
                tuple(_enum_text(m).upper() for m in methods) if methods else None,
                _enum_text(getattr(trigger, "auth_level", None) or "function").lower()))
        elif kind == "timerTrigger":
            index.timers[name.lower()] = TimerFunction(
                name, user_fn, trigger.name, _client_param(function), trigger.schedule,
                bool(getattr(trigger, "run_on_startup", False)))
        else:
            logger.warning("function %s has trigger type %s, not supported locally", name, kind)
    return index


# -- NCRONTAB ------------------------------------------------------------------------------------
_MONTHS = {m: i for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS = ((0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _DAYS))


def resolve_setting(schedule: str, settings: Mapping[str, str] | None = None) -> str:
    """'%NAME%' → the app setting (settings mapping first, then the environment).

    Used for timer schedules and host.json values; raises InvalidSchedule when unset."""
    match = re.fullmatch(r"%([^%]+)%", schedule.strip())
    if not match:
        return schedule
    key = match.group(1)
    value = (settings or {}).get(key) or os.environ.get(key)
    if not value:
        raise InvalidSchedule(f"app setting {key!r} for a timer schedule is not set")
    return value


def _parse_field(text: str, low: int, high: int, names: Mapping[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = int(names.get(a, a)), int(names.get(b, b))
        else:
            start = int(names.get(part, part))
            end = high if step > 1 else start
        if start < low or end > high + (1 if high == 6 else 0) or step < 1:
            raise InvalidSchedule(f"cron field {text!r} out of range {low}-{high}")
        values.update(v % 7 if high == 6 else v for v in range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed six-field NCRONTAB expression: second minute hour day month day-of-week."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> "CronSchedule":
        parts = expression.split()
        if len(parts) != 6:
            raise InvalidSchedule(f"NCRONTAB needs six fields, got {expression!r}")
        try:
            return cls(*(_parse_field(p, lo, hi, names)
                         for p, (lo, hi, names) in zip(parts, _FIELDS)))
        except ValueError as err:
            raise InvalidSchedule(f"bad NCRONTAB {expression!r}: {err}") from err

    def next_after(self, moment: datetime) -> datetime:
        """The first matching second strictly after ``moment``."""
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        for _ in range(366 * 5):
            if (t.month in self.months and t.day in self.days
                    and (t.weekday() + 1) % 7 in self.weekdays):
                found = self._within_day(t)
                if found is not None:
                    return found
            t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        raise InvalidSchedule("schedule never fires within five years")

    def _within_day(self, t: datetime) -> datetime | None:
        for hour in sorted(h for h in self.hours if h >= t.hour):
            for minute in sorted(self.minutes):
                if hour == t.hour and minute < t.minute:
                    continue
                for second in sorted(self.seconds):
                    candidate = t.replace(hour=hour, minute=minute, second=second)
                    if candidate >= t:
                        return candidate
        return None


# ==================================================================================================
# 3. Engine: plays the Durable Task extension's role for the Python SDK
# ==================================================================================================
# It hands the SDK the extension's orchestration context JSON (replay schema V3), carries out the
# actions the SDK returns, runs activities in a worker pool and entity batches, and keeps
# everything in SQLite (the store, section 1). All methods run on one asyncio loop;
# ``LocalRuntime`` (section 4) is the thread-safe facade. See ``../shared/durable-protocol.md``
# for the protocol.
#
# Sequence numbers: the SDK numbers tasks itself and never sends the numbers. The engine mirrors its
# counter: every atomic action in yield order (depth-first in compounds) takes the next number,
# signals and continue_as_new take one, external-event waits take none, and retry bookkeeping
# allocates one number when an attempt's failure is delivered (the retry timer) and one when a
# non-final retry timer fires (the next attempt). Events that allocate are put first among an
# episode's new events, so the SDK allocates in the same order as the engine.
#
# Gate (``ProcessAsyncActionsV2``): top-level action k is carried out only after actions 0..k-1 are
# complete in .NET terms (WhenAll: all children; WhenAny: one child; retry: the whole sequence), and
# the orchestration's result or failure takes effect only once all top-level actions are complete.
OUT_OF_PROC_MARKER = "\n\n$OutOfProcData$:"
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
LIVE = frozenset({"Pending", "Running", "Suspended", "ContinuedAsNew"})
COMPLETION_EVENTS = frozenset({
    HE.TASK_COMPLETED, HE.TASK_FAILED,
    HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED, HE.SUB_ORCHESTRATION_INSTANCE_FAILED,
})
FAILURE_EVENTS = frozenset({HE.TASK_FAILED, HE.SUB_ORCHESTRATION_INSTANCE_FAILED})
ATOMIC_KINDS = {0: "act", 2: "sub", 5: "timer", 7: "ent", 8: "http", 9: "sig", 4: "can"}


class EngineError(Exception):
    """Base class of the engine's error conditions."""


class UnknownFunction(EngineError):
    """No orchestrator, activity or entity by that name in the app."""


class InstanceNotFound(EngineError):
    """No instance with that id exists."""


class InstanceAlreadyRunning(EngineError):
    """Start refused: an instance with that id is pending or running."""


class InstanceNotRunning(EngineError):
    """The operation needs a live instance, but the instance has finished (HTTP 410)."""


class InstanceStillRunning(EngineError):
    """The operation needs a finished instance, but the instance is still live."""


class UnsupportedOperation(EngineError):
    """An operation the embedded runtime does not implement."""


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


# -- activities (run in worker threads or processes) ------------------------------------------
@dataclass
class ActivityOutcome:
    """What one activity invocation produced, in history-event terms."""

    ok: bool
    result: str | None = None
    reason: str | None = None
    details: str | None = None


def run_activity(activity: ActivityFunction, input_text: str | None) -> ActivityOutcome:
    """Invoke an activity as the worker does, through the SDK's activity trigger converter."""
    try:
        value = decode_activity_input(input_text)
        result = activity.fn(**with_context(activity.fn, activity.name, {activity.param: value}))
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        encoded = ActivityTriggerConverter.encode(result, expected_type=None)
        return ActivityOutcome(ok=True, result=str(encoded.value))
    except Exception as err:  # noqa: BLE001 - user code failure becomes TaskFailed
        reason = f"Activity function '{activity.name}' failed: {type(err).__name__}: {err}"
        logger.info("%s\n%s", reason, "".join(traceback.format_tb(err.__traceback__)))
        return ActivityOutcome(ok=False, reason=reason, details="")


def decode_activity_input(input_text: str | None) -> Any:
    """``ActivityTriggerConverter.decode`` on the input string (df_loads, raw-string fallback)."""
    if input_text is None:
        return None
    return ActivityTriggerConverter.decode(Datum(input_text, "string"), trigger_metadata=None)


_PROCESS_ACTIVITIES: dict[str, ActivityFunction] = {}


def run_activity_in_process(name: str, input_text: str | None) -> ActivityOutcome:
    """Process-pool entry point: the activity table was inherited at fork or loaded at spawn."""
    return run_activity(_PROCESS_ACTIVITIES[name.lower()], input_text)


def load_process_activities(app_ref: str) -> None:
    """Spawned worker initializer: import the app by reference and index its activities."""
    _PROCESS_ACTIVITIES.update(index_app(load_app(app_ref)).activities)


def make_activity_pool(kind: str, workers: int, index: FunctionIndex,
                       app_ref: str | None = None) -> concurrent.futures.Executor:
    """Threads, or processes: spawned workers importing ``app_ref`` when there is one (no fork
    of the threaded host), else forked workers inheriting the activity table (Linux)."""
    if kind == "thread":
        return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="activity")
    if kind != "process":
        raise ValueError(f"activity pool kind must be 'thread' or 'process', not {kind!r}")
    import multiprocessing

    if app_ref is not None:
        return concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=load_process_activities, initargs=(app_ref,))
    _PROCESS_ACTIVITIES.update(index.activities)
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"))


# -- live instance state -----------------------------------------------------------------------
@dataclass
class Inboxed:
    """A new event waiting for delivery to an orchestration."""

    row_id: int
    execution_id: str
    event: dict[str, Any]


@dataclass
class Live:
    """A pending/running/suspended instance held in memory."""

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
        return json.dumps({"counter": self.counter, "nodes": self.nodes,
                           "dispatched": self.dispatched, "waits": dict(self.waits)})

    def load_engine_json(self, text: str | None) -> None:
        if not text:
            return
        data = json.loads(text)
        self.counter = data["counter"]
        self.nodes = data["nodes"]
        self.dispatched = data["dispatched"]
        self.waits = defaultdict(int, data["waits"])
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
    """What one round decided, carried out when its transaction commits."""

    activities: list[tuple[str, str, int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[float, str, str, int, str]] = field(default_factory=list)


@dataclass
class EntityCall:
    """One queued entity operation."""

    row_id: int
    message: dict[str, Any]


EPISODE_COALESCE_S = 0.05


class Engine:
    """The scheduler; every method runs on the engine's event loop."""

    def __init__(self, index: FunctionIndex, store: Store, *,
                 max_activity_workers: int, activity_pool: str = "thread",
                 app_ref: str | None = None) -> None:
        self.index = index
        self.store = store
        self.pool = make_activity_pool(activity_pool, max_activity_workers, index, app_ref)
        self.live: dict[str, Live] = {}
        self.ready: set[str] = set()
        self.results: list[tuple[tuple[str, str, int], ActivityOutcome]] = []
        self.timers: list[tuple[float, str, str, int, str]] = []
        self.entity_queue: dict[str, list[EntityCall]] = defaultdict(list)
        self.inflight: set[tuple[str, str, int]] = set()
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._stopping = False
        self._recover()

    # -- lifecycle ------------------------------------------------------------------------------
    def _recover(self) -> None:
        for row in self.store.live_instances():
            live = Live(row.instance_id, row.name, row.execution_id, row.status, row.input,
                        row.created_time, json.loads(row.parent) if row.parent else None)
            live.history = self.store.history(row.instance_id)
            live.load_engine_json(row.engine)
            live.inbox = [Inboxed(i, x, e) for i, x, e in self.store.inbox(row.instance_id)]
            live.custom_status = row.custom_status
            self.live[live.instance_id] = live
            if live.inbox:
                self.ready.add(live.instance_id)
        pending = Decisions()
        for instance_id, execution_id, task_id, kind, due_at, payload in self.store.all_work():
            data = json.loads(payload)
            if kind == "timer":
                pending.timers.append((due_at or 0.0, instance_id, execution_id, task_id,
                                       data["fireAt"]))
            else:
                pending.activities.append((instance_id, execution_id, task_id, data["name"],
                                           data["input"]))
        for row_id, entity_id, message in self.store.entity_messages():
            self.entity_queue[entity_id].append(EntityCall(row_id, message))
        if self.live or pending.activities:
            logger.info("recovered %d live instances, %d activities to run again, %d timers",
                        len(self.live), len(pending.activities), len(pending.timers))
        self._carry_out(pending)

    async def run(self) -> None:
        """The scheduling loop: one transaction per round."""
        while not self._stopping:
            self.wake.clear()
            try:
                self._round()
            except Exception:  # noqa: BLE001 - keep scheduling; the round was rolled back
                logger.exception("scheduling round failed; reloading state from the task hub")
                await asyncio.sleep(0.5)
                self._reload()
                continue
            delay = self._next_timer_delay()
            if self.ready or self.results or self._entities_pending():
                delay = 0.0
            try:
                await asyncio.wait_for(self.wake.wait(), delay)
            except asyncio.TimeoutError:
                pass
            if self.results and self.inflight and not self._stopping:
                # Siblings of a fan-out finish close together: let them join this episode.
                # Every episode replays the whole history through the SDK (which parses each
                # event's timestamp with dateutil), so fewer, fuller episodes cut host CPU
                # several-fold; the extension likewise takes control-queue messages in batches.
                await asyncio.sleep(EPISODE_COALESCE_S)

    def _reload(self) -> None:
        """Drop in-memory state and rebuild it from SQLite (after a rolled-back round).

        Activities still running are not submitted twice; finished results that were not
        committed are lost, and their activities run again (at-least-once)."""
        self.live.clear()
        self.ready.clear()
        self.results.clear()
        self.timers.clear()
        self.entity_queue.clear()
        self._recover()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _entities_pending(self) -> bool:
        return any(self.entity_queue.values())

    def _next_timer_delay(self) -> float | None:
        if not self.timers:
            return None
        return max(0.0, self.timers[0][0] - time.time())

    def _round(self) -> None:
        decisions = Decisions()
        with self.store.transaction():
            self._flush_results()
            self._fire_due_timers()
            for _ in range(8):
                ran = self._run_entities()
                ready, self.ready = self.ready, set()
                for instance_id in sorted(ready):
                    live = self.live.get(instance_id)
                    # A suspended instance keeps its inbox; resume() marks it ready again.
                    if live is not None and live.status != "Suspended":
                        self._guarded_episode(live, decisions)
                if not ran and not self.ready:
                    break
        self._carry_out(decisions)
        self._notify_waiters()

    def _carry_out(self, decisions: Decisions) -> None:
        for key_and_call in decisions.activities:
            self._submit_activity(*key_and_call)
        for timer in decisions.timers:
            heapq.heappush(self.timers, timer)

    # -- activities -----------------------------------------------------------------------------
    def _submit_activity(self, instance_id: str, execution_id: str, task_id: int, name: str,
                         input_text: str | None) -> None:
        key = (instance_id, execution_id, task_id)
        if key in self.inflight:
            return
        activity = self.index.activity(name)
        if activity is None:
            outcome = ActivityOutcome(ok=False, reason=(
                f"The function '{name}' doesn't exist, is disabled, or is not an activity "
                "function."), details="")
            self.results.append((key, outcome))
            self.wake.set()
            return
        self.inflight.add(key)
        if isinstance(self.pool, concurrent.futures.ProcessPoolExecutor):
            future = self.pool.submit(run_activity_in_process, activity.name, input_text)
        else:
            future = self.pool.submit(run_activity, activity, input_text)
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(
            self._activity_done, key, f))

    def _activity_done(self, key: tuple[str, str, int],
                       future: concurrent.futures.Future[ActivityOutcome]) -> None:
        self.inflight.discard(key)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            outcome = ActivityOutcome(ok=False, reason=f"Activity host failure: {error!r}",
                                      details="")
        else:
            outcome = future.result()
        self.results.append((key, outcome))
        self.wake.set()

    def _flush_results(self) -> None:
        results, self.results = self.results, []
        if not results:
            return
        self.store.delete_work(key for key, _ in results)
        now = utcnow()
        for (instance_id, execution_id, task_id), outcome in results:
            if outcome.ok:
                ev = event(HE.TASK_COMPLETED, now, TaskScheduledId=task_id, Result=outcome.result)
            else:
                ev = event(HE.TASK_FAILED, now, TaskScheduledId=task_id, Reason=outcome.reason,
                           Details=outcome.details)
            self._post(instance_id, execution_id, ev)

    # -- timers ---------------------------------------------------------------------------------
    def _fire_due_timers(self) -> None:
        now = time.time()
        fired: list[tuple[str, str, int]] = []
        while self.timers and self.timers[0][0] <= now:
            _, instance_id, execution_id, timer_id, fire_at = heapq.heappop(self.timers)
            fired.append((instance_id, execution_id, timer_id))
            live = self.live.get(instance_id)
            node = live.index.get(timer_id) if live else None
            if node is not None and node.get("cancelled"):
                continue
            self._post(instance_id, execution_id,
                       event(HE.TIMER_FIRED, utcnow(), TimerId=timer_id, FireAt=fire_at))
        self.store.delete_work(fired)

    # -- delivery -------------------------------------------------------------------------------
    def _post(self, instance_id: str, execution_id: str, ev: dict[str, Any]) -> None:
        """Queue a new event for an instance's next episode (dropped if that execution ended)."""
        live = self.live.get(instance_id)
        if live is None or live.execution_id != execution_id:
            logger.debug("dropping event %s for finished execution %s/%s",
                         ev["EventType"], instance_id, execution_id)
            return
        row_id = self.store.add_inbox(instance_id, execution_id, ev)
        live.inbox.append(Inboxed(row_id, execution_id, ev))
        self.ready.add(instance_id)
        self.wake.set()

    def _select_events(self, live: Live) -> list[Inboxed]:
        """Split the inbox: deliverable now, stale (dropped), or buffered (external events)."""
        deliver: list[Inboxed] = []
        keep: list[Inboxed] = []
        stale: list[int] = []
        offered: dict[str, int] = defaultdict(int)
        for item in live.inbox:
            ev = item.event
            etype = ev["EventType"]
            if item.execution_id != live.execution_id:
                stale.append(item.row_id)
            elif etype == HE.EVENT_RAISED and ev["Name"] not in live.index:
                name = ev["Name"]
                if offered[name] < live.waits.get(name, 0):
                    offered[name] += 1
                    deliver.append(item)
                else:
                    keep.append(item)
            elif etype in COMPLETION_EVENTS and ev["TaskScheduledId"] not in live.index:
                stale.append(item.row_id)
            elif etype == HE.TIMER_FIRED and ev["TimerId"] not in live.index:
                stale.append(item.row_id)
            else:
                deliver.append(item)
        live.inbox = keep
        self.store.delete_inbox(stale + [item.row_id for item in deliver])
        return deliver

    def _allocates(self, live: Live, ev: dict[str, Any]) -> bool:
        etype = ev["EventType"]
        if etype in FAILURE_EVENTS:
            node = live.index.get(ev["TaskScheduledId"])
            return node is not None and node["k"] == "retry"
        if etype == HE.TIMER_FIRED:
            node = live.index.get(ev["TimerId"])
            return node is not None and node["k"] == "retry" and node["n"] < node["max"]
        return False

    # -- the episode ----------------------------------------------------------------------------
    def _guarded_episode(self, live: Live, decisions: Decisions) -> None:
        """Run one episode; a host-side failure fails that instance, never the scheduler."""
        activities, timers = len(decisions.activities), len(decisions.timers)
        try:
            with self.store.savepoint():
                self._episode(live, decisions)
        except Exception as err:  # noqa: BLE001 - isolate one instance's failure
            logger.exception("episode of %s (%s) failed in the host", live.instance_id,
                             live.name)
            del decisions.activities[activities:]
            del decisions.timers[timers:]
            reason = f"Orchestrator function '{live.name}' failed: embedded runtime error: {err}"
            now = utcnow()
            self._close(live, "Failed", json.dumps(reason), now)
            self._notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                                            Reason=reason, Details=""))

    def _episode(self, live: Live, decisions: Decisions) -> None:
        items = self._select_events(live)
        if not items:
            return
        events = [item.event for item in items]
        allocating = [self._allocates(live, e) for e in events]
        new_events = ([e for e, a in zip(events, allocating) if a]
                      + [e for e, a in zip(events, allocating) if not a])
        now = utcnow()
        extra: list[dict[str, Any]] = []
        for ev in new_events:
            self._apply(live, ev, now, extra, decisions)
        started = event(HE.ORCHESTRATOR_STARTED, now)
        state = self._invoke(live, [started, *new_events])
        if live.status == "Pending":
            live.status = "Running"
        if "customStatus" in state:
            live.custom_status = json.dumps(state["customStatus"])
        actions = state.get("actions") or []
        top = actions[0] if actions else []
        self._sync_cancellations(live.nodes, top)
        for action in top[len(live.nodes):]:
            live.nodes.append(self._build_node(live, action))
        self._advance_gate(live, now, extra, decisions)
        appended = [played(e) for e in (started, *new_events, *extra)]
        appended.append(json.dumps({**event(HE.ORCHESTRATOR_COMPLETED, now), "IsPlayed": True}))
        self.store.append_history(live.instance_id, len(live.history), appended)
        live.history.extend(appended)
        finished = (state.get("isDone") or state.get("error")) and (
            live.dispatched == len(live.nodes) and all(is_complete(n) for n in live.nodes))
        if finished:
            self._finish(live, state, now)
        else:
            self.store.update_instance(
                live.instance_id, status=live.status, custom_status=live.custom_status,
                last_updated_time=iso(now), engine=live.engine_json())

    def _invoke(self, live: Live, new_events: list[dict[str, Any]]) -> dict[str, Any]:
        """Call the SDK's own orchestrator entry point with the extension's context JSON."""
        orchestrator = self.index.orchestrator(live.name)
        if orchestrator is None:
            return {"isDone": False, "actions": [], "error": (
                f"The function '{live.name}' doesn't exist, is disabled, or is not an "
                "orchestrator function.")}
        history = ",".join([*live.history, *(json.dumps(e) for e in new_events)])
        context = (
            f'{{"history":[{history}],"instanceId":{json.dumps(live.instance_id)},'
            f'"isReplaying":{"true" if live.history else "false"},'
            f'"parentInstanceId":{json.dumps((live.parent or {}).get("instance_id"))},'
            f'"input":{json.dumps(input_for_context(live.input_json))},'
            '"upperSchemaVersion":1,"upperSchemaVersionNew":2}'
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                text = orchestrator.fn(func.OrchestrationContext(context))
            except Exception as err:  # noqa: BLE001 - the SDK reports user failures this way
                message = str(err)
                if OUT_OF_PROC_MARKER not in message:
                    logger.exception("orchestrator %s (%s) failed outside the SDK protocol",
                                     live.name, live.instance_id)
                    return {"isDone": False, "actions": [], "error": message}
                text = message.split(OUT_OF_PROC_MARKER, 1)[1]
        for warning in caught:
            logger.warning("SDK warning in %s (%s): %s", live.name, live.instance_id,
                           warning.message)
        return json.loads(text)

    # -- applying new events to the engine's mirror -------------------------------------------
    def _apply(self, live: Live, ev: dict[str, Any], now: datetime,
               extra: list[dict[str, Any]], decisions: Decisions) -> None:
        etype = ev["EventType"]
        if etype in COMPLETION_EVENTS:
            node = live.index.pop(ev["TaskScheduledId"])
            if node["k"] != "retry" or etype not in FAILURE_EVENTS:
                node["done"] = True
                return
            timer_id = live.alloc()
            node["tmr"] = timer_id
            live.index[timer_id] = node
            fire_at = now + timedelta(milliseconds=node["iv"])
            extra.append(event(HE.TIMER_CREATED, now, timer_id, FireAt=iso(fire_at)))
            self._add_timer(live, timer_id, fire_at, decisions)
        elif etype == HE.TIMER_FIRED:
            node = live.index.pop(ev["TimerId"])
            if node["k"] != "retry":
                node["done"] = True
            elif node["n"] < node["max"]:
                node["tmr"] = None
                node["n"] += 1
                node["cur"] = live.alloc()
                live.index[node["cur"]] = node
                self._dispatch_attempt(live, node, now, extra, decisions)
            else:
                node["tmr"] = None
                node["done"] = True
        elif etype == HE.EVENT_RAISED:
            node = live.index.pop(ev["Name"], None)
            if node is not None:
                node["done"] = True
                return
            name = ev["Name"]
            live.waits[name] -= 1
            waiting = self._find_wait(live.nodes[:live.dispatched], name)
            if waiting is not None:
                waiting["done"] = True

    def _find_wait(self, nodes: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        """The most recent open wait for ``name``: the SDK hands an event to its last waiter."""
        for node in reversed(nodes):
            if node["k"] in ("all", "any"):
                found = self._find_wait(node["c"], name)
                if found is not None:
                    return found
            elif node["k"] == "evt" and node["name"] == name and not node["done"]:
                return node
        return None

    # -- actions → nodes ------------------------------------------------------------------------
    def _build_node(self, live: Live, action: dict[str, Any]) -> dict[str, Any]:
        atype = action["actionType"]
        if atype in (11, 12):
            children = action["compoundActions"]
            if atype == 12 and len(children) == 1 and children[0]["actionType"] in (1, 3):
                attempt = children[0]
                options = attempt.get("retryOptions") or {}
                return {"k": "retry", "a": attempt, "cur": live.alloc(), "tmr": None, "n": 1,
                        "max": max(1, int(options.get("maxNumberOfAttempts", 1))),
                        "iv": int(options.get("firstRetryIntervalInMilliseconds", 0)),
                        "done": False}
            return {"k": "any" if atype == 11 else "all",
                    "c": [self._build_node(live, c) for c in children]}
        if atype == 6:
            return {"k": "evt", "name": action["externalEventName"], "done": False}
        if atype in (1, 3):
            options = action.get("retryOptions") or {}
            return {"k": "retry", "a": action, "cur": live.alloc(), "tmr": None, "n": 1,
                    "max": max(1, int(options.get("maxNumberOfAttempts", 1))),
                    "iv": int(options.get("firstRetryIntervalInMilliseconds", 0)), "done": False}
        kind = ATOMIC_KINDS.get(atype)
        if kind is None:
            raise UnsupportedOperation(f"unknown action type {atype}: {action}")
        node = {"k": kind, "id": live.alloc(), "a": action, "done": False}
        if kind == "timer" and action.get("isCanceled"):
            node["cancelled"] = True
        return node

    def _sync_cancellations(self, nodes: list[dict[str, Any]],
                            actions: list[dict[str, Any]]) -> None:
        for node, action in zip(nodes, actions):
            if node["k"] in ("all", "any"):
                self._sync_cancellations(node["c"], action.get("compoundActions") or [])
            elif node["k"] == "timer" and action.get("isCanceled") and not node.get("cancelled"):
                node["cancelled"] = True
                node["done"] = True

    # -- the gate and dispatch ------------------------------------------------------------------
    def _advance_gate(self, live: Live, now: datetime, extra: list[dict[str, Any]],
                      decisions: Decisions) -> None:
        while live.dispatched < len(live.nodes) and (
                live.dispatched == 0 or is_complete(live.nodes[live.dispatched - 1])):
            node = live.nodes[live.dispatched]
            live.dispatched += 1
            self._dispatch(live, node, now, extra, decisions)

    def _dispatch(self, live: Live, node: dict[str, Any], now: datetime,
                  extra: list[dict[str, Any]], decisions: Decisions) -> None:
        kind = node["k"]
        if kind in ("all", "any"):
            for child in node["c"]:
                self._dispatch(live, child, now, extra, decisions)
            return
        if kind == "evt":
            live.waits[node["name"]] += 1
            if any(i.event["EventType"] == HE.EVENT_RAISED and i.event["Name"] == node["name"]
                   for i in live.inbox):
                self.ready.add(live.instance_id)
            return
        if kind == "retry":
            live.index[node["cur"]] = node
            self._dispatch_attempt(live, node, now, extra, decisions)
            return
        if kind == "can":
            node["done"] = True
            return
        action = node.pop("a")
        task_id = node["id"]
        if kind == "act":
            live.index[task_id] = node
            self._schedule_activity(live, task_id, action, now, extra, decisions)
        elif kind == "sub":
            live.index[task_id] = node
            self._schedule_sub(live, task_id, action, now, extra)
        elif kind == "timer":
            self._schedule_timer(live, node, action, now, extra, decisions)
        elif kind in ("ent", "sig"):
            self._send_to_entity(live, node, action, now, extra)
        elif kind == "http":
            live.index[task_id] = node
            extra.append(event(HE.TASK_SCHEDULED, now, task_id, Name="BuiltIn::HttpActivity"))
            self._post(live.instance_id, live.execution_id, event(
                HE.TASK_FAILED, now, TaskScheduledId=task_id,
                Reason="call_http is not supported by the embedded runtime", Details=""))

    def _schedule_timer(self, live: Live, node: dict[str, Any], action: dict[str, Any],
                        now: datetime, extra: list[dict[str, Any]],
                        decisions: Decisions) -> None:
        if node.get("cancelled"):
            node["done"] = True
            return
        live.index[node["id"]] = node
        extra.append(event(HE.TIMER_CREATED, now, node["id"], FireAt=action["fireAt"]))
        self._add_timer(live, node["id"], parse_iso(action["fireAt"]), decisions,
                        action["fireAt"])

    def _send_to_entity(self, live: Live, node: dict[str, Any], action: dict[str, Any],
                        now: datetime, extra: list[dict[str, Any]]) -> None:
        """EventSent with the RequestMessage; a call is answered by EventRaised(Name=guid)."""
        guid = str(uuid.uuid4())
        message = {"op": action["operation"], "input": json.dumps(action.get("input")),
                   "id": guid, "parent": live.instance_id, "parentExecution": live.execution_id}
        if node["k"] == "sig":
            message["signal"] = True
            node["done"] = True
        else:
            node["guid"] = guid
            live.index[guid] = node
        extra.append(event(HE.EVENT_SENT, now, node["id"], InstanceId=action["instanceId"],
                           Name="op", Input=json.dumps(message)))
        self._enqueue_entity(action["instanceId"], message)

    def _dispatch_attempt(self, live: Live, node: dict[str, Any], now: datetime,
                          extra: list[dict[str, Any]], decisions: Decisions) -> None:
        action = node["a"]
        if action["actionType"] == 1:
            self._schedule_activity(live, node["cur"], action, now, extra, decisions)
        else:
            self._schedule_sub(live, node["cur"], action, now, extra)

    def _schedule_activity(self, live: Live, task_id: int, action: dict[str, Any],
                           now: datetime, extra: list[dict[str, Any]],
                           decisions: Decisions) -> None:
        name, input_text = action["functionName"], action.get("input")
        extra.append(event(HE.TASK_SCHEDULED, now, task_id, Name=name, Version="",
                           Input=input_text))
        key = (live.instance_id, live.execution_id, task_id)
        self.store.add_work([(*key, "activity", None,
                              json.dumps({"name": name, "input": input_text}))])
        decisions.activities.append((*key, name, input_text))

    def _add_timer(self, live: Live, timer_id: int, fire_at: datetime, decisions: Decisions,
                   fire_at_text: str | None = None) -> None:
        text = fire_at_text or iso(fire_at)
        due = fire_at.timestamp()
        self.store.add_work([(live.instance_id, live.execution_id, timer_id, "timer", due,
                              json.dumps({"fireAt": text}))])
        decisions.timers.append((due, live.instance_id, live.execution_id, timer_id, text))

    def _schedule_sub(self, live: Live, task_id: int, action: dict[str, Any], now: datetime,
                      extra: list[dict[str, Any]]) -> None:
        name = action["functionName"]
        child_id = action.get("instanceId") or f"{live.execution_id}:{task_id}"
        input_text = action.get("input")
        extra.append(event(HE.SUB_ORCHESTRATION_INSTANCE_CREATED, now, task_id, Name=name,
                           Version="", InstanceId=child_id, Input=input_text))
        parent = {"instance_id": live.instance_id, "execution_id": live.execution_id,
                  "task_id": task_id}
        try:
            self.create_instance(name, child_id,
                                 None if input_text is None else json.dumps(input_text),
                                 parent=parent)
        except EngineError as err:
            self._post(live.instance_id, live.execution_id, event(
                HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now, TaskScheduledId=task_id,
                Reason=str(err), Details=""))

    # -- finishing ------------------------------------------------------------------------------
    def _finish(self, live: Live, state: dict[str, Any], now: datetime) -> None:
        can = live.nodes[-1] if live.nodes and live.nodes[-1]["k"] == "can" else None
        if state.get("error"):
            reason = f"Orchestrator function '{live.name}' failed: {state['error']}"
            self._close(live, "Failed", json.dumps(reason), now)
            self._notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                                            Reason=reason, Details=""))
        elif can is not None and state.get("isDone"):
            self._continue_as_new(live, can["a"].get("input"), now)
        else:
            result = json.dumps(state.get("output"))
            self._close(live, "Completed", result, now)
            self._notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED, now,
                                            Result=result))

    def _close(self, live: Live, status: str, output: str | None, now: datetime) -> None:
        final = event(HE.EXECUTION_COMPLETED if status != "Terminated"
                      else HE.EXECUTION_TERMINATED, now,
                      OrchestrationStatus={"Completed": 1, "Failed": 3}.get(status, 5),
                      Result=output)
        text = played(final)
        self.store.append_history(live.instance_id, len(live.history), [text])
        live.history.append(text)
        self.store.update_instance(live.instance_id, status=status, output=output,
                                   custom_status=live.custom_status,
                                   last_updated_time=iso(now), engine=None)
        self.store.clear_inbox(live.instance_id)
        self.store.clear_work(live.instance_id)
        self.live.pop(live.instance_id, None)
        self.ready.discard(live.instance_id)
        logger.info("instance %s (%s) %s", live.instance_id, live.name, status)

    def _notify_parent(self, live: Live, ev: dict[str, Any]) -> None:
        if live.parent:
            ev["TaskScheduledId"] = live.parent["task_id"]
            self._post(live.parent["instance_id"], live.parent["execution_id"], ev)

    def _continue_as_new(self, live: Live, input_text: str | None, now: datetime) -> None:
        self.store.clear_history(live.instance_id)
        self.store.clear_inbox(live.instance_id)
        self.store.clear_work(live.instance_id)
        fresh = Live(live.instance_id, live.name, uuid.uuid4().hex, "Running",
                     None if input_text is None else json.dumps(input_text),
                     live.created_time, live.parent, custom_status=live.custom_status)
        self.live[live.instance_id] = fresh
        self.store.update_instance(live.instance_id, execution_id=fresh.execution_id,
                                   status="Running", input=fresh.input_json, output=None,
                                   last_updated_time=iso(now), engine=fresh.engine_json())
        self._post(fresh.instance_id, fresh.execution_id, self._started_event(fresh, now))
        logger.info("instance %s (%s) continued as new", live.instance_id, live.name)

    # -- entities -------------------------------------------------------------------------------
    def _enqueue_entity(self, entity_id: str, message: dict[str, Any]) -> None:
        row_id = self.store.add_entity_message(entity_id, message)
        self.entity_queue[entity_id].append(EntityCall(row_id, message))
        self.wake.set()

    def _run_entities(self) -> bool:
        ran = False
        for entity_id in list(self.entity_queue):
            calls = self.entity_queue.pop(entity_id)
            if calls:
                self._run_entity_batch(entity_id, calls)
                ran = True
        return ran

    def _run_entity_batch(self, entity_id: str, calls: list[EntityCall]) -> None:
        name, key = split_entity_id(entity_id)
        entity = self.index.entity(name)
        self.store.delete_entity_messages(c.row_id for c in calls)
        now = utcnow()
        if entity is None:
            for call in calls:
                self._entity_response(call.message, json.dumps(
                    f"The function '{name}' doesn't exist, is disabled, or is not an entity "
                    "function."), failed=True)
            return
        stored = self.store.get_entity(entity_id)
        exists, state = stored if stored else (False, None)
        batch = [{"name": c.message["op"], "input": c.message.get("input"),
                  "isSignal": bool(c.message.get("signal")), "id": c.message["id"]}
                 for c in calls]
        context = json.dumps({"self": {"name": name, "key": key}, "exists": exists,
                              "state": state, "batch": batch})
        try:
            reply = json.loads(entity.fn(context))
        except Exception as err:  # noqa: BLE001 - framework failure fails every operation
            logger.exception("entity %s batch failed", entity_id)
            for call in calls:
                self._entity_response(call.message, json.dumps(str(err)), failed=True)
            return
        self.store.put_entity(entity_id, bool(reply.get("entityExists")),
                              reply.get("entityState"), iso(now))
        for call, result in zip(calls, reply.get("results", [])):
            if not call.message.get("signal"):
                self._entity_response(call.message, result.get("result"),
                                      failed=bool(result.get("isError")))
        for sent in reply.get("signals") or []:
            logger.warning("entity %s sent a signal, not supported: %s", entity_id, sent)

    def _entity_response(self, message: dict[str, Any], result: str | None,
                         failed: bool) -> None:
        parent = message.get("parent")
        if not parent:
            return
        body: dict[str, Any] = {"result": result}
        if failed:
            body["exceptionType"] = "Error"
        self._post(parent, message.get("parentExecution", ""), event(
            HE.EVENT_RAISED, utcnow(), Name=message["id"], Input=json.dumps(body)))

    def signal_entity(self, entity_id: str, operation: str, input_text: str | None) -> None:
        name, _ = split_entity_id(entity_id)
        if self.index.entity(name) is None:
            raise UnknownFunction(f"no entity function named {name!r}")
        with self.store.transaction():
            self._enqueue_entity(entity_id, {"op": operation, "input": input_text,
                                             "id": str(uuid.uuid4()), "signal": True})

    def read_entity(self, entity_id: str) -> tuple[bool, str | None]:
        stored = self.store.get_entity(entity_id)
        if stored is None or not stored[0]:
            return False, None
        return True, stored[1]

    # -- management -----------------------------------------------------------------------------
    def _started_event(self, live: Live, now: datetime) -> dict[str, Any]:
        parent = None
        if live.parent:
            parent = {"OrchestrationInstance": {"InstanceId": live.parent["instance_id"],
                                                "ExecutionId": live.parent["execution_id"]},
                      "TaskScheduleId": live.parent["task_id"]}
        return event(HE.EXECUTION_STARTED, now,
                     OrchestrationInstance={"InstanceId": live.instance_id,
                                            "ExecutionId": live.execution_id},
                     ParentInstance=parent, Name=live.name, Version="",
                     Input=input_for_context(live.input_json), Tags=None)

    def create_instance(self, name: str, instance_id: str | None, input_json: str | None,
                        parent: dict[str, Any] | None = None) -> str:
        """Create an instance (Pending) and queue its ExecutionStarted; returns the id."""
        orchestrator = self.index.orchestrator(name)
        if orchestrator is None:
            raise UnknownFunction(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                "function.")
        instance_id = instance_id or uuid.uuid4().hex
        existing = self.store.get_instance(instance_id)
        if existing is not None and existing.status in LIVE:
            raise InstanceAlreadyRunning(
                f"An Orchestration instance with the status {existing.status} already exists.")
        now = utcnow()
        live = Live(instance_id, orchestrator.name, uuid.uuid4().hex, "Pending", input_json,
                    iso(now), parent)
        with self.store.transaction():
            if existing is not None:
                self.store.delete_instance(instance_id)
            self.store.put_instance(InstanceRow(
                instance_id, live.name, live.execution_id, "Pending", input_json, None, None,
                live.created_time, live.created_time,
                json.dumps(parent) if parent else None, live.engine_json()))
            self.live[instance_id] = live
            self._post(instance_id, live.execution_id, self._started_event(live, now))
        logger.info("instance %s (%s) created", instance_id, live.name)
        return instance_id

    def raise_event(self, instance_id: str, name: str, input_text: str | None) -> None:
        live = self._require_live(instance_id)
        with self.store.transaction():
            self._post(instance_id, live.execution_id,
                       event(HE.EVENT_RAISED, utcnow(), Name=name, Input=input_text))

    def terminate(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        now = utcnow()
        with self.store.transaction():
            self._close(live, "Terminated", json.dumps(reason), now)
            self._notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                                            Reason=f"Terminated: {reason}", Details=""))
        self._notify_waiters()

    def suspend(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        if live.status == "Suspended":
            return
        with self.store.transaction():
            live.status = "Suspended"
            self.store.update_instance(instance_id, status="Suspended",
                                       last_updated_time=iso(utcnow()))
        logger.info("instance %s suspended: %s", instance_id, reason)

    def resume(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        if live.status != "Suspended":
            return
        with self.store.transaction():
            live.status = "Running" if live.history else "Pending"
            self.store.update_instance(instance_id, status=live.status,
                                       last_updated_time=iso(utcnow()))
        self.ready.add(instance_id)
        self.wake.set()
        logger.info("instance %s resumed: %s", instance_id, reason)

    def purge(self, instance_id: str) -> int:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        if row.status not in TERMINAL:
            raise InstanceStillRunning(f"instance {instance_id} is {row.status}")
        with self.store.transaction():
            self.store.delete_instance(instance_id)
        return 1

    def restart(self, instance_id: str, new_instance_id: bool) -> str:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        if not new_instance_id and row.status in LIVE:
            raise InstanceAlreadyRunning(f"instance {instance_id} is {row.status}")
        return self.create_instance(row.name, None if new_instance_id else instance_id,
                                    row.input)

    def _require_live(self, instance_id: str) -> Live:
        live = self.live.get(instance_id)
        if live is not None:
            return live
        if self.store.get_instance(instance_id) is None:
            raise InstanceNotFound(instance_id)
        raise InstanceNotRunning(f"instance {instance_id} has finished")

    def status(self, instance_id: str, show_history: bool = False,
               show_history_output: bool = False, show_input: bool = True
               ) -> dict[str, Any] | None:
        row = self.store.get_instance(instance_id)
        if row is None:
            return None
        body = status_body(row, show_input=show_input)
        live = self.live.get(instance_id)
        if live is not None:
            body["customStatus"] = loads_or_none(live.custom_status)
        if show_history:
            body["historyEvents"] = history_for_status(
                self.store.history(instance_id), show_history_output)
        return body

    # -- waiting ----------------------------------------------------------------------------------
    async def wait_finished(self, instance_id: str) -> None:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        if row.status in TERMINAL:
            return
        future: asyncio.Future[None] = self.loop.create_future()
        self.waiters[instance_id].append(future)
        await future

    def _notify_waiters(self) -> None:
        for instance_id in [i for i in self.waiters if i not in self.live]:
            for future in self.waiters.pop(instance_id):
                if not future.done():
                    future.set_result(None)


def split_entity_id(entity_id: str) -> tuple[str, str]:
    """'@name@key' → (name, key)."""
    _, name, key = entity_id.split("@", 2)
    return name, key


def entity_id_of(name: str, key: str) -> str:
    return f"@{name.lower()}@{key}"


def loads_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def short_time(text: str) -> str:
    return text[:19] + "Z"


def status_body(row: InstanceRow, show_input: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": row.name, "instanceId": row.instance_id, "runtimeStatus": row.status,
        "input": loads_or_none(row.input) if show_input else None,
        "customStatus": loads_or_none(row.custom_status), "output": loads_or_none(row.output),
        "createdTime": short_time(row.created_time),
        "lastUpdatedTime": short_time(row.last_updated_time),
    }
    return body


def history_for_status(history: list[str], show_output: bool) -> list[dict[str, Any]]:
    names = {int(k): k.name for k in HE}
    shown = []
    for text in history:
        ev = json.loads(text)
        if ev["EventType"] in (HE.ORCHESTRATOR_STARTED, HE.ORCHESTRATOR_COMPLETED):
            continue
        item = {"EventType": "".join(p.capitalize() for p in names[ev["EventType"]].split("_")),
                "Timestamp": ev["Timestamp"]}
        for key in ("EventId", "Name", "TaskScheduledId", "TimerId", "FireAt", "Reason",
                    "Details", "InstanceId"):
            if key in ev and ev[key] not in (None, -1):
                item[key] = ev[key]
        if show_output and ev.get("Result") is not None:
            item["Result"] = loads_or_none(ev["Result"])
        shown.append(item)
    return shown


# ==================================================================================================
# 4. Runtime API: LocalRuntime, the thread-safe facade (engine + SQLite + HTTP + timers)
# ==================================================================================================
# The HTTP side lives in ``local_http.py``, which imports from this module; it is imported lazily
# (``_http_module()``) so that this module never imports it at import time.
def _http_module() -> Any:
    """``local_http``, imported on first use (it imports this module, so not at import time)."""
    import local_http

    return local_http


class RuntimeConfigError(EngineError):
    """The runtime was configured in a way it refuses to run (e.g. open non-loopback bind)."""


class OrchestrationTimeout(EngineError):
    """``wait_for`` gave up before the instance finished."""


class RuntimeNotStarted(EngineError):
    """The runtime must be started (or used as a context manager) first."""


class _SharedLoop:
    """One background event loop per process for every runtime.

    The SDK client's global aiohttp session binds to the first loop that uses it, so HTTP
    functions, timers and test-side SDK client calls all run on this loop.
    """

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="durable-runtime",
                                          daemon=True)
                thread.start()
                cls._loop = loop
            return cls._loop


@dataclass(frozen=True)
class InstancePage:
    """One page of ``list_instances``; pass ``continuation_token`` back for the next."""

    instances: list[dict[str, Any]]
    continuation_token: str | None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalRuntime:
    """The embedded host: engine + SQLite + HTTP + timers, on a background event loop.

    ``app``: a ``df.DFApp`` or a ``"module:attr"`` / ``"path/file.py:attr"`` string.
    ``db_path``: the SQLite task hub file (created if missing; reused to resume after a crash).
    ``host``/``port``: where HTTP listens (port 0 picks a free port; see ``base_url``).
    ``max_activity_workers``: like host.json ``maxConcurrentActivityFunctions`` (default: CPUs).
    ``function_keys`` (name → key) / ``master_key``: enable key checks as on Azure; without
    keys nothing is checked and only loopback hosts are allowed.
    ``settings``: app settings for ``%NAME%`` timer schedules (the environment is the fallback).
    ``activity_pool``: ``"thread"`` (default) or ``"process"`` (spawned workers that import
    the app when it is given as an import string, else forked workers; Linux).
    ``run_timers``: fire timer triggers on their schedules (``fire_timer`` works regardless).
    All methods are thread-safe; they run on the runtime's loop.
    """

    def __init__(self, app: Any, *, db_path: str | os.PathLike[str], host: str = "127.0.0.1",
                 port: int = 7071, max_activity_workers: int | None = None,
                 function_keys: Mapping[str, str] | None = None, master_key: str | None = None,
                 task_hub: str = "LocalTaskHub", settings: Mapping[str, str] | None = None,
                 activity_pool: str = "thread", run_timers: bool = True,
                 route_prefix: str = "api") -> None:
        self.app_ref = app if isinstance(app, str) else None
        self.app = load_app(app)
        self.index = index_app(self.app)
        self.db_path = str(db_path)
        self.host = host
        self.port = port
        self.max_activity_workers = max_activity_workers or os.cpu_count() or 1
        self.keys = _http_module().Keys.build(function_keys, master_key)
        if not self.keys.configured and not is_loopback(host):
            raise RuntimeConfigError(
                f"refusing to listen on {host} without function keys; bind to 127.0.0.1")
        self.task_hub = task_hub
        self.settings = dict(settings or {})
        self.activity_pool = activity_pool
        self.run_timers = run_timers
        self.route_prefix = route_prefix
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Engine | None = None
        self._http: local_http.DurableHttp | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "LocalRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalRuntime":
        self._loop = _SharedLoop.get()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop = None

    async def _start(self) -> None:
        store = Store(self.db_path)
        self._engine = Engine(self.index, store, max_activity_workers=self.max_activity_workers,
                              activity_pool=self.activity_pool, app_ref=self.app_ref)
        self._http = _http_module().DurableHttp(self._engine, self.index, self.keys,
                                                self.task_hub, self.route_prefix)
        self._runner = web.AppRunner(self._http.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        shown_host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        self._http.base_url = f"http://{shown_host}:{bound_port}"
        self._tasks.append(asyncio.get_running_loop().create_task(self._engine.run()))
        if self.run_timers:
            for timer in self.index.timers.values():
                try:
                    schedule = CronSchedule.parse(
                        resolve_setting(timer.schedule, self.settings))
                except InvalidSchedule as err:
                    logger.error("timer function %s is in error and will not fire: %s",
                                 timer.name, err)
                    continue
                self._tasks.append(asyncio.get_running_loop().create_task(
                    self._timer_loop(timer, schedule)))
        logger.info("embedded Durable runtime on %s (db %s, %d %s workers)",
                    self._http.base_url, self.db_path, self.max_activity_workers,
                    self.activity_pool)

    async def _stop(self) -> None:
        if self._engine is not None:
            self._engine.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - report, but finish shutting down
                logger.exception("background task failed")
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._engine is not None:
            self._engine.store.close()

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._engine

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._http.base_url

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the runtime's loop (use this for SDK client calls in tests)."""
        if self._loop is None:
            raise RuntimeNotStarted("start the runtime first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def on_loop() -> Any:
            return fn(*args, **kwargs)
        return self.run_coroutine(on_loop())

    def durable_client_binding(self) -> str:
        """The durableClient binding JSON the extension would hand an HTTP/timer function."""
        if self._http is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._http.binding_json()

    # -- management -----------------------------------------------------------------------------
    def start_new(self, name: str, input: Any = None, instance_id: str | None = None) -> str:
        input_json = None if input is None else json.dumps(df_dumps(input))
        return str(self._call(self.engine.create_instance, name, instance_id, input_json))

    def get_status(self, instance_id: str, show_history: bool = False,
                   show_history_output: bool = False) -> dict[str, Any] | None:
        return self._call(self.engine.status, instance_id, show_history, show_history_output)

    def wait_for(self, instance_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the instance is Completed/Failed/Terminated; returns its status."""
        try:
            self.run_coroutine(self.engine.wait_finished(instance_id), timeout)
        except (TimeoutError, concurrent.futures.TimeoutError) as err:
            status = self.get_status(instance_id)
            raise OrchestrationTimeout(
                f"{instance_id} not finished after {timeout}s: {status}") from err
        status = self.get_status(instance_id)
        if status is None:
            raise InstanceNotFound(instance_id)
        return status

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Raise an event; the orchestrator receives ``data`` (serialised once, like .NET)."""
        self._call(self.engine.raise_event, instance_id, event_name,
                   None if data is None else df_dumps(data))

    def terminate(self, instance_id: str, reason: str = "") -> None:
        self._call(self.engine.terminate, instance_id, reason)

    def suspend(self, instance_id: str, reason: str = "") -> None:
        self._call(self.engine.suspend, instance_id, reason)

    def resume(self, instance_id: str, reason: str = "") -> None:
        self._call(self.engine.resume, instance_id, reason)

    def purge(self, instance_id: str) -> int:
        return int(self._call(self.engine.purge, instance_id))

    def restart(self, instance_id: str, new_instance_id: bool = True) -> str:
        return str(self._call(self.engine.restart, instance_id, new_instance_id))

    def list_instances(self, *, runtime_status: Sequence[str] | None = None,
                       created_from: datetime | None = None, created_to: datetime | None = None,
                       instance_id_prefix: str | None = None, page_size: int | None = 100,
                       continuation_token: str | None = None) -> InstancePage:
        page, token = self._call(
            _http_module().list_page, self.engine, statuses=list(runtime_status or []) or None,
            created_from=iso(created_from) if created_from else None,
            created_to=iso(created_to) if created_to else None, prefix=instance_id_prefix,
            page_size=page_size, continuation_token=continuation_token)
        return InstancePage(page, token)

    def signal_entity(self, name: str, key: str, operation: str, input: Any = None) -> None:
        input_text = None if input is None else json.dumps(df_dumps(input))
        self._call(self.engine.signal_entity, entity_id_of(name, key), operation, input_text)

    def read_entity(self, name: str, key: str) -> tuple[bool, Any]:
        """(exists, state) of an entity; state decoded from its stored JSON."""
        exists, state = self._call(self.engine.read_entity, entity_id_of(name, key))
        return exists, (json.loads(state) if exists and state is not None else None)

    # -- timers ---------------------------------------------------------------------------------
    def fire_timer(self, name: str, past_due: bool = False) -> Any:
        """Invoke a timer-triggered function now (as one tick) and return its result."""
        timer = self.index.timers.get(name.lower())
        if timer is None:
            raise UnknownFunction(f"no timer function named {name!r}")
        return self.run_coroutine(self._invoke_timer(timer, past_due))

    async def _invoke_timer(self, timer: TimerFunction, past_due: bool) -> Any:
        kwargs: dict[str, Any] = {timer.param: TimerRequest(past_due=past_due)}
        if timer.client_param and self._http is not None:
            kwargs[timer.client_param] = self._http.binding_json()
        kwargs = with_context(timer.fn, timer.name, kwargs)
        return await _http_module().call_user_function(timer.fn, kwargs)

    async def _timer_loop(self, timer: TimerFunction, schedule: CronSchedule) -> None:
        if timer.run_on_startup:
            await self._timer_tick(timer, False)
        while True:
            now = datetime.now(timezone.utc)
            due = schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            await self._timer_tick(timer, False)

    async def _timer_tick(self, timer: TimerFunction, past_due: bool) -> None:
        try:
            await self._invoke_timer(timer, past_due)
        except Exception:  # noqa: BLE001 - a failing tick is logged, the schedule continues
            logger.exception("timer function %s failed", timer.name)


# ==================================================================================================
# 5. CLI: ``python local_runtime.py serve``
# ==================================================================================================
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local_runtime.py",
                                     description="Embedded Durable Functions runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the app over HTTP until interrupted")
    serve.add_argument("--app", default="function_app:app", help="'module:attr' or 'file.py:attr'")
    serve.add_argument("--db", default="data/durable.sqlite", help="SQLite task hub file")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--workers", type=int, default=None,
                       help="maxConcurrentActivityFunctions (default: CPU count)")
    serve.add_argument("--activity-pool", choices=("thread", "process"), default="thread")
    serve.add_argument("--function-key", action="append", default=[],
                       help="NAME=KEY function key (repeatable); enables key checks")
    serve.add_argument("--master-key", default=None)
    serve.add_argument("--log-level", default="INFO")
    return parser


@dataclass(frozen=True)
class HostSettings:
    """What ``serve`` takes from host.json and local.settings.json, as Core Tools would."""

    max_activity_workers: int | None = None
    task_hub: str = "LocalTaskHub"
    route_prefix: str = "api"
    values: Mapping[str, str] | None = None


def read_host_settings(directory: str | os.PathLike[str]) -> HostSettings:
    """host.json (durableTask.maxConcurrentActivityFunctions, hubName, http.routePrefix) and
    local.settings.json ``Values``; missing files give the defaults."""
    host: dict[str, Any] = {}
    values: dict[str, str] = {}
    host_path = os.path.join(directory, "host.json")
    settings_path = os.path.join(directory, "local.settings.json")
    if os.path.exists(host_path):
        with open(host_path, encoding="utf-8") as handle:
            host = json.load(handle)
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as handle:
            values = {k: str(v) for k, v in json.load(handle).get("Values", {}).items()}
    extensions = host.get("extensions", {})
    durable = extensions.get("durableTask", {})
    workers = durable.get("maxConcurrentActivityFunctions")
    hub = str(durable.get("hubName") or "LocalTaskHub")
    try:
        hub = resolve_setting(hub, values)
    except InvalidSchedule:
        logger.warning("task hub setting %s is not set; using LocalTaskHub", hub)
        hub = "LocalTaskHub"
    return HostSettings(
        max_activity_workers=int(workers) if workers else None,
        task_hub=hub,
        route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")),
        values=values)


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    sys.path.insert(0, os.getcwd())
    host_settings = read_host_settings(os.getcwd())
    for key, value in (host_settings.values or {}).items():
        os.environ.setdefault(key, value)
    keys = dict(k.split("=", 1) for k in args.function_key)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    runtime = LocalRuntime(args.app, db_path=args.db, host=args.host, port=args.port,
                           max_activity_workers=args.workers or host_settings.max_activity_workers,
                           function_keys=keys or None, master_key=args.master_key,
                           activity_pool=args.activity_pool, task_hub=host_settings.task_hub,
                           route_prefix=host_settings.route_prefix,
                           settings=host_settings.values)
    with runtime:
        print(f"listening on {runtime.base_url}", flush=True)
        stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    # Run the CLI from the imported module, not from ``__main__``: ``local_http`` imports
    # ``local_runtime``, and one copy of the engine's classes must serve both.
    import local_runtime

    sys.exit(local_runtime.main())
