"""ISO 8601 datetimes read in one place: from STAC documents, query parameters, orchestration
histories, storage answers and file tags (plain Python)."""
from __future__ import annotations

import datetime as dt
from typing import Any


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive value is read as UTC."""
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def parse_iso(value: str | dt.datetime, *, utc: bool = False) -> dt.datetime:
    """An ISO 8601 datetime (a trailing ``Z`` read as UTC; a datetime as it is), in UTC with
    ``utc`` (a naive value read as UTC); ValueError when the text is not one."""
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return as_utc(parsed) if utc else parsed


def iso_or_none(value: Any, *, utc: bool = False) -> dt.datetime | None:
    """``parse_iso``, or None for an empty value or one that is not a datetime."""
    if not value:
        return None
    try:
        return parse_iso(value, utc=utc)
    except (ValueError, TypeError):
        return None
