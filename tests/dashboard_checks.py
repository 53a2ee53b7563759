"""What the dashboard's browser tests share (the Azurite + pgSTAC module and the embedded-defaults
module): HTTP calls with the function key, waiting for a job, the page's colours, and reading
footprints and colours off a screenshot."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np

from consumers import colour_fraction, crop, dominant_colours

KEY = "dashboard-test-key-5c1d0e"
THUMBNAIL_RGB = (0, 90, 255)
# The page's colours (dashboard.css): task outcomes and the map.
DONE, FAILED = (46, 133, 64), (214, 40, 40)
LAND, OCEAN = (236, 233, 225), (207, 227, 243)


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
