"""The dashboard on the embedded defaults, as ``make serve`` runs it: local-directory storage, the
static STAC catalog, the host's ``/files`` mounts (here with a function key). The footprints route
pages the static catalog and refuses bad input; in Debian's Chromium the map draws the footprints,
a thumbnail read through ``/files`` with the key, and asset links that open the COG."""
from __future__ import annotations

import io
import json
import os
import shutil
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image

import cli
from consumers import Browser, artifacts_root, crop, dominant_colours
from dashboard_checks import (KEY, LAND, THUMBNAIL_RGB, call, check_names_on_the_job_page, footprint_boxes,
                              footprint_tint, has_colour, is_footprint_orange, named_conversion, wait_for_job)
from local_runtime import LocalRuntime
from raster_factory import write_raster

PLACES = {"local/africa.tif": (15.0, -10.0, 30.0, 5.0), "local/asia.tif": (80.0, 20.0, 95.0, 35.0)}
COLLECTION = "dash-local"


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work")}
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN", "RMH_STAC_SCHEMA_DIR",
                    "RMH_STATIC_CATALOG_CONTAINER", "RMH_ASSET_BASE_URL"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def served(service_env, tmp_path_factory):
    """The app as ``cli.py serve`` hosts it (its ``/files`` mounts), with a function key."""
    import function_app
    from settings import get_settings

    db = tmp_path_factory.mktemp("dashboard-local-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY},
                      files=cli.local_mounts(get_settings())) as runtime:
        yield runtime.base_url


@pytest.fixture(scope="module")
def items(served, store, tmp_path_factory):
    """Two converted rasters; the Asian item given a PNG thumbnail beside its COG (href as relative
    as the data asset's)."""
    import activities
    from settings import get_settings

    work = tmp_path_factory.mktemp("local-inputs")
    store.create_container("rasters")
    for seed, (name, bounds) in enumerate(PLACES.items()):
        path = write_raster(work / name.replace("/", "-"), width=64, height=64, count=3, bounds=bounds, seed=seed)
        store.upload_from_path("rasters", name, path)
    code, body, _ = call(f"{served}/api/jobs/cog_conversion", key=KEY, method="POST",
                         body={"blobs": list(PLACES), "collection": COLLECTION})
    assert code == 202, body
    status = wait_for_job(json.loads(body)["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 2, status["output"]
    mosaic = status["output"]["detail"]["catalog"]["mosaic"]  # no pgSTAC, no search: said so
    assert mosaic["search_id"] is None and "static catalog" in mosaic["reason"], mosaic
    catalog = activities.catalog()
    asia = next(item for item in catalog.search(COLLECTION, limit=10) if "asia" in item.id)
    stac = asia.to_dict(include_self_link=False, transform_hrefs=False)
    data_href = stac["assets"]["data"]["href"]
    config = get_settings()
    item_dir = Path(config.static_catalog_dir).resolve() / COLLECTION / "items"
    cog = Path(os.path.normpath(item_dir / data_href)) if not os.path.isabs(data_href) else Path(data_href)
    assert cog.is_file(), (data_href, cog)
    png = io.BytesIO()
    Image.new("RGB", (32, 32), THUMBNAIL_RGB).save(png, format="PNG")
    thumbnail = cog.with_name(cog.stem + "-thumbnail.png")
    thumbnail.write_bytes(png.getvalue())
    href = data_href.rsplit("/", 1)[0] + "/" + thumbnail.name if "/" in data_href else thumbnail.name
    stac["assets"]["thumbnail"] = {"href": href, "type": "image/png", "roles": ["thumbnail"]}
    # A data asset the preview tiles do not draw (no ``data`` role): the map shows the item's
    # thumbnail alone, which the preview tiles of a raster would otherwise cover.
    stac["assets"]["data"]["roles"] = ["metadata"]
    catalog.upsert_items([stac])
    catalog.finalize()
    return {"asia": asia.id, "cog": cog}


def _footprints(served, query: str = "") -> tuple[int, dict]:
    code, body, _ = call(f"{served}/api/footprints{query}", key=KEY)
    return code, json.loads(body) if body else {}


def test_footprints_of_the_static_catalog_page_filter_and_open_through_files(served, items):
    code, page = _footprints(served, f"?collection={COLLECTION}")
    assert code == 200 and len(page["features"]) == 2 and page["next"] is None, page
    by_id = {f["id"]: f for f in page["features"]}
    asia = by_id[items["asia"]]
    assert asia["thumbnail"] == "thumbnail"
    for key in ("data", "thumbnail"):
        opened = asia["assets"][key]["open"]
        assert opened["kind"] == "files" and opened["url"].startswith("/files/"), opened
        code, content, _ = call(f"{served}{opened['url']}", key=KEY)
        assert code == 200, (key, opened, code)
        assert content[:4] in (b"II*\x00", b"MM\x00*") if key == "data" else content[:8] == b"\x89PNG\r\n\x1a\n"
    assert call(f"{served}{asia['assets']['data']['open']['url']}")[0] == 401, "the mount needs the key too"

    code, page = _footprints(served, "?bbox=70,10,100,40")
    assert code == 200 and [f["id"] for f in page["features"]] == [items["asia"]], page
    seen, query = [], "?limit=1"
    for _ in range(4):
        code, page = _footprints(served, query)
        assert code == 200 and len(page["features"]) <= 1, page
        seen += [f["id"] for f in page["features"]]
        if not page["next"]:
            break
        query = f"?limit=1&token={urllib.parse.quote(page['next'])}"
    assert sorted(seen) == sorted(by_id), seen

    for query, expected in {"?token=next:x": 400, "?token=prev:3": 400, "?token=next:99999999999": 400,
                            "?bbox=0,0,1": 400, "?limit=-5": 400, "?collection=nope": 404,
                            "?collection=%2e%2e": 400}.items():
        code, body = _footprints(served, query)
        assert code == expected and body.get("error"), (query, code, body)
    code, body = _footprints(served, "?token=next:500")
    assert code == 200 and body["features"] == [] and body["next"] is None, body


def test_the_map_on_embedded_defaults_draws_footprints_thumbnail_and_file_links(served, items):
    shots = artifacts_root() / "dashboard-local"
    shutil.rmtree(shots, ignore_errors=True)
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/map",
                         wait=[{"js": "document.querySelectorAll('#map path.footprint').length === 2"},
                               {"js": "!!document.querySelector('#map path.land')"}]) as page:
            page.wait({"ms": 600})  # the fit's animation and the bbox reload after it
            boxes = footprint_boxes(page)
            assert len(boxes) == 2 and all(w >= 15 and h >= 15 for _, _, w, h in boxes), boxes
            image = page.screenshot(shots / "map.png")
            world = page.box("#map")
            assert has_colour(image, world, LAND, at_least=0.05, tolerance=8), dominant_colours(crop(image, world))
            for box in boxes:
                assert is_footprint_orange(footprint_tint(image, box)), (box, footprint_tint(image, box))
            x, y, w, h = boxes[1]  # Asia, east of Africa: the item with a thumbnail
            page.click(at=(x + w / 2, y + h / 2))
            page.wait({"js": "(() => { const i = document.querySelector('#map img.thumbnail');"
                             " return i && i.complete && i.naturalWidth > 0; })()"},
                      {"js": "!!document.querySelector('#item a[data-asset=data]')?.href"})
            image = page.screenshot(shots / "map-thumbnail.png")
            inner = (x + w // 4, y + h // 4, w // 2, h // 2)
            assert has_colour(image, inner, THUMBNAIL_RGB, at_least=0.9, tolerance=20), \
                dominant_colours(crop(image, inner))
            assert items["asia"] in page.text("#item")
            link = page.evaluate("document.querySelector('#item a[data-asset=data]').href")
            assert urllib.parse.urlsplit(link).path.startswith("/files/"), link
            code, content, _ = call(link)
            assert code == 200 and content == items["cog"].read_bytes(), "the link opens the COG"

            # The collection filter asks the footprints route for that collection.
            options = page.evaluate("[...document.querySelectorAll('#map-collection option')].map(o => o.value)")
            assert options == ["", COLLECTION], options
            page.evaluate(f"(() => {{ const s = document.getElementById('map-collection'); s.value = '{COLLECTION}';"
                          " s.dispatchEvent(new Event('change')); return true; })()")
            page.wait({"js": f"performance.getEntriesByType('resource').some(r => r.name.includes("
                             f"'/api/footprints?') && r.name.includes('collection={COLLECTION}'))"},
                      {"js": "document.querySelectorAll('#map path.footprint').length === 2"})

            # Zoomed in between the two (over the Arabian Sea), the view's bbox holds neither.
            page.click(".leaflet-control-zoom-in")
            page.click(".leaflet-control-zoom-in")
            page.wait({"js": "document.getElementById('map-count').textContent.startsWith('0 footprints')"})
            assert page.evaluate("document.querySelectorAll('#map path.footprint').length") == 0
            queries = [urllib.parse.parse_qs(urllib.parse.urlsplit(r[0]).query)
                       for r in page.log()["requests"] if "/api/footprints" in r[0]]
            west, south, east, north = map(float, queries[-1]["bbox"][0].split(","))
            assert 30 < west < east < 80 and -10 < south < north < 35, queries[-1]
            assert queries[-1]["collection"] == [COLLECTION], queries[-1]
            page.screenshot(shots / "map-zoomed.png")
            assert not page.log()["errors"], page.log()["errors"]
            assert not page.log()["blocked"], "nothing is loaded from outside this machine"
    finally:
        driver.stop()


def test_names_in_any_script_show_as_they_are(served, store, tmp_path):
    shots = artifacts_root() / "dashboard-local-names"
    shutil.rmtree(shots, ignore_errors=True)
    job_id, names, failed = named_conversion(served, store, tmp_path)
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/jobs/{urllib.parse.quote(job_id)}",
                         wait=[{"selector": "#timeline rect.task"}]) as page:
            check_names_on_the_job_page(page, names, failed)
            page.screenshot(shots / "names.png")
            assert not page.log()["errors"], page.log()["errors"]
    finally:
        driver.stop()
