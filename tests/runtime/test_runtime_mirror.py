"""The engine's stored mirror after episodes recorded without the SDK: a restart re-applies the
task completions the history has beyond the stored mirror (``Live.catch_up``)."""

from __future__ import annotations

from local_state import HE, Live, event, played, utcnow


def _live_with_fan_out(tasks: int) -> Live:
    live = Live("i", "fan", "e", "Running", None, "2026-01-01T00:00:00Z", None)
    nodes = [{"k": "act", "id": live.alloc(), "done": False} for _ in range(tasks)]
    live.nodes = [{"k": "all", "c": nodes}]
    live.dispatched = 1
    live.index = {n["id"]: n for n in nodes}
    return live


def test_completions_after_the_stored_mirror_are_applied_on_load() -> None:
    live = _live_with_fan_out(3)
    live.history = [played(event(HE.ORCHESTRATOR_STARTED, utcnow()))]
    stored = live.engine_json()  # stored before two episodes that were recorded without the SDK
    live.history += [played(event(HE.TASK_COMPLETED, utcnow(), TaskScheduledId=0, Result="1")),
                     played(event(HE.TASK_FAILED, utcnow(), TaskScheduledId=1, Reason="x", Details="")),
                     played(event(HE.TASK_COMPLETED, utcnow(), TaskScheduledId=2, Result="3"))]
    loaded = Live("i", "fan", "e", "Running", None, "2026-01-01T00:00:00Z", None, history=list(live.history))
    loaded.load_engine_json(stored)
    loaded.catch_up(stored)
    done = [node.get("done") for node in loaded.nodes[0]["c"]]
    assert done == [True, False, True]  # a failure is never recorded without the SDK: not re-applied
    assert set(loaded.index) == {1}


def test_a_mirror_stored_after_the_last_episode_is_left_as_it_is() -> None:
    live = _live_with_fan_out(2)
    live.history = [played(event(HE.TASK_COMPLETED, utcnow(), TaskScheduledId=0, Result="1"))]
    live.index.pop(0)["done"] = True
    stored = live.engine_json()
    loaded = Live("i", "fan", "e", "Running", None, "2026-01-01T00:00:00Z", None, history=list(live.history))
    loaded.load_engine_json(stored)
    loaded.catch_up(stored)
    assert [n.get("done") for n in loaded.nodes[0]["c"]] == [True, False] and set(loaded.index) == {1}
