"""The unmodified SDK client and the status URLs it hands out, over real HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from local_runtime import LocalRuntime


def decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw.decode()


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
            return response.status, dict(response.headers), decode(raw)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, dict(err.headers), decode(raw)


def poll(url: str, timeout: float = 10) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        code, _, body = http("GET", url)
        if code == 200:
            return body
        assert code == 202, (code, body)
        time.sleep(0.02)
    raise AssertionError(f"{url} still running")


def test_sdk_client_round_trip(runtime: LocalRuntime) -> None:
    client = df.DurableOrchestrationClient(runtime.durable_client_binding())
    run = runtime.run_coroutine

    instance_id = run(client.start_new("fan_out_in", client_input=5))
    assert runtime.wait_for(instance_id, 5)["output"] == 20
    status = run(client.get_status(instance_id, show_history=True))
    assert status.runtime_status == df.OrchestrationRuntimeStatus.Completed
    assert status.output == 20

    waiting = run(client.start_new("waiter", instance_id="sdk-waiter"))
    assert waiting == "sdk-waiter"
    with pytest.raises(Exception, match="already exists"):
        run(client.start_new("waiter", instance_id="sdk-waiter"))
    run(client.raise_event(waiting, "Go", 3))
    # SDK issue #295: the Python client double-encodes event data, so the orchestrator gets
    # the str "3" (as on Azure) and the activity doubles a string.
    assert runtime.wait_for(waiting, 5)["output"] == "33"

    doomed = run(client.start_new("waiter"))
    run(client.suspend(doomed, "hold"))
    assert run(client.get_status(doomed)).runtime_status == \
        df.OrchestrationRuntimeStatus.Suspended
    run(client.resume(doomed, "go"))
    run(client.terminate(doomed, "stop"))
    assert run(client.get_status(doomed)).runtime_status == \
        df.OrchestrationRuntimeStatus.Terminated

    assert run(client.purge_instance_history(doomed)).instances_deleted == 1
    assert not run(client.get_status(doomed))
    statuses = run(client.get_status_by(runtime_status=[
        df.OrchestrationRuntimeStatus.Completed]))
    assert {s.instance_id for s in statuses} == {instance_id, waiting}
    assert len(run(client.get_status_all())) == 2

    entity = df.EntityId("Counter", "sdk")
    assert not run(client.read_entity_state(entity)).entity_exists
    run(client.signal_entity(entity, "add", 4))
    run(client.signal_entity(entity, "add", 5))
    deadline = time.time() + 5
    state = run(client.read_entity_state(entity))
    while state.entity_state != 9 and time.time() < deadline:
        time.sleep(0.01)
        state = run(client.read_entity_state(entity))
    assert state.entity_exists and state.entity_state == 9

    restarted = run(client.restart(instance_id))
    assert runtime.wait_for(restarted["id"], 5)["output"] == 20


def test_check_status_response_urls_work_when_followed(runtime: LocalRuntime) -> None:
    code, headers, payload = http("POST", f"{runtime.base_url}/api/orchestrators/fan_out_in", 10)
    assert code == 202
    assert headers["Location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(runtime.base_url)
    body = poll(payload["statusQueryGetUri"])
    assert (body["runtimeStatus"], body["output"]) == ("Completed", 90)

    code, _, waiting = http("POST", f"{runtime.base_url}/api/orchestrators/waiter")
    status_code, _, _ = http("GET", waiting["statusQueryGetUri"])
    assert status_code == 202
    assert http("POST", waiting["suspendPostUri"].replace("{text}", "hold"))[0] == 202
    assert http("POST", waiting["resumePostUri"].replace("{text}", "go"))[0] == 202
    assert http("POST", waiting["sendEventPostUri"].replace("{eventName}", "Go"), 7)[0] == 202
    assert poll(waiting["statusQueryGetUri"])["output"] == 14
    assert http("POST", waiting["terminatePostUri"].replace("{text}", "late"))[0] == 410
    code, _, restarted = http("POST", waiting["restartPostUri"])
    assert code == 202 and restarted["id"] != waiting["id"]
    assert http("POST", restarted["terminatePostUri"].replace("{text}", "stop"))[0] == 202
    code, _, purged = http("DELETE", waiting["purgeHistoryDeleteUri"])
    assert (code, purged) == (200, {"instancesDeleted": 1})
    assert http("GET", waiting["statusQueryGetUri"])[0] == 404


def test_hello_world_through_http(runtime: LocalRuntime) -> None:
    code, _, payload = http("POST", f"{runtime.base_url}/api/jobs/hello_world")
    assert code == 202 and "statusQueryGetUri" in payload
    body = poll(payload["statusQueryGetUri"])
    assert body["runtimeStatus"] == "Completed"
    assert body["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_function_keys_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    with LocalRuntime(conformance_app.app, db_path=tmp_path / "k.sqlite", port=0,
                      function_keys={"default": "fkey"}, master_key="mkey") as rt:
        base = rt.base_url
        assert http("GET", f"{base}/api/ping")[0] == 200
        assert http("POST", f"{base}/api/orchestrators/chaining")[0] == 401
        assert http("POST", f"{base}/api/orchestrators/chaining?code=wrong")[0] == 401
        code, _, payload = http("POST", f"{base}/api/orchestrators/chaining",
                                headers={"x-functions-key": "fkey"})
        assert code == 202
        assert f"code={rt.system_key}" in payload["statusQueryGetUri"]
        assert "mkey" not in json.dumps(payload) and "fkey" not in json.dumps(payload)
        assert poll(payload["statusQueryGetUri"])["runtimeStatus"] == "Completed"
        bare = payload["statusQueryGetUri"].split("?")[0]
        assert http("GET", bare)[0] == 401
        assert http("GET", bare, headers={"x-functions-key": "fkey"})[0] == 401
        assert http("GET", f"{bare}?code=mkey")[0] == 200
        assert http("GET", f"{bare}?code={rt.system_key}")[0] == 200
        assert http("POST", f"{base}/api/orchestrators/chaining?code=mkey")[0] == 202


def test_listing_over_http_with_continuation(runtime: LocalRuntime) -> None:
    for i in range(5):
        runtime.wait_for(runtime.start_new("chaining", instance_id=f"h-{i}"), 5)
    url = f"{runtime.base_url}/runtime/webhooks/durabletask/instances?top=2&instanceIdPrefix=h-"
    seen: list[str] = []
    token = None
    while True:
        code, headers, body = http("GET", url, headers={"x-ms-continuation-token": token}
                                   if token else None)
        assert code == 200
        seen += [s["instanceId"] for s in body]
        token = headers.get("x-ms-continuation-token")
        if not token:
            break
    assert seen == [f"h-{i}" for i in range(5)]


def test_create_and_wait_url(runtime: LocalRuntime) -> None:
    binding = json.loads(runtime.durable_client_binding())
    url = binding["creationUrls"]["createAndWaitOnNewInstancePostUri"]
    url = url.replace("{functionName}", "fan_out_in").replace("[/{instanceId}]", "")
    url = url.replace("{timeoutInSeconds}", "10").replace("{intervalInSeconds}", "1")
    code, _, body = http("POST", url, 4)
    assert (code, body) == (200, 12)


def test_sdk_client_filters_by_time_and_purges_by_filter(runtime: LocalRuntime) -> None:
    from datetime import datetime, timedelta, timezone

    client = df.DurableOrchestrationClient(runtime.durable_client_binding())
    run = runtime.run_coroutine
    start = datetime.now(timezone.utc) - timedelta(seconds=5)
    finished = [runtime.start_new("chaining") for _ in range(3)]
    for instance_id in finished:
        runtime.wait_for(instance_id, 5)
    live = runtime.start_new("waiter")
    window = run(client.get_status_by(created_time_from=start,
                                      created_time_to=datetime.now(timezone.utc)
                                      + timedelta(seconds=5)))
    assert {s.instance_id for s in window} == {*finished, live}
    assert run(client.get_status_by(created_time_to=start)) == []
    purged = run(client.purge_instance_history_by(
        created_time_from=start,
        runtime_status=[df.OrchestrationRuntimeStatus.Completed]))
    assert purged.instances_deleted == 3
    assert [s.instance_id for s in run(client.get_status_all())] == [live]
    assert run(client.purge_instance_history_by(created_time_from=start)).instances_deleted == 0
    run(client.terminate(live, "done"))


def test_webhook_start_with_raw_json_body_and_sub_orchestration_ids(runtime: LocalRuntime) -> None:
    hook = f"{runtime.base_url}/runtime/webhooks/durabletask"
    code, _, payload = http("POST", f"{hook}/orchestrators/fan_out_in", 7)
    assert code == 202
    body = poll(payload["statusQueryGetUri"])
    assert (body["input"], body["output"]) == (7, 42)
    parent = runtime.start_new("parent", [1, 2])
    runtime.wait_for(parent, 5)
    children = [s for s in runtime.list_instances(page_size=None).instances
                if s["name"] == "child"]
    assert len(children) == 2 and all(":" in s["instanceId"] for s in children)
    for child in children:
        code, _, status = http("GET", f"{hook}/instances/{child['instanceId']}")
        assert code == 200 and status["runtimeStatus"] == "Completed"
