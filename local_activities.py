"""Embedded Durable runtime: invoking activities as the Python worker does, in a worker pool.

An activity receives its input through the SDK's activity trigger converter and returns its
result encoded by it; a durable client binding gets the binding JSON, blob bindings get the
content the host read (``local_bindings``), and blob outputs come back as bytes for the host to
write. A failure becomes ``TaskFailed`` with the extension's ``Reason`` and, in ``Details``, the
serialized exception (the extension serializes the .NET exception wrapping the worker's
RpcException; we write the same shape).

Pools: threads (like the worker's thread pool; ``async def`` activities run on the runtime's
event loop, as the worker runs them on its loop), or processes (spawned workers importing the
app by reference, else forked workers). Worker processes send their log records to the host
through a queue (``QueueHandler`` there, ``QueueListener`` here), so an activity's log lines and
a failing task's reason reach the host log in every pool mode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import logging.handlers
import itertools
import multiprocessing
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from azure.functions.durable_functions import ActivityTriggerConverter
from azure.functions.meta import Datum

from local_bindings import binding_kwargs, output_payloads
from local_functions import ActivityFunction, FunctionIndex, index_app, load_app, with_context

logger = logging.getLogger(__name__)

HRESULT_EXCEPTION = -2146233088


@dataclass
class ActivityOutcome:
    """What one activity invocation produced, in history-event terms (plus blob outputs)."""

    ok: bool
    result: str | None = None
    reason: str | None = None
    details: str | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    #: When the worker started and finished it (seconds since the epoch), and which worker
    #: (process/thread): the engine's ``ActivityTimings``. None for outcomes the host made.
    started: float | None = None
    finished: float | None = None
    worker: str | None = None

    def timed(self, started: float) -> "ActivityOutcome":
        self.started, self.finished = started, time.time()
        self.worker = f"{os.getpid()}/{threading.get_native_id()}"
        return self


def exception_details(err: BaseException) -> str:
    """``TaskFailed.Details`` as the extension writes it for an out-of-process function: the
    serialized exception with the worker's RpcException (message and Python stack) inside."""
    message = f"{type(err).__name__}: {err}"
    stack = "".join(traceback.format_tb(err.__traceback__))
    rpc = {
        "$type": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException, "
                 "Microsoft.Azure.WebJobs.Script",
        "ClassName": "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException",
        "Message": f"Result: Failure\nException: {message}\nStack: {stack}",
        "RemoteMessage": message, "RemoteStackTrace": stack,
        "RemoteTypeName": type(err).__name__, "IsUserException": False,
        "Data": None, "InnerException": None, "HResult": HRESULT_EXCEPTION, "Source": None,
    }
    return json.dumps({
        "$type": "System.Exception, System.Private.CoreLib", "ClassName": "System.Exception",
        "Message": message, "Data": None, "InnerException": rpc, "HelpURL": None,
        "StackTraceString": None, "RemoteStackTraceString": None, "RemoteStackIndex": 0,
        "ExceptionMethod": None, "HResult": HRESULT_EXCEPTION, "Source": None,
        "WatsonBuckets": None,
    })


def activity_failure(name: str, err: BaseException) -> ActivityOutcome:
    reason = f"Activity function '{name}' failed: {type(err).__name__}: {err}"
    logger.warning("%s\n%s", reason, "".join(traceback.format_tb(err.__traceback__)).rstrip())
    return ActivityOutcome(ok=False, reason=reason, details=exception_details(err))


def decode_activity_input(input_text: str | None) -> Any:
    """``ActivityTriggerConverter.decode`` on the input string (df_loads, raw-string fallback)."""
    if input_text is None:
        return None
    return ActivityTriggerConverter.decode(Datum(input_text, "string"), trigger_metadata=None)


def _kwargs(activity: ActivityFunction, input_text: str | None, client_json: str | None,
            blobs: dict[str, bytes | None] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    kwargs: dict[str, Any] = {activity.param: decode_activity_input(input_text)}
    if activity.bindings.client:
        kwargs[activity.bindings.client] = client_json
    blob_kwargs, outs = binding_kwargs(activity.bindings, blobs or {})
    kwargs.update(blob_kwargs)
    return with_context(activity.fn, activity.name, kwargs), outs


def _outcome(result: Any, outs: dict[str, Any]) -> ActivityOutcome:
    encoded = ActivityTriggerConverter.encode(result, expected_type=None)
    return ActivityOutcome(ok=True, result=str(encoded.value), outputs=output_payloads(outs))


def run_activity(activity: ActivityFunction, input_text: str | None,
                 client_json: str | None = None,
                 blobs: dict[str, bytes | None] | None = None) -> ActivityOutcome:
    """Invoke an activity as the worker does (in a pool thread or a worker process)."""
    started = time.time()
    try:
        kwargs, outs = _kwargs(activity, input_text, client_json, blobs)
        result = activity.fn(**kwargs)
        if asyncio.iscoroutine(result):
            result = _worker_loop().run_until_complete(_adopted(result))
        return _outcome(result, outs).timed(started)
    except Exception as err:  # noqa: BLE001 - user code failure becomes TaskFailed
        return activity_failure(activity.name, err).timed(started)


async def run_activity_async(activity: ActivityFunction, input_text: str | None,
                             client_json: str | None = None,
                             blobs: dict[str, bytes | None] | None = None) -> ActivityOutcome:
    """An ``async def`` activity on the runtime's own event loop."""
    started = time.time()
    try:
        kwargs, outs = _kwargs(activity, input_text, client_json, blobs)
        result = await _adopted(activity.fn(**kwargs))
        return _outcome(result, outs).timed(started)
    except Exception as err:  # noqa: BLE001 - user code failure becomes TaskFailed
        return activity_failure(activity.name, err).timed(started)


async def _adopted(coroutine: Any) -> Any:
    adopt_client_session()
    return await coroutine


def adopt_client_session() -> None:
    """Let the SDK client's global aiohttp session be (re)created on the running loop.

    The SDK keeps one module-level session bound to the loop that created it; if another loop
    (e.g. an earlier ``asyncio.run`` in the same process) created it, drop it so the SDK builds a
    fresh one here. The SDK code itself is untouched.
    """
    from azure.durable_functions.models.utils import http_utils

    session = http_utils._client_session
    loop = asyncio.get_running_loop()
    if session is not None and getattr(session, "_loop", loop) is not loop:
        http_utils._client_session = None
        http_utils._session_lock = asyncio.Lock()


async def call_user_function(fn: Any, kwargs: dict[str, Any]) -> Any:
    """Call a (non-activity) user function as the worker does: ``async def`` on the running
    loop, plain functions in a thread."""
    adopt_client_session()
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    result = await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


_WORKER_LOOPS = threading.local()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread for ``async def`` activities run there."""
    loop = getattr(_WORKER_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _WORKER_LOOPS.loop = asyncio.new_event_loop()
    return loop


# -- worker processes ----------------------------------------------------------------------------
_PROCESS_ACTIVITIES: dict[str, ActivityFunction] = {}


def run_activity_in_process(name: str, input_text: str | None, client_json: str | None = None,
                            blobs: dict[str, bytes | None] | None = None) -> ActivityOutcome:
    """Process-pool entry point: the activity table was inherited at fork or loaded at spawn."""
    return run_activity(_PROCESS_ACTIVITIES[name.lower()], input_text, client_json, blobs)


def _forward_logs(queue: Any, level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(queue))
    root.setLevel(level)


def _init_spawned(queue: Any, level: int, app_ref: str) -> None:
    """Spawned worker: send logs to the host, import the app by reference, index it."""
    _forward_logs(queue, level)
    _PROCESS_ACTIVITIES.update(index_app(load_app(app_ref)).activities)


def _init_forked(queue: Any, level: int) -> None:
    _forward_logs(queue, level)


def _worker_main(tasks: Any, results: Any, threads: int, initializer: Any, initargs: tuple) -> None:
    """A worker process: run up to ``threads`` calls at once on its own threads, as the Python
    worker runs sync functions on a thread pool; exit when told or when the host is gone."""
    initializer(*initargs)
    results.put((-1, "ready", os.getpid()))
    host = os.getppid()
    slots = threading.Semaphore(threads)
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="activity")

    def run(key: int, fn: Any, args: tuple) -> None:
        try:
            value: tuple[bool, Any] = (True, fn(*args))
        except BaseException as err:  # noqa: BLE001 - reported to the host as the call's failure
            value = (False, f"{type(err).__name__}: {err}")
        finally:
            slots.release()
        results.put((key, *value))

    while True:
        slots.acquire()
        while True:
            try:
                item = tasks.get(timeout=1.0)
                break
            except queue.Empty:
                if os.getppid() != host:  # the host died (kill -9): do not linger
                    os._exit(0)
        if item is None:
            break
        key, fn, args = item
        results.put((key, "taken", os.getpid()))
        pool.submit(run, key, fn, args)
    pool.shutdown(wait=True)


class WorkerProcesses:
    """``processes`` spawned worker processes that each run up to ``threads`` calls at once;
    ``submit`` returns a ``concurrent.futures.Future``. A worker that dies fails the calls it
    had taken ("worker process died") and is replaced, so no call waits forever."""

    def __init__(self, processes: int, threads: int, context: Any, initializer: Any,
                 initargs: tuple) -> None:
        self._context, self._threads = context, threads
        self._init = (initializer, initargs)
        # Results travel through a SimpleQueue: a worker's put is written to the pipe before it
        # returns (a Queue's feeder thread sends later), so the "taken" a worker sends before it
        # starts a call reaches the host even when the call kills the process at once; with a
        # Queue the host could miss it and the call would wait forever for a dead worker.
        self._tasks, self._results = context.Queue(), context.SimpleQueue()
        self._futures: dict[int, concurrent.futures.Future[Any]] = {}
        self._taken: dict[int, int] = {}  # call → pid of the worker running it
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closed = False
        self._started = 0
        self._all_started = threading.Event()
        self._procs = [self._spawn() for _ in range(processes)]
        self._collector = threading.Thread(target=self._collect, name="activity-results", daemon=True)
        self._collector.start()

    def _spawn(self) -> Any:
        proc = self._context.Process(target=_worker_main, args=(
            self._tasks, self._results, self._threads, *self._init), daemon=True)
        proc.start()
        return proc

    def submit(self, fn: Any, *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        key = next(self._ids)
        with self._lock:
            if self._closed:
                raise RuntimeError("the activity pool is shut down")
            self._futures[key] = future
        self._tasks.put((key, fn, args))
        return future

    def _collect(self) -> None:
        reader = self._results._reader  # SimpleQueue's get has no timeout: poll its pipe
        while True:
            try:
                if not reader.poll(1.0):
                    if self._closed:
                        return
                    self._check_workers()
                    continue
                key, status, value = self._results.get()
            except (EOFError, OSError):
                return
            with self._lock:
                if status == "ready":
                    self._started += 1
                    if self._started >= len(self._procs):
                        self._all_started.set()
                    continue
                if status == "taken":
                    self._taken[key] = value
                    continue
                self._taken.pop(key, None)
                future = self._futures.pop(key, None)
            if future is None or not future.set_running_or_notify_cancel():
                continue
            if status is True:
                future.set_result(value)
            else:
                future.set_exception(RuntimeError(value))

    def _check_workers(self) -> None:
        for index, proc in enumerate(self._procs):
            if proc.is_alive() or self._closed:
                continue
            with self._lock:
                lost = [k for k, pid in self._taken.items() if pid == proc.pid]
                futures = [self._futures.pop(k, None) for k in lost]
                for k in lost:
                    del self._taken[k]
            for future in filter(None, futures):
                if future.set_running_or_notify_cancel():
                    future.set_exception(RuntimeError(f"worker process {proc.pid} died (exit code {proc.exitcode})"))
            self._procs[index] = self._spawn()

    def wait_started(self, timeout: float | None = None) -> bool:
        """Every worker process has started and imported the app (or ``timeout`` passed)."""
        return self._all_started.wait(timeout)

    def shutdown(self, wait: bool = False, cancel_futures: bool = True) -> None:
        with self._lock:
            self._closed = True
            futures, self._futures = list(self._futures.values()), {}
        for future in futures:
            future.cancel()
        for proc in self._procs:
            proc.terminate()  # the collector sees ``_closed`` within a second and ends


class _ToHostLoggers(logging.Handler):
    """Hands a worker's record to the host logger of the same name (and so its handlers)."""

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        logging.getLogger(record.name).handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() is used
        logging.getLogger(record.name).handle(record)


class ActivityPool:
    """The worker pool; with processes, also the listener of their log records."""

    def __init__(self, kind: str, workers: int, index: FunctionIndex,
                 app_ref: str | None = None, threads: int = 1) -> None:
        if kind not in ("thread", "process"):
            raise ValueError(f"activity pool kind must be 'thread' or 'process', not {kind!r}")
        self.kind = kind
        self.listener: logging.handlers.QueueListener | None = None
        if kind == "thread":
            self.executor: concurrent.futures.Executor = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="activity")
            return
        context = multiprocessing.get_context("spawn" if app_ref is not None else "fork")
        queue = context.Queue()
        self.listener = logging.handlers.QueueListener(queue, _ToHostLoggers())
        self.listener.start()
        level = logging.getLogger().getEffectiveLevel()
        if app_ref is not None:
            self.executor = WorkerProcesses(workers, threads, context, _init_spawned, (queue, level, app_ref))
        else:
            _PROCESS_ACTIVITIES.update(index.activities)
            self.executor = WorkerProcesses(workers, threads, context, _init_forked, (queue, level))

    def wait_started(self, timeout: float | None = None) -> None:
        """Block until every worker process has started and imported the app, as the Functions
        host starts its language workers before the first invocation (nothing to wait for with
        threads); the first fan-out then runs at full width."""
        if isinstance(self.executor, WorkerProcesses):
            self.executor.wait_started(timeout)

    @property
    def in_process(self) -> bool:
        return self.kind == "process"

    def submit(self, activity: ActivityFunction, input_text: str | None,
               client_json: str | None, blobs: dict[str, bytes | None]
               ) -> concurrent.futures.Future[ActivityOutcome]:
        if self.in_process:
            return self.executor.submit(run_activity_in_process, activity.name, input_text,
                                        client_json, blobs)
        return self.executor.submit(run_activity, activity, input_text, client_json, blobs)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
