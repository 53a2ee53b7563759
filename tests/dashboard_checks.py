"""What the dashboard's browser tests share (the Azurite + pgSTAC module and the embedded-defaults
module): HTTP calls with the function key, waiting for a job, the page's colours, and reading
footprints and colours off a screenshot."""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

import numpy as np

from consumers import Browser, artifacts_root, colour_fraction, crop, dominant_colours

KEY = "dashboard-test-key-5c1d0e"
THUMBNAIL_RGB = (0, 90, 255)
# The page's colours (dashboard.css): task outcomes and the map.
DONE, FAILED = (46, 133, 64), (214, 40, 40)
LAND, OCEAN = (236, 233, 225), (207, 227, 243)


def browser_session(name: str):
    """A Chromium driver logging to ``artifacts/<name>`` for a module's tests (a fixture's body)."""
    driver = Browser(log_dir=artifacts_root() / name).start()
    try:
        yield driver
    finally:
        driver.stop()


def shots_dir(name: str, test_name: str):
    """A fresh ``artifacts/<name>/<test>`` directory for a test's screenshots."""
    path = artifacts_root() / name / test_name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def call(url: str, *, key: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, bytes, dict]:
    headers = {"x-functions-key": key} if key else {}
    data = None
    if body is not None:
        data, headers = json.dumps(body).encode(), {**headers, "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def wait_for_job(status_url: str, *, key: str | None = None, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        code, body, _ = call(status_url, key=key)
        status = json.loads(body)
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"{status_url} did not finish: {status}")


def has_colour(image: np.ndarray, box, colour, *, at_least: float, tolerance: int = 30) -> bool:
    return colour_fraction(image, colour, box, tolerance=tolerance) >= at_least


def footprint_boxes(page) -> list[tuple[int, int, int, int]]:
    """The screen boxes (x, y, width, height) of the map's footprint outlines, left to right."""
    boxes = page.evaluate("[...document.querySelectorAll('#map path.footprint')].map(p => {"
                          " const r = p.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })")
    return sorted(tuple(int(round(v)) for v in b) for b in boxes)


def footprint_tint(image: np.ndarray, box) -> np.ndarray:
    """The dominant colour of the middle half of a footprint's box."""
    x, y, w, h = box
    inner = (x + w // 4, y + h // 4, w // 2, h // 2)
    return np.asarray(dominant_colours(crop(image, inner), count=1)[0][0], dtype=int)


def is_footprint_orange(tint: np.ndarray) -> bool:
    """The footprint fill (#ff7f0e at 55 % over land or ocean)."""
    return bool(tint[0] > 200 and 110 < tint[1] < 200 and tint[2] < 150)


def shown_name(name: str) -> str:
    """What a task's timeline label shows: the name, or "…" and its last 33 characters (code points)."""
    points = list(name)
    return name if len(points) <= 34 else "…" + "".join(points[-33:])


def check_names_on_the_job_page(page, names: list[str], failed: dict[str, str]) -> None:
    """On a job's page: one timeline label per task showing its name as it is (shortened by code
    points, never into half a character), the tooltip of each bar naming it whole, and each
    failed name in the failure list under its condition."""
    page.wait({"js": f"document.querySelectorAll('#timeline rect.task').length === {len(names)}"},
              {"js": "document.querySelectorAll('#failures code').length > 0" if failed else "true"})
    labels = page.evaluate("[...document.querySelectorAll('#timeline svg text')].slice(0, -1).map(t => t.textContent)")
    assert sorted(labels) == sorted(shown_name(n) for n in names), labels
    assert all(label.encode("utf-8") for label in labels)  # a lone surrogate would not encode
    assert page.evaluate("[...document.querySelectorAll('#timeline svg text')].every(t => t.textContent.isWellFormed())")
    tips = []
    for index in range(len(names)):
        page.hover(f"#timeline rect.task[data-index='{index}']")
        page.wait({"js": "!document.getElementById('tooltip').hidden"})
        tips.append(page.evaluate("document.getElementById('tooltip').textContent").split("\n")[0])
    assert sorted(tips) == sorted(names), tips
    shown = page.evaluate("[...document.querySelectorAll('#failures .failure-group')].map(g => "
                          "[g.querySelector('h4').textContent, [...g.querySelectorAll('code')].map(c => c.textContent)])")
    assert {name: heading.split(" · ")[0] for heading, codes in shown for name in codes} == failed, shown


def named_conversion(keyed, store, tmp_path) -> tuple[str, list[str], dict[str, str]]:
    """A conversion (not cataloged) of rasters named in eight scripts, with a bidi override, a long
    name of emoji (characters of two UTF-16 units), and a file that is not a raster named in
    Hebrew: its id, names and failures."""
    from names import SCRIPT_NAMES, TRICKY_NAMES
    from raster_factory import write_raster

    store.create_container("rasters")
    good = write_raster(tmp_path / "named.tif", width=64, height=64, count=1, crs="EPSG:32633")
    names = [f"named/{n}" for n in SCRIPT_NAMES.values()] + [
        f"named/{TRICKY_NAMES['bidi']}", "named/earth " + "🌍" * 30 + ".tif"]  # shortened, not cut in half
    for name in names:
        store.upload_from_path("rasters", name, good)
    broken = "named/מפות/לא-רסטר.tif"
    store.upload_bytes("rasters", broken, b"not a raster\n" * 10)
    code, body, _ = call(f"{keyed}/api/jobs/cog_conversion", key=KEY, method="POST",
                         body={"blobs": [*names, broken], "catalog": False})
    assert code == 202, body
    status = wait_for_job(json.loads(body)["statusQueryGetUri"])
    assert status["output"]["done"] == len(names) and status["output"]["failed"] == 1, status["output"]
    return status["instanceId"], [*names, broken], {broken: "UnsupportedFormat"}
