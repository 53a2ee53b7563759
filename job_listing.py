"""``GET /api/jobs``: job summaries, newest first, in pages.

A listing answered every job's whole output (its failures, up to thousands; its plan and catalog
detail) and read every instance the task hub holds, chunks included, each time the dashboard
polled it. Now it answers summaries (the counts the list shows; the whole output with
``outputs=true``), at most ``top`` jobs a page, and reads only the newest instances it needs:
it asks the Durable client for the instances created in a window before the page's start
(``created_time_from`` / ``created_time_to``, which the client passes to the task hub), widening the
window until it holds a page more than ``top`` jobs or reaches the first instance; each wider
window reads only the time the narrower ones did not cover, so an instance is read once a page
(a 10,000-file sync's 1,000 chunks were read once per window: 1.3 s a listing). The
continuation token names the last job answered (its creation time and id); the next page starts
just before it, so pages never repeat or skip a job as new jobs arrive.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any, Awaitable, Callable

#: Jobs a page holds unless ``top`` says otherwise.
JOBS_PAGE = 100
#: How far back each read of a page looks, in turn; ``None``: every older instance.
WINDOWS = (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=30), None)
#: What a summary keeps of a job's output: the counts and times a list shows.
SUMMARY_FIELDS = ("operation", "completed_with_errors", "total", "done", "skipped", "failed",
                  "failure_reasons", "started", "finished", "seconds")


class JobListingError(Exception):
    """Base class of the listing's errors."""


class BadJobsToken(JobListingError):
    """A continuation token this service did not hand out."""


def summary(output: Any) -> Any:
    """A job output's summary: its counts and times, without failures, tasks and detail (any
    other output, e.g. a failed job's error text, is left as it is)."""
    if not isinstance(output, dict) or "total" not in output:
        return output
    return {key: output[key] for key in SUMMARY_FIELDS if key in output}


def encode_token(created: dt.datetime, instance_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created.isoformat(), instance_id]).encode()).decode()


def decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        created, instance_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        when = dt.datetime.fromisoformat(created)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise BadJobsToken(f"invalid continuation token {token[:40]!r}: pass back the one a listing "
                           "answered") from None
    if not isinstance(instance_id, str) or when.tzinfo is None:
        raise BadJobsToken(f"invalid continuation token {token[:40]!r}: pass back the one a listing answered")
    return when, instance_id


def _key(status: Any) -> tuple[dt.datetime, str]:
    created = status.created_time or dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.timezone.utc)
    return created, status.instance_id


async def newest_jobs(query: Callable[..., Awaitable[list]], is_job: Callable[[Any], bool], *, top: int,
                      token: str | None, now: dt.datetime) -> tuple[list, str | None]:
    """A page of at most ``top`` jobs (``is_job``), newest first, and the token of the next page
    (None at the end). ``query(created_time_from=, created_time_to=)``: the Durable client's
    ``get_status_by`` with the listing's other filters bound."""
    before = decode_token(token) if token else None
    # statuses give whole seconds: the next page reads up to the end of the token's second, and
    # what it answered already is dropped by its (time, id)
    upper = (before[0].replace(microsecond=0) + dt.timedelta(seconds=1)).astimezone(dt.timezone.utc) if before else None
    jobs: dict[str, Any] = {}
    newer = upper
    for window in WINDOWS:
        # each window reads only what the narrower ones did not (both ends are inclusive: an
        # instance on a boundary is read twice and kept once): a job's chunks, which a listing
        # reads and drops, are parsed once a page, not once a window
        start = ((upper or now) - window).astimezone(dt.timezone.utc) if window is not None else None
        for status in await query(created_time_from=start, created_time_to=newer):
            if is_job(status) and (before is None or _key(status) < before):
                jobs[status.instance_id] = status
        if len(jobs) > top or start is None:
            break
        newer = start
    ordered = sorted(jobs.values(), key=_key, reverse=True)
    page = ordered[:top]
    return page, encode_token(*_key(page[-1])) if len(ordered) > top else None
