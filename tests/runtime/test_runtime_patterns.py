"""The documented Durable patterns give their documented results on the embedded runtime."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runtime import LocalRuntime
from local_state import ActivityTiming, timing_summary


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[LocalRuntime]:
    import patterns_app

    with LocalRuntime(patterns_app.app, db_path=tmp_path / "patterns.sqlite", port=0) as runtime:
        yield runtime


def test_function_chaining(rt: LocalRuntime) -> None:
    status = rt.wait_for(rt.start_new("e1_hello_sequence"), 10)
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_fan_out_fan_in(rt: LocalRuntime) -> None:
    status = rt.wait_for(rt.start_new("e2_backup_site_content", "D:/home"), 10)
    assert status["output"] == sum(100 * (i + 1) for i in range(12))


def test_each_activity_is_timed_from_scheduled_to_completed(rt: LocalRuntime) -> None:
    """The engine records every activity of a fan-out once: scheduled (its TaskScheduled time), started
    and finished in the worker, completed (its TaskCompleted time), in that order."""
    rt._call(rt.engine.activity_timings.clear)
    rt.wait_for(rt.start_new("e2_backup_site_content", "D:/home"), 10)
    records = rt._call(lambda: list(rt.engine.activity_timings.records))
    assert sorted(r.name for r in records) == ["e2_copy_file_to_blob"] * 12 + ["e2_get_file_list"]
    for r in records:  # one clock (time.time()) in the host and its pool threads; the history's is ms-rounded
        assert r.scheduled - 0.002 <= r.started <= r.finished <= r.completed + 0.002, r
    summary = rt._call(rt.engine.activity_timings.summary)
    assert summary["activities"] == 13 and summary["by_activity"]["e2_copy_file_to_blob"]["count"] == 12
    assert not rt.engine.activity_timings._scheduled  # nothing left in flight


def test_dispatch_gaps_count_a_worker_idle_only_while_a_task_waited() -> None:
    """Worker w runs a (0 → 1); b, scheduled at 0, starts at 1.5: 0.5 s of dispatch gap; c, scheduled at
    3 (nothing waited from 2 to 3), starts at 3.25: 0.25 s. Queue waits 0, 1.5, 0.25."""
    records = [ActivityTiming("x", "w", 0.0, 0.0, 1.0, 1.1), ActivityTiming("x", "w", 0.0, 1.5, 2.0, 2.1),
               ActivityTiming("x", "w", 3.0, 3.25, 4.0, 4.5)]
    summary = timing_summary(records)
    assert summary["dispatch_gap_ms"]["sum"] == 750.0
    assert summary["queue_wait_ms"] == {"p50": 250.0, "p95": 250.0, "sum": 1750.0}
    assert summary["result_ms"]["sum"] == 700.0 and summary["run_ms"]["sum"] == 2250.0
    assert summary["span"] == {"first_scheduled": 0.0, "first_started": 0.0, "last_finished": 4.0,
                               "last_completed": 4.5}


def test_human_interaction_approved(rt: LocalRuntime) -> None:
    code = 1000 + sum(ord(c) for c in "+1425") % 9000
    instance_id = rt.start_new("e4_sms_phone_verification", {"phone": "+1425", "timeout_s": 30})
    time.sleep(0.1)
    rt.raise_event(instance_id, "SmsChallengeResponse", 1)
    rt.raise_event(instance_id, "SmsChallengeResponse", code)
    status = rt.wait_for(instance_id, 10)
    assert status["output"] is True


def test_human_interaction_times_out(rt: LocalRuntime) -> None:
    instance_id = rt.start_new("e4_sms_phone_verification", {"phone": "+1", "timeout_s": 0.2})
    assert rt.wait_for(instance_id, 10)["output"] is False


def test_monitor(rt: LocalRuntime) -> None:
    instance_id = rt.start_new("e3_monitor", {"id": "job-7", "expiry_s": 30, "interval_ms": 50})
    status = rt.wait_for(instance_id, 10)
    assert status["output"] == {"job": "job-7", "status": "Completed", "polls": 3}
    assert status["customStatus"] == {"polls": 3, "status": "Completed"}


def test_monitor_expires(rt: LocalRuntime) -> None:
    instance_id = rt.start_new("e3_monitor", {"id": "job-8", "expiry_s": 0.15,
                                              "interval_ms": 100})
    status = rt.wait_for(instance_id, 10)
    assert status["output"]["status"] == "Expired"
    assert status["output"]["polls"] in (1, 2)


def test_counter_entity(rt: LocalRuntime) -> None:
    assert rt.wait_for(rt.start_new("counter_orchestration", "c1"), 10)["output"] == 7
    rt.signal_entity("Counter", "c2", "add", 1)
    rt.signal_entity("Counter", "c2", "add", 1)
    rt.signal_entity("Counter", "c2", "add", 1)
    deadline = time.time() + 5
    while rt.read_entity("Counter", "c2") != (True, 3) and time.time() < deadline:
        time.sleep(0.01)
    assert rt.read_entity("Counter", "c2") == (True, 3)
    rt.signal_entity("Counter", "c2", "reset")
    deadline = time.time() + 5
    while rt.read_entity("Counter", "c2") != (True, 0) and time.time() < deadline:
        time.sleep(0.01)
    assert rt.read_entity("Counter", "c2") == (True, 0)


def test_fan_out_awaited_in_groups_replays_once_per_group(rt: LocalRuntime) -> None:
    """task_any over task_alls: completions that finish no group are recorded without running the
    orchestrator (it would resume nothing); each finished group resumes it."""
    before = dict(vars(rt.engine.replay_stats))
    status = rt.wait_for(rt.start_new("grouped_fan_out"), 20)
    assert status["output"] == sum(n * n for n in range(40))
    assert status["customStatus"] == {"groups": 2}
    stats = vars(rt.engine.replay_stats)
    assert stats["invoked"] - before["invoked"] <= 3  # the start and one per group
    assert stats["elided"] - before["elided"] >= 1
