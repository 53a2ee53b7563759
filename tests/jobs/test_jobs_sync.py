"""sync_container over a container of 300 files, including every real raster, a zero-byte file and
a text file named .tif: bad files are listed with their reason, good ones cataloged exactly once,
progress visible while it runs; then the job API around it: tasks, dedupe, retry, list."""
from __future__ import annotations

import time

import psycopg
import pytest

from raster_factory import write_raster

BAD = {"float.tif", "float_nan.tif", "rotated.tif", "389225main_sw_1965_1024.jpg", "corrupt.tif",
       "empty.tif", "text.tif"}


@pytest.fixture(scope="module")
def syncbox(store, shared_rasters, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("syncbox")
    store.create_container("syncbox")
    names = []
    for path in sorted(shared_rasters.iterdir()):
        store.upload_from_path("syncbox", f"real/{path.name}", path)
        names.append(path.name)
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "text.tif").write_text("this is not a raster\n")
    for name in ("empty.tif", "text.tif"):
        store.upload_from_path("syncbox", f"bad/{name}", tmp / name)
    rasters = sum(1 for n in names if not n.endswith(".md")) + 2
    for i in range(300 - rasters):
        path = write_raster(tmp / f"s{i:03d}.tif", width=32, height=32, crs="EPSG:4326",
                            bounds=(i % 36 * 10 - 180, -80 + i // 36 * 10, i % 36 * 10 - 179, -79 + i // 36 * 10),
                            seed=i)
        store.upload_from_path("syncbox", f"synthetic/s{i:03d}.tif", path)
    return 300


def item_counts(dsn, collection):
    with psycopg.connect(dsn) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT id) FROM pgstac.items WHERE collection = %s", (collection,)).fetchone()
    return total, distinct


def test_sync_completes_with_errors_listing_each_bad_file(host, syncbox, pgstac_dsn):
    code, started = host.submit("sync_container", {"container": "syncbox", "chunk_size": 40})
    assert code == 202, started
    seen = []
    status = host.follow(started["statusQueryGetUri"], timeout=300,
                         on_poll=lambda s: seen.append((s or {}).get("customStatus")))
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert output["completed_with_errors"] is True
    assert output["total"] == 300 and output["failed"] == len(BAD) and output["done"] == 300 - len(BAD)
    failures = {f["name"].rsplit("/", 1)[1]: f for f in output["failures"]}
    assert set(failures) == BAD
    assert all(f["reason"] and f["error"] for f in failures.values())
    assert failures["corrupt.tif"]["error"] == "UnreadableRaster"
    assert failures["389225main_sw_1965_1024.jpg"]["error"] in ("MissingCRS", "UnsupportedFormat")
    assert failures["empty.tif"]["error"] == "EmptyFile", failures
    assert sum(output["failure_reasons"].values()) == len(BAD)
    assert output["detail"]["plan"]["counts"]["ignored"] == 1  # README.md
    assert item_counts(pgstac_dsn, "syncbox") == (300 - len(BAD), 300 - len(BAD))
    running = [p for p in seen if p and p.get("stage") == "cataloging" and p["done"] + p["failed"] < p["total"]]
    assert running, f"no progress seen while running: {seen[:5]}"
    assert max(len(str(p)) for p in seen if p) < 1024


def test_resubmitting_a_finished_sync_returns_its_result(host, syncbox):
    code, body = host.submit("sync_container", {"container": "syncbox", "chunk_size": 40})
    assert code == 200 and body["runtimeStatus"] == "Completed"


def test_second_sync_catalogs_nothing_new(host, syncbox, pgstac_dsn):
    status = host.run("sync_container", {"container": "syncbox", "chunk_size": 40, "rerun": True})
    plan = status["output"]["detail"]["plan"]["counts"]
    assert plan["unchanged"] == 300 - len(BAD)
    assert plan["added"] == len(BAD) and status["output"]["failed"] == len(BAD)  # the bad ones are tried again
    assert item_counts(pgstac_dsn, "syncbox") == (300 - len(BAD), 300 - len(BAD))


def test_tasks_endpoint_lists_files_with_status(host, syncbox):
    instance_id = "sync_container-syncbox"
    code, page = host.get(f"/api/jobs/{instance_id}/tasks?status=failed&top=5")
    assert code == 200, page
    assert page["total"] == len(BAD) and len(page["tasks"]) == 5
    task = page["tasks"][0]
    assert task["activity"] == "catalog_blob" and task["error"] and task["seconds"] is not None
    code, page = host.get(f"/api/jobs/{instance_id}/tasks?top=1000")
    assert page["total"] == len(BAD)  # the second run only redid the files that had failed


def test_dry_run_reports_the_plan_and_writes_nothing(host, syncbox, store, pgstac_dsn, tmp_path):
    with store.downloaded("syncbox", "synthetic/s000.tif") as path:
        store.upload_from_path("syncbox", "synthetic/s000.tif", path)  # same bytes, new ETag
    status = host.run("sync_container", {"container": "syncbox", "dry_run": True})
    counts = status["output"]["detail"]["plan"]["counts"]
    assert counts["changed"] == 1 and status["output"]["total"] == 0
    assert item_counts(pgstac_dsn, "syncbox") == (300 - len(BAD), 300 - len(BAD))


def test_list_jobs_filters_by_operation_and_status(host, syncbox):
    code, body = host.get("/api/jobs?operation=sync_container")
    assert code == 200 and body["count"] >= 2
    assert all(j["operation"] == "sync_container" for j in body["jobs"])
    # No sync failed outright; those with failed files completed with errors, which ?status=failed
    # lists too, and ?status=completed_with_errors lists alone.
    partly = {j["instanceId"] for j in body["jobs"] if j["runtimeStatus"] == "Completed"
              and j["output"].get("completed_with_errors")}
    assert partly, [j["output"].get("failed") for j in body["jobs"]]
    code, failed = host.get("/api/jobs?status=failed&operation=sync_container")
    assert code == 200 and {j["instanceId"] for j in failed["jobs"]} == partly, failed
    code, with_errors = host.get("/api/jobs?status=completed_with_errors&operation=sync_container")
    assert code == 200 and {j["instanceId"] for j in with_errors["jobs"]} == partly, with_errors
    code, either = host.get("/api/jobs?status=running,completed_with_errors&operation=sync_container")
    assert code == 200 and partly <= {j["instanceId"] for j in either["jobs"]}
    assert all(j["runtimeStatus"] != "Completed" or j["instanceId"] in partly for j in either["jobs"])
    code, completed = host.get("/api/jobs?status=completed&operation=sync_container")
    assert code == 200 and partly <= {j["instanceId"] for j in completed["jobs"]}, "completed is the runtime status"
    created = [j["createdTime"] for j in body["jobs"]]
    assert created == sorted(created, reverse=True), "newest first"
    code, body = host.get("/api/jobs?status=exploded")
    assert code == 400 and {"failed", "completed_with_errors", "running"} <= set(body["known_statuses"])


def test_progress_of_one_large_chunk_advances_as_its_files_finish(host, syncbox):
    """300 files in one chunk: the job's own status moves only when the chunk ends, but GET
    /api/jobs/{id} adds the files the chunk has finished, counted from its history as they
    finish (the chunk itself reports nothing until it ends)."""
    code, started = host.submit("sync_container", {"container": "syncbox", "chunk_size": 300, "mode": "full",
                                                   "rerun": True})
    assert code == 202, started
    seen, listed, running_at = [], [], []
    while True:
        code, status = host.get(f"/api/jobs/{started['id']}")
        assert code == 200, status
        if status["runtimeStatus"] not in ("Running", "Pending"):
            break
        if isinstance(status.get("customStatus"), dict) and status["customStatus"]["stage"] == "cataloging":
            seen.append(status["customStatus"]["done"] + status["customStatus"]["failed"])
            if 0 < seen[-1] < 300:
                running_at.append(time.monotonic())
        code, jobs = host.get("/api/jobs?operation=sync_container&status=running")  # the dashboard's list
        listed += [j["customStatus"]["done"] for j in jobs["jobs"]
                   if j["instanceId"] == started["id"] and isinstance(j.get("customStatus"), dict)]
        time.sleep(0.01)
    assert status["runtimeStatus"] == "Completed" and status["output"]["total"] == 300
    assert any(0 < n < 300 for n in listed), listed[-10:]  # the listing counts running chunks' files too
    running = {n for n in seen if 0 < n < 300}
    # a chunk's history is read at most twice a second (and not trusted within the second of its
    # last update): a new count at least every second the files ran, 5 once they run 4 s or more
    ran = running_at[-1] - running_at[0] if running_at else 0.0
    assert len(running) >= max(3, min(5, int(ran) + 1)), (round(ran, 2), sorted(running), seen[-10:])
    assert any(n % 3 for n in running), running  # per file, not per 1% of the job (3 files)
    assert seen == sorted(seen)
