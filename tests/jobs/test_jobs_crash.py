"""A host killed with SIGKILL in the middle of a sync and restarted on the same task hub completes
it with no duplicate and no missing item; the metrics entity's state survives too."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import REPO_ROOT
from raster_factory import write_raster
from http_client import http

FILES = 150


def start_host(db: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "local_runtime.py"), "serve", "--app", "function_app:app",
         "--db", str(db), "--port", "0", "--workers", "2"],
        cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
    line = process.stdout.readline()
    assert line.startswith("listening on "), (line, log.read_text()[-2000:])
    return process, line.split()[-1]


@pytest.fixture(scope="module")
def crashbox(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crashbox")
    store.create_container("crashbox")
    for i in range(FILES):
        path = write_raster(tmp / f"c{i:03d}.tif", width=64, height=64, crs="EPSG:4326",
                            bounds=(i % 30, i // 30, i % 30 + 0.5, i // 30 + 0.5), seed=i)
        store.upload_from_path("crashbox", f"c{i:03d}.tif", path)


def test_sigkill_mid_sync_then_restart_completes_exactly_once(service_env, crashbox, pgstac_dsn, tmp_path):
    env = {**os.environ, **service_env}
    db, log = tmp_path / "hub.sqlite", tmp_path / "host.log"
    process, base = start_host(db, env, log)
    try:
        code, done = http("POST", f"{base}/api/jobs/validate_raster", {"container": "crashbox", "blob": "c000.tif"})
        assert code == 202
        wait(base, done["id"])
        code, started = http("POST", f"{base}/api/jobs/sync_container", {"container": "crashbox", "chunk_size": 10})
        assert code == 202, started
        progress = wait_for_progress(base, started["id"], at_least=30)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert progress["done"] < FILES, f"kill landed after the sync ended: {progress}"
    process, base = start_host(db, env, log)
    try:
        status = wait(base, started["id"], timeout=240)
        code, metrics = http("GET", f"{base}/api/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"]["done"] == FILES and status["output"]["failed"] == 0
    with psycopg.connect(pgstac_dsn) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM pgstac.items "
                                       "WHERE collection = 'crashbox'").fetchone()
    assert (total, distinct) == (FILES, FILES)
    assert metrics["operations"]["validate_raster"]["jobs"]["completed"] == 1
    assert metrics["operations"]["sync_container"]["jobs"]["completed"] == 1
    assert "Potential duplicate Task completion" not in log.read_text()


def wait(base: str, instance_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, status = http("GET", f"{base}/api/jobs/{instance_id}")
        if status and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{instance_id} not finished: {status}")


def wait_for_progress(base: str, instance_id: str, at_least: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, status = http("GET", f"{base}/api/jobs/{instance_id}")
        progress = (status or {}).get("customStatus") or {}
        if progress.get("done", 0) >= at_least or status.get("runtimeStatus") == "Completed":
            return progress
        time.sleep(0.02)
    raise AssertionError(f"no progress on {instance_id}: {status}")
