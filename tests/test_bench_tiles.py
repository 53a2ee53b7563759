"""The tiles benchmark still runs (one tile per zoom, one repeat) and both sides draw the same PNG."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tiles.py"


def test_benchmark_runs_and_reports_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--tiles", "1", "--repeats", "1", "--workdir", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(figures["rasters"]) == {"dem", "rgb"}
    for zooms in figures["rasters"].values():
        assert len(zooms) == 3
        for row in zooms.values():
            assert row["same_png_as_reference"] is True, row
            assert row["ours"]["p50_ms"] > 0 and row["rio_tiler"]["p50_ms"] > 0 and row["ratio_p50"] > 0
    assert isinstance(figures["goal_met"], bool)
