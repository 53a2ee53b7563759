"""STAC made elsewhere, imported by the app and read by the real consumers: a pystac catalog
(relative hrefs) and an NDJSON export (absolute ``/vsiaz/`` hrefs), each with a GeoTIFF that is not
a COG, a COG and a PNG thumbnail, go through ``import_stac`` (embedded runtime, local storage,
pgSTAC); stac-fastapi-pgstac searches the imported items and titiler-pgstac renders both the
converted GeoTIFF and the COG that was kept, with the source rasters' own pixel values."""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp

from consumers import consumer_python, opaque_fraction, read_png, tile_of
from dashboard_checks import wait_for_job
from local_runtime import LocalRuntime
from stac_sources import SCENE_BOUNDS, SCENE_TIMES, item_dicts, source_files, static_catalog

pytestmark = pytest.mark.services

CATALOG_COLLECTION = "vendor-scenes"
EXPORT_COLLECTION = "vendor-export"


@pytest.fixture(scope="module")
def imported(pgstac_dsn, tmp_path_factory):
    """The vendor's STAC imported by the app itself, over HTTP, into pgSTAC."""
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
        source = tmp_path_factory.mktemp("vendor")
        static_catalog(source / "stac", scenes=2)
        store.create_container("vendor")
        for path in sorted(p for p in (source / "stac").rglob("*") if p.is_file()):
            store.upload_from_path("vendor", f"stac/{path.relative_to(source / 'stac').as_posix()}", path)
        files = source_files(source / "export", 2)
        for key, path in files.items():
            store.upload_from_path("vendor", f"export/{path.name}", path)
        items = item_dicts({"exported": {k: f"/vsiaz/vendor/export/{p.name}" for k, p in files.items()}})
        # the export's item is scene 2 of the vendor's: its place and time
        items[0].update(bbox=_scene_bbox(2), geometry=_polygon(_scene_bbox(2)))
        items[0]["properties"]["datetime"] = SCENE_TIMES[2].isoformat().replace("+00:00", "Z")
        store.upload_bytes("vendor", "export/items.ndjson", "".join(json.dumps(i) + "\n" for i in items).encode())
        with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite", port=0) as rt:
            outputs = []
            for body in ({"container": "vendor", "blob": "stac/catalog.json"},
                         {"container": "vendor", "blob": "export/items.ndjson", "collection": EXPORT_COLLECTION}):
                code, started = http("POST", f"{rt.base_url}/api/jobs/import_stac", body)
                assert code == 202, (code, started)
                outputs.append(wait_for_job(started["statusQueryGetUri"]))
        for status in outputs:
            assert status["runtimeStatus"] == "Completed" and status["output"]["failed"] == 0, status["output"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    return {"storage": storage, "source": source}


def _scene_bbox(index: int) -> list[float]:
    return list(rasterio.warp.transform_bounds("EPSG:32633", "EPSG:4326", *SCENE_BOUNDS[index]))


def _polygon(bbox: list[float]) -> dict:
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _centre(index: int) -> tuple[float, float]:
    w, s, e, n = _scene_bbox(index)
    return (w + e) / 2, (s + n) / 2


def _search(stac_api, **params) -> dict[str, dict]:
    query = urllib.parse.urlencode({"limit": 100, **params})
    return {f["id"]: f for f in stac_api.get_json(f"/search?{query}")["features"]}


def test_stac_api_finds_the_imported_items(stac_api, imported):
    found = _search(stac_api, collections=f"{CATALOG_COLLECTION},{EXPORT_COLLECTION}")
    assert set(found) == {"scene-0", "scene-1", "exported"}
    w, s, e, n = _scene_bbox(1)
    assert set(_search(stac_api, bbox=f"{w + 0.001},{s + 0.001},{e - 0.001},{n - 0.001}")) == {"scene-1"}
    assert set(_search(stac_api, datetime="2024-05-03T00:00:00Z/2024-05-03T23:59:59Z")) == {"exported"}
    text = "\"rmh:imported_from\" = 'vendor/export/items.ndjson, line 1'"
    assert set(_search(stac_api, filter=text, **{"filter-lang": "cql2-text"})) == {"exported"}
    collection = stac_api.get_json(f"/collections/{CATALOG_COLLECTION}")
    assert collection["title"] == "Vendor scenes" and collection["license"] == "CC-BY-4.0"
    item = found["scene-0"]
    assert item["assets"]["data"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert Path(item["assets"]["data"]["href"]).is_file() and Path(item["assets"]["thumbnail"]["href"]).is_file()


def test_pystac_client_reads_the_imported_items(stac_api, imported):
    found = consumer_python(
        "import json, sys, pystac_client\n"
        "client = pystac_client.Client.open(sys.argv[1])\n"
        "items = list(client.search(collections=[sys.argv[2]]).items())\n"
        "print(json.dumps(sorted((i.id, sorted(i.assets)) for i in items)))",
        stac_api.url, CATALOG_COLLECTION)
    assert found == [[f"scene-{i}", ["data", "elevation", "metadata", "thumbnail"]] for i in range(2)]


@pytest.mark.parametrize("collection, item_id, scene", [(CATALOG_COLLECTION, "scene-0", 0),
                                                        (EXPORT_COLLECTION, "exported", 2)])
def test_titiler_renders_the_converted_geotiff_and_the_kept_cog(titiler, imported, collection, item_id, scene,
                                                                 artifact_dir):
    base = f"/collections/{collection}/items/{item_id}"
    lon, lat = _centre(scene)
    for asset, count in (("data", 3), ("elevation", 1)):
        info = titiler.get_json(f"{base}/info?assets={asset}")
        assert info[asset]["count"] == count, info
        x, y = tile_of(lon, lat, 15)
        status, body, _ = titiler.get(f"{base}/tiles/WebMercatorQuad/15/{x}/{y}.png?assets={asset}"
                                      + ("&rescale=0,65535" if asset == "elevation" else ""))
        assert status == 200, body[:500]
        (artifact_dir / f"{item_id}-{asset}.png").write_bytes(body)
        assert opaque_fraction(read_png(body)) == 1.0  # a tile inside the scene
        # the values titiler reads are the source raster's own
        point = titiler.get_json(f"{base}/point/{lon},{lat}?assets={asset}")
        folder = (imported["source"] / "stac" / CATALOG_COLLECTION / item_id if collection == CATALOG_COLLECTION
                  else imported["source"] / "export")
        with rasterio.open(folder / ("striped.tif" if asset == "data" else "cog.tif")) as src:
            (east,), (north,) = rasterio.warp.transform("EPSG:4326", src.crs, [lon], [lat])
            expected = [int(v) for v in next(src.sample([(east, north)]))]
        assert point["values"] == expected, point
    # what titiler read for the data asset is the COG the import made, not the striped original
    item = titiler.get_json(f"/collections/{collection}/items/{item_id}/info?assets=data")
    assert item["data"]["overviews"], item
    assert np.array(item["data"]["bounds"]).size == 4
