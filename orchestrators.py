"""Orchestrators: one per operation, each reading like the job's recipe.

Deterministic by construction: time from ``context.current_utc_datetime``, no I/O, no environment
reads; data crosses the Durable boundary as plain JSON and is validated again with pydantic.
"""
from __future__ import annotations

import azure.durable_functions as df

from activities import say_hello
from models import GreetingTask, HelloWorldRequest, HelloWorldResult

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context", input_type=dict)
def hello_world(context: df.DurableOrchestrationContext):
    """Fan out one greeting activity per count, fan in with task_all."""
    request = HelloWorldRequest.model_validate(context.get_input() or {})
    tasks = [
        context.call_activity(say_hello, GreetingTask(name=request.name, index=i).model_dump(mode="json"))
        for i in range(request.count)
    ]
    greetings = yield context.task_all(tasks)
    return HelloWorldResult(greetings=greetings).model_dump(mode="json")
