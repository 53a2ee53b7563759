"""The dashboard in a real browser: the real function_app on a keyed embedded runtime, Azurite and
pgSTAC, Debian's Chromium driven headless by playwright-core. Assertions are on the pixels of
screenshots (kept in ``.local/artifacts/dashboard/``) as well as on what the page says.

One conversion of three small rasters and a file that is not a raster (so the job completes with
errors) is what the page shows: the jobs list, the job's task timeline and failure reason, the
Retry button, the metrics, and the map with the three footprints over the world outline, one of
them with a thumbnail drawn at its footprint and asset links signed by the API. Two more
conversions (not cataloged) are held half-way with the runtime's suspend: one shows live progress
with its ETA and refreshes to its end once resumed, the other is stopped with Terminate.
"""
from __future__ import annotations

import io
import json
import re
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from consumers import crop, dominant_colours
from dashboard_checks import (browser_session, shots_dir, DONE, FAILED, KEY, LAND, OCEAN, THUMBNAIL_RGB, call, check_names_on_the_job_page,
                              footprint_boxes, footprint_tint, has_colour, is_footprint_orange, named_conversion,
                              wait_for_job)
from local_runtime import LocalRuntime
from raster_factory import write_raster

#: Three rasters far apart (lon/lat bounds), so each footprint has its own place on the map.
PLACES = {"dash/americas.tif": (-110.0, 30.0, -95.0, 45.0), "dash/europe.tif": (2.0, 40.0, 17.0, 55.0),
          "dash/australia.tif": (125.0, -35.0, 140.0, -20.0)}
BROKEN = "dash/not-a-raster.tif"


@pytest.fixture(scope="module")
def keyed(service_env, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("dashboard") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY}) as runtime:
        yield runtime.base_url


@pytest.fixture(scope="module")
def browser():
    yield from browser_session("dashboard")


@pytest.fixture
def shots(request):
    return shots_dir("dashboard", request.node.name)


@pytest.fixture(scope="module")
def job(keyed, store, tmp_path_factory):
    """The finished conversion (completed with errors), and the item given a thumbnail."""
    import activities

    work = tmp_path_factory.mktemp("inputs")
    store.create_container("rasters")
    for seed, (name, bounds) in enumerate(PLACES.items()):
        path = write_raster(work / name.replace("/", "-"), width=64, height=64, count=3, bounds=bounds, seed=seed)
        store.upload_from_path("rasters", name, path)
    store.upload_bytes("rasters", BROKEN, b"this is a text file, not a raster\n" * 4)
    body = json.dumps({"blobs": [*PLACES, BROKEN], "collection": "dash"}).encode()
    request = urllib.request.Request(f"{keyed}/api/jobs/cog_conversion", data=body, method="POST",
                                     headers={"x-functions-key": KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        started = json.loads(response.read())
    status = wait_for_job(started["statusQueryGetUri"])
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["completed_with_errors"], output
    assert output["done"] == 3 and output["failed"] == 1, output
    # Conversions write a thumbnail per item; the European one is replaced by a solid-colour PNG
    # so that its drawing at the footprint can be found in the screenshot's pixels.
    png = io.BytesIO()
    Image.new("RGB", (32, 32), THUMBNAIL_RGB).save(png, format="PNG")
    store.upload_bytes("cogs", "dash/europe-thumbnail.png", png.getvalue(), content_type="image/png")
    catalog = activities.catalog()
    europe = next(item for item in catalog.search("dash", limit=10) if "europe" in item.id)
    stac = europe.to_dict(include_self_link=False, transform_hrefs=False)
    stac["assets"]["thumbnail"] = {"href": store.url("cogs", "dash/europe-thumbnail.png"), "type": "image/png",
                                   "roles": ["thumbnail"], "title": "Thumbnail"}
    # A data asset the preview tiles do not draw (no ``data`` role): the map shows the item's
    # thumbnail alone, which the preview tiles of a raster would otherwise cover.
    stac["assets"]["data"]["roles"] = ["metadata"]
    catalog.upsert_items([stac])
    return {"id": started["id"], "output": output, "europe": europe.id}


def test_without_the_key_the_page_and_its_data_routes_answer_401(keyed, job):
    item = job["europe"]
    for path in ("/api/dashboard", "/api/jobs", f"/api/jobs/{job['id']}", f"/api/jobs/{job['id']}/tasks",
                 "/api/metrics", "/api/footprints", "/api/collections",
                 f"/api/items/dash/{item}/assets/data/href", f"/api/items/dash/{item}/assets/data"):
        code, body, _ = call(f"{keyed}{path}")
        assert code == 401, (path, code, body[:200])
        assert call(f"{keyed}{path}", key="wrong-key")[0] == 401, path
    for method, path in (("POST", f"/api/jobs/{job['id']}/retry"), ("POST", f"/api/jobs/{job['id']}/terminate")):
        assert call(f"{keyed}{path}", method=method)[0] == 401, path
    # The page's static files hold no data and no key: anonymous, like /api/health.
    code, script, headers = call(f"{keyed}/api/dashboard/static/dashboard.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript") and KEY.encode() not in script
    code, page, headers = call(f"{keyed}/api/dashboard", key=KEY)
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert KEY.encode() not in page and headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer" and "script-src 'self'" in headers["Content-Security-Policy"]
    assert call(f"{keyed}/api/dashboard?code={KEY}")[0] == 200
    assert call(f"{keyed}/api/dashboard/static/../function_app.py")[0] == 404
    assert call(f"{keyed}/api/dashboard/static/vendor/leaflet/README.md")[0] == 404


def test_the_page_lists_the_job_and_shows_its_timeline_and_failure_reason(keyed, job, browser, shots):
    reason = job["output"]["failures"][0]["reason"]
    condition = job["output"]["failures"][0]["error"]
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/jobs",
                      wait=[{"selector": f'tr[data-id="{job["id"]}"] .bar'}]) as page:
        assert KEY not in page.evaluate("location.href"), "the key is taken out of the address bar"
        assert page.evaluate("sessionStorage.getItem('rmhgeoapi.functionKey')") == KEY
        row = page.text(f'tr[data-id="{job["id"]}"]')
        assert "cog_conversion" in row and "Completed with errors" in row and "3 done · 1 failed · 4 total" in row
        image = page.screenshot(shots / "jobs.png")
        bar = page.box(f'tr[data-id="{job["id"]}"] .bar')
        assert has_colour(image, bar, DONE, at_least=0.5) and has_colour(image, bar, FAILED, at_least=0.15), \
            dominant_colours(crop(image, bar))

        operations = page.evaluate("[...document.querySelectorAll('#filter-operation option')].map(o => o.value)")
        assert operations[0] == "" and {"cog_conversion", "hello_world", "sync_container"} <= set(operations), operations
        # The filters ask the job API: a job that completed with errors is listed as failed too.
        for status, listed in (("failed", True), ("completed_with_errors", True), ("running", False),
                               ("terminated", False), ("", True)):
            page.evaluate(f"(() => {{ const s = document.getElementById('filter-status'); s.value = '{status}';"
                          " s.dispatchEvent(new Event('change')); return true; })()")
            page.wait({"js": f"location.hash === '#/jobs' && performance.getEntriesByType('resource')"
                             ".some(r => { const u = new URL(r.name); return u.pathname.endsWith('/api/jobs')"
                             f" && (u.searchParams.get('status') || '') === '{status}'; }})"})
            page.wait({"js": f"!!document.querySelector('tr[data-id=\"{job['id']}\"]') === {str(listed).lower()}"})
            assert page.evaluate("document.getElementById('jobs-empty').hidden") == listed, status
        page.click(f'tr[data-id="{job["id"]}"] a')
        page.wait({"selector": "#timeline rect.task.failed"}, {"text": reason[:60]})
        assert page.evaluate("document.querySelectorAll('#timeline rect.task').length") == 4
        image = page.screenshot(shots / "job.png")
        timeline = page.box("#timeline svg")
        assert has_colour(image, timeline, DONE, at_least=0.01) and has_colour(image, timeline, FAILED, at_least=0.002), \
            dominant_colours(crop(image, timeline))
        failures = page.text("#failures")
        assert f"{condition} · 1 item" in failures and BROKEN in failures and reason[:60] in failures

        page.hover("#timeline rect.task.failed")
        page.wait({"selector": "#tooltip"})
        tip = page.text("#tooltip")
        assert BROKEN in tip and "failed" in tip and reason[:60] in tip
        image = page.screenshot(shots / "job-hover.png")
        assert has_colour(image, page.box("#tooltip"), (29, 35, 48), at_least=0.3)
        assert not page.log()["errors"], page.log()["errors"]


def test_retry_calls_the_job_api_and_redoes_the_failed_file(keyed, job, browser, shots):
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/jobs/{urllib.parse.quote(job['id'])}",
                      wait=[{"selector": "#job-retry:not([disabled])"}]) as page:
        page.click("#job-retry")
        page.wait({"text": "retry started"})
        posts = [r for r in page.log()["requests"] if r[0].endswith(f"/api/jobs/{job['id']}/retry")]
        assert posts and posts[0][1] == 202, page.log()["requests"][-10:]
        page.screenshot(shots / "retry.png")
    status = wait_for_job(f"{keyed}/api/jobs/{job['id']}", key=KEY)
    output = status["output"]
    assert output["total"] == 1 and output["failed"] == 1 and output["failures"][0]["name"] == BROKEN, output


def _start_conversion(keyed, store, tmp_path, count: int, prefix: str) -> dict:
    """A conversion of ``count`` small rasters, one chunk each, not cataloged (the map stays as
    the module's job made it); returns the 202 answer with its management URLs."""
    names = []
    for i in range(count):
        path = write_raster(tmp_path / f"{prefix}-{i}.tif", width=64, height=64, count=1, crs="EPSG:32633", seed=i)
        store.upload_from_path("rasters", f"{prefix}/{i:02d}.tif", path)
        names.append(f"{prefix}/{i:02d}.tif")
    code, body, _ = call(f"{keyed}/api/jobs/cog_conversion", key=KEY, method="POST",
                         body={"blobs": names, "chunk_size": 1, "catalog": False})
    assert code == 202, body
    return json.loads(body)


def _manage(started: dict, action: str) -> None:
    code, body, _ = call(started[f"{action}PostUri"].replace("{text}", "dashboard-test"), method="POST")
    assert code in (200, 202), (action, code, body[:300])


def _status(keyed, job_id: str) -> dict:
    return json.loads(call(f"{keyed}/api/jobs/{job_id}", key=KEY)[1])


def test_a_running_job_shows_live_progress_with_eta_and_refreshes_to_its_end(keyed, job, store, browser, shots,
                                                                            tmp_path):
    """A conversion caught half-way (suspended there, so the page sees a steady state), then
    resumed: the page shows its stage, counts and ETA, and reaches Completed without a reload."""
    import time

    started = _start_conversion(keyed, store, tmp_path, 40, "live")
    deadline = time.monotonic() + 120
    while True:
        status = _status(keyed, started["id"])
        progress = status.get("customStatus") or {}
        finished = progress.get("done", 0) + progress.get("failed", 0)
        if progress.get("eta") and 0 < finished < progress.get("total", 0):
            _manage(started, "suspend")
            break
        assert status["runtimeStatus"] in ("Pending", "Running") and time.monotonic() < deadline, status
        time.sleep(0.01)
    while _status(keyed, started["id"])["runtimeStatus"] != "Suspended":
        time.sleep(0.05)
    progress = _status(keyed, started["id"])["customStatus"]
    row = f'tr[data-id="{started["id"]}"]'
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/jobs", wait=[{"selector": f"{row} .bar"}]) as page:
        text = page.text(row)
        assert "Suspended" in text and progress["stage"] in text, text
        # the suspended job's chunk goes on converting its files, and the list counts them as they finish
        counts = re.search(r"(\d+) done · (\d+) failed · (\d+) total", text)
        assert counts, text
        shown_done, shown_failed, shown_total = map(int, counts.groups())
        assert shown_done >= progress["done"] and shown_failed == progress["failed"] == 0, (text, progress)
        assert shown_total == progress["total"] == 40, text
        assert re.search(r"ETA (in \d+ \w+|\d+ \w+ ago|now)", text) or shown_done == 40, text
        assert "refreshing every 2 s" in page.text("#jobs-refresh")
        image = page.screenshot(shots / "running.png")
        bar = page.box(f"{row} .bar")
        share = progress["done"] / progress["total"]  # at least what the page drew
        assert has_colour(image, bar, DONE, at_least=share * 0.6), (share, dominant_colours(crop(image, bar)))
        _manage(started, "resume")
        page.wait({"js": f"document.querySelector('{row}')?.textContent.includes('Completed')"}, timeout=120)
        image = page.screenshot(shots / "completed.png")
        assert has_colour(image, page.box(f"{row} .bar"), DONE, at_least=0.9)
        listings = [r for r in page.log()["requests"] if "/api/jobs?" in r[0]]
        assert len(listings) >= 2, "the list refreshed itself"
        assert "40 done · 0 failed · 40 total" in page.text(row)


def test_terminate_stops_a_running_job_from_its_page(keyed, job, store, browser, shots, tmp_path):
    started = _start_conversion(keyed, store, tmp_path, 12, "stop")
    _manage(started, "suspend")  # held, so it is still running when the button is pressed
    status = _status(keyed, started["id"])
    assert status["runtimeStatus"] == "Suspended", status
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/jobs/{urllib.parse.quote(started['id'])}",
                      wait=[{"selector": "#job-terminate:not([disabled])"}]) as page:
        assert page.evaluate("document.getElementById('job-retry').disabled")
        page.click("#job-terminate")
        page.wait({"text": "terminating"})
        page.wait({"js": "document.getElementById('job-status').textContent === 'Terminated'"}, timeout=60)
        page.wait({"selector": "#job-retry:not([disabled])"})
        page.wait({"js": "!!document.querySelector('#timeline svg, #timeline p')"})  # drawn, maybe empty
        page.screenshot(shots / "terminated.png")
        # Files whose tasks were cut off end with the job, inside the chart (whether there are
        # any depends on the stage the job was held in: none while it still lists its files).
        chart = page.box("#timeline svg")
        if page.evaluate("document.querySelectorAll('#timeline rect.task.running').length > 0"):
            x, y, w, h = page.box("#timeline rect.task.running")
            assert chart[0] <= x and x + w <= chart[0] + chart[2] + 1, (chart, (x, y, w, h))
            page.hover("#timeline rect.task.running")
            page.wait({"selector": "#tooltip"})
            assert "not finished (the job is Terminated)" in page.text("#tooltip")
        posts = [r for r in page.log()["requests"] if r[0].endswith(f"/api/jobs/{started['id']}/terminate")]
        assert posts and posts[0][1] == 202, page.log()["requests"][-10:]
    assert _status(keyed, started["id"])["runtimeStatus"] == "Terminated"


def test_metrics_show_counts_and_duration_charts(keyed, job, browser, shots):
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/metrics",
                      wait=[{"selector": '.metric-card[data-operation="cog_conversion"] svg'}]) as page:
        card = '.metric-card[data-operation="cog_conversion"]'
        text = page.text(card)
        assert re.search(r"jobs: \d+ started", text) and "p95" in text and "with errors" in text
        image = page.screenshot(shots / "metrics.png")
        box = page.box(card)
        p50, p95, p99 = (127, 179, 232), (61, 133, 216), (31, 79, 154)
        assert all(has_colour(image, box, c, at_least=0.002, tolerance=12) for c in (p50, p95, p99)), \
            dominant_colours(crop(image, box))


def test_the_map_draws_the_footprints_over_the_world_and_a_thumbnail(keyed, job, browser, shots):
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/map",
                      wait=[{"js": "document.querySelectorAll('#map path.footprint').length === 3"},
                            {"js": "document.querySelector('#map path.land') && document.querySelector('#map path.border')"}]) as page:
        assert "3 footprints" in page.text("#map-count")
        page.wait({"ms": 600})  # the fit's animation and the bbox reload after it
        boxes = footprint_boxes(page)
        assert len(boxes) == 3 and all(w >= 15 and h >= 15 for _, _, w, h in boxes), boxes
        image = page.screenshot(shots / "map.png")
        world = page.box("#map")
        assert has_colour(image, world, LAND, at_least=0.05, tolerance=8), dominant_colours(crop(image, world))
        assert has_colour(image, world, OCEAN, at_least=0.05, tolerance=8)
        # Footprints west to east: the Americas, Europe, Australia, each filled orange.
        assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
        for x, y, w, h in boxes:
            tint = footprint_tint(image, (x, y, w, h))
            assert is_footprint_orange(tint), ((x, y, w, h), tint)

        x, y, w, h = boxes[1]  # Europe: the item with a thumbnail
        page.click(at=(x + w / 2, y + h / 2))
        page.wait({"js": "(() => { const i = document.querySelector('#map img.thumbnail');"
                         " return i && i.complete && i.naturalWidth > 0; })()"},
                  {"js": "document.querySelector('#item a[data-asset=data]')?.href.includes('sig=')"})
        image = page.screenshot(shots / "map-thumbnail.png")
        inner = (x + w // 4, y + h // 4, w // 2, h // 2)
        assert has_colour(image, inner, THUMBNAIL_RGB, at_least=0.9, tolerance=20), dominant_colours(crop(image, inner))
        panel = page.text("#item")
        assert job["europe"] in panel and "proj:code" in panel and "thumbnail" in panel
        signed = page.evaluate("document.querySelector('#item a[data-asset=data]').href")
        code, content, _ = call(signed)
        assert code == 200 and content[:4] in (b"II*\x00", b"MM\x00*"), "the signed link opens the COG"
        # A link whose signature has expired (the panel stayed open) is signed again on a click.
        stale = re.sub(r"([?&])se=[^&]*", r"\1se=2000-01-01T00%3A00%3A00Z", signed)
        assert stale != signed, signed
        page.evaluate(f"(() => {{ document.querySelector('#item a[data-asset=data]').href = {json.dumps(stale)};"
                      " return true; })()")
        page.click("#item a[data-asset=data]")
        page.wait({"js": "(() => { const h = document.querySelector('#item a[data-asset=data]').href;"
                         " return h.includes('sig=') && !h.includes('se=2000-'); })()"})
        fresh = page.evaluate("document.querySelector('#item a[data-asset=data]').href")
        assert call(fresh)[0] == 200 and call(stale)[0] == 403, "the stale link no longer opens; the new one does"
        assert not page.log()["errors"], page.log()["errors"]
        assert not page.log()["blocked"], "nothing is loaded from outside this machine"


def _footprints(keyed, query: str = "") -> tuple[int, dict]:
    code, body, _ = call(f"{keyed}/api/footprints{query}", key=KEY)
    return code, json.loads(body) if body else {}


def test_footprints_filter_by_collection_and_bbox_and_page_with_tokens(keyed, job):
    code, page = _footprints(keyed, "?collection=dash")
    assert code == 200 and page["type"] == "FeatureCollection" and page["next"] is None, page
    by_name = {f["properties"]["rmh:source_blob"]: f for f in page["features"]}
    assert set(by_name) == set(PLACES), sorted(by_name)
    for name, (west, south, east, north) in PLACES.items():
        feature = by_name[name]
        assert feature["collection"] == "dash" and feature["geometry"]["type"] == "Polygon"
        assert [round(v, 6) for v in feature["bbox"]] == [west, south, east, north], feature["bbox"]
        assert feature["assets"]["data"]["open"]["kind"] == "signed"
        assert feature["assets"]["data"]["open"]["url"] == f"items/dash/{feature['id']}/assets/data/href"
    assert by_name["dash/europe.tif"]["thumbnail"] == "thumbnail"
    assert by_name["dash/americas.tif"]["thumbnail"] == "thumbnail"  # the conversion's own PNG

    code, page = _footprints(keyed, "?collection=dash&bbox=0,35,20,60")
    assert code == 200 and [f["id"] for f in page["features"]] == [job["europe"]], page
    code, page = _footprints(keyed, "?bbox=-180,-90,-150,-80")
    assert code == 200 and page["features"] == [] and page["next"] is None

    seen, query = [], "?collection=dash&limit=1"
    for _ in range(5):
        code, page = _footprints(keyed, query)
        assert code == 200 and page["numberReturned"] == len(page["features"]) <= 1, page
        seen += [f["id"] for f in page["features"]]
        if not page["next"]:
            break
        query = f"?collection=dash&limit=1&token={urllib.parse.quote(page['next'])}"
    assert sorted(seen) == sorted(by_name[n]["id"] for n in PLACES), seen


def test_footprints_refuse_bad_input_with_4xx(keyed, job):
    refusals = {
        "?bbox=1,2,3": 400, "?bbox=a,b,c,d": 400, "?bbox=10,0,5,5": 400, "?bbox=0,0,200,10": 400,
        "?bbox=nan,0,1,1": 400, "?bbox=0,0,1,inf": 400, "?bbox=": 400, "?limit=0": 400, "?limit=abc": 400,
        "?limit=100000": 400, "?token=garbage": 400, "?token=next:no-such-item": 400,
        "?token=next:5": 400, "?token=prev:abc:def": 400, "?token=next:64617368:00": 400, "?token=next:zz:zz": 400,
        "?token=next:64617368:6e6f2d7375636800": 400, "?token=next:::": 400,
        "?token=" + "x" * 1200: 400, "?token=next:" + "ab" * 500: 400, "?collection=..%2Fetc": 400, "?collection=no-such-collection": 404,
        "?collection=dash,no-such-collection": 404,
    }
    for query, expected in refusals.items():
        code, body = _footprints(keyed, query)
        assert code == expected and body.get("error"), (query, code, body)
    code, body = _footprints(keyed, "?collection=no-such-collection")
    assert "no-such-collection" in body["error"], body
    for path in (f"/api/items/dash/{job['europe']}/assets/nope/href", "/api/items/dash/nope/assets/data/href",
                 "/api/items/no-such-collection/x/assets/data/href"):
        code, body, _ = call(f"{keyed}{path}", key=KEY)
        assert code == 404, (path, code, body[:200])
    code, body, _ = call(f"{keyed}/api/items/dash/{job['europe']}/assets/data/href", key=KEY)
    assert code == 200 and "sig=" in json.loads(body)["href"]


def test_names_in_any_script_show_as_they_are(keyed, store, browser, shots, tmp_path):
    job_id, names, failed = named_conversion(keyed, store, tmp_path)
    with browser.page(f"{keyed}/api/dashboard?code={KEY}#/jobs/{urllib.parse.quote(job_id)}",
                      wait=[{"selector": "#timeline rect.task"}]) as page:
        check_names_on_the_job_page(page, names, failed)
        page.screenshot(shots / "names.png")
        assert not page.log()["errors"], page.log()["errors"]
