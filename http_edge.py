"""The HTTP edge every route stands on: errors mapped to status codes in one table, every answer a
JSON body (never an unhandled 500 for what a client can send), request bodies bounded in size and
nesting, and route parameters checked."""
from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any, Awaitable, Callable

import azure.functions as func

import asset_locations
import catalogs
import dashboard
import previews
import raster_errors
import storage
from faults import Transient
from settings import SettingsError

logger = logging.getLogger(__name__)

#: Largest request body accepted (a job request is a few hundred bytes; 10,000 blob names fit).
MAX_BODY_BYTES = 1024 * 1024
#: Deepest JSON nesting accepted in a request body (our requests are two levels deep).
MAX_JSON_DEPTH = 16
#: Job ids this API hands out: operation names, hashes, container names, ':' for chunks.
JOB_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")


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
    Transient: 503,  # any other transient fault: the service is unavailable for now
    SettingsError: 500,
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
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
        return json_response({"error": str(err), **err.details}, err.status)
    for cls in type(err).__mro__:
        if cls in ERROR_STATUS:
            return json_response({"error": str(err), "type": type(err).__name__}, ERROR_STATUS[cls])
    logger.exception("unhandled error")
    return json_response({"error": "internal error", "type": type(err).__name__}, 500)


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


def number_param(req: func.HttpRequest, name: str, default, low, high, kind: type = int):
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
