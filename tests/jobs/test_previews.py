"""Preview tiles (``GET /api/previews/{collection}/{item}/{asset}/{z}/{x}/{y}``) on Azurite + pgSTAC,
read through ``/vsiaz/`` as the jobs read: the demo DEM and an 8-bit RGB image converted by a real
``cog_conversion``, a strip TIFF cataloged in place. Each tile is rio-tiler's own tile of the COG
in the item's render, pixel for pixel; a tile reads only the overview and blocks it needs (the
bytes a ranged HTTP host served, counted); everything a client can get wrong is a 4xx that names it.
"""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import rasterio
from PIL import Image

import cli
import previews
from consumers import StaticSite, lonlat_centre, tile_of
from dashboard_checks import KEY, call, wait_for_job
from local_runtime import LocalRuntime
from raster_factory import write_raster

pytestmark = pytest.mark.services

COLLECTION, RAW = "previews", "previews-raw"
RGB_BOUNDS = (500000.0, 4980000.0, 505120.0, 4985120.0)  # UTM 33N


@pytest.fixture(scope="module")
def keyed(service_env, tmp_path_factory):
    import function_app

    with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("previews") / "hub.sqlite", port=0,
                      function_keys={"default": KEY}) as runtime:
        yield runtime.base_url


@pytest.fixture(scope="module")
def items(keyed, store, tmp_path_factory):
    """The demo DEM and an RGB image converted to COGs; a 4096² strip TIFF cataloged in place."""
    import activities
    import stac_ops

    work = tmp_path_factory.mktemp("preview-inputs")
    # The demo DEM generator at a size one conversion task takes (this module allows 1 Mpixel a task).
    dem = cli.write_sample_raster(work / "sample-dem.tif", width=1024, height=768)
    rgb = write_raster(work / "rgb.tif", width=1024, height=1024, count=3, crs="EPSG:32633", bounds=RGB_BOUNDS)
    strips = work / "strips.tif"
    with rasterio.open(strips, "w", driver="GTiff", width=4096, height=4096, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.transform.from_origin(600000, 5000000, 5, 5),
                       compress="deflate") as dst:
        dst.write(np.tile((np.arange(4096) % 251).astype("uint8"), (4096, 1)), 1)
    store.create_container("rasters")
    for name, path in (("previews/sample-dem.tif", dem), ("previews/rgb.tif", rgb), ("raw/strips.tif", strips)):
        store.upload_from_path("rasters", name, path)
    for operation, body in (("cog_conversion", {"blobs": ["previews/sample-dem.tif", "previews/rgb.tif"],
                                                "collection": COLLECTION}),
                            ("catalog_file", {"blob": "raw/strips.tif", "collection": RAW})):
        code, answer, _ = call(f"{keyed}/api/jobs/{operation}", key=KEY, method="POST", body=body)
        assert code == 202, answer
        status = wait_for_job(json.loads(answer)["statusQueryGetUri"])
        assert status["runtimeStatus"] == "Completed" and status["output"]["failed"] == 0, status["output"]
    catalog = activities.catalog()
    found = {name: catalog.get_item(collection, stac_ops.item_id_for_blob("rasters", blob, output_container=None))
             for name, collection, blob in (("dem", COLLECTION, "previews/sample-dem.tif"),
                                            ("rgb", COLLECTION, "previews/rgb.tif"), ("strips", RAW, "raw/strips.tif"))}
    cogs = tmp_path_factory.mktemp("cogs")
    local = {name: store.download_to_path("cogs", f"rasters/previews/{name}.tif", cogs / f"{name}.tif")
             for name in ("sample-dem", "rgb")}
    return {"items": found, "cogs": {"dem": local["sample-dem"], "rgb": local["rgb"]}, "dem_source": dem}


def _tile(keyed, collection, item, asset, z, x, y, key=KEY):
    return call(f"{keyed}/api/previews/{collection}/{item}/{asset}/{z}/{x}/{y}", key=key)


def _rio_tiler(path, z, x, y, render) -> np.ndarray:
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader

    with Reader(str(path)) as reader:
        image = reader.tile(x, y, z, tilesize=256)
    if render.get("rescale"):
        image.rescale(in_range=[tuple(r) for r in render["rescale"]])
    colormap = cmap.get(render["colormap_name"]) if render.get("colormap_name") else None
    return np.asarray(Image.open(io.BytesIO(image.render(img_format="PNG", colormap=colormap))).convert("RGBA"))


def _centre_tiles(path, zooms):
    with rasterio.open(path) as src:
        lon, lat = lonlat_centre(str(src.crs), tuple(src.bounds))
    return [(z, *tile_of(lon, lat, z)) for z in zooms]


def test_tiles_are_rio_tilers_tiles_of_the_cog_in_the_items_render(keyed, items):
    for name, zooms in (("dem", (11, 13, 15)), ("rgb", (14, 16, 18))):
        item = items["items"][name]
        render = item.properties["renders"]["default"]
        for z, x, y in _centre_tiles(items["cogs"][name], zooms):
            code, body, headers = _tile(keyed, COLLECTION, item.id, "data", z, x, y)
            assert code == 200 and headers["Content-Type"] == "image/png", (name, z, body[:300])
            served = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
            assert served.shape == (256, 256, 4)
            assert np.array_equal(served, _rio_tiler(items["cogs"][name], z, x, y, render)), (name, z)
            opaque = served[served[..., 3] > 0]
            assert len(opaque) > 0.5 * 256 * 256 and len(np.unique(opaque[:, :3], axis=0)) > 20, (name, z)
    assert items["items"]["dem"].properties["renders"]["default"]["colormap_name"] == "viridis"


def test_nodata_and_the_outside_of_the_raster_are_transparent(keyed, items):
    item = items["items"]["dem"]
    with rasterio.open(items["cogs"]["dem"]) as src:
        lon, lat = lonlat_centre(str(src.crs), (src.bounds.left, src.bounds.bottom, src.bounds.left, src.bounds.top))
        masked = (src.read_masks(1) == 0).mean()
    assert masked > 0.01, "the demo DEM has nodata (sea) to show as transparent"
    z = 10
    x, y = tile_of(lon, lat, z)  # on the raster's western edge
    code, body, _ = _tile(keyed, COLLECTION, item.id, "data", z, x, y)
    assert code == 200, body[:300]
    alpha = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))[..., 3]
    assert 0.05 < (alpha == 0).mean() < 0.95 and set(np.unique(alpha)) <= {0, 255}


@pytest.fixture(scope="module")
def demo_cog(tmp_path_factory):
    """The full-size demo DEM (3,072 x 2,048 float32) as our COG: 512² blocks, 3 overviews."""
    import geo_ops

    work = tmp_path_factory.mktemp("demo-cog")
    cog = work / "served" / "sample-dem.tif"
    cog.parent.mkdir()
    geo_ops.to_cog(cli.write_sample_raster(work / "sample-dem.tif"), cog)
    return cog


def test_a_tile_reads_only_the_overview_and_blocks_it_needs(demo_cog):
    """The demo DEM's COG over a ranged HTTP host: the bytes each tile reads, counted. Zoomed out,
    a tile reads the header and part of the smallest overview; zoomed in, at most the 4 blocks
    its window touches (the largest block of the COG bounds each)."""
    size = demo_cog.stat().st_size
    with rasterio.open(demo_cog) as src:
        rows, cols = math.ceil(src.height / 512), math.ceil(src.width / 512)
        largest_block = max(src.block_size(1, r, c) for r in range(rows) for c in range(cols))
        assert src.overviews(1) == [2, 4, 8] and src.block_shapes == [(512, 512)]
    style = previews.PreviewStyle(rescale=[[0, 2000]], colormap_name="viridis")
    with StaticSite(root=demo_cog.parent) as site, rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for z, x, y in _centre_tiles(demo_cog, (8, 10, 12, 14)):
            site.requests.clear()
            with rasterio.open(f"/vsicurl/{site.url}/{demo_cog.name}") as dataset:
                png = previews.render_tile(dataset, z, x, y, style)
            ranges = [r.range for r in site.requests if r.method == "GET"]
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and ranges and all(ranges), "ranged reads only"
            read = sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for r in ranges)
            header = 262144  # GDAL's first read of a file (the IFDs of every level)
            assert read <= header + 4 * largest_block, f"zoom {z}: read {read:,} bytes"
            assert read < (0.03 if z <= 8 else 0.15) * size, f"zoom {z}: read {read:,} of {size:,} bytes"


def test_a_raster_without_overviews_is_refused_where_a_tile_would_read_too_much(keyed, items):
    item = items["items"]["strips"]
    assert item.assets["data"].media_type.startswith("image/tiff")
    centre = (600000 + 4096 * 5 / 2, 5000000 - 4096 * 5 / 2)
    lon, lat = lonlat_centre("EPSG:32633", (*centre, *centre))
    code, body, _ = _tile(keyed, RAW, item.id, "data", 9, *tile_of(lon, lat, 9))
    assert code == 422 and "zoom in" in json.loads(body)["error"], body[:300]
    code, body, _ = _tile(keyed, RAW, item.id, "data", 15, *tile_of(lon, lat, 15))
    assert code == 200 and body[:4] == b"\x89PNG", body[:300]


def test_bad_tile_requests_are_4xx_that_say_what_is_wrong(keyed, items):
    dem = items["items"]["dem"].id
    z, x, y = _centre_tiles(items["cogs"]["dem"], (10,))[0]
    assert _tile(keyed, COLLECTION, dem, "data", z, x, y, key=None)[0] == 401
    assert _tile(keyed, COLLECTION, dem, "data", z, x, y, key="wrong")[0] == 401
    cases = {
        (COLLECTION, dem, "data", 25, 0, 0): 400, (COLLECTION, dem, "data", 3, 8, 0): 400,
        (COLLECTION, dem, "data", "a", 0, 0): 400, (COLLECTION, dem, "data", -1, 0, 0): 400,
        (COLLECTION, dem, "data", 10, 0, 0): 404,  # outside the raster
        (COLLECTION, dem, "thumbnail", z, x, y): 404, (COLLECTION, dem, "nope", z, x, y): 404,
        (COLLECTION, "no-such-item", "data", z, x, y): 404, ("no-such-collection", dem, "data", z, x, y): 404,
        ("%2e%2e", dem, "data", z, x, y): 400, (COLLECTION, dem, "da:ta!", z, x, y): 400,
    }
    for (collection, item, asset, tz, tx, ty), expected in cases.items():
        code, body, _ = _tile(keyed, collection, item, asset, tz, tx, ty)
        assert code == expected and json.loads(body).get("error"), ((collection, item, asset, tz, tx, ty), code, body[:200])


def test_an_asset_outside_this_services_storage_is_never_opened(keyed, items):
    import activities

    catalog = activities.catalog()
    stac = items["items"]["rgb"].to_dict(include_self_link=False, transform_hrefs=False)
    z, x, y = _centre_tiles(items["cogs"]["rgb"], (14,))[0]
    for number, href in enumerate((str(items["dem_source"]), "http://127.0.0.1:9/x.tif", "/vsicurl/http://x/y.tif",
                                   "https://elsewhere.blob.core.windows.net/cogs/x.tif")):
        stac["id"] = f"elsewhere-{number}"
        stac["assets"]["data"]["href"] = href
        catalog.upsert_items([stac])
        code, body, _ = _tile(keyed, COLLECTION, stac["id"], "data", z, x, y)
        assert code == 409 and "storage" in json.loads(body)["error"], (href, code, body[:300])
