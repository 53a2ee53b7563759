"""Embedded Durable runtime: the scheduler that plays the Durable Task extension's role.

It hands the SDK the extension's orchestration context JSON (replay schema V3), carries out the
actions the SDK returns, runs activities in a worker pool (``local_activities``), HTTP calls
(``local_callhttp``) and entity batches (``local_entities``), and keeps everything in the SQLite
task hub (``local_store``). All methods run on one asyncio loop; ``LocalRuntime`` is the
thread-safe facade and ``local_management`` the client operations. See
``docs/durable-protocol.md`` for the protocol.

Sequence numbers: the SDK numbers tasks itself and never sends the numbers. The engine mirrors its
counter: every atomic action in yield order (depth-first in compounds) takes the next number,
signals and continue_as_new take one, external-event waits take none, and retry bookkeeping
allocates one number when an attempt's failure is delivered (the retry timer) and one when a
non-final retry timer fires (the next attempt). Events that allocate are put first among an
episode's new events, so the SDK allocates in the same order as the engine.

Gate (``ProcessAsyncActionsV2``): top-level action k is carried out only after actions 0..k-1 are
complete in .NET terms (WhenAll: all children; WhenAny: one child; retry: the whole sequence), and
the orchestration's result or failure takes effect only once all top-level actions are complete.

An episode decides first (``_decide``: mirror, history events, work to do) and the decisions are
carried out after its transaction commits; the same ``_decide`` replays a stored history without
side effects (``Decisions(dry=True)``) to rebuild a mirror for rewind.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
import sys
import time
import uuid
import warnings
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Callable

import azure.functions as func

from local_activities import (ActivityOutcome, ActivityPool, activity_failure,
                              decode_activity_input, run_activity_async)
from local_bindings import BlobIO
from local_callhttp import DEFAULT_POLL_MS, HttpCall
from local_actions import ActionPlanner
from local_entities import EntityScheduling
from local_functions import FunctionIndex
from local_state import (ActivityTimings, COMPLETION_EVENTS, FAILURE_EVENTS, HE, LIVE, OUT_OF_PROC_MARKER,
                         TERMINAL, Decisions, Inboxed, InstanceAlreadyRunning, InstanceNotFound,
                         Live, ReplayStats, UnknownFunction, check_instance_id, event,
                         input_for_context, is_complete, iso, played, utcnow)
from local_store import InstanceRow, Store

logger = logging.getLogger(__name__)

EPISODE_COALESCE_S = 0.05
#: What ``decide`` answers for an episode it records without the SDK (see ``_waiting_alls``).
ELIDED: dict[str, Any] = {"isDone": False}
WorkKey = tuple[str, str, int]
TIMESTAMPS_REMEMBERED = 1 << 17


def memoize_sdk_timestamps() -> None:
    """Let the SDK parse each history timestamp once per process, not once per episode.

    The SDK builds every history event anew on every episode and parses its timestamp with
    dateutil (about 60% of a replay's time); the host hands it the same texts episode after
    episode, so the parse the SDK imports is wrapped in an LRU cache (same values: datetimes are
    immutable). The SDK's code is untouched; on Azure its worker parses as before."""
    from azure.durable_functions.models.history import HistoryEvent as _event_class

    module = sys.modules[_event_class.__module__]
    parse = getattr(module, "dt_parse", None)
    if parse is not None and not hasattr(parse, "cache_info"):
        module.dt_parse = functools.lru_cache(maxsize=TIMESTAMPS_REMEMBERED)(parse)


class Engine(ActionPlanner, EntityScheduling):
    """The scheduler; every method runs on the engine's event loop.

    ``client_binding``: returns the durable client binding JSON for functions that declare one
    (set by the runtime once HTTP is bound). ``connections``: the storage accounts of blob
    bindings (``local_bindings.BlobConnections``). ``credential``:
    returns the token credential for call_http token sources."""

    def __init__(self, index: FunctionIndex, store: Store, *,
                 max_activity_workers: int, activity_pool: str = "thread",
                 app_ref: str | None = None, connections: Any = None,
                 credential: Callable[[], Any] | None = None,
                 http_poll_ms: int = DEFAULT_POLL_MS, activity_threads: int = 1) -> None:
        self.index = index
        self.store = store
        self.pool = ActivityPool(activity_pool, max_activity_workers, index, app_ref,
                                 threads=activity_threads)
        self.connections = connections
        self.credential = credential or _default_credential
        self.http_poll_ms = http_poll_ms
        self.client_binding: Callable[[], str] = lambda: "{}"
        self.live: dict[str, Live] = {}
        self.ready: set[str] = set()
        self.results: list[tuple[WorkKey, ActivityOutcome]] = []
        self.timers: list[tuple[float, str, str, int, str]] = []
        self.inflight: set[WorkKey] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._stopping = False
        self.replay_stats = ReplayStats()
        self.activity_timings = ActivityTimings()
        memoize_sdk_timestamps()
        self.init_entities()
        self._recover()

    # -- lifecycle ------------------------------------------------------------------------------
    def _recover(self) -> None:
        for row in self.store.live_instances():
            self.live[row.instance_id] = self.load_live(row)
            if self.live[row.instance_id].inbox:
                self.ready.add(row.instance_id)
        pending = Decisions()
        for instance_id, execution_id, task_id, kind, due_at, payload in self.store.all_work():
            data = json.loads(payload)
            if kind == "timer":
                pending.timers.append((due_at or 0.0, instance_id, execution_id, task_id,
                                       data["fireAt"]))
            elif kind == "http":
                pending.http.append((instance_id, execution_id, task_id, payload))
            else:
                pending.activities.append((instance_id, execution_id, task_id, data["name"],
                                           data["input"]))
        self.recover_entities()
        if self.live or pending.activities or pending.http:
            logger.info("recovered %d live instances, %d activities and %d HTTP calls to run "
                        "again, %d timers", len(self.live), len(pending.activities),
                        len(pending.http), len(pending.timers))
        self.carry_out(pending)

    def load_live(self, row: InstanceRow) -> Live:
        live = Live(row.instance_id, row.name, row.execution_id, row.status, row.input,
                    row.created_time, json.loads(row.parent) if row.parent else None)
        live.history = self.store.history(row.instance_id)
        live.load_engine_json(row.engine)
        live.catch_up(row.engine)
        live.inbox = [Inboxed(i, x, e) for i, x, e in self.store.inbox(row.instance_id)]
        live.custom_status = row.custom_status
        return live

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
            if self.ready or self.results or self.entities_pending():
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
        self.clear_entities()
        self._recover()

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        for task in list(self.tasks):
            task.cancel()
        self.pool.shutdown()

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
                ran = self.run_entities()
                ready, self.ready = self.ready, set()
                for instance_id in sorted(ready):
                    live = self.live.get(instance_id)
                    # A suspended instance keeps its inbox; resume() marks it ready again.
                    if live is not None and live.status != "Suspended":
                        self._guarded_episode(live, decisions)
                if not ran and not self.ready:
                    break
        self.carry_out(decisions)
        self.notify_waiters()

    def carry_out(self, decisions: Decisions) -> None:
        for key_and_call in decisions.activities:
            self._submit_activity(*key_and_call)
        for instance_id, execution_id, task_id, payload in decisions.http:
            self._submit_http((instance_id, execution_id, task_id), payload)
        for timer in decisions.timers:
            heapq.heappush(self.timers, timer)

    # -- activities -----------------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _submit_activity(self, instance_id: str, execution_id: str, task_id: int, name: str,
                         input_text: str | None) -> None:
        key = (instance_id, execution_id, task_id)
        if key in self.inflight:
            return
        activity = self.index.activity(name)
        if activity is None:
            self.deliver_result(key, ActivityOutcome(ok=False, reason=(
                f"The function '{name}' doesn't exist, is disabled, or is not an activity "
                "function."), details=""))
            return
        self.inflight.add(key)
        if not activity.bindings.client and not activity.bindings.blobs \
                and not (activity.is_async and not self.pool.in_process):
            # The common case stays one pool hop with no task on the loop (fan-out of 10k).
            future = self.pool.submit(activity, input_text, None, {})
            future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(
                self._pool_done, key, activity.name, f))
            return
        self._spawn(self._run_activity(key, activity, input_text))

    async def _run_activity(self, key: WorkKey, activity: Any, input_text: str | None) -> None:
        """An activity with bindings (read inputs, invoke, write outputs) or on the loop."""
        try:
            value = decode_activity_input(input_text)
            io = BlobIO(self.connections, {"instanceId": key[0], activity.param: value,
                                          "data": value})
            contents = await self.loop.run_in_executor(None, io.read, activity.bindings)
            client = self.client_binding() if activity.bindings.client else None
            if activity.is_async and not self.pool.in_process:
                outcome = await run_activity_async(activity, input_text, client, contents)
            else:
                outcome = await asyncio.wrap_future(
                    self.pool.submit(activity, input_text, client, contents))
            if outcome.ok and outcome.outputs:
                await self.loop.run_in_executor(None, io.write, activity.bindings,
                                                outcome.outputs)
        except asyncio.CancelledError:
            self.inflight.discard(key)
            raise
        except Exception as err:  # noqa: BLE001 - binding I/O failures fail the task
            outcome = activity_failure(activity.name, err)
        self.inflight.discard(key)
        self.deliver_result(key, outcome)

    def _pool_done(self, key: WorkKey, name: str, future: Any) -> None:
        self.inflight.discard(key)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            outcome = ActivityOutcome(ok=False, reason=f"Activity host failure: {error!r}",
                                      details="")
            logger.warning("activity %s of %s: host failure %r", name, key[0], error)
        else:
            outcome = future.result()
        self.deliver_result(key, outcome)

    def deliver_result(self, key: WorkKey, outcome: ActivityOutcome) -> None:
        self.results.append((key, outcome))
        self.wake.set()

    def _submit_http(self, key: WorkKey, payload: str) -> None:
        if key in self.inflight:
            return
        self.inflight.add(key)
        data = json.loads(payload)

        def save_poll(url: str) -> None:
            with self.store.transaction():
                self.store.update_work_payload(key, json.dumps({**data, "poll": url}))

        call = HttpCall(data["request"], credential=self.credential,
                        default_poll_ms=self.http_poll_ms, save_poll=save_poll)

        async def run() -> None:
            try:
                outcome = await call.run(data.get("poll"))
            finally:
                self.inflight.discard(key)
            self.deliver_result(key, outcome)

        self._spawn(run())

    def _flush_results(self) -> None:
        results, self.results = self.results, []
        if not results:
            return
        self.store.delete_work(key for key, _ in results)
        now = utcnow()
        for (instance_id, execution_id, task_id), outcome in results:
            self.activity_timings.completed((instance_id, execution_id, task_id), outcome.started,
                                            outcome.finished, outcome.worker, now.timestamp())
            if outcome.ok:
                ev = event(HE.TASK_COMPLETED, now, TaskScheduledId=task_id, Result=outcome.result)
            else:
                ev = event(HE.TASK_FAILED, now, TaskScheduledId=task_id, Reason=outcome.reason,
                           Details=outcome.details)
            self.post(instance_id, execution_id, ev)

    # -- timers ---------------------------------------------------------------------------------
    def _fire_due_timers(self) -> None:
        now = time.time()
        fired: list[WorkKey] = []
        while self.timers and self.timers[0][0] <= now:
            _, instance_id, execution_id, timer_id, fire_at = heapq.heappop(self.timers)
            fired.append((instance_id, execution_id, timer_id))
            live = self.live.get(instance_id)
            node = live.index.get(timer_id) if live else None
            if node is not None and node.get("cancelled"):
                continue
            self.post(instance_id, execution_id,
                      event(HE.TIMER_FIRED, utcnow(), TimerId=timer_id, FireAt=fire_at))
        self.store.delete_work(fired)

    # -- delivery -------------------------------------------------------------------------------
    def post(self, instance_id: str, execution_id: str, ev: dict[str, Any]) -> None:
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
        activities, timers, http = (len(decisions.activities), len(decisions.timers),
                                    len(decisions.http))
        try:
            with self.store.savepoint():
                self._episode(live, decisions)
        except Exception as err:  # noqa: BLE001 - isolate one instance's failure
            logger.exception("episode of %s (%s) failed in the host", live.instance_id,
                             live.name)
            del decisions.activities[activities:]
            del decisions.timers[timers:]
            del decisions.http[http:]
            reason = f"Orchestrator function '{live.name}' failed: embedded runtime error: {err}"
            now = utcnow()
            self.close(live, "Failed", json.dumps(reason), now)
            self.notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
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
        started = event(HE.ORCHESTRATOR_STARTED, now)
        state, extra = self.decide(live, started, new_events, now, decisions)
        if live.status == "Pending":
            live.status = "Running"
        appended = [played(e) for e in (started, *new_events, *extra)]
        appended.append(json.dumps({**event(HE.ORCHESTRATOR_COMPLETED, now), "IsPlayed": True}))
        self.store.append_history(live.instance_id, len(live.history), appended)
        live.history.extend(appended)
        if self.finished(live, state):
            self._finish(live, state, now)
        elif state is ELIDED:
            # Only task completions changed the mirror: they are in the history just written,
            # and ``Live.catch_up`` re-applies them on load. Storing the whole mirror (every task
            # of the fan-out) here would make each such episode cost O(fan-out).
            self.store.update_instance(live.instance_id, last_updated_time=iso(now))
        else:
            self.store.update_instance(
                live.instance_id, status=live.status, custom_status=live.custom_status,
                last_updated_time=iso(now), engine=live.engine_json())

    @staticmethod
    def finished(live: Live, state: dict[str, Any]) -> bool:
        return bool((state.get("isDone") or state.get("error")) and (
            live.dispatched == len(live.nodes) and all(is_complete(n) for n in live.nodes)))

    def decide(self, live: Live, started: dict[str, Any], new_events: list[dict[str, Any]],
               now: datetime, decisions: Decisions
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Apply new events to the mirror, run the SDK, turn its actions into decisions; returns
        the SDK's state and the decision events to append to the history."""
        extra: list[dict[str, Any]] = []
        waiting = self._waiting_alls(live, new_events)
        for ev in new_events:
            self._apply(live, ev, now, extra, decisions)
        if waiting and all(not is_complete(group) and not any(c.get("failed") for c in group["c"])
                           for group in waiting):
            # Successes inside task_alls that are all still waiting: the SDK would replay the
            # whole history and resume nothing (it resumes user code only when the task it
            # awaits completes or fails, and no compound completed), so its answer is the one
            # it gave last time.
            self.replay_stats.elided += 1
            return ELIDED, extra
        started_at = time.perf_counter()
        state = self._invoke(live, [started, *new_events])
        self.replay_stats.record(len(live.history) + len(new_events) + 1,
                                 time.perf_counter() - started_at)
        if "customStatus" in state:
            live.custom_status = json.dumps(state["customStatus"])
        actions = state.get("actions") or []
        top = actions[0] if actions else []
        self._sync_cancellations(live.nodes, top)
        for action in top[len(live.nodes):]:
            live.nodes.append(self._build_node(live, action))
        self._advance_gate(live, now, extra, decisions)
        return state, extra

    @staticmethod
    def _waiting_alls(live: Live, new_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The task_all (WhenAll) compounds whose tasks the new events complete, successfully,
        when every new event is such a completion inside the last top-level action (a task_all,
        or a task_any over task_alls: a fan-out awaited in groups); else []. If none of them
        completes, no compound completes and the SDK resumes nothing (``decide`` checks that)."""
        if not new_events or live.dispatched != len(live.nodes) or live.status != "Running":
            return []
        top = live.nodes[-1] if live.nodes else None
        if top is None or top["k"] not in ("all", "any"):
            return []
        parents: dict[int, dict[str, Any]] | None = None
        groups: dict[int, dict[str, Any]] = {}
        for ev in new_events:
            if ev["EventType"] not in (HE.TASK_COMPLETED, HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED):
                return []
            node = live.index.get(ev["TaskScheduledId"])
            if node is None or node["k"] not in ("act", "sub", "retry"):
                return []
            if parents is None:
                parents = _parents(top)
            parent = parents.get(id(node))
            if parent is None or parent["k"] != "all":
                return []
            groups[id(parent)] = parent
        return list(groups.values())

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
            # The SDK's own typing transition notice (a retried activity's result is decoded by
            # its inner task, which the SDK gives no expected type: nothing an app can pass) is
            # not the app's problem: DEBUG, so it does not break into progress output.
            level = logging.DEBUG if "without expected_type" in str(warning.message) else logging.WARNING
            logger.log(level, "SDK warning in %s (%s): %s", live.name, live.instance_id,
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
                if etype in FAILURE_EVENTS:
                    node["failed"] = True
                    decisions.terminal_failures.append(ev["TaskScheduledId"])
                return
            if node["n"] >= node["max"]:
                node["failed"] = True
                decisions.terminal_failures.append(ev["TaskScheduledId"])
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

    # -- finishing ------------------------------------------------------------------------------
    def _finish(self, live: Live, state: dict[str, Any], now: datetime) -> None:
        can = live.nodes[-1] if live.nodes and live.nodes[-1]["k"] == "can" else None
        if state.get("error"):
            reason = f"Orchestrator function '{live.name}' failed: {state['error']}"
            self.close(live, "Failed", json.dumps(reason), now)
            self.notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                                           Reason=reason, Details=""))
        elif can is not None and state.get("isDone"):
            self._continue_as_new(live, can["a"].get("input"), now)
        else:
            result = json.dumps(state.get("output"))
            self.close(live, "Completed", result, now)
            self.notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED, now,
                                           Result=result))

    def append_event(self, live: Live, ev: dict[str, Any]) -> None:
        text = played(ev)
        self.store.append_history(live.instance_id, len(live.history), [text])
        live.history.append(text)

    def close(self, live: Live, status: str, output: str | None, now: datetime) -> None:
        """End the execution: history, row, and (for a failure) the mirror kept for rewind."""
        if status == "Terminated":
            reason = None if output is None else json.loads(output)
            self.append_event(live, event(HE.EXECUTION_TERMINATED, now, Input=reason))
        self.append_event(live, event(HE.EXECUTION_COMPLETED, now,
                                      OrchestrationStatus={"Completed": 1, "Failed": 3}.get(
                                          status, 5), Result=output))
        self.store.update_instance(live.instance_id, status=status, output=output,
                                   custom_status=live.custom_status,
                                   last_updated_time=iso(now), engine=None)
        self.store.clear_inbox(live.instance_id)
        self.store.clear_work(live.instance_id)
        self.live.pop(live.instance_id, None)
        self.ready.discard(live.instance_id)
        logger.info("instance %s (%s) %s", live.instance_id, live.name, status)

    def notify_parent(self, live: Live, ev: dict[str, Any]) -> None:
        if live.parent:
            ev["TaskScheduledId"] = live.parent["task_id"]
            self.post(live.parent["instance_id"], live.parent["execution_id"], ev)

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
        self.post(fresh.instance_id, fresh.execution_id, self.started_event(fresh, now))
        logger.info("instance %s (%s) continued as new", live.instance_id, live.name)

    # -- creating instances ---------------------------------------------------------------------
    def started_event(self, live: Live, now: datetime) -> dict[str, Any]:
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
                        parent: dict[str, Any] | None = None, validate_id: bool = True) -> str:
        """Create an instance (Pending) and queue its ExecutionStarted; returns the id."""
        orchestrator = self.index.orchestrator(name)
        if orchestrator is None:
            raise UnknownFunction(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator "
                "function.")
        if instance_id and validate_id:
            check_instance_id(instance_id)
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
            self.post(instance_id, live.execution_id, self.started_event(live, now))
        logger.info("instance %s (%s) created", instance_id, live.name)
        return instance_id

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

    def notify_waiters(self) -> None:
        for instance_id in [i for i in self.waiters if i not in self.live]:
            for future in self.waiters.pop(instance_id):
                if not future.done():
                    future.set_result(None)


def _parents(root: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Each node under a compound, by ``id()``, mapped to the compound that holds it."""
    parents: dict[int, dict[str, Any]] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node.get("c", ()) if node["k"] in ("all", "any") else ():
            parents[id(child)] = node
            stack.append(child)
    return parents


def _default_credential() -> Any:
    """The app's credential chain for call_http token sources (built on first use)."""
    global _CREDENTIAL
    if _CREDENTIAL is None:
        from azure.identity import DefaultAzureCredential

        _CREDENTIAL = DefaultAzureCredential()
    return _CREDENTIAL


_CREDENTIAL: Any = None
