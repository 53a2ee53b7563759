"""The Functions app: registers the blueprints and exposes the job API over HTTP.

This module wires, it does not compute: routes parse the request with pydantic, start or query
orchestrations through the Durable client, and map errors to status codes in one table.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import functools
import hmac
import json
import logging
import re
import threading
import time
import urllib.parse
from typing import Any, Awaitable, Callable

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

import activities
import asset_locations
import callers
import catalogs
import cube_activities
import dashboard
import entities
import footprints
import job_listing
import openapi
import orchestrators
import previews
import raster_errors
import raster_names
import stac_ops
import storage
from entities import METRICS_ENTITY
from models import (OPERATIONS, IngestBlobRequest, JobRequest, Progress, SyncContainerRequest, UnpublishRequest,
                    VisibilityRequest, instance_id_for, job_tasks, history_progress, chunk_instance_id, problems_of)
from settings import SettingsError, get_settings

logger = logging.getLogger(__name__)

get_settings()  # a bad or missing setting fails the app at start-up, naming the setting

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestrators.bp)
app.register_functions(activities.bp)
app.register_functions(cube_activities.bp)
app.register_functions(entities.bp)

RS = df.OrchestrationRuntimeStatus
RUNNING_STATES = {RS.Running, RS.Pending, RS.Suspended, RS.ContinuedAsNew}
RETRYABLE_STATES = {RS.Failed, RS.Terminated, RS.Completed}
#: Largest request body accepted (a job request is a few hundred bytes; 10,000 blob names fit).
MAX_BODY_BYTES = 1024 * 1024
#: Deepest JSON nesting accepted in a request body (our requests are two levels deep).
MAX_JSON_DEPTH = 16
#: Job ids this API hands out: operation names, hashes, container names, ':' for chunks.
JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
TASK_STATUSES = ("running", "done", "skipped", "failed")


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
    storage.StorageRefused: 502,
    storage.GdalPathTooLong: 400,
    storage.SigningUnsupported: 404,
    catalogs.CatalogUnavailable: 503,
    catalogs.InvalidPageToken: 400,
    catalogs.CollectionNotFound: 404,
    dashboard.DashboardFileNotFound: 404,
    previews.ItemNotFound: 404,
    previews.NotPreviewable: 404,
    previews.InvalidTile: 400,
    previews.TileOutside: 404,
    previews.TileTooCostly: 422,
    previews.AssetUnreadable: 422,
    asset_locations.AssetOutsideStorage: 409,
    raster_errors.SourceUnavailable: 503,
    SettingsError: 500,
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    try:
        text = json.dumps(body, default=str, allow_nan=False)
    except ValueError:  # an open-ended histogram bucket (+inf): JSON has no infinity, say null
        text = json.dumps(_finite(body), default=str, allow_nan=False)
    return func.HttpResponse(text, status_code=status, mimetype="application/json", headers=headers)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def error_response(err: BaseException) -> func.HttpResponse:
    """The HTTP response for an exception, from the one table above."""
    if isinstance(err, ApiError):
        return _json({"error": str(err), **err.details}, err.status)
    for cls in type(err).__mro__:
        if cls in ERROR_STATUS:
            return _json({"error": str(err), "type": type(err).__name__}, ERROR_STATUS[cls])
    logger.exception("unhandled error")
    return _json({"error": "internal error", "type": type(err).__name__}, 500)


def api(route: Callable[..., Awaitable[func.HttpResponse]]) -> Callable[..., Awaitable[func.HttpResponse]]:
    """Every route answers with a status and a JSON body, whatever a client sends: ApiErrors and
    the conditions of ERROR_STATUS map to their status; anything else is logged once and answered
    500 with a body (the fuzz tests hold the routes to never reaching it)."""

    @functools.wraps(route)
    async def answered(*args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return await route(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the edge: every error becomes a response
            return error_response(err)

    return answered


def read_json_body(body: bytes | None) -> Any:
    """A request body as JSON (None when empty), bounded in size and nesting, or an ApiError."""
    body = body or b""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return None
    try:
        payload = json.loads(body)
    except RecursionError:
        raise ApiError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    return payload


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, iteratively (a deep value must not exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def job_id_param(req: func.HttpRequest) -> str:
    """The ``{instance_id}`` route parameter, or a 400 naming what an id may contain."""
    instance_id = req.route_params.get("instance_id") or ""
    if not JOB_ID.match(instance_id):
        raise ApiError(400, f"invalid job id {instance_id[:80]!r}: ids contain letters, digits, "
                            "'_', '-', '.' and ':' (up to 256 characters)")
    return instance_id


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
    request = _with_defaults(request)
    _check_containers(request)
    return request, rerun


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
    if not await asyncio.to_thread(activities.blob_store().container_exists, container):
        raise ApiError(404, f"container {container!r} does not exist", field="container")


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


# One submission at a time per job id in this worker: concurrent identical requests see each
# other's start (one 202, the rest 409) and never purge a run that another request just started.
_SUBMISSIONS: dict[str, asyncio.Lock] = {}


def _submission_lock(instance_id: str) -> asyncio.Lock:
    if len(_SUBMISSIONS) > 10_000:  # keep the table bounded; idle locks are cheap to recreate
        for key in [k for k, lock in _SUBMISSIONS.items() if not lock.locked()]:
            del _SUBMISSIONS[key]
    return _SUBMISSIONS.setdefault(instance_id, asyncio.Lock())


def _already_running(client: df.DurableOrchestrationClient, req: func.HttpRequest | None,
                     instance_id: str) -> func.HttpResponse:
    links = client.create_http_management_payload(instance_id) if req is None else \
        client.get_client_response_links(req, instance_id)
    return _json({"error": f"job {instance_id} is already running", **links}, 409)


async def start_job(client: df.DurableOrchestrationClient, req: func.HttpRequest | None,
                    operation: str, request: JobRequest, rerun: bool) -> func.HttpResponse:
    """Start the job unless the same one runs (409) or already finished (200)."""
    instance_id = instance_id_for(operation, request)
    async with _submission_lock(instance_id):
        existing = await client.get_status(instance_id)
        if existing and existing.runtime_status in RUNNING_STATES:
            return _already_running(client, req, instance_id)
        if existing and existing.runtime_status == RS.Completed and not rerun and _same_request(existing, request):
            return _json(status_body(existing), 200)
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
        return _json(client.create_http_management_payload(instance_id), 202)
    return client.create_check_status_response(req, instance_id)


@app.route(route="jobs/{operation}", methods=["POST"])
@app.durable_client_input(client_name="client")
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
    if needed and collection and await asyncio.to_thread(activities.catalog().get_collection, collection) is None:
        raise ApiError(404, f"collection {collection!r} does not exist", field="collection")


async def _require(client: df.DurableOrchestrationClient, instance_id: str,
                   **options: bool) -> df.DurableOrchestrationStatus:
    status = await client.get_status(instance_id, **options)
    if not status or not status.runtime_status:
        raise ApiError(404, f"no job with id {instance_id!r}")
    return status


@app.route(route="jobs/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
async def get_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """A job's runtime status, operation, times, progress and output."""
    status = await _require(client, job_id_param(req))
    body = status_body(status)
    if status.runtime_status in RUNNING_STATES and isinstance(status.custom_status, dict):
        body["customStatus"] = await live_progress(client, status)
    return _json(body)


async def live_progress(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> Any:
    """A running job's progress: its own (the chunks it has merged) plus what it has not counted
    yet: the files and tiles finished in its own live fan-out and in its running chunks, counted
    from their histories, and the final counts of the chunks that finished since it last updated.
    A job that runs its chunks in segments (``Progress.segments``) counts each running segment
    the same way, one level down.

    Only running chunks are listed (a job runs a few at a time); the finished ones it has not
    merged are among those its status names as running (``Progress.chunks``). A status that names
    none (an older job, a wide window) falls back to listing every chunk of the job."""
    prefix = f"{status.instance_id}:"
    mine = status.custom_status
    parts, now = [], status.last_updated_time or dt.datetime.now(dt.timezone.utc)
    if _is_live(mine):  # its own fan-out (a tiled raster's tiles): on top of what it counted
        parts.append(await _history_counts(client, status))
    kind = "segment" if isinstance(mine.get("segments"), list) else "chunk"
    named = mine.get(f"{kind}s") if isinstance(mine.get(f"{kind}s"), list) else None
    if named is None:
        chunks = await client.get_status_by(instance_id_prefix=prefix)
    else:
        chunks = await client.get_status_by(instance_id_prefix=prefix, runtime_status=list(RUNNING_STATES))
    chunks = {c.instance_id: c for c in chunks if ":" not in c.instance_id[len(prefix):]}
    if named is not None:  # finished since the job's last update: the ones it named, no longer running
        for index in named:
            chunk_id = chunk_instance_id(status.instance_id, kind, int(index))
            if chunk_id not in chunks:
                found = await client.get_status(chunk_id)
                if found and found.runtime_status == RS.Completed:
                    chunks[chunk_id] = found
    since = status.last_updated_time
    for chunk in chunks.values():
        if not isinstance(chunk.custom_status, dict):
            continue
        if chunk.runtime_status in RUNNING_STATES:
            if kind == "segment":  # a segment's own chunks, counted as a job's
                counted = await live_progress(client, chunk)
                parts.append((counted.get("done", 0), counted.get("failed", 0)))
            elif _is_live(chunk.custom_status):  # what it counted, and the files finished since
                counted = await _history_counts(client, chunk)
                parts.append((chunk.custom_status.get("done", 0) + counted[0],
                              chunk.custom_status.get("failed", 0) + counted[1]))
        elif chunk.runtime_status == RS.Completed and (named is not None or (
                since and chunk.last_updated_time and chunk.last_updated_time > since)):
            parts.append((chunk.custom_status.get("done", 0), chunk.custom_status.get("failed", 0)))
        else:
            continue
        if chunk.last_updated_time and chunk.last_updated_time > now:
            now = chunk.last_updated_time
    return Progress.combined(mine, parts, now)


def _is_live(custom_status: Any) -> bool:
    return isinstance(custom_status, dict) and custom_status.get("live") is True


# Finished-task counts of live instances, by instance id: (last update, when read, counts). An
# instance is read again only when it has updated since (``lastUpdatedTime`` has whole seconds,
# so one read in the second of its last update, or just after it, is not trusted), and at most
# every LIVE_MAX_AGE: however often a job is polled, a busy chunk's history is read twice a second.
_LIVE_COUNTS: "collections.OrderedDict[str, tuple[Any, dt.datetime, tuple[int, int]]]" = collections.OrderedDict()
LIVE_COUNTS_KEPT = 10_000
LIVE_TRUST_AFTER = dt.timedelta(seconds=2)
LIVE_MAX_AGE = dt.timedelta(seconds=0.5)
LIVE_JOBS_LISTED = 20  # running jobs whose progress a listing counts per file (the rest: per chunk)


async def _history_counts(client: df.DurableOrchestrationClient,
                          status: df.DurableOrchestrationStatus) -> tuple[int, int]:
    """(done, failed) of the files and tiles finished in a live instance's history, read again
    only when it changed since the last read."""
    cached = _LIVE_COUNTS.get(status.instance_id)
    updated = status.last_updated_time
    read_at = dt.datetime.now(dt.timezone.utc)
    if cached is not None and updated is not None and (
            read_at - cached[1] < LIVE_MAX_AGE or (cached[0] == updated and cached[1] >= updated + LIVE_TRUST_AFTER)):
        _LIVE_COUNTS.move_to_end(status.instance_id)
        return cached[2]
    full = await client.get_status(status.instance_id, show_history=True, show_history_output=True, show_input=False)
    counts = history_progress(full.historyEvents or []) if full else (0, 0)
    if updated is not None:
        _LIVE_COUNTS[status.instance_id] = (updated, read_at, counts)
        _LIVE_COUNTS.move_to_end(status.instance_id)
        while len(_LIVE_COUNTS) > LIVE_COUNTS_KEPT:
            _LIVE_COUNTS.popitem(last=False)
    return counts


@app.route(route="jobs/{instance_id}/tasks", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
async def get_job_tasks(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """The job's tasks (file or tile): status, start, end, duration, error; paged."""
    instance_id = job_id_param(req)
    top, skip = _number_param(req, "top", 100, 1, 5000), _number_param(req, "skip", 0, 0, 10**9)
    wanted = req.params.get("status")
    if wanted is not None and wanted not in TASK_STATUSES:
        raise ApiError(400, f"unknown task status {wanted[:40]!r}", known_statuses=list(TASK_STATUSES))
    status = await _require(client, instance_id)
    children = await _children(client, status)
    tasks = []
    for part in [status, *sorted(children, key=lambda c: c.instance_id)]:
        tasks += await _instance_tasks(client, part)
    if wanted:
        tasks = [t for t in tasks if t.status == wanted]
    page = tasks[skip:skip + top]
    return _json({"instanceId": instance_id, "total": len(tasks), "skip": skip, "top": top,
                  "tasks": [t.model_dump(mode="json") for t in page]})


# The sub-orchestrations of finished jobs, by (job id, last update): listing the 200 chunks of a
# 20,000-file job through the client takes ~100 ms, and a finished job's chunks no longer change.
_FINISHED_CHILDREN: "collections.OrderedDict[tuple[str, Any], list]" = collections.OrderedDict()
FINISHED_CHILDREN_KEPT = 64  # jobs


async def _children(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> list:
    """A job's sub-orchestrations (its chunks, and theirs), remembered once the job completed (a
    terminated job's chunks may still run)."""
    key = (status.instance_id, status.last_updated_time)
    if status.runtime_status != RS.Completed or status.last_updated_time is None:
        return await client.get_status_by(instance_id_prefix=f"{status.instance_id}:")
    if key not in _FINISHED_CHILDREN:
        _FINISHED_CHILDREN[key] = await client.get_status_by(instance_id_prefix=f"{status.instance_id}:")
        while len(_FINISHED_CHILDREN) > FINISHED_CHILDREN_KEPT:
            _FINISHED_CHILDREN.popitem(last=False)
    _FINISHED_CHILDREN.move_to_end(key)
    return _FINISHED_CHILDREN[key]


# The tasks of finished instances, by (instance id, last update): their histories no longer
# change, so a page of a large finished job is not rebuilt from every chunk's history each time.
_FINISHED_TASKS: "collections.OrderedDict[tuple[str, Any], list]" = collections.OrderedDict()
FINISHED_TASKS_KEPT = 200_000  # task records (about 1 KB each)
_FINISHED_COUNT = 0


async def _instance_tasks(client: df.DurableOrchestrationClient, status: df.DurableOrchestrationStatus) -> list:
    """The item tasks in one instance's history (``models.job_tasks``), remembered once it ended."""
    key = (status.instance_id, status.last_updated_time)
    finished = status.runtime_status not in RUNNING_STATES
    if finished and key in _FINISHED_TASKS:
        _FINISHED_TASKS.move_to_end(key)
        return _FINISHED_TASKS[key]
    full = await client.get_status(status.instance_id, show_history=True, show_history_output=True)
    tasks = job_tasks([full.historyEvents or []]) if full else []
    if finished:
        global _FINISHED_COUNT
        _FINISHED_TASKS[key] = tasks
        _FINISHED_COUNT += len(tasks)
        while _FINISHED_COUNT > FINISHED_TASKS_KEPT and len(_FINISHED_TASKS) > 1:
            _FINISHED_COUNT -= len(_FINISHED_TASKS.popitem(last=False)[1])
    return tasks


def _number_param(req: func.HttpRequest, name: str, default, low, high, kind: type = int):
    """A numeric query parameter within [low, high], or a 400 that says what to send."""
    raw = req.params.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
        if value != value or value in (float("inf"), float("-inf")):  # NaN / infinities
            raise ValueError(raw)
    except (ValueError, OverflowError):
        noun = "an integer" if kind is int else "a number"
        raise ApiError(400, f"query parameter {name!r} must be {noun}, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"query parameter {name!r} must be between {low:g} and {high:g}")
    return value


@app.route(route="jobs", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
async def list_jobs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Jobs filtered by ``status`` (e.g. failed, running, completed_with_errors), ``operation``
    and ``stale_minutes`` (running with no progress for that long: stuck jobs), newest first:
    summaries (``outputs=true``: whole outputs), ``top`` a page, ``continuationToken`` for the next
    (``job_listing``)."""
    statuses, accepts = _statuses(req.params.get("status"))
    stale = _number_param(req, "stale_minutes", 0.0, 0.0, 1e6, kind=float)
    top = _number_param(req, "top", job_listing.JOBS_PAGE, 1, 1000)
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
    bodies = [status_body(s) for s in jobs]
    if not outputs:
        for body in bodies:
            body["output"] = job_listing.summary(body["output"])
    live = [(b, s) for b, s in zip(bodies, jobs)  # fanning out: running chunks or its own live tasks
            if s.runtime_status in RUNNING_STATES and isinstance(s.custom_status, dict)
            and (s.custom_status.get("chunks") or s.custom_status.get("segments") or s.custom_status.get("live"))
            ][:LIVE_JOBS_LISTED]
    for body, job in live:  # the newest running jobs' progress per file, as GET /api/jobs/{id} has it
        body["customStatus"] = await live_progress(client, job)
    return _json({"count": len(jobs), "jobs": bodies, "operations": sorted(OPERATIONS), "continuationToken": following},
                 headers={"x-ms-continuation-token": following} if following else None)


def _flag_param(req: func.HttpRequest, name: str) -> bool:
    raw = (req.params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, f"query parameter {name!r} must be true or false, got {raw[:40]!r}")
    return raw in ("true", "1")


def _partly_failed(status: df.DurableOrchestrationStatus) -> bool:
    """Completed, with some of its files or tiles failed (``completed_with_errors`` output)."""
    output = status.output if isinstance(status.output, dict) else {}
    return status.runtime_status == RS.Completed and bool(output.get("completed_with_errors"))


# Status filters beyond the runtime statuses: (runtime statuses to list, which of them to keep).
# A job that completed with errors counts as failed (some of its items failed).
STATUS_FILTERS: dict[str, tuple[list[df.OrchestrationRuntimeStatus], Callable[[Any], bool] | None]] = {
    "running": ([RS.Running, RS.Pending, RS.ContinuedAsNew], None),
    "failed": ([RS.Failed, RS.Completed], lambda s: s.runtime_status == RS.Failed or _partly_failed(s)),
    "completed_with_errors": ([RS.Completed], _partly_failed),
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


@app.route(route="jobs/{instance_id}/retry", methods=["POST"])
@app.durable_client_input(client_name="client")
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
    if operation == "cog_conversion" and failures and output.get("failed") == len(failures):
        request.update({"blobs": failures, "prefix": None})
    return request


@app.route(route="jobs/{instance_id}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
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


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def blob_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """A blob created, changed or deleted in a watched container: one ``ingest_blob`` job per blob
    version. Its id derives from container, blob and ETag (a deletion's sequencer), so a
    re-delivered event (Event Grid delivers at least once) is the same job."""
    request = ingest_request(event)
    if request is None:
        return
    response = await start_job(client, None, "ingest_blob", request, rerun=False)
    logger.info("blob event %s (%s %s/%s): %s", event.id, request.event, request.container,
                request.blob, {202: "job started", 409: "job already running", 200: "already done"}.get(
                    response.status_code, response.status_code))


@app.timer_trigger(schedule="%RMH_EVENT_DRAIN_SCHEDULE%", arg_name="timer", run_on_startup=True)
async def deliver_events(timer: func.TimerRequest) -> None:
    """Deliver the change events still in the outbox (writers deliver theirs right after they
    commit; this catches up after an outage or a crash, and at start-up)."""
    report = await asyncio.to_thread(activities.deliver_events)
    if report.delivered or report.failed:
        logger.info("change events: %d delivered, %d waiting to be retried", report.delivered, report.failed)


@app.route(route="lifecycle", methods=["GET"])
@api
async def get_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    """The drafts (collections with items waiting for ``publish``) and the transitions (draft,
    publish, revoke: when, by whom, why), newest first; ``collection`` and ``limit`` narrow it."""
    collection = req.params.get("collection")
    if collection is not None:
        try:
            stac_ops.check_id(collection)
        except stac_ops.StacOpsError as err:
            raise ApiError(400, str(err)) from None
    limit = _number_param(req, "limit", 100, 1, 1000)
    state = await asyncio.to_thread(activities.catalog().lifecycle, collection, limit)
    return _json(state.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@app.route(route="metrics", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
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


# -- signed access to assets -----------------------------------------------------------------------

SAS_KEY_HEADERS = ("Ocp-Apim-Subscription-Key", "x-rmh-token-key")


def _check_token_key(req: func.HttpRequest) -> None:
    """The token route's own key check (401 otherwise): the planetary-computer SDK sends its key
    as ``Ocp-Apim-Subscription-Key``, a header the Functions host does not check, so the route is
    anonymous at the host and compares that header, in constant time, with RMH_SAS_TOKEN_KEYS."""
    keys = [k.get_secret_value().encode() for k in get_settings().sas_token_keys]
    if not keys:
        raise ApiError(401, "the token API has no keys configured (set RMH_SAS_TOKEN_KEYS)")
    presented = next((req.headers.get(h) for h in SAS_KEY_HEADERS if req.headers.get(h)), None)
    if presented is None or not any(hmac.compare_digest(presented.encode(), k) for k in keys):
        raise ApiError(401, "a valid key is required in the Ocp-Apim-Subscription-Key header")


def _signing_store() -> storage.AzureBlobStore:
    store = activities.blob_store()
    if not isinstance(store, storage.AzureBlobStore):
        raise ApiError(404, "assets on local storage are not signed; the embedded host serves them "
                            "under /files (see RMH_ASSET_BASE_URL)")
    return store


def _readable_container(name: str) -> str:
    try:
        container = storage.check_container_name(name)
    except storage.InvalidContainerName as err:
        raise ApiError(400, str(err)) from None
    if container == get_settings().system_container:
        raise ApiError(403, f"container {container!r} holds the service's own state, not assets")
    return container


@app.route(route="sas/v1/token/{account}/{container}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def sas_token(req: func.HttpRequest) -> func.HttpResponse:
    """A short-lived, read-only, container-scoped SAS, shaped like Planetary Computer's token API
    (``{"msft:expiry": ..., "token": ...}``), so ``planetary_computer.sign`` works with
    ``PC_SDK_SAS_URL=https://<app>/api/sas/v1/token``. The token is never logged."""
    _check_token_key(req)
    store = _signing_store()
    if req.route_params.get("account") != store.account_name:
        raise ApiError(404, f"unknown storage account {req.route_params.get('account', '')[:64]!r}")
    container = _readable_container(req.route_params.get("container", ""))
    if not await asyncio.to_thread(store.container_exists, container):
        raise ApiError(404, f"container {container!r} does not exist")
    access = await asyncio.to_thread(store.read_sas, container)
    return _json({"msft:expiry": access.expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": access.token},
                 headers={"Cache-Control": "no-store"})


@app.route(route="items/{collection}/{item_id}/assets/{asset_key}", methods=["GET"])
@api
async def asset_redirect(req: func.HttpRequest) -> func.HttpResponse:
    """302 to a signed, short-lived URL of one asset of a cataloged item (function key)."""
    location = await _asset_location(req)
    return func.HttpResponse(status_code=302, headers={"Location": location, "Cache-Control": "no-store"})


async def _asset_location(req: func.HttpRequest) -> str:
    """The signed (or public) URL of the asset the route parameters name."""
    collection, item_id = req.route_params.get("collection", ""), req.route_params.get("item_id", "")
    key = req.route_params.get("asset_key", "")
    try:
        stac_ops.check_id(collection), stac_ops.check_id(item_id)
    except stac_ops.StacOpsError as err:
        raise ApiError(400, str(err)) from None
    if not JOB_ID.match(key):
        raise ApiError(400, f"invalid asset key {key[:64]!r}")
    item = await asyncio.to_thread(activities.catalog().get_item, collection, item_id)
    if item is None:
        raise ApiError(404, f"no item {item_id!r} in collection {collection!r}")
    asset = item.assets.get(key)
    if asset is None:
        raise ApiError(404, f"item {item_id!r} has no asset {key!r}", assets=sorted(item.assets))
    return await asyncio.to_thread(_signed_location, asset.href)


def _signed_location(href: str) -> str:
    """An asset's href with a read SAS when it is a blob of our account; an href under the
    configured public base URL as it is."""
    config = get_settings()
    if config.asset_base_url and href.startswith(config.asset_base_url + "/"):
        return href
    store = _signing_store()
    prefix = store.url_prefix()
    if not href.startswith(prefix):
        raise ApiError(409, "the asset is not a blob of this service's storage account")
    container, _, blob = urllib.parse.unquote(href[len(prefix):]).partition("/")
    access = store.read_sas(_readable_container(container), blob)
    return f"{href}?{access.token}"


#: Seconds a storage and catalog probe's answer serves anonymous health checks: probes, however
#: many, cost storage and the catalog one cheap call each per interval.
HEALTH_REUSE_SECONDS = 5.0
#: Longest an anonymous health check waits for an answer before it says down (a catalog that does
#: not answer keeps its probe waiting for the pool's retries; the next check reuses that probe).
HEALTH_TIMEOUT_SECONDS = 10.0
_health_lock = threading.Lock()
#: The settings probed, their one-thread probe pool, when the last probe started and its answer.
_health_probe: tuple[object, concurrent.futures.ThreadPoolExecutor, float, concurrent.futures.Future] | None = None


def _backends_probe() -> concurrent.futures.Future:
    """The storage and catalog probe in flight, or its answer when under HEALTH_REUSE_SECONDS old,
    else a new one: one probe at a time, whatever the number of checks. An answer serves only
    the settings it probed (a host whose settings were rebuilt, as tests do, probes again)."""
    global _health_probe
    with _health_lock:
        now, current = time.monotonic(), get_settings()
        if _health_probe is not None and _health_probe[0] is not current:
            _health_probe[1].shutdown(wait=False)  # a probe of the old settings is not waited behind
            _health_probe = None
        if _health_probe is None or (_health_probe[3].done() and now - _health_probe[2] > HEALTH_REUSE_SECONDS):
            pool = (_health_probe[1] if _health_probe else
                    concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmh-health"))
            _health_probe = (current, pool, now, pool.submit(
                lambda: all(_check(probe)["ok"] for probe in (_storage_health, _catalog_reachable))))
        return _health_probe[3]


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
@api
async def health(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Up or down, and nothing else (anonymous: what a load balancer's probe needs): 200
    ``{"status": "up"}`` when storage, catalog and runtime answer a cheap call each within
    HEALTH_TIMEOUT_SECONDS, else 503 ``{"status": "down"}``. What each part said (backends,
    containers, catalog version and counts) is ``health/details``, behind the function key."""
    try:
        backends = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_backends_probe())),
                                          HEALTH_TIMEOUT_SECONDS)
        runtime = (await asyncio.wait_for(_runtime_check(client), HEALTH_TIMEOUT_SECONDS))["ok"]
    except asyncio.TimeoutError:
        backends = runtime = False
    up = backends and runtime
    return _json({"status": "up" if up else "down"}, 200 if up else 503, headers={"Cache-Control": "no-store"})


@app.route(route="health/details", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
async def health_details(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Storage, catalog and runtime reachability with what each said: backends, container names,
    the catalog's version and counts (function key; no secrets in the answer)."""
    checks = await _health_checks(client, {"storage": _storage_health, "catalog": _catalog_health})
    up = all(c["ok"] for c in checks.values())
    return _json({"status": "up" if up else "down", "ok": up, **checks}, 200 if up else 503,
                 headers={"Cache-Control": "no-store"})


async def _health_checks(client: df.DurableOrchestrationClient,
                         probes: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each probe's answer (``ok`` and what it said), and the runtime's, each given at most
    HEALTH_TIMEOUT_SECONDS (a part that has not answered by then is down)."""
    async def bounded(name: str, check: Awaitable[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        try:
            return name, await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return name, {"ok": False, "error": f"no answer within {HEALTH_TIMEOUT_SECONDS:g} s"}

    answers = await asyncio.gather(*(bounded(name, asyncio.to_thread(_check, probe)) for name, probe in probes.items()),
                                   bounded("runtime", _runtime_check(client)))
    return dict(answers)


async def _runtime_check(client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The runtime answers a status query of an instance id no job has (no instance is listed)."""
    try:
        await client.get_status("rmh-health-probe")
        return {"ok": True}
    except Exception as err:  # noqa: BLE001 - any failure here is the runtime being unreachable
        return {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}


def _check(probe) -> dict[str, Any]:
    try:
        return {"ok": True, **probe()}
    except Exception as err:  # noqa: BLE001 - health reports every failure instead of raising
        return {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}


def _storage_health() -> dict[str, Any]:
    config = get_settings()
    exists = activities.blob_store().container_exists(config.input_container)  # not made yet: still up
    return {"backend": config.storage_backend.value, "input_container": config.input_container,
            "input_container_exists": exists, "output_container": config.output_container,
            "system_container": config.system_container}


def _catalog_reachable() -> dict[str, Any]:
    """The catalog answers a small query (its collection ids), without counting its items."""
    activities.catalog().collection_ids()
    return {}


def _catalog_health() -> dict[str, Any]:
    health = activities.catalog().health()
    if not health.ok:
        raise RuntimeError(health.detail or "catalog not healthy")
    return health.model_dump(mode="json")


# -- dashboard -------------------------------------------------------------------------------------
# The page (function key, like the data routes it calls), its static files (anonymous: the same
# code for everyone, no data), the catalog's footprints for its map, and signed asset URLs as JSON
# (a browser's fetch cannot read a cross-origin redirect's Location).

@app.route(route="dashboard", methods=["GET"])
@api
async def dashboard_page(req: func.HttpRequest) -> func.HttpResponse:
    """The dashboard: jobs, a job's tasks, metrics and a map of the catalog (HTML)."""
    base = get_settings().asset_base_url
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(base)) if base else None
    return func.HttpResponse(dashboard.page(), status_code=200,
                             headers=dashboard.page_headers((origin,) if origin else ()))


@app.route(route="dashboard/static/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def dashboard_static(req: func.HttpRequest) -> func.HttpResponse:
    """The dashboard's script, style sheet and npm libraries (with their licences)."""
    content, headers = dashboard.static_file(req.route_params.get("path") or "")
    return func.HttpResponse(content, status_code=200, headers=headers)


@app.route(route="footprints", methods=["GET"])
@api
async def list_footprints(req: func.HttpRequest) -> func.HttpResponse:
    """A page of the catalog's items as GeoJSON (``collection``, ``bbox``, ``limit``, ``token``),
    each asset with how a browser opens it; ``next`` is the following page's token."""
    try:
        query = footprints.FootprintQuery.from_params(req.params)
    except ValidationError as err:
        raise ApiError(400, "invalid query", problems=problems_of(err.errors())) from None
    links = footprints.AssetLinks(get_settings(), activities.blob_store())
    page = await asyncio.to_thread(footprints.footprint_page, activities.catalog(), links, query)
    return _json(page, headers={"Cache-Control": "no-store"})


@app.route(route="collections", methods=["GET"])
@api
async def list_collections(req: func.HttpRequest) -> func.HttpResponse:
    """The catalog's collection ids (the map's collection filter)."""
    ids = await asyncio.to_thread(activities.catalog().collection_ids)
    return _json({"collections": ids})


@app.route(route="items/{collection}/{item_id}/assets/{asset_key}/href", methods=["GET"])
@api
async def asset_href(req: func.HttpRequest) -> func.HttpResponse:
    """``{"href": ...}``: the signed, short-lived URL the asset route redirects to."""
    return _json({"href": await _asset_location(req)}, headers={"Cache-Control": "no-store"})


# -- preview tiles of the catalog's rasters (the dashboard's map) --------------------------------

@app.route(route="previews/{collection}/{item_id}/{asset_key}/{z}/{x}/{y}", methods=["GET"])
@api
async def preview_tile(req: func.HttpRequest) -> func.HttpResponse:
    """A 256² PNG tile (WebMercatorQuad ``z/x/y``) of an item's raster asset, drawn with rio-tiler
    in the item's render (nodata transparent), read through the jobs' storage access."""
    try:
        address = previews.TileAddress(collection=req.route_params.get("collection", ""),
                                       item=req.route_params.get("item_id", ""),
                                       asset=req.route_params.get("asset_key", ""),
                                       z=req.route_params.get("z", ""), x=req.route_params.get("x", ""),
                                       y=req.route_params.get("y", ""))
        stac_ops.check_id(address.collection), stac_ops.check_id(address.item)
    except ValidationError as err:
        raise ApiError(400, "invalid tile", problems=problems_of(err.errors())) from None
    except stac_ops.StacOpsError as err:
        raise ApiError(400, str(err)) from None
    png = await asyncio.to_thread(previews.tile_png, activities.catalog(), activities.blob_store(), get_settings(),
                                  address, activities.gdal_config())
    return func.HttpResponse(png, status_code=200, headers={
        "Content-Type": "image/png", "Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})


# -- the API's contract --------------------------------------------------------------------------

@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of this API, generated from its models (``openapi.py``)."""
    return _json(openapi.document(), headers={"Cache-Control": "no-cache"})


@app.route(route="docs", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def api_docs(req: func.HttpRequest) -> func.HttpResponse:
    """The document as a page: Swagger UI from npm, served by the app (no CDN)."""
    return func.HttpResponse(dashboard.docs_page(), status_code=200, headers=dashboard.docs_headers())
