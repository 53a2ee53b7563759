"""The Functions app: registers the blueprints and exposes the job API over HTTP.

This module wires, it does not compute: routes parse the request with pydantic, start or query
orchestrations through the Durable client, and map errors to status codes in one table.
"""
from __future__ import annotations

import datetime as dt
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
from entities import METRICS_ENTITY
from models import OPERATIONS, JobRequest, SyncContainerRequest, instance_id_for, job_tasks, problems_of
from settings import SettingsError, get_settings

logger = logging.getLogger(__name__)

get_settings()  # a bad or missing setting fails the app at start-up, naming the setting

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestrators.bp)
app.register_functions(activities.bp)
app.register_functions(entities.bp)

RS = df.OrchestrationRuntimeStatus
RUNNING_STATES = {RS.Running, RS.Pending, RS.Suspended, RS.ContinuedAsNew}
RETRYABLE_STATES = {RS.Failed, RS.Terminated, RS.Completed}


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
    """The validated request of ``operation`` (defaults from settings applied) and its ``rerun``
    flag, or an ApiError (404/400)."""
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
        request = model.model_validate(payload)
    except ValidationError as err:
        raise ApiError(400, "invalid request", problems=problems_of(err.errors())) from None
    return _with_defaults(request), rerun


def _with_defaults(request: JobRequest) -> JobRequest:
    config = get_settings()
    if hasattr(request, "with_defaults"):
        request = request.with_defaults(input_container=config.input_container,
                                        output_container=config.output_container)
    if isinstance(request, SyncContainerRequest) and request.chunk_size is None:
        request = request.model_copy(update={"chunk_size": config.sync_chunk_size})
    return request


def status_body(status: df.DurableOrchestrationStatus) -> dict[str, Any]:
    """What GET /api/jobs/{id} answers: runtime status, operation, times, progress and output."""
    return {
        "instanceId": status.instance_id,
        "operation": status.name,
        "runtimeStatus": status.runtime_status.name if status.runtime_status else None,
        "createdTime": status.created_time,
        "lastUpdatedTime": status.last_updated_time,
        "customStatus": status.custom_status,
        "output": status.output,
    }


def _same_request(status: df.DurableOrchestrationStatus, request: JobRequest) -> bool:
    stored = status.input_
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return False
    return json.dumps(stored, sort_keys=True, separators=(",", ":")) == request.canonical_json()


async def start_job(client: df.DurableOrchestrationClient, req: func.HttpRequest | None,
                    operation: str, request: JobRequest, rerun: bool) -> func.HttpResponse:
    """Start the job unless the same one runs (409) or already finished (200)."""
    instance_id = instance_id_for(operation, request)
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status in RUNNING_STATES:
        links = client.create_http_management_payload(instance_id) if req is None else \
            client.get_client_response_links(req, instance_id)
        return _json({"error": f"job {instance_id} is already running", **links}, 409)
    if existing and existing.runtime_status == RS.Completed and not rerun and _same_request(existing, request):
        return _json(status_body(existing), 200)
    await purge_children(client, instance_id)
    await client.start_new(operation, instance_id, request.model_dump(mode="json"))
    logger.info("started %s", instance_id)
    if req is None:
        return _json(client.create_http_management_payload(instance_id), 202)
    return client.create_check_status_response(req, instance_id)


@app.route(route="jobs/{operation}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def submit_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a job: 202 with status URLs; 409 if the same job runs; 200 if it already finished."""
    try:
        request, rerun = parse_job_request(req.route_params.get("operation", ""), req.get_body())
    except ApiError as err:
        return error_response(err)
    return await start_job(client, req, req.route_params["operation"], request, rerun)


async def _require(client: df.DurableOrchestrationClient, instance_id: str,
                   **options: bool) -> df.DurableOrchestrationStatus:
    status = await client.get_status(instance_id, **options)
    if not status or not status.runtime_status:
        raise ApiError(404, f"no job with id {instance_id!r}")
    return status


@app.route(route="jobs/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A job's runtime status, operation, times, progress and output."""
    try:
        return _json(status_body(await _require(client, req.route_params["instance_id"])))
    except ApiError as err:
        return error_response(err)


@app.route(route="jobs/{instance_id}/tasks", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_job_tasks(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The job's tasks (file or tile): status, start, end, duration, error; paged."""
    instance_id = req.route_params["instance_id"]
    try:
        top, skip = _number_param(req, "top", 100, 1, 5000), _number_param(req, "skip", 0, 0, 10**9)
        wanted = req.params.get("status")
        status = await _require(client, instance_id, show_history=True, show_history_output=True)
        children = await client.get_status_by(instance_id_prefix=f"{instance_id}:")
        histories = [status]
        for child in sorted(children, key=lambda c: c.instance_id):
            histories.append(await client.get_status(child.instance_id, show_history=True,
                                                     show_history_output=True))
    except ApiError as err:
        return error_response(err)
    tasks = job_tasks([h.historyEvents or [] for h in histories if h])
    if wanted:
        tasks = [t for t in tasks if t.status == wanted]
    page = tasks[skip:skip + top]
    return _json({"instanceId": instance_id, "total": len(tasks), "skip": skip, "top": top,
                  "tasks": [t.model_dump(mode="json") for t in page]})


def _number_param(req: func.HttpRequest, name: str, default, low, high, kind: type = int):
    """A numeric query parameter within [low, high], or a 400 that says what to send."""
    raw = req.params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ApiError(400, f"query parameter {name!r} must be {noun}, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name!r} must be between {low:g} and {high:g}")
    return value


@app.route(route="jobs", methods=["GET"])
@app.durable_client_input(client_name="client")
async def list_jobs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Jobs filtered by ``status`` (e.g. failed, running), ``operation`` and ``stale_minutes``
    (running with no progress for that long: stuck jobs)."""
    try:
        statuses = _statuses(req.params.get("status"))
        stale = _number_param(req, "stale_minutes", 0.0, 0.0, 1e6, kind=float)
        operation = req.params.get("operation")
        if operation and operation not in OPERATIONS:
            raise ApiError(400, f"unknown operation {operation!r}", known_operations=sorted(OPERATIONS))
    except ApiError as err:
        return error_response(err)
    found = await client.get_status_by(runtime_status=statuses or None,
                                       instance_id_prefix=f"{operation}-" if operation else None)
    jobs = [s for s in found if s.name in OPERATIONS and ":" not in s.instance_id]
    if stale:
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=stale)
        jobs = [s for s in jobs if s.runtime_status in RUNNING_STATES and s.last_updated_time
                and s.last_updated_time.astimezone(dt.timezone.utc) < cutoff]
    jobs.sort(key=lambda s: s.created_time or dt.datetime.min.replace(tzinfo=dt.timezone.utc), reverse=True)
    return _json({"count": len(jobs), "jobs": [status_body(s) for s in jobs]})


def _statuses(raw: str | None) -> list[df.OrchestrationRuntimeStatus]:
    names = {s.name.lower(): s for s in RS}
    aliases = {"running": [RS.Running, RS.Pending, RS.ContinuedAsNew], "failed": [RS.Failed]}
    statuses: list[df.OrchestrationRuntimeStatus] = []
    for part in filter(None, (raw or "").split(",")):
        key = part.strip().lower()
        if key in aliases:
            statuses += aliases[key]
        elif key in names:
            statuses.append(names[key])
        else:
            raise ApiError(400, f"unknown status {part!r}", known_statuses=sorted(names))
    return statuses


@app.route(route="jobs/{instance_id}/retry", methods=["POST"])
@app.durable_client_input(client_name="client")
async def retry_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Run a failed, terminated or partly failed job again; only what failed is redone."""
    instance_id = req.route_params["instance_id"]
    try:
        status = await _require(client, instance_id)
        if status.runtime_status not in RETRYABLE_STATES:
            raise ApiError(409, f"job {instance_id} is {status.runtime_status.name}; only failed, "
                                "terminated or partly failed jobs can be retried")
        output = status.output if isinstance(status.output, dict) else {}
        if status.runtime_status == RS.Completed and not output.get("completed_with_errors"):
            raise ApiError(409, f"job {instance_id} completed without errors; nothing to retry")
        retry_input = retry_request(status.name, status.input_, output)
    except ApiError as err:
        return error_response(err)
    await purge_children(client, instance_id)
    await client.start_new(status.name, instance_id, retry_input)
    return client.create_check_status_response(req, instance_id)


async def purge_children(client: df.DurableOrchestrationClient, instance_id: str) -> None:
    """Forget the chunk sub-orchestrations of a previous run of this job id, so the new run's
    tasks and progress are its own."""
    for child in await client.get_status_by(instance_id_prefix=f"{instance_id}:"):
        await client.purge_instance_history(child.instance_id)


def retry_request(operation: str, stored_input: Any, output: dict[str, Any]) -> dict[str, Any]:
    """The input of a retry: a conversion names only the failed blobs; other jobs rerun, and their
    idempotent activities skip what already succeeded (a sync only redoes what is not cataloged)."""
    request = json.loads(stored_input) if isinstance(stored_input, str) else dict(stored_input or {})
    failures = [f["name"] for f in output.get("failures", [])]
    if operation == "cog_conversion" and failures and output.get("failed") == len(failures):
        request.update({"blobs": failures, "prefix": None})
    return request


@app.route(route="jobs/{instance_id}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Stop a running job (and its chunk sub-orchestrations)."""
    instance_id = req.route_params["instance_id"]
    try:
        status = await _require(client, instance_id)
        if status.runtime_status not in RUNNING_STATES:
            raise ApiError(409, f"job {instance_id} is {status.runtime_status.name}, not running")
    except ApiError as err:
        return error_response(err)
    reason = req.params.get("reason") or "terminated through the job API"
    await client.terminate(instance_id, reason)
    for child in await client.get_status_by(runtime_status=list(RUNNING_STATES), instance_id_prefix=f"{instance_id}:"):
        await client.terminate(child.instance_id, reason)
    return _json({"instanceId": instance_id, "terminated": True, "reason": reason}, 202)


@app.timer_trigger(schedule="%RMH_SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False)
@app.durable_client_input(client_name="client")
async def scheduled_sync(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """On the schedule, sync each configured container as a singleton: while a container's sync
    still runs (scheduled or manual: same instance id), the tick only logs it."""
    config = get_settings()
    for container in config.sync_containers:
        request = SyncContainerRequest(container=container, chunk_size=config.sync_chunk_size)
        response = await start_job(client, None, "sync_container", request, rerun=True)
        if response.status_code == 409:
            logger.info("scheduled sync of %s skipped: the previous sync is still running", container)
        else:
            logger.info("scheduled sync of %s started", container)


@app.route(route="metrics", methods=["GET"])
@app.durable_client_input(client_name="client")
async def get_metrics(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Per-operation job metrics: counts by outcome, tasks, duration percentiles."""
    report = {}
    for operation in sorted(OPERATIONS):
        state = await client.read_entity_state(df.EntityId(METRICS_ENTITY, operation))
        if state.entity_exists:
            metrics = entities.OperationMetrics.model_validate(_loads(state.entity_state))
            report[operation] = metrics.report()
    return _json({"operations": report})


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def health(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Storage, catalog and runtime reachability (anonymous; no secrets in the answer)."""
    checks = {"storage": _check(_storage_health), "catalog": _check(_catalog_health)}
    try:
        await client.get_status_by(runtime_status=[RS.Running])
        checks["runtime"] = {"ok": True}
    except Exception as err:  # noqa: BLE001 - any failure here is the runtime being unreachable
        checks["runtime"] = {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}
    ok = all(c["ok"] for c in checks.values())
    return _json({"ok": ok, **checks}, 200 if ok else 503)


def _check(probe) -> dict[str, Any]:
    try:
        return {"ok": True, **probe()}
    except Exception as err:  # noqa: BLE001 - health reports every failure instead of raising
        return {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}


def _storage_health() -> dict[str, Any]:
    config = get_settings()
    store = activities.blob_store()
    try:
        store.list_page(config.input_container, page_size=1)
        exists = True
    except storage.ContainerNotFound:  # the service answered; the container is simply not made yet
        exists = False
    return {"backend": config.storage_backend.value, "input_container": config.input_container,
            "input_container_exists": exists}


def _catalog_health() -> dict[str, Any]:
    health = activities.catalog().health()
    if not health.ok:
        raise RuntimeError(health.detail or "catalog not healthy")
    return health.model_dump(mode="json")
