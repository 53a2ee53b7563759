"""Event-driven ingest checks shared by the Azurite + pgSTAC and the local-directory + static-catalog
test modules: the real function_app on the embedded runtime, its Event Grid emulation watching a
container, and the catalog read back through the app's own catalog backend."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from raster_factory import write_raster

CONTAINER = "events"


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout:.0f}s")


def catalog_etags() -> dict[str, str | None]:
    """Item id → source ETag of the events container's default collection."""
    import activities
    import stac_ops

    collection = stac_ops.default_collection_id(CONTAINER)
    cat = activities.catalog()
    if cat.get_collection(collection) is None:
        return {}
    return cat.list_item_etags(collection)


def item_id(name: str) -> str:
    import stac_ops

    return stac_ops.item_id_for_blob(CONTAINER, name)


def ingest_jobs(runtime, name: str | None = None) -> list[dict]:
    """The ingest_blob jobs (of one blob when ``name`` is given), from the runtime's own record."""
    import json

    page = runtime.list_instances(instance_id_prefix="ingest_blob-", page_size=None).instances
    jobs = [runtime.get_status(i["instanceId"]) for i in page if ":" not in i["instanceId"]]  # not their chunks
    for job in jobs:
        while isinstance(job.get("input"), str):  # the SDK client's input is JSON in a JSON string
            job["input"] = json.loads(job["input"])
    return [j for j in jobs if name is None or (j.get("input") or {}).get("blob") == name]


def sample_raster(tmp: Path, seed: int = 0) -> Path:
    return write_raster(tmp / f"r{seed}.tif", width=64, height=64, count=1, crs="EPSG:32633", seed=seed)


def check_create_overwrite_delete(runtime, store, tmp: Path) -> None:
    store.upload_from_path(CONTAINER, "one.tif", sample_raster(tmp, 1))
    first = store.get_properties(CONTAINER, "one.tif").etag
    started = time.monotonic()
    wait_until(lambda: catalog_etags().get(item_id("one.tif")) == first, timeout=10, what="the item of an upload")
    created_in = time.monotonic() - started
    store.upload_from_path(CONTAINER, "one.tif", sample_raster(tmp, 2))
    second = store.get_properties(CONTAINER, "one.tif").etag
    assert second != first
    wait_until(lambda: catalog_etags().get(item_id("one.tif")) == second, timeout=10, what="the overwrite's item")
    wait_until(lambda: all(j["runtimeStatus"] == "Completed" for j in ingest_jobs(runtime, "one.tif")),
               timeout=10, what="the jobs of one.tif")
    versions = [j["input"]["version"] for j in ingest_jobs(runtime, "one.tif")]
    assert sorted(versions) == sorted([first, second]), versions  # one job per version: updated once
    store.delete(CONTAINER, "one.tif")
    wait_until(lambda: item_id("one.tif") not in catalog_etags(), timeout=10, what="the deleted blob's item gone")
    assert created_in < 10


def check_burst(runtime, store, tmp: Path, count: int = 300) -> None:
    source = sample_raster(tmp, 7)
    names = [f"burst/b{i:03d}.tif" for i in range(count)]
    for name in names:
        store.upload_from_path(CONTAINER, name, source)
    expected = {item_id(n) for n in names}
    wait_until(lambda: expected <= set(catalog_etags()), timeout=600, interval=1, what=f"{count} items")
    wait_until(lambda: all(j["runtimeStatus"] == "Completed" for j in ingest_jobs(runtime)), timeout=300,
               what="every ingest job completed")
    per_blob: dict[str, int] = {}
    for job in ingest_jobs(runtime):
        per_blob[job["input"]["blob"]] = per_blob.get(job["input"]["blob"], 0) + 1
    assert all(per_blob.get(n) == 1 for n in names), {n: per_blob.get(n) for n in names if per_blob.get(n) != 1}


def check_duplicate_event_is_one_job(runtime, store, tmp: Path) -> None:
    from local_triggers import BLOB_CREATED, blob_event

    store.upload_from_path(CONTAINER, "dup.tif", sample_raster(tmp, 3))
    wait_until(lambda: item_id("dup.tif") in catalog_etags(), timeout=10, what="the item")
    wait_until(lambda: all(j["runtimeStatus"] == "Completed" for j in ingest_jobs(runtime, "dup.tif")),
               timeout=10, what="the job")
    props = store.get_properties(CONTAINER, "dup.tif")
    import datetime as dt

    event = blob_event(BLOB_CREATED, CONTAINER, "dup.tif", etag=props.etag, size=props.size,
                       content_type="image/tiff", account="devstoreaccount1", url=store.url(CONTAINER, "dup.tif"),
                       sequencer=10**9, when=dt.datetime.now(dt.timezone.utc))
    function = runtime.index.event_grid["blob_events"]
    triggers = runtime.event_source.triggers
    for _ in range(2):
        runtime.run_coroutine(triggers.deliver_event(function, {**event, "id": "redelivered"}))
    time.sleep(0.5)
    assert len(ingest_jobs(runtime, "dup.tif")) == 1


def check_next_sync_plans_nothing(runtime) -> None:
    from http_client import http

    code, started = http("POST", f"{runtime.base_url}/api/jobs/sync_container",
                         {"container": CONTAINER, "dry_run": True})
    assert code == 202, started
    status = runtime.wait_for(started["id"], timeout=120)
    counts = status["output"]["detail"]["plan"]["counts"]
    assert counts["added"] == 0 and counts["changed"] == 0 and counts["removed"] == 0, counts
