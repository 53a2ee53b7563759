"""The documented Durable Functions application patterns, as small orchestrations."""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

app = df.DFApp()

JOB_POLLS: dict[str, int] = {}


# -- function chaining (E1_HelloSequence) ------------------------------------------------------
@app.activity_trigger(input_name="city")
def e1_say_hello(city: str) -> str:
    return f"Hello {city}!"


@app.orchestration_trigger(context_name="context")
def e1_hello_sequence(context: df.DurableOrchestrationContext):
    result1 = yield context.call_activity("e1_say_hello", "Tokyo")
    result2 = yield context.call_activity("e1_say_hello", "Seattle")
    result3 = yield context.call_activity("e1_say_hello", "London")
    return [result1, result2, result3]


# -- fan-out/fan-in (E2_BackupSiteContent) -------------------------------------------------------
@app.activity_trigger(input_name="root")
def e2_get_file_list(root: str) -> list[dict]:
    return [{"path": f"{root}/file{i}.bin", "size": 100 * (i + 1)} for i in range(12)]


@app.activity_trigger(input_name="file")
def e2_copy_file_to_blob(file: dict) -> int:
    return int(file["size"])


@app.orchestration_trigger(context_name="context")
def e2_backup_site_content(context: df.DurableOrchestrationContext):
    root = context.get_input()
    files = yield context.call_activity("e2_get_file_list", root)
    sizes = yield context.task_all([context.call_activity("e2_copy_file_to_blob", f)
                                    for f in files])
    return sum(sizes)


# -- human interaction (E4_SmsPhoneVerification) -------------------------------------------------
@app.activity_trigger(input_name="phone")
def e4_send_sms_challenge(phone: str) -> int:
    return 1000 + sum(ord(c) for c in phone) % 9000


@app.orchestration_trigger(context_name="context")
def e4_sms_phone_verification(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    code = yield context.call_activity("e4_send_sms_challenge", spec["phone"])
    expiration = context.current_utc_datetime + timedelta(seconds=spec["timeout_s"])
    timeout_task = context.create_timer(expiration)
    authorized = False
    for _ in range(3):
        challenge = context.wait_for_external_event("SmsChallengeResponse")
        winner = yield context.task_any([challenge, timeout_task])
        if winner == challenge:
            if challenge.result == code:
                authorized = True
                break
        else:
            break
    if not timeout_task.is_completed:
        timeout_task.cancel()
    return authorized


# -- monitor (E3_Monitor) -----------------------------------------------------------------------
@app.activity_trigger(input_name="job_id")
def e3_get_job_status(job_id: str) -> str:
    JOB_POLLS[job_id] = JOB_POLLS.get(job_id, 0) + 1
    return "Completed" if JOB_POLLS[job_id] >= 3 else "Running"


@app.orchestration_trigger(context_name="context")
def e3_monitor(context: df.DurableOrchestrationContext):
    job = context.get_input()
    expiry = context.current_utc_datetime + timedelta(seconds=job["expiry_s"])
    polls = 0
    while context.current_utc_datetime < expiry:
        polls += 1
        status = yield context.call_activity("e3_get_job_status", job["id"])
        context.set_custom_status({"polls": polls, "status": status})
        if status == "Completed":
            return {"job": job["id"], "status": status, "polls": polls}
        next_check = context.current_utc_datetime + timedelta(milliseconds=job["interval_ms"])
        yield context.create_timer(next_check)
    return {"job": job["id"], "status": "Expired", "polls": polls}


# -- counter entity ------------------------------------------------------------------------------
@app.entity_trigger(context_name="context")
def Counter(context: df.DurableEntityContext):  # noqa: N802 - the documented sample's name
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
    context.signal_entity(entity_id, "add", 4)
    state = yield context.call_entity(entity_id, "get")
    return state


# -- fan-out awaited in groups (progress per group; the host replays once per group) -------------
@app.activity_trigger(input_name="n")
def grouped_square(n: int) -> int:
    import time

    time.sleep(0.02)
    return n * n


@app.orchestration_trigger(context_name="context")
def grouped_fan_out(context: df.DurableOrchestrationContext):
    tasks = [context.call_activity("grouped_square", n) for n in range(40)]
    pending = [context.task_all(tasks[i:i + 20]) for i in range(0, 40, 20)]
    finished = 0
    while pending:
        yield context.task_any(pending)
        finished += sum(1 for g in pending if g.is_completed)
        pending = [g for g in pending if not g.is_completed]
        context.set_custom_status({"groups": finished})
    return sum(t.result for t in tasks)
