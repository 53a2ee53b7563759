"""The dashboard's Lifecycle view in Debian's Chromium, on the embedded defaults: the drafts still
waiting and every transition (draft, publish, revoke) with who asked for it (the name of the
function key, RMH_KEY_NAMES) and why, newest first, each linked to its job."""
from __future__ import annotations

import json
import shutil

import pytest

from consumers import Browser, artifacts_root, colour_fraction
from dashboard_checks import FAILED, KEY, call, wait_for_job
from local_runtime import LocalRuntime
from raster_factory import write_raster
from services import applied_local_env

COLLECTION = "dash-drafts"


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    import callers

    root = tmp_path_factory.mktemp("dashboard-lifecycle")
    yield from applied_local_env({
        "RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
        "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
        "RMH_TEMP_DIR": str(root / "work"), "RMH_KEY_NAMES": f"curator={callers.fingerprint(KEY)}"})


@pytest.fixture(scope="module")
def served(service_env, store, tmp_path_factory):
    """The app with a function key, after a draft conversion, its publish and one item revoked."""
    import function_app
    import stac_ops

    work = tmp_path_factory.mktemp("lifecycle-inputs")
    store.create_container("rasters")
    for i in range(2):
        store.upload_from_path("rasters", f"l/{i}.tif", write_raster(
            work / f"{i}.tif", width=64, height=64, count=3, bounds=(10 + i, 40, 10.5 + i, 40.5), seed=i))
    db = tmp_path_factory.mktemp("dashboard-lifecycle-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"curator": KEY}) as runtime:
        base = runtime.base_url

        def run(operation: str, body: dict) -> dict:
            code, answer, _ = call(f"{base}/api/jobs/{operation}", key=KEY, method="POST", body=body)
            assert code == 202, (operation, code, answer)
            return wait_for_job(json.loads(answer)["statusQueryGetUri"])

        assert run("cog_conversion", {"blobs": ["l/0.tif", "l/1.tif"], "collection": COLLECTION,
                                      "draft": True})["output"]["done"] == 2
        assert run("publish", {"collection": COLLECTION, "reason": "checked on the map"})["output"]["done"] == 1
        revoked = stac_ops.item_id_for_blob("rasters", "l/1.tif")
        assert run("revoke", {"collection": COLLECTION, "items": [revoked],
                              "reason": "<b>wrong</b> footprint"})["output"]["done"] == 1
        yield base


def test_the_lifecycle_view_lists_drafts_and_transitions_with_who_and_why(served):
    code, body, _ = call(f"{served}/api/lifecycle", key=KEY)
    state = json.loads(body)
    assert code == 200 and [t["action"] for t in state["transitions"]] == ["revoke", "publish", "draft"], state
    shots = artifacts_root() / "dashboard-lifecycle"
    shutil.rmtree(shots, ignore_errors=True)
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/lifecycle",
                         wait=[{"js": "document.querySelectorAll('#transitions-rows tr').length === 3"}]) as page:
            rows = page.evaluate("[...document.querySelectorAll('#transitions-rows tr')].map(r =>"
                                 " [...r.children].map(c => c.textContent))")
            assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
                ("revoke", COLLECTION, "1", "curator", "<b>wrong</b> footprint"),  # as text, never as HTML
                ("publish", COLLECTION, "2", "curator", "checked on the map"),
                ("draft", COLLECTION, "0", rows[2][4], "created as a draft by the job that writes it")]
            assert rows[2][4].startswith("job cog_conversion-") and rows[0][6].startswith("revoke-")
            assert page.evaluate("document.querySelectorAll('#transitions-rows b').length") == 0
            drafts = page.evaluate("[...document.querySelectorAll('#drafts-rows tr')].map(r =>"
                                   " [...r.children].map(c => c.textContent))")
            assert [d[:3] for d in drafts] == [[COLLECTION, "1", "some items"]], drafts
            image = page.screenshot(shots / "lifecycle.png")
            assert colour_fraction(image, FAILED, page.box("#transitions-rows tr:first-child .badge"), tolerance=30) > 0.4
            page.click("#transitions-rows tr:first-child td.id a")
            page.wait({"js": "location.hash.startsWith('#/jobs/revoke-')"},
                      {"js": "document.getElementById('job-title').textContent.startsWith('revoke')"})
            assert not page.log()["errors"], page.log()["errors"]
    finally:
        driver.stop()
