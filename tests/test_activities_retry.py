"""A conversion whose catalog write meets an outage after its COG was written retries the catalog
write alone: the file is reported converted ("done"), not "skipped" because a rerun of the whole
activity found the COG it had just written current."""
from __future__ import annotations

import pytest

import activities
import stac_collections
from raster_factory import write_raster
from settings import get_settings
from storage import StorageUnavailable


@pytest.fixture
def local_app(tmp_path, monkeypatch):
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("RMH_STATIC_CATALOG_DIR", str(tmp_path / "catalog"))
    monkeypatch.setenv("RMH_TEMP_DIR", str(tmp_path / "work"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _convert(store, name: str, info, **extra) -> dict:
    return activities.convert_blob({
        "container": "inputs", "collection": "c", "output_container": get_settings().output_container,
        "file": {"name": name, "etag": info.etag, "size": info.size,
                 "last_modified": info.last_modified.isoformat()}, **extra})


def test_an_outage_after_the_cog_write_retries_only_the_catalog_write(local_app, monkeypatch):
    store = activities.blob_store()
    store.create_container("inputs")
    source = write_raster(local_app / "src.tif", width=96, height=96, count=1, crs="EPSG:32633")
    info = store.upload_from_path("inputs", "a.tif", source)
    activities.catalog().upsert_collection(stac_collections.collection_for_container("inputs", collection_id="c"))
    catalog, calls, uploads = activities.catalog(), [], []
    real, real_upload = catalog.upsert_items, store.upload_from_path

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise StorageUnavailable("storage went away after the COG was written")
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog, "upsert_items", flaky)
    monkeypatch.setattr(store, "upload_from_path", lambda *a, **k: uploads.append(a[1]) or real_upload(*a, **k))
    outcome = _convert(store, "a.tif", info)
    assert len(calls) == 2
    assert outcome["status"] == "done" and outcome["item_id"], outcome
    assert sorted(uploads) == ["inputs/a.thumbnail.png", "inputs/a.tif"], uploads  # the COG written once


def test_a_draft_conversion_into_a_public_collection_writes_a_draft_item(local_app):
    """``draft`` reaches the item a fresh conversion writes, not only a rerun's catalog write: the
    collection is public, so only the item-level draft keeps it out of the public catalog."""
    store = activities.blob_store()
    store.create_container("inputs")
    source = write_raster(local_app / "src.tif", width=64, height=64, count=1, crs="EPSG:32633")
    info = store.upload_from_path("inputs", "d.tif", source)
    catalog = activities.catalog()
    catalog.upsert_collection(stac_collections.collection_for_container("inputs", collection_id="c"))
    outcome = _convert(store, "d.tif", info, draft=True)
    assert outcome["status"] == "done", outcome
    drafts = {d.collection: (d.items, d.whole) for d in catalog.lifecycle("c").drafts}
    assert drafts == {"c": (1, False)}, drafts
