"""The harness on today's code: a real ``cog_conversion`` (embedded runtime, local storage backend,
pgSTAC catalog) writes the items; stac-fastapi-pgstac searches them, titiler-pgstac renders their
COGs (local hrefs are absolute paths, which a tiler on the same machine can open), STAC Browser
shows the API's landing and collection pages in headless Chromium."""
from __future__ import annotations

import json
import os
import urllib.parse

import numpy as np
import pytest
import rasterio
import rasterio.warp

from consumers import (CorsPolicy, StaticSite, background_colour, colour_fraction, consumer_python, crop,
                       dominant_colours, lonlat_centre, non_background_fraction, opaque_fraction, read_png,
                       tile_of)
from dashboard_checks import wait_for_job
from local_runtime import LocalRuntime
from raster_factory import write_raster

pytestmark = pytest.mark.services

COLLECTION = "consumer-smoke"
# Two rasters with known place and time: an RGB image and a DEM (float32, nodata).
RGB_BOUNDS = (500000.0, 4980000.0, 505120.0, 4985120.0)       # UTM 33N, near 45.0N 15.0E
DEM_BOUNDS = (520000.0, 4980000.0, 527680.0, 4985120.0)
RGB_TIME, DEM_TIME = "2024:03:01 10:00:00", "2025:05:01 12:00:00"
# STAC Browser 4.0.1 (ol-stac) outlines: the collection's extent blue, item footprints orange.
EXTENT_BLUE, FOOTPRINT_ORANGE = (51, 153, 204), (255, 153, 51)


@pytest.fixture(scope="module")
def written(pgstac_dsn, tmp_path_factory):
    """Items written by the app itself: the two rasters through ``cog_conversion`` over HTTP."""
    storage = tmp_path_factory.mktemp("storage")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(storage),
           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": pgstac_dsn}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from settings import get_settings

    get_settings.cache_clear()
    try:
        import activities
        import function_app
        from http_client import http

        store = activities.blob_store()
        inputs = tmp_path_factory.mktemp("inputs")
        rgb = write_raster(inputs / "rgb.tif", width=512, height=512, count=3, crs="EPSG:32633", bounds=RGB_BOUNDS)
        dem = write_raster(inputs / "dem.tif", width=768, height=512, dtype="float32", crs="EPSG:32633",
                           bounds=DEM_BOUNDS, nodata=-9999.0)
        for path, when in ((rgb, RGB_TIME), (dem, DEM_TIME)):
            with rasterio.open(path, "r+") as dst:
                dst.update_tags(TIFFTAG_DATETIME=when)
        store.create_container("rasters")
        store.upload_from_path("rasters", "smoke/rgb.tif", rgb)
        store.upload_from_path("rasters", "smoke/dem.tif", dem)
        with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite", port=0) as rt:
            code, started = http("POST", f"{rt.base_url}/api/jobs/cog_conversion",
                                 {"blobs": ["smoke/rgb.tif", "smoke/dem.tif"], "collection": COLLECTION})
            assert code == 202, (code, started)
            status = wait_for_job(started["statusQueryGetUri"])
        assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 2, status
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    import stac_ops

    ids = {name: stac_ops.item_id_for_blob("rasters", f"smoke/{name}.tif") for name in ("rgb", "dem")}
    return {"ids": ids, "storage": storage}



def _centre(bounds) -> tuple[float, float]:
    """lon/lat of the middle of UTM 33N ``bounds``."""
    return lonlat_centre("EPSG:32633", bounds)


def _search_ids(stac_api, **params) -> set[str]:
    query = urllib.parse.urlencode({"collections": COLLECTION, "limit": 100, **params})
    return {f["id"] for f in stac_api.get_json(f"/search?{query}")["features"]}


def test_stac_api_search_by_bbox_datetime_and_cql2(stac_api, written):
    ids = written["ids"]
    assert _search_ids(stac_api) == set(ids.values())
    # bbox: the RGB raster is west of 15.2E, the DEM east of it
    assert _search_ids(stac_api, bbox="14.9,44.9,15.05,45.1") == {ids["rgb"]}
    assert _search_ids(stac_api, bbox="15.25,44.9,15.4,45.1") == {ids["dem"]}
    assert _search_ids(stac_api, datetime="2025-01-01T00:00:00Z/2025-12-31T23:59:59Z") == {ids["dem"]}
    assert _search_ids(stac_api, datetime="2024-03-01T10:00:00Z") == {ids["rgb"]}
    # CQL2 on our own property, text and JSON forms, GET and POST
    text = "\"rmh:source_blob\" = 'smoke/dem.tif'"
    assert _search_ids(stac_api, filter=text, **{"filter-lang": "cql2-text"}) == {ids["dem"]}
    code, body = stac_api.post_json("/search", {
        "collections": [COLLECTION], "filter-lang": "cql2-json",
        "filter": {"op": "=", "args": [{"property": "proj:code"}, "EPSG:32633"]}})
    assert code == 200, body
    assert {f["id"] for f in body["features"]} == set(ids.values())
    assert set(stac_api.get_json("/queryables")["properties"]) >= {"id", "datetime", "geometry"}


def test_queryables_list_our_properties_and_cql2_compares_them_by_type(stac_api, written):
    """pgSTAC's queryables, registered for the collection when it was written: the API lists them
    (globally and per collection, where STAC Browser's filter form reads them) with their types,
    and a CQL2 comparison on a number is numeric."""
    ids = written["ids"]
    ours = {"proj:code", "gsd", "rmh:source_container", "rmh:source_blob", "rmh:source_etag",
            "rmh:datetime_source", "rmh:has_data", "rmh:data_type", "rmh:band_count"}
    for path in ("/queryables", f"/collections/{COLLECTION}/queryables"):
        listed = stac_api.get_json(path)["properties"]
        assert ours <= set(listed), (path, sorted(listed))
        assert listed["rmh:band_count"]["type"] == "integer" and listed["gsd"]["type"] == "number"
    assert _search_ids(stac_api, filter="\"rmh:band_count\" >= 3", **{"filter-lang": "cql2-text"}) == {ids["rgb"]}
    assert _search_ids(stac_api, filter="\"rmh:data_type\" = 'float32'", **{"filter-lang": "cql2-text"}) == {ids["dem"]}
    code, body = stac_api.post_json("/search", {
        "collections": [COLLECTION], "filter-lang": "cql2-json",
        "filter": {"op": "and", "args": [{"op": ">", "args": [{"property": "gsd"}, 5]},
                                         {"op": "=", "args": [{"property": "rmh:has_data"}, True]}]}})
    assert code == 200 and {f["id"] for f in body["features"]} == set(ids.values()), body


def test_pystac_client_counts_match(stac_api, written, pgstac_dsn):
    # pgSTAC answers numberMatched only with its `context` setting on (0.10.0 ships it 'off', and
    # pystac-client's matched() is then None): an operator's setting, made here as one would.
    import psycopg

    with psycopg.connect(pgstac_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgstac.pgstac_settings SET value = 'on' WHERE name = 'context'")
    found = consumer_python(
        "import json, sys, pystac_client\n"
        "client = pystac_client.Client.open(sys.argv[1])\n"
        "search = client.search(collections=[sys.argv[2]], datetime='2025-01-01/2025-12-31')\n"
        "print(json.dumps({'matched': search.matched(), 'ids': [i.id for i in search.items()]}))",
        stac_api.url, COLLECTION)
    assert found == {"matched": 1, "ids": [written["ids"]["dem"]]}


def test_titiler_renders_an_item_tile(titiler, written, artifact_dir):
    item = written["ids"]["rgb"]
    base = f"/collections/{COLLECTION}/items/{item}"
    info = titiler.get_json(f"{base}/info?assets=data")
    assert info["data"]["count"] == 3 and info["data"]["dtype"] == "uint8"
    tilejson = titiler.get_json(f"{base}/WebMercatorQuad/tilejson.json?assets=data")
    zoom = tilejson["maxzoom"] + 1  # a tile smaller than the raster, around its centre
    lon, lat = _centre(RGB_BOUNDS)
    x, y = tile_of(lon, lat, zoom)
    status, body, headers = titiler.get(f"{base}/tiles/WebMercatorQuad/{zoom}/{x}/{y}.png?assets=data")
    assert status == 200, body[:500]
    assert headers["content-type"] == "image/png"
    (artifact_dir / "rgb-tile.png").write_bytes(body)
    tile = read_png(body)
    assert tile.shape == (256, 256, 4)
    assert opaque_fraction(tile) == 1.0  # a tile inside the raster
    # the synthetic RGB has three different bands, so the tile is coloured, not grey
    rgb = tile[..., :3].astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 5
    # and they are the raster's own values: titiler's point query equals rasterio's sample of the COG
    point = titiler.get_json(f"{base}/point/{lon},{lat}?assets=data")
    cog = written["storage"] / "cogs" / "rasters" / "smoke" / "rgb.tif"
    with rasterio.open(cog) as src:
        (east,), (north,) = rasterio.warp.transform("EPSG:4326", src.crs, [lon], [lat])
        expected = [int(v) for v in next(src.sample([(east, north)]))]
    assert point["values"] == expected, point


def test_titiler_renders_a_mosaic_of_a_registered_search(titiler, written, artifact_dir):
    code, registered = titiler.post_json("/searches/register", {"collections": [COLLECTION],
                                                               "filter-lang": "cql2-json"})
    assert code == 200, registered
    zoom = 14
    x, y = tile_of(*_centre(RGB_BOUNDS), zoom)
    status, body, _ = titiler.get(f"/searches/{registered['id']}/tiles/WebMercatorQuad/{zoom}/{x}/{y}.png"
                                  "?assets=data")
    assert status == 200, body[:500]
    (artifact_dir / "mosaic-tile.png").write_bytes(body)
    tile = read_png(body)
    assert opaque_fraction(tile) == 1.0
    # the same pixels as the item's own tile: the mosaic read the RGB item's COG
    status, item_body, _ = titiler.get(f"/collections/{COLLECTION}/items/{written['ids']['rgb']}"
                                       f"/tiles/WebMercatorQuad/{zoom}/{x}/{y}.png?assets=data")
    assert status == 200 and np.array_equal(read_png(item_body), tile)


def test_titiler_renders_the_dem_from_its_item_statistics(titiler, stac_api, written, artifact_dir):
    """A float32 DEM: titiler takes the item's band statistics as the input range when the request
    has no ``rescale``. Today that shows in JPEG only: for PNG, titiler-core 2.3's ``render_image``
    rescales the data but not its float mask, so the tile comes back fully transparent
    (docs/consumers.md). With ``rescale`` from the same statistics, as a render would give it, the
    PNG has the grey range and the nodata corner stays transparent."""
    item = written["ids"]["dem"]
    base = f"/collections/{COLLECTION}/items/{item}"
    stats = stac_api.get_json(base)["assets"]["data"]["bands"][0]["statistics"]
    tilejson = titiler.get_json(f"{base}/WebMercatorQuad/tilejson.json?assets=data")
    zoom = tilejson["maxzoom"] - 1  # one tile holding most of the raster and its nodata corner
    x, y = tile_of(*_centre(DEM_BOUNDS), zoom)
    tile_url = f"{base}/tiles/WebMercatorQuad/{zoom}/{x}/{y}"

    status, body, _ = titiler.get(f"{tile_url}.jpg?assets=data")
    assert status == 200, body[:500]
    (artifact_dir / "dem-no-rescale.jpg").write_bytes(body)
    grey = read_png(body)[..., 0]
    assert np.percentile(grey, 99) - np.percentile(grey, 1) > 100, "statistics should stretch the grey range"

    rescale = f"{stats['minimum']},{stats['maximum']}"
    status, body, _ = titiler.get(f"{tile_url}.png?assets=data&rescale={rescale}")
    assert status == 200, body[:500]
    (artifact_dir / "dem-rescaled.png").write_bytes(body)
    tile = read_png(body)
    shown = tile[..., 0][tile[..., 3] > 0]
    assert 0.3 < opaque_fraction(tile) < 1.0  # the raster and, around it, nothing
    assert shown.max() - shown.min() > 100


def test_titiler_draws_the_dem_from_its_render_with_no_request_parameters(titiler, written, artifact_dir):
    """The item's ``renders`` (rescale from its statistics, a colormap) become titiler-pgstac's
    render links; following one, with nothing added to it, gives a coloured, stretched PNG."""
    base = f"/collections/{COLLECTION}/items/{written['ids']['dem']}"
    renders = titiler.get_json(f"{base}/renders")
    render = renders["renders"]["default"]
    assert render["params"]["colormap_name"] == "viridis" and render["params"]["rescale"], render
    tilejson_link = next(link["href"] for link in render["links"] if link["href"].split("?")[0].endswith("tilejson.json"))
    tilejson_url = urllib.parse.unquote(tilejson_link).replace("{tileMatrixSetId}", "WebMercatorQuad")
    tilejson = titiler.get_json(tilejson_url)
    zoom = tilejson["maxzoom"] - 1
    x, y = tile_of(*_centre(DEM_BOUNDS), zoom)
    template = tilejson["tiles"][0]
    tile_url = template.replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y))
    status, body, headers = titiler.get(tile_url)
    assert status == 200 and headers["content-type"] == "image/png", body[:500]
    (artifact_dir / "dem-render.png").write_bytes(body)
    tile = read_png(body)
    assert 0.3 < opaque_fraction(tile) < 1.0  # the DEM, and its nodata corner transparent
    shown = tile[..., :3][tile[..., 3] > 0].astype(int)
    assert np.abs(shown[:, 0] - shown[:, 2]).mean() > 20, "viridis colours, not grey"
    assert np.percentile(shown[:, 1], 95) - np.percentile(shown[:, 1], 5) > 80, "stretched over the data"


def test_stac_browser_shows_landing_and_collection(stac_browser, stac_api, browser, written, artifact_dir):
    collection = stac_api.get_json(f"/collections/{COLLECTION}")
    with browser.page(stac_browser.route(), wait=[{"text": collection["title"]}]) as page:
        landing = page.screenshot(artifact_dir / "landing.png")
        card = page.box(".card")
        text = page.text()
        log = page.log()
    assert "stac-fastapi" in text and collection["description"] in text, text[:500]
    assert not log["errors"], log["errors"]
    assert any(url.startswith(stac_api.url) for url, _ in log["requests"])
    assert card is not None and non_background_fraction(landing, card) > 0.02  # the card's text is drawn

    collection_url = f"{stac_browser.catalog_url}collections/{COLLECTION}"
    with browser.page(stac_browser.route(collection_url),
                      wait=[{"text": collection["description"]}, {"selector": ".map canvas"}, {"idle": True}]) as page:
        title = page.box("h1")
        map_box = page.box(".map")
        shot = page.screenshot_until(artifact_dir / "collection.png",
                                     lambda image: colour_fraction(image, FOOTPRINT_ORANGE, map_box) > 0.002)
        text = page.text()
        item_links = page.evaluate("[...document.querySelectorAll('a')].filter(a => a.href.includes('/items/'))"
                                   ".map(a => a.href)")
        log = page.log()
    assert collection["title"] in text and collection["description"] in text, text[:1500]
    assert {link.rsplit("/", 1)[-1] for link in item_links} >= set(written["ids"].values()), item_links
    assert title is not None and non_background_fraction(shot, title) > 0.02
    # the map draws the collection's extent and both footprints (no basemap offline: all ours)
    assert map_box is not None and map_box[2] > 200 and map_box[3] > 150
    assert colour_fraction(shot, EXTENT_BLUE, map_box) > 0.002, dominant_colours(shot, map_box)
    assert colour_fraction(shot, FOOTPRINT_ORANGE, map_box) > 0.002, dominant_colours(shot, map_box)
    assert not log["errors"], log["errors"]


# STAC Browser draws an item's COG itself (ol-stac's WebGL GeoTIFF layer, geotiff.js range reads):
# which data host answers let it. The item is ours, its data href rewritten to a second origin that
# serves the COG; the catalog around it is a static one on a third.
DATA_HOSTS = {
    "rgb-cors-ranges": ("rgb", CorsPolicy(), True, True),
    "dem-cors-ranges": ("dem", CorsPolicy(), True, True),
    "rgb-no-cors": ("rgb", None, True, False),
    "rgb-no-ranges": ("rgb", CorsPolicy(), False, False),
}


@pytest.mark.parametrize("case", list(DATA_HOSTS))
def test_stac_browser_draws_the_cog_only_from_a_cors_range_host(case, stac_api, written, browser, stac_browser_for,
                                                                  tmp_path, artifact_dir):
    name, cors, ranges, drawn = DATA_HOSTS[case]
    item = stac_api.get_json(f"/collections/{COLLECTION}/items/{written['ids'][name]}")
    with StaticSite(root=written["storage"] / "cogs", cors=cors, ranges=ranges) as data, \
            StaticSite(root=tmp_path) as catalog_site:
        item["assets"] = {"data": {**item["assets"]["data"], "href": f"{data.url}/rasters/smoke/{name}.tif"}}
        item["links"] = [{"rel": rel, "href": "./catalog.json", "type": "application/json"}
                         for rel in ("root", "parent")]
        (tmp_path / "item.json").write_text(json.dumps(item))
        (tmp_path / "catalog.json").write_text(json.dumps({
            "type": "Catalog", "stac_version": "1.1.0", "id": "cog-layer", "description": "one item",
            "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"},
                      {"rel": "item", "href": "./item.json", "type": "application/geo+json"}]}))
        site = stac_browser_for(f"{catalog_site.url}/catalog.json")
        with browser.page(site.route(f"{catalog_site.url}/item.json"),
                          wait=[{"selector": ".map canvas"}, {"idle": True}]) as page:
            map_box = page.box(".map")
            # an outline alone covers ~2% of the map; the drawn COG a third of it
            shot = page.screenshot_until(artifact_dir / f"{case}.png",
                                         lambda image: non_background_fraction(image, map_box) > 0.2,
                                         timeout=15 if drawn else 5)
        data_requests = list(data.requests)
    filled = non_background_fraction(shot, map_box)
    assert data_requests and data_requests[0].range, "geotiff.js reads the COG with range requests"
    if not drawn:
        assert filled < 0.05, (case, filled)
        return
    assert filled > 0.2, (case, filled, dominant_colours(shot, map_box))
    assert all(r.status == 206 for r in data_requests if r.method == "GET")
    inside = crop(shot, map_box)
    drawn_px = inside[(np.abs(inside[..., :3].astype(int) - background_colour(inside)) > 12).any(axis=-1)]
    spread = drawn_px[:, :3].astype(int)
    if name == "rgb":  # three different bands: coloured
        assert np.abs(spread[:, 0] - spread[:, 2]).mean() > 5
    else:  # one float band stretched by its statistics (bands[].statistics): greys, light and dark
        assert np.abs(spread[:, 0] - spread[:, 2]).mean() < 8
        assert np.percentile(spread[:, 0], 95) - np.percentile(spread[:, 0], 5) > 80
