"""The dashboard draws the rasters, on the embedded defaults (``make serve``: local storage, the
static catalog, a function key): the demo DEM converted by a real ``cog_conversion`` is drawn on
the map from the app's preview tiles in its render (viridis over its elevation range), inside its
footprint and nowhere else, with every request of the page staying on 127.0.0.1. An item with two
time steps shows a chooser, and choosing the other step draws it in its own render.
Screenshots are kept in ``.local/artifacts/dashboard-previews/``."""
from __future__ import annotations

import json
import shutil
import urllib.parse

import numpy as np
import pytest

import cli
from consumers import Browser, artifacts_root, crop, dominant_colours
from dashboard_checks import KEY, LAND, OCEAN, call, footprint_boxes, wait_for_job
from local_runtime import LocalRuntime

DEM_COLLECTION, STEPS_COLLECTION = "demo-map", "demo-steps"


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-previews")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work")}
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN", "RMH_STAC_SCHEMA_DIR",
                    "RMH_STATIC_CATALOG_CONTAINER", "RMH_ASSET_BASE_URL", "RMH_TILER_URL"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def served(service_env, tmp_path_factory):
    import function_app
    from settings import get_settings

    db = tmp_path_factory.mktemp("dashboard-previews-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY},
                      files=cli.local_mounts(get_settings())) as runtime:
        yield runtime.base_url


@pytest.fixture(scope="module")
def dem(served, store, tmp_path_factory):
    """The demo DEM converted; and an item of two time steps (two assets, each with its render)."""
    import activities
    import stac_collections

    work = tmp_path_factory.mktemp("demo-dem")
    store.create_container("rasters")
    store.upload_from_path("rasters", "demo/sample-dem.tif", cli.write_sample_raster(work / "sample-dem.tif"))
    code, body, _ = call(f"{served}/api/jobs/cog_conversion", key=KEY, method="POST",
                         body={"blobs": ["demo/sample-dem.tif"], "collection": DEM_COLLECTION})
    assert code == 202, body
    status = wait_for_job(json.loads(body)["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 1, status["output"]
    catalog = activities.catalog()
    item = catalog.search(DEM_COLLECTION, limit=1)[0]
    stac = item.to_dict(include_self_link=False, transform_hrefs=False)
    render = stac["properties"]["renders"]["default"]
    steps = json.loads(json.dumps(stac))
    steps.update(id="demo-steps", collection=STEPS_COLLECTION)
    data = steps["assets"].pop("data")
    steps["assets"] = {"t1": {**data, "title": "June"}, "t2": {**data, "title": "July"}}
    steps["properties"]["renders"] = {
        "t1": {"assets": ["t1"], "rescale": render["rescale"], "colormap_name": "viridis"},
        "t2": {"assets": ["t2"], "rescale": render["rescale"], "colormap_name": "reds"}}
    catalog.upsert_collection(stac_collections.collection_for_container("rasters", collection_id=STEPS_COLLECTION))
    catalog.upsert_items([steps])
    catalog.finalize()
    return {"id": item.id, "render": render}


def _lut(name: str) -> np.ndarray:
    from rio_tiler.colormap import cmap

    return np.array([cmap.get(name)[i][:3] for i in range(256)], dtype=int)


def _share_near(pixels: np.ndarray, colours: np.ndarray, tolerance: int = 14) -> float:
    """Share of ``pixels`` (N x 3) within ``tolerance`` (per channel) of one of ``colours``."""
    if len(pixels) == 0:
        return 0.0
    sample = pixels[:: max(1, len(pixels) // 4000)].astype(int)
    near = (np.abs(sample[:, None, :] - colours[None, :, :]).max(axis=2) <= tolerance).any(axis=1)
    return float(near.mean())


def _pixels(image: np.ndarray, box) -> np.ndarray:
    return crop(image, box)[..., :3].reshape(-1, 3)


def _outside_ring(box, margin: int = 40, width: int = 25) -> list[tuple[int, int, int, int]]:
    x, y, w, h = box
    return [(x - margin - width, y, width, h), (x + w + margin, y, width, h),
            (x, y - margin - width, w, width), (x, y + h + margin, w, width)]


def _choose_collection(page, collection: str) -> None:
    page.evaluate(f"(() => {{ const s = document.getElementById('map-collection'); s.value = '{collection}';"
                  " s.dispatchEvent(new Event('change')); return true; })()")


#: Every preview tile in view has settled (drawn, or empty outside the raster), one at least drawn.
TILES_SETTLED = ("(() => { const t = [...document.querySelectorAll('#map img.preview-tile')];"
                 " return t.length > 0 && t.every(i => i.dataset.state) && t.some(i => i.dataset.state === 'loaded'); })()")


def test_the_map_draws_the_demo_dem_inside_its_footprint_and_stays_offline(served, dem):
    shots = artifacts_root() / "dashboard-previews"
    shutil.rmtree(shots, ignore_errors=True)
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/map",
                         wait=[{"js": "document.querySelectorAll('#map-collection option').length === 3"}]) as page:
            _choose_collection(page, DEM_COLLECTION)
            # Fitted to the footprint at zoom 7: the map draws the raster from there on.
            page.wait({"js": "document.querySelectorAll('#map path.footprint').length === 1"},
                      {"js": TILES_SETTLED}, {"idle": True})
            page.screenshot(shots / "map-dem-fitted.png")
            page.click(".leaflet-control-zoom-in")
            page.wait({"ms": 400}, {"js": TILES_SETTLED}, {"idle": True}, {"ms": 500})
            image = page.screenshot(shots / "map-dem.png")
            [box] = footprint_boxes(page)
            assert box[2] > 150 and box[3] > 100, box
            inside = _pixels(image, (box[0] + box[2] // 4, box[1] + box[3] // 4, box[2] // 2, box[3] // 2))
            viridis, holes = _share_near(inside, _lut("viridis")), _share_near(inside, np.array([LAND]), 10)
            # The DEM in viridis, its nodata (the sea around the island) transparent over the land.
            assert viridis > 0.6 and viridis + holes > 0.97, (viridis, holes, dominant_colours(crop(image, box)))
            assert len(np.unique(inside // 8, axis=0)) > 30, "a stretched surface, not a flat fill"
            for ring in _outside_ring(box):
                outside = _pixels(image, ring)
                base = _share_near(outside, np.array([LAND, OCEAN]), tolerance=10)
                assert base > 0.9 and _share_near(outside, _lut("viridis"), 6) < 0.05, (ring, dominant_colours(
                    crop(image, ring)))
            log = page.log()
            tiles = [url for url, status in log["requests"] if "/api/previews/" in url]
            assert tiles and all(status == 200 for url, status in log["requests"] if url in tiles[:4])
            hosts = {urllib.parse.urlsplit(url).hostname for url, _ in log["requests"]}
            assert hosts == {"127.0.0.1"}, hosts
            assert not log["blocked"] and not log["errors"], (log["blocked"], log["errors"])
            assert KEY not in " ".join(tiles), "the key travels as a header, not in tile URLs"
    finally:
        driver.stop()


def test_an_item_with_time_steps_offers_a_chooser_and_draws_the_chosen_step(served, dem):
    shots = artifacts_root() / "dashboard-previews"
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/map",
                         wait=[{"js": "document.querySelectorAll('#map-collection option').length === 3"}]) as page:
            _choose_collection(page, STEPS_COLLECTION)
            page.wait({"js": "document.querySelectorAll('#map path.footprint').length === 1"}, {"ms": 600})
            [box] = footprint_boxes(page)
            page.click(at=(box[0] + box[2] / 2, box[1] + box[3] / 2))
            page.wait({"selector": "#preview-asset"}, {"js": TILES_SETTLED}, {"idle": True}, {"ms": 400})
            options = page.evaluate("[...document.querySelectorAll('#preview-asset option')].map(o => o.value)")
            assert options == ["t1", "t2"], options
            inner = (box[0] + box[2] // 4, box[1] + box[3] // 4, box[2] // 2, box[3] // 2)
            first = page.screenshot(shots / "steps-t1.png")
            assert _share_near(_pixels(first, inner), _lut("viridis")) > 0.6
            page.evaluate("(() => { const s = document.getElementById('preview-asset'); s.value = 't2';"
                          " s.dispatchEvent(new Event('change')); return true; })()")
            page.wait({"js": "performance.getEntriesByType('resource').some(r => r.name.includes('/t2/'))"},
                      {"idle": True}, {"ms": 600})
            second = page.screenshot(shots / "steps-t2.png")
            reds = _share_near(_pixels(second, inner), _lut("reds"))
            assert reds > 0.6 and _share_near(_pixels(second, inner), _lut("viridis")) < 0.2, reds
            assert not page.log()["blocked"]
    finally:
        driver.stop()


CUBE_COLLECTION = "demo-cube"


@pytest.fixture(scope="module")
def cube(served, store, tmp_path_factory):
    """A NetCDF-4 of two time steps and two pressure levels over 10–20° E, 40–50° N, converted by
    a real ``cog_conversion``: two step items, each with a COG asset per level."""
    import cube_factory as cf

    lon, lat = 10.0 + 0.05 * (np.arange(200) + 0.5), 50.0 - 0.05 * (np.arange(200) + 0.5)
    path = cf.write_netcdf(tmp_path_factory.mktemp("demo-cube") / "air.nc", steps=2, levels=(85000.0, 50000.0),
                           lon=lon, lat=lat, packed=False)
    store.create_container("rasters")
    store.upload_from_path("rasters", "demo/air.nc", path)
    code, body, _ = call(f"{served}/api/jobs/cog_conversion", key=KEY, method="POST",
                         body={"blobs": ["demo/air.nc"], "collection": CUBE_COLLECTION})
    assert code == 202, body
    status = wait_for_job(json.loads(body)["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 1, status["output"]


def test_a_cube_time_step_offers_its_levels_and_draws_the_chosen_one(served, cube):
    """A converted NetCDF's step item: the chooser lists its levels by asset key, the map draws the
    first in its render (viridis), and choosing the other fetches and draws that one."""
    shots = artifacts_root() / "dashboard-previews"
    driver = Browser(log_dir=shots).start()
    try:
        with driver.page(f"{served}/api/dashboard?code={KEY}#/map", wait=[{"js": (
                f"[...document.querySelectorAll('#map-collection option')].some(o => o.value === '{CUBE_COLLECTION}')")}]
                         ) as page:
            _choose_collection(page, CUBE_COLLECTION)
            page.wait({"js": "document.querySelectorAll('#map path.footprint').length === 2"}, {"ms": 600})
            box = footprint_boxes(page)[0]
            page.click(at=(box[0] + box[2] / 2, box[1] + box[3] / 2))
            page.wait({"selector": "#preview-asset"}, {"js": TILES_SETTLED}, {"idle": True}, {"ms": 400})
            options = page.evaluate("[...document.querySelectorAll('#preview-asset option')].map(o => o.value)")
            assert options == ["tas:plev0", "tas:plev1"], options
            inner = (box[0] + box[2] // 4, box[1] + box[3] // 4, box[2] // 2, box[3] // 2)
            first = page.screenshot(shots / "cube-plev0.png")
            assert _share_near(_pixels(first, inner), _lut("viridis")) > 0.6
            page.evaluate("(() => { const s = document.getElementById('preview-asset'); s.value = 'tas:plev1';"
                          " s.dispatchEvent(new Event('change')); return true; })()")
            page.wait({"js": "performance.getEntriesByType('resource').some(r => r.name.includes('/tas%3Aplev1/'))"},
                      {"js": TILES_SETTLED}, {"idle": True}, {"ms": 600})
            second = page.screenshot(shots / "cube-plev1.png")
            assert _share_near(_pixels(second, inner), _lut("viridis")) > 0.6
            log = page.log()
            drawn = [(url, status) for url, status in log["requests"] if "/tas%3Aplev1/" in url]
            assert drawn and all(status == 200 for _, status in drawn), drawn
            assert not log["blocked"] and not log["errors"], (log["blocked"], log["errors"])
    finally:
        driver.stop()
