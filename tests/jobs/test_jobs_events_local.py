"""Event-driven ingest on the local directory + static catalog (the embedded defaults), including a
``kill -9`` of the host (``cli.py serve``, as ``make serve`` runs it) in the middle of a burst:
after a restart every blob is cataloged exactly once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from events import (CONTAINER, check_burst, check_create_overwrite_delete, check_duplicate_event_is_one_job,
                    check_next_sync_plans_nothing, sample_raster, wait_until)
from local_runtime import LocalRuntime
from services import applied_local_env, free_port

ROOT = Path(__file__).resolve().parents[2]


def local_env(root: Path) -> dict[str, str]:
    return {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
            "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
            "RMH_TEMP_DIR": str(root / "work"), "RMH_EVENT_CONTAINERS": CONTAINER}


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    env = local_env(tmp_path_factory.mktemp("events-local"))
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def watching(service_env, store, tmp_path_factory):
    import function_app

    store.create_container(CONTAINER)
    db = tmp_path_factory.mktemp("events-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, event_grid_containers=[CONTAINER],
                      event_grid_poll_interval=0.5, blob_store=store) as runtime:
        yield runtime


def test_upload_overwrite_delete(watching, store, tmp_path):
    check_create_overwrite_delete(watching, store, tmp_path)


def test_a_duplicated_event_is_one_job(watching, store, tmp_path):
    check_duplicate_event_is_one_job(watching, store, tmp_path)


def test_a_burst_of_300_uploads_is_cataloged_once_each(watching, store, tmp_path):
    check_burst(watching, store, tmp_path, count=300)
    check_next_sync_plans_nothing(watching)


def _serve(root: Path, port: int) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RMH_")}, **local_env(root)}
    return subprocess.Popen([sys.executable, "cli.py", "serve", "--port", str(port), "--state", str(root / "state")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)


def _ready(proc: subprocess.Popen) -> None:
    """Wait for the host's ``listening on`` line (its log lines come first, on the same pipe), then
    keep draining the pipe so the host never blocks on a full one."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("listening on"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return
    raise AssertionError(f"the host exited: {''.join(seen[-20:])}")


def _ingest_jobs(port: int) -> list[dict]:
    url = (f"http://127.0.0.1:{port}/runtime/webhooks/durabletask/instances"
           "?instanceIdPrefix=ingest_blob-&showInput=true")
    with urllib.request.urlopen(url, timeout=30) as response:
        jobs = json.loads(response.read())
    jobs = [job for job in jobs if ":" not in job["instanceId"]]  # jobs, not their sub-orchestrations
    for job in jobs:
        while isinstance(job.get("input"), str):
            job["input"] = json.loads(job["input"])
    return jobs


def test_kill_9_during_a_burst_catalogs_every_blob_exactly_once(tmp_path):
    from storage import LocalDirStore

    root = tmp_path / "host"
    store = LocalDirStore(root / "storage")
    store.create_container(CONTAINER)
    port = free_port()
    proc = _serve(root, port)
    try:
        _ready(proc)
        source = sample_raster(tmp_path, 5)
        names = [f"k/f{i:03d}.tif" for i in range(120)]
        for name in names:
            store.upload_from_path(CONTAINER, name, source)
        items = root / "catalog"
        wait_until(lambda: len(list(items.rglob("events~k~*.json"))) >= 20, timeout=120, what="20 items")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed_with = len(list(items.rglob("events~k~*.json")))
        proc = _serve(root, port)
        _ready(proc)
        wait_until(lambda: len(list(items.rglob("events~k~*.json"))) >= len(names), timeout=600, interval=1,
                   what="every item after the restart")
        wait_until(lambda: all(j["runtimeStatus"] == "Completed" for j in _ingest_jobs(port)), timeout=120,
                   what="every ingest job completed")
        per_blob: dict[str, int] = {}
        for job in _ingest_jobs(port):
            per_blob[job["input"]["blob"]] = per_blob.get(job["input"]["blob"], 0) + 1
        assert {n: per_blob.get(n) for n in names} == {n: 1 for n in names}
        assert len(list(items.rglob("events~k~*.json"))) == len(names)
        assert killed_with < len(names), "the kill came after the burst was done"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
