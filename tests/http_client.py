"""A small JSON-over-HTTP helper for tests that talk to a running host, and ``Host``: the app on a
running embedded runtime, driven over HTTP like a user would."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime import LocalRuntime


def http(method: str, url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """(status code, parsed JSON body or None); HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else None


TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


class Host:
    """The running app: submit jobs and follow their status URLs."""

    def __init__(self, runtime: LocalRuntime):
        self.runtime = runtime
        self.url = runtime.base_url

    def submit(self, operation: str, body: dict | None = None) -> tuple[int, Any]:
        return http("POST", f"{self.url}/api/jobs/{operation}", body or {})

    def run(self, operation: str, body: dict | None = None, timeout: float = 180) -> dict:
        """Submit, expect 202, follow statusQueryGetUri to the end; returns the final status."""
        code, started = self.submit(operation, body)
        assert code == 202, (code, started)
        return self.follow(started["statusQueryGetUri"], timeout)

    def follow(self, status_url: str, timeout: float = 180, on_poll=None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code, status = http("GET", status_url)
            if on_poll:
                on_poll(status)
            if status and status.get("runtimeStatus") in TERMINAL:
                return status
            assert code in (200, 202), (code, status)
            time.sleep(0.05)
        raise AssertionError(f"{status_url} did not finish in {timeout}s: {status}")

    def wait(self, instance_id: str, timeout: float = 180) -> dict:
        return self.follow(f"{self.url}/api/jobs/{instance_id}", timeout)

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", f"{self.url}{path}")

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return http("POST", f"{self.url}{path}", body)
