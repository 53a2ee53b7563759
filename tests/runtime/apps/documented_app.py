"""The Durable Functions application patterns, written from the documentation (Python, v2).

One app per documented pattern, with the documentation's names where it has them: function
chaining (E1_HelloSequence), fan-out/fan-in, async HTTP APIs (an HTTP starter answering with
``create_check_status_response``), monitor (E3_Monitor), human interaction
(E4_SmsPhoneVerification), durable entities (Counter), sub-orchestrations, automatic retries,
eternal orchestrations (``continue_as_new``), an activity with a durable client input binding,
and ``call_http`` (the asynchronous 202 pattern). Outside effects (SMS, issue trackers) are
replaced by activities over in-process state the tests control.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

STATE: dict[str, object] = {}
_LOCK = threading.Lock()


def bump(key: str) -> int:
    """Count calls of something (attempts, runs) across threads."""
    with _LOCK:
        count = int(STATE.get(key, 0)) + 1
        STATE[key] = count
        return count


# -- async HTTP APIs: the HTTP starter -----------------------------------------------------------
@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient):
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["functionName"],
                                         client_input=json.loads(body) if body else None)
    return client.create_check_status_response(req, instance_id)


# -- function chaining ---------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def E1_HelloSequence(context: df.DurableOrchestrationContext):
    result1 = yield context.call_activity("E1_SayHello", "Tokyo")
    result2 = yield context.call_activity("E1_SayHello", "Seattle")
    result3 = yield context.call_activity("E1_SayHello", "London")
    return [result1, result2, result3]


@app.activity_trigger(input_name="name")
def E1_SayHello(name: str) -> str:
    return f"Hello {name}!"


# -- fan-out/fan-in ------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def E2_BackupSiteContent(context: df.DurableOrchestrationContext):
    root_directory = context.get_input()
    if not root_directory:
        raise ValueError("A directory path is required as input")
    files = yield context.call_activity("E2_GetFileList", root_directory)
    tasks = [context.call_activity("E2_CopyFileToBlob", file) for file in files]
    results = yield context.task_all(tasks)
    return sum(results)


@app.activity_trigger(input_name="rootDirectory")
def E2_GetFileList(rootDirectory: str) -> list:
    return [f"{rootDirectory}/file{i}.txt" for i in range(int(STATE.get("files", 10)))]


@app.activity_trigger(input_name="filePath")
def E2_CopyFileToBlob(filePath: str) -> int:
    return len(filePath.encode())


# -- monitor -------------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def E3_Monitor(context: df.DurableOrchestrationContext):
    job = context.get_input()
    polling_interval = timedelta(milliseconds=job["interval_ms"])
    expiry_time = context.current_utc_datetime + timedelta(seconds=job["expiry_s"])
    checks = 0
    while context.current_utc_datetime < expiry_time:
        checks += 1
        job_status = yield context.call_activity("E3_GetJobStatus", job["job_id"])
        if job_status == "Completed":
            yield context.call_activity("E3_SendAlert", job["job_id"])
            return {"status": "alerted", "checks": checks}
        context.set_custom_status({"checks": checks, "job": job_status})
        yield context.create_timer(context.current_utc_datetime + polling_interval)
    return {"status": "expired", "checks": checks}


@app.activity_trigger(input_name="jobId")
def E3_GetJobStatus(jobId: str) -> str:
    done_after = int(STATE.get(f"done_after:{jobId}", 3))
    return "Completed" if bump(f"checks:{jobId}") >= done_after else "Running"


@app.activity_trigger(input_name="jobId")
def E3_SendAlert(jobId: str) -> str:
    return f"alert sent for {jobId}"


# -- human interaction ---------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def E4_SmsPhoneVerification(context: df.DurableOrchestrationContext):
    phone_number = context.get_input()
    if not phone_number:
        raise ValueError("A phone number input is required.")
    challenge_code = yield context.call_activity("E4_SendSmsChallenge", phone_number)
    expiration = context.current_utc_datetime + timedelta(seconds=float(
        STATE.get("sms_timeout_s", 30)))
    timeout_task = context.create_timer(expiration)
    authorized = False
    for _ in range(3):
        challenge_response_task = context.wait_for_external_event("SmsChallengeResponse")
        winner = yield context.task_any([challenge_response_task, timeout_task])
        if winner == challenge_response_task:
            if int(challenge_response_task.result) == challenge_code:
                authorized = True
                break
        else:
            break
    if not timeout_task.is_completed:
        timeout_task.cancel()
    return authorized


@app.activity_trigger(input_name="phoneNumber")
def E4_SendSmsChallenge(phoneNumber: str) -> int:
    code = 1000 + sum(map(ord, phoneNumber)) % 9000
    STATE[f"sms:{phoneNumber}"] = code
    return code


# -- durable entities ----------------------------------------------------------------------------
@app.entity_trigger(context_name="context")
def Counter(context: df.DurableEntityContext):
    current_value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        current_value += context.get_input()
    elif operation == "reset":
        current_value = 0
    elif operation == "get":
        context.set_result(current_value)
    context.set_state(current_value)


@app.orchestration_trigger(context_name="context")
def counter_orchestration(context: df.DurableOrchestrationContext):
    entity_id = df.EntityId("Counter", context.get_input())
    context.signal_entity(entity_id, "add", 3)
    state = yield context.call_entity(entity_id, "get")
    return state


# -- sub-orchestrations --------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def ProvisionNewDevices(context: df.DurableOrchestrationContext):
    device_ids = context.get_input()
    provisioning_tasks = [context.call_sub_orchestrator("DeviceProvisioningOrchestration",
                                                        device_id)
                          for device_id in device_ids]
    return (yield context.task_all(provisioning_tasks))


@app.orchestration_trigger(context_name="context")
def DeviceProvisioningOrchestration(context: df.DurableOrchestrationContext):
    device_id = context.get_input()
    api_key = yield context.call_activity("CreateApiKey", device_id)
    yield context.call_activity("InstallApiKey", {"device": device_id, "key": api_key})
    return f"{device_id} provisioned"


@app.activity_trigger(input_name="deviceId")
def CreateApiKey(deviceId: str) -> str:
    return f"key-{deviceId}"


@app.activity_trigger(input_name="payload")
def InstallApiKey(payload: dict) -> bool:
    if STATE.get(f"refuse:{payload['device']}"):
        raise RuntimeError(f"device {payload['device']} refused the key")
    bump(f"installed:{payload['device']}")
    return True


# -- automatic retry on failure ------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def retry_orchestration(context: df.DurableOrchestrationContext):
    first_retry_interval_in_milliseconds = 50
    max_number_of_attempts = 3
    retry_options = df.RetryOptions(first_retry_interval_in_milliseconds,
                                    max_number_of_attempts)
    return (yield context.call_activity_with_retry("FlakyActivity", retry_options,
                                                   context.get_input()))


@app.activity_trigger(input_name="key")
def FlakyActivity(key: str) -> str:
    attempt = bump(f"attempt:{key}")
    if attempt < int(STATE.get(f"succeed_on:{key}", 2)):
        raise ConnectionError(f"{key}: attempt {attempt} failed")
    return f"{key}: succeeded on attempt {attempt}"


# -- eternal orchestrations ----------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def Periodic_Cleanup_Loop(context: df.DurableOrchestrationContext):
    rounds = context.get_input() or 0
    yield context.call_activity("DoCleanup", rounds)
    if rounds + 1 >= int(STATE.get("cleanup_rounds", 3)):
        return f"cleaned {rounds + 1} times"
    next_cleanup = context.current_utc_datetime + timedelta(milliseconds=50)
    yield context.create_timer(next_cleanup)
    context.continue_as_new(rounds + 1)


@app.activity_trigger(input_name="round")
def DoCleanup(round: int) -> int:
    bump("cleanups")
    return round


# -- an activity with a durable client input binding ---------------------------------------------
@app.orchestration_trigger(context_name="context")
def approval_workflow(context: df.DurableOrchestrationContext):
    yield context.call_activity("request_approval", context.instance_id)
    approval = yield context.wait_for_external_event("Approved")
    return {"approved_by": approval}


@app.activity_trigger(input_name="instanceId")
@app.durable_client_input(client_name="client")
async def request_approval(instanceId: str, client: df.DurableOrchestrationClient) -> str:
    """Publish the approval request: here the approver answers at once, through the client."""
    status = await client.get_status(instanceId)
    await client.raise_event(instanceId, "Approved", "the activity")
    return str(status.runtime_status.value)


@app.orchestration_trigger(context_name="context")
def starter_from_activity(context: df.DurableOrchestrationContext):
    child_id = yield context.call_activity("start_child", context.get_input())
    return child_id


@app.activity_trigger(input_name="name")
@app.durable_client_input(client_name="client")
async def start_child(name: str, client: df.DurableOrchestrationClient) -> str:
    return await client.start_new("E1_HelloSequence", instance_id=f"child-of-{name}")


# -- call_http -------------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def http_caller(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    response = yield context.call_http(spec.get("method", "GET"), spec["uri"],
                                       content=spec.get("content"),
                                       headers=spec.get("headers"),
                                       token_source=df.ManagedIdentityTokenSource(
                                           spec["resource"]) if spec.get("resource") else None)
    return response


# -- rewind: a chain whose middle step fails while the outside world refuses -----------------------
@app.orchestration_trigger(context_name="context")
def order_flow(context: df.DurableOrchestrationContext):
    order = context.get_input()
    reserved = yield context.call_activity("reserve_stock", order)
    timer = context.create_timer(context.current_utc_datetime + timedelta(milliseconds=20))
    yield timer
    charged = yield context.call_activity("charge_card", order)
    shipped = yield context.call_activity("ship_order", order)
    return [reserved, charged, shipped]


@app.activity_trigger(input_name="order")
def reserve_stock(order: str) -> str:
    return f"reserved {order} (run {bump(f'reserve:{order}')})"


@app.activity_trigger(input_name="order")
def charge_card(order: str) -> str:
    runs = bump(f"charge:{order}")
    if STATE.get("card_declined"):
        raise PermissionError(f"card declined for {order}")
    return f"charged {order} (run {runs})"


@app.activity_trigger(input_name="order")
def ship_order(order: str) -> str:
    return f"shipped {order} (run {bump(f'ship:{order}')})"
