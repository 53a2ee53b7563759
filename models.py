"""Pydantic models for job requests and results: what crosses HTTP and the Durable boundary.

Each operation has one request model; ``OPERATIONS`` maps the operation name (the URL segment in
``POST /api/jobs/{operation}`` and the orchestrator's function name) to it. Requests reject unknown
fields so a typo is a 400, not a silently ignored option.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobRequest(BaseModel):
    """Base of every operation's request body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of the request: equal requests give equal text."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def job_hash(self, length: int = 12) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:length]


class HelloWorldRequest(JobRequest):
    """Proof of the pipeline: ``count`` greetings to ``name``, one activity each."""

    name: str = Field("world", min_length=1, max_length=100)
    count: int = Field(3, ge=1, le=1000)


class GreetingTask(BaseModel):
    """Input of one greeting activity."""

    model_config = ConfigDict(extra="forbid")

    name: str
    index: int = Field(ge=0)


class HelloWorldResult(BaseModel):
    greetings: list[str]


OPERATIONS: dict[str, type[JobRequest]] = {
    "hello_world": HelloWorldRequest,
}


def instance_id_for(operation: str, request: JobRequest) -> str:
    """Instance id of a job: operation name plus a short hash of the canonical request."""
    return f"{operation}-{request.job_hash()}"


def problems_of(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "a.b", "problem": "..."}]`` for a 400 response."""
    out = []
    for error in errors:
        field = ".".join(str(part) for part in error.get("loc", ())) or "(body)"
        message = error["msg"]
        if error.get("type") == "extra_forbidden":
            message = "unknown field; remove it"
        out.append({"field": field, "problem": message})
    return out


class Progress(BaseModel):
    """A job's custom status: small JSON that the status URL and the Durable Functions Monitor show.

    Orchestrators build it from ``context.current_utc_datetime`` only, so it is deterministic.
    """

    stage: str
    total: int = 0
    done: int = 0
    failed: int = 0
    percent: float = 0.0
    started: dt.datetime | None = None
    updated: dt.datetime | None = None
    eta: dt.datetime | None = None

    @classmethod
    def at(cls, stage: str, *, total: int, done: int, failed: int = 0,
           started: dt.datetime, now: dt.datetime) -> "Progress":
        """Progress with percent and an estimated completion extrapolated from the rate so far."""
        finished = done + failed
        percent = round(100.0 * finished / total, 1) if total else 100.0
        eta = None
        if 0 < finished < total and now > started:
            eta = now + (now - started) * ((total - finished) / finished)
        return cls(stage=stage, total=total, done=done, failed=failed, percent=percent,
                   started=started, updated=now, eta=eta)
