"""Embedded Durable runtime: run the app's orchestrations on one machine, durably.

A one-machine host playing the Durable Task extension's role, so the same ``function_app.py``
runs here and on Azure. This module is the facade (``LocalRuntime``) and the CLI (``serve``);
the pieces, in dependency order:

- ``local_store``: the SQLite task hub.
- ``local_functions``: loading and indexing the app, its triggers and bindings; NCRONTAB.
- ``local_state``: history events, the live-instance mirror, status shapes, error conditions.
- ``local_bindings``: blob input/output bindings (host-side I/O).
- ``local_activities``: invoking activities (threads or processes, log forwarding).
- ``local_callhttp``: ``call_http`` (the built-in HTTP activity, 202 polling, token sources).
- ``local_actions``, ``local_entities``, ``local_engine``: the scheduler.
- ``local_management``: client operations (status, purge, rewind, ...).
- ``local_webhooks``, ``local_http``: the Durable HTTP API, the public and RPC listeners.
- ``local_triggers``: timer triggers and the Event Grid emulation.

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
import errno
import ipaddress
import json
import logging
import os
from pathlib import Path
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Coroutine, Mapping, TypeVar

from aiohttp import web
from azure.functions._durable_functions import df_dumps

from local_bindings import (BindingError, BlobConnections, InvalidConnection,
                            MissingConnection, default_blob_store)
from local_callhttp import DEFAULT_POLL_MS
from local_engine import Engine
from local_files import FILES_PREFIX
from local_functions import (AppImportError, AppRefused, CronSchedule, DiscoveryError,
                             FunctionIndex, InvalidSchedule, UnsupportedBinding, index_app,
                             load_app, resolve_setting)
from local_http import DEFAULT_MAX_BODY, DurableHttp, Keys
from local_management import Management
from local_state import (EngineError, InstanceAlreadyRunning, InstanceNotFailed,
                         InstanceNotFound, InstanceNotRunning, InstanceStillRunning,
                         InvalidInstanceId, RewindImpossible, RuntimeConfigError,
                         UnknownFunction, UnsupportedOperation, entity_id_of, iso)
from local_store import Store
from local_triggers import BlobEventSource, TriggerHost

__all__ = [
    "AppImportError", "AppRefused", "BindingError", "CronSchedule", "DiscoveryError", "Engine",
    "EngineError", "FunctionIndex", "HostSettings", "InstanceAlreadyRunning",
    "InstanceNotFailed", "InstanceNotFound", "InstanceNotRunning", "InstanceStillRunning",
    "InvalidConnection", "InvalidInstanceId", "InvalidSchedule", "LocalRuntime",
    "MissingConnection", "OrchestrationTimeout", "PortUnavailable", "RewindImpossible",
    "RuntimeConfigError", "RuntimeNotStarted", "UnknownFunction", "UnsupportedBinding",
    "UnsupportedOperation", "index_app", "load_app", "read_host_settings", "resolve_setting",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class OrchestrationTimeout(EngineError):
    """``wait_for`` gave up before the instance finished."""


class RuntimeNotStarted(EngineError):
    """The runtime must be started (or used as a context manager) first."""


class PortUnavailable(RuntimeConfigError):
    """A listener cannot bind its address (the port is in use, or the address is not ours).

    ``option`` names the command-line option that chooses it (``--port`` or ``--rpc-port``)."""

    def __init__(self, message: str, *, port: int, option: str) -> None:
        super().__init__(message)
        self.port = port
        self.option = option


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


def checked_mounts(files: Mapping[str, str | os.PathLike[str]]) -> dict[str, Path]:
    """``files`` with each prefix normalised (no trailing '/'); RuntimeConfigError for a prefix
    outside ``/files``, one inside another, or a directory that does not exist."""
    mounts: dict[str, Path] = {}
    for prefix, directory in files.items():
        clean = "/" + "/".join(part for part in str(prefix).split("/") if part)
        parts = clean.split("/")[1:]
        if parts[:1] != [FILES_PREFIX.strip("/")] or any(p in (".", "..") for p in parts):
            raise RuntimeConfigError(f"files: mount prefix {prefix!r} must be {FILES_PREFIX} or "
                                     f"lie below it (e.g. {FILES_PREFIX}/storage)")
        if not Path(directory).is_dir():
            raise RuntimeConfigError(f"files: {str(directory)!r} (for {clean}) is not a directory")
        mounts[clean] = Path(directory)
    for prefix in mounts:
        inner = [other for other in mounts if other != prefix and other.startswith(prefix + "/")]
        if inner:
            raise RuntimeConfigError(f"files: mount {inner[0]} lies inside mount {prefix}; "
                                     "give each directory its own prefix")
    return mounts


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalRuntime:
    """The embedded host: engine + SQLite + HTTP + triggers, on a background event loop.

    ``app``: a ``df.DFApp`` or a ``"module:attr"`` / ``"path/file.py:attr"`` string; an app the
    Python worker would refuse at load stops it here (``AppRefused``), as does a trigger or
    binding the runtime cannot run (``UnsupportedBinding``) and a blob binding whose
    ``connection`` names no storage account (``MissingConnection`` / ``InvalidConnection``),
    each naming the function.
    ``db_path``: the SQLite task hub file (created if missing; reused to resume after a crash).
    ``host``/``port``: the public listener (port 0 picks a free port; see ``base_url``).
    ``rpc_port``: the loopback-only listener of the SDK client's RPC endpoints (0: a free port;
    the extension uses 17071; see ``rpc_url``).
    ``max_activity_workers``: like host.json ``maxConcurrentActivityFunctions`` (default: CPUs).
    ``function_keys`` (name → key) / ``master_key`` / ``system_key``: enable key checks as on
    Azure (a ``durabletask_extension`` entry of ``function_keys`` is the system key; generated if
    absent); empty keys are refused. Without keys nothing is checked and only loopback hosts
    are allowed.
    ``settings``: app settings for ``%NAME%`` timer schedules and blob bindings' ``connection``
    (the environment is the fallback; see ``local_bindings``).
    ``activity_pool``: ``"thread"`` (default) or ``"process"`` (spawned workers that import
    the app when it is given as an import string, else forked workers; Linux): then
    ``max_activity_workers`` processes, each running up to ``activity_threads`` activities at
    once on its own threads (as the Python worker runs sync functions on a thread pool; default 1).
    ``run_timers``: fire timer triggers on their schedules (``fire_timer`` works regardless).
    ``blob_store``: the ``storage.BlobStore`` the Event Grid emulation watches (default: the
    app's own, from its settings, built when first needed). Blob bindings never use it: they
    write to the account their ``connection`` names, as on Azure.
    ``event_grid_containers`` / ``event_grid_poll_interval``: watch these containers of the blob
    store and deliver blob events to the app's Event Grid functions (default: none; 1 s).
    ``credential``: token credential for call_http token sources (default:
    ``DefaultAzureCredential``) and identity-based blob binding connections (default: built from
    the connection's settings, as the host builds it). ``http_poll_ms``: call_http's wait
    between 202 polls when the answer has no Retry-After (host.json
    ``httpSettings.defaultAsyncRequestSleepTimeMilliseconds``).
    ``max_request_body``: public listener's request body limit in bytes (413 above it).
    ``files``: URL prefix → local directory served like blob storage (Range, ETag, CORS; see
    ``local_files``), e.g. the local store and the static catalog under ``/files``. Prefixes
    live under ``/files`` (so no mount shadows the app's routes or the webhooks), none inside
    another, and each directory must exist (``RuntimeConfigError`` otherwise).
    All methods are thread-safe; they run on the runtime's loop.
    """

    def __init__(self, app: Any, *, db_path: str | os.PathLike[str], host: str = "127.0.0.1",
                 port: int = 7071, rpc_port: int = 0, max_activity_workers: int | None = None,
                 function_keys: Mapping[str, str] | None = None, master_key: str | None = None,
                 system_key: str | None = None, task_hub: str = "LocalTaskHub",
                 settings: Mapping[str, str] | None = None, activity_pool: str = "thread",
                 run_timers: bool = True, route_prefix: str = "api", blob_store: Any = None,
                 event_grid_containers: Sequence[str] = (),
                 event_grid_poll_interval: float = 1.0, credential: Any = None,
                 http_poll_ms: int = DEFAULT_POLL_MS,
                 max_request_body: int = DEFAULT_MAX_BODY,
                 files: Mapping[str, str | os.PathLike[str]] | None = None,
                 activity_threads: int = 1) -> None:
        self.app_ref = app if isinstance(app, str) else None
        self.files = checked_mounts(files or {})
        self.app = load_app(app)
        self.index = index_app(self.app)
        self.settings = dict(settings or {})
        self.credential = credential
        self.connections = BlobConnections(self.settings, credential)
        self.connections.check(self.index.blob_bindings())
        self.db_path = str(db_path)
        self.host = host
        self.port = port
        self.rpc_port = rpc_port
        self.max_activity_workers = max_activity_workers or os.cpu_count() or 1
        self.keys = Keys.build(function_keys, master_key, system_key)
        if not self.keys.configured and not is_loopback(host):
            raise RuntimeConfigError(
                f"refusing to listen on {host} without function keys; bind to 127.0.0.1")
        if max_request_body < 1:
            raise RuntimeConfigError("max_request_body must be a positive number of bytes")
        if event_grid_poll_interval <= 0:
            raise RuntimeConfigError("event_grid_poll_interval must be positive seconds")
        self.task_hub = task_hub
        self.activity_pool = activity_pool
        if activity_threads < 1:
            raise RuntimeConfigError("activity_threads must be at least 1")
        self.activity_threads = activity_threads
        self.run_timers = run_timers
        self.route_prefix = route_prefix
        self._blob_store = blob_store
        self.event_grid_containers = list(event_grid_containers)
        self.event_grid_poll_interval = event_grid_poll_interval
        self.http_poll_ms = http_poll_ms
        self.max_request_body = max_request_body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Engine | None = None
        self._management: Management | None = None
        self._http: DurableHttp | None = None
        self._triggers: TriggerHost | None = None
        self.event_source: BlobEventSource | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "LocalRuntime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalRuntime":
        self._loop = _SharedLoop.get()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
            self._engine.pool.wait_started(timeout=120)  # ready once its workers are (as the host)
        except BaseException:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
            self._loop = None
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop = None

    @property
    def blob_store(self) -> Any:
        """The blob store the Event Grid emulation watches (the app's own unless one was given)."""
        if self._blob_store is None:
            self._blob_store = default_blob_store()
        return self._blob_store

    async def _start(self) -> None:
        store = self.blob_store if self.event_grid_containers else None
        credential = self.credential
        self._engine = Engine(
            self.index, Store(self.db_path), max_activity_workers=self.max_activity_workers,
            activity_pool=self.activity_pool, app_ref=self.app_ref,
            connections=self.connections,
            activity_threads=self.activity_threads,
            credential=(lambda: credential) if credential is not None else None,
            http_poll_ms=self.http_poll_ms)
        self._management = Management(self._engine)
        http = DurableHttp(self._management, self.index, self.keys, self.task_hub,
                           self.route_prefix, self.max_request_body, self.connections,
                           self.files)
        self._http = http
        self._engine.client_binding = lambda: http.binding_json(with_key=True)
        public = web.AppRunner(http.public_application(), access_log=None)
        rpc = web.AppRunner(http.rpc_application(), access_log=None)
        self._runners = [public, rpc]
        for runner in self._runners:
            await runner.setup()
        await _listen(public, self.host, self.port, "--port")
        await _listen(rpc, "127.0.0.1", self.rpc_port, "--rpc-port")
        shown_host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        http.base_url = f"http://{shown_host}:{public.addresses[0][1]}"
        http.rpc_url = f"http://127.0.0.1:{rpc.addresses[0][1]}"
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._engine.run()))
        self._triggers = TriggerHost(self.index, connections=self.connections,
                                     client_binding=self._engine.client_binding)
        if self.run_timers:
            self._start_timers(loop)
        self._start_event_grid(loop, store)
        logger.info("embedded Durable runtime on %s, RPC on %s (db %s, %d %s workers)",
                    http.base_url, http.rpc_url, self.db_path, self.max_activity_workers,
                    self.activity_pool)

    def _start_timers(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._triggers is not None
        for timer in self.index.timers.values():
            try:
                schedule = CronSchedule.parse(resolve_setting(timer.schedule, self.settings))
            except InvalidSchedule as err:
                logger.error("timer function %s is in error and will not fire: %s",
                             timer.name, err)
                continue
            self._tasks.append(loop.create_task(self._triggers.timer_loop(timer, schedule)))

    def _start_event_grid(self, loop: asyncio.AbstractEventLoop, store: Any) -> None:
        if not self.event_grid_containers:
            return
        assert self._triggers is not None and self._engine is not None
        functions = list(self.index.event_grid.values())
        if not functions:
            logger.warning("Event Grid emulation: containers %s configured, but the app has no "
                           "event_grid_trigger function; not watching",
                           ", ".join(self.event_grid_containers))
            return
        self.event_source = BlobEventSource(
            self._engine.store, store, self.event_grid_containers, functions=functions,
            triggers=self._triggers, poll_interval=self.event_grid_poll_interval)
        self._tasks.append(loop.create_task(self.event_source.run()))

    async def _stop(self) -> None:
        if self.event_source is not None:  # first, while the engine still takes its starts
            await self.event_source.stop()
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
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._engine is not None:
            self._engine.store.close()
            self._engine = None

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._engine

    @property
    def management(self) -> Management:
        if self._management is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._management

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._http.base_url

    @property
    def rpc_url(self) -> str:
        """The loopback RPC listener (the binding's ``rpcBaseUrl`` is this + /durabletask/)."""
        if self._http is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._http.rpc_url

    @property
    def system_key(self) -> str | None:
        return self.keys.system

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
        """The durableClient binding JSON the extension would hand a function (with the key)."""
        if self._http is None:
            raise RuntimeNotStarted("start the runtime first")
        return self._http.binding_json(with_key=True)

    # -- management -----------------------------------------------------------------------------
    def start_new(self, name: str, input: Any = None, instance_id: str | None = None) -> str:
        input_json = None if input is None else json.dumps(df_dumps(input))
        return str(self._call(self.engine.create_instance, name, instance_id, input_json))

    def get_status(self, instance_id: str, show_history: bool = False,
                   show_history_output: bool = False, show_input: bool = True
                   ) -> dict[str, Any] | None:
        return self._call(self.management.status, instance_id, show_history,
                          show_history_output, show_input)

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
        self._call(self.management.raise_event, instance_id, event_name,
                   None if data is None else df_dumps(data))

    def terminate(self, instance_id: str, reason: str = "") -> None:
        self._call(self.management.terminate, instance_id, reason)

    def suspend(self, instance_id: str, reason: str = "") -> None:
        self._call(self.management.suspend, instance_id, reason)

    def resume(self, instance_id: str, reason: str = "") -> None:
        self._call(self.management.resume, instance_id, reason)

    def rewind(self, instance_id: str, reason: str = "") -> None:
        self._call(self.management.rewind, instance_id, reason)

    def purge(self, instance_id: str) -> int:
        return int(self._call(self.management.purge, instance_id))

    def restart(self, instance_id: str, new_instance_id: bool = True) -> str:
        return str(self._call(self.management.restart, instance_id, new_instance_id))

    def list_instances(self, *, runtime_status: Sequence[str] | None = None,
                       created_from: datetime | None = None, created_to: datetime | None = None,
                       instance_id_prefix: str | None = None, page_size: int | None = 100,
                       continuation_token: str | None = None) -> InstancePage:
        page, token = self._call(
            self.management.list_page, statuses=list(runtime_status or []) or None,
            created_from=iso(created_from) if created_from else None,
            created_to=iso(created_to) if created_to else None, prefix=instance_id_prefix,
            page_size=page_size, continuation_token=continuation_token)
        return InstancePage(page, token)

    def signal_entity(self, name: str, key: str, operation: str, input: Any = None) -> None:
        input_text = None if input is None else json.dumps(df_dumps(input))
        self._call(self.management.signal_entity, entity_id_of(name, key), operation,
                   input_text)

    def read_entity(self, name: str, key: str) -> tuple[bool, Any]:
        """(exists, state) of an entity; state decoded from its stored JSON."""
        exists, state = self._call(self.management.read_entity, entity_id_of(name, key))
        return exists, (json.loads(state) if exists and state is not None else None)

    # -- triggers -------------------------------------------------------------------------------
    def fire_timer(self, name: str, past_due: bool = False) -> Any:
        """Invoke a timer-triggered function now (as one tick) and return its result."""
        timer = self.index.timers.get(name.lower())
        if timer is None:
            raise UnknownFunction(f"no timer function named {name!r}")
        if self._triggers is None:
            raise RuntimeNotStarted("start the runtime first")
        return self.run_coroutine(self._triggers.fire_timer(timer, past_due))


async def _listen(runner: web.AppRunner, host: str, port: int, option: str) -> None:
    """Bind one listener; PortUnavailable (one line naming the port) when the address is taken."""
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as err:
        reason = ("is already in use" if err.errno == errno.EADDRINUSE
                  else f"cannot be bound ({err.strerror or err})")
        raise PortUnavailable(f"port {port} on {host} {reason}", port=port,
                              option=option) from None


# ==================================================================================================
# CLI: ``python local_runtime.py serve``
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
    serve.add_argument("--rpc-port", type=int, default=0,
                       help="loopback port of the SDK client's RPC endpoints (default: a free "
                            "port; the extension uses 17071)")
    serve.add_argument("--workers", type=int, default=None,
                       help="maxConcurrentActivityFunctions (default: host.json, else CPUs)")
    serve.add_argument("--activity-pool", choices=("thread", "process"), default="thread")
    serve.add_argument("--activity-threads", type=int, default=1,
                       help="activities each worker process runs at once (process pool)")
    serve.add_argument("--function-key", action="append", default=[],
                       help="NAME=KEY function key (repeatable); enables key checks; the name "
                            "durabletask_extension sets the system key")
    serve.add_argument("--master-key", default=None)
    serve.add_argument("--event-grid-container", action="append", default=[],
                       help="watch this container of the app's blob store and deliver blob "
                            "events to its Event Grid functions (repeatable)")
    serve.add_argument("--event-grid-interval", type=float, default=1.0,
                       help="seconds between polls of the watched containers")
    serve.add_argument("--max-request-body", type=int, default=DEFAULT_MAX_BODY,
                       help="largest request body on the public listener, bytes")
    serve.add_argument("--files", action="append", default=[], metavar="PREFIX=DIR",
                       help="serve DIR under the URL PREFIX (/files or below it) like blob "
                            "storage (Range, ETag, CORS); repeatable, e.g. "
                            "/files/storage=.local/storage")
    serve.add_argument("--log-level", default="INFO")
    return parser


@dataclass(frozen=True)
class HostSettings:
    """What ``serve`` takes from host.json and local.settings.json, as Core Tools would."""

    max_activity_workers: int | None = None
    task_hub: str = "LocalTaskHub"
    route_prefix: str = "api"
    values: Mapping[str, str] | None = None
    http_poll_ms: int = DEFAULT_POLL_MS


def read_host_settings(directory: str | os.PathLike[str]) -> HostSettings:
    """host.json (durableTask.maxConcurrentActivityFunctions, hubName,
    httpSettings.defaultAsyncRequestSleepTimeMilliseconds, http.routePrefix) and
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
    poll = (durable.get("httpSettings") or {}).get("defaultAsyncRequestSleepTimeMilliseconds")
    return HostSettings(
        max_activity_workers=int(workers) if workers else None,
        task_hub=hub,
        route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")),
        values=values,
        http_poll_ms=int(poll) if poll is not None else DEFAULT_POLL_MS)


def parse_function_keys(items: Sequence[str]) -> dict[str, str]:
    """NAME=KEY items; RuntimeConfigError for an item without '=' (empty keys: ``Keys``)."""
    keys: dict[str, str] = {}
    for item in items:
        name, sep, key = item.partition("=")
        if not sep or not name.strip():
            raise RuntimeConfigError(f"--function-key {item!r}: expected NAME=KEY")
        keys[name.strip()] = key
    return keys


def parse_mounts(items: Sequence[str]) -> dict[str, str]:
    """PREFIX=DIR items of ``--files``; RuntimeConfigError for an item without '='."""
    mounts: dict[str, str] = {}
    for item in items:
        prefix, sep, directory = item.partition("=")
        if not sep or not prefix.strip() or not directory.strip():
            raise RuntimeConfigError(f"--files {item!r}: expected PREFIX=DIR, e.g. "
                                     f"{FILES_PREFIX}/storage=.local/storage")
        mounts[prefix.strip()] = directory.strip()
    return mounts


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    sys.path.insert(0, os.getcwd())
    host_settings = read_host_settings(os.getcwd())
    for key, value in (host_settings.values or {}).items():
        os.environ.setdefault(key, value)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runtime = LocalRuntime(
            args.app, db_path=args.db, host=args.host, port=args.port, rpc_port=args.rpc_port,
            max_activity_workers=args.workers or host_settings.max_activity_workers,
            function_keys=parse_function_keys(args.function_key) or None,
            master_key=args.master_key, activity_pool=args.activity_pool,
            activity_threads=args.activity_threads,
            task_hub=host_settings.task_hub, route_prefix=host_settings.route_prefix,
            settings=host_settings.values, event_grid_containers=args.event_grid_container,
            event_grid_poll_interval=args.event_grid_interval,
            http_poll_ms=host_settings.http_poll_ms, max_request_body=args.max_request_body,
            files=parse_mounts(args.files))
        runtime.start()
    except PortUnavailable as err:
        print(f"local_runtime.py serve: {err}; stop what holds it or pass another {err.option}",
              file=sys.stderr, flush=True)
        return 2
    except (EngineError, DiscoveryError, BindingError) as err:
        print(f"local_runtime.py serve: {err}", file=sys.stderr, flush=True)
        return 2
    try:
        print(f"listening on {runtime.base_url}", flush=True)
        for prefix, directory in runtime.files.items():
            print(f"  {runtime.base_url}{prefix}/  serves {directory}", flush=True)
        stop.wait()
    finally:
        runtime.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    # Run the CLI from the imported module, not from ``__main__``, so one copy of the classes
    # serves every module that imports ``local_runtime``.
    import local_runtime

    sys.exit(local_runtime.main())
