"""Small orchestrations exercising every action the embedded runtime must carry out."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

ATTEMPTS: dict[str, int] = {}
_ATTEMPTS_LOCK = threading.Lock()


class FlakyError(RuntimeError):
    """Raised by the flaky activity until its attempt count is reached."""


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    return f"Hello {name}!"


@app.activity_trigger(input_name="payload")
def flaky(payload: dict) -> str:
    key = payload["key"]
    with _ATTEMPTS_LOCK:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        attempt = ATTEMPTS[key]
    if attempt < payload["succeed_on"]:
        raise FlakyError(f"attempt {attempt} of {key} failed")
    return f"{key} ok on attempt {attempt}"


@app.activity_trigger(input_name="seconds")
def slow(seconds: float) -> str:
    import time
    time.sleep(seconds)
    return "slow done"


@app.activity_trigger(input_name="message")
def explode(message: str) -> None:
    raise ValueError(message)


@app.activity_trigger(input_name="message")
def chatty(message: str) -> str:
    import logging
    import os

    logging.getLogger("conformance_app").warning("chatty says %s from pid %d", message,
                                                 os.getpid())
    return message


@app.orchestration_trigger(context_name="context")
def chatty_then_explode(context: df.DurableOrchestrationContext):
    yield context.call_activity(chatty, context.get_input())
    yield context.call_activity(explode, f"{context.get_input()} went wrong")


@app.activity_trigger(input_name="value")
def whoami(value: str, context: func.Context) -> str:
    return f"{value} from {context.function_name} ({len(context.invocation_id)})"


@app.orchestration_trigger(context_name="context")
def context_user(context: df.DurableOrchestrationContext):
    return (yield context.call_activity(whoami, "hi"))


@app.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def whoami_http(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                      context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(context.function_name)


@app.orchestration_trigger(context_name="context")
def fan_out_in(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity(double, i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def chaining(context: df.DurableOrchestrationContext):
    names = ["Tokyo", "Seattle", "London"]
    out = []
    for name in names:
        out.append((yield context.call_activity(say_hello, name)))
    return out


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
    work = context.call_activity(double, 21)
    winner = yield context.task_any([work, timer])
    if winner == work:
        timer.cancel()
        return {"winner": "activity", "result": work.result}
    return {"winner": "timer"}


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    value = context.get_input()
    if value < 0:
        raise ValueError(f"child refuses {value}")
    return (yield context.call_activity(double, value))


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    values = context.get_input()
    tasks = [context.call_sub_orchestrator("child", v) for v in values]
    try:
        return {"ok": (yield context.task_all(tasks))}
    except Exception as err:  # noqa: BLE001 - the test inspects the message
        return {"error": str(err)}


@app.orchestration_trigger(context_name="context")
def parent_sequential(context: df.DurableOrchestrationContext):
    first = yield context.call_sub_orchestrator("child", 5, instance_id=f"{context.instance_id}-c")
    second = yield context.call_sub_orchestrator("child", -1)
    return [first, second]


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50,
                              max_number_of_attempts=spec["max"])
    try:
        return (yield context.call_activity_with_retry(flaky, options, spec))
    except Exception as err:  # noqa: BLE001
        return {"failed": str(err)}


@app.orchestration_trigger(context_name="context")
def retry_fan(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=30, max_number_of_attempts=3)
    prefix = context.get_input()
    tasks = [context.call_activity_with_retry(
        flaky, options, {"key": f"{prefix}-{i}", "succeed_on": 1 + i % 3}) for i in range(6)]
    tasks.append(context.call_activity(double, 4))
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
    both = context.task_all(tasks)
    winner = yield context.task_any([both, timer])
    timer.cancel()
    return winner.result


@app.entity_trigger(context_name="context", entity_name="Counter")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    op = context.operation_name
    if op == "add":
        value += context.get_input()
    elif op == "reset":
        value = 0
    elif op == "get":
        pass
    elif op == "fail":
        raise ValueError("counter cannot fail politely")
    context.set_state(value)
    context.set_result(value)


@app.orchestration_trigger(context_name="context")
def entity_user(context: df.DurableOrchestrationContext):
    key = context.get_input()
    entity = df.EntityId("Counter", key)
    context.signal_entity(entity, "add", 5)
    after_add = yield context.call_entity(entity, "add", 10)
    current = yield context.call_entity(entity, "get")
    try:
        yield context.call_entity(entity, "fail")
        failure = None
    except Exception as err:  # noqa: BLE001
        failure = str(err)
    return {"after_add": after_add, "current": current, "failure": failure}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    timeout = context.get_input()
    deadline = context.current_utc_datetime + timedelta(seconds=timeout)
    timer = context.create_timer(deadline)
    event = context.wait_for_external_event("Approval")
    winner = yield context.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"approved": event.result}
    return {"approved": None, "timed_out": True}


@app.orchestration_trigger(context_name="context")
def looping(context: df.DurableOrchestrationContext):
    state = context.get_input()
    total = state["total"] + (yield context.call_activity(double, state["n"]))
    if state["n"] >= 4:
        return total
    context.continue_as_new({"n": state["n"] + 1, "total": total})
    return None


@app.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext):
    checks = 0
    while checks < 3:
        checks += 1
        context.set_custom_status({"checks": checks})
        yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=100))
    return {"checks": checks}


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    context.set_custom_status({"stage": "waiting"})
    value = yield context.wait_for_external_event("Go")
    context.set_custom_status({"stage": "working"})
    doubled = yield context.call_activity(double, value)
    return doubled


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity(double, 1)
    raise RuntimeError("orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def activity_failure(context: df.DurableOrchestrationContext):
    yield context.call_activity(explode, "kaboom")


@app.orchestration_trigger(context_name="context")
def gate_after_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.task_all([context.call_activity(explode, "fast"),
                                context.call_activity(slow, 0.3)])
    except Exception:  # noqa: BLE001 - the failure is expected; the follow-up is what matters
        pass
    return (yield context.call_activity(double, 1))


@app.orchestration_trigger(context_name="context")
def nested(context: df.DurableOrchestrationContext):
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=30))
    quick = context.call_activity(double, 1)
    race_task = context.task_any([quick, timer])
    pair = context.task_all([context.call_activity(double, 2), context.call_activity(double, 3)])
    winner, both = yield context.task_all([race_task, pair])
    timer.cancel()
    inner = yield context.task_any([context.task_all([context.call_activity(double, 4)]),
                                    context.wait_for_external_event("never")])
    return {"race": winner.result, "pair": both, "inner": inner.result}


@app.orchestration_trigger(context_name="context")
def stale_wait(context: df.DurableOrchestrationContext):
    first = context.wait_for_external_event("Ping")
    timer = context.create_timer(context.current_utc_datetime + timedelta(milliseconds=50))
    yield context.task_any([first, timer])
    second = yield context.wait_for_external_event("Ping")
    third = yield context.call_activity(double, second)
    return third


def _chaos_task(context: df.DurableOrchestrationContext, rnd, tag: str):
    kind = rnd.choice(["act", "retry", "timer", "sub", "entity", "sub_retry", "fail"])
    options = df.RetryOptions(first_retry_interval_in_milliseconds=rnd.choice([5, 20, 40]),
                              max_number_of_attempts=3)
    if kind == "act":
        return kind, context.call_activity(double, rnd.randint(0, 9))
    if kind == "retry":
        return kind, context.call_activity_with_retry(
            flaky, options, {"key": tag, "succeed_on": rnd.randint(1, 4)})
    if kind == "timer":
        delay = timedelta(milliseconds=rnd.choice([1, 30, 80]))
        return kind, context.create_timer(context.current_utc_datetime + delay)
    if kind == "sub":
        return kind, context.call_sub_orchestrator("child", rnd.randint(-1, 5))
    if kind == "sub_retry":
        return kind, context.call_sub_orchestrator_with_retry(
            "flaky_child", options, {"key": tag, "succeed_on": rnd.randint(1, 4)})
    if kind == "fail":
        return kind, context.call_activity(explode, tag)
    return kind, context.call_entity(df.EntityId("Counter", tag.split("/")[0]), "add", 1)


@app.orchestration_trigger(context_name="context")
def chaos(context: df.DurableOrchestrationContext):
    import random

    seed = context.get_input()
    rnd = random.Random(seed)
    log = []
    for round_no in range(4):
        made = [_chaos_task(context, rnd, f"{seed}/{round_no}/{j}")
                for j in range(rnd.randint(1, 5))]
        tasks = [task for _, task in made]
        if rnd.random() < 0.5:
            winner = yield context.task_any(tasks)
            log.append(("any", tasks.index(winner)))
            for kind, task in made:
                if kind == "timer" and not task.is_completed:
                    task.cancel()
        else:
            try:
                yield context.task_all(tasks)
                log.append(("all", "ok"))
            except Exception:  # noqa: BLE001 - failures are part of the mix
                log.append(("all", "failed"))
        if rnd.random() < 0.3:
            context.signal_entity(df.EntityId("Counter", str(seed)), "add", 1)
    return log


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    return (yield context.call_activity(flaky, context.get_input()))


@app.orchestration_trigger(context_name="context")
def sub_retry(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=30,
                              max_number_of_attempts=spec["max"])
    try:
        return (yield context.call_sub_orchestrator_with_retry(
            "flaky_child", options, spec, instance_id=spec.get("child_id")))
    except Exception as err:  # noqa: BLE001
        return {"failed": str(err)}


@app.activity_trigger(input_name="word", activity="ShoutAlias")
def shout(word: str) -> str:
    return word.upper()


@app.orchestration_trigger(context_name="context", orchestration="AliasedOrchestration")
def aliased(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("ShoutAlias", context.get_input()))


@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient
                     ) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    instance_id = await client.start_new(req.route_params["name"], client_input=payload)
    return client.create_check_status_response(req, instance_id)


@app.route(route="jobs/hello_world", methods=["POST"])
@app.durable_client_input(client_name="client")
async def hello_world_start(req: func.HttpRequest, client: df.DurableOrchestrationClient
                            ) -> func.HttpResponse:
    instance_id = await client.start_new("chaining")
    return client.create_check_status_response(req, instance_id)


@app.route(route="ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")


TICKS: list[str] = []


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
@app.durable_client_input(client_name="client")
async def ticker(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    instance_id = await client.start_new("chaining")
    TICKS.append(instance_id)


blueprint = df.Blueprint()


@blueprint.activity_trigger(input_name="text")
def reverse_text(text: str) -> str:
    return text[::-1]


@blueprint.orchestration_trigger(context_name="context")
def blueprint_orchestration(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("reverse_text", context.get_input()))


app.register_functions(blueprint)
