"""The catalog benchmark still runs (tiny sizes, on the module's pgSTAC database)."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.services
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_catalog.py"


def test_benchmark_runs_and_reports_json(pgstac_dsn, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_catalog", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(pgstac_dsn, argparse.Namespace(items=40, cogs=4), tmp_path)
    json.dumps(figures)
    assert figures["items"] == 40
    assert figures["write_ours_items_per_s"] > 0 and figures["write_pypgstac_cli_items_per_s"] > 0
    assert isinstance(figures["target_met"], bool)
