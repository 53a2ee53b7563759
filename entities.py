"""Durable entities: per-operation job metrics.

One ``job_metrics`` entity per operation (entity key = operation name). Orchestrators signal it —
never activities — when a job starts and when it ends; durations are kept as fixed histogram
buckets, so p50 / p95 / p99 are read without keeping every sample and the state stays small.
"""
from __future__ import annotations

import bisect
from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, Field

bp = df.Blueprint()

METRICS_ENTITY = "job_metrics"

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


class OperationMetrics(BaseModel):
    """The state of one operation's metrics entity."""

    started: int = 0
    completed: int = 0
    completed_with_errors: int = 0
    failed: int = 0
    tasks: int = 0
    tasks_failed: int = 0
    tasks_per_job: Histogram = Field(default_factory=lambda: Histogram.empty(COUNT_BOUNDS))
    task_seconds: Histogram = Field(default_factory=lambda: Histogram.empty(DURATION_BOUNDS))
    job_seconds: Histogram = Field(default_factory=lambda: Histogram.empty(DURATION_BOUNDS))

    def record_end(self, ended: JobEnded) -> None:
        setattr(self, ended.outcome, getattr(self, ended.outcome) + 1)
        self.tasks += ended.tasks
        self.tasks_failed += ended.tasks_failed
        self.tasks_per_job.add(ended.tasks)
        self.job_seconds.add(ended.job_seconds)
        if ended.task_seconds is not None:
            self.task_seconds.merge(ended.task_seconds)

    def report(self) -> dict[str, Any]:
        return {
            "jobs": {"started": self.started, "completed": self.completed,
                     "completed_with_errors": self.completed_with_errors, "failed": self.failed,
                     "running": max(0, self.started - self.completed - self.completed_with_errors - self.failed)},
            "tasks": {"total": self.tasks, "failed": self.tasks_failed,
                      "per_job": self.tasks_per_job.summary()},
            "task_seconds": self.task_seconds.summary(),
            "job_seconds": self.job_seconds.summary(),
        }


@bp.entity_trigger(context_name="context")
def job_metrics(context: df.DurableEntityContext):
    """Operations: ``job_started`` (no input), ``job_ended`` (JobEnded JSON), ``get`` (the report)."""
    metrics = OperationMetrics.model_validate(context.get_state(dict, expected_type=dict) or {})
    operation = context.operation_name
    if operation == "job_started":
        metrics.started += 1
    elif operation == "job_ended":
        metrics.record_end(JobEnded.model_validate(context.get_input(expected_type=dict)))
    elif operation == "get":
        context.set_result(metrics.report())
        return
    else:
        raise ValueError(f"unknown job_metrics operation {operation!r}; use job_started, job_ended or get")
    context.set_state(metrics.model_dump(mode="json"))
