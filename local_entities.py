"""Embedded Durable runtime: durable entities (the engine's entity scheduling, a mixin).

Orchestrator → entity: the CallEntity/SignalEntity action becomes EventSent with the request
message (``op``, ``input``, ``id``, ``parent``); the entity's batch runs through the SDK's entity
``handle``; a call is answered with EventRaised named after the request id. Clients signal
through the management API. Entity state is stored verbatim as the SDK returned it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from local_state import (HE, Decisions, EntityCall, Live, UnknownFunction, event, iso,
                         split_entity_id, utcnow)

if TYPE_CHECKING:
    from local_functions import FunctionIndex
    from local_store import Store

logger = logging.getLogger(__name__)


class EntityScheduling:
    """Entity queues and batches; mixed into ``Engine``, which provides ``post`` (deliver an
    event to an instance) and ``wake`` (the scheduling loop's event)."""

    index: "FunctionIndex"
    store: "Store"
    entity_queue: dict[str, list[EntityCall]]

    def init_entities(self) -> None:
        self.entity_queue = defaultdict(list)

    def recover_entities(self) -> None:
        for row_id, entity_id, message in self.store.entity_messages():
            self.entity_queue[entity_id].append(EntityCall(row_id, message))

    def clear_entities(self) -> None:
        self.entity_queue.clear()

    def entities_pending(self) -> bool:
        return any(self.entity_queue.values())

    def send_to_entity(self, live: Live, node: dict[str, Any], action: dict[str, Any],
                       now: datetime, extra: list[dict[str, Any]], decisions: Decisions) -> None:
        """EventSent with the RequestMessage; a call is answered by EventRaised(Name=guid)."""
        guid = decisions.guids.get(node["id"]) if decisions.dry else None
        guid = guid or str(uuid.uuid4())
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
        if not decisions.dry:
            self.enqueue_entity(action["instanceId"], message)

    def enqueue_entity(self, entity_id: str, message: dict[str, Any]) -> None:
        row_id = self.store.add_entity_message(entity_id, message)
        self.entity_queue[entity_id].append(EntityCall(row_id, message))
        self.wake.set()  # type: ignore[attr-defined]

    def run_entities(self) -> bool:
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
        self.post(parent, message.get("parentExecution", ""), event(  # type: ignore[attr-defined]
            HE.EVENT_RAISED, utcnow(), Name=message["id"], Input=json.dumps(body)))

    def signal_entity(self, entity_id: str, operation: str, input_text: str | None) -> None:
        name, _ = split_entity_id(entity_id)
        if self.index.entity(name) is None:
            raise UnknownFunction(f"The function '{name}' doesn't exist, is disabled, or is "
                                  "not an entity function.")
        with self.store.transaction():
            self.enqueue_entity(entity_id, {"op": operation, "input": input_text,
                                            "id": str(uuid.uuid4()), "signal": True})

    def read_entity(self, entity_id: str) -> tuple[bool, str | None]:
        stored = self.store.get_entity(entity_id)
        if stored is None or not stored[0]:
            return False, None
        return True, stored[1]
