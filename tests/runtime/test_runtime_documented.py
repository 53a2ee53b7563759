"""Conformance: the documented application patterns, with the documented outputs and the
documented answers of the HTTP API (status codes, headers, payload and history shapes)."""

from __future__ import annotations

import json
import time

import azure.durable_functions as df
import pytest

import documented_app
from local_runtime import LocalRuntime
from web import call, follow

HOOK = "/runtime/webhooks/durabletask"
CHECK_STATUS_KEYS = {"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri",
                     "rewindPostUri", "purgeHistoryDeleteUri", "restartPostUri",
                     "suspendPostUri", "resumePostUri"}
STATUS_KEYS = {"name", "instanceId", "runtimeStatus", "input", "customStatus", "output",
               "createdTime", "lastUpdatedTime"}


def start_over_http(rt: LocalRuntime, name: str, payload: object = None) -> dict:
    reply = call("POST", f"{rt.base_url}/api/orchestrators/{name}", payload)
    assert reply.status == 202, reply
    assert reply.headers["Location"] == reply.body["statusQueryGetUri"]
    assert reply.headers["Retry-After"] == "10"
    assert set(reply.body) == CHECK_STATUS_KEYS
    return reply.body


def test_function_chaining_through_the_async_http_api(docs: LocalRuntime) -> None:
    urls = start_over_http(docs, "E1_HelloSequence")
    reply = follow(urls["statusQueryGetUri"])
    assert reply.status == 200
    assert set(reply.body) == STATUS_KEYS
    assert reply.body["name"] == "E1_HelloSequence"
    assert reply.body["runtimeStatus"] == "Completed"
    assert reply.body["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    assert reply.body["createdTime"].endswith("Z") and len(reply.body["createdTime"]) == 20


def test_running_status_is_202_with_location_and_retry_after(docs: LocalRuntime) -> None:
    documented_app.STATE["sms_timeout_s"] = 30
    urls = start_over_http(docs, "E4_SmsPhoneVerification", "+1425555")
    reply = call("GET", urls["statusQueryGetUri"])
    assert reply.status == 202
    assert reply.headers["Location"] == urls["statusQueryGetUri"]
    assert reply.headers["Retry-After"] == "5"
    assert reply.body["runtimeStatus"] in ("Pending", "Running")
    assert call("POST", urls["terminatePostUri"].replace("{text}", "done")).status == 202


def test_history_in_the_extension_shape(docs: LocalRuntime) -> None:
    instance_id = docs.start_new("E1_HelloSequence")
    docs.wait_for(instance_id, 10)
    url = f"{docs.base_url}{HOOK}/instances/{instance_id}?showHistory=true&showHistoryOutput=true"
    events = call("GET", url).body["historyEvents"]
    assert [e["EventType"] for e in events] == [
        "ExecutionStarted", "TaskCompleted", "TaskCompleted", "TaskCompleted",
        "ExecutionCompleted"]
    started, *tasks, completed = events
    assert started["FunctionName"] == "E1_HelloSequence"
    assert not {"Name", "EventId", "IsPlayed", "OrchestrationInstance", "Tags"} & set(started)
    for task, city in zip(tasks, ["Tokyo", "Seattle", "London"]):
        assert task["FunctionName"] == "E1_SayHello"
        assert task["Result"] == f"Hello {city}!"
        assert task["Input"] == f'"{city}"'
        assert task["ScheduledTime"] <= task["Timestamp"]
        assert not {"TaskScheduledId", "EventId", "IsPlayed"} & set(task)
    assert completed["OrchestrationStatus"] == "Completed"
    assert completed["Result"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    without_output = call("GET", url.replace("&showHistoryOutput=true", "")).body
    assert all("Result" not in e for e in without_output["historyEvents"])


def test_show_input_false_hides_inputs_everywhere(docs: LocalRuntime) -> None:
    instance_id = docs.start_new("E2_BackupSiteContent", "/site")
    docs.wait_for(instance_id, 10)
    base = f"{docs.base_url}{HOOK}/instances/{instance_id}"
    shown = call("GET", f"{base}?showHistory=true").body
    assert shown["input"] == '"/site"'  # a Python client double-encodes inputs
    assert any("Input" in e for e in shown["historyEvents"])
    hidden = call("GET", f"{base}?showHistory=true&showInput=false").body
    assert hidden["input"] is None
    assert not any("Input" in e for e in hidden["historyEvents"])
    listed = call("GET", f"{docs.base_url}{HOOK}/instances?showInput=false").body
    assert [s["input"] for s in listed] == [None]


def test_fan_out_fan_in(docs: LocalRuntime) -> None:
    documented_app.STATE["files"] = 25
    status = docs.wait_for(docs.start_new("E2_BackupSiteContent", "/site"), 20)
    assert status["output"] == sum(len(f"/site/file{i}.txt") for i in range(25))
    failed = docs.wait_for(docs.start_new("E2_BackupSiteContent", ""), 10)
    assert failed["runtimeStatus"] == "Failed"
    assert "A directory path is required as input" in failed["output"]


def test_monitor_polls_until_the_condition_then_alerts(docs: LocalRuntime) -> None:
    documented_app.STATE["done_after:job-1"] = 3
    instance_id = docs.start_new("E3_Monitor", {"job_id": "job-1", "interval_ms": 50,
                                                "expiry_s": 30})
    status = docs.wait_for(instance_id, 20)
    assert status["output"] == {"status": "alerted", "checks": 3}
    assert status["customStatus"] == {"checks": 2, "job": "Running"}
    documented_app.STATE["done_after:never"] = 10 ** 6
    expired = docs.wait_for(docs.start_new("E3_Monitor", {"job_id": "never", "interval_ms": 100,
                                                          "expiry_s": 0.25}), 20)
    assert expired["output"]["status"] == "expired"


@pytest.mark.parametrize(("answers", "expected"), [("right", True), ("wrong", False),
                                                   ("none", False)])
def test_human_interaction(docs: LocalRuntime, answers: str, expected: bool) -> None:
    documented_app.STATE["sms_timeout_s"] = 0.5 if answers == "none" else 30
    urls = start_over_http(docs, "E4_SmsPhoneVerification", "+1425555")
    deadline = time.time() + 10
    while "sms:+1425555" not in documented_app.STATE and time.time() < deadline:
        time.sleep(0.01)
    code = int(documented_app.STATE["sms:+1425555"])
    send = urls["sendEventPostUri"].replace("{eventName}", "SmsChallengeResponse")
    if answers == "right":
        assert call("POST", send, code).status == 202
    elif answers == "wrong":
        for attempt in range(3):
            assert call("POST", send, code + 1 + attempt).status == 202
    reply = follow(urls["statusQueryGetUri"])
    assert (reply.status, reply.body["output"]) == (200, expected)
    assert call("POST", send, code).status == 410


def test_durable_entities(docs: LocalRuntime) -> None:
    assert docs.wait_for(docs.start_new("counter_orchestration", "c1"), 10)["output"] == 3
    hook = f"{docs.base_url}{HOOK}/entities"
    # The Python entity decodes its input twice, so the body is JSON text of a JSON string, as
    # the SDK client sends it (a bare 4 fails the operation, on Azure too).
    assert call("POST", f"{hook}/Counter/c1?op=add", "4").status == 202
    assert call("POST", f"{hook}/Counter/c2?op=add", "10").status == 202
    deadline = time.time() + 5
    while call("GET", f"{hook}/Counter/c1").body != 7 and time.time() < deadline:
        time.sleep(0.01)
    assert call("GET", f"{hook}/Counter/c1").body == 7
    assert call("GET", f"{hook}/Counter/nobody").status == 404
    while call("GET", f"{hook}/Counter/c2").status != 200 and time.time() < deadline:
        time.sleep(0.01)
    listed = call("GET", f"{hook}/Counter?fetchState=true").body
    assert [(e["entityId"], e["state"]) for e in listed] == [
        ({"name": "counter", "key": "c1"}, 7), ({"name": "counter", "key": "c2"}, 10)]
    assert all(e["lastOperationTime"].endswith("Z") for e in listed)
    page = call("GET", f"{hook}/Counter?top=1")
    assert [e["entityId"]["key"] for e in page.body] == ["c1"] and page.body[0]["state"] is None
    token = page.headers["x-ms-continuation-token"]
    rest = call("GET", f"{hook}/Counter?top=1", headers={"x-ms-continuation-token": token})
    assert [e["entityId"]["key"] for e in rest.body] == ["c2"]
    assert "x-ms-continuation-token" not in rest.headers
    assert call("GET", f"{hook}/Counter/bad%2Fkey").status == 400
    assert call("POST", f"{hook}/NoSuchEntity/k?op=add", 1).status == 400


def test_sub_orchestrations(docs: LocalRuntime) -> None:
    status = docs.wait_for(docs.start_new("ProvisionNewDevices", ["d1", "d2", "d3"]), 20)
    assert status["output"] == ["d1 provisioned", "d2 provisioned", "d3 provisioned"]
    history = docs.get_status(status["instanceId"], show_history=True)["historyEvents"]
    subs = [e for e in history if e["EventType"] == "SubOrchestrationInstanceCompleted"]
    assert [e["FunctionName"] for e in subs] == ["DeviceProvisioningOrchestration"] * 3


def test_automatic_retry_on_failure(docs: LocalRuntime) -> None:
    documented_app.STATE["succeed_on:r1"] = 3
    status = docs.wait_for(docs.start_new("retry_orchestration", "r1"), 20)
    assert status["output"] == "r1: succeeded on attempt 3"
    documented_app.STATE["succeed_on:r2"] = 99
    status = docs.wait_for(docs.start_new("retry_orchestration", "r2"), 20)
    assert status["runtimeStatus"] == "Failed"
    assert "Activity function 'FlakyActivity' failed: ConnectionError: r2: attempt 3 failed" \
        in status["output"]
    assert documented_app.STATE["attempt:r2"] == 3
    history = docs.get_status(status["instanceId"], show_history=True)["historyEvents"]
    failures = [e for e in history if e["EventType"] == "TaskFailed"]
    assert len(failures) == 3 and {e["FunctionName"] for e in failures} == {"FlakyActivity"}
    details = json.loads(failures[-1]["Details"])
    assert details["Message"] == "ConnectionError: r2: attempt 3 failed"
    assert details["InnerException"]["RemoteTypeName"] == "ConnectionError"
    assert "documented_app.py" in details["InnerException"]["RemoteStackTrace"]


def test_eternal_orchestration(docs: LocalRuntime) -> None:
    documented_app.STATE["cleanup_rounds"] = 4
    instance_id = docs.start_new("Periodic_Cleanup_Loop", 0)
    status = docs.wait_for(instance_id, 20)
    assert status["output"] == "cleaned 4 times"
    assert documented_app.STATE["cleanups"] == 4
    history = docs.get_status(instance_id, show_history=True)["historyEvents"]
    assert [e["Input"] for e in history if e["EventType"] == "ExecutionStarted"] == ["3"]


def test_activity_with_a_durable_client_binding(docs: LocalRuntime) -> None:
    status = docs.wait_for(docs.start_new("approval_workflow"), 20)
    # SDK issue #295: the Python client's raise_event encodes the data twice (as on Azure).
    assert status["output"] == {"approved_by": '"the activity"'}
    history = docs.get_status(status["instanceId"], show_history=True,
                              show_history_output=True)["historyEvents"]
    assert [e["Result"] for e in history if e.get("FunctionName") == "request_approval"] == [
        "Running"]
    status = docs.wait_for(docs.start_new("starter_from_activity", "x"), 20)
    assert status["output"] == "child-of-x"
    assert docs.wait_for("child-of-x", 10)["output"][0] == "Hello Tokyo!"


def test_activity_with_a_client_in_a_process_pool(tmp_path) -> None:
    ref = f"{documented_app.__file__}:app"
    with LocalRuntime(ref, db_path=tmp_path / "p.sqlite", port=0, activity_pool="process",
                      max_activity_workers=1) as rt:
        status = rt.wait_for(rt.start_new("approval_workflow"), 60)
    assert status["output"] == {"approved_by": '"the activity"'}


def test_management_answers(docs: LocalRuntime) -> None:
    hook = f"{docs.base_url}{HOOK}"
    done = docs.start_new("E1_HelloSequence")
    docs.wait_for(done, 10)
    failed = docs.start_new("E2_BackupSiteContent", "")
    docs.wait_for(failed, 10)
    missing = call("GET", f"{hook}/instances/no-such-instance")
    assert missing.status == 404 and "no-such-instance" in missing.body["Message"]
    assert call("POST", f"{hook}/instances/{done}/terminate?reason=x").status == 410
    assert call("POST", f"{hook}/instances/{done}/suspend").status == 410
    assert call("POST", f"{hook}/instances/{done}/raiseEvent/E", 1).status == 410
    assert call("POST", f"{hook}/instances/no-such/terminate").status == 404
    assert call("POST", f"{hook}/instances/{done}/rewind").status == 410
    assert call("GET", f"{hook}/instances/{failed}").status == 200
    assert call("GET", f"{hook}/instances/{failed}?returnInternalServerErrorOnFailure=true"
                ).status == 500
    no_from = call("DELETE", f"{hook}/instances")
    assert no_from.status == 400
    assert no_from.body["Message"] == "Please provide value for 'createdTimeFrom' parameter."
    bad_from = call("DELETE", f"{hook}/instances?createdTimeFrom=yesterday-ish")
    assert bad_from.status == 400
    assert call("DELETE", f"{hook}/instances?createdTimeFrom=2099-01-01T00:00:00Z").status == 404
    purged = call("DELETE", f"{hook}/instances?createdTimeFrom=2000-01-01T00:00:00Z"
                            "&runtimeStatus=Failed")
    assert (purged.status, purged.body) == (200, {"instancesDeleted": 1})
    assert docs.get_status(failed) is None and docs.get_status(done) is not None
    assert call("DELETE", f"{hook}/instances/{failed}").status == 404
    assert call("POST", f"{hook}/instances/{done}/restart?restartWithNewInstanceId=false"
                ).status == 202
    assert call("POST", f"{hook}/orchestrators/NoSuchOrchestrator").status == 400
    wrong_type = call("POST", f"{hook}/instances/{done}/raiseEvent/E", data=b"1",
                      headers={"Content-Type": "text/plain"})
    assert wrong_type.status in (400, 410)


def test_raise_event_needs_json_content(docs: LocalRuntime) -> None:
    documented_app.STATE["sms_timeout_s"] = 30
    instance_id = docs.start_new("E4_SmsPhoneVerification", "+1")
    url = f"{docs.base_url}{HOOK}/instances/{instance_id}/raiseEvent/SmsChallengeResponse"
    reply = call("POST", url, data=b"1234", headers={"Content-Type": "text/plain"})
    assert (reply.status, reply.body["Message"]) == (
        400, "Only application/json request content is supported")
    assert call("POST", url, data=b"{not json").status == 400
    docs.terminate(instance_id)


def test_sdk_client_against_the_documented_app(docs: LocalRuntime) -> None:
    client = df.DurableOrchestrationClient(docs.durable_client_binding())
    run = docs.run_coroutine
    instance_id = run(client.start_new("E1_HelloSequence"))
    docs.wait_for(instance_id, 10)
    status = run(client.get_status(instance_id, show_history=True, show_history_output=True))
    assert [e["EventType"] for e in status.historyEvents][0] == "ExecutionStarted"
    assert not run(client.get_status("never-started"))
    with pytest.raises(Exception, match="must not start with @"):
        run(client.start_new("E1_HelloSequence", instance_id="@me"))
    with pytest.raises(Exception, match="must not contain"):
        run(client.start_new("E1_HelloSequence", instance_id="a\\b"))
