"""A pgSTAC collection's summaries and queryables, computed in pgSTAC's SQL: the extent, the
data types, projections, asset and render summaries and the datacube fields over a collection's
items as stored (dehydrated: asset fields hydrated once per group against its base item), and the
queryables (``stac_ops.QUERYABLES``) registered for a collection whenever it is written."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from pypgstac.hydration import hydrate_py

import cube_stac
import stac_collections
import stac_ops
from stac_collections import ItemSummary


# Asset keys, types, titles and roles over a collection's items as stored (pgSTAC stores items
# dehydrated against the collection's item_assets), per base item: ``asset_summaries`` hydrates.
SUMMARY_ASSETS = """
SELECT i.content->>'pgstac:base_item', a.key,
       jsonb_build_object('type', a.value->'type', 'title', a.value->'title', 'roles', a.value->'roles'),
       count(*)
FROM pgstac.items i
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(i.content->'assets') = 'object'
                                   THEN i.content->'assets' ELSE '{}'::jsonb END) a
WHERE i.collection = %s AND jsonb_typeof(a.value) = 'object'
GROUP BY 1, 2, 3
"""


#: The asset fields a collection's summary keeps (``item_assets`` holds no others).
ASSET_FIELDS = ("type", "title", "roles")


# Renders over a collection's items: per render key and shape (the render without rescale), the
# item count and the widest rescale range per band (properties are stored as they are).
SUMMARY_RENDERS = """
WITH r AS (
    SELECT r.key, r.value - 'rescale' AS shape, r.value->'rescale' AS rescale
    FROM pgstac.items i, jsonb_each(CASE WHEN jsonb_typeof(i.content->'properties'->'renders') = 'object'
                                         THEN i.content->'properties'->'renders' ELSE '{}'::jsonb END) r
    WHERE i.collection = %s
), bands AS (
    SELECT key, shape, e.n, min((e.v->>0)::float8) AS lo, max((e.v->>1)::float8) AS hi
    FROM r, jsonb_array_elements(CASE WHEN jsonb_typeof(rescale) = 'array' THEN rescale ELSE '[]'::jsonb END)
            WITH ORDINALITY e(v, n)
    GROUP BY key, shape, e.n
)
SELECT r.key, r.shape, count(*),
       (SELECT jsonb_agg(jsonb_build_array(lo, hi) ORDER BY n) FROM bands b WHERE b.key = r.key AND b.shape = r.shape)
FROM r GROUP BY r.key, r.shape
"""


# The datacube fields of a collection's cube items: each variable and non-spatial, non-temporal
# dimension as stored (distinct), each temporal dimension's widest extent (RFC 3339 text in UTC
# sorts as time). ``cube_stac.merge_item_fields`` merges them as it merges items' properties.
CUBE_FIELD = """CASE WHEN jsonb_typeof(i.content->'properties'->'{0}') = 'object'
                      THEN i.content->'properties'->'{0}' ELSE '{{}}'::jsonb END"""
SUMMARY_CUBE = f"""
SELECT 'cube:variables', v.key, v.value FROM pgstac.items i, jsonb_each({CUBE_FIELD.format('cube:variables')}) v
WHERE i.collection = %s GROUP BY 1, 2, 3
UNION ALL
SELECT 'cube:dimensions', d.key, d.value FROM pgstac.items i, jsonb_each({CUBE_FIELD.format('cube:dimensions')}) d
WHERE i.collection = %s AND d.value->>'type' NOT IN ('spatial', 'temporal') GROUP BY 1, 2, 3
UNION ALL
SELECT 'cube:dimensions', d.key, jsonb_build_object('type', 'temporal', 'extent',
       jsonb_build_array(min(d.value->'extent'->>0), max(d.value->'extent'->>1)))
FROM pgstac.items i, jsonb_each({CUBE_FIELD.format('cube:dimensions')}) d
WHERE i.collection = %s AND d.value->>'type' = 'temporal' GROUP BY 1, 2
"""


def cube_summary(conn: psycopg.Connection, collection_id: str) -> dict[str, Any]:
    rows = conn.execute(SUMMARY_CUBE, (collection_id,) * 3).fetchall()
    return cube_stac.merge_item_fields({field: {key: value}} for field, key, value in rows)


def asset_summaries(conn: psycopg.Connection, collection_id: str) -> list[stac_collections.AssetSummary]:
    """Items per asset key, type, title and roles. Grouped in SQL on the stored (dehydrated) assets
    and hydrated here once per group against its base item, the way pgSTAC hydrates an item: what
    the item left out comes from the base item, a do-not-merge marker drops the field. (Hydrating
    every item in SQL cost 2.3 ms of server CPU per item, the whole sync's catalog writes ~1.)"""
    rows = conn.execute(SUMMARY_ASSETS, (collection_id,)).fetchall()
    bases: dict[str | None, dict] = {}
    counts: dict[tuple[str, str], int] = {}
    for tag, key, stored, items in rows:
        if tag not in bases:
            bases[tag] = conn.execute("SELECT pgstac.collection_base_item(%s, %s::int)", (
                collection_id, tag if tag and tag.strip().isdigit() else None)).fetchone()[0] or {}
        base = ((bases[tag].get("assets") or {}).get(key) or {})
        asset = hydrate_py({f: base[f] for f in ASSET_FIELDS if f in base},
                           {f: v for f, v in stored.items() if v is not None})
        fields = orjson.dumps({f: asset.get(f) for f in ASSET_FIELDS}).decode()
        counts[(key, fields)] = counts.get((key, fields), 0) + items
    return [stac_collections.AssetSummary(key=key, items=items, **orjson.loads(fields))
            for (key, fields), items in sorted(counts.items())]


def render_summaries(rows: Iterable[tuple]) -> list[stac_collections.RenderSummary]:
    return [stac_collections.RenderSummary(key=key, shape=shape, items=items, rescale=rescale)
            for key, shape, items, rescale in rows]


def register_queryables(conn: psycopg.Connection, collection_id: str) -> None:
    """Register ``stac_ops.QUERYABLES`` for a collection (which must exist) in pgSTAC, as rows
    of its own (``collection_ids`` = the collection) in one INSERT; pgSTAC merges a property's
    rows by name when it lists queryables. A property already registered for it (its own row,
    or a row of several collections an earlier version shared) or by an operator for every
    collection (``collection_ids`` NULL) is left as it is; nothing is indexed (pgSTAC indexes
    only on request). pgSTAC's wrapper follows each definition's type, so numbers compare as
    numbers in CQL2 filters that name the collection.

    Rows of its own keep a new collection's cost flat: pgSTAC's statement trigger on
    ``queryables`` maintains the partitions of every collection the written rows name, so
    appending the collection to rows shared by all (the code before, a statement per property)
    made each new collection cost sixteen passes over the catalog's collections
    (``make bench-scale PHASES=collections``).
    """
    registered = {name for (name,) in conn.execute(
        "SELECT DISTINCT name FROM pgstac.queryables WHERE name = ANY(%s) "
        "AND (collection_ids IS NULL OR collection_ids @> ARRAY[%s]::text[])",
        (list(stac_ops.QUERYABLES), collection_id)).fetchall()}
    missing = [(name, definition) for name, definition in stac_ops.QUERYABLES.items() if name not in registered]
    if missing:
        conn.execute("INSERT INTO pgstac.queryables (name, definition, collection_ids) "
                     "SELECT name, definition, ARRAY[%s]::text[] FROM unnest(%s::text[], %s::jsonb[]) AS q(name, definition)",
                     (collection_id, [n for n, _ in missing], [Jsonb(d) for _, d in missing]))


def unregister_queryables(conn: psycopg.Connection, collection_id: str) -> None:
    """Forget a deleted collection in our queryables: the rows that name only it go, and rows
    shared with other collections (registered by an earlier version) stop naming it. A row for
    every collection (NULL) is never touched."""
    names, only = list(stac_ops.QUERYABLES), [collection_id]
    conn.execute("DELETE FROM pgstac.queryables WHERE name = ANY(%s) AND cardinality(collection_ids) > 0 "
                 "AND collection_ids <@ %s::text[]", (names, only))
    conn.execute("UPDATE pgstac.queryables SET collection_ids = array_remove(collection_ids, %s) "
                 "WHERE name = ANY(%s) AND collection_ids @> %s::text[]", (collection_id, names, only))


def collection_summary(conn: psycopg.Connection, collection_id: str) -> ItemSummary:
    """What a collection's extent and summaries are made of, aggregated over its items in SQL."""
    row = conn.execute(
        "SELECT count(*), ST_XMin(ST_Extent(geometry)), ST_YMin(ST_Extent(geometry)), "
        "ST_XMax(ST_Extent(geometry)), ST_YMax(ST_Extent(geometry)), min(datetime), max(end_datetime), "
        "array_remove(array_agg(DISTINCT content->'properties'->>'proj:code'), NULL) "
        "FROM pgstac.items WHERE collection = %s", (collection_id,)).fetchone()
    types = conn.execute(
        "SELECT DISTINCT b->>'data_type' FROM pgstac.items i, jsonb_each(i.content->'assets') a, "
        "jsonb_array_elements(CASE WHEN jsonb_typeof(a.value->'bands') = 'array' THEN a.value->'bands' "
        "ELSE '[]'::jsonb END) b WHERE i.collection = %s AND b ? 'data_type'", (collection_id,)).fetchall()
    assets = asset_summaries(conn, collection_id)
    renders = conn.execute(SUMMARY_RENDERS, (collection_id,)).fetchall()
    bbox = list(row[1:5]) if row[0] else None
    return ItemSummary(count=row[0], bbox=bbox, start=row[5], end=row[6], proj_codes=sorted(row[7] or []),
                       data_types=sorted(t for (t,) in types),
                       assets=assets,
                       renders=render_summaries(renders), cube=cube_summary(conn, collection_id))
