"""The conversion benchmark still runs (2 files, one run) and both sides write the same bytes."""
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
