"""Our queryables in pgSTAC: registered per collection, in rows of its own, in one write whatever the
catalog already holds (pgSTAC's statement trigger on ``queryables`` maintains the partitions of
every collection a written row names: one statement per property made each new collection cost
sixteen passes over the catalog's collections)."""
from __future__ import annotations

import contextlib

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgstac_catalog
import stac_collections
import stac_ops


_COUNTER = """
CREATE TABLE IF NOT EXISTS public.queryable_writes (op text NOT NULL);
CREATE OR REPLACE FUNCTION public.count_queryable_writes() RETURNS trigger AS $$
BEGIN INSERT INTO public.queryable_writes VALUES (TG_OP); RETURN NULL; END $$ LANGUAGE plpgsql;
CREATE TRIGGER count_queryable_updates AFTER UPDATE ON pgstac.queryables
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_queryable_writes();
CREATE TRIGGER count_queryable_inserts AFTER INSERT ON pgstac.queryables
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_queryable_writes();
"""


@contextlib.contextmanager
def counted_writes(dsn: str):
    """The statements that write pgstac.queryables while the block runs (a statement trigger of
    the real database counts them)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(_COUNTER)
        writes: list[str] = []
        try:
            yield writes
            writes.extend(op for (op,) in admin.execute("SELECT op FROM public.queryable_writes").fetchall())
        finally:
            admin.execute("DROP TRIGGER count_queryable_updates ON pgstac.queryables; "
                          "DROP TRIGGER count_queryable_inserts ON pgstac.queryables; "
                          "DROP TABLE public.queryable_writes")


def rows_by_name(dsn: str, prefix: str) -> dict[str, list[tuple]]:
    """Our properties' rows that name a collection of ``prefix`` (this test's), or every collection."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT name, collection_ids, definition FROM pgstac.queryables WHERE name = ANY(%s) "
                            "AND (collection_ids IS NULL OR EXISTS (SELECT 1 FROM unnest(collection_ids) c "
                            "WHERE c LIKE %s)) ORDER BY id", (list(stac_ops.QUERYABLES), prefix + "%")).fetchall()
    found: dict[str, list[tuple]] = {}
    for name, ids, definition in rows:
        found.setdefault(name, []).append((ids, definition))
    return found


@pytest.fixture
def catalog(pg_pool, validator):
    return pgstac_catalog.PgStacCatalog(pg_pool, validator=validator)


def test_a_new_collection_is_registered_in_one_write_of_rows_of_its_own(catalog, pgstac_dsn):
    for n in range(3):
        catalog.upsert_collection(stac_collections.build_collection(f"q-own-{n}"))
    with counted_writes(pgstac_dsn) as writes:
        catalog.upsert_collection(stac_collections.build_collection("q-own-3"))
    assert writes == ["INSERT"]  # the code before: 16 UPDATEs of rows naming every collection
    rows = rows_by_name(pgstac_dsn, "q-own-")
    assert set(rows) == set(stac_ops.QUERYABLES)
    for name, found in rows.items():
        assert found == [([f"q-own-{n}"], stac_ops.QUERYABLES[name]) for n in range(4)], name
    with counted_writes(pgstac_dsn) as writes:  # written again (a refreshed extent): nothing to register
        catalog.upsert_collection(stac_collections.build_collection("q-own-3"))
    assert writes == []
    # pgSTAC merges the rows by name: one property each, typed, for the collection and for all
    for properties in (catalog.queryables("q-own-3")["properties"], catalog.queryables()["properties"]):
        assert properties["rmh:band_count"]["type"] == "integer" and properties["gsd"]["type"] == "number"


def test_rows_shared_by_an_earlier_version_and_an_operators_are_left_alone(catalog, pgstac_dsn):
    shared_name, global_name = "rmh:source_blob", "gsd"
    operator_global = {"type": "number", "description": "the operator's, for every collection"}
    with psycopg.connect(pgstac_dsn, autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")  # as pgSTAC's own triggers need
        conn.execute("DELETE FROM pgstac.queryables WHERE name = ANY(%s)", ([shared_name, global_name],))
        for collection in ("q-old-a", "q-old-b"):  # written by an earlier version: in pgSTAC, then its queryables
            conn.execute("SELECT pgstac.upsert_collection(%s)", (Jsonb(stac_collections.build_collection(
                collection).to_dict(include_self_link=False, transform_hrefs=False)),))
        conn.execute("INSERT INTO pgstac.queryables (name, definition, collection_ids) VALUES (%s, %s, %s)",
                     (shared_name, Jsonb(stac_ops.QUERYABLES[shared_name]), ["q-old-a", "q-old-b"]))
        conn.execute("INSERT INTO pgstac.queryables (name, definition, collection_ids) VALUES (%s, %s, NULL)",
                     (global_name, Jsonb(operator_global)))
    for collection in ("q-old-a", "q-old-b"):
        catalog.upsert_collection(stac_collections.build_collection(collection))
    rows = rows_by_name(pgstac_dsn, "q-old-")
    assert rows[shared_name] == [(["q-old-a", "q-old-b"], stac_ops.QUERYABLES[shared_name])]
    assert rows[global_name] == [(None, operator_global)]
    assert rows["rmh:band_count"] == [(["q-old-a"], stac_ops.QUERYABLES["rmh:band_count"]),
                                      (["q-old-b"], stac_ops.QUERYABLES["rmh:band_count"])]
    assert catalog.delete_collection("q-old-a")  # forgotten: its own rows go, the shared row stops naming it
    rows = rows_by_name(pgstac_dsn, "q-old-")
    assert rows[shared_name] == [(["q-old-b"], stac_ops.QUERYABLES[shared_name])]
    assert rows["rmh:band_count"] == [(["q-old-b"], stac_ops.QUERYABLES["rmh:band_count"])]
    assert rows[global_name] == [(None, operator_global)]
    with psycopg.connect(pgstac_dsn, autocommit=True) as conn:  # the operator's row serves the module's other tests
        conn.execute("DELETE FROM pgstac.queryables WHERE name = %s AND collection_ids IS NULL", (global_name,))
