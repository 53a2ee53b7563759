"""Durable entities: per-operation job metrics.

One ``job_metrics`` entity per operation (entity key = operation name). Orchestrators signal it —
never activities — when a job starts and when it ends; durations are kept as fixed histogram
buckets, so p50 / p95 / p99 are read without keeping every sample and the state stays small.
"""
from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, Field

from models import COUNT_BOUNDS, DURATION_BOUNDS, Histogram, JobEnded

bp = df.Blueprint()

METRICS_ENTITY = "job_metrics"

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
