"""``GET /api/jobs`` on the local directory + static catalog: summaries unless ``outputs=true``,
pages of ``top`` newest first that neither repeat nor skip a job (jobs created in the same second
included, and jobs created while paging), a bad token a 400. On the old code the listing answers
every job's whole output, ignores ``top`` and has no continuation token."""
from __future__ import annotations

import pytest

from http_client import Host
from local_runtime import LocalRuntime
from raster_factory import write_raster
from services import applied_local_env


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "listbox"}
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def host(service_env, store, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("listing-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, blob_store=store) as runtime:
        yield Host(runtime)


@pytest.fixture(scope="module")
def jobs(host, store, tmp_path_factory):
    """A sync with a failed file (a whole output with failures and detail) and eight hello_worlds
    started at once (most in the same second); their ids, newest first as the runtime has them."""
    tmp = tmp_path_factory.mktemp("listbox")
    store.create_container("listbox")
    for i in range(3):
        store.upload_from_path("listbox", f"r{i}.tif", write_raster(tmp / f"r{i}.tif", width=16, height=16,
                                                                     crs="EPSG:4326", bounds=(i, 0, i + 1, 1)))
    (tmp / "bad.tif").write_text("not a raster\n")
    store.upload_from_path("listbox", "bad.tif", tmp / "bad.tif")
    sync = host.run("sync_container", {"container": "listbox"})
    assert sync["output"]["failed"] == 1, sync["output"]
    hellos = [host.run("hello_world", {"name": f"n{i}", "count": 1}) for i in range(8)]
    return [sync["instanceId"], *(h["instanceId"] for h in hellos)]


def pages(host, query: str) -> list[dict]:
    found, token = [], None
    for _ in range(50):
        suffix = f"&continuationToken={token}" if token else ""
        code, body = host.get(f"/api/jobs?{query}{suffix}")
        assert code == 200, body
        found.append(body)
        token = body["continuationToken"]
        if token is None:
            return found
    raise AssertionError("the listing never ended")


def test_a_listing_answers_summaries_and_whole_outputs_on_request(host, jobs):
    code, body = host.get("/api/jobs?operation=sync_container")
    assert code == 200 and body["count"] == 1, body
    [sync] = body["jobs"]
    assert sync["output"]["failed"] == 1 and sync["output"]["failure_reasons"], sync["output"]
    assert sync["output"]["completed_with_errors"] is True and sync["output"]["total"] == 4
    assert "failures" not in sync["output"] and "detail" not in sync["output"], sorted(sync["output"])
    code, whole = host.get("/api/jobs?operation=sync_container&outputs=true")
    assert code == 200 and [f["name"] for f in whole["jobs"][0]["output"]["failures"]] == ["bad.tif"]
    assert whole["jobs"][0]["output"]["detail"]["plan"]["counts"]
    code, bad = host.get("/api/jobs?outputs=maybe")
    assert code == 400 and "outputs" in bad["error"], bad


def test_pages_of_top_cover_every_job_once_newest_first(host, jobs):
    answered = pages(host, "top=3")
    assert [len(p["jobs"]) for p in answered] == [3, 3, 3], [len(p["jobs"]) for p in answered]
    ids = [j["instanceId"] for p in answered for j in p["jobs"]]
    assert sorted(ids) == sorted(jobs) and len(set(ids)) == len(ids), ids
    created = [j["createdTime"] for p in answered for j in p["jobs"]]
    assert created == sorted(created, reverse=True), created
    code, everything = host.get("/api/jobs?top=1000")
    assert [j["instanceId"] for j in everything["jobs"]] == ids and everything["continuationToken"] is None


def test_a_job_started_while_paging_neither_shifts_nor_repeats_the_pages(host, jobs):
    """Statuses give creation times in whole seconds, so within a second the order is by id: a job
    started in the same second as the page's last may show on a later page (once); the jobs that
    were there are each listed once."""
    code, first = host.get("/api/jobs?top=4&operation=hello_world")
    assert code == 200 and first["continuationToken"], first
    new = host.run("hello_world", {"name": "late", "count": 1})["instanceId"]
    seen = [j["instanceId"] for j in first["jobs"]]
    token = first["continuationToken"]
    while token:
        code, page = host.get(f"/api/jobs?top=4&operation=hello_world&continuationToken={token}")
        assert code == 200, page
        seen += [j["instanceId"] for j in page["jobs"]]
        token = page["continuationToken"]
    assert sorted(set(seen) - {new}) == sorted(jobs[1:]) and len(seen) == len(set(seen)), seen
    code, again = host.get("/api/jobs?top=20&operation=hello_world")
    assert new in [j["instanceId"] for j in again["jobs"]]


def test_a_bad_continuation_token_is_a_400_that_says_what_to_send(host, jobs):
    for token in ("garbage", "WyJ4Il0=", "WyJub3QgYSB0aW1lIiwgImlkIl0="):
        code, body = host.get(f"/api/jobs?continuationToken={token}")
        assert code == 400 and "continuation token" in body["error"], (token, body)
    code, body = host.get("/api/jobs?top=0")
    assert code == 400 and "top" in body["error"]


def test_a_listing_reads_each_instance_of_the_hub_once(host, jobs, monkeypatch):
    """Nine jobs (fewer than a page) make the listing widen its window to the first instance; the
    sync's chunks are in every window. Each wider window reads only the time the narrower ones did
    not, so one listing is served each instance once (plus any on a window's boundary); the old
    code read every instance of the hub again for each of its four windows."""
    import local_management

    everything = host.runtime.list_instances(page_size=None).instances
    children = [s for s in everything if ":" in s["instanceId"]]
    assert children, "the sync ran no chunk: this test needs instances the listing drops"
    served: list[str] = []
    real = local_management.Management.list_page

    def counting(self, **kwargs):  # the real page, counted
        page, token = real(self, **kwargs)
        served.extend(status["instanceId"] for status in page)
        return page, token

    monkeypatch.setattr(local_management.Management, "list_page", counting)
    code, body = host.get("/api/jobs?top=100")
    assert code == 200 and len(body["jobs"]) >= len(jobs), body
    assert sorted(set(served)) == sorted(s["instanceId"] for s in everything)
    assert len(served) <= len(everything) + 3, (len(served), len(everything))
