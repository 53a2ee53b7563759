"""What unpublish takes, on a local store: only blobs whose ``rmh_*`` metadata says the service
wrote them, never one in an item's source container, never a data team's blob beside our outputs;
a tile item belongs to its source blob."""
from __future__ import annotations

from pathlib import Path

import pytest

import unpublish
from catalogs import ItemFacts
from storage import LocalDirStore


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    store = LocalDirStore(tmp_path / "storage")
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    ours = {"rmh_source": "rasters/a.tif", "rmh_source_etag": "e1", "rmh_options": "o"}
    for container, name, metadata in (
            ("rasters", "a.tif", {}),  # the source
            ("cogs", "rasters/a.tif", ours), ("cogs", "rasters/a.thumbnail.png", ours),
            ("cogs", "rasters/a/tiles/0-0.tif", ours), ("cogs", "rasters/a/mosaic.vrt", {}),  # a mosaic from before provenance
            ("cogs", "rasters/a.team-notes.tif", {}),  # a data team's blob beside our outputs
            ("cogs", "rasters/ab.tif", {**ours, "rmh_source": "rasters/ab.tif"})):  # another source's
        store.create_container(container)
        store.upload_from_path(container, name, blob, metadata=metadata)
    return store


def test_a_sources_outputs_are_what_its_metadata_names(store):
    found = sorted(b.path for b in unpublish.source_outputs(store, "cogs", "rasters", "a.tif"))
    assert found == ["cogs/rasters/a.thumbnail.png", "cogs/rasters/a.tif", "cogs/rasters/a/mosaic.vrt",
                     "cogs/rasters/a/tiles/0-0.tif"]
    assert unpublish.source_outputs(store, "no-such-container", "rasters", "a.tif") == []


def test_an_items_assets_lead_only_to_blobs_the_service_wrote(store):
    item = ItemFacts(collection="c", id="rasters~a.tif", source_container="rasters", source_blob="a.tif", assets={
        "data": "https://acct.blob.core.windows.net/cogs/rasters/a.tif",
        "thumbnail": "../../../storage/cogs/rasters/a.thumbnail.png",
        "notes": "https://acct.blob.core.windows.net/cogs/rasters/a.team-notes.tif",
        "source": "https://acct.blob.core.windows.net/rasters/a.tif"})
    found = sorted(b.path for b in unpublish.referenced_outputs(store, item, ["cogs", "rasters"]))
    assert found == ["cogs/rasters/a.thumbnail.png", "cogs/rasters/a.tif"]


def test_a_tile_item_belongs_to_its_source_blob():
    tile = ItemFacts(collection="c", id="rasters~a.tif~0-0", source_container="rasters", source_blob="d/a.tif/0-0",
                     assets={"source": "https://acct.blob.core.windows.net/rasters/d/a.tif"})
    assert unpublish.source_of(tile) == "d/a.tif"
    in_place = ItemFacts(collection="c", id="x", source_container="rasters", source_blob="d/a.tif/0-0")
    assert unpublish.source_of(in_place) == "d/a.tif/0-0"  # no source asset: the blob it names
    assert unpublish.source_of(ItemFacts(collection="c", id="imported")) is None
    assert unpublish.parents("a/b/c") == ["a/b", "a"]
