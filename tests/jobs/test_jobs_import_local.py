"""import_stac on the embedded defaults (a local storage directory and a static catalog): a pystac
catalog and an export with /vsiaz/ hrefs come in, the static catalog's imported items validate and
their hrefs resolve to the COGs made and the files kept; hostile STAC reaches nothing."""
from __future__ import annotations

from pathlib import Path

import pystac
import pytest
from rio_cogeo.cogeo import cog_validate

import stac_ops
from imports import (assert_hostile_refused, check_hostile_import, failures_by_name, upload_export,
                     upload_scene_files, upload_vendor_catalog)
from services import applied_local_env
from stac_sources import item_dicts


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """Local directory storage and a static catalog instead of Azurite and pgSTAC."""
    root = tmp_path_factory.mktemp("local-import")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "rasters"}
    yield from applied_local_env(env)


def _catalog_item(service_env, collection: str, item_id: str) -> pystac.Item:
    path = Path(service_env["RMH_STATIC_CATALOG_DIR"]) / collection / "items" / f"{item_id}.json"
    return pystac.Item.from_file(str(path))


def test_a_pystac_catalog_comes_into_the_static_catalog(host, store, service_env, validator, tmp_path):
    upload_vendor_catalog(store, tmp_path)
    status = host.run("import_stac", {"container": "vendor", "blob": "stac/catalog.json"})
    output = status["output"]
    assert output["done"] == 2 and output["failed"] == 0, output["failures"]
    storage = Path(service_env["RMH_STORAGE_LOCAL_DIR"])
    catalog = pystac.Catalog.from_file(str(Path(service_env["RMH_STATIC_CATALOG_DIR"]) / "catalog.json"))
    collection = catalog.get_child("vendor-scenes")
    assert collection.title == "Vendor scenes" and collection.license == "CC-BY-4.0"
    assert sorted(item.id for item in collection.get_items()) == ["scene-0", "scene-1"]
    for index in range(2):
        item = _catalog_item(service_env, "vendor-scenes", f"scene-{index}")
        validator.validate_item(item)
        folder = f"stac/vendor-scenes/scene-{index}"
        data = item.assets["data"]
        assert not data.href.startswith("/")  # relative to the item file: the catalog moves with storage
        assert Path(data.get_absolute_href()).resolve() == storage / "cogs" / "vendor" / folder / "striped.tif"
        assert cog_validate(data.get_absolute_href(), strict=True, quiet=True)[0]
        assert data.media_type == stac_ops.COG_MEDIA_TYPE
        source = item.to_dict()["assets"]["data"]["alternate"]["source"]["href"]  # relative too
        assert (Path(item.get_self_href()).parent / source).resolve() == storage / "vendor" / folder / "striped.tif"
        assert Path(item.assets["elevation"].get_absolute_href()).resolve() == storage / "vendor" / folder / "cog.tif"
        assert Path(item.assets["thumbnail"].get_absolute_href()).resolve() == storage / "vendor" / folder / "thumb.png"
    again = host.run("import_stac", {"container": "vendor", "blob": "stac/catalog.json", "rerun": True})
    assert again["output"]["skipped"] == 2, again["output"]


def test_an_export_with_vsiaz_hrefs_and_a_bad_item(host, store, service_env, validator, tmp_path):
    names = upload_scene_files(store, tmp_path, "exports", "files/", 3)
    items = item_dicts({"by-vsiaz": {key: f"/vsiaz/exports/{name}" for key, name in names.items()},
                        "elsewhere": {"data": "/vsiaz/rmh-system/plans/x.tif"}})
    upload_export(store, "exports", "items.json", items)
    status = host.run("import_stac", {"container": "exports", "blob": "items.json", "collection": "exported",
                                      "output_container": "exported-cogs"})
    assert status["output"]["done"] == 1, status["output"]
    failure = failures_by_name(status)["elsewhere"]
    assert failure["error"] == "ProtectedContainer" and failure["reason"].startswith("exports/items.json, feature 1")
    item = _catalog_item(service_env, "exported", "by-vsiaz")
    validator.validate_item(item)
    assert cog_validate(item.assets["data"].get_absolute_href(), strict=True, quiet=True)[0]
    assert item.properties["rmh:imported_from"] == "exports/items.json, feature 0"


def test_a_foreign_item_shaped_like_a_serialized_python_object_stays_data(host, store, service_env, tmp_path):
    """The Durable SDK's loose JSON codec rebuilds a dict carrying ``__class__``, ``__module__``
    and ``__data__`` as an object of a loaded module's class. A foreign item's property shaped
    that way (a loaded module's class, a module that is not there) stays data: it neither fails
    the item or its chunk nor turns into an object on its way through the job."""
    names = upload_scene_files(store, tmp_path, "shaped", "files/", 0)
    items = item_dicts({"pathlike": names, "nomodule": names})
    envelopes = {"pathlike": {"__class__": "PurePosixPath", "__module__": "pathlib", "__data__": "/etc/passwd"},
                 "nomodule": {"__class__": "X", "__module__": "no_such_module", "__data__": {}}}
    for item in items:
        item["properties"]["vendor:state"] = envelopes[item["id"]]
    upload_export(store, "shaped", "items.ndjson", items)
    status = host.run("import_stac", {"container": "shaped", "blob": "items.ndjson", "collection": "shaped"})
    assert (status["output"]["done"], status["output"]["failed"]) == (2, 0), status["output"]
    for item_id, envelope in envelopes.items():
        assert _catalog_item(service_env, "shaped", item_id).properties["vendor:state"] == envelope


def test_hostile_hrefs_and_links_reach_nothing_on_the_local_store(host, store, tmp_path):
    assert_hostile_refused(check_hostile_import(host, store, tmp_path))


def test_an_export_of_many_bad_lines_is_counted_in_full(host, store):
    store.create_container("bad-export")
    store.upload_bytes("bad-export", "junk.ndjson", b"{not json\n" * 1010)
    status = host.run("import_stac", {"container": "bad-export", "blob": "junk.ndjson"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["failed"] == output["total"] == 1010, output["total"]
    assert output["failure_reasons"] == {"NotStac": 1010} and len(output["failures"]) == 1000
    assert output["failures"][-1]["name"] == "bad-export/junk.ndjson, line 1000"


def test_an_import_as_a_draft_waits_for_publish(host, store, tmp_path):
    """``draft``: a collection the import creates is a draft as a whole; items imported into a
    public collection are drafts one by one; neither shows in the footprints until ``publish``."""
    import activities
    import stac_collections

    upload_vendor_catalog(store, tmp_path, container="drafty")
    cat = activities.catalog()
    drafted = host.run("import_stac", {"container": "drafty", "blob": "stac/catalog.json", "collection": "drafted",
                                       "draft": True})
    assert drafted["output"]["done"] == 2, drafted["output"]
    cat.upsert_collection(stac_collections.collection_for_container("drafty", collection_id="public-one"))
    into_public = host.run("import_stac", {"container": "drafty", "blob": "stac/catalog.json",
                                           "collection": "public-one", "draft": True})
    assert into_public["output"]["done"] == 2, into_public["output"]
    drafts = {d.collection: (d.items, d.whole) for d in cat.lifecycle().drafts}
    assert drafts == {"drafted": (2, True), "public-one": (2, False)}, drafts

    def shown(collection: str) -> int:
        code, page = host.get(f"/api/footprints?collection={collection}")
        assert code == 200, page
        return len(page["features"])

    assert (shown("drafted"), shown("public-one")) == (0, 0)
    for collection in ("drafted", "public-one"):
        published = host.run("publish", {"collection": collection, "reason": "reviewed"})
        assert published["output"]["detail"]["transition"]["items"] == 2, published["output"]
    assert (shown("drafted"), shown("public-one")) == (2, 2)
    assert cat.lifecycle().drafts == []
