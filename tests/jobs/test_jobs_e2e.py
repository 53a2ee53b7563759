"""Every operation through POST /api/jobs/..., its status URL followed to completion, outputs
checked: COGs pass strict validation, items are in pgSTAC and validate offline."""
from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

import pgstac_catalog
import stac_ops
from raster_factory import write_raster

@pytest.fixture(scope="module")
def pg_catalog(pgstac_dsn):
    import psycopg

    conn = psycopg.connect(pgstac_dsn, autocommit=True)
    yield pgstac_catalog.PgStacCatalog(conn)
    conn.close()


@pytest.fixture(scope="module")
def rasters(store, shared_rasters, tmp_path_factory):
    """The input container: two real rasters and a synthetic one large enough to be tiled."""
    tmp = tmp_path_factory.mktemp("inputs")
    store.create_container("rasters")
    for name in ("RGB.byte.tif", "shade.tif", "float.tif"):
        store.upload_from_path("rasters", f"real/{name}", shared_rasters / name)
    write_raster(tmp / "big.tif", width=1500, height=1100, count=3, crs="EPSG:32633", nodata=0)
    store.upload_from_path("rasters", "synthetic/big.tif", tmp / "big.tif")
    return {"big": tmp / "big.tif"}


def open_blob(store, container, name):
    gdal = store.gdal_read_path(container, name)
    env = rasterio.Env(**gdal.config)
    env.__enter__()
    return env, rasterio.open(gdal.path)


def test_hello_world_over_http(host):
    status = host.run("hello_world", {"name": "Ada", "count": 4})
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["greetings"] == [f"Hello Ada #{i}" for i in range(1, 5)]


def test_validate_raster_reports_good_and_bad(host, rasters):
    good = host.run("validate_raster", {"blob": "real/RGB.byte.tif"})
    assert good["runtimeStatus"] == "Completed"
    assert good["output"]["detail"]["report"]["valid"] is True
    bad = host.run("validate_raster", {"blob": "real/float.tif"})
    assert bad["output"]["completed_with_errors"] is True
    assert bad["output"]["failures"][0]["error"] == "MissingCRS"


def test_catalog_file_puts_a_valid_item_in_pgstac(host, rasters, pg_catalog, validator):
    status = host.run("catalog_file", {"blob": "real/RGB.byte.tif", "collection": "landsat"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["done"] == 1, output
    item = pg_catalog.get_item("landsat", stac_ops.item_id_for_blob("rasters", "real/RGB.byte.tif"))
    assert item is not None
    validator.validate_item(item)
    assert item.properties["proj:code"] == "EPSG:32618"


def test_the_datetime_a_catalog_file_request_gives_is_the_items(host, rasters, pg_catalog):
    """The blob has a last-modified time (every blob has one): the request's datetime still wins."""
    status = host.run("catalog_file", {"blob": "real/shade.tif", "collection": "dated",
                                       "datetime": "2001-02-03T04:05:06Z"})
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 1, status["output"]
    item = pg_catalog.get_item("dated", stac_ops.item_id_for_blob("rasters", "real/shade.tif"))
    assert item.properties["datetime"] == "2001-02-03T04:05:06Z"
    assert item.properties[stac_ops.DATETIME_SOURCE] == "request"


def test_cog_conversion_converts_catalogs_and_tiles_the_large_one(host, rasters, store, pg_catalog, validator):
    status = host.run("cog_conversion", {"blobs": ["real/RGB.byte.tif", "synthetic/big.tif", "real/float.tif",
                                                   "real/missing.tif"], "collection": "converted"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed"
    assert output["completed_with_errors"] is True
    assert {f["name"]: f["error"] for f in output["failures"]} == {
        "real/float.tif": "MissingCRS", "real/missing.tif": "BlobNotFound"}, output["failures"]
    assert output["done"] == 2
    env, cog = open_blob(store, "cogs", "rasters/real/RGB.byte.tif")
    with env, cog:
        assert cog_validate(cog.name, strict=True)[0]
    # the large raster took the tiled path: tiles + a mosaic equal to the source
    env, mosaic = open_blob(store, "cogs", "rasters/synthetic/big/mosaic.vrt")
    with env, mosaic, rasterio.open(rasters["big"]) as src:
        assert (mosaic.width, mosaic.height) == (src.width, src.height)
        assert np.array_equal(mosaic.read(), src.read())
    item = pg_catalog.get_item("converted", stac_ops.item_id_for_blob("rasters", "real/RGB.byte.tif"))
    validator.validate_item(item)
    assert item.assets["data"].href.endswith("cogs/rasters/real/RGB.byte.tif")


def _download(href: str, store, container: str, blob: str) -> bytes:
    """An asset href fetched over HTTP as a consumer with a read SAS would (containers are private)."""
    with urllib.request.urlopen(f"{href}?{store.read_sas(container, blob).token}", timeout=30) as answer:
        return answer.read()


def test_converted_items_point_at_their_blobs_by_url_and_vsiaz(host, rasters, store, pg_catalog, validator):
    status = host.run("cog_conversion", {"blobs": ["real/RGB.byte.tif"], "collection": "hrefs"})
    assert status["output"]["done"] + status["output"]["skipped"] == 1, status  # converted before: cataloged
    item = pg_catalog.get_item("hrefs", stac_ops.item_id_for_blob("rasters", "real/RGB.byte.tif"))
    validator.validate_item(item)
    assert stac_ops.ALTERNATE_EXT in item.stac_extensions
    blobs = {"data": ("cogs", "rasters/real/RGB.byte.tif"), "source": ("rasters", "real/RGB.byte.tif"),
             "thumbnail": ("cogs", "rasters/real/RGB.byte.thumbnail.png")}
    assert set(item.assets) == set(blobs)
    for key, (container, blob) in blobs.items():
        asset = item.assets[key].to_dict()
        assert asset["href"] == store.url(container, blob) and asset["href"].startswith("http"), asset
        assert asset["alternate"] == {"vsiaz": {"href": f"/vsiaz/{container}/{blob}"}}
        assert _download(asset["href"], store, container, blob) == store.download_bytes(container, blob)
    assert item.assets["thumbnail"].media_type == "image/png"
    assert store.get_properties(*blobs["thumbnail"]).content_type == "image/png"  # what browsers are served
    assert item.assets["data"].media_type == stac_ops.COG_MEDIA_TYPE
    item_assets = pg_catalog.get_collection("hrefs").extra_fields["item_assets"]
    assert set(item_assets) == set(blobs) and item_assets["data"]["type"] == stac_ops.COG_MEDIA_TYPE


def test_conversions_into_two_output_containers_are_two_items(host, rasters, store, pg_catalog):
    ids = []
    for container in ("cogs-a", "cogs-b"):
        status = host.run("cog_conversion", {"blobs": ["real/shade.tif"], "output_container": container,
                                             "collection": "two-outputs"})
        assert status["output"]["done"] == 1, status
        ids.append(stac_ops.item_id_for_blob("rasters", "real/shade.tif", output_container=container))
    assert len(set(ids)) == 2 and ids[0] != stac_ops.item_id_for_blob("rasters", "real/shade.tif")
    found = {item.id: item for item in pg_catalog.search("two-outputs")}
    assert set(found) == set(ids)
    for item_id, container in zip(ids, ("cogs-a", "cogs-b")):
        assert found[item_id].assets["data"].href == store.url(container, "rasters/real/shade.tif")


def test_the_request_titles_and_describes_the_collection(host, rasters, pg_catalog):
    status = host.run("catalog_file", {"blob": "real/shade.tif", "collection": "titled",
                                       "collection_title": "Hillshade of the test site",
                                       "collection_description": "A shaded relief, cataloged in place."})
    assert status["output"]["done"] == 1, status
    collection = pg_catalog.get_collection("titled")
    assert (collection.title, collection.description) == ("Hillshade of the test site",
                                                          "A shaded relief, cataloged in place.")
    item_assets = collection.extra_fields["item_assets"]  # pgSTAC's collection, refreshed from its item
    assert set(item_assets) == {"data"} and "cloud-optimized" not in str(item_assets), item_assets
    untitled = host.run("catalog_file", {"blob": "real/shade.tif", "collection": "untitled"})
    assert untitled["output"]["done"] == 1, untitled
    default = pg_catalog.get_collection("untitled")
    assert default.title == "Rasters in rasters (untitled)" and "in place" in default.description


def test_cog_conversion_by_prefix_lists_and_chunks_by_itself(host, rasters, store):
    store.upload_bytes("rasters", "real/notes.txt", b"not a raster")
    status = host.run("cog_conversion", {"prefix": "real/", "output_container": "byprefix",
                                         "catalog": False, "chunk_size": 2})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert (output["total"], output["done"], output["failed"]) == (3, 2, 1), output
    assert [f["name"] for f in output["failures"]] == ["real/float.tif"]
    assert output["detail"]["ignored"] == ["real/notes.txt"]
    assert sorted(b.name for b in store.iter_blobs("byprefix")) == [
        "rasters/real/RGB.byte.tif", "rasters/real/shade.tif"]


def test_a_chunk_of_only_missing_blobs_completes(host, rasters):
    status = host.run("cog_conversion", {"blobs": ["gone/a.tif", "gone/b.tif"], "catalog": False})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["failed"] == 2
    assert output["failure_reasons"] == {"BlobNotFound": 2}


def test_process_tiled_raster_builds_a_mosaic(host, rasters, store):
    status = host.run("process_tiled_raster", {"blob": "synthetic/big.tif", "tile_size": 512,
                                               "output_container": "tiled", "catalog": False})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed", status
    assert output["detail"]["tiles"]["count"] == 9 and output["done"] == 9
    for blob in store.iter_blobs("tiled", "rasters/synthetic/big/tiles/"):
        env, tile = open_blob(store, "tiled", blob.name)
        with env, tile:
            assert cog_validate(tile.name, strict=True)[0], blob.name


def test_a_mosaic_of_a_blob_named_with_xml_characters_references_its_tiles_relatively(host, rasters, store,
                                                                                    tmp_path):
    """Azure allows '&', '<' and '>' in blob names: the mosaic's sources are still written relative
    to the VRT (a VRT that names its tiles by absolute path opens only where it was written)."""
    write_raster(tmp_path / "rd.tif", width=1100, height=600, count=1, crs="EPSG:32633", nodata=0)
    store.upload_from_path("rasters", "synthetic/R&D <draft>.tif", tmp_path / "rd.tif")
    status = host.run("process_tiled_raster", {"blob": "synthetic/R&D <draft>.tif", "tile_size": 512,
                                               "output_container": "tiled", "catalog": False})
    assert status["runtimeStatus"] == "Completed", status
    vrt = "rasters/synthetic/R&D <draft>/mosaic.vrt"
    sources = re.findall(r'<SourceFilename relativeToVRT="(\d)">([^<]*)</SourceFilename>',
                         store.download_bytes("tiled", vrt).decode())
    assert len(sources) == 6 and all(flag == "1" and text.startswith("tiles/") for flag, text in sources), sources
    env, mosaic = open_blob(store, "tiled", vrt)
    with env, mosaic, rasterio.open(tmp_path / "rd.tif") as src:
        assert np.array_equal(mosaic.read(), src.read())


def test_list_container_writes_an_inventory(host, rasters, store):
    store.upload_bytes("rasters", "real/notes.txt", b"not a raster")
    status = host.run("list_container", {"prefix": "real/"})
    detail = status["output"]["detail"]
    assert detail["count"] == 4 and detail["by_extension"][".tif"]["count"] == 3
    assert detail["by_extension"][".txt"] == {"count": 1, "bytes": 12}
    assert store.exists(detail["inventory"]["container"], detail["inventory"]["blob"])


def test_database_health(host):
    status = host.run("database_health")
    health = status["output"]["detail"]["health"]
    assert health["ok"] is True and health["backend"] == "pgstac"


def test_unknown_operation_and_bad_body(host):
    code, body = host.submit("make_coffee")
    assert code == 404 and "cog_conversion" in body["known_operations"]
    code, body = host.submit("cog_conversion", {"blobs": ["../x.tif"], "profile": "gif"})
    assert code == 400
    assert {p["field"] for p in body["problems"]} == {"blobs.0", "profile"}


def watch_progress(host, code_and_body, timeout=180):
    """Poll GET /api/jobs/{id} (the job's progress with its chunks') until the job ends; returns
    the final status and every progress seen while it ran."""
    code, started = code_and_body
    assert code == 202, started
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, status = host.get(f"/api/jobs/{started['id']}")
        assert code == 200, status
        if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return status, seen
        if isinstance(status.get("customStatus"), dict):
            seen.append(status["customStatus"])
        time.sleep(0.01)
    raise AssertionError(f"{started['id']} did not finish in {timeout}s")


def test_tile_progress_advances_tile_by_tile(host, rasters):
    status, seen = watch_progress(host, host.submit("process_tiled_raster", {
        "blob": "synthetic/big.tif", "tile_size": 256, "output_container": "tiled-progress", "catalog": False}))
    total = status["output"]["detail"]["tiles"]["count"]
    assert status["runtimeStatus"] == "Completed" and total > 12
    tiling = [p["done"] + p["failed"] for p in seen if p["stage"] == "tiling"]
    assert any(0 < n < total for n in tiling), seen[-5:]
    assert tiling == sorted(tiling)  # never backwards


def test_an_ingested_conversion_elsewhere_is_found_again_when_its_blob_goes(host, rasters, store, pg_catalog,
                                                                            shared_rasters):
    """``ingest_blob`` converting into another output container writes the qualified id, titles its
    collection as converted COGs, and removes that item when the blob's deletion comes in."""
    store.upload_from_path("rasters", "events/shade.tif", shared_rasters / "shade.tif")
    body = {"blob": "events/shade.tif", "convert": True, "output_container": "cogs-ingest", "collection": "ingested"}
    created = host.run("ingest_blob", {**body, "event": "created", "version": "v1"})
    assert created["output"]["done"] == 1, created
    item_id = stac_ops.item_id_for_blob("rasters", "events/shade.tif", output_container="cogs-ingest")
    assert pg_catalog.get_item("ingested", item_id) is not None
    assert pg_catalog.get_collection("ingested").title.startswith("Cloud Optimized GeoTIFFs converted from rasters")
    store.delete("rasters", "events/shade.tif")
    deleted = host.run("ingest_blob", {**body, "event": "deleted", "version": "2"})
    assert deleted["output"]["detail"]["removed"] == 1, deleted
    assert pg_catalog.get_item("ingested", item_id) is None
