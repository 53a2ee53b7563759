"""Bindings beyond the trigger: blob input/output on activities and HTTP functions, a durable
client in an activity, and an Event Grid trigger writing what it received to a blob."""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def shout_file(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("shout_blob", context.get_input()))


@app.activity_trigger(input_name="job")
@app.blob_input(arg_name="source", path="inbox/{data.name}", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="target", path="outbox/{job.name}.loud",
                 connection="AzureWebJobsStorage")
def shout_blob(job: dict, source: func.InputStream, target: func.Out[str]) -> dict:
    if source is None:
        return {"found": False}
    text = source.read().decode()
    target.set(text.upper())
    return {"found": True, "length": len(text), "stream_name": source.name}


@app.orchestration_trigger(context_name="context")
def copy_bytes(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("copy_raw", context.get_input()))


@app.activity_trigger(input_name="name")
@app.blob_input(arg_name="raw", path="inbox/{name}", connection="AzureWebJobsStorage")
@app.blob_input(arg_name="text", path="inbox/{name}", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="copy", path="outbox/{name}.copy", connection="AzureWebJobsStorage")
def copy_raw(name: str, raw: bytes, text: str, copy: func.Out[bytes]) -> list:
    copy.set(raw[::-1])
    return [type(raw).__name__, type(text).__name__, len(raw)]


@app.route(route="notes/{name}", methods=["GET", "PUT"])
@app.blob_input(arg_name="current", path="notes/{name}.txt", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="updated", path="notes/{name}.txt", connection="AzureWebJobsStorage")
def notes(req: func.HttpRequest, current: str, updated: func.Out[str]) -> func.HttpResponse:
    if req.method == "PUT":
        updated.set(req.get_body().decode())
        return func.HttpResponse("stored", status_code=201)
    if current is None:
        return func.HttpResponse("no such note", status_code=404)
    return func.HttpResponse(current)


@app.event_grid_trigger(arg_name="event")
@app.blob_output(arg_name="record", path="events/{id}.json", connection="AzureWebJobsStorage")
def record_event(event: func.EventGridEvent, record: func.Out[str]) -> None:
    record.set(json.dumps({"id": event.id, "type": event.event_type, "subject": event.subject,
                           "data": event.get_json(), "topic": event.topic,
                           "eventTime": event.event_time.isoformat() if event.event_time
                           else None, "dataVersion": event.data_version}))
