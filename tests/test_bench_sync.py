"""The sync benchmark still runs (30 files, one repeat, chunks of 10) and reports its figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sync.py"


def test_benchmark_runs_and_reports_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--files", "30", "--repeat", "1", "--chunk-size", "10",
                           "--chunk-sweep", ""], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["files"] == 30
    run = figures["ours"]["runs"][0]
    assert run["status"] == "Completed" and run["items"] == 30 and run["failed"] == 0
    # the runtime's record of each activity: every catalog task at least, scheduled → started
    assert run["activities"] >= 30 and 0 <= run["queue_wait_ms"]["p50"] <= run["queue_wait_ms"]["p95"], run
    assert figures["ours"]["storage_requests_per_file"] > 0 and figures["script"]["items_per_s"] > 0
    cost = figures["progress_cost"]
    assert cost["items_per_s_with"] > 0 and cost["items_per_s_without"] > 0
    assert isinstance(figures["target_met"], bool)


def test_scale_refuses_an_unknown_phase(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--scale", "--phases", "sync1m"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "unknown --phases" in done.stderr
