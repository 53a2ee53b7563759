"""The job API (a blueprint): submit, read, list, retry and terminate jobs, their tasks and the
operations' metrics; the scheduled sync and the blob events that start jobs too. What is read of
running and finished jobs is ``job_reads`` (the read model); errors map to statuses in
``http_edge``."""
from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import re
import weakref
from typing import Any, Callable

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

import callers
import clients
import entities
import job_listing
import job_reads
import orchestrators
import raster_crs
import raster_errors
import raster_names
import storage
from entities import METRICS_ENTITY
from http_edge import ApiError, api, job_id_param, json_response, number_param, read_json_body
from job_reads import RS, RUNNING_STATES, partly_failed
from models import (OPERATIONS, IngestBlobRequest, JobRequest, SyncContainerRequest, UnpublishRequest,
                    VisibilityRequest, instance_id_for, problems_of)
from orchestration import name_of
from settings import get_settings

logger = logging.getLogger(__name__)
bp = df.Blueprint()

RETRYABLE_STATES = {RS.Failed, RS.Terminated, RS.Completed}
TASK_STATUSES = ("running", "done", "skipped", "failed")


def parse_job_request(operation: str, body: bytes) -> tuple[JobRequest, bool]:
    """The validated request of ``operation`` (defaults from settings applied) and its ``rerun``
    flag, or an ApiError (404/400/413)."""
    model = OPERATIONS.get(operation)
    if model is None:
        raise ApiError(404, f"unknown operation {operation[:80]!r}", known_operations=sorted(OPERATIONS))
    payload = read_json_body(body)
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    rerun = payload.pop("rerun", False)
    if not isinstance(rerun, bool):
        raise ApiError(400, "invalid request", problems=[{"field": "rerun", "problem": "must be true or false"}])
    if "requested_by" in model.model_fields and "requested_by" in payload:
        raise ApiError(400, "invalid request", problems=[{
            "field": "requested_by", "problem": "set by the service from the key you call with; remove it"}])
    rerun = rerun or getattr(model, "repeatable", False)
    try:
        request = model.model_validate(payload)
    except ValidationError as err:
        raise ApiError(400, "invalid request", problems=problems_of(err.errors())) from None
    request = _canonical_crs(_with_defaults(request))
    _check_containers(request)
    return request, rerun


def _canonical_crs(request: JobRequest) -> JobRequest:
    """The request with its target CRS parsed once, here, without files or network
    (``raster_crs.parse_crs``), into the canonical text that travels on (``EPSG:<code>``, else
    WKT2): orchestrator replays and workers never parse what a client wrote."""
    crs = getattr(request, "target_crs", None)
    if crs is None:
        return request
    try:
        canonical = raster_crs.canonical_crs(crs)
    except raster_errors.GeoOpsError as err:
        raise ApiError(400, "invalid request", problems=[{"field": "target_crs", "problem": err.reason}]) from None
    return request.model_copy(update={"target_crs": canonical})


def _with_defaults(request: JobRequest) -> JobRequest:
    config = get_settings()
    if hasattr(request, "with_defaults"):
        request = request.with_defaults(input_container=config.input_container,
                                        output_container=config.output_container)
    if isinstance(request, SyncContainerRequest) and request.chunk_size is None:
        request = request.model_copy(update={"chunk_size": config.sync_chunk_size})
    return request


def _check_containers(request: JobRequest) -> None:
    """No job reads from or writes to the system container (the service's own state: plans,
    inventories), and outputs never go to the input container: a 400 before anything is read or
    written, as the token and asset routes refuse the system container."""
    system = get_settings().system_container
    container = getattr(request, "container", None)
    if container == system:
        raise ApiError(400, "invalid request", problems=[{
            "field": "container",
            "problem": f"{container!r} is the system container, which holds the service's own state "
                       "(plans, inventories), not data; name a container of rasters"}])
    output = getattr(request, "output_container", None)
    if output is None:
        return
    clashes = {container: "the input container", system: "the system container"}
    if output in clashes:
        raise ApiError(400, "invalid request", problems=[{
            "field": "output_container",
            "problem": f"{output!r} is {clashes[output]}; write outputs to another container"}])


async def _require_container(request: JobRequest) -> None:
    """A job over a container that does not exist is a 404 at submission, not a failed job."""
    container = getattr(request, "container", None)
    if container is None or isinstance(request, UnpublishRequest):  # its sources may be long gone
        return
    if not await asyncio.to_thread(clients.blob_store().container_exists, container):
        raise ApiError(404, f"container {container!r} does not exist", field="container")


def _same_request(status: df.DurableOrchestrationStatus, request: JobRequest) -> bool:
    stored = status.input_
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError:
            return False
    return json.dumps(stored, sort_keys=True, separators=(",", ":")) == request.canonical_json()


# One submission at a time per job id in this worker: concurrent identical requests see each
# other's start (one 202, the rest 409) and never purge a run that another request just started.
# A lock lives as long as a submission holds it (weak values): the table needs no bound or sweep,
# and no lock in use can be dropped from it.
_SUBMISSIONS: "weakref.WeakValueDictionary[str, asyncio.Lock]" = weakref.WeakValueDictionary()


def _submission_lock(instance_id: str) -> asyncio.Lock:
    lock = _SUBMISSIONS.get(instance_id)
    if lock is None:
        lock = _SUBMISSIONS[instance_id] = asyncio.Lock()
    return lock


def _already_running(client: df.DurableOrchestrationClient, req: func.HttpRequest | None,
                     instance_id: str) -> func.HttpResponse:
    links = client.create_http_management_payload(instance_id) if req is None else \
        client.get_client_response_links(req, instance_id)
    return json_response({"error": f"job {instance_id} is already running", **links}, 409)


async def start_job(client: df.DurableOrchestrationClient, req: func.HttpRequest | None,
                    operation: str, request: JobRequest, rerun: bool) -> func.HttpResponse:
    """Start the job unless the same one runs (409) or already finished (200)."""
    instance_id = instance_id_for(operation, request)
    async with _submission_lock(instance_id):
        existing = await client.get_status(instance_id)
        if existing and existing.runtime_status in RUNNING_STATES:
            return _already_running(client, req, instance_id)
        if existing and existing.runtime_status == RS.Completed and not rerun and _same_request(existing, request):
            return json_response(job_reads.status_body(existing), 200)
        if existing and existing.runtime_status:
            await purge_children(client, instance_id)
        try:
            await client.start_new(operation, instance_id, request.model_dump(mode="json"))
        except Exception:
            # Another worker started the same job between our check and our start (the
            # runtime refuses a second start of a running id): that is the 409 case.
            current = await client.get_status(instance_id)
            if current and current.runtime_status in RUNNING_STATES:
                return _already_running(client, req, instance_id)
            raise
    logger.info("started %s", instance_id)
    if req is None:
        return json_response(client.create_http_management_payload(instance_id), 202)
    return client.create_check_status_response(req, instance_id)


@bp.route(route="jobs/{operation}", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api
async def submit_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a job: 202 with status URLs; 409 if the same job runs; 200 if it already finished."""
    request, rerun = parse_job_request(req.route_params.get("operation", ""), req.get_body())
    await _require_container(request)
    await _require_collection(request)
    if isinstance(request, VisibilityRequest):  # the record says who: the key's name or fingerprint
        request = request.model_copy(update={"requested_by": callers.caller(
            req.headers, req.params, get_settings().key_names)})
    return await start_job(client, req, req.route_params["operation"], request, rerun)


async def _require_collection(request: JobRequest) -> None:
    """Publishing, revoking or unpublishing a collection that does not exist is a 404 at submission."""
    needed = isinstance(request, VisibilityRequest) or (
        isinstance(request, UnpublishRequest) and (request.items is not None or request.entire_collection))
    collection = getattr(request, "collection", None)
    if needed and collection and await asyncio.to_thread(clients.catalog().get_collection, collection) is None:
        raise ApiError(404, f"collection {collection!r} does not exist", field="collection")


async def _require(client: df.DurableOrchestrationClient, instance_id: str,
                   **options: bool) -> df.DurableOrchestrationStatus:
    status = await client.get_status(instance_id, **options)
    if not status or not status.runtime_status:
        raise ApiError(404, f"no job with id {instance_id!r}")
    return status


@bp.route(route="jobs/{instance_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api
async def get_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A job's runtime status, operation, times, progress and output."""
    status = await _require(client, job_id_param(req))
    body = job_reads.status_body(status)
    if status.runtime_status in RUNNING_STATES and isinstance(status.custom_status, dict):
        body["customStatus"] = await job_reads.live_progress(client, status)
    return json_response(body)


@bp.route(route="jobs/{instance_id}/tasks", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api
async def get_job_tasks(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The job's tasks (file or tile): status, start, end, duration, error; paged."""
    instance_id = job_id_param(req)
    top, skip = number_param(req, "top", 100, 1, 5000), number_param(req, "skip", 0, 0, 10**9)
    wanted = req.params.get("status")
    if wanted is not None and wanted not in TASK_STATUSES:
        raise ApiError(400, f"unknown task status {wanted[:40]!r}", known_statuses=list(TASK_STATUSES))
    status = await _require(client, instance_id)
    children = await job_reads.children(client, status)
    tasks = []
    for part in [status, *sorted(children, key=lambda c: c.instance_id)]:
        tasks += await job_reads.instance_tasks(client, part)
    if wanted:
        tasks = [t for t in tasks if t.status == wanted]
    page = tasks[skip:skip + top]
    return json_response({"instanceId": instance_id, "total": len(tasks), "skip": skip, "top": top,
                  "tasks": [t.model_dump(mode="json") for t in page]})


@bp.route(route="jobs", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api
async def list_jobs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Jobs filtered by ``status`` (e.g. failed, running, completed_with_errors), ``operation``
    and ``stale_minutes`` (running with no progress for that long: stuck jobs), newest first:
    summaries (``outputs=true``: whole outputs), ``top`` a page, ``continuationToken`` for the next
    (``job_listing``)."""
    statuses, accepts = _statuses(req.params.get("status"))
    stale = number_param(req, "stale_minutes", 0.0, 0.0, 1e6, kind=float)
    top = number_param(req, "top", job_listing.JOBS_PAGE, 1, 1000)
    outputs = _flag_param(req, "outputs")
    operation = req.params.get("operation")
    if operation and operation not in OPERATIONS:
        raise ApiError(400, f"unknown operation {operation[:80]!r}", known_operations=sorted(OPERATIONS))
    now = dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(minutes=stale)

    def is_job(s: df.DurableOrchestrationStatus) -> bool:
        return s.name in OPERATIONS and ":" not in s.instance_id and accepts(s) and (not stale or (
            s.runtime_status in RUNNING_STATES and s.last_updated_time is not None
            and s.last_updated_time.astimezone(dt.timezone.utc) < cutoff))

    query = functools.partial(client.get_status_by, runtime_status=statuses or None,
                              instance_id_prefix=f"{operation}-" if operation else None)
    token = req.params.get("continuationToken") or req.headers.get("x-ms-continuation-token") or None
    try:
        jobs, following = await job_listing.newest_jobs(query, is_job, top=top, token=token, now=now)
    except job_listing.BadJobsToken as err:
        raise ApiError(400, str(err)) from None
    bodies = [job_reads.status_body(s) for s in jobs]
    if not outputs:
        for body in bodies:
            body["output"] = job_listing.summary(body["output"])
    live = [(b, s) for b, s in zip(bodies, jobs)  # fanning out: running chunks or its own live tasks
            if s.runtime_status in RUNNING_STATES and isinstance(s.custom_status, dict)
            and (s.custom_status.get("chunks") or s.custom_status.get("segments") or s.custom_status.get("live"))
            ][:job_reads.LIVE_JOBS_LISTED]
    for body, job in live:  # the newest running jobs' progress per file, as GET /api/jobs/{id} has it
        body["customStatus"] = await job_reads.live_progress(client, job)
    return json_response({"count": len(jobs), "jobs": bodies, "operations": sorted(OPERATIONS),
                          "continuationToken": following},
                         headers={"x-ms-continuation-token": following} if following else None)


def _flag_param(req: func.HttpRequest, name: str) -> bool:
    raw = (req.params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, f"query parameter {name!r} must be true or false, got {raw[:40]!r}")
    return raw in ("true", "1")


# Status filters beyond the runtime statuses: (runtime statuses to list, which of them to keep).
# A job that completed with errors counts as failed (some of its items failed).
STATUS_FILTERS: dict[str, tuple[list[df.OrchestrationRuntimeStatus], Callable[[Any], bool] | None]] = {
    "running": ([RS.Running, RS.Pending, RS.ContinuedAsNew], None),
    "failed": ([RS.Failed, RS.Completed], lambda s: s.runtime_status == RS.Failed or partly_failed(s)),
    "completed_with_errors": ([RS.Completed], partly_failed),
}


def _statuses(raw: str | None) -> tuple[list[df.OrchestrationRuntimeStatus], Callable[[Any], bool]]:
    """The runtime statuses to list for a ``status`` filter, and which listed jobs it keeps."""
    names = {s.name.lower(): s for s in RS}
    statuses: list[df.OrchestrationRuntimeStatus] = []
    keeps: list[tuple[set, Callable[[Any], bool] | None]] = []
    for part in filter(None, (raw or "").split(",")):
        key = part.strip().lower()
        if key in STATUS_FILTERS:
            listed, keep = STATUS_FILTERS[key]
        elif key in names:
            listed, keep = [names[key]], None
        else:
            raise ApiError(400, f"unknown status {part[:40]!r}",
                           known_statuses=sorted({*names, *STATUS_FILTERS}))
        statuses += [s for s in listed if s not in statuses]
        keeps.append((set(listed), keep))

    def accepts(status: df.DurableOrchestrationStatus) -> bool:
        return not keeps or any(status.runtime_status in listed and (keep is None or keep(status))
                                for listed, keep in keeps)

    return statuses, accepts


@bp.route(route="jobs/{instance_id}/retry", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api
async def retry_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Run a failed, terminated or partly failed job again; only what failed is redone."""
    instance_id = job_id_param(req)
    async with _submission_lock(instance_id):
        status = await _require(client, instance_id)
        if status.runtime_status not in RETRYABLE_STATES:
            raise ApiError(409, f"job {instance_id} is {status.runtime_status.name}; only failed, "
                                "terminated or partly failed jobs can be retried")
        output = status.output if isinstance(status.output, dict) else {}
        if status.runtime_status == RS.Completed and not output.get("completed_with_errors"):
            raise ApiError(409, f"job {instance_id} completed without errors; nothing to retry")
        retry_input = retry_request(status.name, status.input_, output)
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
    if operation == name_of(orchestrators.cog_conversion) and failures and output.get("failed") == len(failures):
        request.update({"blobs": failures, "prefix": None})
    return request


@bp.route(route="jobs/{instance_id}/terminate", methods=["POST"])
@bp.durable_client_input(client_name="client")
@api
async def terminate_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Stop a running job (and its chunk sub-orchestrations)."""
    instance_id = job_id_param(req)
    status = await _require(client, instance_id)
    if status.runtime_status not in RUNNING_STATES:
        raise ApiError(409, f"job {instance_id} is {status.runtime_status.name}, not running")
    reason = (req.params.get("reason") or "terminated through the job API")[:500]
    await client.terminate(instance_id, reason)
    for child in await client.get_status_by(runtime_status=list(RUNNING_STATES), instance_id_prefix=f"{instance_id}:"):
        await client.terminate(child.instance_id, reason)
    return json_response({"instanceId": instance_id, "terminated": True, "reason": reason}, 202)


@bp.timer_trigger(schedule="%RMH_SYNC_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def scheduled_sync(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """On the schedule, sync each configured container as a singleton: while a container's sync
    still runs (scheduled or manual: same instance id), the tick only logs it."""
    config = get_settings()
    for container in config.sync_containers:
        request = SyncContainerRequest(container=container, chunk_size=config.sync_chunk_size)
        response = await start_job(client, None, name_of(orchestrators.sync_container), request, rerun=True)
        if response.status_code == 409:
            logger.info("scheduled sync of %s skipped: the previous sync is still running", container)
        else:
            logger.info("scheduled sync of %s started", container)


# -- blob events (Event Grid) ----------------------------------------------------------------------

BLOB_EVENTS = {"Microsoft.Storage.BlobCreated": "created", "Microsoft.Storage.BlobDeleted": "deleted"}
_SUBJECT = re.compile(r"^/blobServices/default/containers/([^/]+)/blobs/(.+)$")


def ingest_request(event: func.EventGridEvent) -> IngestBlobRequest | None:
    """The ingest job of a blob event, or None for an event that is not ours to act on (another
    event type, a container that is not watched, a file that is not a raster). The event of a
    Zarr store's root marker (``raster_names.zarr_store_of``) is the store's: its blob is the
    store's prefix."""
    kind = BLOB_EVENTS.get(event.event_type)
    match = _SUBJECT.match(event.subject or "")
    if kind is None or match is None:
        return None
    # The subject carries the blob's name as it is (Event Grid does not percent-encode it, and
    # neither does the embedded emulation): a name holding "%41" is that name, not "A".
    container, blob = match.group(1), match.group(2)
    config = get_settings()
    # A Zarr store's root marker stands for the store (its other blobs' events are not ours).
    store = raster_names.zarr_store_of(blob)
    if container not in config.watched_containers or not (store or raster_names.is_raster_name(blob)):
        return None
    blob = store or blob
    data = event.get_json() or {}
    version = storage.normalize_etag(data.get("eTag")) if kind == "created" else str(data.get("sequencer", ""))
    try:
        request = IngestBlobRequest(container=container, blob=blob, event=kind, version=version[:256],
                                    convert=container in config.event_convert_containers)
    except ValidationError:
        logger.warning("blob event %s for an invalid blob name ignored", event.id)
        return None
    return _with_defaults(request)


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def blob_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """A blob created, changed or deleted in a watched container: one ``ingest_blob`` job per blob
    version. Its id derives from container, blob and ETag (a deletion's sequencer), so a
    re-delivered event (Event Grid delivers at least once) is the same job."""
    request = ingest_request(event)
    if request is None:
        return
    response = await start_job(client, None, name_of(orchestrators.ingest_blob), request, rerun=False)
    logger.info("blob event %s (%s %s/%s): %s", event.id, request.event, request.container,
                request.blob, {202: "job started", 409: "job already running", 200: "already done"}.get(
                    response.status_code, response.status_code))


@bp.route(route="metrics", methods=["GET"])
@bp.durable_client_input(client_name="client")
@api
async def get_metrics(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Per-operation job metrics: counts by outcome, tasks, duration percentiles."""
    report = {}
    for operation in sorted(OPERATIONS):
        state = await client.read_entity_state(df.EntityId(METRICS_ENTITY, operation))
        if state.entity_exists:
            metrics = entities.OperationMetrics.model_validate(_loads(state.entity_state))
            report[operation] = metrics.report()
    return json_response({"operations": report})


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
