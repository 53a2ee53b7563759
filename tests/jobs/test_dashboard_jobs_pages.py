"""The dashboard's job list past its first page, in Debian's Chromium on the embedded defaults:
with more jobs than a page (100) the list ends in a "More jobs" button that loads the next page
with the listing's continuation token; the loaded jobs stay listed when the list is drawn again
(back from a job's page, with a job started meanwhile on top); a list that fits has no button.
Assertions on screenshot pixels (kept in ``.local/artifacts/dashboard-jobs-pages/``) as well as
on what the page says. On the old code the list stops at the first 100 jobs with no way on."""
from __future__ import annotations

import concurrent.futures
import json

import pytest

from consumers import crop, dominant_colours, non_background_fraction
from dashboard_checks import browser_session, shots_dir, DONE, KEY, call, has_colour, wait_for_job
from local_runtime import LocalRuntime
from services import applied_local_env

JOBS = 105  # a page (100) and five
#: The "More jobs" button's colour (dashboard.css: var(--running)).
BUTTON = (31, 111, 209)


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-pages")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "few"}
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def served(service_env, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("dashboard-pages-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY}) as runtime:
        yield runtime.base_url


def _run(served: str, operation: str, body: dict) -> dict:
    code, answer, _ = call(f"{served}/api/jobs/{operation}", key=KEY, method="POST", body=body)
    assert code == 202, answer
    status = wait_for_job(json.loads(answer)["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    return status


@pytest.fixture(scope="module")
def jobs(served, store):
    """Two inventories of a small container, then JOBS greetings: every job's id, newest first as
    the listing orders them (by creation second, then id)."""
    store.create_container("few")
    store.upload_bytes("few", "a.txt", b"a")
    for prefix in ("", "a"):  # two requests, two jobs (the same request twice is one job)
        _run(served, "list_container", {"container": "few", "prefix": prefix})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _run(served, "hello_world", {"name": f"n{i}", "count": 1}), range(JOBS)))
    code, body, _ = call(f"{served}/api/jobs?top=1000", key=KEY)
    listed = [j["instanceId"] for j in json.loads(body)["jobs"]]
    assert code == 200 and len(listed) == JOBS + 2, len(listed)
    return listed


@pytest.fixture(scope="module")
def browser():
    yield from browser_session("dashboard-jobs-pages")


@pytest.fixture
def shots(request):
    return shots_dir("dashboard-jobs-pages", request.node.name)


def _row_ids(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#jobs-rows tr')].map(r => r.dataset.id)")


def _shown_row(page, shots, name: str, index: int) -> tuple:
    """The screenshot with the list's ``index``-th row (0-based) scrolled into view, and its box."""
    page.evaluate(f"document.querySelectorAll('#jobs-rows tr')[{index}].scrollIntoView({{block: 'center'}}) || true")
    page.wait({"ms": 100})
    box = page.box(f"#jobs-rows tr:nth-child({index + 1})")
    return page.screenshot(shots / name), box


def test_more_jobs_loads_the_next_page_and_the_list_keeps_it(served, jobs, browser, shots):
    everything = len(jobs)
    with browser.page(f"{served}/api/dashboard?code={KEY}#/jobs",
                      wait=[{"js": "document.querySelectorAll('#jobs-rows tr').length === 100"},
                            {"selector": "#jobs-more"}]) as page:
        assert _row_ids(page) == jobs[:100]
        assert "100 newest jobs shown" in page.text("#jobs-count")
        page.evaluate("document.getElementById('jobs-more').scrollIntoView({block: 'center'}) || true")
        image = page.screenshot(shots / "first-page.png")
        button = page.box("#jobs-more")
        assert button and button[2] > 40 and button[3] > 15, button
        assert has_colour(image, button, BUTTON, at_least=0.4, tolerance=20), dominant_colours(crop(image, button))
        assert page.text("#jobs-more") == "More jobs"

        page.click("#jobs-more")
        page.wait({"js": f"document.querySelectorAll('#jobs-rows tr').length === {everything}"},
                  {"js": "document.getElementById('jobs-more').hidden"})
        ids = _row_ids(page)
        assert ids[:100] == jobs[:100] and len(set(ids)) == len(ids) == everything, ids[95:]
        assert ids == jobs, "the 101st job on: the oldest"
        image, row = _shown_row(page, shots, "after-more.png", 100)
        assert page.text("#jobs-rows tr:nth-child(101)").count(jobs[100]) == 1
        # the 101st row drawn: its id's text and its green Completed badge, and no button left
        assert non_background_fraction(image, row) > 0.03, row
        assert has_colour(image, row, DONE, at_least=0.005, tolerance=20), dominant_colours(crop(image, row))
        assert not has_colour(image, None, BUTTON, at_least=0.0005, tolerance=12)
        assert str(everything) in page.text("#jobs-count") and "More jobs" not in page.text("#jobs-count")

        # A job started meanwhile; to a job's page and back: the list holds the new job on top
        # and still every job loaded before (reread, not the first page alone).
        late = _run(served, "hello_world", {"name": "late", "count": 1})["instanceId"]
        page.click("#jobs-rows tr:nth-child(103) a")
        page.wait({"js": f"document.getElementById('job-title').textContent.includes({json.dumps(ids[102])})"})
        page.click("#view-job a[href='#/jobs']")
        page.wait({"js": f"document.querySelectorAll('#jobs-rows tr').length === {everything + 1}"})
        again = _row_ids(page)
        assert again[0] == late and again[1:] == ids, again[:3]
        image, row = _shown_row(page, shots, "back-from-a-job.png", everything)
        assert page.text(f"#jobs-rows tr:nth-child({everything + 1})").count(ids[-1]) == 1
        assert non_background_fraction(image, row) > 0.03, row
        assert not page.log()["errors"], page.log()["errors"]


def test_a_list_that_fits_has_no_more_button(served, jobs, browser, shots):
    with browser.page(f"{served}/api/dashboard?code={KEY}#/jobs",
                      wait=[{"js": "document.querySelectorAll('#jobs-rows tr').length === 100"},
                            {"selector": "#jobs-more"}]) as page:
        page.evaluate("(() => { const s = document.getElementById('filter-operation'); s.value = 'list_container';"
                      " s.dispatchEvent(new Event('change')); return true; })()")
        page.wait({"js": "document.querySelectorAll('#jobs-rows tr').length === 2"})
        assert page.evaluate("document.getElementById('jobs-more').hidden")
        assert page.box("#jobs-more") is None
        assert "2 newest jobs shown" in page.text("#jobs-count")
        image = page.screenshot(shots / "fits.png")
        table = page.box("#jobs")
        assert has_colour(image, table, DONE, at_least=0.002, tolerance=20), dominant_colours(crop(image, table))
        assert not has_colour(image, None, BUTTON, at_least=0.0005, tolerance=12), \
            "no More jobs button drawn anywhere"
        # every greeting again (a filter is a list of its own: its first page, then More)
        page.evaluate("(() => { const s = document.getElementById('filter-operation'); s.value = 'hello_world';"
                      " s.dispatchEvent(new Event('change')); return true; })()")
        page.wait({"js": "document.querySelectorAll('#jobs-rows tr').length === 100"},
                  {"js": "!document.getElementById('jobs-more').hidden"})
        assert all(i.startswith("hello_world-") for i in _row_ids(page))
