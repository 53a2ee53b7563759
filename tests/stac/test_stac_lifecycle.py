"""The catalog's lifecycle on both backends: change events written with the change (created,
updated, deleted, published, revoked; none for an identical write or a write that did not
commit), drafts kept where no search sees them until published, transitions recorded, items
found by their source for unpublish, and the static journal settling what a crash left."""
from __future__ import annotations

import copy
import datetime as dt

import orjson
import psycopg
import pytest

import change_events
import outbox
import pgstac_catalog
import stac_collections
import stac_ops
import static_catalog
from catalogs import CollectionNotFound
from drafts import Transition

pytestmark = pytest.mark.services
SOURCE = "/rmhgeoapi/test"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """One real item dict (from a synthetic raster) to vary ids and etags from."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    path = tmp_path_factory.mktemp("template") / "t.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs="EPSG:32618",
                       transform=from_bounds(500000, 4000000, 510000, 4010000, 32, 32), nodata=0) as dst:
        dst.write(np.ones((3, 32, 32), dtype="uint8"))
    return stac_ops.item_from_raster(path, container="c", blob_name="t.tif", source_etag="etag-0",
                                     source_href="https://a/c/t.tif", data_href="https://a/cogs/t.tif",
                                     source_last_modified=dt.datetime(2024, 1, 15, tzinfo=dt.timezone.utc)).to_dict()


def variant(template: dict, collection_id: str, n: int, *, etag: str = "etag-0") -> dict:
    item = copy.deepcopy(template)
    item["id"] = stac_ops.item_id_for_blob("c", f"dir/{n:05d}.tif")
    item["collection"] = collection_id
    item["properties"]["datetime"] = f"2024-{n % 12 + 1:02d}-{n % 28 + 1:02d}T00:00:00Z"
    item["properties"][stac_ops.SOURCE_ETAG] = etag
    return item


@pytest.fixture
def catalog(backend, request, tmp_path, validator):
    """A catalog of either backend that records change events (source ``SOURCE``)."""
    if backend == "pgstac":
        return pgstac_catalog.PgStacCatalog(request.getfixturevalue("pg_pool"), validator=validator,
                                            event_source=SOURCE)
    return static_catalog.StaticCatalog(tmp_path / "catalog", validator=validator, event_source=SOURCE)


@pytest.fixture
def collection(catalog, collection_id) -> str:
    catalog.upsert_collection(stac_collections.build_collection(collection_id, license="CC-BY-4.0"),
                              partition_trunc="month")
    drained(catalog)  # earlier tests' events of a shared database are not this test's
    return collection_id


def drained(catalog, collection: str | None = None) -> list[dict]:
    """Every pending event (of one collection), taken from the outbox as a drainer would."""
    events = []
    while True:
        with catalog.event_outbox().batch(500) as batch:
            if not batch.events:
                break
            events += batch.events
            batch.sent()
    return [e for e in events if collection is None or e["data"]["collection"] == collection]


def kinds(events: list[dict]) -> list[tuple[str, str]]:
    return [(change_events.change_of(e).value, e["data"]["id"]) for e in events]


def transition(collection: str, action: str, reason: str = "checked") -> Transition:
    return Transition(collection=collection, action=action, items=0, by="tester", reason=reason, job="job-1")


def test_each_change_is_one_cloudevent_and_an_identical_write_none(catalog, collection, template):
    first = variant(template, collection, 1)
    catalog.upsert_items([first, variant(template, collection, 2)])
    catalog.upsert_items([first])  # identical: no event
    changed = variant(template, collection, 1, etag="etag-1")
    catalog.upsert_items([changed])
    catalog.delete_items(collection, [first["id"], "no-such-item"])
    events = drained(catalog, collection)
    assert kinds(events) == [("created", first["id"]), ("created", variant(template, collection, 2)["id"]),
                             ("updated", first["id"]), ("deleted", first["id"])]
    assert len({e["id"] for e in events}) == 4
    sequences = [e["sequence"] for e in events]
    assert sequences == sorted(sequences)
    for event in events:
        parsed = change_events.CloudEvent.model_validate(event)
        assert parsed.specversion == "1.0" and parsed.source == SOURCE
        assert parsed.type.startswith("org.rmhgeoapi.item.")
        assert parsed.subject == f"collections/{collection}/items/{parsed.data['id']}"
        assert parsed.data["collection"] == collection
        when = {i["id"]: i["properties"]["datetime"] for i in (first, variant(template, collection, 2))}
        assert len(parsed.data["bbox"]) == 4 and parsed.data["datetime"] == when[parsed.data["id"]]
        assert set(parsed.data["assets"]) == set(template["assets"])
    assert events[2]["data"]["assets"]["data"].endswith("cogs/t.tif")  # the href, as the catalog holds it
    assert events[3]["data"]["bbox"] == pytest.approx(first["bbox"])
    assert drained(catalog) == []  # delivered events are gone


def test_a_write_that_does_not_commit_has_no_event(catalog, collection, template, backend):
    if backend == "pgstac":
        catalog.stage_items("s1", [variant(template, collection, 1)])
        catalog.stage_items("s1", [variant(template, "zz-no-such-collection", 2)], validate=False)
        with pytest.raises(CollectionNotFound):
            catalog.flush_staged("s1")  # the first collection's batch was written, then rolled back
        assert catalog.search(collection) == []
    else:
        item = variant(template, collection, 1)
        with pytest.raises(RuntimeError):
            with catalog.journal.change(collection, f"{collection}/items/{item['id']}.json", "{}",
                                        change_events.item_event("created", item, source=SOURCE)):
                raise RuntimeError("the write failed")
    assert drained(catalog) == []


def test_drafts_are_invisible_until_published_and_hidden_again_by_revoke(catalog, collection, template):
    items = [variant(template, collection, n) for n in range(3)]
    catalog.upsert_items(items, draft=True)
    assert catalog.search(collection) == [] and catalog.get_item(collection, items[0]["id"]) is None
    assert set(catalog.list_item_etags(collection)) == {i["id"] for i in items}  # sync sees its drafts
    assert drained(catalog) == []  # nothing public happened
    assert catalog.count_items(collection) == 3

    result = catalog.set_visibility("publish", collection, None, transition(collection, "publish", "reviewed"))
    assert result.items == 3 and result.transition.items == 3 and result.transition.at is not None
    assert {i.id for i in catalog.search(collection)} == {i["id"] for i in items}
    assert sorted(kinds(drained(catalog))) == sorted(("published", i["id"]) for i in items)

    result = catalog.set_visibility("revoke", collection, [items[0]["id"]], transition(collection, "revoke", "wrong"))
    assert result.items == 1
    assert {i.id for i in catalog.search(collection)} == {items[1]["id"], items[2]["id"]}
    assert kinds(drained(catalog)) == [("revoked", items[0]["id"])]
    again = catalog.set_visibility("publish", collection, [items[0]["id"]], transition(collection, "publish", "fixed"))
    assert again.items == 1 and len(catalog.search(collection)) == 3
    state = catalog.lifecycle(collection)
    assert [(t.action, t.items, t.reason, t.by) for t in state.transitions] == [
        ("publish", 1, "fixed", "tester"), ("revoke", 1, "wrong", "tester"), ("publish", 3, "reviewed", "tester")]
    assert state.drafts == []


def test_a_draft_collection_keeps_every_write_until_published(catalog, collection, template):
    assert catalog.mark_draft(collection, transition(collection, "draft", "written as a draft"))
    assert not catalog.mark_draft(collection, transition(collection, "draft"))
    catalog.upsert_items([variant(template, collection, 1)])  # no draft flag: the collection decides
    catalog.stage_items("st", [variant(template, collection, 2)])
    catalog.flush_staged("st")
    assert catalog.search(collection) == [] and drained(catalog) == []
    state = catalog.lifecycle(collection)
    assert [(d.collection, d.items, d.whole) for d in state.drafts] == [(collection, 2, True)]
    catalog.set_visibility("publish", collection, None, transition(collection, "publish"))
    assert len(catalog.search(collection)) == 2
    catalog.upsert_items([variant(template, collection, 3)])  # published: writes are public again
    assert len(catalog.search(collection)) == 3
    catalog.set_visibility("revoke", collection, None, transition(collection, "revoke"))
    assert catalog.search(collection) == []
    catalog.upsert_items([variant(template, collection, 4)])  # revoked whole: a draft again
    assert catalog.search(collection) == [] and catalog.count_items(collection) == 4


def test_a_public_write_supersedes_a_pending_draft_of_the_item(catalog, collection, template):
    item = variant(template, collection, 1)
    catalog.upsert_items([item])
    catalog.upsert_items([variant(template, collection, 1, etag="etag-draft")], draft=True)
    assert catalog.list_item_etags(collection)[item["id"]] == "etag-draft"  # the pending revision
    assert catalog.get_item(collection, item["id"]).properties[stac_ops.SOURCE_ETAG] == "etag-0"
    catalog.upsert_items([variant(template, collection, 1, etag="etag-2")])
    assert catalog.list_item_etags(collection)[item["id"]] == "etag-2"
    assert catalog.set_visibility("publish", collection, None, transition(collection, "publish")).items == 0


def test_items_are_found_by_their_source_tiles_included(catalog, collection, template):
    def of(blob: str, n: int) -> dict:
        item = variant(template, collection, n)
        item["id"] = stac_ops.item_id_for_blob("rasters", blob)
        item["properties"].update({stac_ops.SOURCE_CONTAINER: "rasters", stac_ops.SOURCE_BLOB: blob})
        return item

    catalog.upsert_items([of("a/big.tif", 1), of("a/big.tif/tile-0-0", 2), of("a/big.tif/tile-0-1", 3),
                          of("a/big.tiff", 4), of("b/x_1.tif", 5)])
    catalog.upsert_items([of("a/other.tif", 6)], draft=True)
    found = catalog.find_items(source_container="rasters", source_blobs=["a/big.tif"])
    assert sorted(f.source_blob for f in found) == ["a/big.tif", "a/big.tif/tile-0-0", "a/big.tif/tile-0-1"]
    assert all(f.collection == collection and f.assets["data"] == template["assets"]["data"]["href"] for f in found)
    by_prefix = catalog.find_items(collection=collection, source_container="rasters", source_prefix="a/")
    assert len(by_prefix) == 5 and [f.draft for f in by_prefix if f.source_blob == "a/other.tif"] == [True]
    assert [f.source_blob for f in catalog.find_items(source_container="rasters", source_prefix="b/x_")] == ["b/x_1.tif"]
    assert catalog.find_items(source_container="rasters", source_prefix="b/x%") == []  # LIKE characters are text
    assert catalog.find_items(source_container="elsewhere", source_blobs=["a/big.tif"]) == []
    ids = [of("a/big.tif", 1)["id"]]
    assert [f.id for f in catalog.find_items(collection=collection, ids=ids)] == ids


def test_an_emptied_collection_is_deleted_with_its_registered_searches(catalog, collection, template, backend, request):
    catalog.upsert_items([variant(template, collection, 1)])
    if backend == "pgstac":
        with psycopg.connect(request.getfixturevalue("pgstac_dsn"), autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")
            for search, metadata in (({"collections": [collection]}, {}),
                                     ({"collections": [collection, "other"]}, {"rmh:collection": collection}),
                                     ({"collections": ["other"]}, {"name": "someone else's"})):
                conn.execute("SELECT pgstac.search_query(%s, false, %s)",
                             (orjson.dumps(search).decode(), orjson.dumps(metadata).decode()))
    catalog.delete_items(collection, [variant(template, collection, 1)["id"]])
    assert catalog.count_items(collection) == 0
    assert catalog.remove_searches(collection) == (2 if backend == "pgstac" else 0)
    assert catalog.delete_collection(collection) is True
    assert catalog.get_collection(collection) is None and not catalog.delete_collection(collection)
    if backend == "static":
        catalog.finalize()
        assert collection not in catalog.collection_ids()


def test_the_static_journal_settles_what_a_crash_left(tmp_path, template, validator):
    catalog = static_catalog.StaticCatalog(tmp_path / "catalog", validator=validator, event_source=SOURCE)
    catalog.upsert_collection(stac_collections.build_collection("journal", license="CC-BY-4.0"))
    written, lost = variant(template, "journal", 1), variant(template, "journal", 2)
    store = catalog.store
    for item, applied in ((written, True), (lost, False)):  # killed after the pending entry
        key = f"journal/items/{item['id']}.json"
        text = static_catalog._text({**item, "links": []})
        event = change_events.item_event("created", item, source=SOURCE)
        store.write_text(f".events/pending/journal/0000000000000000000{int(applied)}-x.json", orjson.dumps(
            {"event": event, "key": key, "after": outbox.text_hash(text), "at": 0}).decode())
        if applied:
            store.write_text(key, text)
    assert [e["data"]["id"] for e in drained(catalog)] == [written["id"]]  # the change that happened
    assert not list(store.list_keys(".events"))
    assert catalog.get_item("journal", written["id"]) is not None
    assert not (tmp_path / "catalog" / "catalog.json").exists() or ".events" not in (
        tmp_path / "catalog" / "catalog.json").read_text()


def test_static_drafts_are_outside_the_public_tree(tmp_path, template, validator):
    import pystac

    catalog = static_catalog.StaticCatalog(tmp_path / "catalog", validator=validator)
    catalog.upsert_collection(stac_collections.build_collection("hidden", license="CC-BY-4.0"))
    catalog.upsert_items([variant(template, "hidden", n) for n in range(2)], draft=True)
    catalog.finalize()
    root = pystac.Catalog.from_file(str(tmp_path / "catalog" / "catalog.json"))
    assert [i.id for i in root.get_items(recursive=True)] == []
    assert sorted(p.name for p in (tmp_path / "catalog" / ".drafts" / "hidden" / "items").iterdir()) == sorted(
        f"{variant(template, 'hidden', n)['id']}.json" for n in range(2))
    catalog.set_visibility("publish", "hidden", None, transition("hidden", "publish"))
    catalog.finalize()
    root = pystac.Catalog.from_file(str(tmp_path / "catalog" / "catalog.json"))
    assert len(list(root.get_items(recursive=True))) == 2
    draft_text = copy.deepcopy(variant(template, "hidden", 5))
    catalog.upsert_items([draft_text], draft=True)
    assert catalog.health().items == 2  # the public tree only
