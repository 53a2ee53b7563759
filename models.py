"""Pydantic models for job requests and results: what crosses HTTP and the Durable boundary.

Each operation has one request model; ``OPERATIONS`` maps the operation name (the URL segment in
``POST /api/jobs/{operation}`` and the orchestrator's function name) to it. Requests reject unknown
fields so a typo is a 400, not a silently ignored option.
"""
from __future__ import annotations

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
