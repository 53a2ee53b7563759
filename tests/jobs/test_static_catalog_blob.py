"""A static STAC catalog kept in a blob container (Azurite): the catalog behaviours that the local
directory has, through the CatalogStore seam."""
from __future__ import annotations

import datetime as dt
import json

import pystac
import pytest

import static_catalog
import stac_collections
import stac_ops
from activities import BlobCatalogStore
from storage import AzureBlobStore


def make_item(item_id: str, day: int, etag: str) -> pystac.Item:
    item = pystac.Item(item_id, {"type": "Point", "coordinates": [day, 1.0]}, [day, 1.0, day, 1.0],
                       dt.datetime(2026, 1, day, tzinfo=dt.timezone.utc), {stac_ops.SOURCE_ETAG: etag},
                       collection="blobcat")
    return item


@pytest.fixture
def catalog(azurite_connection_string):
    store = AzureBlobStore(connection_string=azurite_connection_string)
    cat = static_catalog.StaticCatalog(BlobCatalogStore(store, "stac-static"))
    cat.upsert_collection(stac_collections.build_collection("blobcat", description="blob-backed"))
    return store, cat


def test_blob_static_catalog_upserts_lists_deletes_and_finalizes(catalog):
    store, cat = catalog
    cat.upsert_items([make_item(f"i{d}", d, f"e{d}") for d in (1, 2, 3)])
    cat.upsert_items([make_item("i2", 2, "changed")])
    assert cat.list_item_etags("blobcat") == {"i1": "e1", "i2": "changed", "i3": "e3"}
    assert cat.delete_item("blobcat", "i3") is True
    cat.refresh_collection("blobcat")
    cat.finalize()
    root = json.loads(store.download_bytes("stac-static", "catalog.json"))
    assert any(link["rel"] == "child" for link in root["links"])
    collection = json.loads(store.download_bytes("stac-static", "blobcat/collection.json"))
    assert sum(1 for link in collection["links"] if link["rel"] == "item") == 2
    assert cat.get_item("blobcat", "i1").properties[stac_ops.SOURCE_ETAG] == "e1"
    assert cat.health().ok
