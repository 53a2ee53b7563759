"""Embedded Durable runtime: the HTTP side (aiohttp.web), on two listeners as in the extension.

- **Public listener** (``host``/``port``): the app's HTTP functions under ``/<routePrefix>/...``
  and the management webhooks under ``/runtime/webhooks/durabletask/...`` (what status URLs
  point to; ``local_webhooks``).
- **RPC listener** (127.0.0.1 only, its own port; the extension's is ``127.0.0.1:17071``): the
  endpoints the SDK's ``DurableOrchestrationClient`` calls, ``/durabletask/...``. The durable
  client binding's ``rpcBaseUrl`` points here; the public port does not serve them (401 without
  a key, 404 with one).

Keys (when any is configured): function-level routes take a function key or the master key,
admin-level routes the master key, the webhooks the system key (``durabletask_extension``;
generated when not given) or the master key, never a function key; as ``x-functions-key`` or
``?code=``. Empty keys are refused at start-up. A key is handed out only to a caller that
presented a valid one: status URLs carry ``code=<system key>`` in the durable client binding of
a function invoked with a key, and in webhook answers; an anonymous caller and the RPC listener
get URLs without a key. Without keys nothing is checked (Core Tools' local host), and the runtime
refuses to listen anywhere but loopback.

Request bodies are bounded: ``max_request_body`` (1 MB default) on the public listener, 413 with
the limit in the message; the RPC listener, reached only by the app itself, allows 64 MB.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote

import azure.functions as func
from aiohttp import web

import local_files
from local_activities import call_user_function
from local_bindings import BlobIO, binding_kwargs, output_payloads
from local_functions import FunctionIndex, HttpFunction, with_context
from local_management import Management
from local_state import EngineError, RuntimeConfigError
from local_webhooks import DurableApi, Handler, error_json, error_response, parse_json

logger = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
RPC_PREFIX = "/durabletask"
SYSTEM_KEY_NAME = "durabletask_extension"
DEFAULT_MAX_BODY = 1024 ** 2
RPC_MAX_BODY = 64 * 1024 ** 2


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Keys:
    """Configured keys; ``configured`` is False for a Core-Tools-like open local host."""

    function: frozenset[str]
    master: str | None
    system: str | None

    @classmethod
    def build(cls, function_keys: Mapping[str, str] | None, master_key: str | None,
              system_key: str | None = None) -> "Keys":
        named = dict(function_keys or {})
        for name, value in named.items():
            if not name or value is None or not str(value).strip():
                raise RuntimeConfigError(
                    f"function key {name!r} is empty: give it a value (--function-key "
                    "NAME=KEY) or leave it out")
        for label, value in (("master key", master_key), ("system key", system_key)):
            if value is not None and not value.strip():
                raise RuntimeConfigError(f"the {label} is empty: give it a value or leave it out")
        system = named.pop(SYSTEM_KEY_NAME, None) or system_key
        function = frozenset(named.values())
        if (function or master_key or system) and system is None:
            system = secrets.token_urlsafe(32)
        return cls(function, master_key, system)

    @property
    def configured(self) -> bool:
        return bool(self.function or self.master or self.system)

    def allows(self, level: str, presented: str | None) -> bool:
        if not self.configured or level == "anonymous":
            return True
        if not presented:
            return False
        if _same(presented, self.master):
            return True
        if level == "system":
            return _same(presented, self.system)
        if level == "function":
            return any(_same(presented, key) for key in self.function)
        return False

    def recognises(self, presented: str | None) -> bool:
        """The caller presented some valid key (so it may be handed the system key)."""
        return bool(presented) and (self.allows("function", presented)
                                    or self.allows("system", presented))


def presented_key(request: web.Request) -> str | None:
    return request.headers.get("x-functions-key") or request.query.get("code")


def aiohttp_route(route: str, prefix: str = "api") -> str:
    """Functions route template → aiohttp path ('{id:int}' → '{id}', '{*rest}' → '{rest:.*}')."""

    def convert(match: re.Match[str]) -> str:
        catch_all, name = match.group(1), match.group(2)
        return f"{{{name}:.*}}" if catch_all else f"{{{name}}}"

    route = re.sub(r"\{(\*?)(\w+)(?::[^}]*)?\??\}", convert, route.strip("/"))
    prefix = prefix.strip("/")
    return f"/{prefix}/{route}" if prefix else f"/{route}"


@web.middleware
async def never_empty_500(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runtime routes: a bug of ours still answers with a message, never an empty 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except EngineError as err:
        return error_response(err)
    except Exception as err:  # noqa: BLE001 - the message names the fault, the log has the rest
        logger.exception("%s %s failed in the runtime", request.method, request.path[:200])
        return error_json(500, f"the embedded runtime failed on this request: "
                               f"{type(err).__name__}")


class DurableHttp:
    """Builds both aiohttp applications; ``base_url`` and ``rpc_url`` are set once bound."""

    def __init__(self, management: Management, index: FunctionIndex, keys: Keys,
                 task_hub: str = "LocalTaskHub", route_prefix: str = "api",
                 max_request_body: int = DEFAULT_MAX_BODY, connections: Any = None,
                 files: Mapping[str, Any] | None = None) -> None:
        self.management = management
        self.files = dict(files or {})
        self.index = index
        self.keys = keys
        self.task_hub = task_hub
        self.route_prefix = route_prefix
        self.max_request_body = max_request_body
        self.connections = connections
        self.api = DurableApi(self, management)
        self.base_url = "http://127.0.0.1:7071"
        self.rpc_url = "http://127.0.0.1:17071"

    # -- binding ---------------------------------------------------------------------------------
    def query_suffix(self, with_key: bool) -> str:
        query = f"taskHub={quote(self.task_hub)}&connection=Storage"
        if with_key and self.keys.configured and self.keys.system:
            query += f"&code={quote(self.keys.system)}"
        return query

    def management_urls(self, instance_id: str = "INSTANCEID", with_key: bool = True,
                        origin: str | None = None) -> dict[str, str]:
        base = f"{origin or self.base_url}{WEBHOOK_PREFIX}/instances/{quote(instance_id, safe='')}"
        q = self.query_suffix(with_key)
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

    def management_payload(self, request: web.Request, instance_id: str) -> dict[str, str]:
        """Check-status URLs for an answer to ``request``: with the system key only for a caller
        that presented a valid key on the public listener."""
        public = request.path.startswith(WEBHOOK_PREFIX)
        with_key = public and self.keys.recognises(presented_key(request))
        origin = f"{request.scheme}://{request.host}" if public else None
        return self.management_urls(instance_id, with_key=with_key, origin=origin)

    def binding(self, with_key: bool = True) -> dict[str, Any]:
        q = self.query_suffix(with_key)
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
            "managementUrls": self.management_urls(with_key=with_key),
            "baseUrl": hook,
            "requiredQueryStringParameters": q,
            "rpcBaseUrl": f"{self.rpc_url}{RPC_PREFIX}/",
        }

    def binding_json(self, with_key: bool = True) -> str:
        return json.dumps(self.binding(with_key))

    # -- applications ----------------------------------------------------------------------------
    def public_application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_body,
                              middlewares=[never_empty_500])
        self._add_durable_routes(app, WEBHOOK_PREFIX, "system")
        app.router.add_route("*", RPC_PREFIX + "/{tail:.*}", self._rpc_elsewhere)
        local_files.add_mounts(app, self.files,
                               allowed=lambda request: self.keys.allows("function", presented_key(request)))
        for function in self.index.http:
            handler = self._user_handler(function)
            path = aiohttp_route(function.route, self.route_prefix)
            for method in function.methods or ("*",):
                app.router.add_route(method, path, handler)
        return app

    def rpc_application(self) -> web.Application:
        app = web.Application(client_max_size=RPC_MAX_BODY, middlewares=[never_empty_500])
        self._add_durable_routes(app, RPC_PREFIX, "rpc")
        return app

    def _add_durable_routes(self, app: web.Application, prefix: str, level: str) -> None:
        by_path: dict[str, list[tuple[str, Handler]]] = {}
        for method, path, handler in self.api.routes():
            by_path.setdefault(path, []).append((method, handler))
        for path, handlers in by_path.items():
            for method, handler in handlers:
                app.router.add_route(method, prefix + path, self._guard(level, handler))
            app.router.add_route("*", prefix + path, self._guard(level, self._no_such_method))
        app.router.add_route("*", prefix + "/{tail:.*}", self._guard(level, self._no_such_route))

    def _guard(self, level: str, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if level != "rpc" and not self.keys.allows(level, presented_key(request)):
                return error_json(401, "this route needs the system key (durabletask_extension) "
                                       "or the master key, as x-functions-key or ?code=")
            return await handler(request)
        return guarded

    async def _no_such_method(self, request: web.Request) -> web.Response:
        return error_json(404, f"{request.method} is not an operation of {request.path}")

    async def _no_such_route(self, request: web.Request) -> web.Response:
        return error_json(404, f"no Durable API route {request.path}")

    async def _rpc_elsewhere(self, request: web.Request) -> web.Response:
        if not self.keys.recognises(presented_key(request)) and self.keys.configured:
            return error_json(401, "the Durable client RPC endpoints are not served here")
        return error_json(404, "the Durable client RPC endpoints are served on the runtime's "
                               "loopback RPC listener only; use /runtime/webhooks/durabletask")

    # -- user functions --------------------------------------------------------------------------
    def _user_handler(self, function: HttpFunction) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            presented = presented_key(request)
            if not self.keys.allows(function.auth_level, presented):
                return error_json(401, f"function {function.name} needs a key "
                                       "(x-functions-key or ?code=)")
            body = await request.read()
            req = func.HttpRequest(
                request.method, str(request.url), headers=dict(request.headers),
                params=dict(request.query), route_params=dict(request.match_info), body=body)
            kwargs: dict[str, Any] = {function.param: req}
            if function.bindings.client:
                kwargs[function.bindings.client] = self.binding_json(
                    with_key=self.keys.recognises(presented))
            io = BlobIO(self.connections, http_binding_data(request, body))
            try:
                contents = await _in_thread(io.read, function.bindings)
                blob_kwargs, outs = binding_kwargs(function.bindings, contents)
                kwargs.update(blob_kwargs)
                result = await call_user_function(
                    function.fn, with_context(function.fn, function.name, kwargs))
                await _in_thread(io.write, function.bindings, output_payloads(outs))
            except Exception:  # noqa: BLE001 - the host answers 500 for a failing function
                logger.exception("HTTP function %s failed", function.name)
                return error_json(500, f"Exception while executing function: "
                                       f"Functions.{function.name}")
            return to_aiohttp(result)
        return handler


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def http_binding_data(request: web.Request, body: bytes) -> dict[str, Any]:
    """Binding data of an HTTP trigger: route parameters, query, a JSON object body's fields."""
    data: dict[str, Any] = {}
    if body and request.content_type == "application/json":
        try:
            value = parse_json(body.decode("utf-8", errors="replace"))
        except EngineError:
            value = None
        if isinstance(value, dict):
            data.update(value)
    data.update(request.query)
    data.update(request.match_info)
    return data


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
