"""Replay an orchestrator through the SDK's own entry point with extension-shaped history.

A test builds the history an orchestration would have (started, tasks scheduled, tasks completed)
and gets back the state the SDK returns: its actions, output, error and custom status. This is the
unit-level oracle for orchestrators; the embedded runtime runs them for real end to end.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from azure.functions._durable_functions import OrchestrationContext

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _ts(seconds: float) -> str:
    return (EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class History:
    """An orchestration history, built event by event in the shape the extension sends."""

    def __init__(self, name: str, input_: Any, instance_id: str = "test-instance"):
        self.instance_id = instance_id
        self.input_text = json.dumps(input_)
        self.clock = 0.0
        self.events: list[dict[str, Any]] = []
        self._new_episode()
        self.events.append(self._event(0, Name=name, Version="", Input=json.dumps(input_),
                                       OrchestrationInstance={"InstanceId": instance_id,
                                                              "ExecutionId": "exec-1"}))

    def _event(self, event_type: int, event_id: int = -1, **fields: Any) -> dict[str, Any]:
        self.clock += 0.001
        return {"EventType": event_type, "EventId": event_id, "IsPlayed": False,
                "Timestamp": _ts(self.clock), **fields}

    def _new_episode(self) -> None:
        for event in self.events:
            event["IsPlayed"] = True
        self.events.append(self._event(12))

    def scheduled(self, seq: int, name: str) -> "History":
        self.events.append(self._event(4, seq, Name=name, Version=""))
        return self

    def next_episode(self) -> "History":
        self.events.append(self._event(13))
        self._new_episode()
        return self

    def completed(self, seq: int, result: Any) -> "History":
        self.events.append(self._event(5, TaskScheduledId=seq, Result=json.dumps(result)))
        return self

    def failed(self, seq: int, reason: str, details: str = "") -> "History":
        self.events.append(self._event(6, TaskScheduledId=seq, Reason=reason, Details=details))
        return self

    def run(self, handle) -> dict[str, Any]:
        """One episode through the SDK; returns the orchestrator state it answers."""
        context = {"history": self.events, "instanceId": self.instance_id, "isReplaying": False,
                   "parentInstanceId": None, "input": self.input_text,
                   "upperSchemaVersion": 1, "upperSchemaVersionNew": 2}
        try:
            return json.loads(handle(OrchestrationContext(json.dumps(context))))
        except Exception as err:  # the SDK reports an orchestrator failure this way
            marker = "$OutOfProcData$:"
            text = str(err)
            if marker not in text:
                raise
            return json.loads(text.split(marker, 1)[1])
