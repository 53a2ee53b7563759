"""Management operations with the extension's semantics."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

import local_runtime
from local_runtime import LocalRuntime


def wait_status(rt: LocalRuntime, instance_id: str, wanted: str, timeout: float = 5) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = rt.get_status(instance_id)
        if status and status["runtimeStatus"] == wanted:
            return status
        time.sleep(0.01)
    raise AssertionError(f"{instance_id} never reached {wanted}: {rt.get_status(instance_id)}")


def test_terminate(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    wait_status(runtime, instance_id, "Running")
    runtime.terminate(instance_id, "enough")
    status = runtime.wait_for(instance_id, 5)
    assert status["runtimeStatus"] == "Terminated"
    assert status["output"] == "enough"
    with pytest.raises(local_runtime.InstanceNotRunning):
        runtime.raise_event(instance_id, "Go", 1)


def test_suspend_and_resume(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    wait_status(runtime, instance_id, "Running")
    runtime.suspend(instance_id, "pause")
    runtime.raise_event(instance_id, "Go", 4)
    time.sleep(0.2)
    assert runtime.get_status(instance_id)["runtimeStatus"] == "Suspended"
    runtime.resume(instance_id, "go on")
    status = runtime.wait_for(instance_id, 5)
    assert (status["runtimeStatus"], status["output"]) == ("Completed", 8)
    history = runtime.get_status(instance_id, show_history=True)["historyEvents"]
    marks = [(e["EventType"], e.get("Reason")) for e in history
             if e["EventType"] in ("ExecutionSuspended", "ExecutionResumed")]
    assert marks == [("ExecutionSuspended", "pause"), ("ExecutionResumed", "go on")]


def test_termination_is_recorded_in_the_history(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    wait_status(runtime, instance_id, "Running")
    runtime.terminate(instance_id, "no longer needed")
    history = runtime.get_status(instance_id, show_history=True,
                                 show_history_output=True)["historyEvents"]
    assert [(e["EventType"], e.get("Input"), e.get("OrchestrationStatus"), e.get("Result"))
            for e in history[-2:]] == [
        ("ExecutionTerminated", "no longer needed", None, None),
        ("ExecutionCompleted", None, "Terminated", "no longer needed")]


def test_purge(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("chaining")
    runtime.wait_for(instance_id, 5)
    assert runtime.purge(instance_id) == 1
    assert runtime.get_status(instance_id) is None
    with pytest.raises(local_runtime.InstanceNotFound):
        runtime.purge(instance_id)


def test_purge_refuses_running_instance(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("waiter")
    with pytest.raises(local_runtime.InstanceStillRunning):
        runtime.purge(instance_id)
    runtime.terminate(instance_id)


def test_start_with_id_refused_while_running_allowed_when_finished(runtime: LocalRuntime) -> None:
    runtime.start_new("waiter", instance_id="fixed-id")
    with pytest.raises(local_runtime.InstanceAlreadyRunning):
        runtime.start_new("chaining", instance_id="fixed-id")
    runtime.raise_event("fixed-id", "Go", 2)
    assert runtime.wait_for("fixed-id", 5)["output"] == 4
    assert runtime.start_new("chaining", instance_id="fixed-id") == "fixed-id"
    assert runtime.wait_for("fixed-id", 5)["output"][0] == "Hello Tokyo!"


def test_unknown_orchestrator_is_refused(runtime: LocalRuntime) -> None:
    with pytest.raises(local_runtime.UnknownFunction):
        runtime.start_new("no_such_orchestrator")


def test_restart(runtime: LocalRuntime) -> None:
    first = runtime.start_new("fan_out_in", 10)
    runtime.wait_for(first, 5)
    second = runtime.restart(first)
    assert second != first
    assert runtime.wait_for(second, 5)["output"] == 90
    assert runtime.restart(first, new_instance_id=False) == first
    assert runtime.wait_for(first, 5)["output"] == 90


def test_status_history_on_request(runtime: LocalRuntime) -> None:
    instance_id = runtime.start_new("chaining")
    runtime.wait_for(instance_id, 5)
    assert "historyEvents" not in runtime.get_status(instance_id)
    events = runtime.get_status(instance_id, show_history=True)["historyEvents"]
    kinds = [e["EventType"] for e in events]
    assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionCompleted"
    assert kinds.count("TaskCompleted") == 3


def test_list_filter_and_paging(runtime: LocalRuntime) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    done = [runtime.start_new("chaining", instance_id=f"batch-{i:02d}") for i in range(7)]
    for instance_id in done:
        runtime.wait_for(instance_id, 5)
    running = runtime.start_new("waiter", instance_id="other-1")
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = runtime.list_instances(instance_id_prefix="batch-", page_size=3,
                                      continuation_token=token)
        seen.extend(s["instanceId"] for s in page.instances)
        pages += 1
        token = page.continuation_token
        if token is None:
            break
    assert seen == done and pages == 3
    completed = runtime.list_instances(runtime_status=["Completed"], page_size=None)
    assert {s["instanceId"] for s in completed.instances} == set(done)
    live = runtime.list_instances(runtime_status=["Running", "Pending"])
    assert [s["instanceId"] for s in live.instances] == [running]
    later = runtime.list_instances(created_from=datetime.now(timezone.utc) + timedelta(hours=1))
    assert later.instances == []
    assert len(runtime.list_instances(created_from=before).instances) == 8
    runtime.terminate(running)


def test_refuses_open_non_loopback_bind(tmp_path) -> None:
    import conformance_app

    with pytest.raises(local_runtime.RuntimeConfigError):
        LocalRuntime(conformance_app.app, db_path=tmp_path / "x.sqlite", host="0.0.0.0")


def test_two_runtimes_over_the_same_app_object(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    for n in range(2):
        with LocalRuntime(conformance_app.app, db_path=tmp_path / f"{n}.sqlite", port=0) as rt:
            assert rt.wait_for(rt.start_new("fan_out_in", 3), 5)["output"] == 6


def test_host_settings_read_like_core_tools(tmp_path) -> None:
    import json

    (tmp_path / "host.json").write_text(json.dumps({
        "version": "2.0",
        "extensions": {"durableTask": {"hubName": "RmhHub", "maxConcurrentActivityFunctions": 3},
                       "http": {"routePrefix": ""}}}))
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False, "Values": {"TICK_SCHEDULE": "0 */5 * * * *"}}))
    settings = local_runtime.read_host_settings(tmp_path)
    assert settings.max_activity_workers == 3
    assert settings.task_hub == "RmhHub"
    assert settings.route_prefix == ""
    assert settings.values == {"TICK_SCHEDULE": "0 */5 * * * *"}
    assert local_runtime.read_host_settings(tmp_path / "missing").task_hub == "LocalTaskHub"


def test_sdk_session_from_another_loop_is_not_reused(runtime: LocalRuntime) -> None:
    import asyncio
    import json
    import urllib.request

    import aiohttp
    from azure.durable_functions.models.utils import http_utils

    async def foreign_session() -> None:
        http_utils._client_session = aiohttp.ClientSession()

    asyncio.run(foreign_session())
    request = urllib.request.Request(f"{runtime.base_url}/api/jobs/hello_world", data=b"",
                                     method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
        instance_id = json.loads(response.read())["id"]
    assert runtime.wait_for(instance_id, 5)["runtimeStatus"] == "Completed"


def test_host_json_hub_name_setting_is_resolved(tmp_path) -> None:
    import json

    (tmp_path / "host.json").write_text(json.dumps({
        "version": "2.0", "extensions": {"durableTask": {"hubName": "%HUB_SETTING%"}}}))
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False, "Values": {"HUB_SETTING": "rmhgeoapi"}}))
    assert local_runtime.read_host_settings(tmp_path).task_hub == "rmhgeoapi"
    (tmp_path / "local.settings.json").unlink()
    assert local_runtime.read_host_settings(tmp_path).task_hub == "LocalTaskHub"
