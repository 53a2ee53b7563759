"""The consumers pointed at what our jobs wrote, configured only as the README's "Pointing STAC
consumers at the catalog" says.

Azure backend: the app (function_app on the embedded runtime, Azurite with private containers,
pgSTAC) runs a ``cog_conversion``, a ``process_tiled_raster`` and a ``sync_container`` over its job
API; stac-fastapi-pgstac searches what they wrote and titiler-pgstac, with the documented Azure
environment (a connection string for GDAL's ``/vsiaz/`` and ``RIO_TILER_STAC_ALTERNATE_KEY=vsiaz``),
renders an item, the tiles' mosaic and the DEM's render.

Local backend: ``cli.py demo`` on embedded defaults, then the embedded host serving the local store
and the static catalog under ``/files`` (``cli.local_mounts``, as ``cli.py serve`` does); rio-tiler's
``STACReader`` reads an item over HTTP and STAC Browser opens the catalog. That the catalog copied
elsewhere with its storage still validates and resolves is
``tests/jobs/test_demo.py::test_the_static_catalog_moves_with_its_storage``.
"""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import rasterio
import rasterio.warp

from consumers import (TITILER_ENV, background_colour, colour_fraction, consumer_python, crop, dominant_colours,
                       lonlat_centre, non_background_fraction, opaque_fraction, read_png, tile_of,
                       titiler_azure_env)
from dashboard_checks import wait_for_job
from http_client import http
from local_runtime import LocalRuntime
from raster_factory import write_raster

pytestmark = pytest.mark.services

UTM33 = "EPSG:32633"
# Containers of this module (Azurite is shared by the session): private, as the app creates them.
INPUT, OUTPUT, SYSTEM, SYNCED = "catalog-rasters", "catalog-cogs", "catalog-system", "catalog-survey"
COGS, TILES, SURVEY = "catalog-converted", "catalog-tiles", "catalog-survey"
SURVEY_TITLE = "Survey rasters, spring 2022"
# Known places (UTM 33N, around 45N 15E, each >10 km from the others) and times.
RGB_BOUNDS = (500000.0, 4980000.0, 505120.0, 4985120.0)
DEM_BOUNDS = (520000.0, 4980000.0, 527680.0, 4985120.0)
BIG_BOUNDS = (540000.0, 4980000.0, 550240.0, 4990240.0)  # 1024 px of 10 m: four 512 px tiles
SURVEY_BOUNDS = [(500000.0 + 8000 * i, 5010000.0, 502560.0 + 8000 * i, 5012560.0) for i in range(3)]
RGB_TIME, DEM_TIME, BIG_TIME, SURVEY_TIME = ("2024:03:01 10:00:00", "2025:05:01 12:00:00", "2023:07:15 09:30:00",
                                             "2022:04:20 08:00:00")
# STAC Browser 4.0.1 (ol-stac) outlines the object a page shows in this blue (an item page: its
# footprint; a collection page: its extent, with its items' footprints orange).
OUTLINE_BLUE = (51, 153, 204)


def _tagged(path, when):
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(TIFFTAG_DATETIME=when)
    return path



def _lonlat_bbox(bounds, margin=0.002) -> str:
    west, south, east, north = rasterio.warp.transform_bounds(UTM33, "EPSG:4326", *bounds)
    return f"{west + margin},{south + margin},{east - margin},{north - margin}"


@pytest.fixture(scope="module")
def azure_jobs(azurite_connection_string, pgstac_dsn, tmp_path_factory):
    """The three jobs run by the app over HTTP on Azurite + pgSTAC; the ids of what they wrote."""
    from settings import get_settings

    inputs = tmp_path_factory.mktemp("inputs")
    rgb = _tagged(write_raster(inputs / "rgb.tif", width=512, height=512, count=3, crs=UTM33, bounds=RGB_BOUNDS),
                  RGB_TIME)
    dem = _tagged(write_raster(inputs / "dem.tif", width=768, height=512, dtype="float32", crs=UTM33,
                               bounds=DEM_BOUNDS, nodata=-9999.0), DEM_TIME)
    big = _tagged(write_raster(inputs / "big.tif", width=1024, height=1024, count=3, crs=UTM33, bounds=BIG_BOUNDS),
                  BIG_TIME)
    survey = [_tagged(write_raster(inputs / f"survey-{i}.tif", width=256, height=256, crs=UTM33, bounds=b),
                      SURVEY_TIME) for i, b in enumerate(SURVEY_BOUNDS)]
    env = {"RMH_STORAGE_BACKEND": "azure", "RMH_STORAGE_CONNECTION_STRING": azurite_connection_string,
           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": pgstac_dsn, "RMH_INPUT_CONTAINER": INPUT,
           "RMH_OUTPUT_CONTAINER": OUTPUT, "RMH_SYSTEM_CONTAINER": SYSTEM}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_ASSET_BASE_URL", "RMH_STORAGE_ACCOUNT_URL"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        try:
            import activities
            import function_app

            store = activities.blob_store()
            for container in (INPUT, SYNCED):
                store.create_container(container)
            store.upload_from_path(INPUT, "scenes/rgb.tif", rgb)
            store.upload_from_path(INPUT, "scenes/dem.tif", dem)
            store.upload_from_path(INPUT, "mosaics/big.tif", big)
            for path in survey:
                store.upload_from_path(SYNCED, f"2022/{path.name}", path)
            jobs = {
                "cog_conversion": {"blobs": ["scenes/rgb.tif", "scenes/dem.tif"], "collection": COGS},
                "process_tiled_raster": {"blob": "mosaics/big.tif", "tile_size": 512, "collection": TILES},
                "sync_container": {"container": SYNCED, "collection": SURVEY, "collection_title": SURVEY_TITLE},
            }
            with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite",
                              port=0) as runtime:
                started = {}
                for operation, body in jobs.items():  # all three at once, as a user might
                    code, answer = http("POST", f"{runtime.base_url}/api/jobs/{operation}", body)
                    assert code == 202, (operation, code, answer)
                    started[operation] = answer["statusQueryGetUri"]
                statuses = {operation: wait_for_job(url) for operation, url in started.items()}
        finally:
            get_settings.cache_clear()
    for operation, status in statuses.items():
        assert status["runtimeStatus"] == "Completed", (operation, status)
        assert status["output"]["failed"] == 0, (operation, status["output"])
    done = {operation: status["output"]["done"] for operation, status in statuses.items()}
    assert done == {"cog_conversion": 2, "process_tiled_raster": 4, "sync_container": 3}, done
    import stac_ops

    return {"rgb": stac_ops.item_id_for_blob(INPUT, "scenes/rgb.tif"),
            "dem": stac_ops.item_id_for_blob(INPUT, "scenes/dem.tif"),
            "survey": {stac_ops.item_id_for_blob(SYNCED, f"2022/{p.name}") for p in survey},
            "statuses": statuses, "big": big}


@pytest.fixture(scope="module")
def titiler_env(azurite_connection_string) -> dict[str, str]:
    """The README's titiler-pgstac settings for the Azure backend (and nothing else)."""
    return {**TITILER_ENV, **titiler_azure_env(azurite_connection_string, alternate_key="vsiaz")}


def _search(stac_api, **params) -> list[dict]:
    query = urllib.parse.urlencode({"limit": 100, **params})
    return stac_api.get_json(f"/search?{query}")["features"]


def _ids(features) -> set[str]:
    return {f["id"] for f in features}


def test_the_jobs_wrote_private_blobs_and_items_pointing_at_them(stac_api, azure_jobs):
    item = stac_api.get_json(f"/collections/{COGS}/items/{azure_jobs['rgb']}")
    data = item["assets"]["data"]
    container, blob = urllib.parse.urlsplit(data["href"]).path.split("/", 3)[2:]  # Azurite: /<account>/<c>/<b>
    assert container == OUTPUT and data["alternate"]["vsiaz"]["href"] == f"/vsiaz/{OUTPUT}/{blob}"
    with pytest.raises(urllib.error.HTTPError) as refused:  # containers stay private
        urllib.request.urlopen(data["href"], timeout=10)
    assert refused.value.code == 403, refused.value.code


def test_stac_api_search_counts_by_bbox_datetime_and_cql2(stac_api, azure_jobs):
    tiles = _search(stac_api, collections=TILES)
    assert len(tiles) == 4, _ids(tiles)
    everything = _search(stac_api, collections=",".join((COGS, TILES, SURVEY)))
    assert len(everything) == 2 + 4 + 3
    # bbox: the tiled raster's place holds its four tiles and nothing else
    assert _ids(_search(stac_api, bbox=_lonlat_bbox(BIG_BOUNDS))) == _ids(tiles)
    assert _ids(_search(stac_api, bbox=_lonlat_bbox(RGB_BOUNDS))) == {azure_jobs["rgb"]}
    # datetime: the tiles carry their source's time, so its year finds them all (and only them)
    assert _ids(_search(stac_api, datetime="2023-01-01T00:00:00Z/2023-12-31T23:59:59Z")) == _ids(tiles)
    assert {f["properties"]["datetime"] for f in tiles} == {"2023-07-15T09:30:00Z"}
    assert _ids(_search(stac_api, datetime="2022-04-20T08:00:00Z")) == azure_jobs["survey"]
    # CQL2 on our own properties, across collections
    text = {"filter-lang": "cql2-text"}
    assert _ids(_search(stac_api, filter=f"\"rmh:source_container\" = '{SYNCED}'", **text)) == azure_jobs["survey"]
    assert _ids(_search(stac_api, filter="\"rmh:band_count\" = 3", **text)) == {azure_jobs["rgb"]} | _ids(tiles)
    code, body = stac_api.post_json("/search", {
        "filter-lang": "cql2-json", "limit": 100,
        "filter": {"op": "=", "args": [{"property": "rmh:data_type"}, "float32"]}})
    assert code == 200 and _ids(body["features"]) == {azure_jobs["dem"]}, body


def test_collections_have_distinct_titles(stac_api, azure_jobs):
    collections = {c["id"]: c for c in stac_api.get_json("/collections")["collections"]}
    ours = {cid: collections[cid]["title"] for cid in (COGS, TILES, SURVEY)}
    assert len(set(ours.values())) == 3, ours
    assert ours[SURVEY] == SURVEY_TITLE
    assert "converted" in ours[COGS] and "tiles of" in ours[TILES], ours


def test_titiler_renders_an_item_of_a_private_container(titiler, azure_jobs, artifact_dir):
    base = f"/collections/{COGS}/items/{azure_jobs['rgb']}"
    x, y = tile_of(*lonlat_centre(UTM33, RGB_BOUNDS), 14)  # a tile inside the raster
    status, body, headers = titiler.get(f"{base}/tiles/WebMercatorQuad/14/{x}/{y}.png?assets=data")
    assert status == 200 and headers["content-type"] == "image/png", body[:500]
    (artifact_dir / "rgb-item-tile.png").write_bytes(body)
    tile = read_png(body)
    assert opaque_fraction(tile) == 1.0
    rgb = tile[..., :3].astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 5 and rgb.std() > 10  # three different bands, not flat


def test_titiler_renders_the_tiles_mosaic_of_a_registered_search(titiler, stac_api, azure_jobs, artifact_dir):
    code, registered = titiler.post_json("/searches/register", {"collections": [TILES], "filter-lang": "cql2-json"})
    assert code == 200, registered
    zoom = 13  # a 3.4 km tile around the raster's centre, where its four 5 km tiles meet
    x, y = tile_of(*lonlat_centre(UTM33, BIG_BOUNDS), zoom)
    status, body, _ = titiler.get(f"/searches/{registered['id']}/tiles/WebMercatorQuad/{zoom}/{x}/{y}.png"
                                        "?assets=data")
    assert status == 200, body[:500]
    (artifact_dir / "tiles-mosaic.png").write_bytes(body)
    # the tile spans several tile items (the mosaic's own answer for that tile)
    spanned = titiler.get_json(f"/searches/{registered['id']}/tiles/WebMercatorQuad/{zoom}/{x}/{y}/assets")
    assert len(spanned) >= 2 and {a["id"] for a in spanned} <= _ids(_search(stac_api, collections=TILES)), spanned
    tile = read_png(body)
    assert opaque_fraction(tile) == 1.0
    rgb = tile[..., :3].astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 5 and rgb.std() > 10
    # and across the seams it is the source's picture: rio-tiler's tile of the original raster
    source_png = artifact_dir / "source-tile.png"
    consumer_python(SOURCE_TILE, str(azure_jobs["big"]), str(x), str(y), str(zoom), str(source_png))
    difference = np.abs(rgb - read_png(source_png)[..., :3].astype(int))
    assert difference.mean() < 0.5, difference.mean()  # seen: 0.0002; the image moved 64 rows: ~17


SOURCE_TILE = """
import json, sys
from rio_tiler.io import Reader
with Reader(sys.argv[1]) as src:
    img = src.tile(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
with open(sys.argv[5], "wb") as out:
    out.write(img.render(img_format="PNG"))
print(json.dumps({"ok": True}))
"""


def test_titiler_draws_the_dem_through_its_render(titiler, azure_jobs, artifact_dir):
    """The DEM's ``renders.default`` link, followed with nothing added: no ``rescale`` in the request."""
    base = f"/collections/{COGS}/items/{azure_jobs['dem']}"
    render = titiler.get_json(f"{base}/renders/default")
    link = next(l["href"] for l in render["links"] if l["href"].split("?")[0].endswith("tilejson.json"))
    tilejson = titiler.get_json(urllib.parse.unquote(link).replace("{tileMatrixSetId}", "WebMercatorQuad"))
    zoom = tilejson["maxzoom"] - 1  # one tile holding most of the raster and its nodata surroundings
    x, y = tile_of(*lonlat_centre(UTM33, DEM_BOUNDS), zoom)
    tile_url = tilejson["tiles"][0].replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y))
    assert "rescale=" in tile_url and "colormap_name=" in tile_url, tile_url  # the render's parameters, not ours
    status, body, headers = titiler.get(tile_url)
    assert status == 200 and headers["content-type"] == "image/png", body[:500]
    (artifact_dir / "dem-render.png").write_bytes(body)
    tile = read_png(body)
    assert 0.3 < opaque_fraction(tile) < 1.0
    shown = tile[..., :3][tile[..., 3] > 0].astype(int)
    assert np.abs(shown[:, 0] - shown[:, 2]).mean() > 20, "colormap colours, not grey"
    assert np.percentile(shown[:, 1], 95) - np.percentile(shown[:, 1], 5) > 80, "stretched over the data"


# --------------------------------------------------------------------------------------------
# Local backend: the demo, then the embedded host's /files


@pytest.fixture(scope="module")
def demo_host(tmp_path_factory):
    """``cli.py demo`` on embedded defaults into a temp dir, then the embedded host with the mounts
    ``cli.py serve`` gives it (``cli.local_mounts``): the local store and the static catalog."""
    import azure.durable_functions as df

    import cli
    from settings import get_settings

    work = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        for key in ("RMH_STORAGE_BACKEND", "RMH_CATALOG_BACKEND", "RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN",
                    "RMH_ASSET_BASE_URL", "RMH_INPUT_CONTAINER", "RMH_OUTPUT_CONTAINER", "RMH_SYSTEM_CONTAINER"):
            patch.delenv(key, raising=False)
        patch.setenv("RMH_STORAGE_LOCAL_DIR", str(work / "storage"))
        patch.setenv("RMH_STATIC_CATALOG_DIR", str(work / "catalog"))
        get_settings.cache_clear()
        try:
            out = io.StringIO()
            code = cli.main(["demo", "--state", str(work / "state")], out=out)
            assert code == 0, out.getvalue()
            mounts = cli.local_mounts(get_settings())
        finally:
            get_settings.cache_clear()
    assert set(mounts) == {"/files/storage", "/files/catalog"}, mounts
    # a host with only the /files mounts: what serves the files is local_files, as under `cli.py serve`
    with LocalRuntime(df.DFApp(), db_path=work / "files.sqlite", port=0, files=mounts) as host:
        yield {"url": host.base_url, "catalog": f"{host.base_url}/files/catalog/catalog.json", "dir": work}


def _demo_item(demo_host, collection: str, blob: str) -> tuple[str, dict]:
    """URL and JSON of the demo item of ``collection`` whose source is ``blob``."""
    folder = demo_host["dir"] / "catalog" / collection / "items"
    for path in sorted(folder.glob("*.json")):
        item = json.loads(path.read_text())
        if item["properties"]["rmh:source_blob"] == blob:
            return f"{demo_host['url']}/files/catalog/{collection}/items/{urllib.parse.quote(path.name)}", item
    raise AssertionError(f"no item of {blob} in {collection}")


STAC_READER_TILE = """
import json, sys
import numpy as np
from rio_tiler.io import STACReader
with STACReader(sys.argv[1]) as stac:
    href = stac.item.assets["data"].get_absolute_href()
    west, south, east, north = stac.get_geographic_bounds("epsg:4326")
    lon, lat = (west + east) / 2, (south + north) / 2
    tile = stac.tms.tile(lon, lat, int(sys.argv[2]))
    img = stac.tile(tile.x, tile.y, tile.z, assets=["data"])
    stats = stac.item.assets["data"].extra_fields["bands"][0]["statistics"]
    img.rescale(in_range=((stats["minimum"], stats["maximum"]),))
    with open(sys.argv[3], "wb") as out:
        out.write(img.render(img_format="PNG"))
print(json.dumps({"href": href, "tile": [tile.x, tile.y, tile.z], "valid": float(np.mean(~img.array.mask)),
                  "min": float(img.array.min()), "max": float(img.array.max())}))
"""


def test_rio_tiler_reads_a_demo_item_over_http_from_the_embedded_host(demo_host, artifact_dir):
    """rio-tiler's STACReader on the item's URL: the item's relative data href resolves against that
    URL to the host's ``/files/storage`` mount, and GDAL reads the COG from it with range requests."""
    url, item = _demo_item(demo_host, "demo", "demo/sample-dem.tif")
    assert not item["assets"]["data"]["href"].startswith(("/", "http")), item["assets"]["data"]["href"]
    png = artifact_dir / "stac-reader-tile.png"
    got = consumer_python(STAC_READER_TILE, url, "10", str(png))  # no GDAL or rio-tiler setting at all
    assert got["href"] == f"{demo_host['url']}/files/storage/cogs/rasters/demo/sample-dem.tif", got
    assert got["valid"] > 0.3 and got["max"] - got["min"] > 100, got
    tile = read_png(png)
    assert 0.3 < opaque_fraction(tile) <= 1.0
    grey = tile[..., 0][tile[..., 3] > 0].astype(int)
    assert np.percentile(grey, 95) - np.percentile(grey, 5) > 80, "the DEM's values, stretched"


def test_stac_browser_lists_the_demo_collections_with_distinct_titles(demo_host, stac_browser_for, browser,
                                                                      artifact_dir):
    titles = {cid: json.loads((demo_host["dir"] / "catalog" / cid / "collection.json").read_text())["title"]
              for cid in ("demo", "demo-tiles", "demo-sync")}
    assert len(set(titles.values())) == 3, titles
    site = stac_browser_for(demo_host["catalog"])
    with browser.page(site.route(), wait=[{"text": t} for t in titles.values()]) as page:
        landing = page.screenshot(artifact_dir / "landing.png")
        cards = page.evaluate("[...document.querySelectorAll('.card')].map(c => c.innerText)")
        card = page.box(".card")
        log = page.log()
    for title in titles.values():
        assert sum(title in text for text in cards) == 1, (title, cards)
    assert len(cards) == 3 and card is not None and non_background_fraction(landing, card) > 0.02  # drawn
    assert not log["errors"], log["errors"]


def test_stac_browser_draws_a_demo_item_footprint_assets_and_cog(demo_host, stac_browser_for, browser,
                                                                 artifact_dir):
    url, item = _demo_item(demo_host, "demo", "demo/sample-dem.tif")
    cog_url = f"{demo_host['url']}/files/storage/cogs/rasters/demo/sample-dem.tif"
    site = stac_browser_for(demo_host["catalog"])
    with browser.page(site.route(url), wait=[{"text": item["properties"]["title"]}, {"selector": ".map canvas"},
                                             {"idle": True}]) as page:
        map_box = page.box(".map")
        # an outline alone covers ~2% of the map; the drawn COG much more
        shot = page.screenshot_until(artifact_dir / "item.png",
                                     lambda image: non_background_fraction(image, map_box) > 0.2)
        text = page.text()
        log = page.log()
    # the asset list: data and source by title; the thumbnail has its own tab beside the map
    listed = {key: asset["title"] for key, asset in item["assets"].items() if key != "thumbnail"}
    assert set(listed) == {"data", "source"} and "thumbnail" in item["assets"]
    assets_text = text[text.index("Assets"):]
    assert all(title in assets_text for title in listed.values()), (listed, assets_text[:500])
    assert "Thumbnails" in text
    assert map_box is not None and map_box[2] > 200 and map_box[3] > 150
    filled = non_background_fraction(shot, map_box)
    assert filled > 0.2, (filled, dominant_colours(shot, map_box))
    assert colour_fraction(shot, OUTLINE_BLUE, map_box) > 0.002, dominant_colours(shot, map_box)  # footprint
    inside = crop(shot, map_box)
    drawn = inside[(np.abs(inside[..., :3].astype(int) - background_colour(inside)) > 12).any(axis=-1)][:, :3]
    drawn = drawn.astype(int)  # one float band stretched by its statistics: greys, dark and light
    assert np.abs(drawn[:, 0] - drawn[:, 2]).mean() < 8
    assert np.percentile(drawn[:, 0], 95) - np.percentile(drawn[:, 0], 5) > 80
    cog_reads = [status for request_url, status in log["requests"] if request_url == cog_url]
    assert cog_reads and set(cog_reads) == {206}, [r for r in log["requests"] if "/files/" in r[0]]
    assert not log["errors"], log["errors"]
