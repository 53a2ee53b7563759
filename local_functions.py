"""Embedded Durable runtime: what the Functions host learns from the app.

``index_app(app)`` calls ``app.get_functions()`` once per app object (a second call raises in the
SDK) and caches the result, so several runtimes can be created over the same app. Every trigger
and binding is checked here, at start-up: first as the Azure Functions Python worker checks it
when it loads the app (``local_load_checks``; what it refuses stops the runtime with
``AppRefused``), then the supported ones are described by small dataclasses and anything else
stops the runtime with ``UnsupportedBinding`` naming the function (no warning and silent
ignore). Also: six-field NCRONTAB schedules for timer triggers.

Supported triggers: orchestration, activity, entity, HTTP, timer, Event Grid. Supported other
bindings: the durable client (in any function but orchestrators and entities), blob input and
output (against the storage account their ``connection`` names, see ``local_bindings``), and the
HTTP output of an HTTP trigger.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import threading
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import azure.functions as func
from croniter import CroniterError, croniter

from local_load_checks import function_problem, module_problems


class DiscoveryError(Exception):
    """Base class of app loading and indexing errors."""


class AppImportError(DiscoveryError):
    """The 'module:attr' import string does not name an app object."""


class InvalidSchedule(DiscoveryError):
    """A timer schedule is not a six-field NCRONTAB expression."""


class UnsupportedBinding(DiscoveryError):
    """A function declares a trigger or binding the embedded runtime does not run."""


class AppRefused(DiscoveryError):
    """The Azure Functions Python worker would refuse the app at load (``local_load_checks``), so
    Azure would not start it: refused here at start-up too, naming each function and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the Python worker refuses this app at load, so Azure would not start "
                         "it: " + "; ".join(problems))
        self.problems = problems


SUPPORTED = ("triggers: orchestrationTrigger, activityTrigger, entityTrigger, httpTrigger, "
             "timerTrigger, eventGridTrigger; bindings: durableClient, blob (in/out), "
             "http (out, with httpTrigger)")


@dataclass(frozen=True)
class BlobBinding:
    """A blob input or output binding: ``path`` is 'container/name' with binding expressions.

    ``shape`` is how the value reaches the function (input) or is read back (output): an
    ``InputStream``, ``str`` or ``bytes`` parameter, or ``func.Out[...]``."""

    name: str
    path: str
    direction: str  # 'in' | 'out'
    shape: str      # 'stream' | 'str' | 'bytes' | 'out'
    connection: str = ""  # the app setting naming the storage account ('' = AzureWebJobsStorage)


@dataclass(frozen=True)
class Bindings:
    """The non-trigger bindings of one function."""

    client: str | None = None
    blobs: tuple[BlobBinding, ...] = ()

    @property
    def inputs(self) -> tuple[BlobBinding, ...]:
        return tuple(b for b in self.blobs if b.direction == "in")

    @property
    def outputs(self) -> tuple[BlobBinding, ...]:
        return tuple(b for b in self.blobs if b.direction == "out")


NO_BINDINGS = Bindings()


@dataclass(frozen=True)
class NamedFunction:
    """An orchestrator or entity: the SDK ``handle`` wrapper under its registered name."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class ActivityFunction:
    """An activity: the user function, the name of its trigger parameter, its bindings."""

    name: str
    fn: Callable[..., Any]
    param: str
    bindings: Bindings = NO_BINDINGS

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@dataclass(frozen=True)
class HttpFunction:
    """An HTTP-triggered function (async middleware when it has a durable client binding)."""

    name: str
    fn: Callable[..., Any]
    param: str
    route: str
    methods: tuple[str, ...] | None
    auth_level: str
    bindings: Bindings = NO_BINDINGS

    @property
    def client_param(self) -> str | None:
        return self.bindings.client


@dataclass(frozen=True)
class TimerFunction:
    """A timer-triggered function and its (unresolved) schedule."""

    name: str
    fn: Callable[..., Any]
    param: str
    schedule: str
    run_on_startup: bool
    bindings: Bindings = NO_BINDINGS

    @property
    def client_param(self) -> str | None:
        return self.bindings.client


@dataclass(frozen=True)
class EventGridFunction:
    """An Event Grid-triggered function (the runtime's Event Grid emulation feeds it)."""

    name: str
    fn: Callable[..., Any]
    param: str
    bindings: Bindings = NO_BINDINGS


@dataclass
class FunctionIndex:
    """Everything the runtime needs from the app, keyed case-insensitively."""

    orchestrators: dict[str, NamedFunction] = field(default_factory=dict)
    activities: dict[str, ActivityFunction] = field(default_factory=dict)
    entities: dict[str, NamedFunction] = field(default_factory=dict)
    http: list[HttpFunction] = field(default_factory=list)
    timers: dict[str, TimerFunction] = field(default_factory=dict)
    event_grid: dict[str, EventGridFunction] = field(default_factory=dict)

    def orchestrator(self, name: str) -> NamedFunction | None:
        return self.orchestrators.get(name.lower())

    def activity(self, name: str) -> ActivityFunction | None:
        return self.activities.get(name.lower())

    def entity(self, name: str) -> NamedFunction | None:
        return self.entities.get(name.lower())

    def blob_bindings(self) -> list[tuple[str, BlobBinding]]:
        """(function name, binding) of every blob input and output binding of the app."""
        functions = [*self.activities.values(), *self.http, *self.timers.values(),
                     *self.event_grid.values()]
        return [(f.name, b) for f in functions for b in f.bindings.blobs]


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


_INDEX_CACHE: dict[int, tuple[Any, "FunctionIndex | DiscoveryError"]] = {}
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
        app = getattr(module, attr)
    except (ImportError, AttributeError, FileNotFoundError) as err:
        raise AppImportError(f"cannot import app {app_or_ref!r}: {err}") from err
    problems = module_problems(module)
    if problems:
        raise AppRefused(problems)
    return app


def index_app(app: Any) -> FunctionIndex:
    """Index the app's functions once per app object: AppRefused for what the Python worker
    refuses at load, UnsupportedBinding for what the embedded runtime cannot run. A refusal is
    remembered too (the SDK's second ``get_functions()`` would report every name a duplicate)."""
    with _INDEX_LOCK:
        cached = _INDEX_CACHE.get(id(app))
        if cached is not None and cached[0] is app:
            if isinstance(cached[1], DiscoveryError):
                raise cached[1]
            return cached[1]
        try:
            index: FunctionIndex | DiscoveryError = _build_index(_app_functions(app))
        except DiscoveryError as err:
            index = err
        _INDEX_CACHE[id(app)] = (app, index)
        if isinstance(index, DiscoveryError):
            raise index
        return index


def _app_functions(app: Any) -> list[Any]:
    """``app.get_functions()`` as the worker calls it, its checks (a function without a trigger,
    two functions of one name) and the worker's own (``local_load_checks``) turned into
    AppRefused."""
    if not isinstance(app, func.FunctionRegister):
        raise AppRefused([f"{type(app).__name__} is not a function app (FunctionApp or DFApp); "
                          "the worker indexes only those (register a blueprint on one)"])
    try:
        functions = app.get_functions()
    except ValueError as err:
        raise AppRefused([str(err)]) from None
    problems = []
    for function in functions:
        problem = function_problem(function)
        if problem is not None:
            problems.append(f"function {function.get_function_name()!r}: {problem}")
    if problems:
        raise AppRefused(problems)
    return functions


def _enum_text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _direction(binding: Any) -> str:
    return "out" if _enum_text(getattr(binding, "direction", 0)) in ("1", "out", "OUT") else "in"


def _blob_shape(user_fn: Callable[..., Any], param: str, direction: str) -> str:
    if direction == "out":
        return "out"
    try:
        hints = typing.get_type_hints(user_fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: the worker's default applies
        hints = {}
    hint = hints.get(param)
    if hint is str:
        return "str"
    if hint in (bytes, bytearray):
        return "bytes"
    return "stream"


def _bindings(function: Any, name: str, kind: str, user_fn: Callable[..., Any]) -> Bindings:
    """The non-trigger bindings; UnsupportedBinding for anything the runtime cannot serve."""
    client: str | None = None
    blobs: list[BlobBinding] = []
    for binding in function.get_bindings():
        btype, bname = str(binding.type), str(binding.name)
        if btype == kind:
            continue
        if btype == "durableClient" and kind not in ("orchestrationTrigger", "entityTrigger"):
            client = bname
        elif btype == "blob" and kind not in ("orchestrationTrigger", "entityTrigger"):
            direction = _direction(binding)
            path = str(getattr(binding, "path", "") or "")
            if "/" not in path.strip("/"):
                raise UnsupportedBinding(
                    f"function {name!r}: blob binding {bname!r} has path {path!r}; it needs "
                    "'container/blob name'")
            blobs.append(BlobBinding(bname, path.strip("/"), direction,
                                     _blob_shape(user_fn, bname, direction),
                                     str(getattr(binding, "connection", "") or "")))
        elif btype == "http" and kind == "httpTrigger" and _direction(binding) == "out":
            continue
        else:
            raise UnsupportedBinding(
                f"function {name!r}: {btype} binding {bname!r} ({_direction(binding)}) with a "
                f"{kind} is not supported by the embedded runtime (supported {SUPPORTED})")
    return Bindings(client, tuple(blobs))


def _build_index(functions: list[Any]) -> FunctionIndex:
    index = FunctionIndex()
    for function in functions:
        trigger = function.get_trigger()
        name = function.get_function_name()
        user_fn = function.get_user_function()
        kind = str(trigger.type)
        if kind == "orchestrationTrigger":
            _bindings(function, name, kind, user_fn)
            name = getattr(trigger, "orchestration", None) or name
            index.orchestrators[name.lower()] = NamedFunction(name, user_fn)
        elif kind == "activityTrigger":
            bindings = _bindings(function, name, kind, user_fn)
            name = getattr(trigger, "activity", None) or name
            index.activities[name.lower()] = ActivityFunction(name, user_fn, trigger.name,
                                                              bindings)
        elif kind == "entityTrigger":
            _bindings(function, name, kind, user_fn)
            name = getattr(trigger, "entity_name", None) or name
            index.entities[name.lower()] = NamedFunction(name, user_fn)
        elif kind == "httpTrigger":
            methods = getattr(trigger, "methods", None)
            index.http.append(HttpFunction(
                name, user_fn, trigger.name, getattr(trigger, "route", None) or name,
                tuple(_enum_text(m).upper() for m in methods) if methods else None,
                _enum_text(getattr(trigger, "auth_level", None) or "function").lower(),
                _bindings(function, name, kind, user_fn)))
        elif kind == "timerTrigger":
            index.timers[name.lower()] = TimerFunction(
                name, user_fn, trigger.name, trigger.schedule,
                bool(getattr(trigger, "run_on_startup", False)),
                _bindings(function, name, kind, user_fn))
        elif kind == "eventGridTrigger":
            index.event_grid[name.lower()] = EventGridFunction(
                name, user_fn, trigger.name, _bindings(function, name, kind, user_fn))
        else:
            raise UnsupportedBinding(
                f"function {name!r}: trigger {kind} is not supported by the embedded runtime "
                f"(supported {SUPPORTED})")
    return index


# -- NCRONTAB ------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class CronSchedule:
    """A six-field NCRONTAB expression (second minute hour day month day-of-week), parsed and
    stepped by croniter (seconds first; day and weekday both hold, as in NCRONTAB)."""

    expression: str

    @classmethod
    def parse(cls, expression: str) -> "CronSchedule":
        if len(expression.split()) != 6:
            raise InvalidSchedule(f"NCRONTAB needs six fields, got {expression!r}")
        try:
            croniter(expression, second_at_beginning=True, day_or=False)
        except (CroniterError, ValueError) as err:
            raise InvalidSchedule(f"bad NCRONTAB {expression!r}: {err}") from err
        return cls(expression)

    def next_after(self, moment: datetime) -> datetime:
        """The first matching second strictly after ``moment``."""
        start = moment.replace(microsecond=0)
        found = croniter(self.expression, start, second_at_beginning=True, day_or=False, max_years_between_matches=5)
        try:
            return found.get_next(datetime)
        except CroniterError as err:
            raise InvalidSchedule("schedule never fires within five years") from err
