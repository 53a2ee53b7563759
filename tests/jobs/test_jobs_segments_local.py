"""A job of more chunks than ``segment_chunks`` gathers them in segments (``chunk_segment``), on the
local directory + static catalog: 46 files (one of them not a raster) in chunks of 3 = 16 chunks,
in segments of 5 = 4 segments. Counts exact, progress per file while it runs, every file in
/tasks, no history holding more than one segment's chunks, a rerun and a retry exact too.

On code without segments the job's own history holds all 16 chunks (the check of the histories
fails), and ``segment_chunks`` is refused as an unknown field."""
from __future__ import annotations

import json
import time

import pytest

from http_client import Host
from local_runtime import LocalRuntime
from raster_factory import write_raster
from services import applied_local_env

FILES, CHUNK, SEGMENT = 46, 3, 5
CHUNKS = -(-FILES // CHUNK)  # 16
SEGMENTS = -(-CHUNKS // SEGMENT)  # 4


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "segbox"}
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def host(service_env, store, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("segments-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, blob_store=store) as runtime:
        yield Host(runtime)


@pytest.fixture(scope="module")
def segbox(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("segbox")
    store.create_container("segbox")
    for i in range(FILES - 1):
        path = write_raster(tmp / f"r{i:03d}.tif", width=16, height=16, crs="EPSG:4326",
                            bounds=(i - 180, 0, i - 179, 1), seed=i)
        store.upload_from_path("segbox", f"r/r{i:03d}.tif", path)
    (tmp / "text.tif").write_text("not a raster\n")
    store.upload_from_path("segbox", "r/text.tif", tmp / "text.tif")
    return "segbox"


def history(host, instance_id: str) -> list[dict]:
    code, body = host.get(f"/runtime/webhooks/durabletask/instances/{instance_id}?showHistory=true")
    assert code == 200, body
    return body["historyEvents"]


def sub_orchestrations(events: list[dict]) -> list[str]:
    return [e["FunctionName"] for e in events if e["EventType"] == "SubOrchestrationInstanceCompleted"]


def catalog_items(collection: str) -> list[str]:
    import activities

    return [item.id for item in activities.catalog().search(collection, limit=10_000)]


def run_sync(host, body: dict) -> tuple[dict, list[dict]]:
    """Submit, then follow through GET /api/jobs/{id} (progress per file) to the end."""
    code, started = host.submit("sync_container", body)
    assert code == 202, started
    seen = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        code, status = host.get(f"/api/jobs/{started['id']}")
        assert code == 200, status
        if status["runtimeStatus"] not in ("Running", "Pending"):
            return status, seen
        if isinstance(status.get("customStatus"), dict):
            seen.append(status["customStatus"])
        time.sleep(0.02)
    raise AssertionError(f"job {started['id']} did not end: {seen[-1:]}")


def test_a_job_of_many_chunks_runs_them_in_segments_with_exact_counts(host, segbox):
    body = {"container": segbox, "collection": "segs", "chunk_size": CHUNK, "segment_chunks": SEGMENT,
            "chunks_in_flight": 2}
    status, seen = run_sync(host, body)
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert (output["total"], output["done"], output["failed"]) == (FILES, FILES - 1, 1), output
    assert [f["name"] for f in output["failures"]] == ["r/text.tif"]
    assert len(catalog_items("segs")) == FILES - 1

    job = status["instanceId"]
    mine = sub_orchestrations(history(host, job))
    assert mine == ["chunk_segment"] * SEGMENTS, mine  # the job's history: one entry per segment
    for s in range(SEGMENTS):
        theirs = sub_orchestrations(history(host, f"{job}:segment-{s:05d}"))
        assert theirs == ["catalog_chunk"] * min(SEGMENT, CHUNKS - s * SEGMENT), (s, theirs)

    cataloging = [p for p in seen if p.get("stage") == "cataloging"]
    assert cataloging, seen[:5]
    finished = [p["done"] + p["failed"] for p in cataloging]
    assert finished == sorted(finished), finished
    assert all(p["total"] == FILES for p in cataloging)
    assert any(0 < n < FILES and n % CHUNK for n in finished) or len(set(finished)) >= 3, finished

    code, tasks = host.get(f"/api/jobs/{job}/tasks?top=1000")
    assert code == 200 and tasks["total"] == FILES, tasks
    assert sorted(t["name"] for t in tasks["tasks"]) == sorted([f"r/r{i:03d}.tif" for i in range(FILES - 1)]
                                                              + ["r/text.tif"])
    assert sum(t["status"] == "failed" for t in tasks["tasks"]) == 1
    code, failed = host.get(f"/api/jobs/{job}/tasks?status=failed")
    assert code == 200 and [t["name"] for t in failed["tasks"]] == ["r/text.tif"]


def test_a_rerun_through_segments_redoes_only_what_is_not_cataloged(host, segbox):
    body = {"container": segbox, "collection": "segs", "chunk_size": CHUNK, "segment_chunks": SEGMENT,
            "rerun": True}
    status, _ = run_sync(host, body)
    output = status["output"]
    plan = output["detail"]["plan"]["counts"]
    assert plan["unchanged"] == FILES - 1 and plan["added"] == 1, plan
    counts = {k: output[k] for k in ("total", "done", "skipped", "failed")}
    assert counts == {"total": FILES, "done": 0, "skipped": FILES - 1, "failed": 1}, counts  # the bad one tried again
    assert sorted(catalog_items("segs")) == sorted(set(catalog_items("segs")))
    assert len(catalog_items("segs")) == FILES - 1


def test_a_full_rerun_through_segments_redoes_every_file_once(host, segbox):
    body = {"container": segbox, "collection": "segs", "chunk_size": CHUNK, "segment_chunks": SEGMENT,
            "mode": "full", "rerun": True}
    status, _ = run_sync(host, body)
    output = status["output"]
    assert (output["total"], output["done"], output["failed"]) == (FILES, FILES - 1, 1), output
    code, tasks = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=1000")
    assert code == 200 and tasks["total"] == FILES, "the previous run's segments and chunks were purged"
    assert len(catalog_items("segs")) == FILES - 1


def test_a_conversion_through_segments_converts_and_catalogs_each_file_once(host, segbox):
    blobs = [f"r/r{i:03d}.tif" for i in range(12)] + ["r/text.tif"]
    status = host.run("cog_conversion", {"container": segbox, "blobs": blobs, "output_container": "segcogs",
                                         "collection": "segcogs", "chunk_size": 2, "segment_chunks": 3},
                      timeout=300)
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert (output["total"], output["done"], output["failed"]) == (13, 12, 1), output
    assert sub_orchestrations(history(host, status["instanceId"])) == ["chunk_segment"] * 3  # 7 chunks
    assert len(catalog_items("segcogs")) == 12
    code, retried = host.post(f"/api/jobs/{status['instanceId']}/retry")
    assert code == 202, retried
    again = host.follow(retried["statusQueryGetUri"], timeout=300)
    assert (again["output"]["total"], again["output"]["failed"]) == (1, 1), again["output"]  # exactly the failed one
    assert again["output"]["failures"][0]["name"] == "r/text.tif"


def test_segment_chunks_is_checked(host, segbox):
    code, body = host.submit("sync_container", {"container": segbox, "segment_chunks": 1})
    assert code == 400 and "segment_chunks" in json.dumps(body), body
    assert "greater than or equal to 2" in json.dumps(body), body


def test_an_unpublish_of_many_chunks_runs_them_in_segments_and_removes_everything(host, store, segbox):
    """A conversion's 12 COGs and items, unpublished in chunks of 2 groups, segments of 3 chunks:
    6 chunks in 2 segments, every group counted once, nothing left. On code where unpublish gathers
    its chunks itself the request's ``segment_chunks`` is refused (400)."""
    blobs = [f"r/r{i:03d}.tif" for i in range(20, 32)]
    converted = host.run("cog_conversion", {"container": segbox, "blobs": blobs, "output_container": "unsegcogs",
                                            "collection": "unsegs"}, timeout=300)
    assert (converted["output"]["done"], converted["output"]["failed"]) == (12, 0), converted["output"]
    assert len(catalog_items("unsegs")) == 12 and len(list(store.iter_blobs("unsegcogs"))) >= 12

    code, started = host.submit("unpublish", {"container": segbox, "entire_collection": True, "collection": "unsegs",
                                              "output_container": "unsegcogs", "chunk_size": 2, "segment_chunks": 3,
                                              "chunks_in_flight": 2})
    assert code == 202, started
    seen, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        code, status = host.get(f"/api/jobs/{started['id']}")
        assert code == 200, status
        if status["runtimeStatus"] not in ("Running", "Pending"):
            break
        if isinstance(status.get("customStatus"), dict):
            seen.append(status["customStatus"])
        time.sleep(0.02)
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    groups = output["detail"]["plan"]["groups"]
    assert groups == 12, output["detail"]["plan"]
    assert (output["total"], output["done"], output["failed"]) == (groups, groups, 0), output
    assert output["detail"]["removed"]["items"] == 12, output["detail"]
    job = status["instanceId"]
    assert sub_orchestrations(history(host, job)) == ["chunk_segment"] * 2
    for s in range(2):
        assert sub_orchestrations(history(host, f"{job}:segment-{s:05d}")) == ["unpublish_chunk"] * 3, s
    removing = [p for p in seen if p.get("stage") == "removing"]
    assert all(p["total"] == groups for p in removing), removing[:3]
    finished = [p["done"] + p["failed"] for p in removing]
    assert finished == sorted(finished), finished
    code, tasks = host.get(f"/api/jobs/{job}/tasks?top=1000")
    assert code == 200 and tasks["total"] == groups, tasks
    assert not catalog_items("unsegs")
    assert not [b.name for b in store.iter_blobs("unsegcogs")]
    assert len([b for b in store.iter_blobs(segbox) if b.name in blobs]) == 12  # the sources stay
