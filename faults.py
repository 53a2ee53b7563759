"""Faults of the service, not of an item: a kind of error of its own, and the one retry budget.

A transient fault (storage or the catalog unreachable, a network fault while GDAL reads) says
nothing about the file or item being worked on: it is retried, never reported as a failed item.
Its classes subclass :class:`Transient` and no per-item base (``GeoOpsError``, ``CatalogError``,
``StorageError``...), so catching an item's errors never catches a fault, whatever the order of
the ``except`` clauses. Plain Python: nothing here loads GDAL, a database driver or an SDK.

The retry budget is :class:`RetryBudget`, documented once in README "Faults": a task rides a
fault out in place for up to ``outage_seconds`` (RMH_OUTAGE_SECONDS), GDAL re-sends a failed HTTP
request within a read, and the orchestrator schedules a task whose fault outlived that (or whose
worker died) again, ``task_attempts`` times in all.
"""
from __future__ import annotations

from dataclasses import dataclass


class Transient(Exception):
    """Base of every transient fault: retried within the retry budget, never an item's failure."""


@dataclass(frozen=True)
class RetryBudget:
    """Every retry of the service, in one place.

    - ``outage_seconds``: how long one task retries a transient fault in place, waiting
      ``first_wait`` seconds, doubling up to ``max_wait`` (with jitter), before it raises.
    - ``gdal_request_retries`` / ``gdal_retry_delay``: how often GDAL re-sends one failed HTTP
      request of a read (a range request answered 5xx or 429) before the read fails.
    - ``task_attempts`` / ``task_retry_seconds``: how often the orchestrator schedules a task
      whose fault outlived ``outage_seconds`` or whose worker died, the first retry after
      ``task_retry_seconds`` (orchestrators read no settings: these two are fixed here).
    """

    outage_seconds: float = 90.0
    first_wait: float = 1.0
    max_wait: float = 15.0
    gdal_request_retries: int = 3
    gdal_retry_delay: float = 1.0
    task_attempts: int = 3
    task_retry_seconds: float = 2.0

    def gdal_options(self) -> dict[str, str]:
        """GDAL's own retry options of one HTTP request."""
        return {"GDAL_HTTP_MAX_RETRY": str(self.gdal_request_retries),
                "GDAL_HTTP_RETRY_DELAY": f"{self.gdal_retry_delay:g}"}


#: The budget's fixed parts (what orchestrators use); settings give ``outage_seconds``.
BUDGET = RetryBudget()
