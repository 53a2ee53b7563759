"""The multidimensional benchmark still runs (a small cube) and its COGs match gdal_translate's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_multidim.py"


def test_benchmark_runs_and_reports_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--days", "4", "--width", "96", "--height", "48",
                           "--grib-vars", "2", "--grib-steps", "2", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["files"] == 2 and figures["slices"] == 4 + 2 * 2
    assert figures["pixels_identical_to_gdal_translate"] is True
    assert figures["ours_slices_per_s"] > 0 and figures["xargs_slices_per_s"] > 0
