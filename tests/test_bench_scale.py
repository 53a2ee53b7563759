"""The scale benchmark's quick phases run at small sizes and report their figures (the cpu and
segments phases are the sync benchmark's harness, which tests/test_bench_sync.py runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"


def test_the_pages_and_dry_phases_run_and_report_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--phases", "pages,dry", "--items", "300", "--jobs", "110",
                           "--footprints", "200", "--dry-blobs", "500", "--workers", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    pages = figures["pages"]
    assert pages["items"] == 300 and pages["footprints_returned"] == 300
    assert pages["index_page_1000_ms"] > 0 and pages["scan_page_1000_ms"] > 0
    assert pages["footprints_pgstac_returned"] == 300 and pages["footprints_pgstac_limit1000_ms"] > 0
    assert pages["pgstac_hydrated_page_1000_ms"] > 0 and pages["pgstac_page_1000_ms"] > 0
    # Chromium: the list of the hub's 110 jobs (its first 100 drawn) and the map of 200 footprints
    assert pages["dashboard_jobs_in_hub"] == 110 and pages["dashboard_footprints"] == 200
    assert 0 < pages["dashboard_jobs_first_paint_ms"] < 60_000 and 0 < pages["dashboard_footprints_first_paint_ms"] < 60_000
    assert len(pages["dashboard_jobs_first_paint_runs_ms"]) == 5 and pages["chromium"]
    dry = figures["dry_run_500"]
    assert dry["status"] == "Completed" and dry["plan"]["added"] == 500, dry
    assert dry["seconds"] > 0 and dry["host_peak_mb"] > 0 and dry["worker_peak_mb"] > 0


def test_the_collections_phase_runs_and_reports_json(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--phases", "collections", "--collections", "12"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    made = figures["collections"]
    assert made["collections"] == 12
    for variant in ("before", "after"):
        assert set(made[variant]["new_collection_ms"]) == {"1", "10", "12"}
        assert all(ms > 0 for ms in made[variant]["new_collection_ms"].values())
    assert set(figures["new_collection_ms_at_12"]) == {"before", "after"}


def test_an_unknown_phase_is_refused(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--phases", "sync1m"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "unknown --phases" in done.stderr
