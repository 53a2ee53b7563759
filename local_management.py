"""Embedded Durable runtime: the client operations (what the extension's DurableClient does).

Status and queries, raise event, terminate, suspend/resume (recorded as ExecutionSuspended /
ExecutionResumed), purge (by id and by filter), restart, rewind, and the entity queries. Runs on
the engine's loop, like the engine.

Rewind (Failed instances only, as the extension): the execution's history is replayed through the
SDK without side effects (``Decisions(dry=True)``) up to the episode in which its first task
failed for good (a task without retries, or a retry's last attempt, or a sub-orchestration),
and the history is cut there. What came in from then on is delivered again except failures:
completions of tasks scheduled before the cut are kept, failed tasks are open again and run
again, timers are re-armed, failed sub-orchestrations are rewound themselves, completed ones
report again. The instance keeps its id and execution, and continues from the cut. A history
that does not replay to the decisions it recorded is refused (``RewindImpossible``), never
half-rewound.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from local_engine import Engine
from local_state import (COMPLETION_EVENTS, DECISION_EVENTS, FAILURE_EVENTS, HE, TERMINAL,
                         Decisions, EngineError, InstanceAlreadyRunning, InstanceNotFailed, InstanceNotFound,
                         InstanceNotRunning, InstanceStillRunning, Live, RewindImpossible,
                         event, history_for_status, iso, loads_or_none, parse_iso,
                         split_entity_id, status_body, utcnow)
from local_store import InstanceRow

logger = logging.getLogger(__name__)


class BadContinuationToken(EngineError):
    """A continuation token that this runtime did not hand out."""


def encode_token(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


def decode_token(token: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeError) as err:
        raise BadContinuationToken(f"invalid continuation token: {err}") from None
    if not isinstance(parts, list) or len(parts) != size or not all(
            isinstance(p, str) for p in parts):
        raise BadContinuationToken("invalid continuation token")
    return parts


@dataclass
class Episode:
    """One stored orchestrator episode: its position, start event, inputs and decisions."""

    start: int
    end: int
    started: dict[str, Any]
    inputs: list[dict[str, Any]]
    decisions: list[dict[str, Any]]


def split_episodes(events: list[dict[str, Any]]) -> list[Episode]:
    episodes: list[Episode] = []
    current: Episode | None = None
    for position, ev in enumerate(events):
        etype = ev["EventType"]
        if etype == HE.ORCHESTRATOR_STARTED:
            current = Episode(position, position, ev, [], [])
        elif current is None:
            continue
        elif etype == HE.ORCHESTRATOR_COMPLETED:
            current.end = position
            episodes.append(current)
            current = None
        elif etype in DECISION_EVENTS:
            current.decisions.append(ev)
        else:
            current.inputs.append(ev)
    return episodes


class Management:
    """Client operations over an engine (every method on the engine's loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store

    # -- status and queries ---------------------------------------------------------------------
    def status(self, instance_id: str, show_history: bool = False,
               show_history_output: bool = False, show_input: bool = True
               ) -> dict[str, Any] | None:
        row = self.store.get_instance(instance_id)
        if row is None:
            return None
        body = status_body(row, show_input=show_input)
        live = self.engine.live.get(instance_id)
        if live is not None:
            body["customStatus"] = loads_or_none(live.custom_status)
        if show_history and row.status != "Pending":
            body["historyEvents"] = history_for_status(
                self.store.history(instance_id), show_history_output, show_input)
        return body

    def list_page(self, *, statuses: list[str] | None = None, created_from: str | None = None,
                  created_to: str | None = None, prefix: str | None = None,
                  page_size: int | None = None, continuation_token: str | None = None,
                  show_input: bool = True) -> tuple[list[dict[str, Any]], str | None]:
        """One page of instance statuses and the token for the next page (None at the end)."""
        after = tuple(decode_token(continuation_token, 2)) if continuation_token else None
        rows = self.store.query_instances(
            statuses=statuses, created_from=created_from, created_to=created_to, prefix=prefix,
            after=after, limit=None if page_size is None else page_size + 1)
        more = page_size is not None and len(rows) > page_size
        rows = rows[:page_size] if page_size is not None else rows
        token = encode_token(rows[-1].created_time, rows[-1].instance_id) if more else None
        return [status_body(r, show_input=show_input) for r in rows], token

    # -- events and control ---------------------------------------------------------------------
    def _require_live(self, instance_id: str) -> Live:
        live = self.engine.live.get(instance_id)
        if live is not None:
            return live
        if self.store.get_instance(instance_id) is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' was found.")
        raise InstanceNotRunning(f"instance {instance_id} has finished")

    def raise_event(self, instance_id: str, name: str, input_text: str | None) -> None:
        live = self._require_live(instance_id)
        with self.store.transaction():
            self.engine.post(instance_id, live.execution_id,
                             event(HE.EVENT_RAISED, utcnow(), Name=name, Input=input_text))

    def terminate(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        now = utcnow()
        with self.store.transaction():
            self.engine.close(live, "Terminated", json.dumps(reason), now)
            self.engine.notify_parent(live, event(HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now,
                                                  Reason=f"Terminated: {reason}", Details=""))
        self.engine.notify_waiters()

    def suspend(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        if live.status == "Suspended":
            return
        with self.store.transaction():
            live.status = "Suspended"
            if live.history:
                self.engine.append_event(live, event(HE.EXECUTION_SUSPENDED, utcnow(),
                                                     Reason=reason))
            self.store.update_instance(instance_id, status="Suspended",
                                       last_updated_time=iso(utcnow()))
        logger.info("instance %s suspended: %s", instance_id, reason)

    def resume(self, instance_id: str, reason: str | None) -> None:
        live = self._require_live(instance_id)
        if live.status != "Suspended":
            return
        with self.store.transaction():
            live.status = "Running" if live.history else "Pending"
            if live.history:
                self.engine.append_event(live, event(HE.EXECUTION_RESUMED, utcnow(),
                                                     Reason=reason))
            self.store.update_instance(instance_id, status=live.status,
                                       last_updated_time=iso(utcnow()))
        self.engine.ready.add(instance_id)
        self.engine.wake.set()
        logger.info("instance %s resumed: %s", instance_id, reason)

    def purge(self, instance_id: str) -> int:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' was found.")
        if row.status not in TERMINAL:
            raise InstanceStillRunning(f"instance {instance_id} is {row.status}; only "
                                       "completed, failed or terminated instances are purged")
        with self.store.transaction():
            self.store.delete_instance(instance_id)
        return 1

    def purge_by(self, created_from: str, created_to: str | None,
                 statuses: list[str] | None) -> int:
        """Purge the finished instances created in the window (optionally with those statuses)."""
        rows = self.store.query_instances(statuses=statuses or sorted(TERMINAL),
                                          created_from=created_from, created_to=created_to)
        finished = [row for row in rows if row.status in TERMINAL]
        with self.store.transaction():
            for row in finished:
                self.store.delete_instance(row.instance_id)
        return len(finished)

    def restart(self, instance_id: str, new_instance_id: bool) -> str:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(f"An orchestration with the instanceId {instance_id} was "
                                   "not found.")
        if not new_instance_id and row.status not in TERMINAL:
            raise InstanceAlreadyRunning(
                f"An Orchestration instance with the status {row.status} already exists.")
        return self.engine.create_instance(row.name, None if new_instance_id else instance_id,
                                           row.input)

    # -- entities -------------------------------------------------------------------------------
    def signal_entity(self, entity_id: str, operation: str, input_text: str | None) -> None:
        self.engine.signal_entity(entity_id, operation, input_text)

    def read_entity(self, entity_id: str) -> tuple[bool, str | None]:
        return self.engine.read_entity(entity_id)

    def list_entities(self, name: str, *, modified_from: str | None = None,
                      modified_to: str | None = None, page_size: int = 100,
                      continuation_token: str | None = None, fetch_state: bool = False
                      ) -> tuple[list[dict[str, Any]], str | None]:
        after = decode_token(continuation_token, 1)[0] if continuation_token else None
        rows = self.store.list_entities(name, modified_from=modified_from,
                                        modified_to=modified_to, after=after,
                                        limit=page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        listed = []
        for entity_id, state, modified in rows:
            entity_name, key = split_entity_id(entity_id)
            listed.append({"entityId": {"name": entity_name, "key": key},
                           "lastOperationTime": modified,
                           "state": _state_value(state) if fetch_state else None})
        return listed, encode_token(rows[-1][0]) if more else None

    # -- rewind ---------------------------------------------------------------------------------
    def rewind(self, instance_id: str, reason: str | None) -> None:
        row = self.store.get_instance(instance_id)
        if row is None:
            raise InstanceNotFound(f"No instance with ID '{instance_id}' was found.")
        if row.status in ("Completed", "Terminated", "Canceled"):
            raise InstanceNotRunning("The rewind operation is only supported on failed "
                                     "orchestration instances.")
        if row.status != "Failed":
            raise InstanceNotFailed("The rewind operation is only supported on failed "
                                    "orchestration instances.")
        decisions = Decisions()
        with self.store.transaction():
            self._rewind(row, reason, decisions)
        self.engine.carry_out(decisions)
        self.engine.wake.set()
        logger.info("instance %s rewound: %s", instance_id, reason)

    def _rewind(self, row: InstanceRow, reason: str | None, decisions: Decisions) -> None:
        texts = self.store.history(row.instance_id)
        events = [json.loads(t) for t in texts]
        live, cut = self._replay_to_first_failure(row, texts, events)
        episodes = split_episodes(events)
        carried = self._carried_inputs(live, episodes[cut:] if cut is not None else [])
        prefix_end = episodes[cut].start if cut is not None else len(events)
        prefix = [ev for ev in events[:prefix_end]
                  if ev["EventType"] not in (HE.EXECUTION_COMPLETED, HE.EXECUTION_TERMINATED)]
        live.history = [texts[i] for i, ev in enumerate(events[:prefix_end])
                        if ev["EventType"] not in (HE.EXECUTION_COMPLETED,
                                                   HE.EXECUTION_TERMINATED)]
        now = utcnow()
        self.store.clear_history(row.instance_id)
        self.store.append_history(row.instance_id, 0, live.history)
        live.status = "Running" if live.history else "Pending"
        self.store.update_instance(row.instance_id, status=live.status, output=None,
                                   custom_status=live.custom_status, last_updated_time=iso(now),
                                   engine=live.engine_json())
        self.engine.live[row.instance_id] = live
        for ev in carried:
            self.engine.post(live.instance_id, live.execution_id, ev)
        self.engine.post(live.instance_id, live.execution_id,
                         event(HE.GENERIC_EVENT, now, Data=f"Rewound: {reason or ''}"))
        self._reopen_work(live, prefix, carried, reason, decisions)

    def _replay_to_first_failure(self, row: InstanceRow, texts: list[str],
                                 events: list[dict[str, Any]]) -> tuple[Live, int | None]:
        """The mirror as it was before the episode of the first final task failure (and that
        episode's number), replayed through the SDK; None: no task failed, replay it all."""
        live = Live(row.instance_id, row.name, row.execution_id, "Running", row.input,
                    row.created_time, json.loads(row.parent) if row.parent else None)
        for number, episode in enumerate(split_episodes(events)):
            snapshot = (live.engine_json(), live.custom_status)
            live.history = texts[:episode.start]
            guids = {ev["EventId"]: json.loads(ev["Input"])["id"]
                     for ev in episode.decisions if ev["EventType"] == HE.EVENT_SENT}
            dry = Decisions(dry=True, guids=guids)
            _, extra = self.engine.decide(live, episode.started, episode.inputs,
                                          parse_iso(episode.started["Timestamp"]), dry)
            made = [(e["EventType"], e["EventId"]) for e in extra]
            recorded = [(e["EventType"], e["EventId"]) for e in episode.decisions]
            if made != recorded:
                raise RewindImpossible(
                    f"instance {row.instance_id} cannot be rewound: episode {number} of its "
                    f"history replays to different decisions ({made[:5]} != {recorded[:5]})")
            if dry.terminal_failures:
                live.load_engine_json(snapshot[0])
                live.custom_status = snapshot[1]
                return live, number
        return live, None

    @staticmethod
    def _carried_inputs(live: Live, episodes: list[Episode]) -> list[dict[str, Any]]:
        """What came in from the cut on, without failures and without answers to decisions made
        after the cut (those tasks are scheduled again by the replay)."""
        carried = []
        for episode in episodes:
            for ev in episode.inputs:
                etype = ev["EventType"]
                if etype in FAILURE_EVENTS or etype == HE.GENERIC_EVENT:
                    continue
                if etype in COMPLETION_EVENTS and ev["TaskScheduledId"] not in live.index:
                    continue
                if etype == HE.TIMER_FIRED and ev["TimerId"] not in live.index:
                    continue
                carried.append({**ev, "IsPlayed": False})
        return carried

    def _reopen_work(self, live: Live, prefix: list[dict[str, Any]],
                     carried: list[dict[str, Any]], reason: str | None,
                     decisions: Decisions) -> None:
        """Schedule again the work of every open task the carried inputs do not answer."""
        scheduled = {(ev["EventType"], ev["EventId"]): ev for ev in prefix
                     if ev["EventType"] in DECISION_EVENTS}
        answered = {ev.get("TaskScheduledId", ev.get("TimerId", ev.get("Name")))
                    for ev in carried}
        sent = {json.loads(ev["Input"])["id"]: ev for ev in prefix
                if ev["EventType"] == HE.EVENT_SENT}
        for key, node in list(live.index.items()):
            if key in answered:
                continue
            kind = node["k"]
            if kind == "retry" and node.get("tmr") == key or kind == "timer":
                created = scheduled.get((HE.TIMER_CREATED, key))
                if created is not None:
                    self.engine.add_timer_work(live, key, created["FireAt"], decisions)
            elif kind == "ent" and key in sent:
                self.engine.enqueue_entity(sent[key]["InstanceId"],
                                           json.loads(sent[key]["Input"]))
            elif (HE.TASK_SCHEDULED, key) in scheduled:
                task = scheduled[(HE.TASK_SCHEDULED, key)]
                if kind == "http":
                    request = json.loads(task["Input"])[0]
                    self.engine.add_http_work(live, key, request, decisions)
                else:
                    self.engine.add_activity_work(live, key, task["Name"], task.get("Input"),
                                                  decisions)
            elif (HE.SUB_ORCHESTRATION_INSTANCE_CREATED, key) in scheduled:
                created = scheduled[(HE.SUB_ORCHESTRATION_INSTANCE_CREATED, key)]
                self._reopen_child(live, key, created, reason, decisions)

    def _reopen_child(self, live: Live, task_id: int, created: dict[str, Any],
                      reason: str | None, decisions: Decisions) -> None:
        child = self.store.get_instance(created["InstanceId"])
        now = utcnow()
        if child is None:
            self.engine.start_child(live, task_id, created["Name"], created["InstanceId"],
                                    created.get("Input"))
        elif child.status == "Failed":
            self._rewind(child, reason, decisions)
        elif child.status == "Completed":
            self.engine.post(live.instance_id, live.execution_id, event(
                HE.SUB_ORCHESTRATION_INSTANCE_COMPLETED, now, TaskScheduledId=task_id,
                Result=child.output))
        elif child.status in TERMINAL:
            self.engine.post(live.instance_id, live.execution_id, event(
                HE.SUB_ORCHESTRATION_INSTANCE_FAILED, now, TaskScheduledId=task_id,
                Reason=f"{child.status}: {loads_or_none(child.output)}", Details=""))


def _state_value(state: str | None) -> Any:
    if state is None:
        return None
    try:
        return json.loads(state)
    except ValueError:
        return state
