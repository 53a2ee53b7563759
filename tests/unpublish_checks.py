"""Unpublish checks shared by the Azurite + pgSTAC and the local-directory + static-catalog test
modules: the real function_app on the embedded runtime, driven over its job API (``host``), the
catalog and the store read back through the app's own clients."""
from __future__ import annotations

from pathlib import Path

from raster_factory import write_raster

CONTAINER = "unpub"
OUTPUT = "cogs"
UTM33 = "EPSG:32633"


def listing(store, container: str, prefix: str = "") -> dict[str, str]:
    """Blob name → ETag under a prefix (a container that does not exist lists nothing)."""
    from storage import ContainerNotFound

    try:
        return {b.name: b.etag for b in store.iter_blobs(container, prefix)}
    except ContainerNotFound:
        return {}


def items_of(container: str, blob: str) -> list[str]:
    """Ids of every item (draft or published, any collection) whose source is the blob or its tiles."""
    import activities

    return sorted(f.id for f in activities.catalog().find_items(source_container=container, source_blobs=[blob]))


def rasters(tmp: Path) -> dict[str, Path]:
    """A raster that takes the tiled path (1024 px, four 512 px tiles) and two small ones."""
    big = write_raster(tmp / "big.tif", width=1024, height=1024, count=3, crs=UTM33,
                       bounds=(500000.0, 4980000.0, 510240.0, 4990240.0), seed=1)
    small = [write_raster(tmp / f"small{i}.tif", width=128, height=96, count=1, crs=UTM33,
                          bounds=(520000.0 + 2000 * i, 4980000.0, 521280.0 + 2000 * i, 4980960.0), seed=10 + i)
             for i in range(2)]
    return {"src/big.tif": big, "src/small0.tif": small[0], "src/small1.tif": small[1]}


def setup_sources(host, store, tmp: Path, collection: str) -> None:
    store.create_container(CONTAINER)
    for name, path in rasters(tmp).items():
        store.upload_from_path(CONTAINER, name, path)
    tiled = host.run("process_tiled_raster", {"container": CONTAINER, "blob": "src/big.tif", "tile_size": 512,
                                              "collection": collection})
    assert tiled["runtimeStatus"] == "Completed" and tiled["output"]["done"] == 4, tiled["output"]
    converted = host.run("cog_conversion", {"container": CONTAINER, "blobs": ["src/small0.tif", "src/small1.tif"],
                                            "collection": collection})
    assert converted["output"]["done"] == 2, converted["output"]


def check_tiled_source_unpublished(host, store, tmp: Path) -> None:
    """After ``unpublish`` of a tiled source: 0 items, 0 objects under its output prefix, its
    source blob untouched (the listing before and after), the rest kept; a dry run first
    changes nothing; a rerun finds nothing left."""
    collection = "unpub-tiled"
    setup_sources(host, store, tmp, collection)
    prefix = f"{CONTAINER}/src/big"
    outputs = listing(store, OUTPUT, prefix)
    assert len([n for n in outputs if n.endswith(".tif")]) == 4 and f"{prefix}/mosaic.vrt" in outputs, outputs
    assert len(items_of(CONTAINER, "src/big.tif")) == 4
    sources_before = listing(store, CONTAINER)
    kept_before = listing(store, OUTPUT, f"{CONTAINER}/src/small")

    body = {"container": CONTAINER, "blobs": ["src/big.tif"]}
    dry = host.run("unpublish", {**body, "dry_run": True})
    plan = dry["output"]["detail"]["plan"]
    assert plan["counts"] == {"groups": 1, "items": 4, "blobs": len(outputs)}, plan
    assert sorted(plan["blobs"]) == sorted(f"{OUTPUT}/{n}" for n in outputs)
    assert listing(store, OUTPUT, prefix) == outputs and len(items_of(CONTAINER, "src/big.tif")) == 4

    done = host.run("unpublish", body)
    assert done["runtimeStatus"] == "Completed" and done["output"]["failed"] == 0, done["output"]
    assert done["output"]["detail"]["removed"] == {"items": 4, "blobs": len(outputs)}
    assert items_of(CONTAINER, "src/big.tif") == []
    assert listing(store, OUTPUT, prefix) == {}
    assert listing(store, CONTAINER) == sources_before  # the data team's blobs: untouched
    assert listing(store, OUTPUT, f"{CONTAINER}/src/small") == kept_before
    assert len(items_of(CONTAINER, "src/small0.tif")) == 1
    code, tasks = host.get(f"/api/jobs/{done['instanceId']}/tasks")
    assert code == 200 and [(t["name"], t["activity"], t["status"]) for t in tasks["tasks"]] == [
        (f"{CONTAINER}/src/big.tif", "remove_outputs", "done")], tasks

    code, again = host.submit("unpublish", {**body, "rerun": True})
    assert code == 202, again
    rerun = host.follow(again["statusQueryGetUri"])
    assert rerun["output"]["total"] == 0 and rerun["output"]["detail"]["plan"]["counts"]["items"] == 0


def check_items_and_a_whole_collection(host, store, tmp: Path) -> str:
    """By item ids: the item and the outputs its assets point at; then the whole collection: its
    items, their outputs, the collection itself. Returns the collection's id (removed)."""
    import activities
    import stac_ops

    collection = "unpub-whole"
    store.create_container("unpub2")
    for name, path in rasters(tmp).items():
        if "small" in name:
            store.upload_from_path("unpub2", name, path)
    converted = host.run("cog_conversion", {"container": "unpub2", "blobs": ["src/small0.tif", "src/small1.tif"],
                                            "collection": collection})
    assert converted["output"]["done"] == 2, converted["output"]
    first = stac_ops.item_id_for_blob("unpub2", "src/small0.tif")
    assert set(listing(store, OUTPUT, "unpub2/src/small0")) == {"unpub2/src/small0.tif",
                                                                 "unpub2/src/small0.thumbnail.png"}
    code, missing = host.submit("unpublish", {"collection": "no-such-collection", "entire_collection": True})
    assert code == 404 and "no-such-collection" in missing["error"], missing
    code, bad = host.submit("unpublish", {"collection": collection})
    assert code == 400 and "exactly one of" in str(bad["problems"]), bad

    by_item = host.run("unpublish", {"collection": collection, "items": [first]})
    assert by_item["output"]["done"] == 1, by_item["output"]
    assert listing(store, OUTPUT, "unpub2/src/small0") == {}
    assert activities.catalog().get_item(collection, first) is None
    assert len(listing(store, OUTPUT, "unpub2/src/small1")) == 2

    whole = host.run("unpublish", {"collection": collection, "entire_collection": True})
    assert whole["output"]["failed"] == 0 and whole["output"]["done"] == 1, whole["output"]
    assert whole["output"]["detail"]["collections"]["removed"] == [collection]
    assert activities.catalog().get_collection(collection) is None
    assert listing(store, OUTPUT, "unpub2/") == {}
    assert set(listing(store, "unpub2")) == {"src/small0.tif", "src/small1.tif"}
    return collection


def check_sync_removes_a_deleted_tiled_sources_whole_output(host, store, tmp: Path) -> None:
    """A tiled source deleted from a synced container: the next sync removes its tile items and
    its tiles, thumbnails and mosaic (through unpublish); other sources stay."""
    import activities
    import stac_ops

    container = "unpub-sync"
    store.create_container(container)
    for name, path in rasters(tmp).items():
        store.upload_from_path(container, name, path)
    tiled = host.run("process_tiled_raster", {"container": container, "blob": "src/big.tif", "tile_size": 512})
    assert tiled["output"]["done"] == 4, tiled["output"]
    first = host.run("sync_container", {"container": container})
    assert first["output"]["failed"] == 0, first["output"]
    collection = stac_ops.default_collection_id(container)
    assert len(items_of(container, "src/big.tif")) == 5  # four tiles and the source cataloged in place
    store.delete(container, "src/big.tif")
    second = host.run("sync_container", {"container": container, "rerun": True})
    assert second["output"]["failed"] == 0 and second["output"]["detail"]["removed"] == 5, second["output"]
    assert items_of(container, "src/big.tif") == []
    assert listing(store, OUTPUT, f"{container}/src/big") == {}
    assert len(activities.catalog().search(collection, limit=100)) == 2  # the two small sources


def check_a_deletion_event_removes_a_tiled_sources_whole_output(host, store, tmp: Path) -> None:
    """``ingest_blob`` for a deleted tiled source removes its tile items and its outputs."""
    container = "unpub-events"
    store.create_container(container)
    store.upload_from_path(container, "src/big.tif", rasters(tmp)["src/big.tif"])
    tiled = host.run("process_tiled_raster", {"container": container, "blob": "src/big.tif", "tile_size": 512})
    assert tiled["output"]["done"] == 4, tiled["output"]
    assert len(items_of(container, "src/big.tif")) == 4
    store.delete(container, "src/big.tif")
    deleted = host.run("ingest_blob", {"container": container, "blob": "src/big.tif", "event": "deleted",
                                       "version": "7"})
    assert deleted["runtimeStatus"] == "Completed" and deleted["output"]["failed"] == 0, deleted["output"]
    assert deleted["output"]["detail"]["removed"] == 4
    assert items_of(container, "src/big.tif") == []
    assert listing(store, OUTPUT, f"{container}/src/big") == {}
