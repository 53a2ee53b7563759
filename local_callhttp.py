"""Embedded Durable runtime: ``context.call_http``, the extension's built-in HTTP activity.

The SDK's CallHttp action becomes a ``BuiltIn::HttpActivity`` task (history: TaskScheduled with
the request as ``Input``, then TaskCompleted whose ``Result`` is the response as the extension
serializes it: ``{"statusCode", "headers", "content"}``, headers without the content headers, a
header with one value as a string, several as a list). The request is sent as .NET's HttpClient
would: headers as given, ``Content-Type`` from them (``text/plain`` when content has none),
redirects followed, a bearer token when the request names a token source.

Asynchronous HTTP 202 pattern: a ``202 Accepted`` with a ``Location`` header is polled with GET
(same headers, minus ``x-functions-key``; the token again) after ``Retry-After`` seconds, or
after ``defaultAsyncRequestSleepTimeMilliseconds`` (host.json ``durableTask.httpSettings``,
default 30 s), until the answer is something else; that answer is the task's result. The
request may turn polling off with ``asynchronousPatternEnabled: false``. The polling is the
host's, not the orchestration's: the SDK sees one task, so its task numbering stays in step, and
the poll URL is saved with the task's work row so a restarted host resumes polling instead of
sending the first request again. A relative ``Location`` is resolved against the request URI;
a 202 without ``Location`` is returned as is.

Token sources: ``ManagedIdentityTokenSource(resource)`` takes a token for ``resource`` (the
extension's ``/.default`` normalisation for ARM and Graph) from the runtime's credential:
``LocalRuntime(credential=...)`` (an azure-core ``TokenCredential``), else
``azure.identity.DefaultAzureCredential()``, the app's own credential chain.

Failures (refused connection, timeout, bad URI) fail the task with the error's message as
``Reason`` and the serialized exception as ``Details``, as the extension's HTTP activity does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import aiohttp

from local_activities import ActivityOutcome, exception_details

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 240.0
DEFAULT_POLL_MS = 30000
CONTENT_HEADERS = frozenset({
    "allow", "content-disposition", "content-encoding", "content-language", "content-length",
    "content-location", "content-md5", "content-range", "content-type", "expires",
    "last-modified",
})
KNOWN_RESOURCES = {"https://management.core.windows.net": "https://management.core.windows.net/.default",
                   "https://graph.microsoft.com": "https://graph.microsoft.com/.default"}


class HttpCallError(Exception):
    """A call_http request the runtime cannot send (bad URI, method or token source)."""


def token_scope(resource: str) -> str:
    """The scope the extension asks for a managed-identity resource."""
    return KNOWN_RESOURCES.get(resource.rstrip("/"), resource)


def response_json(status: int, headers: Any, content: str) -> dict[str, Any]:
    """The extension's DurableHttpResponse as JSON (response headers only, not content's)."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.lower() not in CONTENT_HEADERS:
            grouped.setdefault(name, []).append(value)
    return {"statusCode": status,
            "headers": {k: v[0] if len(v) == 1 else v for k, v in grouped.items()},
            "content": content}


def _header_items(headers: Any) -> list[tuple[str, str]]:
    if not headers:
        return []
    if not isinstance(headers, dict):
        raise HttpCallError("call_http headers must be an object of names to values")
    items: list[tuple[str, str]] = []
    for name, value in headers.items():
        for one in value if isinstance(value, list) else [value]:
            items.append((str(name), str(one)))
    return items


class HttpCall:
    """One call_http task: the request, then polling while the answer is 202 + Location."""

    def __init__(self, request: dict[str, Any], *, credential: Callable[[], Any],
                 default_poll_ms: int, save_poll: Callable[[str], None]) -> None:
        self.request = request
        self.credential = credential
        self.default_poll_ms = default_poll_ms
        self.save_poll = save_poll

    async def run(self, poll_url: str | None = None) -> ActivityOutcome:
        try:
            response = await self._poll(poll_url) if poll_url else await self._first()
            while self._should_poll(response):
                await asyncio.sleep(self._delay(response))
                location = urljoin(str(self.request.get("uri")), self._header(response,
                                                                             "Location"))
                self.save_poll(location)
                response = await self._poll(location)
            return ActivityOutcome(ok=True, result=json.dumps(response))
        except (HttpCallError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
            reason = str(err) or type(err).__name__
            logger.warning("call_http to %s failed: %s", _safe_uri(self.request.get("uri")),
                           reason)
            return ActivityOutcome(ok=False, reason=reason, details=exception_details(err))

    def _should_poll(self, response: dict[str, Any]) -> bool:
        return (response["statusCode"] == 202
                and self.request.get("asynchronousPatternEnabled", True) is not False
                and self._header(response, "Location") is not None)

    @staticmethod
    def _header(response: dict[str, Any], name: str) -> Any:
        for key, value in response["headers"].items():
            if key.lower() == name.lower():
                return value[0] if isinstance(value, list) else value
        return None

    def _delay(self, response: dict[str, Any]) -> float:
        retry_after = self._header(response, "Retry-After")
        if retry_after is not None and str(retry_after).strip().isdigit():
            return float(int(str(retry_after).strip()))
        return self.default_poll_ms / 1000

    async def _first(self) -> dict[str, Any]:
        method = self.request.get("method") or "GET"
        if not isinstance(method, str) or not method.isalpha():
            raise HttpCallError(f"call_http method {method!r} is not an HTTP method")
        headers = _header_items(self.request.get("headers"))
        content = self.request.get("content")
        if content is not None and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "text/plain"))
        return await self._send(method.upper(), self.request.get("uri"), headers, content)

    async def _poll(self, url: str) -> dict[str, Any]:
        headers = [(k, v) for k, v in _header_items(self.request.get("headers"))
                   if k.lower() not in ("x-functions-key", "content-type")]
        return await self._send("GET", url, headers, None)

    async def _send(self, method: str, uri: Any, headers: list[tuple[str, str]],
                    content: Any) -> dict[str, Any]:
        parts = urlsplit(str(uri or ""))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HttpCallError(f"Invalid URI: {_safe_uri(uri)!r} is not an absolute http(s) URI")
        token = await self._token()
        if token is not None:
            headers = [*headers, ("Authorization", f"Bearer {token}")]
        body = None if content is None else str(content).encode("utf-8")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(method, str(uri), headers=headers, data=body,
                                       ssl=ssl.create_default_context(),
                                       allow_redirects=True) as response:
                text = await response.text(errors="replace")
                return response_json(response.status, response.headers, text)

    async def _token(self) -> str | None:
        source = self.request.get("tokenSource")
        if not source:
            return None
        if not isinstance(source, dict) or not source.get("resource"):
            raise HttpCallError("call_http token source needs a resource")
        if source.get("kind", "AzureManagedIdentity") != "AzureManagedIdentity":
            raise HttpCallError(f"call_http token source kind {source.get('kind')!r} is not "
                                "supported (AzureManagedIdentity is)")
        credential = self.credential()
        scope = token_scope(str(source["resource"]))
        token = await asyncio.get_running_loop().run_in_executor(
            None, lambda: credential.get_token(scope))
        return str(token.token)


def _safe_uri(uri: Any) -> str:
    """The URI without its query (which may hold a key or a SAS)."""
    text = str(uri or "")
    return text.split("?", 1)[0]
