"""A host killed with SIGKILL in the middle of a burst of 300 catalog changes (a sync) and
restarted on the same task hub delivers an event for every change, each change under one event id
(a batch in flight at the kill may arrive twice, with the same ids): the outbox is written in the
catalog's transaction, so nothing committed is lost and nothing rolled back is announced."""
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
from event_receivers import EventGridTopic, IdentityEndpoint, per_id
from http_client import http
from raster_factory import write_raster

pytestmark = pytest.mark.services
FILES = 300


def start_host(db: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """The app on the embedded runtime in a process of its own (worker processes for activities)."""
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "local_runtime.py"), "serve", "--app", "function_app:app",
         "--db", str(db), "--port", "0", "--workers", "2"],
        cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
    line = process.stdout.readline()
    assert line.startswith("listening on "), (line, log.read_text()[-2000:])
    return process, line.split()[-1]


def wait(base: str, instance_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        code, status = http("GET", f"{base}/api/jobs/{instance_id}")
        if status and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{instance_id} not finished: {status}")


def outbox_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('public.rmh_outbox')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM public.rmh_outbox").fetchone()[0]


@pytest.fixture(scope="module")
def topic(tmp_path_factory):
    receiver = EventGridTopic(tmp_path_factory.mktemp("topic")).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def identity():
    endpoint = IdentityEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def burst(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("burst")
    store.create_container("ev-crash")
    for i in range(FILES):
        path = write_raster(tmp / f"k{i:03d}.tif", width=48, height=48, crs="EPSG:4326",
                            bounds=(i % 30, i // 30, i % 30 + 0.5, i // 30 + 0.5), seed=i)
        store.upload_from_path("ev-crash", f"k{i:03d}.tif", path)


def test_kill_9_mid_burst_loses_no_event(service_env, burst, topic, identity, pgstac_dsn, tmp_path):
    import stac_ops

    env = {**os.environ, **service_env, "RMH_EVENT_GRID_ENDPOINT": topic.endpoint,
           "RMH_EVENT_DRAIN_SCHEDULE": "*/2 * * * * *", "REQUESTS_CA_BUNDLE": str(topic.cert), **identity.env}
    db, log = tmp_path / "hub.sqlite", tmp_path / "host.log"
    collection = stac_ops.default_collection_id("ev-crash")
    process, base = start_host(db, env, log)
    topic.fail_next(10**6)  # the topic is down: committed changes wait in the outbox at the kill
    try:
        code, started = http("POST", f"{base}/api/jobs/sync_container", {"container": "ev-crash", "chunk_size": 10})
        assert code == 202, started
        deadline = time.monotonic() + 180
        while outbox_rows(pgstac_dsn) < 40:
            assert time.monotonic() < deadline, outbox_rows(pgstac_dsn)
            time.sleep(0.02)
        running = http("GET", f"{base}/api/jobs/{started['id']}")[1]["runtimeStatus"]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    killed_with, waiting = len(topic.events), outbox_rows(pgstac_dsn)  # waiting: the restart's to send
    assert running == "Running" and 0 < waiting < FILES, (running, waiting)
    topic.fail_next(0)
    process, base = start_host(db, env, log)
    try:
        status = wait(base, started["id"], timeout=300)
        events = topic.wait_for(lambda all_: all_ if len({e["data"]["id"] for e in all_}) >= FILES else None,
                                180, f"events for all {FILES} items")
        time.sleep(4)  # two drain ticks: whatever else was pending arrives now
        events = list(topic.events)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == FILES, status
    expected = {stac_ops.item_id_for_blob("ev-crash", f"k{i:03d}.tif") for i in range(FILES)}
    by_item: dict[str, set[str]] = {}
    for event in events:
        assert event["data"]["collection"] == collection and event["type"] == "org.rmhgeoapi.item.created"
        by_item.setdefault(event["data"]["id"], set()).add(event["id"])
    assert set(by_item) == expected  # none lost
    assert all(len(ids) == 1 for ids in by_item.values()), "a change announced under two ids"
    deliveries = per_id(events)
    assert len(deliveries) == FILES and sum(deliveries.values()) >= FILES
    assert topic.violations == []
    with psycopg.connect(pgstac_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.rmh_outbox").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s",
                            (collection,)).fetchone()[0] == FILES
    print(f"killed with {killed_with} of {FILES} events delivered and {waiting} in the outbox; after the restart "
          f"{sum(deliveries.values())} deliveries of {len(deliveries)} distinct events")
