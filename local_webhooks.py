"""Embedded Durable runtime: the Durable HTTP API, validated as the extension validates it.

The same handlers serve the management webhooks (``/runtime/webhooks/durabletask/...`` on the
public listener, system or master key) and the SDK client's RPC endpoints (``/durabletask/...``
on the loopback-only RPC listener). Parameters are read like the extension reads them: booleans,
integers and dates that do not parse are ignored (``top=abc`` is no page size), except a purge by
filter without a valid ``createdTimeFrom`` (400), raised events that are not
``application/json``, and bodies that are not JSON (400). JSON bodies nested deeper than 64
levels are refused (Json.NET's default maximum depth). Every error carries a message; an
unknown instance is 404, a finished one 410 where the extension says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web
from dateutil.parser import ParserError
from dateutil.parser import parse as parse_datetime

from local_management import BadContinuationToken, Management
from local_state import (STATUS_CODES, EngineError, InstanceAlreadyRunning, InstanceNotFailed,
                         InstanceNotFound, InstanceNotRunning, InstanceStillRunning,
                         InvalidInstanceId, RewindImpossible, UnknownFunction,
                         UnsupportedOperation, check_entity_key, entity_id_of, iso)

if TYPE_CHECKING:
    from local_http import DurableHttp

logger = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
RUNNING_STATES = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})
ERROR_STATUS: dict[type[EngineError], int] = {
    InstanceNotFound: 404, InstanceNotRunning: 410, InstanceAlreadyRunning: 400,
    UnknownFunction: 400, InstanceStillRunning: 400, InstanceNotFailed: 400,
    InvalidInstanceId: 400, BadContinuationToken: 400, RewindImpossible: 409,
    UnsupportedOperation: 501,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(EngineError):
    """A request the API refuses as it stands (the message says what to fix)."""


def error_json(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message, "ExceptionMessage": message}, status=status)


def error_response(err: EngineError) -> web.Response:
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(err, kind)), 400)
    return error_json(status, str(err) or type(err).__name__)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(text: str) -> Any:
    """A JSON body, or BadRequest saying why not (syntax, nesting)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadRequest(f"Invalid JSON content: nested deeper than {MAX_JSON_DEPTH} "
                         "levels") from None
    except ValueError as err:
        raise BadRequest(f"Invalid JSON content: {err}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BadRequest(f"Invalid JSON content: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def body_text(request: web.Request) -> str:
    """The request body as text, or BadRequest when it is not in its declared charset."""
    raw = await request.read()
    try:
        return raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise BadRequest(f"request body is not {request.charset or 'utf-8'} text") from None


def flag(value: str | None) -> bool | None:
    """.NET ``bool.TryParse``: true/false in any case, else None."""
    text = (value or "").strip().lower()
    return {"true": True, "false": False}.get(text)


def int32(value: str | None) -> int | None:
    """.NET ``int.TryParse`` (32-bit), else None."""
    text = (value or "").strip()
    if not text or len(text) > 11 or not text.lstrip("+-").isdigit():
        return None
    number = int(text)
    return number if -2 ** 31 <= number < 2 ** 31 else None


def when(value: str | None) -> str | None:
    """A date and time in the extension's stored form, or None when it does not parse."""
    if not value or len(value) > 64:
        return None
    try:
        moment = parse_datetime(value)
    except (ParserError, ValueError, OverflowError, TypeError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return iso(moment)
    except (ValueError, OverflowError):
        return None


def statuses(value: str | None) -> list[str] | None:
    """runtimeStatus=A,B: the names (or numbers) of statuses; others ignored, as Enum.TryParse."""
    names = {str(code): name for name, code in STATUS_CODES.items()}
    found = []
    for part in (value or "").split(","):
        part = part.strip()
        name = part if part in STATUS_CODES else names.get(part)
        if name:
            found.append(name)
    return found or None


class DurableApi:
    """Handlers of the Durable HTTP API over a management object."""

    def __init__(self, http: "DurableHttp", management: Management) -> None:
        self.http = http
        self.management = management

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/orchestrators/{name}", self.start),
            ("POST", "/orchestrators/{name}/", self.start),
            ("POST", "/orchestrators/{name}/{instance_id}", self.start),
            ("GET", "/instances", self.list_instances),
            ("GET", "/instances/", self.list_instances),
            ("DELETE", "/instances", self.purge_many),
            ("DELETE", "/instances/", self.purge_many),
            ("GET", "/instances/{instance_id}", self.status),
            ("DELETE", "/instances/{instance_id}", self.purge),
            ("POST", "/instances/{instance_id}/raiseEvent/{event}", self.raise_event),
            ("POST", "/instances/{instance_id}/{operation}", self.operate),
            ("GET", "/entities/{name}", self.list_entities),
            ("GET", "/entities/{name}/", self.list_entities),
            ("GET", "/entities/{name}/{key}", self.read_entity),
            ("POST", "/entities/{name}/{key}", self.signal_entity),
            ("DELETE", "/entities/{name}/{key}", self.signal_entity),
        ]

    # -- orchestrations -------------------------------------------------------------------------
    async def start(self, request: web.Request) -> web.Response:
        text = await body_text(request)
        input_json = json.dumps(parse_json(text)) if text.strip() else None
        instance_id = self.management.engine.create_instance(
            request.match_info["name"], request.match_info.get("instance_id") or None,
            input_json)
        timeout = _seconds(request.query.get("timeout"))
        interval = _seconds(request.query.get("pollingInterval"))
        if timeout is not None and interval is not None:
            return await self._wait_or_check(request, instance_id, timeout)
        return self._check_status(request, instance_id)

    def _check_status(self, request: web.Request, instance_id: str) -> web.Response:
        payload = self.http.management_payload(request, instance_id)
        return web.json_response(payload, status=202, headers={
            "Location": payload["statusQueryGetUri"], "Retry-After": "10"})

    async def _wait_or_check(self, request: web.Request, instance_id: str,
                             timeout: float) -> web.Response:
        try:
            await asyncio.wait_for(self.management.engine.wait_finished(instance_id),
                                   min(timeout, 3600))
        except asyncio.TimeoutError:
            return self._check_status(request, instance_id)
        body = self.management.status(instance_id) or {}
        if body.get("runtimeStatus") == "Completed":
            return web.json_response(body.get("output"), status=200)
        return web.json_response(body, status=200)

    async def status(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        q = request.query
        show_input = flag(q.get("showInput"))
        body = self.management.status(
            instance_id, show_history=bool(flag(q.get("showHistory"))),
            show_history_output=bool(flag(q.get("showHistoryOutput"))),
            show_input=True if show_input is None else show_input)
        if body is None:
            return error_json(404, f"No instance with ID '{instance_id}' was found.")
        state = body["runtimeStatus"]
        if state in RUNNING_STATES:
            return web.json_response(body, status=202,
                                     headers={"Location": str(request.url), "Retry-After": "5"})
        failed_as_500 = state == "Failed" and flag(q.get("returnInternalServerErrorOnFailure"))
        return web.json_response(body, status=500 if failed_as_500 else 200)

    async def list_instances(self, request: web.Request) -> web.Response:
        q = request.query
        top = int32(q.get("top"))
        show_input = flag(q.get("showInput"))
        page, token = self.management.list_page(
            statuses=statuses(q.get("runtimeStatus")), created_from=when(q.get("createdTimeFrom")),
            created_to=when(q.get("createdTimeTo")), prefix=q.get("instanceIdPrefix"),
            page_size=top if top is not None and top > 0 else None,
            continuation_token=request.headers.get("x-ms-continuation-token") or None,
            show_input=True if show_input is None else show_input)
        return web.json_response(page, headers={"x-ms-continuation-token": token} if token
                                 else {})

    async def purge(self, request: web.Request) -> web.Response:
        deleted = self.management.purge(request.match_info["instance_id"])
        return web.json_response({"instancesDeleted": deleted})

    async def purge_many(self, request: web.Request) -> web.Response:
        q = request.query
        created_from = when(q.get("createdTimeFrom"))
        if created_from is None:
            raise BadRequest("Please provide value for 'createdTimeFrom' parameter.")
        deleted = self.management.purge_by(created_from, when(q.get("createdTimeTo")),
                                           statuses(q.get("runtimeStatus")))
        if not deleted:
            return error_json(404, "No instances matched the purge filter.")
        return web.json_response({"instancesDeleted": deleted})

    async def raise_event(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        self.management._require_live(instance_id)
        if request.content_type.lower() != "application/json":
            raise BadRequest("Only application/json request content is supported")
        text = await body_text(request)
        if text.strip():
            parse_json(text)
        self.management.raise_event(instance_id, request.match_info["event"],
                                    text if text.strip() else None)
        return web.Response(status=202)

    async def operate(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        operation = request.match_info["operation"].lower()
        reason = request.query.get("reason")
        m = self.management
        if operation == "terminate":
            m.terminate(instance_id, reason)
        elif operation == "suspend":
            m.suspend(instance_id, reason)
        elif operation == "resume":
            m.resume(instance_id, reason)
        elif operation == "rewind":
            m.rewind(instance_id, reason)
        elif operation == "restart":
            new_id = flag(request.query.get("restartWithNewInstanceId"))
            restarted = m.restart(instance_id, True if new_id is None else new_id)
            return self._check_status(request, restarted)
        else:
            return error_json(404, f"unknown instance operation {operation!r} (terminate, "
                                   "suspend, resume, rewind, restart, raiseEvent/{name})")
        return web.Response(status=202)

    # -- entities -------------------------------------------------------------------------------
    @staticmethod
    def _entity_id(request: web.Request) -> str:
        key = request.match_info["key"]
        return entity_id_of(request.match_info["name"], "" if key == "$" else
                            check_entity_key(key))

    async def read_entity(self, request: web.Request) -> web.Response:
        exists, state = self.management.read_entity(self._entity_id(request))
        if not exists:
            return error_json(404, "entity not found")
        return web.Response(status=200, text=state if state is not None else "null",
                            content_type="application/json")

    async def signal_entity(self, request: web.Request) -> web.Response:
        entity_id = self._entity_id(request)
        operation = "delete" if request.method == "DELETE" else request.query.get("op", "")
        text = await body_text(request)
        if not text:
            input_text = None
        elif request.content_type.lower() == "application/json":
            input_text = json.dumps(parse_json(text), separators=(",", ":"))
        else:
            input_text = json.dumps(text)
        self.management.signal_entity(entity_id, operation, input_text)
        return web.Response(status=202)

    async def list_entities(self, request: web.Request) -> web.Response:
        q = request.query
        top = int32(q.get("top"))
        listed, token = self.management.list_entities(
            request.match_info["name"], modified_from=when(q.get("lastOperationTimeFrom")),
            modified_to=when(q.get("lastOperationTimeTo")),
            page_size=top if top is not None and top > 0 else 100,
            continuation_token=request.headers.get("x-ms-continuation-token") or None,
            fetch_state=bool(flag(q.get("fetchState"))))
        return web.json_response(listed, headers={"x-ms-continuation-token": token} if token
                                 else {})


def _seconds(value: str | None) -> float | None:
    """.NET ``double.TryParse`` of a number of seconds (non-negative, finite), else None."""
    try:
        number = float((value or "").strip())
    except ValueError:
        return None
    return number if 0 <= number < 10 ** 7 else None
