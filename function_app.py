"""The Functions app: registers the blueprints and exposes the job API over HTTP.

This module wires, it does not compute: routes parse the request with pydantic, start or query
orchestrations through the Durable client, and map errors to status codes in one table.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

import activities
import entities
import orchestrators
import storage
from models import OPERATIONS, JobRequest, instance_id_for, problems_of
from settings import SettingsError, get_settings

logger = logging.getLogger(__name__)

get_settings()  # a bad or missing setting fails the app at start-up, naming the setting

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestrators.bp)
app.register_functions(activities.bp)
app.register_functions(entities.bp)

RUNNING_STATES = {
    df.OrchestrationRuntimeStatus.Running,
    df.OrchestrationRuntimeStatus.Pending,
    df.OrchestrationRuntimeStatus.Suspended,
    df.OrchestrationRuntimeStatus.ContinuedAsNew,
}


class ApiError(Exception):
    """An HTTP-facing error with a status code and a JSON body."""

    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.details = details


# Exception class -> HTTP status. Looked up along the class's MRO, first match wins.
ERROR_STATUS: dict[type[BaseException], int] = {
    storage.InvalidContainerName: 400,
    storage.InvalidBlobName: 400,
    storage.ContainerNotFound: 404,
    storage.BlobNotFound: 404,
    storage.StorageUnavailable: 503,
    SettingsError: 500,
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status,
                             mimetype="application/json", headers=headers)


def error_response(err: BaseException) -> func.HttpResponse:
    """The HTTP response for an exception, from the one table above."""
    if isinstance(err, ApiError):
        return _json({"error": str(err), **err.details}, err.status)
    for cls in type(err).__mro__:
        if cls in ERROR_STATUS:
            return _json({"error": str(err), "type": type(err).__name__}, ERROR_STATUS[cls])
    logger.exception("unhandled error")
    return _json({"error": "internal error", "type": type(err).__name__}, 500)


def parse_job_request(operation: str, body: bytes) -> tuple[JobRequest, bool]:
    """The validated request of ``operation`` and its ``rerun`` flag, or an ApiError (404/400)."""
    model = OPERATIONS.get(operation)
    if model is None:
        raise ApiError(404, f"unknown operation {operation!r}", known_operations=sorted(OPERATIONS))
    try:
        payload = json.loads(body) if body and body.strip() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    rerun = payload.pop("rerun", False)
    if not isinstance(rerun, bool):
        raise ApiError(400, "invalid request", problems=[{"field": "rerun", "problem": "must be true or false"}])
    try:
        return model.model_validate(payload), rerun
    except ValidationError as err:
        raise ApiError(400, "invalid request", problems=problems_of(err.errors())) from None


def _status_body(status: df.DurableOrchestrationStatus) -> dict[str, Any]:
    return {
        "instanceId": status.instance_id,
        "operation": status.name,
        "runtimeStatus": status.runtime_status.name if status.runtime_status else None,
        "createdTime": status.created_time,
        "lastUpdatedTime": status.last_updated_time,
        "customStatus": status.custom_status,
        "output": status.output,
    }


@app.route(route="jobs/{operation}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def submit_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a job: 202 with status URLs; 409 if the same request runs; 200 if it already finished."""
    operation = req.route_params.get("operation", "")
    try:
        request, rerun = parse_job_request(operation, req.get_body())
    except ApiError as err:
        return error_response(err)
    instance_id = instance_id_for(operation, request)
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status in RUNNING_STATES:
        body = client.get_client_response_links(req, instance_id)
        return _json({"error": f"job {instance_id} is already running", **body}, 409)
    if existing and existing.runtime_status == df.OrchestrationRuntimeStatus.Completed and not rerun:
        return _json(_status_body(existing), 200)
    await client.start_new(operation, instance_id, request.model_dump(mode="json"))
    logger.info("started %s", instance_id)
    return client.create_check_status_response(req, instance_id)


@app.route(route="jobs/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A job's runtime status, times, progress (custom status) and output."""
    instance_id = req.route_params.get("instance_id", "")
    status = await client.get_status(instance_id)
    if not status or not status.runtime_status:
        return error_response(ApiError(404, f"no job with id {instance_id!r}"))
    return _json(_status_body(status))
