"""Catalog behaviour, the same tests for pgSTAC (real PostgreSQL + PostGIS) and the static catalog."""
from __future__ import annotations

import copy
import datetime as dt
import multiprocessing
import json
import threading

import psycopg
import pystac
import pytest
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

import catalogs
import pgstac_catalog
import pgstac_summaries
import static_catalog
import grid_footprint
import stac_collections
import stac_ops

pytestmark = pytest.mark.services
LAST_MODIFIED = dt.datetime(2024, 1, 15, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """One real item dict (from a synthetic raster) to vary ids, datetimes and etags from."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    path = tmp_path_factory.mktemp("template") / "t.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8", crs="EPSG:32618",
                       transform=from_bounds(500000, 4000000, 510000, 4010000, 32, 32), nodata=0) as dst:
        dst.write(np.ones((3, 32, 32), dtype="uint8"))
    return stac_ops.item_from_raster(path, container="c", blob_name="t.tif", source_etag="etag-0",
                                     source_href="https://a/c/t.tif", data_href="https://a/cogs/t.tif",
                                     source_last_modified=LAST_MODIFIED).to_dict()


def variant(template: dict, collection_id: str, n: int, *, when: str | None = None, etag: str = "etag-0",
            lon: float | None = None) -> dict:
    item = copy.deepcopy(template)
    item["id"] = stac_ops.item_id_for_blob("c", f"dir/{n:05d}.tif")
    item["collection"] = collection_id
    item["properties"]["datetime"] = when or f"2024-{n % 12 + 1:02d}-{n % 28 + 1:02d}T00:00:00Z"
    item["properties"][stac_ops.SOURCE_ETAG] = etag
    if lon is not None:
        item["bbox"] = [lon, 10.0, lon + 1.0, 11.0]
        item["geometry"] = grid_footprint._box(lon, 10.0, lon + 1.0, 11.0)[0]
    return item


@pytest.fixture
def collection(catalog, collection_id) -> str:
    catalog.upsert_collection(stac_collections.build_collection(collection_id, license="CC-BY-4.0"), partition_trunc="month")
    return collection_id


def test_upserting_the_same_item_twice_leaves_one(catalog, collection, template, item_copies):
    item = variant(template, collection, 1)
    first = catalog.upsert_items([item])
    second = catalog.upsert_items([item])
    assert (first.written, second.written, second.unchanged) == (1, 0, 1)
    assert item_copies(collection, item["id"]) == 1
    assert catalog.list_item_etags(collection) == {item["id"]: "etag-0"}


def test_a_changed_source_etag_updates_the_item(catalog, collection, template, item_copies):
    catalog.upsert_items([variant(template, collection, 1, etag="v1")])
    result = catalog.upsert_items([variant(template, collection, 1, etag="v2")])
    item_id = variant(template, collection, 1)["id"]
    assert result.written == 1
    assert catalog.get_item(collection, item_id).properties[stac_ops.SOURCE_ETAG] == "v2"
    assert catalog.list_item_etags(collection) == {item_id: "v2"}
    assert item_copies(collection, item_id) == 1


def test_a_datetime_moved_across_partitions_leaves_one_copy(catalog, collection, template, item_copies, backend, request):
    january = variant(template, collection, 1, when="2024-01-10T00:00:00Z")
    march = variant(template, collection, 1, when="2024-03-10T00:00:00Z", etag="v2")
    catalog.upsert_items([january])
    partitions = []
    if backend == "pgstac":
        partitions.append(_partition_of(request.getfixturevalue("pgstac_dsn"), collection, january["id"]))
    catalog.upsert_items([march])
    assert item_copies(collection, january["id"]) == 1
    assert catalog.get_item(collection, january["id"]).datetime == dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
    if backend == "pgstac":
        partitions.append(_partition_of(request.getfixturevalue("pgstac_dsn"), collection, january["id"]))
        assert partitions[0] != partitions[1] and partitions[0].endswith("_202401") and partitions[1].endswith("_202403")
    assert [i.id for i in catalog.search(collection, datetime="2024-01-01T00:00:00Z/2024-01-31T23:59:59Z")] == []


def test_batches_of_later_datetimes_do_not_rebuild_the_partition_each_time(catalog, collection_id, template, backend,
                                                                          request):
    """A sync's chunks come in listing order with datetimes growing (a blob's last-modified time):
    pgSTAC re-creates a partition's datetime constraints, re-checking every row, whenever a write
    reaches past them. Ten batches an hour apart in one month re-create them once, not ten times,
    and a datetime search still finds exactly what it should."""
    if backend != "pgstac":
        pytest.skip("pgSTAC's partition constraints")
    dsn = request.getfixturevalue("pgstac_dsn")
    catalog.upsert_collection(stac_collections.build_collection(collection_id))  # one partition
    constraints = []
    for batch in range(10):
        items = [variant(template, collection_id, batch * 5 + n, when=f"2024-05-03T{batch:02d}:{n:02d}:00Z")
                 for n in range(5)]
        catalog.upsert_items(items)
        constraints.append(_datetime_constraints(dsn, collection_id))
    assert constraints[0] and len(set(constraints)) == 1, constraints
    found = catalog.search(collection_id, datetime="2024-05-03T04:00:00Z/2024-05-03T05:59:59Z")
    assert sorted(i.properties["datetime"] for i in found) == sorted(
        f"2024-05-03T{h:02d}:{n:02d}:00Z" for h in (4, 5) for n in range(5))


def _datetime_constraints(dsn: str, collection_id: str) -> tuple[int, ...]:
    """The oids of the CHECK constraints on the collection's partitions (new oids: re-created)."""
    with psycopg.connect(dsn) as conn:
        return tuple(row[0] for row in conn.execute(
            "SELECT c.oid FROM pg_constraint c JOIN pgstac.partitions_view p "
            "ON c.conrelid = ('pgstac.' || quote_ident(p.partition))::regclass "
            "WHERE p.collection = %s AND c.contype = 'c' ORDER BY c.oid", (collection_id,)))


def _partition_of(dsn: str, collection_id: str, item_id: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT tableoid::regclass::text FROM pgstac.items WHERE collection = %s AND id = %s",
                            (collection_id, item_id)).fetchone()[0]


def test_delete_removes_the_item(catalog, collection, template, item_copies):
    items = [variant(template, collection, n) for n in range(3)]
    catalog.upsert_items(items)
    assert catalog.delete_item(collection, items[0]["id"]) is True
    assert catalog.delete_item(collection, items[0]["id"]) is False
    assert catalog.get_item(collection, items[0]["id"]) is None
    assert item_copies(collection, items[0]["id"]) == 0
    assert catalog.delete_items(collection, [i["id"] for i in items]) == 2
    assert catalog.list_item_etags(collection) == {}


def test_eight_concurrent_writers_lose_nothing(catalog, collection, template, backend, request):
    """8 writers x 200 items, in batches of 25, over 12 monthly partitions created concurrently."""
    if backend == "pgstac":
        dsn = request.getfixturevalue("pgstac_dsn")
        validator = catalog.validator

        def make_catalog():
            return pgstac_catalog.PgStacCatalog(psycopg.connect(dsn), validator=validator, batch_size=25)
    else:
        def make_catalog():
            return catalog

    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer(w: int) -> None:
        try:
            mine = make_catalog()
            items = [variant(template, collection, w * 200 + n) for n in range(200)]
            barrier.wait()
            for start in range(0, 200, 25):
                mine.upsert_items(items[start:start + 25])
        except BaseException as err:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    etags = catalog.list_item_etags(collection)
    assert len(etags) == 1600
    assert len(catalog.search(collection, limit=2000)) == 1600
    if backend == "pgstac":
        with psycopg.connect(request.getfixturevalue("pgstac_dsn")) as conn:
            rows, ids = conn.execute("SELECT count(*), count(DISTINCT id) FROM pgstac.items WHERE collection = %s",
                                     (collection,)).fetchone()
        assert rows == ids == 1600


def test_concurrent_upserts_of_the_same_ids_with_different_datetimes_keep_one_copy(
        catalog, collection, template, backend, request):
    """4 writers race on the same 100 ids, each with its own month: one copy of each id survives."""
    if backend == "pgstac":
        dsn, validator = request.getfixturevalue("pgstac_dsn"), catalog.validator

        def make_catalog():
            return pgstac_catalog.PgStacCatalog(psycopg.connect(dsn), validator=validator, batch_size=10)
    else:
        def make_catalog():
            return catalog
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer(w: int) -> None:
        try:
            mine = make_catalog()
            items = [variant(template, collection, n, when=f"2024-{w + 1:02d}-15T00:00:00Z", etag=f"w{w}")
                     for n in range(100)]
            barrier.wait()
            for start in range(0, 100, 10):
                mine.upsert_items(items[start:start + 10])
        except BaseException as err:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(catalog.list_item_etags(collection)) == 100
    assert len(catalog.search(collection, limit=1000)) == 100
    if backend == "pgstac":
        with psycopg.connect(request.getfixturevalue("pgstac_dsn")) as conn:
            rows = conn.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s", (collection,)).fetchone()[0]
        assert rows == 100


def test_backends_implement_the_catalog_protocol(catalog):
    assert isinstance(catalog, catalogs.Catalog)


def test_an_item_without_a_source_asset_round_trips(catalog, collection, template):
    item = variant(template, collection, 3)
    del item["assets"]["source"]
    catalog.upsert_items([item])
    stored = catalog.get_item(collection, item["id"]).to_dict(include_self_link=False, transform_hrefs=False)
    assert stored["assets"] == item["assets"]


def test_search_finds_items_by_bbox_and_datetime(catalog, collection, template):
    items = [variant(template, collection, n, when=f"2024-0{n + 1}-05T00:00:00Z", lon=-170.0 + 60 * n) for n in range(5)]
    catalog.upsert_items(items)
    by_bbox = catalog.search(collection, bbox=[-115.0, 0.0, 0.0, 20.0])
    assert [i.id for i in by_bbox] == [items[2]["id"], items[1]["id"]]
    by_time = catalog.search(collection, datetime="2024-03-01T00:00:00Z/2024-04-30T00:00:00Z")
    assert {i.id for i in by_time} == {items[2]["id"], items[3]["id"]}
    both = catalog.search(collection, bbox=[-115.0, 0.0, 0.0, 20.0], datetime="2024-02-15T00:00:00Z/..")
    assert [i.id for i in both] == [items[2]["id"]]
    instant = catalog.search(collection, datetime="2024-05-05T00:00:00Z")
    assert [i.id for i in instant] == [items[4]["id"]]
    assert len(catalog.search(collection, limit=2)) == 2


def test_items_round_trip_through_pystac(catalog, collection, template, validator):
    item = variant(template, collection, 7)
    catalog.upsert_items([pystac.Item.from_dict(item)])
    stored = catalog.get_item(collection, item["id"])
    again = pystac.Item.from_dict(stored.to_dict(include_self_link=False, transform_hrefs=False))
    for key in ("id", "collection", "geometry", "bbox", "properties", "assets", "stac_extensions"):
        assert again.to_dict(include_self_link=False, transform_hrefs=False)[key] == item[key], key
    validator.validate_item(again)
    from_search = catalog.search(collection)[0].to_dict(include_self_link=False, transform_hrefs=False)
    assert from_search["properties"] == item["properties"] and from_search["assets"] == item["assets"]


REAL = ["RGB.byte.tif", "RGBA.uint16.tif", "all-nodata.tif", "alpha.tif", "goes.tif", "shade.tif", "world.rgb.tif"]


def test_real_raster_items_are_stored_and_found_by_their_bbox(catalog, collection, shared_rasters, make_raster):
    paths = [shared_rasters / name for name in REAL]
    paths.append(make_raster(crs="EPSG:32660", bounds=(300000.0, 0.0, 900000.0, 1000000.0), name="antimeridian.tif"))
    items = [stac_ops.item_from_raster(p, container="real", blob_name=p.name, collection_id=collection,
                                       source_last_modified=LAST_MODIFIED) for p in paths]
    assert catalog.upsert_items(items).written == len(items)
    for item in items:
        west, south, east, north = item.bbox
        probe = [west, south, east if east >= west else 180.0, north]
        found = {i.id for i in catalog.search(collection, bbox=probe, limit=100)}
        assert item.id in found, (item.id, probe)
        assert catalog.get_item(collection, item.id).to_dict()["geometry"] == item.to_dict()["geometry"]
    assert {i.id for i in catalog.search(collection, bbox=[-179.9, 1.0, -179.0, 2.0])} >= {items[-1].id}


def test_geostationary_disks_are_found_at_75_north(catalog, collection, shared_rasters, tmp_path):
    """Issue 23: goes.tif's bbox ended 10.7 degrees (36 px) short of its data, so a search at
    75 degrees North missed it. Its disk, and one across the antimeridian, are found there."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_bounds

    pacific = tmp_path / "pacific-disk.tif"
    with rasterio.open(pacific, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8",
                       crs="+proj=geos +lon_0=140.7 +h=35785863 +ellps=WGS84 +units=m +no_defs",
                       transform=from_bounds(-5_500_000, -5_500_000, 5_500_000, 5_500_000, 200, 200)) as dst:
        dst.write(np.ones((1, 200, 200), dtype="uint8"))
    probes = {"goes.tif": [-76.0, 74.5, -74.0, 75.5], "pacific-disk.tif": [139.7, 74.5, 141.7, 75.5]}
    for path in (shared_rasters / "goes.tif", pacific):
        item = stac_ops.item_from_raster(path, container="disks", blob_name=path.name, collection_id=collection,
                                         source_last_modified=LAST_MODIFIED)
        catalog.upsert_items([item])
        assert item.id in {i.id for i in catalog.search(collection, bbox=probes[path.name], limit=100)}, item.bbox


def test_invalid_items_are_rejected_before_anything_is_written(catalog, collection, template):
    good, bad = variant(template, collection, 1), variant(template, collection, 2)
    bad["properties"]["proj:shape"] = "wide"
    with pytest.raises(stac_ops.ItemValidationError, match=bad["id"]):
        catalog.upsert_items([good, bad])
    assert catalog.list_item_etags(collection) == {}


def test_items_of_an_unknown_collection_are_refused(catalog, template):
    with pytest.raises(catalogs.CollectionNotFound, match="nowhere"):
        catalog.upsert_items([variant(template, "nowhere", 1)])


def test_collection_extent_and_summaries_come_from_items(catalog, collection, template, validator):
    catalog.upsert_items([variant(template, collection, 0, when="2023-06-01T00:00:00Z", lon=10.0),
                          variant(template, collection, 1, when="2024-02-01T00:00:00Z", lon=40.0)])
    refreshed = catalog.refresh_collection(collection)
    assert refreshed.extent.spatial.bboxes == [[10.0, 10.0, 41.0, 11.0]]
    assert refreshed.extent.temporal.intervals == [[dt.datetime(2023, 6, 1, tzinfo=dt.timezone.utc),
                                                    dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)]]
    assert refreshed.summaries.get_list("proj:code") == ["EPSG:32618"]
    assert refreshed.summaries.get_list("data_type") == ["uint8"]
    assert refreshed.license == "CC-BY-4.0"
    validator.validate_collection(refreshed)
    assert catalog.get_collection(collection).extent.spatial.bboxes == [[10.0, 10.0, 41.0, 11.0]]


def test_health_reports_counts(catalog, collection, template):
    catalog.upsert_items([variant(template, collection, n) for n in range(3)])
    health = catalog.health()
    assert health.ok and health.collections >= 1 and health.items >= 3
    assert catalogs.CatalogHealth.model_validate(health.model_dump(mode="json")) == health


def test_unsafe_ids_are_refused(catalog, collection, template):
    item = variant(template, collection, 1)
    item["id"] = "../escape"
    with pytest.raises(stac_ops.InvalidItemId):
        catalog.upsert_items([item])


# ------------------------------------------------------------------------------ pgSTAC only


@pytest.fixture
def pg_catalog(pg_pool, validator, collection_id):
    catalog = pgstac_catalog.PgStacCatalog(pg_pool, validator=validator, retry_delay=0.01)
    catalog.upsert_collection(stac_collections.build_collection(collection_id), partition_trunc="year")
    return catalog


def test_pgstac_retries_a_deadlock_then_succeeds(pg_catalog, collection_id, template, monkeypatch):
    calls = []
    real = pgstac_catalog.PgStacCatalog._write_batch

    def flaky(self, conn, cid, batch, *args, **kwargs):
        calls.append(cid)
        if len(calls) == 1:
            raise pg_errors.DeadlockDetected("deadlock detected")
        return real(self, conn, cid, batch, *args, **kwargs)

    monkeypatch.setattr(pgstac_catalog.PgStacCatalog, "_write_batch", flaky)
    assert pg_catalog.upsert_items([variant(template, collection_id, 1)]).written == 1
    assert len(calls) == 2


def test_pgstac_gives_up_after_bounded_retries(pg_catalog, collection_id, template, monkeypatch):
    calls = []

    def always(self, conn, cid, batch, *args, **kwargs):
        calls.append(cid)
        raise pg_errors.SerializationFailure("could not serialize access")

    monkeypatch.setattr(pgstac_catalog.PgStacCatalog, "_write_batch", always)
    with pytest.raises(catalogs.CatalogUnavailable, match="3 retries"):
        pg_catalog.upsert_items([variant(template, collection_id, 1)])
    assert len(calls) == 4


def test_pgstac_does_not_retry_other_errors(pg_catalog, collection_id, template, monkeypatch):
    calls = []

    def broken(self, conn, cid, batch, *args, **kwargs):
        calls.append(cid)
        raise pg_errors.UndefinedTable("no such table")

    monkeypatch.setattr(pgstac_catalog.PgStacCatalog, "_write_batch", broken)
    with pytest.raises(catalogs.CatalogQueryError, match="UndefinedTable"):
        pg_catalog.upsert_items([variant(template, collection_id, 1)])
    assert len(calls) == 1


def test_pgstac_refuses_a_database_of_another_pgstac_version(pg_catalog, collection_id, template, monkeypatch):
    import pypgstac

    monkeypatch.setattr(pypgstac, "__version__", "0.7.1")
    with pytest.raises(catalogs.PgStacVersionMismatch, match="0.7.1"):
        pg_catalog.upsert_items([variant(template, collection_id, 1)])


# pgSTAC's own hydration of every item, the reference for the summary's per-group hydration
_HYDRATED_ASSETS = """
SELECT a.key, a.value->>'type', a.value->>'title',
       CASE WHEN jsonb_typeof(a.value->'roles') = 'array'
            THEN ARRAY(SELECT jsonb_array_elements_text(a.value->'roles')) END, count(*)
FROM pgstac.items i
CROSS JOIN LATERAL jsonb_each(pgstac.content_hydrate(i, '{"include": ["assets"]}'::jsonb)->'assets') a
WHERE i.collection = %s AND jsonb_typeof(a.value) = 'object'
GROUP BY 1, 2, 3, 4
"""


def test_pgstac_asset_summary_hydrates_like_pgstac(pg_catalog, pg_pool, collection_id, template):
    """Items written under two base items (the collection's item_assets changed in between),
    with an asset field the base has and the item lacks (pgSTAC's do-not-merge marker), another
    that differs, and an asset only some items have: the summary, hydrated once per group, must
    count what pgSTAC's hydration of every item counts."""
    first = [variant(template, collection_id, n) for n in range(4)]
    del first[0]["assets"]["data"]["title"]
    first[1]["assets"]["data"]["roles"] = ["data", "visual"]
    pg_catalog.upsert_items(first)
    pg_catalog.refresh_collection(collection_id)  # new item_assets: a second base item
    second = [variant(template, collection_id, n) for n in range(4, 7)]
    second[0]["assets"]["data"]["type"] = stac_ops.GEOTIFF_MEDIA_TYPE
    del second[1]["assets"]["source"]
    pg_catalog.upsert_items(second)
    with pg_pool.connection() as conn:
        conn.execute("SET search_path TO pgstac, public")
        bases = conn.execute("SELECT count(*) FROM pgstac.base_items WHERE collection = %s",
                             (collection_id,)).fetchone()[0]
        expected = sorted(conn.execute(_HYDRATED_ASSETS, (collection_id,)).fetchall(),
                          key=lambda r: json.dumps(r, default=str))
        got = sorted(((a.key, a.type, a.title, a.roles, a.items) for a in pgstac_summaries.asset_summaries(conn, collection_id)),
                     key=lambda r: json.dumps(r, default=str))
    assert bases >= 2
    assert got == expected
    assert any(title is None for key, _t, title, _r, _n in got if key == "data")


def test_pgstac_pages_hydrate_in_python_as_pgstac_hydrates(pg_catalog, pg_pool, collection_id, template):
    """search_page reads items dehydrated and hydrates them in Python (pgSTAC's SQL hydration
    cost 1.2 ms an item): items under two base items, with an asset field the base has and the
    item lacks (the do-not-merge marker), one that differs and an asset only some have, paged
    three at a time, must come out as pgSTAC's own hydrating search gives them (links aside)."""
    first = [variant(template, collection_id, n, lon=n) for n in range(4)]
    del first[0]["assets"]["data"]["title"]
    first[1]["assets"]["data"]["roles"] = ["data", "visual"]
    pg_catalog.upsert_items(first)
    pg_catalog.refresh_collection(collection_id)  # new item_assets: a second base item
    second = [variant(template, collection_id, n, lon=n) for n in range(4, 7)]
    second[0]["assets"]["data"]["type"] = stac_ops.GEOTIFF_MEDIA_TYPE
    del second[1]["assets"]["source"]
    pg_catalog.upsert_items(second)
    pages, token = [], None
    while True:
        page = pg_catalog.search_page([collection_id], bbox=(-1, 0, 10, 20), limit=3, token=token)
        pages.append(page.items)
        if not (token := page.next_token):
            break
    with pg_pool.connection() as conn:
        conn.execute("SET search_path TO pgstac, public")
        expected = conn.execute("SELECT pgstac.search(%s)", (Jsonb({
            "collections": [collection_id], "bbox": [-1, 0, 10, 20], "limit": 100,
            "fields": {"exclude": ["links"]}}),)).fetchone()[0]["features"]
    assert [len(p) for p in pages] == [3, 3, 1]
    got = [item for p in pages for item in p]
    assert [i["id"] for i in got] == [i["id"] for i in expected]
    assert got == expected
    by_id = {i["id"]: i for i in got}
    assert "title" not in by_id[first[0]["id"]]["assets"]["data"] and "source" not in by_id[second[1]["id"]]["assets"]
    assert by_id[first[1]["id"]]["assets"]["data"]["roles"] == ["data", "visual"]


def test_pgstac_survives_a_lost_pooled_connection(pgstac_dsn, validator, collection_id, template):
    pool = pgstac_catalog.connection_pool(pgstac_dsn, min_size=1, max_size=1)
    try:
        catalog = pgstac_catalog.PgStacCatalog(pool, validator=validator, retry_delay=0.01)
        catalog.upsert_collection(stac_collections.build_collection(collection_id))
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(pgstac_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert catalog.upsert_items([variant(template, collection_id, 1)]).written == 1
    finally:
        pool.close()


def test_a_one_statement_stage_write_survives_a_lost_pooled_connection(pgstac_dsn, validator, collection_id, template):
    """The per-file stage write runs in autocommit on a pooled connection: a connection lost
    under it is retried on a new one (not a query error), and no connection goes back to the
    pool in autocommit."""
    pool = pgstac_catalog.connection_pool(pgstac_dsn, min_size=1, max_size=1)
    try:
        catalog = pgstac_catalog.PgStacCatalog(pool, validator=validator, retry_delay=0.01)
        catalog.upsert_collection(stac_collections.build_collection(collection_id))
        assert catalog.stage_items("lost/run-1", [variant(template, collection_id, 1)]) == 1  # creates the stage
        for n in (2, 3):
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            with psycopg.connect(pgstac_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert catalog.stage_items("lost/run-1", [variant(template, collection_id, n)]) == 1
            with pool.connection() as conn:
                assert conn.autocommit is False and conn.info.backend_pid != pid
        assert catalog.flush_staged("lost/run-1").written == 3
    finally:
        pool.close()


def test_pgstac_health_when_unreachable():
    pool = pgstac_catalog.connection_pool("postgresql://postgres@127.0.0.1:1/x", min_size=0, max_size=1, timeout=0.5)
    try:
        health = pgstac_catalog.PgStacCatalog(pool, retry_delay=0.01).health()
    finally:
        pool.close()
    assert health.ok is False and health.detail


def test_connect_uses_the_password_provider(pgstac_dsn):
    calls = []

    def token() -> str:
        calls.append(1)
        return "unused-with-trust-auth"

    with pgstac_catalog.connect(pgstac_dsn, password_provider=token) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert calls == [1]
    with pytest.raises(catalogs.CatalogUnavailable):
        pgstac_catalog.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=1)


def test_pool_asks_the_password_provider_for_every_new_connection(pgstac_dsn):
    calls = []

    def token() -> str:
        calls.append(1)
        return "unused-with-trust-auth"

    pool = pgstac_catalog.connection_pool(pgstac_dsn, password_provider=token, min_size=2, max_size=2)
    try:
        assert pgstac_catalog.PgStacCatalog(pool).health().ok
        pool.wait()
        assert len(calls) == 2
    finally:
        pool.close()


# ------------------------------------------------------------------------------ static only


def _process_writer(root: str, collection_id: str, items: list[dict]) -> None:
    catalog = static_catalog.StaticCatalog(root)
    for start in range(0, len(items), 20):
        catalog.upsert_items(items[start:start + 20])


def test_static_catalog_with_concurrent_processes_and_finalize(tmp_path, template, validator):
    root = tmp_path / "static"
    catalog = static_catalog.StaticCatalog(root, validator=validator)
    catalog.upsert_collection(stac_collections.build_collection("procs"))
    context = multiprocessing.get_context("spawn")
    chunks = [[variant(template, "procs", w * 100 + n) for n in range(100)] for w in range(4)]
    processes = [context.Process(target=_process_writer, args=(str(root), "procs", chunk)) for chunk in chunks]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    catalog.finalize()
    read_back = pystac.Catalog.from_file(str(root / "catalog.json"))
    items = list(read_back.get_items(recursive=True))
    assert len(items) == 400
    assert {i.collection_id for i in items} == {"procs"}
    for stac_object in [read_back, *read_back.get_children(), items[0]]:
        assert validator.errors(stac_object.to_dict(include_self_link=False, transform_hrefs=False)) == []
    assert not list(root.rglob("*.tmp"))


def test_staged_items_are_written_by_one_flush(catalog, collection, template, item_copies, backend):
    items = [variant(template, collection, n, when=f"2024-0{n % 3 + 1}-05T00:00:00Z") for n in range(12)]
    for item in items:  # one activity per file stages its item
        assert catalog.stage_items("chunk-a/run-1", [item]) == 1
    catalog.stage_items("chunk-a/run-1", [variant(template, collection, 0, etag="restaged")])
    if backend == "pgstac":  # a static catalog writes at once; pgSTAC waits for the flush
        assert catalog.list_item_etags(collection) == {}
        with catalog._source.connection() as conn:  # a one-statement stage write in autocommit gave it back as it was
            assert conn.autocommit is False
    result = catalog.flush_staged("chunk-a/run-1")
    etags = catalog.list_item_etags(collection)
    assert len(etags) == 12 and etags[items[0]["id"]] == "restaged"
    assert all(item_copies(collection, item["id"]) == 1 for item in items)
    assert catalog.flush_staged("chunk-a/run-1").requested == 0  # a repeated flush finds nothing
    if backend == "pgstac":
        assert (result.requested, result.written) == (12, 12)


def test_staging_validates_and_keeps_stages_apart(catalog, collection, template, backend):
    bad = variant(template, collection, 1)
    del bad["properties"]["datetime"]
    with pytest.raises(stac_ops.ItemValidationError):
        catalog.stage_items("chunk-b/run-1", [bad])
    catalog.stage_items("chunk-b/run-1", [variant(template, collection, 2)])
    catalog.stage_items("chunk-b/run-2", [variant(template, collection, 3)])
    catalog.flush_staged("chunk-b/run-2")
    expected = {variant(template, collection, 3)["id"]}
    if backend == "static":
        expected.add(variant(template, collection, 2)["id"])
    assert set(catalog.list_item_etags(collection)) == expected


def test_item_assets_and_renders_come_from_what_every_item_has(catalog, collection, template, validator):
    """``item_assets`` lists only the keys every item has, with the fields they all share: a
    ``source`` one item lacks is not claimed, nor a COG type one item's file does not have."""
    cog = variant(template, collection, 0)
    plain = variant(template, collection, 1)
    del plain["assets"]["source"]
    plain["assets"]["data"].update(type=stac_ops.GEOTIFF_MEDIA_TYPE, title="GeoTIFF")
    cog["assets"]["data"].update(type=stac_ops.COG_MEDIA_TYPE, title="Cloud Optimized GeoTIFF")
    cog["properties"]["renders"] = {"default": {"assets": ["data"], "rescale": [[0, 10]], "colormap_name": "viridis"}}
    plain["properties"]["renders"] = {"default": {"assets": ["data"], "rescale": [[-5, 8]], "colormap_name": "viridis"}}
    for item in (cog, plain):
        item["stac_extensions"] = sorted(set(item["stac_extensions"]) | {stac_ops.RENDER_EXT})
    catalog.upsert_items([cog, plain])
    refreshed = catalog.refresh_collection(collection).to_dict(include_self_link=False, transform_hrefs=False)
    assert set(refreshed["item_assets"]) == {"data"}
    assert refreshed["item_assets"]["data"]["roles"] == ["data"] and "type" not in refreshed["item_assets"]["data"]
    assert refreshed["renders"] == {"default": {"assets": ["data"], "colormap_name": "viridis", "rescale": [[-5, 10]]}}
    assert stac_ops.RENDER_EXT in refreshed["stac_extensions"]
    validator.validate_collection(refreshed)
    plain["properties"]["renders"]["default"]["colormap_name"] = "terrain"  # renders that differ: none shared
    catalog.upsert_items([plain])
    again = catalog.refresh_collection(collection).to_dict(include_self_link=False, transform_hrefs=False)
    assert "renders" not in again and stac_ops.RENDER_EXT not in again.get("stac_extensions", [])
    stored = catalog.get_item(collection, plain["id"]).to_dict()
    assert "source" not in stored["assets"] and stored["assets"]["data"]["type"] == stac_ops.GEOTIFF_MEDIA_TYPE


def test_static_catalog_items_of_any_id_length_have_a_file(tmp_path, template, validator):
    """Ids reach 256 characters; ``<id>.json`` does not fit a file name from 251 on (``OSError:
    [Errno 36] File name too long``, the conversion's COG left without an item). Such an item's
    file keeps its id's head and a hash (stable, distinct), the collection links it, pystac reads
    it back, and get, search and delete find it by its id."""
    root = tmp_path / "static"
    catalog = static_catalog.StaticCatalog(root, validator=validator)
    catalog.upsert_collection(stac_collections.build_collection("long-ids"))
    ids = [stac_ops.item_id_for_blob("c", "/".join(["d" * 199] * 5) + ".tif"), "a" * 250, "a" * 251, "b" * 256,
           "b" * 255 + "c"]
    items = []
    for n, item_id in enumerate(ids):
        item = variant(template, "long-ids", n)
        item["id"] = item_id
        items.append(item)
    catalog.upsert_items(items)
    files = sorted(p.name for p in (root / "long-ids" / "items").iterdir())
    assert len(files) == 5 and all(len(name.encode()) <= 255 for name in files), files
    assert "a" * 250 + ".json" in files and sum("@" in name for name in files) == 4, files
    catalog.finalize()
    read_back = pystac.Catalog.from_file(str(root / "catalog.json"))
    assert sorted(i.id for i in read_back.get_items(recursive=True)) == sorted(ids)
    for item_id in ids:
        assert catalog.get_item("long-ids", item_id).id == item_id
    assert len(catalog.search("long-ids", limit=10)) == 5
    assert catalog.delete_items("long-ids", ids[:2]) == 2 and catalog.get_item("long-ids", ids[0]) is None
