"""Event Grid emulation: blob changes of the store in use (a local directory, Azurite) reach the
app's Event Grid function as Event Grid events, at least once, in order per blob, and none is
lost to a restart or a ``kill -9`` of the host in the middle of a burst."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventgrid_app
from local_runtime import LocalRuntime

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(params=["local", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    from storage import AzureBlobStore, LocalDirStore

    if request.param == "local":
        blobs = LocalDirStore(tmp_path / "blobs")
    else:
        blobs = AzureBlobStore(
            connection_string=request.getfixturevalue("azurite_connection_string"))
    name = f"watch{abs(hash(str(tmp_path))) % 10 ** 8}"
    blobs.create_container(name)
    blobs.container = name
    return blobs


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = {"CATALOG_DB": tmp_path / "catalog.sqlite", "EVENTS_LOG": tmp_path / "events.log"}
    for key, path in paths.items():
        monkeypatch.setenv(key, str(path))
    paths["EVENTS_LOG"].touch()
    eventgrid_app.FAIL_NEXT.clear()
    return paths


def start(store, tmp_path: Path, db: str = "hub.sqlite") -> LocalRuntime:
    rt = LocalRuntime(eventgrid_app.app, db_path=tmp_path / db, port=0, blob_store=store,
                      event_grid_containers=[store.container], event_grid_poll_interval=0.1)
    rt.start()
    deadline = time.time() + 10
    while not rt._call(rt.engine.store.has_baseline, store.container):
        assert time.time() < deadline, "the first poll never happened"
        time.sleep(0.02)
    return rt


@pytest.fixture
def watching(store, files, tmp_path: Path) -> Iterator[LocalRuntime]:
    rt = start(store, tmp_path)
    yield rt
    rt.stop()


def deliveries(files: dict[str, Path]) -> list[dict]:
    return [json.loads(line) for line in files["EVENTS_LOG"].read_text().splitlines()]


def catalog(files: dict[str, Path]) -> dict[str, tuple[str, int]]:
    if not files["CATALOG_DB"].exists():
        return {}
    with sqlite3.connect(files["CATALOG_DB"], timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS items(blob TEXT PRIMARY KEY, etag TEXT, "
                   "writes INT)")
        return {b: (e, w) for b, e, w in db.execute("SELECT blob, etag, writes FROM items")}


def wait_until(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.05)


def test_create_overwrite_delete(watching: LocalRuntime, store, files) -> None:
    first = store.upload_bytes(store.container, "a.tif", b"one")
    wait_until(lambda: catalog(files).get("a.tif", ("",))[0] == f'"{first.etag}"',
               what="the first version cataloged")
    second = store.upload_bytes(store.container, "a.tif", b"two, longer")
    wait_until(lambda: catalog(files).get("a.tif", ("",))[0] == f'"{second.etag}"',
               what="the overwrite cataloged")
    store.delete(store.container, "a.tif")
    wait_until(lambda: "a.tif" not in catalog(files), what="the deletion")
    seen = deliveries(files)
    assert [e["type"] for e in seen] == ["Microsoft.Storage.BlobCreated",
                                         "Microsoft.Storage.BlobCreated",
                                         "Microsoft.Storage.BlobDeleted"]
    assert len({e["id"] for e in seen}) == 3
    assert [e["sequencer"] for e in seen] == sorted(e["sequencer"] for e in seen)


def test_a_burst_of_300_uploads_is_delivered_once_each(watching: LocalRuntime, store,
                                                        files) -> None:
    names = [f"burst/{i:03d}.tif" for i in range(300)]
    for name in names:
        store.upload_bytes(store.container, name, name.encode())
    wait_until(lambda: len(catalog(files)) == 300, timeout=60, what="300 items")
    items = catalog(files)
    assert sorted(items) == names and {writes for _, writes in items.values()} == {1}
    seen = deliveries(files)
    assert len(seen) == 300 and len({e["id"] for e in seen}) == 300
    wait_until(lambda: len(watching.list_instances(runtime_status=["Completed"],
                                                   page_size=None).instances) == 300,
               what="300 completed jobs")
    assert len(watching.list_instances(page_size=None).instances) == 300


def test_a_duplicated_event_is_one_job(watching: LocalRuntime, store, files) -> None:
    store.upload_bytes(store.container, "dup.tif", b"x")
    wait_until(lambda: "dup.tif" in catalog(files), what="the item")
    event = {"id": "again", **_event_of(watching, store, "dup.tif")}
    function = watching.index.event_grid["blob_events"]
    triggers = watching.event_source.triggers
    watching.run_coroutine(triggers.deliver_event(function, event))
    watching.run_coroutine(triggers.deliver_event(function, event))
    time.sleep(0.3)
    assert catalog(files)["dup.tif"][1] == 1
    assert len(watching.list_instances(page_size=None).instances) == 1


def _event_of(rt: LocalRuntime, store, name: str) -> dict:
    from local_triggers import BLOB_CREATED, blob_event
    from datetime import datetime, timezone

    info = store.get_properties(store.container, name)
    return blob_event(BLOB_CREATED, store.container, name, etag=info.etag, size=info.size,
                      content_type=info.content_type, account="x",
                      url=store.url(store.container, name), sequencer=1,
                      when=datetime.now(timezone.utc))


def test_a_failing_function_gets_the_event_again(watching: LocalRuntime, store, files) -> None:
    eventgrid_app.FAIL_NEXT.append("flaky.tif")
    store.upload_bytes(store.container, "flaky.tif", b"x")
    wait_until(lambda: "flaky.tif" in catalog(files), timeout=20, what="the retried delivery")
    attempts = [e for e in deliveries(files) if e["blob"] == "flaky.tif"]
    assert len(attempts) == 2 and attempts[0]["id"] == attempts[1]["id"]


def test_changes_while_the_host_is_down_are_delivered_after_restart(store, files,
                                                                    tmp_path: Path) -> None:
    rt = start(store, tmp_path)
    store.upload_bytes(store.container, "kept.tif", b"1")
    store.upload_bytes(store.container, "gone.tif", b"2")
    wait_until(lambda: len(catalog(files)) == 2, what="two items")
    rt.stop()
    store.delete(store.container, "gone.tif")
    store.upload_bytes(store.container, "late.tif", b"3")
    rt = start(store, tmp_path)
    try:
        wait_until(lambda: sorted(catalog(files)) == ["kept.tif", "late.tif"],
                   what="the changes made while down")
    finally:
        rt.stop()
    assert [e["blob"] for e in deliveries(files)].count("kept.tif") == 1


def test_kill_nine_during_a_burst_loses_no_event(tmp_path: Path) -> None:
    from storage import LocalDirStore

    blobs = LocalDirStore(tmp_path / "blobs")
    blobs.create_container("landing")
    env = {**os.environ, "RMH_STORAGE_BACKEND": "local",
           "RMH_STORAGE_LOCAL_DIR": str(tmp_path / "blobs"),
           "CATALOG_DB": str(tmp_path / "catalog.sqlite"),
           "EVENTS_LOG": str(tmp_path / "events.log"), "PYTHONPATH": str(ROOT)}
    files = {"CATALOG_DB": tmp_path / "catalog.sqlite", "EVENTS_LOG": tmp_path / "events.log"}
    files["EVENTS_LOG"].touch()
    log = tmp_path / "host.log"

    def host() -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "local_runtime.py"), "serve", "--app",
             f"{APPS / 'eventgrid_app.py'}:app", "--db", str(tmp_path / "hub.sqlite"),
             "--port", "0", "--event-grid-container", "landing", "--event-grid-interval", "0.2"],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), (line, log.read_text()[-2000:])
        return process, line.split()[-1]

    process, _ = host()
    try:
        time.sleep(0.6)  # the baseline poll of the empty container
        names = [f"b{i:03d}.tif" for i in range(300)]
        for name in names[:150]:
            blobs.upload_bytes("landing", name, name.encode())
        wait_until(lambda: len(deliveries(files)) >= 40, timeout=30, what="40 deliveries")
        for name in names[150:]:
            blobs.upload_bytes("landing", name, name.encode())
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    delivered_before = {e["blob"] for e in deliveries(files)}
    assert len(delivered_before) < 300, "the kill landed after the burst"
    process, _ = host()
    try:
        wait_until(lambda: len(catalog(files)) == 300, timeout=90, what="300 items")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    assert sorted(catalog(files)) == names
    delivered = [e["blob"] for e in deliveries(files)]
    assert set(delivered) == set(names)
    print(f"killed after {len(delivered_before)} deliveries; {len(delivered)} in total")
    assert "Potential duplicate Task completion" not in log.read_text()
