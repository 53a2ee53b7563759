"""Conformance: each Durable action carried out as the extension does."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from local_runtime import LocalRuntime


def run(rt: LocalRuntime, name: str, payload: object = None, timeout: float = 20) -> dict:
    return rt.wait_for(rt.start_new(name, payload), timeout)


def test_fan_out_fan_in_with_task_all(runtime: LocalRuntime) -> None:
    status = run(runtime, "fan_out_in", 100)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == sum(2 * i for i in range(100))


def test_task_any_activity_beats_timer_and_timer_is_cancelled(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("race", 30)
    status = runtime.wait_for(instance_id, 10)
    assert status["output"] == {"winner": "activity", "result": 42}
    history = runtime.get_status(instance_id, show_history=True)["historyEvents"]
    assert not [e for e in history if e["EventType"] == "TimerFired"]


def test_task_any_timer_wins_over_slow_event(runtime: LocalRuntime) -> None:
    status = run(runtime, "approval", 0.2)
    assert status["output"] == {"approved": None, "timed_out": True}


def test_sub_orchestrations_succeed(runtime: LocalRuntime) -> None:
    status = run(runtime, "parent", [1, 2, 3])
    assert status["output"] == {"ok": [2, 4, 6]}


def test_sub_orchestration_failure_surfaces_in_parent(runtime: LocalRuntime) -> None:
    status = run(runtime, "parent", [1, -7])
    assert status["runtimeStatus"] == "Completed"
    assert "child refuses -7" in status["output"]["error"]
    assert "Orchestrator function 'child' failed" in status["output"]["error"]


def test_uncaught_sub_orchestration_failure_fails_parent(runtime: LocalRuntime) -> None:
    status = run(runtime, "parent_sequential")
    assert status["runtimeStatus"] == "Failed"
    assert "child refuses -1" in status["output"]


def test_retry_succeeds_on_attempt_k(runtime: LocalRuntime) -> None:
    status = run(runtime, "retrying", {"key": "retry-k", "succeed_on": 3, "max": 5})
    assert status["output"] == "retry-k ok on attempt 3"


def test_retry_fails_after_max_attempts(runtime: LocalRuntime) -> None:
    status = run(runtime, "retrying", {"key": "retry-max", "succeed_on": 99, "max": 3})
    assert "attempt 3 of retry-max failed" in status["output"]["failed"]
    import conformance_app

    assert conformance_app.ATTEMPTS["retry-max"] == 3


def test_retries_inside_fan_out_and_race(runtime: LocalRuntime) -> None:
    status = run(runtime, "retry_fan", "rf")
    assert status["output"][:3] == ["rf-0 ok on attempt 1", "rf-1 ok on attempt 2",
                                    "rf-2 ok on attempt 3"]
    assert status["output"][-1] == 8


def test_many_concurrent_mixed_instances_stay_in_sync(runtime: LocalRuntime) -> None:
    ids = []
    for i in range(10):
        ids.append(runtime.start_new("retry_fan", f"mix{i}"))
        ids.append(runtime.start_new("race", 30))
        ids.append(runtime.start_new("approval", 0.1))
    for instance_id in ids:
        assert runtime.wait_for(instance_id, 30)["runtimeStatus"] == "Completed"


def test_entity_signal_call_read_and_failing_operation(runtime: LocalRuntime) -> None:
    status = run(runtime, "entity_user", "conf")
    assert status["output"] == {"after_add": 15, "current": 15,
                                "failure": "counter cannot fail politely"}
    runtime.signal_entity("Counter", "conf", "add", 7)
    deadline = time.time() + 5
    while runtime.read_entity("Counter", "conf") != (True, 22) and time.time() < deadline:
        time.sleep(0.01)
    assert runtime.read_entity("Counter", "conf") == (True, 22)
    assert runtime.read_entity("Counter", "nobody") == (False, None)


def test_external_event_arrives_before_timeout(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("approval", 30)
    time.sleep(0.1)
    runtime.raise_event(instance_id, "Approval", {"by": "alice"})
    assert runtime.wait_for(instance_id, 10)["output"] == {"approved": {"by": "alice"}}


def test_external_event_raised_before_the_wait_is_buffered(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    runtime.raise_event(instance_id, "Go", 21)
    assert runtime.wait_for(instance_id, 10)["output"] == 42


def test_continue_as_new(runtime: LocalRuntime) -> None:
    status = run(runtime, "looping", {"n": 0, "total": 0})
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == sum(2 * n for n in range(5))


def test_custom_status_visible_through_status_url_while_running(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    url = json.loads(runtime.durable_client_binding())["managementUrls"]["statusQueryGetUri"]
    url = url.replace("INSTANCEID", instance_id)
    deadline = time.time() + 5
    body: dict = {}
    while time.time() < deadline:
        with urllib.request.urlopen(url) as response:
            assert response.status == 202
            body = json.loads(response.read())
        if body.get("customStatus"):
            break
        time.sleep(0.02)
    assert body["runtimeStatus"] == "Running"
    assert body["customStatus"] == {"stage": "waiting"}
    runtime.raise_event(instance_id, "Go", 1)
    assert runtime.wait_for(instance_id, 10)["customStatus"] == {"stage": "working"}


def test_orchestrator_that_raises_ends_failed_with_message(runtime: LocalRuntime) -> None:
    status = run(runtime, "failing")
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == "Orchestrator function 'failing' failed: orchestrator gave up"


def test_activity_failure_fails_orchestrator_with_activity_message(
        runtime: LocalRuntime) -> None:
    status = run(runtime, "activity_failure")
    assert status["runtimeStatus"] == "Failed"
    assert "Activity function 'explode' failed: ValueError: kaboom" in status["output"]


@pytest.mark.parametrize("count", [1, 2, 500])
def test_fan_out_sizes(runtime: LocalRuntime, count: int) -> None:
    assert run(runtime, "fan_out_in", count)["output"] == count * (count - 1)


def test_gate_waits_for_slow_sibling_before_new_work(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("gate_after_failure")
    status = runtime.wait_for(instance_id, 10)
    assert status["output"] == 2
    events = runtime.get_status(instance_id, show_history=True)["historyEvents"]
    completed = {e["FunctionName"]: e for e in events if e["EventType"] == "TaskCompleted"}
    assert completed["double"]["ScheduledTime"] >= completed["slow"]["Timestamp"]


def test_nested_task_all_and_task_any(runtime: LocalRuntime) -> None:
    status = run(runtime, "nested")
    assert status["output"] == {"race": 2, "pair": [4, 6], "inner": [8]}


def test_sub_orchestration_retry_succeeds_on_attempt_k(runtime: LocalRuntime) -> None:
    status = run(runtime, "sub_retry", {"key": "sub-k", "succeed_on": 3, "max": 4})
    assert status["output"] == "sub-k ok on attempt 3"


def test_sub_orchestration_retry_with_fixed_child_id_fails_after_max(
        runtime: LocalRuntime) -> None:
    status = run(runtime, "sub_retry",
                 {"key": "sub-max", "succeed_on": 9, "max": 2, "child_id": "fixed-child"})
    assert "attempt 2 of sub-max failed" in status["output"]["failed"]
    assert runtime.get_status("fixed-child")["runtimeStatus"] == "Failed"


def test_name_overrides_and_blueprints(runtime: LocalRuntime) -> None:
    assert run(runtime, "AliasedOrchestration", "hey")["output"] == "HEY"
    assert run(runtime, "aliasedorchestration", "case")["output"] == "CASE"
    assert run(runtime, "blueprint_orchestration", "abc")["output"] == "cba"


def test_event_goes_to_latest_wait_after_a_stale_one(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("stale_wait")
    time.sleep(0.3)
    runtime.raise_event(instance_id, "Ping", 5)
    assert runtime.wait_for(instance_id, 10)["output"] == 10


def test_suspended_instance_does_not_spin(runtime: LocalRuntime) -> None:
    import os

    instance_id = runtime.start_new("waiter")
    time.sleep(0.1)
    runtime.suspend(instance_id)
    runtime.raise_event(instance_id, "Go", 1)
    cpu_before = os.times()
    time.sleep(0.5)
    cpu_after = os.times()
    used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    assert used < 0.25, f"scheduler busy while suspended ({used:.2f}s CPU in 0.5s)"
    runtime.resume(instance_id)
    assert runtime.wait_for(instance_id, 5)["output"] == 2


def test_chaos_mix_of_every_action_stays_in_sync(runtime: LocalRuntime) -> None:
    ids = [runtime.start_new("chaos", seed) for seed in range(40)]
    for instance_id in ids:
        status = runtime.wait_for(instance_id, 60)
        assert status["runtimeStatus"] == "Completed", status
        assert len(status["output"]) == 4
