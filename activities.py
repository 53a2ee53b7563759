"""Activities: thin adapters that validate their payload, call one geo_ops / stac_ops / storage
function and return a JSON-ready result.

An expected per-item failure (a bad file) is returned as a result with its reason, because
``task_all`` fails fast on the first raised error; transient faults raise and are retried by the
retry options declared at the call site in the orchestrator.
"""
from __future__ import annotations

import azure.durable_functions as df

from models import GreetingTask

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload")
def say_hello(payload: dict) -> str:
    """One greeting of the hello_world job."""
    task = GreetingTask.model_validate(payload)
    return f"Hello {task.name} #{task.index + 1}"
