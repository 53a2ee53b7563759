"""HTTP side of the embedded runtime (aiohttp.web).

Serves, like the Functions host with the Durable extension:
- the app's HTTP functions under ``/api/<route>``;
- the Durable HTTP API under ``/runtime/webhooks/durabletask/...`` (what status URLs point to);
- the RPC endpoints the SDK's ``DurableOrchestrationClient`` calls under ``/durabletask/...``.
Auth: with keys configured, function-level routes need a function or master key, admin-level
routes and the webhooks the master (or system) key, as ``x-functions-key`` or ``code``; the RPC
endpoints only answer loopback peers. Without keys nothing is checked (Core Tools' local host).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import re
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote

import azure.functions as func
from aiohttp import web
from dateutil.parser import parse as parse_datetime

import local_runtime
from local_runtime import Engine, EngineError, FunctionIndex, HttpFunction, iso, with_context

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
RPC_PREFIX = "/durabletask"
LOOPBACK_PEERS = frozenset({"127.0.0.1", "::1", "localhost"})
RUNNING_STATES = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})
ERROR_STATUS: dict[type[EngineError], int] = {
    local_runtime.InstanceNotFound: 404,
    local_runtime.InstanceNotRunning: 410,
    local_runtime.InstanceAlreadyRunning: 400,
    local_runtime.UnknownFunction: 400,
    local_runtime.InstanceStillRunning: 400,
    local_runtime.UnsupportedOperation: 501,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Keys:
    """Configured keys; ``configured`` is False for a Core-Tools-like open local host."""

    function: frozenset[str]
    master: str | None
    system: str | None

    @classmethod
    def build(cls, function_keys: Mapping[str, str] | None, master_key: str | None) -> "Keys":
        function = frozenset((function_keys or {}).values())
        system = (function_keys or {}).get("durabletask_extension") or master_key or next(
            iter(sorted(function)), None)
        return cls(function, master_key, system)

    @property
    def configured(self) -> bool:
        return bool(self.function or self.master)

    def allows(self, level: str, presented: str | None) -> bool:
        if not self.configured or level == "anonymous":
            return True
        if presented is None:
            return False
        if presented == self.master:
            return True
        if level == "system":
            return presented == self.system
        if level == "function":
            return presented in self.function
        return False


def presented_key(request: web.Request) -> str | None:
    return request.headers.get("x-functions-key") or request.query.get("code")


def error_response(err: EngineError) -> web.Response:
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(err, kind)), 500)
    if status == 404:
        return web.Response(status=404)
    return web.json_response({"Message": str(err), "ExceptionMessage": str(err)}, status=status)


def aiohttp_route(route: str, prefix: str = "api") -> str:
    """Functions route template → aiohttp path ('{id:int}' → '{id}', '{*rest}' → '{rest:.*}')."""

    def convert(match: re.Match[str]) -> str:
        catch_all, name = match.group(1), match.group(2)
        return f"{{{name}:.*}}" if catch_all else f"{{{name}}}"

    route = re.sub(r"\{(\*?)(\w+)(?::[^}]*)?\??\}", convert, route.strip("/"))
    prefix = prefix.strip("/")
    return f"/{prefix}/{route}" if prefix else f"/{route}"


class DurableHttp:
    """Builds the aiohttp application over an engine; ``base_url`` is set once bound."""

    def __init__(self, engine: Engine, index: FunctionIndex, keys: Keys,
                 task_hub: str = "LocalTaskHub", route_prefix: str = "api") -> None:
        self.engine = engine
        self.index = index
        self.keys = keys
        self.task_hub = task_hub
        self.route_prefix = route_prefix
        self.base_url = "http://127.0.0.1:7071"

    # -- binding ---------------------------------------------------------------------------------
    def query_suffix(self) -> str:
        query = f"taskHub={self.task_hub}&connection=Storage"
        if self.keys.configured and self.keys.system:
            query += f"&code={quote(self.keys.system)}"
        return query

    def management_urls(self, instance_id: str = "INSTANCEID") -> dict[str, str]:
        base = f"{self.base_url}{WEBHOOK_PREFIX}/instances/{instance_id}"
        q = self.query_suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{base}?{q}",
            "sendEventPostUri": f"{base}/raiseEvent/{{eventName}}?{q}",
            "terminatePostUri": f"{base}/terminate?reason={{text}}&{q}",
            "rewindPostUri": f"{base}/rewind?reason={{text}}&{q}",
            "purgeHistoryDeleteUri": f"{base}?{q}",
            "restartPostUri": f"{base}/restart?{q}",
            "suspendPostUri": f"{base}/suspend?reason={{text}}&{q}",
            "resumePostUri": f"{base}/resume?reason={{text}}&{q}",
        }

    def binding(self) -> dict[str, Any]:
        q = self.query_suffix()
        hook = f"{self.base_url}{WEBHOOK_PREFIX}"
        return {
            "taskHubName": self.task_hub,
            "creationUrls": {
                "createNewInstancePostUri":
                    f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]?{q}",
                "createAndWaitOnNewInstancePostUri":
                    f"{hook}/orchestrators/{{functionName}}[/{{instanceId}}]?timeout="
                    f"{{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{q}",
            },
            "managementUrls": self.management_urls(),
            "baseUrl": hook,
            "requiredQueryStringParameters": q,
            "rpcBaseUrl": f"{self.base_url}{RPC_PREFIX}/",
        }

    def binding_json(self) -> str:
        return json.dumps(self.binding())

    # -- application -----------------------------------------------------------------------------
    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 ** 2)
        for prefix, level in ((WEBHOOK_PREFIX, "system"), (RPC_PREFIX, "rpc")):
            self._add_durable_routes(app, prefix, level)
        for function in self.index.http:
            handler = self._guard(function.auth_level, self._user_handler(function))
            path = aiohttp_route(function.route, self.route_prefix)
            for method in function.methods or ("*",):
                app.router.add_route(method, path, handler)
        return app

    def _add_durable_routes(self, app: web.Application, prefix: str, level: str) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/orchestrators/{name}", self.start),
            ("POST", "/orchestrators/{name}/{instance_id}", self.start),
            ("GET", "/instances", self.list_instances),
            ("GET", "/instances/", self.list_instances),
            ("DELETE", "/instances", self.purge_many),
            ("DELETE", "/instances/", self.purge_many),
            ("GET", "/instances/{instance_id}", self.status),
            ("DELETE", "/instances/{instance_id}", self.purge),
            ("POST", "/instances/{instance_id}/raiseEvent/{event}", self.raise_event),
            ("POST", "/instances/{instance_id}/{operation}", self.operate),
            ("GET", "/entities/{name}/{key}", self.read_entity),
            ("POST", "/entities/{name}/{key}", self.signal_entity),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, prefix + path, self._guard(level, handler))

    def _guard(self, level: str, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if level == "rpc":
                if self.keys.configured and request.remote not in LOOPBACK_PEERS:
                    return web.Response(status=401, text="RPC endpoints are loopback-only")
            elif not self.keys.allows(level, presented_key(request)):
                return web.Response(status=401)
            try:
                return await handler(request)
            except EngineError as err:
                return error_response(err)
        return guarded

    # -- durable API -----------------------------------------------------------------------------
    async def start(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            input_json = json.dumps(json.loads(text)) if text.strip() else None
        except json.JSONDecodeError:
            return web.json_response({"ExceptionMessage": "input is not JSON"}, status=400)
        instance_id = self.engine.create_instance(
            request.match_info["name"], request.match_info.get("instance_id"), input_json)
        payload = self.management_urls(instance_id)
        timeout = request.query.get("timeout")
        if timeout and timeout.isdigit():
            try:
                await asyncio.wait_for(self.engine.wait_finished(instance_id), int(timeout))
            except asyncio.TimeoutError:
                pass
            else:
                body = self.engine.status(instance_id) or {}
                return web.json_response(body.get("output"), status=200)
        return web.json_response(payload, status=202,
                                 headers={"Location": payload["statusQueryGetUri"]})

    async def status(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        q = request.query
        body = self.engine.status(instance_id, show_history=flag(q.get("showHistory")),
                                  show_history_output=flag(q.get("showHistoryOutput")))
        if body is None:
            return web.Response(status=404)
        state = body["runtimeStatus"]
        if state in RUNNING_STATES:
            location = self.management_urls(instance_id)["statusQueryGetUri"]
            return web.json_response(body, status=202,
                                     headers={"Location": location, "Retry-After": "5"})
        code = 500 if state == "Failed" and flag(q.get("returnInternalServerErrorOnFailure")) \
            else 200
        return web.json_response(body, status=code)

    async def list_instances(self, request: web.Request) -> web.Response:
        q = request.query
        top = int(q["top"]) if q.get("top") else None
        page, token = self.engine_list(q, top, request.headers.get("x-ms-continuation-token"))
        headers = {"x-ms-continuation-token": token} if token else {}
        return web.json_response(page, headers=headers)

    def engine_list(self, q: Mapping[str, str], top: int | None, token: str | None
                    ) -> tuple[list[dict[str, Any]], str | None]:
        return list_page(self.engine, statuses=split_statuses(q.get("runtimeStatus")),
                         created_from=iso_or_none(q.get("createdTimeFrom")),
                         created_to=iso_or_none(q.get("createdTimeTo")),
                         prefix=q.get("instanceIdPrefix"), page_size=top,
                         continuation_token=token)

    async def purge(self, request: web.Request) -> web.Response:
        deleted = self.engine.purge(request.match_info["instance_id"])
        return web.json_response({"instancesDeleted": deleted})

    async def purge_many(self, request: web.Request) -> web.Response:
        q = request.query
        rows = self.engine.store.query_instances(
            statuses=split_statuses(q.get("runtimeStatus")) or sorted(local_runtime.TERMINAL),
            created_from=iso_or_none(q.get("createdTimeFrom")),
            created_to=iso_or_none(q.get("createdTimeTo")))
        deleted = 0
        for row in rows:
            if row.status in local_runtime.TERMINAL:
                deleted += self.engine.purge(row.instance_id)
        if not deleted:
            return web.json_response({"instancesDeleted": 0}, status=404)
        return web.json_response({"instancesDeleted": deleted})

    async def raise_event(self, request: web.Request) -> web.Response:
        text = await request.text()
        if text.strip():
            try:
                json.loads(text)
            except json.JSONDecodeError:
                return web.Response(status=400, text="Only JSON content is supported")
        self.engine.raise_event(request.match_info["instance_id"], request.match_info["event"],
                                text if text.strip() else None)
        return web.Response(status=202)

    async def operate(self, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        operation = request.match_info["operation"]
        reason = request.query.get("reason")
        if operation == "terminate":
            self.engine.terminate(instance_id, reason)
        elif operation == "suspend":
            self.engine.suspend(instance_id, reason)
        elif operation == "resume":
            self.engine.resume(instance_id, reason)
        elif operation == "restart":
            new_id = request.query.get("restartWithNewInstanceId", "true").lower() != "false"
            restarted = self.engine.restart(instance_id, new_id)
            payload = self.management_urls(restarted)
            return web.json_response(payload, status=202,
                                     headers={"Location": payload["statusQueryGetUri"]})
        elif operation == "rewind":
            status = self.engine.status(instance_id)
            if status is None:
                raise local_runtime.InstanceNotFound(instance_id)
            if status["runtimeStatus"] != "Failed":
                return web.Response(status=410)
            raise local_runtime.UnsupportedOperation(
                "rewind is not supported by the embedded runtime; use restart")
        else:
            return web.Response(status=404)
        return web.Response(status=202)

    async def read_entity(self, request: web.Request) -> web.Response:
        entity_id = local_runtime.entity_id_of(request.match_info["name"],
                                               request.match_info["key"])
        exists, state = self.engine.read_entity(entity_id)
        if not exists:
            return web.Response(status=404)
        return web.Response(status=200, text=state if state is not None else "null",
                            content_type="application/json")

    async def signal_entity(self, request: web.Request) -> web.Response:
        text = await request.text()
        input_text = json.dumps(json.loads(text), separators=(",", ":")) if text.strip() \
            else None
        entity_id = local_runtime.entity_id_of(request.match_info["name"],
                                               request.match_info["key"])
        self.engine.signal_entity(entity_id, request.query.get("op", ""), input_text)
        return web.Response(status=202)

    # -- user functions --------------------------------------------------------------------------
    def _user_handler(self, function: HttpFunction) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            req = func.HttpRequest(
                request.method, str(request.url), headers=dict(request.headers),
                params=dict(request.query), route_params=dict(request.match_info),
                body=await request.read())
            kwargs: dict[str, Any] = {function.param: req}
            if function.client_param:
                kwargs[function.client_param] = self.binding_json()
            kwargs = with_context(function.fn, function.name, kwargs)
            try:
                result = await call_user_function(function.fn, kwargs)
            except Exception:  # noqa: BLE001 - the host answers 500 for a failing function
                logger.exception("HTTP function %s failed", function.name)
                return web.Response(status=500)
            return to_aiohttp(result)
        return handler


def adopt_client_session() -> None:
    """Let the SDK client's global aiohttp session be (re)created on the running loop.

    The SDK keeps one module-level session bound to the loop that created it; if another loop
    (e.g. an earlier ``asyncio.run`` in the same process) created it, drop it so the SDK builds a
    fresh one here. The SDK code itself is untouched.
    """
    from azure.durable_functions.models.utils import http_utils

    session = http_utils._client_session
    loop = asyncio.get_running_loop()
    if session is not None and getattr(session, "_loop", loop) is not loop:
        http_utils._client_session = None
        http_utils._session_lock = asyncio.Lock()


async def call_user_function(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    adopt_client_session()
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    result = await asyncio.get_running_loop().run_in_executor(None, lambda: fn(**kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


def to_aiohttp(result: Any) -> web.Response:
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers)
        if not any(k.lower() == "content-type" for k in headers) and result.mimetype:
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
    if result is None:
        return web.Response(status=204)
    if isinstance(result, (bytes, str)):
        return web.Response(status=200, body=result if isinstance(result, bytes)
                            else result.encode())
    return web.json_response(result)


def flag(value: str | None) -> bool:
    return (value or "").lower() == "true"


def split_statuses(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def iso_or_none(value: str | None) -> str | None:
    if not value:
        return None
    moment = parse_datetime(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return iso(moment)


def encode_token(created: str, instance_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, instance_id]).encode()).decode()


def decode_token(token: str) -> tuple[str, str]:
    created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
    return created, instance_id


def list_page(engine: Engine, *, statuses: list[str] | None = None,
              created_from: str | None = None, created_to: str | None = None,
              prefix: str | None = None, page_size: int | None = None,
              continuation_token: str | None = None
              ) -> tuple[list[dict[str, Any]], str | None]:
    """One page of instance statuses and the token for the next page (None at the end)."""
    after = decode_token(continuation_token) if continuation_token else None
    rows = engine.store.query_instances(
        statuses=statuses, created_from=created_from, created_to=created_to, prefix=prefix,
        after=after, limit=None if page_size is None else page_size + 1)
    more = page_size is not None and len(rows) > page_size
    rows = rows[:page_size] if page_size is not None else rows
    token = encode_token(rows[-1].created_time, rows[-1].instance_id) if more else None
    return [local_runtime.status_body(r) for r in rows], token
