"""The catalog backends: pgSTAC (PostgreSQL) and a static STAC catalog on disk or in a container.

Both implement one ``Catalog`` protocol (collections, batched item upserts, staging for chunked
sync, search, ETags for incremental sync, health, finalize). Items and collections come from
``stac_ops`` (which composes and validates them); this module only stores them:

* ``PgStacCatalog``: psycopg on a connection or pool; pgSTAC's own SQL; items dehydrated as
  ``pypgstac load`` does, COPY into a temporary table then one insert; bounded retries on
  deadlocks and serialization failures. A collection's queryables (``stac_ops.QUERYABLES``) are
  registered for it whenever the collection is written, so CQL2 compares numbers as numbers.
* ``StaticCatalog``: pystac-readable JSON files behind a small ``CatalogStore`` I/O seam (a local
  directory, or a blob container in activities), relative links throughout, and, when it knows
  the local storage root, asset hrefs relative to each item file (or URLs under a base URL), so
  the catalog and the storage directory can be moved together.

Never reads the environment; callers pass connections, pools, stores and roots in.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import orjson
import psycopg
import pystac
import tenacity
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from pypgstac.hydration import dehydrate, hydrate_py

import stac_ops
from stac_ops import (SOURCE_ETAG, STAC_VERSION, CollectionValidationError, InvalidItemId, ItemSummary,
                      ItemValidationError, StacValidator, apply_summary, check_id, item_span, parse_iso,
                      summarize_items)
from storage import fit_component

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000


# --------------------------------------------------------------------------------------- errors


class CatalogError(Exception):
    """Base class of the errors of the catalog backends."""


class CollectionNotFound(CatalogError):
    """The collection does not exist in the catalog."""


class CatalogUnavailable(CatalogError):
    """The catalog's database or store cannot be reached (after bounded retries)."""


class PgStacVersionMismatch(CatalogError):
    """The database's pgSTAC version is not the one pypgstac's storage format is written for."""


class CatalogQueryError(CatalogError):
    """The catalog database rejected a statement for a reason that retrying will not fix."""


class InvalidPageToken(CatalogError):
    """A paging token that no previous page of this catalog handed out."""


# ----------------------------------------------------------------------------------- models


class UpsertResult(BaseModel):
    """Outcome of ``upsert_items``: ``written`` were new or changed, ``unchanged`` were identical."""

    collection_ids: list[str]
    requested: int
    written: int
    unchanged: int


class CatalogHealth(BaseModel):
    """What ``health()`` reports: reachability, backend version and counts."""

    backend: str
    ok: bool
    version: str | None = None
    collections: int = 0
    items: int = 0
    detail: str | None = None


class ItemPage(BaseModel):
    """One page of a search (``search_page``): items as GeoJSON dicts without links, newest first,
    and the token of the next page (None on the last)."""

    items: list[dict[str, Any]]
    next_token: str | None = None


class PartitionTrunc(str, Enum):
    """pgSTAC partitioning of a collection's items by datetime."""

    year = "year"
    month = "month"


# --------------------------------------------------------------------------- catalog protocol


@runtime_checkable
class Catalog(Protocol):
    """What every catalog backend offers (pgSTAC and the static catalog)."""

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None: ...
    def get_collection(self, collection_id: str) -> pystac.Collection | None: ...
    def refresh_collection(self, collection_id: str) -> pystac.Collection: ...
    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult: ...
    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int: ...
    def flush_staged(self, stage_id: str) -> UpsertResult: ...
    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None: ...
    def delete_item(self, collection_id: str, item_id: str) -> bool: ...
    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int: ...
    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None,
               datetime: str | None = None, limit: int = 100) -> list[pystac.Item]: ...
    def list_item_etags(self, collection_id: str) -> dict[str, str | None]: ...
    def collection_ids(self) -> list[str]: ...
    def search_page(self, collection_ids: Sequence[str] | None = None, *, bbox: Sequence[float] | None = None,
                    limit: int = 100, token: str | None = None) -> ItemPage: ...
    def health(self) -> CatalogHealth: ...
    def finalize(self) -> None: ...


def _item_dict(item: pystac.Item | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, pystac.Item):
        return item.to_dict(include_self_link=False, transform_hrefs=False)
    return dict(item)


def _prepare_items(items: Iterable[pystac.Item | Mapping[str, Any]], validator: StacValidator | None) -> dict[str, dict[str, dict]]:
    """Item dicts grouped by collection, de-duplicated by id (last wins), validated, ids checked."""
    grouped: dict[str, dict[str, dict]] = {}
    for item in items:
        stac = _item_dict(item)
        check_id(stac.get("id", ""))
        collection_id = stac.get("collection")
        if not collection_id:
            raise ItemValidationError(f"item {stac.get('id')!r} names no collection")
        if validator is not None:
            validator.validate_item(stac)
        grouped.setdefault(collection_id, {})[stac["id"]] = stac
    return grouped


#: pgSTAC's paging tokens: ``next:``/``prev:`` and the last item's collection and id (hex-encoded
#: by pgSTAC 0.10, so up to twice the 256-character id limit; plain ids in older versions).
_PGSTAC_TOKEN = re.compile(r"^(next|prev):[A-Za-z0-9_.:~-]{1,1100}$")
_STATIC_TOKEN = re.compile(r"^next:(\d{1,9})$")
_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)


def _token_refused(cause: BaseException | None) -> bool:
    """Whether pgSTAC refused a search for its paging token: its own messages ("Invalid paging
    token", "Could not find item using token"), or a token whose parts do not decode (bad hex, not
    UTF-8: a DataError; the token is the only undecoded client text in a search)."""
    return isinstance(cause, psycopg.DataError) or (isinstance(cause, psycopg.Error) and "token" in str(cause).lower())


def parse_datetime_interval(value: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A STAC API ``datetime`` parameter (instant or ``start/end`` with ``..`` open ends)."""
    if not value:
        return None, None
    parts = value.split("/")
    if len(parts) == 1:
        instant = parse_iso(parts[0])
        return instant, instant
    start, end = (None if p in ("", "..") else parse_iso(p) for p in parts[:2])
    return start, end


# ----------------------------------------------------------------------------------- pgSTAC

TRANSIENT_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_LOCK_NAMESPACE = 0x524D48  # "RMH": advisory-lock class for collection writers

_STAGE_DDL = """
CREATE TABLE IF NOT EXISTS public.rmh_staged_items (
    stage_id text NOT NULL, collection text NOT NULL, item_id text NOT NULL, content jsonb NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stage_id, collection, item_id)
)
"""
_STAGE_PUT = """
INSERT INTO public.rmh_staged_items (stage_id, collection, item_id, content) VALUES (%s, %s, %s, %s)
ON CONFLICT (stage_id, collection, item_id) DO UPDATE SET content = EXCLUDED.content, staged_at = now()
"""
_STAGE_TAKE = """
DELETE FROM public.rmh_staged_items WHERE stage_id = %s RETURNING collection, content
"""
# Stages of runs that never flushed (a chunk that failed beyond its retries) expire after a week.
_STAGE_EXPIRE = "DELETE FROM public.rmh_staged_items WHERE staged_at < now() - interval '7 days'"
_STAGE_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS rmh_items_in (
    id text NOT NULL, collection text NOT NULL, datetime timestamptz NOT NULL,
    end_datetime timestamptz NOT NULL, geojson text NOT NULL, content jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
_CHECK_PARTITIONS = """
SELECT pgstac.check_partition(%(collection)s, tstzrange(min(datetime), max(datetime), '[]'),
                              tstzrange(min(end_datetime), max(end_datetime), '[]'))
FROM rmh_items_in
GROUP BY CASE WHEN %(trunc)s::text IS NULL THEN NULL
              ELSE date_trunc(coalesce(%(trunc)s::text, 'year'), datetime, 'UTC') END
ORDER BY 1
"""
# Rows whose stored copy differs (content, datetime or geometry) are deleted first, locked in id
# order: a changed datetime may route the new copy to another partition, where ON CONFLICT on
# the partition's unique id index would not see the old one.
_DELETE_CHANGED = """
WITH changed AS (
    SELECT o.id FROM rmh_items_in s
    JOIN pgstac.items o ON o.collection = s.collection AND o.id = s.id
    WHERE o.collection = %(collection)s
      AND ((o.datetime, o.end_datetime, o.content) IS DISTINCT FROM (s.datetime, s.end_datetime, s.content)
           OR NOT ST_OrderingEquals(o.geometry, ST_GeomFromGeoJSON(s.geojson)))
    ORDER BY o.id
    FOR UPDATE OF o
)
DELETE FROM pgstac.items i USING changed c WHERE i.collection = %(collection)s AND i.id = c.id
"""
_INSERT = """
INSERT INTO pgstac.items (id, geometry, collection, datetime, end_datetime, content)
SELECT id, ST_GeomFromGeoJSON(geojson), collection, datetime, end_datetime, content FROM rmh_items_in
ON CONFLICT DO NOTHING
"""
_COLLECTION_META = """
SELECT b.base_item, c.key, c.partition_trunc, b.base_item_id
FROM pgstac.collections c, pgstac.current_base_item(c.id) b
WHERE c.id = %s
FOR SHARE OF c
"""


# Asset keys, types, titles and roles over a collection's items as stored (pgSTAC stores items
# dehydrated against the collection's item_assets), per base item: ``_asset_summaries`` hydrates.
_SUMMARY_ASSETS = """
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
_ASSET_FIELDS = ("type", "title", "roles")
# Renders over a collection's items: per render key and shape (the render without rescale), the
# item count and the widest rescale range per band (properties are stored as they are).
_SUMMARY_RENDERS = """
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


def _asset_summaries(conn: psycopg.Connection, collection_id: str) -> list[stac_ops.AssetSummary]:
    """Items per asset key, type, title and roles. Grouped in SQL on the stored (dehydrated) assets
    and hydrated here once per group against its base item, the way pgSTAC hydrates an item: what
    the item left out comes from the base item, a do-not-merge marker drops the field. (Hydrating
    every item in SQL cost 2.3 ms of server CPU per item, the whole sync's catalog writes ~1.)"""
    rows = conn.execute(_SUMMARY_ASSETS, (collection_id,)).fetchall()
    bases: dict[str | None, dict] = {}
    counts: dict[tuple[str, str], int] = {}
    for tag, key, stored, items in rows:
        if tag not in bases:
            bases[tag] = conn.execute("SELECT pgstac.collection_base_item(%s, %s::int)", (
                collection_id, tag if tag and tag.strip().isdigit() else None)).fetchone()[0] or {}
        base = ((bases[tag].get("assets") or {}).get(key) or {})
        asset = hydrate_py({f: base[f] for f in _ASSET_FIELDS if f in base},
                           {f: v for f, v in stored.items() if v is not None})
        fields = orjson.dumps({f: asset.get(f) for f in _ASSET_FIELDS}).decode()
        counts[(key, fields)] = counts.get((key, fields), 0) + items
    return [stac_ops.AssetSummary(key=key, items=items, **orjson.loads(fields))
            for (key, fields), items in sorted(counts.items())]


def _render_summaries(rows: Iterable[tuple]) -> list[stac_ops.RenderSummary]:
    return [stac_ops.RenderSummary(key=key, shape=shape, items=items, rescale=rescale)
            for key, shape, items, rescale in rows]


def register_queryables(conn: psycopg.Connection, collection_id: str) -> None:
    """Register ``stac_ops.QUERYABLES`` for a collection (which must exist) in pgSTAC.

    One row per property serves every collection that has it (``collection_ids`` grows); a
    property an operator registered for every collection (``collection_ids`` NULL) is left to
    that definition, and nothing is indexed (pgSTAC indexes only on request). pgSTAC's wrapper
    follows each definition's type, so numbers compare as numbers in CQL2 filters that name the
    collection.
    """
    for name, definition in stac_ops.QUERYABLES.items():
        rows = conn.execute("SELECT id, collection_ids, definition FROM pgstac.queryables WHERE name = %s",
                            (name,)).fetchall()
        if any(ids is None or collection_id in ids for _, ids, _ in rows):
            continue
        same = next((row_id for row_id, _, existing in rows if existing == definition), None)
        if same is not None:
            conn.execute("UPDATE pgstac.queryables SET collection_ids = array_append(collection_ids, %s) "
                         "WHERE id = %s", (collection_id, same))
        else:
            conn.execute("INSERT INTO pgstac.queryables (name, definition, collection_ids) VALUES (%s, %s, %s)",
                         (name, Jsonb(definition), [collection_id]))


def connect(
    dsn: str, *, password_provider: Callable[[], str] | None = None, autocommit: bool = False, **kwargs: Any
) -> psycopg.Connection:
    """Open a psycopg connection; ``password_provider`` supplies the password per connection
    (an Azure AD access token for Azure Database for PostgreSQL, fetched by the caller)."""
    if password_provider is not None:
        kwargs["password"] = password_provider()
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as err:
        raise CatalogUnavailable(f"cannot connect to PostgreSQL: {err}") from err


def connection_pool(
    dsn: str, *, password_provider: Callable[[], str] | None = None, min_size: int = 1,
    max_size: int = 4, **pool_kwargs: Any
) -> ConnectionPool:
    """A psycopg pool; with ``password_provider`` every new connection gets a fresh token."""
    kwargs: Any = (lambda: {"password": password_provider()}) if password_provider else None
    return ConnectionPool(dsn, kwargs=kwargs, min_size=min_size, max_size=max_size, open=True, **pool_kwargs)


class _LostConnection(Exception):
    """A pooled connection broke mid-transaction (the pool replaces it): worth a retry."""


def _is_lost_connection(err: psycopg.Error, conn: psycopg.Connection | None) -> bool:
    return isinstance(err, psycopg.OperationalError) and (conn is None or conn.broken or conn.closed)


def _lock_key(collection_id: str) -> int:
    """A stable signed 32-bit key for the collection's advisory lock."""
    return int.from_bytes(hashlib.sha256(collection_id.encode("utf-8")).digest()[:4], "big", signed=True)


def _dehydrated_row(stac: dict[str, Any], base_item: dict[str, Any], base_item_id: int | None) -> tuple:
    """One staged row in pgSTAC's storage form (the same dehydration as ``pypgstac load``)."""
    props = stac.get("properties", {})
    start = props.get("start_datetime") if props.get("end_datetime") else None
    start = start or props.get("datetime")
    end = props.get("end_datetime") or start
    if start is None:
        raise ItemValidationError(f"item {stac.get('id')!r} has no datetime")
    if stac.get("geometry") is None:
        raise ItemValidationError(f"item {stac.get('id')!r} has no geometry")
    content = dehydrate(base_item, stac)
    for key in ("id", "collection", "geometry", "pgstac:base_item"):
        content.pop(key, None)
    if base_item_id is not None:
        content["pgstac:base_item"] = base_item_id
    return (stac["id"], stac["collection"], start, end, orjson.dumps(stac["geometry"]).decode(),
            orjson.dumps(content).decode())


class PgStacCatalog:
    """The pgSTAC backend: batched upserts that never duplicate, search through pgSTAC's ``search()``.

    Takes a psycopg ``Connection`` or a ``ConnectionPool`` (never opens one from the environment).
    Writers of one collection are serialised by a transaction-scoped advisory lock, so concurrent
    activities cannot both insert the same id into different datetime partitions. Deadlocks and
    serialization failures are retried (bounded); a lost connection is retried only with a pool.
    Give concurrent writers (threads) a pool or a catalog each: one connection runs one
    transaction at a time.
    """

    def __init__(self, source: psycopg.Connection | ConnectionPool, *, validator: StacValidator | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, retries: int = 3, retry_delay: float = 0.05) -> None:
        self._source = source
        self.validator = validator
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delay = retry_delay
        self._version_checked = False
        self._stage_ready = False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if isinstance(self._source, ConnectionPool):
            with self._source.connection() as conn:
                yield conn
        else:
            yield self._source

    def _run(self, what: str, work: Callable[[psycopg.Connection], Any], *, pipeline: bool = False) -> Any:
        """Run ``work(conn)`` in one transaction, retrying named transient errors (deadlock,
        serialization failure, a pooled connection lost) a bounded number of times with
        exponential backoff and jitter. Anything else that reaches the database fails at once:
        unreachable → CatalogUnavailable (the activity rides that out), bad query → CatalogQueryError."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((*TRANSIENT_ERRORS, _LostConnection)),
            wait=tenacity.wait_exponential_jitter(multiplier=self.retry_delay, max=2.0),
            stop=tenacity.stop_after_attempt(self.retries + 1), reraise=True,
            before_sleep=lambda state: logger.warning(
                "%s: transient %s, retry %d", what, type(state.outcome.exception()).__name__,
                state.attempt_number))
        try:
            return retrying(self._transaction, work, pipeline)
        except (*TRANSIENT_ERRORS, _LostConnection) as err:
            cause = err.__cause__ if isinstance(err, _LostConnection) else err
            raise CatalogUnavailable(f"{what}: still failing after {self.retries} retries: {cause}") from err
        except psycopg.OperationalError as err:
            raise CatalogUnavailable(f"{what}: database unavailable: {err}") from err
        except psycopg.Error as err:
            raise CatalogQueryError(f"{what}: {type(err).__name__}: {str(err).splitlines()[0]}") from err

    def _transaction(self, work: Callable[[psycopg.Connection], Any], pipeline: bool = False) -> Any:
        """``work`` in one transaction; with ``pipeline`` its statements go out without waiting
        for each answer (one round trip for a write that reads nothing back; no COPY in it)."""
        conn = None
        try:
            with self._connection() as conn, (conn.pipeline() if pipeline else contextlib.nullcontext()), \
                    conn.transaction():
                # No JIT: pgSTAC's cost estimates of a collection-wide aggregate (the summary)
                # pass jit_above_cost, and compiling took 0.6 s of a 9 ms query on 1,000 items.
                conn.execute("SELECT set_config('search_path', 'pgstac,public', true), set_config('jit', 'off', true)")
                return work(conn)
        except TRANSIENT_ERRORS:
            raise
        except psycopg.OperationalError as err:
            if isinstance(self._source, ConnectionPool) and _is_lost_connection(err, conn):
                raise _LostConnection() from err
            raise

    # collections

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None:
        """Create or replace the collection; ``partition_trunc`` sets month/year partitioning."""
        stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
        check_id(stac["id"])
        if self.validator is not None:
            self.validator.validate_collection(stac)
        trunc = PartitionTrunc(partition_trunc).value if partition_trunc else None

        def work(conn: psycopg.Connection) -> None:
            conn.execute("SELECT pgstac.upsert_collection(%s)", (Jsonb(stac),))
            conn.execute("UPDATE pgstac.collections SET partition_trunc = %s WHERE id = %s "
                         "AND partition_trunc IS DISTINCT FROM %s", (trunc, stac["id"], trunc))
            register_queryables(conn, stac["id"])

        self._run(f"upsert collection {stac['id']}", work)

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        row = self._run(f"get collection {collection_id}", lambda conn: conn.execute(
            "SELECT content FROM pgstac.collections WHERE id = %s", (collection_id,)).fetchone())
        return None if row is None else pystac.Collection.from_dict(row[0], migrate=False)

    def refresh_collection(self, collection_id: str) -> pystac.Collection:
        """Recompute the collection's extent and summaries from its items and store it."""
        collection = self.get_collection(collection_id)
        if collection is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist")
        summary = self._run(f"summarize {collection_id}", lambda conn: self._summarize(conn, collection_id))
        apply_summary(collection, summary)
        self.upsert_collection(collection)
        return collection

    def queryables(self, collection_id: str | None = None) -> dict[str, Any] | None:
        """pgSTAC's queryables document (of one collection, or of all), as a STAC API serves it."""
        return self._run("get queryables", lambda conn: conn.execute(
            "SELECT pgstac.get_queryables(%s::text)", (collection_id,)).fetchone()[0])

    @staticmethod
    def _summarize(conn: psycopg.Connection, collection_id: str) -> ItemSummary:
        row = conn.execute(
            "SELECT count(*), ST_XMin(ST_Extent(geometry)), ST_YMin(ST_Extent(geometry)), "
            "ST_XMax(ST_Extent(geometry)), ST_YMax(ST_Extent(geometry)), min(datetime), max(end_datetime), "
            "array_remove(array_agg(DISTINCT content->'properties'->>'proj:code'), NULL) "
            "FROM pgstac.items WHERE collection = %s", (collection_id,)).fetchone()
        types = conn.execute(
            "SELECT DISTINCT b->>'data_type' FROM pgstac.items i, jsonb_each(i.content->'assets') a, "
            "jsonb_array_elements(CASE WHEN jsonb_typeof(a.value->'bands') = 'array' THEN a.value->'bands' "
            "ELSE '[]'::jsonb END) b WHERE i.collection = %s AND b ? 'data_type'", (collection_id,)).fetchall()
        assets = _asset_summaries(conn, collection_id)
        renders = conn.execute(_SUMMARY_RENDERS, (collection_id,)).fetchall()
        bbox = list(row[1:5]) if row[0] else None
        return ItemSummary(count=row[0], bbox=bbox, start=row[5], end=row[6], proj_codes=sorted(row[7] or []),
                           data_types=sorted(t for (t,) in types),
                           assets=assets,
                           renders=_render_summaries(renders))

    # items

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult:
        """Insert new items, replace changed ones (even across partitions), skip identical ones.

        Items are validated with the catalog's validator unless ``validate=False`` (for items that
        ``item_from_raster(..., validator=...)`` already validated where they were built).
        """
        grouped = _prepare_items(items, self.validator if validate else None)
        self._check_version()
        requested = written = 0
        for collection_id, by_id in grouped.items():
            batch = list(by_id.values())
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size]
                written += self._run(f"upsert {len(chunk)} items into {collection_id}",
                                     lambda conn, c=chunk, cid=collection_id: self._write_batch(conn, cid, c))
                requested += len(chunk)
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    # staging: per-file activities park items, the chunk writes them in one batch

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int:
        """Park validated items durably under ``stage_id``; ``flush_staged(stage_id)`` writes them.

        A fan-out of one activity per file then costs pgSTAC one batched write per chunk instead
        of one per file; a staged item survives any crash until its flush commits.
        """
        grouped = _prepare_items(items, self.validator if validate else None)
        rows = [(stage_id, cid, iid, Jsonb(stac)) for cid, by_id in grouped.items() for iid, stac in by_id.items()]

        def work(conn: psycopg.Connection) -> int:
            self._ensure_stage(conn)
            with conn.cursor() as cur:
                cur.executemany(_STAGE_PUT, rows)
            return len(rows)

        staged = self._run(f"stage {len(rows)} items", work, pipeline=True)
        self._stage_ready = True  # only once a transaction that created the table committed
        return staged

    def flush_staged(self, stage_id: str) -> UpsertResult:
        """Write the items staged under ``stage_id`` and drop them from the stage, atomically
        (a retried flush after a failure writes them again; after a success it finds nothing)."""
        self._check_version()

        def work(conn: psycopg.Connection) -> UpsertResult:
            self._ensure_stage(conn)
            rows = conn.execute(_STAGE_TAKE, (stage_id,)).fetchall()
            grouped: dict[str, list[dict]] = {}
            for collection_id, content in rows:
                grouped.setdefault(collection_id, []).append(content)
            written = 0
            for collection_id in sorted(grouped):  # lock collections in one order: no deadlock
                batch = grouped[collection_id]
                for start in range(0, len(batch), self.batch_size):
                    written += self._write_batch(conn, collection_id, batch[start:start + self.batch_size])
            conn.execute(_STAGE_EXPIRE)
            return UpsertResult(collection_ids=sorted(grouped), requested=len(rows), written=written,
                                unchanged=len(rows) - written)

        result = self._run(f"flush staged items of {stage_id}", work)
        self._stage_ready = True
        return result

    def _ensure_stage(self, conn: psycopg.Connection) -> None:
        if not self._stage_ready:
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_NAMESPACE,))  # one creator
            conn.execute(_STAGE_DDL)

    def _check_version(self) -> None:
        """Items are dehydrated in Python with pypgstac's code: refuse a pgSTAC of another minor."""
        if self._version_checked:
            return
        from pypgstac import __version__ as pypgstac_version

        version = self._run("pgstac version", lambda conn: conn.execute("SELECT pgstac.get_version()").fetchone()[0])
        if version != "unreleased" and version.split(".")[:2] != pypgstac_version.split(".")[:2]:
            raise PgStacVersionMismatch(f"database pgSTAC {version} does not match pypgstac {pypgstac_version}")
        self._version_checked = True

    def _write_batch(self, conn: psycopg.Connection, collection_id: str, batch: list[dict]) -> int:
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))
        meta = conn.execute(_COLLECTION_META, (collection_id,)).fetchone()
        if meta is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist; upsert it first")
        base_item, _key, trunc, base_item_id = meta
        rows = [_dehydrated_row(stac, base_item, base_item_id) for stac in batch]
        conn.execute(_STAGE_TABLE)
        conn.execute("TRUNCATE rmh_items_in")
        with conn.cursor() as cur:
            with cur.copy("COPY rmh_items_in (id, collection, datetime, end_datetime, geojson, content) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            params = {"collection": collection_id, "trunc": trunc}
            cur.execute(_CHECK_PARTITIONS, params)
            cur.execute(_DELETE_CHANGED, params)
            cur.execute(_INSERT)
            inserted = cur.rowcount
        logger.debug("collection %s: %d of %d items written", collection_id, inserted, len(rows))
        return inserted

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        row = self._run(f"get item {item_id}", lambda conn: conn.execute(
            "SELECT pgstac.get_item(%s, %s)", (item_id, collection_id)).fetchone())
        return None if row is None or row[0] is None else pystac.Item.from_dict(row[0], migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.delete_items(collection_id, [item_id]) == 1

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        ids = list(item_ids)
        return self._run(f"delete {len(ids)} items from {collection_id}", lambda conn: conn.execute(
            "DELETE FROM pgstac.items WHERE collection = %s AND id = ANY(%s)", (collection_id, ids)).rowcount)

    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None, datetime: str | None = None,
               limit: int = 100) -> list[pystac.Item]:
        """Items of one collection by bbox and STAC datetime (instant or interval), via ``pgstac.search``."""
        body: dict[str, Any] = {"collections": [collection_id], "limit": limit}
        if bbox is not None:
            body["bbox"] = list(bbox)
        if datetime is not None:
            body["datetime"] = datetime
        result = self._run(f"search {collection_id}", lambda conn: conn.execute(
            "SELECT pgstac.search(%s)", (Jsonb(body),)).fetchone()[0])
        return [pystac.Item.from_dict(f, migrate=False) for f in result.get("features", [])]

    def collection_ids(self) -> list[str]:
        rows = self._run("list collections", lambda conn: conn.execute(
            "SELECT id FROM pgstac.collections ORDER BY id").fetchall())
        return [row[0] for row in rows]

    def search_page(self, collection_ids: Sequence[str] | None = None, *, bbox: Sequence[float] | None = None,
                    limit: int = 100, token: str | None = None) -> ItemPage:
        """A page of items of some collections (all when None) by bbox, through ``pgstac.search``
        and its paging tokens (``next:...``)."""
        body: dict[str, Any] = {"limit": limit, "fields": {"exclude": ["links"]}}
        if collection_ids:
            body["collections"] = list(collection_ids)
        if bbox is not None:
            body["bbox"] = list(bbox)
        if token is not None:
            if not _PGSTAC_TOKEN.match(token):
                raise InvalidPageToken(f"paging token {token[:80]!r} was not handed out by this catalog")
            body["token"] = token
        try:
            result = self._run("search page", lambda conn: conn.execute(
                "SELECT pgstac.search(%s)", (Jsonb(body),)).fetchone()[0])
        except CatalogQueryError as err:
            if token is not None and _token_refused(err.__cause__):
                raise InvalidPageToken(f"paging token {token[:80]!r} is not valid (any more)") from None
            raise
        link = next((l["href"] for l in result.get("links", []) if l.get("rel") == "next"), None)
        following = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query).get("token") if link else None
        return ItemPage(items=result.get("features", []), next_token=following[0] if following else None)

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        """Item id -> ``rmh:source_etag`` for every item of the collection (incremental sync)."""
        rows = self._run(f"list etags of {collection_id}", lambda conn: conn.execute(
            "SELECT id, content->'properties'->>%s FROM pgstac.items WHERE collection = %s",
            (SOURCE_ETAG, collection_id)).fetchall())
        return dict(rows)

    def health(self) -> CatalogHealth:
        """pgSTAC version and counts; ``ok=False`` with the reason when unreachable."""
        def work(conn: psycopg.Connection) -> CatalogHealth:
            version = conn.execute("SELECT pgstac.get_version()").fetchone()[0]
            collections = conn.execute("SELECT count(*) FROM pgstac.collections").fetchone()[0]
            items = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]
            return CatalogHealth(backend="pgstac", ok=True, version=version, collections=collections, items=items)

        try:
            return self._run("health", work)
        except (CatalogUnavailable, psycopg.Error) as err:
            return CatalogHealth(backend="pgstac", ok=False, detail=str(err).splitlines()[0])

    def finalize(self) -> None:
        """Nothing to do: pgSTAC serves links and extents itself (``refresh_collection`` for extents)."""


# ------------------------------------------------------------------------------ static catalog


class CatalogStore(Protocol):
    """The static catalog's file I/O seam (local directory here; blob container later).

    Keys are relative POSIX paths. ``write_text`` must be atomic: a reader sees the old or the new
    text, never a part.
    """

    def read_text(self, key: str) -> str | None: ...
    def write_text(self, key: str, text: str) -> None: ...
    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]: ...
    def delete(self, key: str) -> bool: ...


class LocalDirectoryStore:
    """``CatalogStore`` on a local directory: atomic writes by temp file + ``os.replace``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise InvalidItemId(f"store key {key!r} leaves the catalog directory")
        return self.root / key

    def read_text(self, key: str) -> str | None:
        try:
            return self._path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, key: str, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A short temporary name: the key's own name may already fill a file-name component.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".write-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]:
        """Keys of the ``.json`` files under ``prefix``, sorted; ``max_depth`` counts key segments."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):
            rel = Path(directory).relative_to(self.root)
            depth = len(rel.parts) + 1
            if max_depth is not None and depth >= max_depth:
                subdirs.clear()
            if max_depth is not None and depth > max_depth:
                continue
            subdirs.sort()
            for name in sorted(files):
                if name.endswith(".json") and not name.startswith("."):
                    yield (rel / name).as_posix()

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False


def _item_matches(stac: Mapping[str, Any], bbox: Sequence[float] | None,
                  start: dt.datetime | None, end: dt.datetime | None) -> bool:
    if bbox is not None:
        west, south, east, north = stac["bbox"][:4]
        b_west, b_south, b_east, b_north = bbox[:4]
        lon_ranges = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
        q_ranges = [(b_west, b_east)] if b_west <= b_east else [(b_west, 180.0), (-180.0, b_east)]
        lon_hit = any(a <= d and c <= b for a, b in lon_ranges for c, d in q_ranges)
        if not lon_hit or south > b_north or north < b_south:
            return False
    item_start, item_end = item_span(stac)
    return not ((end is not None and item_start > end) or (start is not None and item_end < start))


def item_file_name(item_id: str) -> str:
    """The file of an item in a static catalog: ``<id>.json``; an id too long for that to fit one
    file-name component (255 bytes; ids reach 256 characters) keeps its first characters, then
    ``@`` and 32 hex of its SHA-256 (``storage.fit_component``). No id holds ``@``, so a shortened
    name never equals another item's, and the same id always gives the same file."""
    return fit_component(item_id, ".json", marker="@")


_QUERYABLES_LINK = {"rel": stac_ops.QUERYABLES_REL, "href": "./queryables.json",
                    "type": "application/schema+json", "title": "Queryables"}


class StaticCatalog:
    """A self-contained static STAC catalog (pystac-readable) behind a ``CatalogStore``.

    Layout: ``catalog.json``, ``<collection>/collection.json``, ``<collection>/items/<id>.json``
    (``item_file_name``: a shortened name for an id too long for one file-name component),
    and a ``queryables.json`` beside the catalog and each collection (``stac_ops.QUERYABLES``,
    linked with the OGC queryables relation). Every link is relative. Item writes are per-file
    and atomic, so many threads and processes may write at once; an item file already carries
    its relative ``root``/``parent``/``collection`` links. ``finalize()`` (run once, after the
    writers) regenerates every ``collection.json`` (item links, extent, summaries, item assets,
    renders) and ``catalog.json`` (child links).

    Asset hrefs: with ``storage_root`` (the local storage directory) and a store that is a local
    directory, an href that is a path inside the storage root is written relative to the item
    file (``stac_ops.relative_href``), so copying the catalog and the storage directory together
    keeps every href resolving. Other hrefs (http(s) URLs, ``/vsiaz/``) are kept as they are.
    """

    def __init__(self, store: CatalogStore | str | os.PathLike, *, catalog_id: str = "rmhgeoapi",
                 description: str = "Rasters cataloged by rmhgeoapi", title: str | None = None,
                 validator: StacValidator | None = None, storage_root: str | os.PathLike | None = None) -> None:
        self.store = LocalDirectoryStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.catalog_id, self.description, self.title = catalog_id, description, title
        self.validator = validator
        self.storage_root = None if storage_root is None else Path(storage_root).resolve()

    def _relative_hrefs(self, collection_id: str, stac: dict[str, Any]) -> dict[str, Any]:
        """The item with hrefs into the storage root made relative to its file."""
        root = getattr(self.store, "root", None)
        if self.storage_root is None or root is None:
            return stac
        return stac_ops.relative_hrefs(stac, storage_root=self.storage_root,
                                       relative_to=Path(root).resolve() / collection_id / "items")

    @staticmethod
    def _collection_key(collection_id: str) -> str:
        return f"{check_id(collection_id)}/collection.json"

    @staticmethod
    def _item_key(collection_id: str, item_id: str) -> str:
        return f"{check_id(collection_id)}/items/{item_file_name(check_id(item_id))}"

    def _read(self, key: str) -> dict[str, Any] | None:
        text = self.store.read_text(key)
        return None if text is None else orjson.loads(text)

    def _write(self, key: str, stac: Mapping[str, Any]) -> None:
        self.store.write_text(key, orjson.dumps(stac, option=orjson.OPT_INDENT_2).decode())

    # collections

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None:
        """Write ``collection.json`` (item links are added by ``finalize``); partitioning is ignored."""
        stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
        if self.validator is not None:
            self.validator.validate_collection(stac)
        own = ("root", "parent", "item", "self", stac_ops.QUERYABLES_REL)
        stac["links"] = [link for link in stac.get("links", []) if link.get("rel") not in own]
        stac["links"] += [{"rel": "root", "href": "../catalog.json", "type": "application/json"},
                          {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
                          _QUERYABLES_LINK]
        previous = self._read(self._collection_key(stac["id"]))
        if previous is not None:
            stac["links"] += [link for link in previous.get("links", []) if link.get("rel") == "item"]
        self._write(f"{stac['id']}/queryables.json",
                    stac_ops.queryables_document(f"Queryables of {stac.get('title') or stac['id']}"))
        self._write(self._collection_key(stac["id"]), stac)

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        stac = self._read(self._collection_key(collection_id))
        return None if stac is None else pystac.Collection.from_dict(stac, migrate=False)

    def _require_collection(self, collection_id: str) -> dict[str, Any]:
        stac = self._read(self._collection_key(collection_id))
        if stac is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist; upsert it first")
        return stac

    def _iter_items(self, collection_id: str) -> Iterator[dict[str, Any]]:
        for key in self.store.list_keys(f"{check_id(collection_id)}/items"):
            stac = self._read(key)
            if stac is not None:
                yield stac

    def refresh_collection(self, collection_id: str) -> pystac.Collection:
        """Rewrite ``collection.json`` with item links, extent and summaries from its items."""
        stac = self._require_collection(collection_id)
        items = sorted(self._iter_items(collection_id), key=lambda s: s["id"])
        collection = pystac.Collection.from_dict(stac, migrate=False)
        apply_summary(collection, summarize_items(items))
        out = collection.to_dict(include_self_link=False, transform_hrefs=False)
        out["links"] = [link for link in stac.get("links", []) if link.get("rel") != "item"]
        out["links"] += [{"rel": "item", "href": f"./items/{item_file_name(s['id'])}", "type": "application/geo+json"}
                         for s in items]
        if self.validator is not None:
            self.validator.validate_collection(out)
        self._write(self._collection_key(collection_id), out)
        return pystac.Collection.from_dict(out, migrate=False)

    # items

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult:
        """Write each item atomically to its own file; identical files are not rewritten."""
        grouped = _prepare_items(items, self.validator if validate else None)
        requested = written = 0
        for collection_id, by_id in grouped.items():
            self._require_collection(collection_id)
            for item_id, stac in by_id.items():
                stac = {**self._relative_hrefs(collection_id, stac), "links": [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ] + [link for link in stac.get("links", []) if link.get("rel") not in ("root", "parent", "collection", "self")]}
                key = self._item_key(collection_id, item_id)
                requested += 1
                if self._read(key) != stac:
                    self._write(key, stac)
                    written += 1
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int:
        """A static catalog writes each item to its own file already: staging is writing."""
        return self.upsert_items(items, validate=validate).requested

    def flush_staged(self, stage_id: str) -> UpsertResult:
        """Nothing is ever staged here (see ``stage_items``)."""
        return UpsertResult(collection_ids=[], requested=0, written=0, unchanged=0)

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        stac = self._read(self._item_key(collection_id, item_id))
        return None if stac is None else pystac.Item.from_dict(stac, migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.store.delete(self._item_key(collection_id, item_id))

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        return sum(self.delete_item(collection_id, item_id) for item_id in item_ids)

    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None, datetime: str | None = None,
               limit: int = 100) -> list[pystac.Item]:
        """Items of one collection by bbox and datetime, newest first (pgSTAC's default order)."""
        start, end = parse_datetime_interval(datetime)
        hits = [s for s in self._iter_items(collection_id) if _item_matches(s, bbox, start, end)]
        hits.sort(key=lambda s: (item_span(s)[0], s["id"]), reverse=True)
        return [pystac.Item.from_dict(s, migrate=False) for s in hits[:limit]]

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        return {s["id"]: s["properties"].get(SOURCE_ETAG) for s in self._iter_items(collection_id)}

    def collection_ids(self) -> list[str]:
        return self._collection_ids()

    def search_page(self, collection_ids: Sequence[str] | None = None, *, bbox: Sequence[float] | None = None,
                    limit: int = 100, token: str | None = None) -> ItemPage:
        """A page of items of some collections (all when None) by bbox, newest first as pgSTAC
        orders them; the token is the offset of the next page (``next:<n>``)."""
        match = _STATIC_TOKEN.match(token or "next:0")
        if match is None:
            raise InvalidPageToken(f"paging token {token[:80]!r} was not handed out by this catalog")
        offset = int(match.group(1))
        hits = [s for cid in (collection_ids or self._collection_ids()) for s in self._iter_items(cid)
                if _item_matches(s, bbox, None, None)]
        hits.sort(key=lambda s: (item_span(s)[0] or _EPOCH, s["id"]), reverse=True)
        page = [{k: v for k, v in s.items() if k != "links"} for s in hits[offset:offset + limit]]
        more = offset + limit < len(hits)
        return ItemPage(items=page, next_token=f"next:{offset + limit}" if more else None)

    def _collection_ids(self) -> list[str]:
        return sorted(key.split("/")[0] for key in self.store.list_keys("", max_depth=2)
                      if key.endswith("/collection.json"))

    def health(self) -> CatalogHealth:
        try:
            collections = self._collection_ids()
            items = sum(1 for cid in collections for key in self.store.list_keys(f"{cid}/items"))
        except OSError as err:
            return CatalogHealth(backend="static", ok=False, detail=str(err))
        return CatalogHealth(backend="static", ok=True, version=STAC_VERSION, collections=len(collections), items=items)

    def finalize(self) -> None:
        """Regenerate every ``collection.json`` and ``catalog.json`` from what is stored."""
        collections = self._collection_ids()
        for collection_id in collections:
            self.refresh_collection(collection_id)
        catalog = pystac.Catalog(id=self.catalog_id, description=self.description, title=self.title)
        stac = catalog.to_dict(include_self_link=False, transform_hrefs=False)
        stac["links"] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}, _QUERYABLES_LINK] + [
            {"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"} for cid in collections]
        if self.validator is not None:
            messages = self.validator.errors(stac)
            if messages:
                raise CollectionValidationError(f"catalog {self.catalog_id!r} is invalid: {messages[0]}")
        self._write("queryables.json", stac_ops.queryables_document(f"Queryables of {self.title or self.catalog_id}"))
        self._write("catalog.json", stac)

