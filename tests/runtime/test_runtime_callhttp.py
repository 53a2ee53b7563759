"""call_http as the extension's built-in HTTP activity, against real servers on 127.0.0.1: a
loopback aiohttp server for the asynchronous 202 pattern, and Azurite (HTTPS, bearer tokens)
for a managed-identity token source."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import documented_app
from local_runtime import LocalRuntime


@dataclass
class Server:
    """A job API: POST /jobs answers 202 + Location; GET /jobs/1 answers 202 ``pending`` times,
    then 200 with the result."""

    url: str = ""
    pending: int = 2
    retry_after: str | None = "0"
    hold: bool = False
    requests: list[tuple[str, str, dict[str, str], str]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/jobs", self.submit)
        app.router.add_get("/jobs/1", self.status)
        app.router.add_post("/no-location", self.no_location)
        return app

    async def submit(self, request: web.Request) -> web.Response:
        self.requests.append(("POST", request.path, dict(request.headers), await request.text()))
        headers = {"Location": "/jobs/1", "X-Job": "1"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.Response(status=202, headers=headers, text="accepted")

    async def status(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, dict(request.headers), ""))
        polls = sum(1 for r in self.requests if r[0] == "GET")
        if self.hold or polls <= self.pending:
            return web.Response(status=202, headers={"Location": f"{self.url}/jobs/1"},
                                text="running")
        return web.json_response({"done": True, "polls": polls},
                                 headers={"Set-Cookie": "a=1", "X-Multi": "x"})

    async def no_location(self, request: web.Request) -> web.Response:
        return web.Response(status=202, text="queued somewhere")


def serve(rt: LocalRuntime, server: Server) -> Server:
    async def start() -> str:
        server.runner = web.AppRunner(server.app())
        await server.runner.setup()
        site = web.TCPSite(server.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{server.runner.addresses[0][1]}"

    server.url = rt.run_coroutine(start())
    return server


@pytest.fixture
def server(docs: LocalRuntime) -> Iterator[Server]:
    started = serve(docs, Server())
    yield started
    assert started.runner is not None
    docs.run_coroutine(started.runner.cleanup())


def call_http(rt: LocalRuntime, spec: dict[str, Any], timeout: float = 20) -> dict:
    return rt.wait_for(rt.start_new("http_caller", spec), timeout)


def test_202_location_is_polled_until_the_answer(docs: LocalRuntime, server: Server) -> None:
    status = call_http(docs, {"method": "POST", "uri": f"{server.url}/jobs",
                              "content": {"size": 3},
                              "headers": {"X-Trace": "t-1", "x-functions-key": "secret",
                                          "Content-Type": "application/json"}})
    assert status["runtimeStatus"] == "Completed", status
    response = status["output"]
    assert response["statusCode"] == 200
    assert json.loads(response["content"]) == {"done": True, "polls": 3}
    assert response["headers"]["X-Multi"] == "x"
    assert not {"Content-Type", "Content-Length"} & set(response["headers"])
    methods = [(method, path) for method, path, _, _ in server.requests]
    assert methods == [("POST", "/jobs"), ("GET", "/jobs/1"), ("GET", "/jobs/1"),
                       ("GET", "/jobs/1")]
    post_headers = server.requests[0][2]
    assert server.requests[0][3] == '{"size": 3}'
    assert post_headers["Content-Type"] == "application/json"
    assert post_headers["x-functions-key"] == "secret"
    for _, _, headers, _ in server.requests[1:]:
        assert headers["X-Trace"] == "t-1"
        assert "x-functions-key" not in {k.lower() for k in headers}
    history = docs.get_status(status["instanceId"], show_history=True)["historyEvents"]
    tasks = [e for e in history if e["EventType"] == "TaskCompleted"]
    assert [t["FunctionName"] for t in tasks] == ["BuiltIn::HttpActivity"]
    request = json.loads(tasks[0]["Input"])[0]
    assert (request["method"], request["uri"]) == ("POST", f"{server.url}/jobs")


def test_poll_waits_retry_after_or_the_default(docs: LocalRuntime, server: Server) -> None:
    server.retry_after = "1"
    server.pending = 0
    started = time.monotonic()
    status = call_http(docs, {"method": "POST", "uri": f"{server.url}/jobs"})
    assert status["output"]["statusCode"] == 200
    assert time.monotonic() - started >= 1.0
    server.retry_after = None
    server.requests.clear()
    status = call_http(docs, {"method": "POST", "uri": f"{server.url}/jobs"})
    assert status["output"]["statusCode"] == 200


def test_202_without_location_is_the_answer(docs: LocalRuntime, server: Server) -> None:
    status = call_http(docs, {"method": "POST", "uri": f"{server.url}/no-location"})
    assert status["output"]["statusCode"] == 202
    assert status["output"]["content"] == "queued somewhere"


def test_unreachable_and_invalid_uris_fail_the_task(docs: LocalRuntime) -> None:
    from services import free_port

    status = call_http(docs, {"uri": f"http://127.0.0.1:{free_port()}/x"})
    assert status["runtimeStatus"] == "Failed"
    assert "Cannot connect to host 127.0.0.1" in status["output"]
    status = call_http(docs, {"uri": "ftp://example.org/file"})
    assert status["runtimeStatus"] == "Failed"
    assert "Invalid URI" in status["output"]
    history = docs.get_status(status["instanceId"], show_history=True)["historyEvents"]
    failure = next(e for e in history if e["EventType"] == "TaskFailed")
    assert failure["FunctionName"] == "BuiltIn::HttpActivity"
    assert json.loads(failure["Details"])["ClassName"] == "System.Exception"


def test_polling_resumes_after_a_restart_without_a_second_request(tmp_path: Path) -> None:
    documented_app.STATE.clear()
    db = tmp_path / "hub.sqlite"
    rt = LocalRuntime(documented_app.app, db_path=db, port=0, http_poll_ms=50).start()
    server = serve(rt, Server(hold=True, retry_after=None))
    try:
        instance_id = rt.start_new("http_caller", {"method": "POST", "uri": f"{server.url}/jobs"})
        deadline = time.time() + 10
        while sum(r[0] == "GET" for r in server.requests) < 2 and time.time() < deadline:
            time.sleep(0.01)
        rt.stop()
        rt = LocalRuntime(documented_app.app, db_path=db, port=0, http_poll_ms=50).start()
        server.hold = False
        status = rt.wait_for(instance_id, 20)
    finally:
        assert server.runner is not None
        rt.run_coroutine(server.runner.cleanup())
        rt.stop()
    assert status["output"]["statusCode"] == 200
    assert [r[0] for r in server.requests].count("POST") == 1


def test_managed_identity_token_source_against_azurite(azurite_oauth, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from services import EmulatorCredential

    monkeypatch.setenv("SSL_CERT_FILE", str(azurite_oauth.ca_path))
    with LocalRuntime(documented_app.app, db_path=tmp_path / "t.sqlite", port=0,
                      credential=EmulatorCredential()) as rt:
        listing = {"uri": f"{azurite_oauth.account_url}?comp=list",
                   "headers": {"x-ms-version": "2021-08-06"}}
        with_token = call_http(rt, {**listing, "resource": "https://storage.azure.com/"})
        without = call_http(rt, listing)
    assert with_token["output"]["statusCode"] == 200, with_token["output"]
    assert "<EnumerationResults" in with_token["output"]["content"]
    assert without["output"]["statusCode"] in (401, 403)
