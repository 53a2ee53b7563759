"""The conversion benchmark still runs (2 files, one run), both sides write the same bytes, and the
runtime's record of each activity (scheduled, started, finished, completed) explains our wall time."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_convert.py"


def test_benchmark_runs_and_reports_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--files", "2", "--runs", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["files"] == 2 and figures["ours"]["done"] == 2 and figures["ours"]["failed"] == 0
    # the same creation options on the same inputs: the shell's COGs and ours are byte for byte as large
    assert figures["ours"]["bytes"] == figures["shell"]["bytes"] > 0
    assert figures["ours"]["cpu_s"] > 0 and figures["shell"]["cpu_s"] > 0
    assert isinstance(figures["target_met"], bool)
    assert figures["ratio_median"] == figures["ratios"][0] > 0 and figures["runs"] == 1
    # every activity of the job was recorded once, in the worker processes
    activities = figures["ours"]["activities"]
    assert activities["by_activity"]["convert_blob"]["count"] == 2
    assert activities["by_activity"]["inspect_raster"]["count"] == 2
    assert activities["workers"] >= 1 and activities["run_ms"]["sum"] > 0
    wait = figures["queue_wait_ms"]
    assert 0 <= wait["p50"] <= wait["p95"] <= wait["sum"], wait
    # the wall time beyond the activities' run time, and its parts (each within the wall)
    wall, parts = figures["ours"]["wall_s"], figures["overhead_breakdown_s"]
    assert 0 < figures["dispatch_overhead_s"] < wall
    assert all(0 <= parts[k] <= wall for k in ("lead", "dispatch_gaps", "idle_nothing_scheduled", "tail")), parts
    assert parts["lead"] + parts["tail"] <= figures["dispatch_overhead_s"] + 0.005, (parts, figures["dispatch_overhead_s"])
