"""Local stand-ins for what change events are delivered to, on 127.0.0.1 free ports:

* ``EventGridTopic``: the publish side of an Event Grid custom topic over HTTPS (a throwaway
  self-signed certificate, as the Azurite OAuth fixture makes one): ``POST /api/events?
  api-version=2018-01-01`` with ``Content-Type: application/cloudevents-batch+json`` and a bearer
  token, a JSON array of CloudEvents 1.0; 200 with an empty body, as Event Grid answers. A request
  that breaks the contract is answered 400 and recorded in ``violations``. ``fail_next(n)``
  answers the next n requests 503 (an outage).
* ``IdentityEndpoint``: the App Service managed-identity endpoint (``IDENTITY_ENDPOINT`` /
  ``IDENTITY_HEADER``) that ``DefaultAzureCredential`` asks for a token on Azure Functions: it
  hands out a token per resource and records which resources were asked for.
* ``Webhook``: an HTTP endpoint taking batches of CloudEvents (``application/cloudevents-batch+json``).

Each records the events it accepted (``events``: every delivery, re-deliveries included).
"""
from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from services import _self_signed_certificate

TOKEN = "test-eventgrid-token"
REQUIRED = ("specversion", "id", "source", "type")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Receiver:
    """A threaded HTTP(S) server whose handler calls ``self.handle(handler)``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                receiver.handle(self)

            def do_POST(self) -> None:  # noqa: N802
                receiver.handle(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @staticmethod
    def reply(handler, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                value = predicate(list(self.events))
            if value:
                return value
            time.sleep(0.1)
        with self.lock:
            raise AssertionError(f"{what} not within {timeout:.0f}s ({len(self.events)} events, "
                                 f"violations {self.violations[:3]})")

    def batch(self, handler) -> list[dict[str, Any]] | None:
        """The request's CloudEvents batch, or None after answering 400 for a broken one."""
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        content_type = handler.headers.get("Content-Type", "")
        problem = None
        if not content_type.startswith("application/cloudevents-batch+json"):
            problem = f"content type {content_type!r}"
        try:
            events = json.loads(body)
        except ValueError:
            events, problem = None, problem or "body is not JSON"
        if problem is None and not (isinstance(events, list) and all(
                isinstance(e, dict) and all(e.get(k) for k in REQUIRED) and e["specversion"] == "1.0"
                for e in events)):
            problem = "not an array of CloudEvents 1.0"
        if problem is not None:
            with self.lock:
                self.violations.append(problem)
            self.reply(handler, 400, json.dumps({"error": problem}).encode())
            return None
        return events


class EventGridTopic(_Receiver):
    """The publish contract of an Event Grid custom topic (CloudEvents schema), over HTTPS."""

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.cert, key = workdir / "topic-cert.pem", workdir / "topic-key.pem"
        _self_signed_certificate(self.cert, key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._failing = 0

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/events"

    def fail_next(self, count: int) -> None:
        with self.lock:
            self._failing = count

    def handle(self, handler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        with self.lock:
            self.requests.append({"path": url.path, "query": query, "headers": dict(handler.headers)})
            failing = self._failing
            if failing:
                self._failing -= 1
        if handler.command != "POST" or url.path != "/api/events" or query.get("api-version") != ["2018-01-01"]:
            with self.lock:
                self.violations.append(f"{handler.command} {handler.path}")
            return self.reply(handler, 404, b'{"error": "not the topic endpoint"}')
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            with self.lock:
                self.violations.append(f"authorization {handler.headers.get('Authorization', '')[:20]!r}")
            return self.reply(handler, 401, b'{"error": "unauthorized"}')
        events = self.batch(handler)
        if events is None:
            return None
        if failing:
            return self.reply(handler, 503, b'{"error": "service unavailable"}')
        with self.lock:
            self.events += events
        return self.reply(handler, 200)


class IdentityEndpoint(_Receiver):
    """App Service's managed-identity token endpoint (what ``IDENTITY_ENDPOINT`` points at)."""

    HEADER = "identity-header-for-tests"

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []

    @property
    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{self.port}/msi/token", "IDENTITY_HEADER": self.HEADER}

    def handle(self, handler) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
        if handler.headers.get("X-IDENTITY-HEADER") != self.HEADER:
            return self.reply(handler, 401, b'{"error": "missing identity header"}')
        resource = (query.get("resource") or [""])[0]
        with self.lock:
            self.resources.append(resource)
        token = TOKEN if resource == "https://eventgrid.azure.net" else "token-for-another-resource"
        body = {"access_token": token, "expires_on": str(int(time.time()) + 3600), "resource": resource,
                "token_type": "Bearer"}
        return self.reply(handler, 200, json.dumps(body).encode())


class Webhook(_Receiver):
    """An HTTP endpoint taking batches of structured CloudEvents."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=secret-in-the-query"

    def handle(self, handler) -> None:
        events = self.batch(handler)
        if events is None:
            return None
        with self.lock:
            self.events += events
        return self.reply(handler, 200, b"", "text/plain")


def per_id(events: list[dict[str, Any]]) -> dict[str, int]:
    """How many times each event id was delivered."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event["id"]] = counts.get(event["id"], 0) + 1
    return counts
