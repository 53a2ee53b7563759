"""Change events on one machine (local directory + static catalog): the app delivers them to the
webhook URLs the operator configured (RMH_EVENT_WEBHOOKS) as CloudEvents batches, each change once
per id, from the static catalog's journal; a ``kill -9`` of ``cli.py serve`` in a burst loses none."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import change_events
from event_receivers import Webhook, per_id
from events import wait_until
from http_client import http
from raster_factory import write_raster
from services import applied_local_env, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def webhook():
    receiver = Webhook().start()
    yield receiver
    receiver.stop()


def local_env(root: Path, webhook: Webhook) -> dict[str, str]:
    return {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
            "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
            "RMH_TEMP_DIR": str(root / "work"), "RMH_EVENT_WEBHOOKS": webhook.url,
            "RMH_EVENT_DRAIN_SCHEDULE": "*/2 * * * * *"}


@pytest.fixture(scope="module")
def service_env(tmp_path_factory, webhook):
    yield from applied_local_env(local_env(tmp_path_factory.mktemp("events-local"), webhook))


def of_collection(events: list[dict], collection: str) -> list[dict]:
    return [e for e in events if e["data"]["collection"] == collection]


def test_webhooks_get_each_change_once(host, store, webhook, tmp_path):
    import stac_ops

    store.create_container("hooked")
    source = write_raster(tmp_path / "h.tif", width=48, height=48, crs="EPSG:4326", bounds=(0, 0, 0.5, 0.5))
    names = [f"h/{i:03d}.tif" for i in range(100)]
    for name in names:
        store.upload_from_path("hooked", name, source)
    status = host.run("sync_container", {"container": "hooked"})
    assert status["output"]["done"] == 100, status["output"]
    collection = stac_ops.default_collection_id("hooked")
    webhook.wait_for(lambda all_: len(of_collection(all_, collection)) >= 100, 60, "100 events")
    for name in names[:3]:
        store.delete("hooked", name)
    host.run("sync_container", {"container": "hooked", "rerun": True})
    events = webhook.wait_for(lambda all_: (lambda mine: mine if len(mine) >= 103 else None)(
        of_collection(all_, collection)), 60, "the deletion events")
    assert set(per_id(events).values()) == {1} and len(events) == 103
    kinds = [change_events.change_of(e).value for e in events]
    assert kinds.count("created") == 100 and kinds.count("deleted") == 3
    assert {e["data"]["id"] for e in events if e["type"].endswith("deleted")} == {
        stac_ops.item_id_for_blob("hooked", n) for n in names[:3]}
    assert webhook.violations == []
    catalog = Path(os.environ["RMH_STATIC_CATALOG_DIR"])
    assert not list((catalog / ".events").rglob("*.json"))  # the journal is empty once delivered


def _serve(root: Path, port: int, webhook: Webhook) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RMH_")}, **local_env(root, webhook)}
    return subprocess.Popen([sys.executable, "cli.py", "serve", "--port", str(port), "--state", str(root / "state"),
                             "--no-events"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)


def _ready(proc: subprocess.Popen) -> None:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("listening on"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return
    raise AssertionError(f"the host exited: {''.join(seen[-20:])}")


def test_kill_9_of_the_local_host_mid_burst_loses_no_event(webhook, tmp_path):
    import stac_ops
    from storage import LocalDirStore

    root = tmp_path / "host"
    store = LocalDirStore(root / "storage")
    store.create_container("killed")
    source = write_raster(tmp_path / "k.tif", width=48, height=48, crs="EPSG:4326", bounds=(0, 0, 0.5, 0.5))
    names = [f"k/{i:03d}.tif" for i in range(150)]
    for name in names:
        store.upload_from_path("killed", name, source)
    collection = stac_ops.default_collection_id("killed")
    port = free_port()
    proc = _serve(root, port, webhook)
    try:
        _ready(proc)
        code, started = http("POST", f"http://127.0.0.1:{port}/api/jobs/sync_container",
                             {"container": "killed", "chunk_size": 10})
        assert code == 202, started
        webhook.wait_for(lambda all_: len(of_collection(all_, collection)) >= 20, 180, "20 events")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed_with = len(of_collection(list(webhook.events), collection))
        proc = _serve(root, port, webhook)
        _ready(proc)
        events = webhook.wait_for(lambda all_: (lambda mine: mine if len({e["data"]["id"] for e in mine}) >= 150
                                                else None)(of_collection(all_, collection)), 300, "150 items' events")
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/api/jobs/{started['id']}")[1].get("runtimeStatus")
                   == "Completed", timeout=120, what="the sync")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    by_item: dict[str, set[str]] = {}
    for event in of_collection(list(webhook.events), collection):
        by_item.setdefault(event["data"]["id"], set()).add(event["id"])
    assert set(by_item) == {stac_ops.item_id_for_blob("killed", n) for n in names}
    assert all(len(ids) == 1 for ids in by_item.values()), "a change announced under two ids"
    assert killed_with < len(names), "the kill came after the burst"
    print(f"killed with {killed_with} of {len(names)} events delivered, then {len(events)} deliveries")
