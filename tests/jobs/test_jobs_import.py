"""import_stac on Azurite + pgSTAC, through POST /api/jobs/import_stac: a vendor's pystac catalog
(relative hrefs), an NDJSON export and an ItemCollection (absolute blob URLs and /vsiaz/ paths)
are imported; GeoTIFFs that are not COGs are converted through the conversion path and the
originals kept as each asset's source alternate, COGs and PNGs kept; per-item failures are named;
a rerun skips what is unchanged; hostile hrefs reach nothing; an allow-listed host is fetched."""
from __future__ import annotations

import json
import os

import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

import pgstac_catalog
import stac_ops
from consumers import StaticSite
from imports import (assert_hostile_refused, check_hostile_import, failures_by_name, upload_export,
                     upload_scene_files, upload_vendor_catalog)
from stac_sources import item_dicts, source_files

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def remote_site():
    """A host that serves a vendor's files over HTTP (Range, ETag), to be allow-listed."""
    site = StaticSite(cors=None).start()
    yield site
    site.stop()


@pytest.fixture(scope="module")
def service_env(service_env, remote_site):
    """Azurite + pgSTAC with the remote site's host:port (and only it) allow-listed."""
    host = remote_site.url.removeprefix("http://")
    saved = os.environ.get("RMH_IMPORT_ALLOWED_HOSTS")
    os.environ["RMH_IMPORT_ALLOWED_HOSTS"] = host
    from settings import get_settings

    get_settings.cache_clear()
    yield {**service_env, "RMH_IMPORT_ALLOWED_HOSTS": host}
    if saved is None:
        os.environ.pop("RMH_IMPORT_ALLOWED_HOSTS", None)
    else:
        os.environ["RMH_IMPORT_ALLOWED_HOSTS"] = saved
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def pg(pgstac_dsn):
    import psycopg

    conn = psycopg.connect(pgstac_dsn, autocommit=True)
    yield pgstac_catalog.PgStacCatalog(conn)
    conn.close()


def _blob_cog(store, container, name) -> bool:
    gdal = store.gdal_read_path(container, name)
    with rasterio.Env(**gdal.config):
        return cog_validate(gdal.path, strict=True, quiet=True)[0]


def test_a_pystac_catalog_is_imported_its_geotiffs_converted(host, store, pg, validator, tmp_path):
    upload_vendor_catalog(store, tmp_path)
    status = host.run("import_stac", {"container": "vendor", "blob": "stac/catalog.json"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["done"] == 2 and output["failed"] == 0, output["failures"]
    assert output["detail"]["plan"]["collections"] == ["vendor-scenes"]
    progress = status["customStatus"]
    assert (progress["stage"], progress["total"], progress["done"], progress["percent"]) == ("completed", 2, 2, 100.0)
    collection = pg.get_collection("vendor-scenes")  # made from the source's collection.json
    assert collection.title == "Vendor scenes" and collection.license == "CC-BY-4.0"
    assert collection.providers[0].name == "Elsewhere Inc."
    for index in range(2):
        item = pg.get_item("vendor-scenes", f"scene-{index}")
        stac = item.to_dict(include_self_link=False, transform_hrefs=False)
        validator.validate_item(stac)
        folder = f"stac/vendor-scenes/scene-{index}"
        data = stac["assets"]["data"]  # the striped GeoTIFF: converted
        assert data["href"] == store.url("cogs", f"vendor/{folder}/striped.tif")
        assert data["type"] == stac_ops.COG_MEDIA_TYPE and data["roles"] == ["data"] and data["title"] == "RGB scene"
        assert data["alternate"]["vsiaz"]["href"] == f"/vsiaz/cogs/vendor/{folder}/striped.tif"
        assert data["alternate"]["source"]["href"] == store.url("vendor", f"{folder}/striped.tif")
        assert _blob_cog(store, "cogs", f"vendor/{folder}/striped.tif")
        # the COG is kept where it is, the PNG and the JSON too (hrefs made absolute)
        assert stac["assets"]["elevation"]["href"] == store.url("vendor", f"{folder}/cog.tif")
        assert not store.exists("cogs", f"vendor/{folder}/cog.tif")
        assert stac["assets"]["thumbnail"]["href"] == store.url("vendor", f"{folder}/thumb.png")
        assert stac["assets"]["metadata"]["href"] == store.url("vendor", f"{folder}/meta.json")
        assert stac["properties"]["rmh:imported_from"] == f"vendor/{folder}/scene-{index}.json"
        assert stac["properties"]["platform"] == "elsewhere-1"
    with rasterio.Env(**store.gdal_read_path("cogs", "x").config):  # pixels unchanged by the conversion
        with rasterio.open(store.gdal_read_path("vendor", "stac/vendor-scenes/scene-0/striped.tif").path) as src, \
                rasterio.open(store.gdal_read_path("cogs", "vendor/stac/vendor-scenes/scene-0/striped.tif").path) as cog:
            assert (src.read() == cog.read()).all() and src.transform == cog.transform


def test_a_rerun_skips_what_is_unchanged_and_tasks_name_each_item(host, store, tmp_path):
    status = host.run("import_stac", {"container": "vendor", "blob": "stac/catalog.json", "rerun": True})
    output = status["output"]
    assert output["skipped"] == 2 and output["done"] == 0 and output["failed"] == 0, output
    code, body = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=100")
    assert code == 200 and sorted((t["name"], t["status"]) for t in body["tasks"]) == [
        ("scene-0", "skipped"), ("scene-1", "skipped")], body
    # a changed asset is a changed item: only it is imported again
    files = source_files(tmp_path / "again", 1)
    store.upload_from_path("vendor", "stac/vendor-scenes/scene-1/striped.tif", files["data"])
    status = host.run("import_stac", {"container": "vendor", "blob": "stac/catalog.json", "rerun": True})
    assert (status["output"]["skipped"], status["output"]["done"]) == (1, 1), status["output"]


def test_exports_with_absolute_hrefs_and_failures_named(host, store, pg, validator, tmp_path):
    names = upload_scene_files(store, tmp_path, "exports", "files/a/", 0)
    other = upload_scene_files(store, tmp_path, "exports", "files/b/", 1)
    store.upload_bytes("exports", "files/a/garbage.tif", b"not a raster at all")
    url = {key: store.url("exports", name) for key, name in names.items()}
    vsiaz = {key: f"/vsiaz/exports/{name}" for key, name in other.items()}
    items = item_dicts({"by-url": url, "by-vsiaz": vsiaz,
                        "mislabelled": {"elevation": f"../{names['data']}"},  # typed a COG, striped in fact
                        "escapes": {"data": "../../../../../x.tif"},
                        "garbage": {"data": "../files/a/garbage.tif"},
                        "missing": {"data": "../files/a/gone.tif"}})
    items.append({**items[0], "id": "no-datetime", "properties": {"platform": "x"}})
    items.append({"type": "Feature", "id": "not really"})
    upload_export(store, "exports", "exports/items.ndjson", items)
    status = host.run("import_stac", {"container": "exports", "blob": "exports/items.ndjson", "collection": "exported",
                                      "output_container": "exported-cogs", "profile": "zstd"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["completed_with_errors"], output
    assert output["done"] == 3, output
    failures = failures_by_name(status)
    assert {n: f["error"] for n, f in failures.items()} == {
        "escapes": "HrefOutsideContainer", "garbage": "UnsupportedFormat", "missing": "BlobNotFound",
        "no-datetime": "ItemValidationError", "exports/exports/items.ndjson, line 8": "NotStac"}, failures
    assert failures["garbage"]["reason"].startswith("exports/exports/items.ndjson, line 5: raster asset 'data'")
    assert "not a raster file" in failures["garbage"]["reason"]
    for item_id, where in (("by-url", names), ("by-vsiaz", other)):
        stac = pg.get_item("exported", item_id).to_dict(include_self_link=False, transform_hrefs=False)
        validator.validate_item(stac)
        assert stac["assets"]["data"]["href"] == store.url("exported-cogs", f"exports/{where['data']}")
        assert stac["assets"]["data"]["alternate"]["source"]["href"] == store.url("exports", where["data"])
        assert stac["assets"]["elevation"]["href"] == store.url("exports", where["elevation"])
    # an asset typed as a COG that is not one is converted like any other (the same COG as by-url's data)
    mislabelled = pg.get_item("exported", "mislabelled").to_dict(include_self_link=False, transform_hrefs=False)
    assert mislabelled["assets"]["elevation"]["href"] == store.url("exported-cogs", f"exports/{names['data']}")
    with rasterio.Env(**store.gdal_read_path("exported-cogs", "x").config):
        with rasterio.open(store.gdal_read_path("exported-cogs", f"exports/{names['data']}").path) as cog:
            assert cog.profile["compress"] == "zstd"  # the request's profile
    # the same items as an ItemCollection into the items' own collection (made by the import)
    upload_export(store, "exports", "exports/items.json", items[:2])
    status = host.run("import_stac", {"container": "exports", "blob": "exports/items.json"})
    assert status["output"]["done"] == 2, status["output"]
    assert pg.get_collection("exports") is not None and pg.get_item("exports", "by-url") is not None


def test_a_prefix_imports_every_document_under_it(host, store, tmp_path):
    upload_vendor_catalog(store, tmp_path, container="prefixed", prefix="drop/", scenes=1)
    items = item_dicts({"extra": {"data": "./vendor-scenes/scene-0/striped.tif"}})
    upload_export(store, "prefixed", "drop/more.ndjson", items)
    status = host.run("import_stac", {"container": "prefixed", "prefix": "drop/", "collection": "prefixed"})
    output = status["output"]
    assert output["done"] == 2 and output["failed"] == 0, output
    assert output["detail"]["plan"]["ignored"] == 4  # the scene's raster, PNG, TIFF and metadata JSON
    assert output["detail"]["plan"]["documents"] == 4  # catalog, collection, item, NDJSON


def test_hostile_hrefs_and_links_reach_nothing(host, store, tmp_path):
    assert_hostile_refused(check_hostile_import(host, store, tmp_path))


def test_an_allow_listed_host_is_fetched_and_its_geotiff_converted(host, store, pg, remote_site, validator,
                                                                   tmp_path):
    files = source_files(tmp_path / "remote", 2)
    remote_site.files.update({"/scenes/striped.tif": files["data"].read_bytes(),
                              "/scenes/cog.tif": files["elevation"].read_bytes()})
    base = remote_site.url + "/scenes"
    items = item_dicts({"remote": {"data": f"{base}/striped.tif", "elevation": f"{base}/cog.tif"}})
    store.create_container("remote-stac")
    upload_export(store, "remote-stac", "remote.ndjson", items)
    before = len(remote_site.requests)
    status = host.run("import_stac", {"container": "remote-stac", "blob": "remote.ndjson", "collection": "remote"})
    assert status["output"]["done"] == 1 and status["output"]["failed"] == 0, status["output"]
    fetched = {r.path for r in remote_site.requests[before:] if r.method == "GET"}
    assert fetched == {"/scenes/striped.tif", "/scenes/cog.tif"}
    stac = pg.get_item("remote", "remote").to_dict(include_self_link=False, transform_hrefs=False)
    validator.validate_item(stac)
    data = stac["assets"]["data"]
    assert data["alternate"]["source"]["href"] == f"{base}/striped.tif"
    container, name = data["alternate"]["vsiaz"]["href"].removeprefix("/vsiaz/").split("/", 1)
    assert container == "cogs" and _blob_cog(store, container, name)
    assert stac["assets"]["elevation"]["href"] == f"{base}/cog.tif"  # a valid COG stays where it is
    assert not [b.name for b in store.iter_blobs("rmh-system", "imports/remote/")]  # the copies are gone
    status = host.run("import_stac", {"container": "remote-stac", "blob": "remote.ndjson", "collection": "remote",
                                      "rerun": True})
    assert status["output"]["skipped"] == 1
    assert len(remote_site.requests) == before + len(fetched)  # an unchanged item fetches nothing



def test_a_catalog_on_an_allow_listed_host_is_walked(host, store, pg, remote_site, tmp_path):
    """A catalog in the container whose item lives on the allowed host: the item document is
    fetched, and its relative hrefs resolve on that host."""
    files = source_files(tmp_path / "walked", 3)
    item = item_dicts({"walked": {"data": "./striped.tif", "thumbnail": "./thumb.png"}})[0]
    remote_site.files.update({"/walk/walked.json": json.dumps(item).encode(),
                              "/walk/striped.tif": files["data"].read_bytes()})
    catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "walk", "description": "one item elsewhere",
               "links": [{"rel": "item", "href": f"{remote_site.url}/walk/walked.json"}]}
    store.upload_bytes("remote-stac", "walk/catalog.json", json.dumps(catalog).encode())
    status = host.run("import_stac", {"container": "remote-stac", "blob": "walk/catalog.json", "collection": "remote"})
    assert status["output"]["done"] == 1 and status["output"]["failed"] == 0, status["output"]
    stac = pg.get_item("remote", "walked").to_dict(include_self_link=False, transform_hrefs=False)
    assert stac["assets"]["data"]["alternate"]["source"]["href"] == f"{remote_site.url}/walk/striped.tif"
    assert stac["assets"]["thumbnail"]["href"] == f"{remote_site.url}/walk/thumb.png"  # kept, not fetched
    assert stac["properties"]["rmh:imported_from"] == f"{remote_site.url}/walk/walked.json"
    assert "/walk/thumb.png" not in {r.path for r in remote_site.requests}


def test_requests_are_checked_at_submission(host):
    for body, field in (({"container": "vendor"}, "(body)"),
                        ({"container": "vendor", "blob": "a.json", "prefix": "x/"}, "(body)"),
                        ({"container": "vendor", "blob": "../a.json"}, "blob"),
                        ({"container": "vendor", "blob": "a.json", "max_z_error": 1}, "(body)"),
                        ({"container": "vendor", "blob": "a.json", "target_crs": "EPSG:3857"}, "target_crs"),
                        ({"container": "vendor", "blob": "a.json", "collection": "a b"}, "collection")):
        code, answer = host.submit("import_stac", body)
        assert code == 400 and [p["field"] for p in answer["problems"]] == [field], (body, answer)
    code, answer = host.submit("import_stac", {"container": "vendor", "blob": "a.json", "output_container": "vendor"})
    assert code == 400 and answer["problems"][0]["field"] == "output_container"
    code, answer = host.submit("import_stac", {"container": "nowhere", "blob": "a.json"})
    assert code == 404
    status = host.run("import_stac", {"container": "vendor", "blob": "stac/nothing.json"})
    assert [(f["name"], f["error"]) for f in status["output"]["failures"]] == [
        ("vendor/stac/nothing.json", "DocumentUnavailable")]


def test_imported_items_read_back_with_pystac(pg):
    item = pg.get_item("vendor-scenes", "scene-0")
    assert isinstance(item, pystac.Item) and item.assets["data"].media_type == stac_ops.COG_MEDIA_TYPE
