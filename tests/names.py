"""Blob names in many scripts, a 1,000-character name and the names that break naive code (``?``,
``#``, ``%``, dots, blanks, Unicode normalization forms, bidi controls, case), run through
``cog_conversion``, ``process_tiled_raster``, ``sync_container`` and event ingest, and read back
exactly: in the items (id, title, ``rmh:source_blob``, asset hrefs), in the outputs' metadata, in
``/api/jobs/{id}/tasks`` and in the ingest jobs' input. Shared by the Azurite + pgSTAC and the
local directory + static catalog test modules."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import rasterio

from raster_factory import write_raster

#: One name per script (each with a directory in the same script), and names in several at once.
SCRIPT_NAMES = {
    "latin": "données/café crème é.tif",
    "cjk": "地図/東京都 渋谷区.tif",
    "emoji": "satellite 🛰️/🌍 earth 👩‍🚀.tif",
    "arabic": "خرائط/القاهرة.tif",
    "hebrew": "מפות/ירושלים.tif",
    "devanagari": "मानचित्र/दिल्ली.tif",
    "cyrillic": "карты/Москва.tif",
    "mixed": "mixed/Ελλάδα-한국-ไทย.tif",
}
#: 1,000 characters in five segments of at most 200: as long as an Azure blob name gets
#: (1,024), every segment within what a local file system holds.
def _segment(index: int, length: int) -> str:
    return (f"long-{index}-" + "abcdefghijklmnopqrstuvwxyz0123456789" * 6)[:length]


LONG_NAME = "/".join(_segment(i, 200) for i in range(4)) + "/" + _segment(4, 192) + ".tif"
#: Names that a URL, a shell, a percent-decoder or a normalizer would change.
TRICKY_NAMES = {
    "query": "odd/a?b=c&d.tif",
    "fragment": "odd/a#b.tif",
    "percent": "odd/100% done.tif",
    "escape": "odd/%41%2F%00.tif",
    "dots": "odd/..a...tif",
    "blank-dir": "odd/trailing blank /x.tif",
    "nfc": "odd/caf\u00e9.tif",
    "nfd": "odd/cafe\u0301.tif",
    "upper": "odd/Case.tif",
    "lower": "odd/case.tif",
    "bidi": "odd/\u202egnp.tif",
    "plus": "odd/a+b.tif",
}
ALL_NAMES = [*SCRIPT_NAMES.values(), LONG_NAME, *TRICKY_NAMES.values()]

assert len(LONG_NAME) == 1000 and all(len(s) <= 200 for s in LONG_NAME.split("/")), len(LONG_NAME)


def raster(tmp: Path, size: int = 96) -> Path:
    return write_raster(tmp / f"names-{size}.tif", width=size, height=size, count=1, crs="EPSG:32633")


def upload(store, container: str, names: list[str], source: Path) -> None:
    store.create_container(container)
    for name in names:
        store.upload_from_path(container, name, source)


def task_names(host, instance_id: str, activity: str) -> list[str]:
    code, body = host.get(f"/api/jobs/{instance_id}/tasks?top=5000")
    assert code == 200, body
    return [t["name"] for t in body["tasks"] if t["activity"] == activity]


def items_by_source(collection: str) -> dict[str, list[dict]]:
    """The collection's items, as stored, by the source blob they name (``rmh:source_blob``)."""
    import activities

    found: dict[str, list[dict]] = {}
    for item in activities.catalog().search(collection, limit=10_000):
        stac = item.to_dict(include_self_link=False, transform_hrefs=False)
        found.setdefault(stac["properties"]["rmh:source_blob"], []).append(stac)
    return found


def href_blob(href: str, collection: str) -> tuple[str, str]:
    """(container, blob) an asset href points at: a blob URL (Azurite), or a path relative to
    the static catalog's item files, percent-encoded, inside the local storage directory."""
    from settings import get_settings

    config = get_settings()
    if "://" in href:
        path = urllib.parse.unquote(urllib.parse.urlsplit(href).path)
        _account, container, blob = path.lstrip("/").split("/", 2)
        return container, blob
    items = Path(config.static_catalog_dir).resolve() / collection / "items"
    target = Path(os.path.normpath(items / urllib.parse.unquote(href)))
    relative = target.relative_to(Path(config.storage_local_dir).resolve()).as_posix()
    container, blob = relative.split("/", 1)
    return container, blob


def check_item(stac: dict, *, container: str, name: str, collection: str, data: tuple[str, str]) -> None:
    import activities
    import stac_ops

    props = stac["properties"]
    assert props["rmh:source_blob"] == name and props["rmh:source_container"] == container, props
    assert href_blob(stac["assets"]["data"]["href"], collection) == data, (stac["assets"]["data"], data)
    if "source" in stac["assets"]:
        assert href_blob(stac["assets"]["source"]["href"], collection) == (container, name), stac["assets"]["source"]
    assert stac_ops.check_id(stac["id"]) == stac["id"]
    assert activities.catalog().get_item(collection, stac["id"]) is not None, stac["id"]


def check_conversion(host, store, names: list[str], *, container: str, output: str, collection: str) -> dict:
    """Convert every name; each comes back exact in the job's tasks, in its COG's metadata and
    in its item (title, source blob, hrefs of the COG and of the source)."""
    import activities

    status = host.run("cog_conversion", {"container": container, "blobs": names, "output_container": output,
                                         "collection": collection}, timeout=600)
    result = status["output"]
    assert status["runtimeStatus"] == "Completed" and result["done"] == len(names), result.get("failures")
    assert sorted(task_names(host, status["instanceId"], "convert_blob")) == sorted(names)
    items = items_by_source(collection)
    for name in names:
        cog = activities.cog_blob_name(container, name)
        meta = store.get_properties(output, cog).metadata
        assert meta["rmh_source"] == f"{container}/{name}", (name, meta)
        [stac] = items[name]
        assert stac["properties"]["title"] == name
        check_item(stac, container=container, name=name, collection=collection, data=(output, cog))
    return status


def check_tiled(host, store, names: list[str], *, container: str, output: str, collection: str) -> list[dict]:
    """Tile every name (2 x 2 tiles of a 300 px raster): each job completes, its mosaic and tiles
    are where the name says (the mosaic's tiles relative to it, whatever the name holds: a VRT
    escapes ``&``), and its tile items name the source exactly."""
    import activities

    started = {}
    for name in names:
        code, body = host.submit("process_tiled_raster", {"container": container, "blob": name, "tile_size": 256,
                                                          "output_container": output, "collection": collection})
        assert code == 202, body
        started[name] = body
    statuses = []
    for name, body in started.items():
        status = host.follow(body["statusQueryGetUri"], timeout=600)
        result = status["output"]
        assert status["runtimeStatus"] == "Completed" and result["done"] == 4 and not result["failed"], (name, result)
        prefix = activities.cog_blob_name(container, name, suffix="")
        assert result["detail"]["mosaic"]["path"] == f"{output}/{prefix}/mosaic.vrt", result["detail"]
        vrt = store.download_bytes(output, f"{prefix}/mosaic.vrt").decode("utf-8")
        assert 'relativeToVRT="0"' not in vrt, (name, vrt[:500])  # relative tiles, no server path
        gdal = store.gdal_read_path(output, f"{prefix}/mosaic.vrt")
        with rasterio.Env(**gdal.config), rasterio.open(gdal.path) as mosaic:
            assert (mosaic.width, mosaic.height) == (300, 300) and mosaic.read(1).any()
        statuses.append(status)
    tiles_of: dict[str, list[dict]] = {}
    for item in activities.catalog().search(collection, limit=10_000):
        stac = item.to_dict(include_self_link=False, transform_hrefs=False)
        source = href_blob(stac["assets"]["source"]["href"], collection)
        assert source[0] == container, source
        tiles_of.setdefault(source[1], []).append(stac)
    for name in names:
        tiles = tiles_of[name]
        assert len(tiles) == 4, (name, [t["id"] for t in tiles])
        prefix = activities.cog_blob_name(container, name, suffix="")
        for stac in tiles:
            _, blob = href_blob(stac["assets"]["data"]["href"], collection)
            stem = blob.rsplit("/", 1)[1].removesuffix(".tif")
            assert blob == f"{prefix}/tiles/{stem}.tif" and stem.startswith("tile_r"), blob
            assert stac["properties"]["title"] == f"{name}, {stem}", stac["properties"]["title"]
            assert stac["properties"]["rmh:source_blob"] == f"{name}/{stem}", stac["properties"]
            assert store.get_properties(output, blob).metadata["rmh_source"] == f"{container}/{name}"
    return statuses


def check_sync(host, names: list[str], *, container: str, collection: str) -> dict:
    """Catalog the container: one item per name, its id the one ``item_id_for_blob`` gives,
    names exact in the tasks and the items."""
    import stac_ops

    status = host.run("sync_container", {"container": container, "collection": collection}, timeout=600)
    result = status["output"]
    assert status["runtimeStatus"] == "Completed" and result["done"] == len(names), result.get("failures")
    assert sorted(task_names(host, status["instanceId"], "catalog_blob")) == sorted(names)
    items = items_by_source(collection)
    assert sorted(items) == sorted(names)
    ids = set()
    for name in names:
        [stac] = items[name]
        assert stac["id"] == stac_ops.item_id_for_blob(container, name)
        check_item(stac, container=container, name=name, collection=collection, data=(container, name))
        ids.add(stac["id"])
    assert len(ids) == len(names), "two names share an item id"
    return status


def check_events(runtime, store, names: list[str], source: Path, *, container: str) -> None:
    """Upload every name into a watched container: one ingest job per name, whose input names
    the blob exactly, and an item per name in the container's collection."""
    from events import ingest_jobs, wait_until
    import activities
    import stac_ops

    collection = stac_ops.default_collection_id(container)
    for name in names:
        store.upload_from_path(container, name, source)
    expected = {stac_ops.item_id_for_blob(container, n) for n in names}

    def cataloged() -> bool:
        cat = activities.catalog()
        return cat.get_collection(collection) is not None and expected <= set(cat.list_item_etags(collection))

    wait_until(cataloged, timeout=300, interval=0.5, what=f"{len(names)} ingested items")
    jobs = [j for j in ingest_jobs(runtime) if (j.get("input") or {}).get("container") == container]
    wait_until(lambda: all(j["runtimeStatus"] == "Completed" for j in ingest_jobs(runtime)
                           if (j.get("input") or {}).get("container") == container),
               timeout=120, what="every ingest job completed")
    assert sorted(j["input"]["blob"] for j in jobs) == sorted(names)
    items = items_by_source(collection)
    for name in names:
        [stac] = items[name]
        check_item(stac, container=container, name=name, collection=collection, data=(container, name))
