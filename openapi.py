"""The OpenAPI 3.1 document of the HTTP API (``GET /api/openapi.json``), generated, not written.

Request bodies are the operations' request models (``models.OPERATIONS``: one path per
operation, ``POST /api/jobs/<operation>``, with every field, default and limit pydantic knows);
answers are result models (``JobResult``, ``TaskRecord``, ``Progress``... and the answer models
below, for the bodies ``function_app`` builds by hand); the routes come from one table,
``ROUTES``, in the form ``function_app`` registers them (a test holds the two to each other).
Error answers are the one shape ``function_app.error_response`` gives (``ErrorAnswer``), with
the statuses each route can answer.

Plain data: nothing here reads the environment or imports the app.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from drafts import Lifecycle
from models import OPERATIONS, HelloWorldResult, JobResult, Progress, TaskRecord

TITLE = "rmhgeoapi"
VERSION = "1"
#: Job ids in paths (``function_app.JOB_ID``), minus the two a URL cannot carry as a segment.
JOB_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.:-]{1,256}$"
#: Item and collection ids (``stac_ops.check_id``).
ITEM_ID_PATTERN = r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,255}$"
#: Azure container names (``storage.check_container_name``).
CONTAINER_PATTERN = r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
#: A file under the dashboard's static route: segments of safe characters, no dot segments.
STATIC_PATH_PATTERN = r"^(?!(.*/)?\.\.?(/|$))[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100}){0,5}$"
TASK_STATUSES = ("running", "done", "skipped", "failed")
MAX_ZOOM = 24


# -- the bodies function_app builds by hand -------------------------------------------------------

class Problem(BaseModel):
    field: str
    problem: str


class ErrorAnswer(BaseModel):
    """Every error answer: what is wrong (``error``), and where it helps the condition's class
    name (``type``), the problems by field, the values that would do (``known_*``)."""

    model_config = ConfigDict(extra="allow")

    error: str
    type: str | None = None
    problems: list[Problem] | None = None


class ManagementLinks(BaseModel):
    """The Durable Functions status-query and management URLs of a job (the SDK's payload)."""

    model_config = ConfigDict(extra="allow")

    id: str
    statusQueryGetUri: str
    sendEventPostUri: str | None = None
    terminatePostUri: str | None = None
    purgeHistoryDeleteUri: str | None = None


class AlreadyRunning(ErrorAnswer, ManagementLinks):
    """409: the same job runs; its management URLs."""


class JobStatus(BaseModel):
    """A job as ``GET /api/jobs/{id}`` answers: ``output`` is the job's result once it finished
    (``JobResult``; ``HelloWorldResult`` for hello_world; the failure's text when it failed)."""

    instanceId: str
    operation: str | None = None
    runtimeStatus: str | None = None
    createdTime: str | None = None
    lastUpdatedTime: str | None = None
    customStatus: Progress | dict[str, Any] | str | None = None
    output: JobResult | HelloWorldResult | str | None = None


class JobList(BaseModel):
    """A page of jobs, newest first: each ``output`` a summary (counts and times: no failures or
    detail) unless ``outputs=true``; ``continuationToken`` (also the ``x-ms-continuation-token``
    header) asks for the next page, null on the last."""

    count: int
    jobs: list[JobStatus]
    operations: list[str]
    continuationToken: str | None = None


class TaskPage(BaseModel):
    instanceId: str
    total: int
    skip: int
    top: int
    tasks: list[TaskRecord]


class Terminated(BaseModel):
    instanceId: str
    terminated: bool
    reason: str


class DurationSummary(BaseModel):
    count: int
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class OperationReport(BaseModel):
    """One operation's metrics (``entities.OperationMetrics.report``)."""

    jobs: dict[str, int]
    tasks: dict[str, int | DurationSummary]
    task_seconds: DurationSummary
    job_seconds: DurationSummary


class Metrics(BaseModel):
    operations: dict[str, OperationReport]


class HealthStatus(BaseModel):
    """Up or down, and nothing else (the anonymous answer a load balancer's probe needs)."""

    status: Literal["up", "down"]


class Health(BaseModel):
    """Each check: ``ok`` and what it found, or the error (no secrets)."""

    status: Literal["up", "down"]
    ok: bool
    storage: dict[str, Any]
    catalog: dict[str, Any]
    runtime: dict[str, Any]


class SasToken(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    msft_expiry: str = Field(alias="msft:expiry")
    token: str


class AssetHref(BaseModel):
    href: str


class CollectionIds(BaseModel):
    collections: list[str]


class FootprintPage(BaseModel):
    """A GeoJSON FeatureCollection of items (``footprints.feature``) and the next page's token."""

    type: Literal["FeatureCollection"]
    features: list[dict[str, Any]]
    numberReturned: int
    next: str | None = None


class OpenApiDocument(BaseModel):
    """This document."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


# -- the table of routes ------------------------------------------------------------------------

class Param(NamedTuple):
    name: str
    where: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


class Answer(NamedTuple):
    description: str
    model: type[BaseModel] | None = None
    media: tuple[str, ...] = ("application/json",)
    headers: tuple[str, ...] = ()


class Route(NamedTuple):
    """One route as ``function_app`` registers it (``route`` without ``/api``, ``{*x}`` for a
    catch-all), what it takes and what it answers."""

    method: str
    route: str
    operation_id: str
    summary: str
    auth: Literal["function", "anonymous", "token"]
    params: tuple[Param, ...] = ()
    answers: tuple[tuple[int, Answer], ...] = ()
    tag: str = "jobs"


def _error(description: str) -> Answer:
    return Answer(description, ErrorAnswer)


JOB_ID = Param("instance_id", "path", {"type": "string", "pattern": JOB_ID_PATTERN}, "a job id", True)
COLLECTION = Param("collection", "path", {"type": "string", "pattern": ITEM_ID_PATTERN}, "a collection id", True)
ITEM = Param("item_id", "path", {"type": "string", "pattern": ITEM_ID_PATTERN}, "an item id", True)
ASSET = Param("asset_key", "path", {"type": "string", "pattern": JOB_ID_PATTERN}, "an asset key of the item", True)
NOT_FOUND_JOB = (404, _error("no job with this id"))
BAD_ID = (400, _error("the id has characters a job id cannot have"))

ROUTES: tuple[Route, ...] = (
    Route("POST", "jobs/{operation}", "submit_job", "Start a job", "function", answers=(
        (202, Answer("started: the status-query and management URLs", ManagementLinks, headers=("Location",))),
        (200, Answer("the same job already finished: its status and result (send \"rerun\": true to run it again)",
                     JobStatus)),
        (400, _error("the body is not valid JSON, nests too deep, or its fields are wrong (listed by field)")),
        (404, _error("a container the request names does not exist")),
        (409, Answer("the same job is running: its URLs", AlreadyRunning)),
        (413, _error("the body is over 1 MB")))),
    Route("GET", "jobs", "list_jobs", "List jobs, newest first", "function", params=(
        Param("status", "query", {"type": "string", "maxLength": 500},
              "comma-separated: failed, completed_with_errors, running, or runtime statuses"),
        Param("operation", "query", {"type": "string", "enum": sorted(OPERATIONS)}),
        Param("stale_minutes", "query", {"type": "number", "minimum": 0, "maximum": 1e6},
              "running jobs with no progress for this long"),
        Param("top", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "jobs a page"),
        Param("continuationToken", "query", {"type": "string", "maxLength": 1000},
              "the previous page's continuationToken: the next page"),
        Param("outputs", "query", {"type": "boolean", "default": False},
              "whole outputs (failures, detail) instead of summaries")),
        answers=((200, Answer("a page of jobs", JobList, headers=("x-ms-continuation-token",))),
                 (400, _error("an unknown status or operation, a bad number or continuation token")))),
    Route("GET", "jobs/{instance_id}", "get_job", "A job's status, progress and output", "function",
          params=(JOB_ID,), answers=((200, Answer("the job", JobStatus)), BAD_ID, NOT_FOUND_JOB)),
    Route("GET", "jobs/{instance_id}/tasks", "get_job_tasks", "A job's tasks (files or tiles), paged", "function",
          params=(JOB_ID, Param("status", "query", {"type": "string", "enum": list(TASK_STATUSES)}),
                  Param("top", "query", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 100}),
                  Param("skip", "query", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0})),
          answers=((200, Answer("a page of tasks", TaskPage)), (400, _error("a bad id, status or number")),
                   NOT_FOUND_JOB)),
    Route("POST", "jobs/{instance_id}/retry", "retry_job", "Run a failed, terminated or partly failed job again",
          "function", params=(JOB_ID,), answers=(
              (202, Answer("started again: the status-query URLs", ManagementLinks, headers=("Location",))),
              BAD_ID, NOT_FOUND_JOB, (409, _error("the job is running, or completed without errors")))),
    Route("POST", "jobs/{instance_id}/terminate", "terminate_job", "Stop a running job and its chunks", "function",
          params=(JOB_ID, Param("reason", "query", {"type": "string", "maxLength": 500})),
          answers=((202, Answer("terminating", Terminated)), BAD_ID, NOT_FOUND_JOB,
                   (409, _error("the job is not running")))),
    Route("GET", "lifecycle", "get_lifecycle",
          "The drafts and the transitions (draft, publish, revoke: when, by whom, why), newest first",
          "function", tag="catalog", params=(
              Param("collection", "query", {"type": "string", "pattern": ITEM_ID_PATTERN}, "one collection's only"),
              Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    "transitions listed")),
          answers=((200, Answer("drafts and transitions", Lifecycle)), (400, _error("a bad collection id or limit")))),
    Route("GET", "metrics", "get_metrics", "Per-operation job metrics", "function",
          answers=((200, Answer("counts by outcome, task and job duration percentiles", Metrics)),)),
    Route("GET", "health", "health", "Up or down: storage, catalog and runtime answer", "anonymous", tag="service",
          answers=((200, Answer("all reachable", HealthStatus)),
                   (503, Answer("something is not reachable", HealthStatus)))),
    Route("GET", "health/details", "health_details",
          "Storage, catalog and runtime reachability with what each said (backends, containers, catalog "
          "version and counts)", "function", tag="service",
          answers=((200, Answer("all reachable", Health)), (503, Answer("something is not reachable", Health)))),
    Route("GET", "sas/v1/token/{account}/{container}", "sas_token",
          "A short-lived read-only SAS for a container (Planetary Computer's token API shape)", "token",
          tag="assets", params=(
              Param("account", "path", {"type": "string", "pattern": "^[a-z0-9]{3,24}$"}, "the storage account", True),
              Param("container", "path", {"type": "string", "pattern": CONTAINER_PATTERN}, "a container", True)),
          answers=((200, Answer("the token", SasToken)), (400, _error("not a container name")),
                   (401, _error("no key, a wrong key, or no keys configured (RMH_SAS_TOKEN_KEYS)")),
                   (403, _error("the system container holds the service's state, not assets")),
                   (404, _error("another account, a missing container, or storage that signs nothing (local)")))),
    Route("GET", "items/{collection}/{item_id}/assets/{asset_key}", "asset_redirect",
          "302 to a signed, short-lived URL of an asset", "function", tag="assets",
          params=(COLLECTION, ITEM, ASSET), answers=(
              (302, Answer("the signed URL is in Location", None, (), headers=("Location",))),
              (400, _error("a bad id or asset key")), (404, _error("no such item or asset, or nothing to sign")),
              (409, _error("the asset is not a blob of this service's storage account")))),
    Route("GET", "items/{collection}/{item_id}/assets/{asset_key}/href", "asset_href",
          "The signed URL of an asset, as JSON", "function", tag="assets", params=(COLLECTION, ITEM, ASSET), answers=(
              (200, Answer("the URL", AssetHref)), (400, _error("a bad id or asset key")),
              (404, _error("no such item or asset, or nothing to sign")),
              (409, _error("the asset is not a blob of this service's storage account")))),
    Route("GET", "footprints", "list_footprints", "A page of the catalog's items as GeoJSON (the dashboard's map)",
          "function", tag="catalog", params=(
              Param("collection", "query", {"type": "string", "maxLength": 10000}, "comma-separated collection ids"),
              Param("bbox", "query", {"type": "string", "maxLength": 200}, "west,south,east,north in degrees"),
              Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 250}),
              Param("token", "query", {"type": "string", "minLength": 1, "maxLength": 1100},
                    "the previous page's next")),
          answers=((200, Answer("a FeatureCollection", FootprintPage)),
                   (400, _error("a bad bbox, limit, id or token")), (404, _error("a collection the catalog lacks")))),
    Route("GET", "collections", "list_collections", "The catalog's collection ids", "function", tag="catalog",
          answers=((200, Answer("the ids", CollectionIds)),)),
    Route("GET", "previews/{collection}/{item_id}/{asset_key}/{z}/{x}/{y}", "preview_tile",
          "A 256² PNG preview tile (WebMercatorQuad) of an item's raster asset, in the item's render",
          "function", tag="catalog", params=(
              COLLECTION, ITEM, ASSET,
              Param("z", "path", {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM}, "zoom", True),
              Param("x", "path", {"type": "integer", "minimum": 0}, "column (below 2^z)", True),
              Param("y", "path", {"type": "integer", "minimum": 0}, "row (below 2^z)", True)),
          answers=((200, Answer("the tile", None, ("image/png",))),
                   (400, _error("a tile outside the tile matrix set, or a bad id")),
                   (404, _error("no such item or raster asset, or the tile is outside the raster")),
                   (409, _error("the asset is not a blob of this service's storage")),
                   (422, _error("the tile would read too much of a raster without overviews: zoom in, or "
                                "convert it to a COG")),
                   (503, _error("the storage is not reachable")))),
    Route("GET", "dashboard", "dashboard_page", "The dashboard (HTML)", "function", tag="service",
          answers=((200, Answer("the page", None, ("text/html",))),)),
    Route("GET", "dashboard/static/{*path}", "dashboard_static", "The dashboard's and the API page's static files",
          "anonymous", tag="service", params=(
              Param("path", "path", {"type": "string", "pattern": STATIC_PATH_PATTERN}, "a file the page names", True),),
          answers=((200, Answer("the file", None, ("text/javascript", "text/css", "application/json", "image/png",
                                                   "text/plain"))),
                   (404, _error("not a file of the dashboard")))),
    Route("GET", "openapi.json", "openapi_document", "This OpenAPI 3.1 document", "anonymous", tag="service",
          answers=((200, Answer("the document", OpenApiDocument)),)),
    Route("GET", "docs", "api_docs", "This document as a page (Swagger UI, served offline)", "anonymous",
          tag="service", answers=((200, Answer("the page", None, ("text/html",))),)),
)


# -- the document -------------------------------------------------------------------------------

SECURITY = {"function": [{"functionKey": []}, {"functionKeyQuery": []}], "anonymous": [], "token": [{"tokenKey": []}]}
SECURITY_SCHEMES = {
    "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                    "description": "a function key of the Function App (the embedded host: its --key)"},
    "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
    "tokenKey": {"type": "apiKey", "in": "header", "name": "Ocp-Apim-Subscription-Key",
                 "description": "one of RMH_SAS_TOKEN_KEYS"},
}


def api_path(route: str) -> str:
    """The document's path of a registered route: ``/api/`` + the route, ``{*x}`` as ``{x}``."""
    return "/api/" + re.sub(r"\{\*(\w+)\}", r"{\1}", route)


def _models() -> list[type[BaseModel]]:
    answers = {a.model for r in ROUTES for _, a in r.answers if a.model is not None}
    return sorted(answers, key=lambda m: m.__name__)


def _schemas() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(model → $ref of its answer schema, operation → its request schema), and the components."""
    keys = [(m, "serialization") for m in _models()] + [(m, "validation") for m in OPERATIONS.values()]
    refs, defs = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    components = defs.get("$defs", {})
    return {key: ref for key, ref in refs.items()}, components


def _request_body(model: type[BaseModel], ref: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    name = ref["$ref"].rsplit("/", 1)[1]
    schema = components[name]
    schema.setdefault("properties", {})["rerun"] = {
        "type": "boolean", "default": False, "description": "run a finished job again (not part of the job id)"}
    schema["additionalProperties"] = False
    return {"required": False, "description": "the request (an empty body takes every default)",
            "content": {"application/json": {"schema": ref}}}


def _responses(route: Route, refs: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, answer in route.answers:
        body: dict[str, Any] = {"description": answer.description}
        if answer.media:
            schema = refs[(answer.model, "serialization")] if answer.model else (
                {"type": "string", "contentMediaType": answer.media[0]} if answer.media[0].startswith("image/")
                else {"type": "string"})
            body["content"] = {media: {"schema": schema} for media in answer.media}
        if answer.headers:
            body["headers"] = {h: {"schema": {"type": "string"}} for h in answer.headers}
        out[str(status)] = body
    if route.auth != "anonymous" and "401" not in out:
        out["401"] = {"description": "no function key, or a wrong one (answered by the host)"}
    return out


def _operation(route: Route, refs: dict, *, operation_id: str, summary: str, description: str = "") -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [route.tag],
                                 "security": SECURITY[route.auth], "responses": _responses(route, refs)}
    if description:
        operation["description"] = description
    params = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema,
               **({"description": p.description} if p.description else {})} for p in route.params]
    if params:
        operation["parameters"] = params
    return operation


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per process)."""
    refs, components = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.route == "jobs/{operation}":  # one path per operation, its request model the body
            for name, model in OPERATIONS.items():
                doc = " ".join((model.__doc__ or "").split())
                operation = _operation(route, refs, operation_id=f"submit_{name}", summary=f"Start a {name} job",
                                       description=doc)
                operation["requestBody"] = _request_body(model, refs[(model, "validation")], components)
                paths.setdefault(f"/api/jobs/{name}", {})["post"] = operation
            continue
        paths.setdefault(api_path(route.route), {})[route.method.lower()] = _operation(
            route, refs, operation_id=route.operation_id, summary=route.summary)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION,
                 "description": "The job API of rmhgeoapi: submit and follow jobs that validate, convert, tile and "
                                "catalog rasters; the catalog's footprints, preview tiles and signed asset URLs. "
                                "Generated from the request and result models (openapi.py)."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "jobs"}, {"name": "catalog"}, {"name": "assets"}, {"name": "service"}],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }
