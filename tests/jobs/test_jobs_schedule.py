"""Scheduled incremental sync (timer ticks fired by the test) and per-operation job metrics."""
from __future__ import annotations

import math

import psycopg
import pytest

from models import DURATION_BOUNDS
from raster_factory import write_raster

SYNC_ID = "sync_container-watched"


@pytest.fixture(scope="module")
def watched(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watched")
    store.create_container("watched")
    for i in range(60):
        path = write_raster(tmp / f"w{i:02d}.tif", width=48, height=48, crs="EPSG:4326",
                            bounds=(i, 10, i + 0.5, 10.5), seed=i)
        store.upload_from_path("watched", f"w{i:02d}.tif", path)
    return tmp


def items(dsn):
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT id, content->'properties'->>'rmh:source_etag' FROM pgstac.items "
                                 "WHERE collection = 'watched'").fetchall())


def tick(host):
    host.runtime.fire_timer("scheduled_sync")
    return host.wait(SYNC_ID)


def test_first_tick_syncs_the_configured_container(host, watched, pgstac_dsn):
    status = tick(host)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"]["done"] == 60
    assert len(items(pgstac_dsn)) == 60


def test_second_tick_with_nothing_changed_catalogs_nothing(host, watched, pgstac_dsn):
    before = items(pgstac_dsn)
    status = tick(host)
    counts = status["output"]["detail"]["plan"]["counts"]
    assert counts == {"added": 0, "changed": 0, "removed": 0, "unchanged": 60, "ignored": 0}
    output = status["output"]
    assert (output["total"], output["skipped"], output["done"], output["failed"]) == (60, 60, 0, 0)
    assert status["customStatus"]["done"] == status["customStatus"]["total"] == 60
    assert items(pgstac_dsn) == before


def test_dry_run_plan_is_what_the_next_tick_does(host, watched, store, pgstac_dsn):
    with store.downloaded("watched", "w05.tif") as path:
        store.upload_from_path("watched", "w05.tif", path)  # overwritten: new ETag
    store.delete("watched", "w07.tif")
    before = items(pgstac_dsn)
    dry = host.run("sync_container", {"container": "watched", "dry_run": True})
    plan = dry["output"]["detail"]["plan"]
    assert plan["counts"] == {"added": 0, "changed": 1, "removed": 1, "unchanged": 58, "ignored": 0}
    assert plan["changed"] == ["w05.tif"] and plan["removed"] == ["watched~w07.tif"]
    assert items(pgstac_dsn) == before  # the dry run wrote nothing
    status = tick(host)
    real = status["output"]["detail"]["plan"]
    assert {k: real[k] for k in ("counts", "changed", "removed")} == \
        {k: plan[k] for k in ("counts", "changed", "removed")}
    assert status["output"]["done"] == 1 and status["output"]["detail"]["removed"] == 1
    after = items(pgstac_dsn)
    assert len(after) == 59 and "watched~w07.tif" not in after
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"watched~w05.tif"}


def test_tick_while_sync_runs_starts_nothing_and_manual_sync_is_refused(host, watched, store, tmp_path):
    for i in range(60, 110):
        path = write_raster(tmp_path / f"w{i}.tif", width=48, height=48, crs="EPSG:4326",
                            bounds=(i - 60, 20, i - 59.5, 20.5), seed=i)
        store.upload_from_path("watched", f"w{i}.tif", path)
    host.runtime.fire_timer("scheduled_sync")
    code, first = host.get(f"/api/jobs/{SYNC_ID}")
    host.runtime.fire_timer("scheduled_sync")  # the previous sync still runs: nothing starts
    code, refused = host.submit("sync_container", {"container": "watched"})
    assert code == 409, refused
    assert refused["id"] == SYNC_ID and f"/instances/{SYNC_ID}?" in refused["statusQueryGetUri"]
    status = host.wait(SYNC_ID)
    assert status["createdTime"] == first["createdTime"]
    assert status["output"]["done"] == 50


def _percentile(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def _bucket(value):
    bounds = list(DURATION_BOUNDS) + [math.inf]
    return next(i for i, b in enumerate(bounds) if value <= b)


def test_metrics_count_outcomes_and_report_percentiles(host, watched, store, shared_rasters):
    store.upload_from_path("watched", "extra/corrupt.tif", shared_rasters / "corrupt.tif")
    jobs = [host.run("validate_raster", {"container": "watched", "blob": f"w{i:02d}.tif"}) for i in (1, 2)]
    jobs.append(host.run("validate_raster", {"container": "watched", "blob": "extra/corrupt.tif"}))
    catalogued = [host.run("catalog_file", {"container": "watched", "blob": f"w{i:02d}.tif",
                                            "collection": "metrics"}) for i in range(10, 16)]
    # The job API refuses a missing container at submission (404); started directly, past that
    # check, the job fails, and the metrics count it.
    code, refused = host.submit("list_container", {"container": "no-such-container"})
    assert code == 404 and "no-such-container" in refused["error"]
    failed_id = host.runtime.start_new("list_container", {"container": "no-such-container", "prefix": ""},
                                       instance_id="list_container-missing")
    failed = host.runtime.wait_for(failed_id, timeout=120)
    assert failed["runtimeStatus"] == "Failed"
    code, body = host.get("/api/metrics")
    assert code == 200
    ops = body["operations"]
    assert ops["validate_raster"]["jobs"] == {"started": 3, "completed": 2, "completed_with_errors": 1,
                                              "failed": 0, "running": 0}
    assert ops["list_container"]["jobs"]["failed"] == 1
    assert ops["catalog_file"]["jobs"]["completed"] == 6
    assert ops["sync_container"]["jobs"]["started"] >= 4
    job_seconds = [j["output"]["seconds"] for j in catalogued]
    task_seconds = []
    for job in catalogued:
        code, tasks = host.get(f"/api/jobs/{job['instanceId']}/tasks")
        task_seconds += [t["work_seconds"] for t in tasks["tasks"]]
    assert len(task_seconds) == 6
    for q in (50, 95, 99):
        for raw, reported in ((job_seconds, ops["catalog_file"]["job_seconds"]),
                              (task_seconds, ops["catalog_file"]["task_seconds"])):
            assert abs(_bucket(reported[f"p{q}"]) - _bucket(_percentile(raw, q))) <= 1, (q, raw, reported)
