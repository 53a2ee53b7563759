"""A job's own records: its progress (the custom status), its result (counts, failures, task
durations as fixed-bucket histograms) and what it reports to the metrics entity when it ends."""
from __future__ import annotations

import bisect
import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from task_models import TaskOutcome


class Progress(BaseModel):
    """A job's custom status: small JSON that the status URL and the Durable Functions Monitor show.

    Orchestrators build it from ``context.current_utc_datetime`` only, so it is deterministic.
    ``live``: the instance is fanning out and ``done``/``failed`` count only what it knew before
    (files found missing, skipped at inspection); its file or tile tasks are counted by whoever
    reads the status, from the instance's history (``history_progress``), so an orchestration
    pays nothing per finished task for its progress. ``chunks``: the numbers of the chunks a job
    had running (started, not merged) as of this status, so a reader finds the ones it has not
    counted without listing every chunk of the job; ``segments``: the same for a job that gathers
    its chunks in segments (``SEGMENT_CHUNKS``), each of which reports its own chunks so.
    """

    stage: str
    total: int = 0
    done: int = 0
    failed: int = 0
    percent: float = 0.0
    started: dt.datetime | None = None
    updated: dt.datetime | None = None
    eta: dt.datetime | None = None
    live: bool = False
    chunks: list[int] | None = None
    segments: list[int] | None = None

    @classmethod
    def at(cls, stage: str, *, total: int, done: int, failed: int = 0,
           started: dt.datetime, now: dt.datetime, live: bool = False,
           chunks: list[int] | None = None, segments: list[int] | None = None) -> "Progress":
        """Progress with percent and an estimated completion extrapolated from the rate so far."""
        finished = done + failed
        percent = round(100.0 * finished / total, 1) if total else (100.0 if stage == "completed" else 0.0)
        eta = None
        if 0 < finished < total and now > started:
            eta = now + (now - started) * ((total - finished) / finished)
        return cls(stage=stage, total=total, done=done, failed=failed, percent=percent,
                   started=started, updated=now, eta=eta, live=live, chunks=chunks, segments=segments)

    @classmethod
    def combined(cls, job: dict[str, Any], parts: list[tuple[int, int]], now: dt.datetime) -> dict[str, Any]:
        """A job's progress with what it has not counted yet: ``parts`` are (done, failed) of
        its own live fan-out and of its chunks that it has not merged (each counted from its
        custom status or its history). Custom statuses that are not progress are left as they are."""
        try:
            mine = cls.model_validate(job)
        except ValueError:
            return job
        if not parts or mine.started is None:
            return job
        done = min(mine.total, mine.done + sum(d for d, _ in parts))
        failed = min(mine.total - done, mine.failed + sum(f for _, f in parts))
        return cls.at(mine.stage, total=mine.total, done=done, failed=failed, started=mine.started,
                      now=max(now, mine.updated or mine.started)).model_dump(mode="json", exclude={"live", "chunks", "segments"})


def chunk_instance_id(job_id: str, kind: str, index: int) -> str:
    """The instance id of a job's sub-orchestration: ``<job id>:chunk-00001``."""
    return f"{job_id}:{kind}-{index:05d}"


#: Most running chunks a job names in its status (``Progress.chunks``; more are found by listing).
CHUNKS_NAMED = 64

#: The tasks that finish one file or one tile of a job (its progress counts them; an
#: ``inspect_raster`` or ``describe_blob`` is only a step towards one).

#: Failures a job's result lists by name (all are counted).
FAILURES_SHOWN = 1000


# -- job metrics: fixed-bucket histograms ---------------------------------------------------------

# Upper bounds (seconds) of the duration buckets; the last bucket is open (+inf).
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100,
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
)
# Upper bounds of the tasks-per-job buckets.
COUNT_BOUNDS: tuple[float, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)


class Histogram(BaseModel):
    """Counts per fixed bucket: ``counts[i]`` holds values <= ``bounds[i]`` (and > the previous)."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: int = 0
    sum: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> "Histogram":
        return cls(bounds=bounds, counts=[0] * (len(bounds) + 1))

    @classmethod
    def of(cls, values: list[float], bounds: tuple[float, ...] = DURATION_BOUNDS) -> "Histogram":
        hist = cls.empty(bounds)
        for value in values:
            hist.add(value)
        return hist

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += 1
        self.sum += value

    def merge(self, other: "Histogram") -> None:
        if tuple(other.bounds) != tuple(self.bounds):
            raise ValueError("cannot merge histograms with different bucket bounds")
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.total += other.total
        self.sum += other.sum

    def percentile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-th percentile (None when empty)."""
        if self.total == 0:
            return None
        rank = max(1, -(-self.total * q // 100))  # ceil(total * q / 100), at least the first value
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.total,
            "mean": round(self.sum / self.total, 6) if self.total else None,
            "p50": self.percentile(50), "p95": self.percentile(95), "p99": self.percentile(99),
        }


class JobEnded(BaseModel):
    """What an orchestrator reports of a finished job."""

    outcome: str = Field(pattern="^(completed|completed_with_errors|failed)$")
    job_seconds: float = Field(ge=0)
    tasks: int = Field(0, ge=0)
    tasks_failed: int = Field(0, ge=0)
    task_seconds: Histogram | None = None




class JobResult(BaseModel):
    """A job's output. ``completed_with_errors`` is true when some items failed (listed, with the
    count of each reason) while the rest completed."""

    operation: str
    completed_with_errors: bool = False
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[TaskOutcome] = []
    failure_reasons: dict[str, int] = {}
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    seconds: float | None = None
    task_seconds: Histogram = Field(default_factory=lambda: Histogram.empty(DURATION_BOUNDS))
    detail: dict[str, Any] = {}

    def add(self, outcomes: list[TaskOutcome]) -> None:
        for outcome in outcomes:
            self.total += 1
            self.task_seconds.add(outcome.seconds)
            if outcome.status == "failed":
                self.failed += 1
                self.failure_reasons[outcome.error or "Error"] = self.failure_reasons.get(outcome.error or "Error", 0) + 1
                if len(self.failures) < FAILURES_SHOWN:
                    self.failures.append(outcome)
            elif outcome.status == "skipped":
                self.skipped += 1
            else:
                self.done += 1
        self.completed_with_errors = self.failed > 0

    def add_counted(self, reasons: dict[str, int]) -> None:
        """Failures known by their count per condition only (beyond what a list carries)."""
        for reason, count in reasons.items():
            self.total += count
            self.failed += count
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count
        self.completed_with_errors = self.failed > 0

    def merge(self, other: "JobResult") -> None:
        """Fold a chunk's result into this one (counts, reasons, failures, durations)."""
        self.total += other.total
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        for reason, count in other.failure_reasons.items():
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count
        self.failures.extend(other.failures[:max(0, FAILURES_SHOWN - len(self.failures))])
        self.task_seconds.merge(other.task_seconds)
        self.completed_with_errors = self.failed > 0
