"""Embedded Durable runtime: run the app's orchestrations on one machine, durably.

A one-machine host playing the Durable Task extension's role, so the same ``function_app.py``
runs here and on Azure. The engine is in ``local_engine.py``, persistence in ``local_store.py``,
discovery in ``local_functions.py``, the HTTP side in ``local_http.py``.

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
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Coroutine, Mapping, Sequence, TypeVar

from aiohttp import web
from azure.functions._durable_functions import df_dumps
from azure.functions.timer import TimerRequest

import local_engine
import local_functions
import local_http
import local_store
from local_engine import (  # noqa: F401 - re-exported error conditions
    Engine, EngineError, InstanceAlreadyRunning, InstanceNotFound, InstanceNotRunning,
    InstanceStillRunning, UnknownFunction, entity_id_of, iso,
)
from local_functions import AppImportError, CronSchedule, TimerFunction  # noqa: F401

logger = logging.getLogger(__name__)

T = TypeVar("T")
TERMINAL = local_engine.TERMINAL


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
        self.app = local_functions.load_app(app)
        self.index = local_functions.index_app(self.app)
        self.db_path = str(db_path)
        self.host = host
        self.port = port
        self.max_activity_workers = max_activity_workers or os.cpu_count() or 1
        self.keys = local_http.Keys.build(function_keys, master_key)
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
        store = local_store.Store(self.db_path)
        self._engine = Engine(self.index, store, max_activity_workers=self.max_activity_workers,
                              activity_pool=self.activity_pool, app_ref=self.app_ref)
        self._http = local_http.DurableHttp(self._engine, self.index, self.keys, self.task_hub,
                                            self.route_prefix)
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
                        local_functions.resolve_setting(timer.schedule, self.settings))
                except local_functions.InvalidSchedule as err:
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
            local_http.list_page, self.engine, statuses=list(runtime_status or []) or None,
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
        kwargs = local_functions.with_context(timer.fn, timer.name, kwargs)
        return await local_http.call_user_function(timer.fn, kwargs)

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


# -- CLI -------------------------------------------------------------------------------------------
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
        hub = local_functions.resolve_setting(hub, values)
    except local_functions.InvalidSchedule:
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
    sys.exit(main())
