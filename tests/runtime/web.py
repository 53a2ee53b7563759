"""HTTP for the runtime tests: every answer as (status, headers, body), errors included."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def body(self) -> Any:
        if not self.text:
            return None
        try:
            return json.loads(self.text)
        except json.JSONDecodeError:
            return self.text


def call(method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None,
         data: bytes | None = None, timeout: float = 30) -> Reply:
    """One request; ``body`` is sent as JSON, ``data`` as given."""
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers),
                         response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read().decode("utf-8", "replace"))


def follow(url: str, timeout: float = 20, headers: dict[str, str] | None = None) -> Reply:
    """Poll a status URL while it answers 202; the first other answer."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        reply = call("GET", url, headers=headers)
        if reply.status != 202:
            return reply
        time.sleep(0.02)
    raise AssertionError(f"{url} still 202 after {timeout}s")
