"""The job metrics entity, driven through the SDK's entity entry point with extension-shaped batches."""
import json
import random

from azure.functions._durable_functions import EntityContext

import entities
from entities import DURATION_BOUNDS, Histogram, JobEnded


def run_batch(state, operations):
    """One entity batch as the extension sends it; returns (new state text, results)."""
    batch = [{"name": name, "input": json.dumps(json.dumps(value)) if value is not None else None,
              "isSignal": name != "get", "id": f"op-{i}"} for i, (name, value) in enumerate(operations)]
    context = {"self": {"name": "job_metrics", "key": "cog_conversion"}, "exists": state is not None,
               "state": state, "batch": batch}
    handle = entities.job_metrics._function.get_user_function()
    out = json.loads(handle(EntityContext(json.dumps(context))))
    return out["entityState"], out["results"]


def test_counts_jobs_by_outcome_and_reports_percentiles():
    rng = random.Random(7)
    task_durations = [rng.lognormvariate(0, 1.2) for _ in range(500)]
    job_durations = [30, 45, 600, 12]
    ended = [
        JobEnded(outcome="completed", job_seconds=job_durations[0], tasks=300, tasks_failed=0,
                 task_seconds=Histogram.of(task_durations[:300])),
        JobEnded(outcome="completed_with_errors", job_seconds=job_durations[1], tasks=200,
                 tasks_failed=3, task_seconds=Histogram.of(task_durations[300:])),
        JobEnded(outcome="failed", job_seconds=job_durations[2]),
        JobEnded(outcome="completed", job_seconds=job_durations[3]),
    ]
    state, _ = run_batch(None, [("job_started", None)] * 5)
    state, results = run_batch(state, [("job_ended", e.model_dump(mode="json")) for e in ended] + [("get", None)])
    assert not any(r["isError"] for r in results)
    report = json.loads(results[-1]["result"])
    assert report["jobs"] == {"started": 5, "completed": 2, "completed_with_errors": 1, "failed": 1, "running": 1}
    assert report["tasks"]["total"] == 500 and report["tasks"]["failed"] == 3
    assert report["task_seconds"]["count"] == 500
    for q in (50, 95, 99):
        assert _within_one_bucket(report["task_seconds"][f"p{q}"], _raw_percentile(task_durations, q))
        assert _within_one_bucket(report["job_seconds"][f"p{q}"], _raw_percentile(job_durations, q))


def test_unknown_operation_is_an_error_and_state_survives():
    state, _ = run_batch(None, [("job_started", None)])
    state, results = run_batch(state, [("reset_everything", None), ("get", None)])
    assert results[0]["isError"] and "job_started" in json.loads(results[0]["result"])
    assert json.loads(results[1]["result"])["jobs"]["started"] == 1


def test_histogram_percentile_is_bucket_upper_bound():
    hist = Histogram.of([0.3, 0.4, 3.0, 7.0])
    assert hist.percentile(50) == 0.5
    assert hist.percentile(100) == 10
    assert Histogram.of([]).percentile(50) is None
    assert Histogram.of([10**9]).percentile(50) == float("inf")


def _raw_percentile(values, q):
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _within_one_bucket(reported, raw):
    bounds = list(DURATION_BOUNDS) + [float("inf")]
    raw_index = next(i for i, b in enumerate(bounds) if raw <= b)
    return abs(bounds.index(reported) - raw_index) <= 1
