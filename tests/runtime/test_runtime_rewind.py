"""Rewind of Failed instances as the extension does it: the failed tasks run again, the completed
ones keep their results, the instance keeps its id and continues to its end."""

from __future__ import annotations

from pathlib import Path

import azure.durable_functions as df
import pytest

import documented_app
from local_runtime import LocalRuntime
from web import call

STATE = documented_app.STATE


def failed(rt: LocalRuntime, name: str, payload: object) -> str:
    instance_id = rt.start_new(name, payload)
    assert rt.wait_for(instance_id, 20)["runtimeStatus"] == "Failed"
    return instance_id


def test_failed_activity_runs_again_completed_ones_do_not(docs: LocalRuntime) -> None:
    STATE["card_declined"] = True
    instance_id = failed(docs, "order_flow", "o1")
    assert (STATE["reserve:o1"], STATE["charge:o1"]) == (1, 1)
    STATE["card_declined"] = False
    docs.rewind(instance_id, "card fixed")
    status = docs.wait_for(instance_id, 20)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == ["reserved o1 (run 1)", "charged o1 (run 2)", "shipped o1 (run 1)"]
    history = docs.get_status(instance_id, show_history=True)["historyEvents"]
    kinds = [e["EventType"] for e in history]
    assert kinds.count("ExecutionStarted") == 1 and kinds.count("TaskFailed") == 0
    assert kinds.count("TimerFired") == 1
    assert [e["Data"] for e in history if e["EventType"] == "GenericEvent"] == [
        "Rewound: card fixed"]


def test_rewind_through_the_sdk_client_and_the_rewind_url(docs: LocalRuntime) -> None:
    STATE["card_declined"] = True
    first = failed(docs, "order_flow", "o2")
    second = failed(docs, "order_flow", "o3")
    client = df.DurableOrchestrationClient(docs.durable_client_binding())
    with pytest.raises(Exception, match="only supported on failed"):
        docs.run_coroutine(client.rewind(docs.wait_for(docs.start_new("E1_HelloSequence"), 10)
                                         ["instanceId"], "no"))
    STATE["card_declined"] = False
    docs.run_coroutine(client.rewind(first, "sdk"))
    assert docs.wait_for(first, 20)["runtimeStatus"] == "Completed"
    url = f"{docs.base_url}/runtime/webhooks/durabletask/instances/{second}/rewind?reason=url"
    assert call("POST", url).status == 202
    assert docs.wait_for(second, 20)["output"][1] == "charged o3 (run 2)"


def test_exhausted_retry_gets_one_more_attempt(docs: LocalRuntime) -> None:
    STATE["succeed_on:r"] = 4
    instance_id = failed(docs, "retry_orchestration", "r")
    assert STATE["attempt:r"] == 3
    docs.rewind(instance_id)
    assert docs.wait_for(instance_id, 20)["output"] == "r: succeeded on attempt 4"


def test_failed_sub_orchestration_is_rewound_in_place(docs: LocalRuntime) -> None:
    STATE["refuse:d2"] = True
    instance_id = failed(docs, "ProvisionNewDevices", ["d1", "d2", "d3"])
    children = {s["instanceId"]: s["runtimeStatus"]
                for s in docs.list_instances(page_size=None).instances
                if s["name"] == "DeviceProvisioningOrchestration"}
    assert sorted(children.values()) == ["Completed", "Completed", "Failed"]
    STATE["refuse:d2"] = False
    docs.rewind(instance_id, "device fixed")
    status = docs.wait_for(instance_id, 20)
    assert status["output"] == ["d1 provisioned", "d2 provisioned", "d3 provisioned"]
    assert (STATE["installed:d1"], STATE["installed:d2"], STATE["installed:d3"]) == (1, 1, 1)
    again = {s["instanceId"]: s["runtimeStatus"]
             for s in docs.list_instances(page_size=None).instances
             if s["name"] == "DeviceProvisioningOrchestration"}
    assert set(again) == set(children) and set(again.values()) == {"Completed"}


def test_rewind_refusals(docs: LocalRuntime) -> None:
    hook = f"{docs.base_url}/runtime/webhooks/durabletask/instances"
    STATE["sms_timeout_s"] = 30
    running = docs.start_new("E4_SmsPhoneVerification", "+1")
    reply = call("POST", f"{hook}/{running}/rewind")
    assert reply.status == 400
    assert reply.body["Message"] == ("The rewind operation is only supported on failed "
                                     "orchestration instances.")
    assert call("POST", f"{hook}/nobody/rewind").status == 404
    docs.terminate(running, "stop")
    assert call("POST", f"{hook}/{running}/rewind").status == 410


def test_a_rewind_survives_a_restart(tmp_path: Path) -> None:
    documented_app.STATE.clear()
    db = tmp_path / "hub.sqlite"
    STATE["card_declined"] = True
    with LocalRuntime(documented_app.app, db_path=db, port=0) as rt:
        instance_id = failed(rt, "order_flow", "o4")
        STATE["card_declined"] = False
        rt.rewind(instance_id, "before a crash")
    with LocalRuntime(documented_app.app, db_path=db, port=0) as rt:
        status = rt.wait_for(instance_id, 20)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"][0] == "reserved o4 (run 1)"
