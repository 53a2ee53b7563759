"""import_stac scenarios shared by the backends' job tests (tests/jobs/test_jobs_import*.py): a
vendor's pystac catalog uploaded to a container, and an import of hostile STAC watched by the
untrusted-input witnesses (a counting loopback server and an inotify watch on a sentinel file)."""
from __future__ import annotations

import json
from pathlib import Path

from raster_factory import write_raster
from stac_sources import item_dicts, source_files, static_catalog, upload_tree
from untrusted import CountingServer, OpenWatch, hostile_vrt


def upload_vendor_catalog(store, tmp_path: Path, container: str = "vendor", prefix: str = "stac/",
                          scenes: int = 2) -> list[str]:
    """A pystac catalog (relative hrefs) of ``scenes`` scenes uploaded under ``prefix``."""
    static_catalog(tmp_path / "vendor-stac", scenes=scenes)
    return upload_tree(store, container, tmp_path / "vendor-stac", prefix)


def upload_scene_files(store, tmp_path: Path, container: str, prefix: str, index: int) -> dict[str, str]:
    """One scene's files as blobs under ``prefix``: asset key -> blob name."""
    files = source_files(tmp_path / f"scene-files-{index}-{prefix.replace('/', '-')}", index)
    store.create_container(container)
    names = {}
    for key, path in files.items():
        names[key] = f"{prefix}{path.name}"
        store.upload_from_path(container, names[key], path)
    return names


def upload_export(store, container: str, name: str, items: list[dict]) -> None:
    """Items as an NDJSON export (``.ndjson``) or an ItemCollection (any other name)."""
    if name.endswith(".ndjson"):
        body = "".join(json.dumps(item) + "\n" for item in items).encode()
    else:
        body = json.dumps({"type": "FeatureCollection", "features": items}).encode()
    store.upload_bytes(container, name, body, content_type="application/json")


def failures_by_name(status: dict) -> dict[str, dict]:
    return {f["name"]: f for f in status["output"]["failures"]}


def check_hostile_import(host, store, tmp_path: Path) -> dict:
    """Import STAC whose hrefs and links name a sentinel file, a loopback URL, GDAL virtual paths
    and ``..`` out of the container, beside a good item; returns the witnesses' counts and the
    job's final status."""
    sentinel = write_raster(tmp_path / "sentinel.tif", width=8, height=8, count=1, crs="EPSG:4326")
    server, watch = CountingServer(), OpenWatch(sentinel)
    try:
        store.create_container("hostile-stac")
        good = upload_scene_files(store, tmp_path, "hostile-stac", "files/", 0)
        store.upload_bytes("hostile-stac", "files/evil.tif", hostile_vrt(str(sentinel)))
        store.upload_bytes("hostile-stac", "files/evil-url.tif", hostile_vrt("/vsicurl/" + server.url()))
        data = "./" + good["data"].split("/")[-1]
        hostile = {
            "local-path": {"data": str(sentinel)},
            "file-url": {"data": f"file://{sentinel}"},
            "loopback-url": {"data": server.url("x.tif")},
            "vsicurl": {"data": "/vsicurl/" + server.url("y.tif")},
            "escape": {"data": "../../../../../../../.." + str(sentinel)},
            "vrt-file": {"data": "./evil.tif"},
            "vrt-url": {"data": "./evil-url.tif"},
            "local-thumbnail": {"data": data, "thumbnail": str(sentinel)},
            "remote-thumbnail": {"data": data, "thumbnail": server.url("t.png"), "metadata": "s3://b/meta.json"},
        }
        items = item_dicts(hostile)
        for item in items:  # a collection link elsewhere is not followed either
            item["links"] = [{"rel": "collection", "href": server.url("collection.json")},
                             {"rel": "self", "href": server.url("item.json")}]
        upload_export(store, "hostile-stac", "files/export.ndjson", items)
        catalog = {"type": "Catalog", "stac_version": "1.1.0", "id": "hostile", "description": "links elsewhere",
                   "links": [{"rel": "child", "href": server.url("catalog.json")},
                             {"rel": "item", "href": f"file://{sentinel}"},
                             {"rel": "item", "href": str(sentinel)},
                             {"rel": "child", "href": "../../../../catalog.json"},
                             {"rel": "item", "href": "./export.ndjson"}]}
        store.upload_bytes("hostile-stac", "files/catalog.json", json.dumps(catalog).encode())
        answers = {
            "export": host.run("import_stac", {"container": "hostile-stac", "blob": "files/export.ndjson",
                                               "collection": "hostile", "output_container": "hostile-out"}),
            "catalog": host.run("import_stac", {"container": "hostile-stac", "blob": "files/catalog.json",
                                                "collection": "hostile", "output_container": "hostile-out"}),
        }
        return {"opens": watch.count(), "connections": server.connections, **answers}
    finally:
        watch.close()
        server.close()


def assert_hostile_refused(seen: dict) -> None:
    assert seen["opens"] == 0, "the sentinel file an href named was opened"
    assert seen["connections"] == 0, "a URL an href or link named was fetched"
    export = seen["export"]
    assert export["runtimeStatus"] == "Completed", export
    failures = failures_by_name(export)
    expected = {"local-path": "LocalPathRefused", "file-url": "LocalPathRefused", "loopback-url": "HostNotAllowed",
                "vsicurl": "HrefSchemeRefused", "escape": "HrefOutsideContainer", "vrt-file": "UnsupportedFormat",
                "vrt-url": "UnsupportedFormat", "local-thumbnail": "LocalPathRefused"}
    assert {name: f["error"] for name, f in failures.items()} == expected, failures
    for name, failure in failures.items():
        assert failure["reason"].startswith("hostile-stac/files/export.ndjson, line "), failure
        assert "/vsiaz/" not in failure["reason"] and "Traceback" not in failure["reason"], failure
    assert "is a GDAL VRT" in failures["vrt-file"]["reason"] and "'data'" in failures["vrt-file"]["reason"]
    # the item whose thumbnail is elsewhere went in, its thumbnail kept as written (never fetched)
    assert export["output"]["done"] == 1 and export["output"]["failed"] == len(expected), export["output"]
    catalog = seen["catalog"]
    assert catalog["runtimeStatus"] == "Completed", catalog
    by_name = failures_by_name(catalog)
    links = sorted(f["error"] for name, f in by_name.items() if name not in expected)
    assert links == ["HostNotAllowed", "HrefOutsideContainer", "LocalPathRefused", "LocalPathRefused"], by_name
    assert all("link of hostile-stac/files/catalog.json" in f["reason"] for n, f in by_name.items() if n not in expected)
    # the NDJSON it links is read too: the same items, refused again, or imported already
    assert {n: f["error"] for n, f in by_name.items() if n in expected} == expected
    assert catalog["output"]["skipped"] == 1, catalog["output"]
