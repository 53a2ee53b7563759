"""Embedded Durable runtime: the SDK's actions as the engine's node tree, and their dispatch.

Each top-level action becomes a node (``act``, ``sub``, ``timer``, ``ent``, ``sig``, ``http``,
``can``, ``evt``, a ``retry`` sequence, or an ``all``/``any`` compound); atomic nodes take the
SDK's next sequence number as they are built. The gate dispatches top-level node k only once
nodes 0..k-1 are complete; dispatching writes the decision event (TaskScheduled, TimerCreated,
SubOrchestrationInstanceCreated, EventSent) and records the work in ``Decisions`` (nothing but
the events with ``Decisions(dry=True)``). A mixin of ``Engine``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from local_state import (ATOMIC_KINDS, HE, HTTP_ACTIVITY, ActivityTimings, Decisions, EngineError, Live,
                         UnsupportedOperation, event, is_complete, iso, parse_iso, utcnow)

if TYPE_CHECKING:
    from local_store import Store


class ActionPlanner:
    """Nodes from actions, the gate, and scheduling; ``Engine`` provides ``store``, ``ready``,
    ``post``, ``create_instance``, ``send_to_entity`` and ``activity_timings``."""

    store: "Store"
    ready: set[str]
    activity_timings: ActivityTimings

    # -- actions → nodes ------------------------------------------------------------------------
    def _build_node(self, live: Live, action: dict[str, Any]) -> dict[str, Any]:
        atype = action["actionType"]
        if atype in (11, 12):
            children = action["compoundActions"]
            if atype == 12 and len(children) == 1 and children[0]["actionType"] in (1, 3):
                return self._retry_node(live, children[0])
            return {"k": "any" if atype == 11 else "all",
                    "c": [self._build_node(live, c) for c in children]}
        if atype == 6:
            return {"k": "evt", "name": action["externalEventName"], "done": False}
        if atype in (1, 3):
            return self._retry_node(live, action)
        kind = ATOMIC_KINDS.get(atype)
        if kind is None:
            raise UnsupportedOperation(f"unknown action type {atype}: {action}")
        node = {"k": kind, "id": live.alloc(), "a": action, "done": False}
        if kind == "timer" and action.get("isCanceled"):
            node["cancelled"] = True
        return node

    @staticmethod
    def _retry_node(live: Live, action: dict[str, Any]) -> dict[str, Any]:
        options = action.get("retryOptions") or {}
        return {"k": "retry", "a": action, "cur": live.alloc(), "tmr": None, "n": 1,
                "max": max(1, int(options.get("maxNumberOfAttempts", 1))),
                "iv": int(options.get("firstRetryIntervalInMilliseconds", 0)), "done": False}

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
            self._schedule_sub(live, task_id, action, now, extra, decisions)
        elif kind == "timer":
            self._schedule_timer(live, node, action, now, extra, decisions)
        elif kind in ("ent", "sig"):
            self.send_to_entity(live, node, action, now, extra, decisions)
        elif kind == "http":
            live.index[task_id] = node
            self._schedule_http(live, task_id, action, now, extra, decisions)

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

    def _dispatch_attempt(self, live: Live, node: dict[str, Any], now: datetime,
                          extra: list[dict[str, Any]], decisions: Decisions) -> None:
        action = node["a"]
        if action["actionType"] == 1:
            self._schedule_activity(live, node["cur"], action, now, extra, decisions)
        else:
            self._schedule_sub(live, node["cur"], action, now, extra, decisions)

    def _schedule_activity(self, live: Live, task_id: int, action: dict[str, Any],
                           now: datetime, extra: list[dict[str, Any]],
                           decisions: Decisions) -> None:
        name, input_text = action["functionName"], action.get("input")
        extra.append(event(HE.TASK_SCHEDULED, now, task_id, Name=name, Version="",
                           Input=input_text))
        if not decisions.dry:
            self.add_activity_work(live, task_id, name, input_text, decisions, scheduled=now)

    def add_activity_work(self, live: Live, task_id: int, name: str, input_text: str | None,
                          decisions: Decisions, scheduled: datetime | None = None) -> None:
        key = (live.instance_id, live.execution_id, task_id)
        self.activity_timings.scheduled(key, name, scheduled.timestamp() if scheduled else time.time())
        self.store.add_work([(*key, "activity", None,
                              json.dumps({"name": name, "input": input_text}))])
        decisions.activities.append((*key, name, input_text))

    def _schedule_http(self, live: Live, task_id: int, action: dict[str, Any], now: datetime,
                       extra: list[dict[str, Any]], decisions: Decisions) -> None:
        request = action.get("httpRequest") or {}
        extra.append(event(HE.TASK_SCHEDULED, now, task_id, Name=HTTP_ACTIVITY, Version="",
                           Input=json.dumps([request])))
        if not decisions.dry:
            self.add_http_work(live, task_id, request, decisions)

    def add_http_work(self, live: Live, task_id: int, request: dict[str, Any],
                      decisions: Decisions) -> None:
        payload = json.dumps({"request": request})
        self.store.add_work([(live.instance_id, live.execution_id, task_id, "http", None,
                              payload)])
        decisions.http.append((live.instance_id, live.execution_id, task_id, payload))

    def _add_timer(self, live: Live, timer_id: int, fire_at: datetime, decisions: Decisions,
                   fire_at_text: str | None = None) -> None:
        if decisions.dry:
            return
        text = fire_at_text or iso(fire_at)
        due = fire_at.timestamp()
        self.store.add_work([(live.instance_id, live.execution_id, timer_id, "timer", due,
                              json.dumps({"fireAt": text}))])
        decisions.timers.append((due, live.instance_id, live.execution_id, timer_id, text))

    def add_timer_work(self, live: Live, timer_id: int, fire_at_text: str,
                       decisions: Decisions) -> None:
        self._add_timer(live, timer_id, parse_iso(fire_at_text), decisions, fire_at_text)

    def _schedule_sub(self, live: Live, task_id: int, action: dict[str, Any], now: datetime,
                      extra: list[dict[str, Any]], decisions: Decisions) -> None:
        name = action["functionName"]
        child_id = action.get("instanceId") or f"{live.execution_id}:{task_id}"
        input_text = action.get("input")
        extra.append(event(HE.SUB_ORCHESTRATION_INSTANCE_CREATED, now, task_id, Name=name,
                           Version="", InstanceId=child_id, Input=input_text))
        if not decisions.dry:
            self.start_child(live, task_id, name, child_id, input_text)

    def start_child(self, live: Live, task_id: int, name: str, child_id: str,
                    input_text: str | None) -> None:
        parent = {"instance_id": live.instance_id, "execution_id": live.execution_id,
                  "task_id": task_id}
        try:
            self.create_instance(name, child_id,
                                 None if input_text is None else json.dumps(input_text),
                                 parent=parent, validate_id=False)
        except EngineError as err:
            self.post(live.instance_id, live.execution_id, event(
                HE.SUB_ORCHESTRATION_INSTANCE_FAILED, utcnow(), TaskScheduledId=task_id,
                Reason=str(err), Details=""))
