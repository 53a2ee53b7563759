"""Outages are ridden out: blob storage (Azurite) stopped for 60 s in the middle of a sync and of a
conversion, and PostgreSQL stopped for 60 s in the middle of a sync. Every job completes with every
file done, none failed, none cataloged twice, and no file is reported as a bad raster.

This module runs its own Azurite and PostgreSQL, which it stops and starts again on the same port
and data (the session's services stay untouched)."""
from __future__ import annotations

import time

import psycopg
import pytest

from raster_factory import write_raster

OUTAGE_SECONDS = 60.0


@pytest.fixture(scope="module")
def azurite_server():
    from services import Azurite

    server = Azurite().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def azurite_connection_string(azurite_server):
    return azurite_server.connection_string


@pytest.fixture(scope="module")
def pg_server():
    from services import PgStac

    server = PgStac(dbname="outages").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pgstac_dsn(pg_server):
    return pg_server.dsn


@pytest.fixture(scope="module")
def files(store, tmp_path_factory):
    """120 small GeoTIFFs for each sync, 24 for the conversion."""
    tmp = tmp_path_factory.mktemp("outage-inputs")
    source = write_raster(tmp / "src.tif", width=96, height=96, count=1, crs="EPSG:32633")
    for container, count in (("sync-a", 120), ("sync-b", 120), ("convert", 24)):
        store.create_container(container)
        for i in range(count):
            store.upload_from_path(container, f"f{i:03d}.tif", source)
    return source


FILE_ACTIVITIES = {"catalog_blob", "convert_blob"}


def _files_done(host, instance_id: str) -> int:
    """Per-file tasks finished so far, read from the job's histories (its chunks included)."""
    code, body = host.get(f"/api/jobs/{instance_id}/tasks?top=5000")
    if code != 200:
        return 0
    return sum(1 for t in body["tasks"] if t["activity"] in FILE_ACTIVITIES and t["status"] != "running")


def _outage_when_started(service, host, instance_ids: list[str], seconds: float) -> dict:
    """Stop ``service`` as soon as every job has finished a few of its files (so most of them
    meet the outage), for ``seconds``; returns when it stopped and started again."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [_files_done(host, i) for i in instance_ids]
        if all(d >= 3 for d in done):
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"jobs did not start: {instance_ids}")
    service.pause()
    states = [host.get(f"/api/jobs/{i}")[1]["runtimeStatus"] for i in instance_ids]
    assert all(s == "Running" for s in states), ("a job finished before the outage", states)
    stopped = time.monotonic()
    time.sleep(seconds)
    service.resume()
    return {"down_seconds": time.monotonic() - stopped, "done_before": done}


def _items(dsn: str, collection: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT id FROM pgstac.items WHERE collection = %s", (collection,))]


def _assert_all_done(status: dict, total: int) -> None:
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert output["failed"] == 0, output["failures"][:5]
    assert output["done"] == total and output["total"] == total, output


def test_storage_outage_during_a_sync(host, files, azurite_server, pgstac_dsn):
    code, sync = host.submit("sync_container", {"container": "sync-a", "collection": "outage-a", "chunk_size": 20})
    assert code == 202, sync
    outage = _outage_when_started(azurite_server, host, [sync["id"]], OUTAGE_SECONDS)
    assert outage["down_seconds"] >= OUTAGE_SECONDS and outage["done_before"][0] < 30, outage
    _assert_all_done(host.follow(sync["statusQueryGetUri"], timeout=900), 120)
    items = _items(pgstac_dsn, "outage-a")
    assert len(items) == len(set(items)) == 120


def test_storage_outage_during_a_conversion(host, files, azurite_server, pgstac_dsn, store):
    code, convert = host.submit("cog_conversion", {"container": "convert", "prefix": "", "chunk_size": 8,
                                                   "output_container": "converted", "collection": "outage-c"})
    assert code == 202, convert
    outage = _outage_when_started(azurite_server, host, [convert["id"]], OUTAGE_SECONDS)
    assert outage["down_seconds"] >= OUTAGE_SECONDS and outage["done_before"][0] < 12, outage
    _assert_all_done(host.follow(convert["statusQueryGetUri"], timeout=900), 24)
    assert len(_items(pgstac_dsn, "outage-c")) == 24
    names = [b.name for b in store.iter_blobs("converted")]
    assert len([n for n in names if n.endswith(".tif")]) == 24  # each COG once
    assert len([n for n in names if n.endswith(".thumbnail.png")]) == 24 == len(names) / 2  # and its thumbnail


def test_database_outage_during_a_sync(host, files, pg_server, pgstac_dsn):
    code, sync = host.submit("sync_container", {"container": "sync-b", "collection": "outage-b", "chunk_size": 20})
    assert code == 202, sync
    outage = _outage_when_started(pg_server, host, [sync["id"]], OUTAGE_SECONDS)
    assert outage["down_seconds"] >= OUTAGE_SECONDS and outage["done_before"][0] < 30, outage
    _assert_all_done(host.follow(sync["statusQueryGetUri"], timeout=900), 120)
    assert len(_items(pgstac_dsn, "outage-b")) == 120
