"""A 200-task fan-out for the kill -9 recovery test; every activity run is logged to a file."""

from __future__ import annotations

import os
import time

import azure.durable_functions as df

app = df.DFApp()


@app.activity_trigger(input_name="index")
def square_slowly(index: int) -> dict:
    time.sleep(0.01)
    log = os.environ.get("CRASH_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{index}\n")
    return {"index": index, "square": index * index}


@app.orchestration_trigger(context_name="context")
def fan_out_200(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all(
        [context.call_activity(square_slowly, i) for i in range(count)])
    return results


@app.activity_trigger(input_name="marker")
def die_once(marker: str) -> str:
    """Kill the worker process that runs it the first time (as an OOM kill or a GDAL segfault
    would); succeed on the retry."""
    if not os.path.exists(marker):
        open(marker, "w", encoding="utf-8").close()
        os.kill(os.getpid(), 9)
    return f"survived in {os.getpid()}"


@app.orchestration_trigger(context_name="context")
def die_then_retry(context: df.DurableOrchestrationContext):
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    first = yield context.call_activity_with_retry(die_once, retry, context.get_input())
    after = yield context.task_all([context.call_activity(square_slowly, i) for i in range(4)])
    return {"first": first, "after": after}
