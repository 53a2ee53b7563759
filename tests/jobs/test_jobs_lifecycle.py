"""The job API around running jobs: dedupe (409 while running, 200 after, rerun), retry that redoes
only what failed, terminate, health."""
from __future__ import annotations

import time

import pytest

from raster_factory import write_raster


@pytest.fixture(scope="module")
def batch(store, tmp_path_factory):
    """Eight small rasters and one without a CRS, in their own container."""
    tmp = tmp_path_factory.mktemp("batch")
    store.create_container("batch")
    names = []
    for i in range(8):
        path = write_raster(tmp / f"b{i}.tif", width=300, height=200, count=3, crs="EPSG:32633", seed=i)
        store.upload_from_path("batch", f"in/b{i}.tif", path)
        names.append(f"in/b{i}.tif")
    write_raster(tmp / "nocrs.tif", width=64, height=64, crs=None)
    store.upload_from_path("batch", "in/nocrs.tif", tmp / "nocrs.tif")
    return names + ["in/nocrs.tif"]


def test_same_request_is_deduplicated(host, batch):
    body = {"container": "batch", "blobs": batch[:8], "output_container": "dedupe", "catalog": False}
    code, first = host.submit("cog_conversion", body)
    assert code == 202
    code, second = host.submit("cog_conversion", body)
    assert code == 409, second
    assert second["id"] == first["id"] and second["statusQueryGetUri"] == first["statusQueryGetUri"]
    status = host.follow(first["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed"
    code, done = host.submit("cog_conversion", body)
    assert code == 200 and done["output"]["done"] == 8
    code, again = host.submit("cog_conversion", {**body, "rerun": True})
    assert code == 202 and again["id"] == first["id"]
    rerun = host.follow(again["statusQueryGetUri"])
    assert rerun["output"]["skipped"] == 8  # outputs exist for the same source ETags: reused


def test_retry_redoes_only_the_failed_items(host, batch, store, tmp_path):
    body = {"container": "batch", "blobs": batch, "output_container": "retried", "catalog": False}
    status = host.run("cog_conversion", body)
    output = status["output"]
    assert output["completed_with_errors"] and [f["name"] for f in output["failures"]] == ["in/nocrs.tif"]
    etags = {b.name: b.etag for b in store.iter_blobs("retried")}
    assert len(etags) == 8
    write_raster(tmp_path / "fixed.tif", width=64, height=64, crs="EPSG:4326")
    store.upload_from_path("batch", "in/nocrs.tif", tmp_path / "fixed.tif")  # the user fixes the file
    code, started = host.post(f"/api/jobs/{status['instanceId']}/retry")
    assert code == 202, started
    retried = host.follow(started["statusQueryGetUri"])
    assert retried["runtimeStatus"] == "Completed" and not retried["output"]["completed_with_errors"], retried["output"]["failures"]
    code, tasks = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=100")
    converted = [t for t in tasks["tasks"] if t["activity"] == "convert_blob"]
    assert [t["name"] for t in converted] == ["in/nocrs.tif"]  # one execution, the failed item
    after = {b.name: b.etag for b in store.iter_blobs("retried")}
    assert len(after) == 9 and all(after[name] == etag for name, etag in etags.items())


def test_retry_of_a_clean_job_is_refused(host, batch):
    status = host.run("hello_world", {"count": 2, "name": "retry"})
    code, body = host.post(f"/api/jobs/{status['instanceId']}/retry")
    assert code == 409 and "nothing to retry" in body["error"]
    code, body = host.post("/api/jobs/no-such-job/retry")
    assert code == 404


def test_terminate_a_running_job(host, batch):
    code, started = host.submit("cog_conversion", {"container": "batch", "blobs": batch[:8],
                                                   "output_container": "stopped", "catalog": False,
                                                   "profile": "zstd"})
    assert code == 202
    code, body = host.post(f"/api/jobs/{started['id']}/terminate")
    assert code == 202, body
    status = host.follow(started["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Terminated"
    code, body = host.post(f"/api/jobs/{started['id']}/terminate")
    assert code == 409


def test_stale_filter_finds_a_job_without_progress(host, batch):
    code, started = host.submit("cog_conversion", {"container": "batch", "blobs": batch[:8],
                                                   "output_container": "stale", "catalog": False})
    assert code == 202
    host.runtime.suspend(started["id"], "stuck on purpose")
    time.sleep(1.5)
    code, body = host.get("/api/jobs?stale_minutes=0.02")
    assert code == 200 and started["id"] in [j["instanceId"] for j in body["jobs"]]
    code, body = host.get("/api/jobs?stale_minutes=60")
    assert started["id"] not in [j["instanceId"] for j in body["jobs"]]
    host.runtime.resume(started["id"], "unstuck")
    assert host.follow(started["statusQueryGetUri"])["runtimeStatus"] == "Completed"


def test_cli_submits_and_watches_against_a_running_host(host, capsys):
    import io

    import cli

    out = io.StringIO()
    code = cli.main(["--url", host.url, "submit", "hello_world", "name=cli", "count=2", "--watch"], out=out)
    assert code == 0, out.getvalue()
    assert "Hello cli #2" in out.getvalue() and "Completed" in out.getvalue()
    out = io.StringIO()
    assert cli.main(["--url", host.url, "submit", "make_coffee"], out=out) == 2
    assert "known operations" in capsys.readouterr().err


def test_bad_query_parameters_are_400(host):
    status = host.run("hello_world", {"count": 1, "name": "query"})
    code, body = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=lots")
    assert code == 400 and "'top' must be an integer" in body["error"]
    code, body = host.get("/api/jobs?stale_minutes=-1")
    assert code == 400 and "between 0 and" in body["error"]
    code, body = host.get("/api/jobs/no-such-job")
    assert code == 404


def test_health_reports_every_part(host):
    code, body = host.get("/api/health")
    assert code == 200 and body == {"status": "up"}, body
    code, body = host.get("/api/health/details")
    assert code == 200, body
    assert body["status"] == "up" and body["storage"]["ok"] and body["catalog"]["ok"] and body["runtime"]["ok"]
    assert body["storage"]["backend"] == "azure" and body["storage"]["system_container"] == "rmh-system"
    assert body["catalog"]["backend"] == "pgstac" and body["catalog"]["version"]
    assert "AccountKey" not in str(body)


def test_a_failed_chunk_is_retried_with_exactly_its_files(host, store, tmp_path):
    """A chunk sub-orchestration that fails outright (terminated here) counts its files as failed
    under their real blob names, and a retry of the job redoes exactly those files."""
    store.create_container("chunky")
    source = write_raster(tmp_path / "c.tif", width=256, height=256, count=1, crs="EPSG:32633")
    names = [f"in/c{i:02d}.tif" for i in range(12)]
    for name in names:
        store.upload_from_path("chunky", name, source)
    code, started = host.submit("cog_conversion", {"container": "chunky", "prefix": "in/", "chunk_size": 4,
                                                   "output_container": "chunky-out", "catalog": False})
    assert code == 202, started
    victim = f"{started['id']}:chunk-00002"
    deadline = time.monotonic() + 60
    while host.runtime.get_status(victim) is None:
        assert time.monotonic() < deadline, "the chunk never started"
        time.sleep(0.005)
    host.runtime.terminate(victim, "forced chunk failure")
    status = host.follow(started["statusQueryGetUri"])
    output = status["output"]
    failed = sorted(f["name"] for f in output["failures"])
    assert failed == names[8:], output["failures"]
    assert {f["error"] for f in output["failures"]} == {"ChunkFailed"}
    assert output["done"] == 8
    etags = {b.name: b.etag for b in store.iter_blobs("chunky-out")}
    code, retry = host.post(f"/api/jobs/{started['id']}/retry")
    assert code == 202, retry
    retried = host.follow(retry["statusQueryGetUri"])
    redone = retried["output"]
    assert redone["total"] == 4 and redone["done"] + redone["skipped"] == 4 and redone["failed"] == 0, redone
    code, tasks = host.get(f"/api/jobs/{started['id']}/tasks?top=100")
    converted = sorted(t["name"] for t in tasks["tasks"] if t["activity"] == "convert_blob")
    assert converted == names[8:]
    after = {b.name: b.etag for b in store.iter_blobs("chunky-out")}
    assert len(after) == 12 and all(after[n] == e for n, e in etags.items())
