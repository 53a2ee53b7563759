"""The pgSTAC backend of the ``catalogs.Catalog`` interface: psycopg on a connection or pool;
pgSTAC's own SQL; items dehydrated as ``pypgstac load`` does (pypgstac's ``dehydrate``), COPY
into a temporary table then one insert; a transaction-scoped advisory lock per collection; bounded
retries on deadlocks and serialization failures. A collection's queryables
(``stac_ops.QUERYABLES``) are registered for it whenever the collection is written, so CQL2
compares numbers as numbers; its summaries are computed in SQL (``pgstac_summaries``).

Never reads the environment; callers pass connections and pools in.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
import pystac
import tenacity
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pypgstac.hydration import dehydrate, hydrate

import drafts
import outbox
import pgstac_summaries
from catalogs import (CatalogHealth, CatalogQueryError, CatalogUnavailable, CollectionNotFound, InvalidPageToken,
                      ItemFacts, ItemPage, PartitionTrunc, PgStacVersionMismatch, UpsertResult, prepare_items)
from change_events import ItemChange, item_event
from drafts import Lifecycle, Transition, VisibilityResult
from stac_collections import ItemSummary, apply_summary
from stac_ops import SOURCE_ETAG, ItemValidationError, check_id
from stac_validation import StacValidator

logger = logging.getLogger(__name__)


DEFAULT_BATCH_SIZE = 1000


#: pgSTAC's paging tokens: ``next:``/``prev:`` and the last item's collection and id (hex-encoded
#: by pgSTAC 0.10, so up to twice the 256-character id limit; plain ids in older versions).
_PGSTAC_TOKEN = re.compile(r"^(next|prev):[A-Za-z0-9_.:~-]{1,1100}$")


def _token_refused(cause: BaseException | None) -> bool:
    """Whether pgSTAC refused a search for its paging token: its own messages ("Invalid paging
    token", "Could not find item using token"), or a token whose parts do not decode (bad hex, not
    UTF-8: a DataError; the token is the only undecoded client text in a search)."""
    return isinstance(cause, psycopg.DataError) or (isinstance(cause, psycopg.Error) and "token" in str(cause).lower())


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


# pgSTAC keeps CHECK constraints of each partition's datetime ranges (for pruning), and
# check_partition drops and re-creates them, re-validating every row of the partition, whenever a
# write reaches past them. A batch's exact range past them each time (a sync's chunks in listing
# order, datetimes growing) cost a scan of the partition per chunk: O(items²) over a large job.
# The ranges asked for are the batch's widened to whole UTC months (inside any partition: they
# start on UTC years or months), so a job widens them about once per month its items span.
_MONTHS = "tstzrange(date_trunc('month', min({0}), 'UTC'), " \
          "date_trunc('month', max({0}), 'UTC') + interval '1 month' - interval '1 microsecond', '[]')"
_CHECK_PARTITIONS = f"""
SELECT pgstac.check_partition(%(collection)s, {_MONTHS.format('datetime')}, {_MONTHS.format('end_datetime')})
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
RETURNING i.id
"""


_INSERT = """
INSERT INTO pgstac.items (id, geometry, collection, datetime, end_datetime, content)
SELECT id, ST_GeomFromGeoJSON(geojson), collection, datetime, end_datetime, content FROM rmh_items_in
ON CONFLICT DO NOTHING
RETURNING id
"""


# A deleted item as its event describes it: bbox, datetimes and asset hrefs as stored (hrefs are
# never dehydrated: no two items share one).
_DELETE_ITEMS = """
DELETE FROM pgstac.items WHERE collection = %s AND id = ANY(%s)
RETURNING id, collection, content->'bbox', content->'properties', content->'assets',
          ARRAY[ST_XMin(geometry), ST_YMin(geometry), ST_XMax(geometry), ST_YMax(geometry)]
"""


def _deleted_item(item_id: str, collection: str, bbox: Any, properties: Any, assets: Any,
                  envelope: list[float]) -> dict[str, Any]:
    props = properties if isinstance(properties, dict) else {}
    return {"id": item_id, "collection": collection, "bbox": bbox if isinstance(bbox, list) else envelope,
            "properties": {k: props.get(k) for k in ("datetime", "start_datetime", "end_datetime")},
            "assets": assets if isinstance(assets, dict) else {}}


def _creator_lock(conn: psycopg.Connection) -> None:
    """One creator of our own tables at a time (the stage, the outbox, drafts, transitions)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_NAMESPACE,))


# Items (published and draft) by collection, ids and source, for unpublish: where the source is
# (rmh:source_container, rmh:source_blob) and each asset's href.
_FACTS = ("SELECT collection, id, {draft}, content->'properties'->>'rmh:source_container', "
          "content->'properties'->>'rmh:source_blob', content->'assets' FROM {table} WHERE {where}")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _facts_filter(collection: str | None, ids: Sequence[str] | None, container: str | None,
                  blobs: Sequence[str] | None, prefix: str | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (fixed fragments) and parameters of a ``find_items`` query."""
    where, params = ["true"], {}
    if collection is not None:
        where.append("collection = %(collection)s")
        params["collection"] = collection
    if ids is not None:
        where.append("id = ANY(%(ids)s)")
        params["ids"] = list(ids)
    if container is not None:
        where.append("content->'properties'->>'rmh:source_container' = %(container)s")
        params["container"] = container
    if blobs is not None:  # the blob itself, or a tile of it (rmh:source_blob '<blob>/<tile>')
        where.append("(content->'properties'->>'rmh:source_blob' = ANY(%(blobs)s) "
                     "OR content->'properties'->>'rmh:source_blob' LIKE ANY(%(children)s))")
        params.update(blobs=list(blobs), children=[_like_prefix(b + "/") for b in blobs])
    if prefix:
        where.append("content->'properties'->>'rmh:source_blob' LIKE %(prefix)s")
        params["prefix"] = _like_prefix(prefix)
    return " AND ".join(where), params


_COLLECTION_META = """
SELECT b.base_item, c.key, c.partition_trunc, b.base_item_id
FROM pgstac.collections c, pgstac.current_base_item(c.id) b
WHERE c.id = %s
FOR SHARE OF c
"""


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


def _hydrated(feature: dict[str, Any]) -> dict[str, Any]:
    """A feature of a ``nohydrate`` search whole again: merged with the base item pgSTAC gave
    with it (``pgstac:base_item``), as pgSTAC's own hydration merges it, without its links."""
    base = feature.pop("pgstac:base_item", None)
    feature.pop("links", None)
    return hydrate(base, feature) if isinstance(base, dict) else feature


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
                 batch_size: int = DEFAULT_BATCH_SIZE, retries: int = 3, retry_delay: float = 0.05,
                 event_source: str | None = None, on_events: Callable[[int], None] | None = None) -> None:
        self._source = source
        self.validator = validator
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delay = retry_delay
        # Change events (change_events.py) go to the outbox in each write's transaction when an
        # event source is given; ``on_events(n)`` runs after a transaction that added n commits.
        self.event_source = event_source
        self.on_events = on_events
        self._version_checked = False
        self._stage_ready = False
        self._lifecycle_ready = False

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        return outbox.connection_of(self._source)

    def _run(self, what: str, work: Callable[[psycopg.Connection], Any], *, pipeline: bool = False,
             configure: bool = True, single: bool = False) -> Any:
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
            return retrying(self._transaction, work, pipeline, configure, single)
        except (*TRANSIENT_ERRORS, _LostConnection) as err:
            cause = err.__cause__ if isinstance(err, _LostConnection) else err
            raise CatalogUnavailable(f"{what}: still failing after {self.retries} retries: {cause}") from err
        except psycopg.OperationalError as err:
            raise CatalogUnavailable(f"{what}: database unavailable: {err}") from err
        except psycopg.Error as err:
            raise CatalogQueryError(f"{what}: {type(err).__name__}: {str(err).splitlines()[0]}") from err

    def run_in_transaction(self, what: str, work: Callable[[psycopg.Connection], Any]) -> Any:
        """``work(conn)`` in one transaction with this catalog's retries and error mapping, for
        modules that keep their own SQL on pgSTAC (``mosaic_searches``)."""
        return self._run(what, work)

    @staticmethod
    def lock_collection(conn: psycopg.Connection, collection_id: str) -> None:
        """Take the collection's writers' advisory lock for the rest of the transaction."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))

    def _transaction(self, work: Callable[[psycopg.Connection], Any], pipeline: bool = False,
                     configure: bool = True, single: bool = False) -> Any:
        """``work`` in one transaction; with ``pipeline`` its statements go out without waiting
        for each answer (one round trip for a write that reads nothing back; no COPY in it).
        ``configure``: pgSTAC's search path and no JIT for the transaction (not needed by a
        statement on our own tables with qualified names: the per-file stage write).
        ``single``: ``work`` runs one statement, atomic by itself: on a pooled connection it runs
        in autocommit, without a BEGIN and a COMMIT around it (the per-file stage write)."""
        conn = None
        try:
            if single and isinstance(self._source, ConnectionPool):
                with self._source.connection() as conn:
                    conn.autocommit = True
                    try:
                        return work(conn)
                    finally:  # a lost connection is not idle: the pool discards it as it is
                        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                            conn.autocommit = False
            with self._connection() as conn, (conn.pipeline() if pipeline else contextlib.nullcontext()), \
                    conn.transaction():
                # No JIT: pgSTAC's cost estimates of a collection-wide aggregate (the summary)
                # pass jit_above_cost, and compiling took 0.6 s of a 9 ms query on 1,000 items.
                if configure:
                    conn.execute("SELECT set_config('search_path', 'pgstac,public', true), "
                                 "set_config('jit', 'off', true)")
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
            pgstac_summaries.register_queryables(conn, stac["id"])

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
        return pgstac_summaries.collection_summary(conn, collection_id)

    # items

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True,
                     draft: bool = False) -> UpsertResult:
        """Insert new items, replace changed ones (even across partitions), skip identical ones.

        Items are validated with the catalog's validator unless ``validate=False`` (for items that
        ``item_from_raster(..., validator=...)`` already validated where they were built). With
        ``draft``, or into a draft collection, they are kept as drafts (``drafts.py``) instead.
        """
        grouped = prepare_items(items, self.validator if validate else None)
        self._check_version()
        requested = written = 0
        for collection_id, by_id in grouped.items():
            batch = list(by_id.values())
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size]
                written += self._run_changes(
                    f"upsert {len(chunk)} items into {collection_id}",
                    lambda conn, events, c=chunk, cid=collection_id: self._write_batch(conn, cid, c, events, draft=draft))
                requested += len(chunk)
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    # staging: per-file activities park items, the chunk writes them in one batch

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True, draft: bool = False) -> int:
        """Park validated items durably under ``stage_id``; ``flush_staged(stage_id)`` writes them
        (as drafts when the flush says so: ``draft`` is the flush's to decide here).

        A fan-out of one activity per file then costs pgSTAC one batched write per chunk instead
        of one per file; a staged item survives any crash until its flush commits.
        """
        grouped = prepare_items(items, self.validator if validate else None)
        rows = [(stage_id, cid, iid, Jsonb(stac)) for cid, by_id in grouped.items() for iid, stac in by_id.items()]
        # One item (a per-file activity's) into a stage table that exists: one statement, atomic
        # alone (its BEGIN and COMMIT cost the worker 0.2 ms a file); else one transaction.
        single = len(rows) == 1 and self._stage_ready

        def work(conn: psycopg.Connection) -> int:
            if single:
                conn.execute(_STAGE_PUT, rows[0])
                return 1
            self._ensure_stage(conn)
            with conn.cursor() as cur:
                cur.executemany(_STAGE_PUT, rows)
            return len(rows)

        staged = self._run(f"stage {len(rows)} items", work, pipeline=True, configure=False, single=single)
        self._stage_ready = True  # only once a transaction that created the table committed
        return staged

    def flush_staged(self, stage_id: str, *, draft: bool = False) -> UpsertResult:
        """Write the items staged under ``stage_id`` and drop them from the stage, atomically
        (a retried flush after a failure writes them again; after a success it finds nothing);
        as drafts with ``draft``."""
        self._check_version()

        def work(conn: psycopg.Connection, events: list[dict[str, Any]]) -> UpsertResult:
            self._ensure_stage(conn)
            rows = conn.execute(_STAGE_TAKE, (stage_id,)).fetchall()
            grouped: dict[str, list[dict]] = {}
            for collection_id, content in rows:
                grouped.setdefault(collection_id, []).append(content)
            written = 0
            for collection_id in sorted(grouped):  # lock collections in one order: no deadlock
                batch = grouped[collection_id]
                for start in range(0, len(batch), self.batch_size):
                    written += self._write_batch(conn, collection_id, batch[start:start + self.batch_size], events,
                                                 draft=draft)
            conn.execute(_STAGE_EXPIRE)
            return UpsertResult(collection_ids=sorted(grouped), requested=len(rows), written=written,
                                unchanged=len(rows) - written)

        result = self._run_changes(f"flush staged items of {stage_id}", work)
        self._stage_ready = True
        return result

    def _ensure_stage(self, conn: psycopg.Connection) -> None:
        if not self._stage_ready:
            _creator_lock(conn)  # one creator
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

    def _write_batch(self, conn: psycopg.Connection, collection_id: str, batch: list[dict],
                     events: list[dict[str, Any]] | None = None, *, draft: bool = False,
                     publishing: bool = False) -> int:
        """Write one batch of a collection's items: to ``pgstac.items`` (the events of what it
        created or changed added to ``events``), or to the drafts when ``draft`` or the collection
        is a draft. ``publishing``: the batch is drafts being published (one ``published`` event each)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))
        meta = conn.execute(_COLLECTION_META, (collection_id,)).fetchone()
        if meta is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist; upsert it first")
        if not publishing and (draft or drafts.is_draft(conn, collection_id)):
            return drafts.put(conn, collection_id, batch)
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
            replaced = {row[0] for row in cur.fetchall()}
            cur.execute(_INSERT)
            inserted = [row[0] for row in cur.fetchall()]
        if not publishing:  # a pending draft of an item written for all to see is superseded
            drafts.discard(conn, collection_id, [stac["id"] for stac in batch])
        if events is not None and self.event_source is not None:
            if publishing:
                events += [item_event(ItemChange.published, stac, source=self.event_source) for stac in batch]
            else:
                by_id = {stac["id"]: stac for stac in batch}
                events += [item_event(ItemChange.updated if item_id in replaced else ItemChange.created,
                                      by_id[item_id], source=self.event_source) for item_id in inserted]
        logger.debug("collection %s: %d of %d items written", collection_id, len(inserted), len(rows))
        return len(inserted)

    # changes: the lifecycle tables and the outbox, written in the change's transaction

    def _ensure_lifecycle(self, conn: psycopg.Connection) -> None:
        if not self._lifecycle_ready:
            outbox.ensure_table(conn, _creator_lock)
            drafts.ensure_tables(conn, _creator_lock)

    def _run_changes(self, what: str, work: Callable[[psycopg.Connection, list[dict[str, Any]]], Any]) -> Any:
        """``work(conn, events)`` in one transaction (``_run``: retried as a whole), the change
        events it collects appended to the outbox in that same transaction; ``on_events`` runs
        once it committed (a delivery attempt right after the write)."""
        events: list[dict[str, Any]] = []

        def transaction(conn: psycopg.Connection) -> Any:
            events.clear()  # a retried transaction starts again
            self._ensure_lifecycle(conn)
            result = work(conn, events)
            if self.event_source is not None:
                outbox.append(conn, events)
            return result

        result = self._run(what, transaction)
        self._lifecycle_ready = True
        if events and self.event_source is not None and self.on_events is not None:
            try:
                self.on_events(len(events))
            except Exception as err:  # noqa: BLE001 - delivery is retried by the drainer; the write stands
                logger.warning("%s: delivering its %d events failed (the drainer retries): %s",
                               what, len(events), err)
        return result

    def event_outbox(self) -> outbox.PgOutbox:
        """The outbox this catalog's writes fill (``event_delivery.drain`` empties it)."""
        return outbox.PgOutbox(self._source)

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        row = self._run(f"get item {item_id}", lambda conn: conn.execute(
            "SELECT pgstac.get_item(%s, %s)", (item_id, collection_id)).fetchone())
        return None if row is None or row[0] is None else pystac.Item.from_dict(row[0], migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.delete_items(collection_id, [item_id]) == 1

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        """Delete items (one ``deleted`` event each) and any draft of them; how many public
        items and drafts went."""
        ids = list(item_ids)

        def work(conn: psycopg.Connection, events: list[dict[str, Any]]) -> int:
            rows = conn.execute(_DELETE_ITEMS, (collection_id, ids)).fetchall()
            if self.event_source is not None:
                events += [item_event(ItemChange.deleted, _deleted_item(*row), source=self.event_source)
                           for row in rows]
            return len(rows) + drafts.discard(conn, collection_id, ids)

        return self._run_changes(f"delete {len(ids)} items from {collection_id}", work)

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
        and its paging tokens (``next:...``).

        The items come dehydrated (``conf.nohydrate``: each with its base item) and are hydrated
        here by pypgstac's ``hydrate``: pgSTAC's SQL hydration (``content_hydrate``, a recursive
        PL/pgSQL merge per item) took 1.2 ms an item, 1.4 s of a page of 1,000, where the page's
        rows are read in 0.15 s and hydrated in Python in about 0.03 s."""
        body: dict[str, Any] = {"limit": limit, "conf": {"nohydrate": True}}
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
        return ItemPage(items=[_hydrated(f) for f in result.get("features") or []],
                        next_token=following[0] if following else None)

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        """Item id -> ``rmh:source_etag`` for every item of the collection, drafts included (a
        draft's wins: it is the newer), for incremental sync."""
        def work(conn: psycopg.Connection, _events: list) -> dict[str, str | None]:
            rows = dict(conn.execute("SELECT id, content->'properties'->>%s FROM pgstac.items WHERE collection = %s",
                                     (SOURCE_ETAG, collection_id)).fetchall())
            return {**rows, **drafts.etags(conn, collection_id, SOURCE_ETAG)}

        return self._run_changes(f"list etags of {collection_id}", work)

    # unpublish: items by source, collections emptied or removed

    def find_items(self, *, collection: str | None = None, ids: Sequence[str] | None = None,
                   source_container: str | None = None, source_blobs: Sequence[str] | None = None,
                   source_prefix: str | None = None) -> list[ItemFacts]:
        """Items, published and draft, by collection, ids and source (a source blob also finds
        its tiles' items), with where their source is and their assets' hrefs."""
        where, params = _facts_filter(collection, ids, source_container, source_blobs, source_prefix)

        def work(conn: psycopg.Connection, _events: list) -> list[tuple]:
            public = conn.execute(_FACTS.format(draft="false", table="pgstac.items", where=where), params).fetchall()
            drafted = conn.execute(_FACTS.format(draft="true", table="public.rmh_draft_items", where=where),
                                   params).fetchall()
            return public + drafted

        rows = self._run_changes("find items", work)
        return [ItemFacts(collection=c, id=i, draft=d, source_container=sc, source_blob=sb,
                          assets={k: a["href"] for k, a in (assets or {}).items()
                                  if isinstance(a, dict) and isinstance(a.get("href"), str)})
                for c, i, d, sc, sb, assets in rows]

    def count_items(self, collection_id: str) -> int:
        """Items of the collection, published and draft."""
        return self._run_changes(f"count items of {collection_id}", lambda conn, _events: conn.execute(
            "SELECT count(*) FROM pgstac.items WHERE collection = %s", (collection_id,)).fetchone()[0]
            + drafts.count(conn, collection_id))

    def remove_searches(self, collection_id: str) -> int:
        """Forget the searches registered for the collection (titiler-pgstac's mosaics): those
        whose metadata names it (``rmh:collection`` or ``collection``) or that search it alone."""
        return self._run(f"remove searches of {collection_id}", lambda conn: conn.execute(
            "DELETE FROM pgstac.searches WHERE metadata->>'rmh:collection' = %(c)s "
            "OR metadata->>'collection' = %(c)s OR search->'collections' = jsonb_build_array(%(c)s::text)",
            {"c": collection_id}).rowcount)

    def delete_collection(self, collection_id: str) -> bool:
        """Remove an emptied collection, with its drafts' state and registered searches (its
        items are deleted first, each with its event); False when it did not exist."""
        def work(conn: psycopg.Connection, _events: list) -> bool:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))
            if conn.execute("SELECT 1 FROM pgstac.collections WHERE id = %s", (collection_id,)).fetchone() is None:
                return False
            drafts.unmark(conn, collection_id)
            conn.execute("DELETE FROM public.rmh_draft_items WHERE collection = %s", (collection_id,))
            conn.execute("SELECT pgstac.delete_collection(%s)", (collection_id,))
            pgstac_summaries.unregister_queryables(conn, collection_id)
            return True

        self.remove_searches(collection_id)
        return self._run_changes(f"delete collection {collection_id}", work)

    # drafts: publish and revoke move items between pgstac.items and the drafts, in one transaction

    def mark_draft(self, collection_id: str, transition: Transition) -> bool:
        """Make the collection a draft (a new one, written as a draft); records the transition
        when it was not one already."""
        def work(conn: psycopg.Connection, _events: list) -> bool:
            if not drafts.mark(conn, collection_id):
                return False
            drafts.record(conn, transition)
            return True

        return self._run_changes(f"mark {collection_id} a draft", work)

    def set_visibility(self, action: str, collection_id: str, item_ids: Sequence[str] | None,
                       transition: Transition) -> VisibilityResult:
        """``publish``: move the collection's drafts (all, or ``item_ids``) into ``pgstac.items``
        (a ``published`` event each); ``revoke``: move its items back to the drafts (a ``revoked``
        event each). All of it in one transaction, with the transition it records. Without
        ``item_ids`` the collection itself stops (publish) or starts (revoke) being a draft."""
        self._check_version()

        def work(conn: psycopg.Connection, events: list[dict[str, Any]]) -> VisibilityResult:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))
            if conn.execute("SELECT 1 FROM pgstac.collections WHERE id = %s", (collection_id,)).fetchone() is None:
                raise CollectionNotFound(f"collection {collection_id!r} does not exist")
            if action == "publish":
                moved = drafts.take(conn, collection_id, item_ids)
                for start in range(0, len(moved), self.batch_size):
                    self._write_batch(conn, collection_id, moved[start:start + self.batch_size], events,
                                      publishing=True)
                if item_ids is None:
                    drafts.unmark(conn, collection_id)
            else:
                moved = self._take_public(conn, collection_id, item_ids)
                drafts.put(conn, collection_id, moved, keep_existing=True)  # a newer draft stays
                if self.event_source is not None:
                    events += [item_event(ItemChange.revoked, stac, source=self.event_source) for stac in moved]
                if item_ids is None:
                    drafts.mark(conn, collection_id)
            recorded = drafts.record(conn, transition.model_copy(update={"items": len(moved)}))
            return VisibilityResult(collection=collection_id, action=action, items=len(moved), transition=recorded)

        return self._run_changes(f"{action} {collection_id}", work)

    @staticmethod
    def _take_public(conn: psycopg.Connection, collection_id: str, item_ids: Sequence[str] | None) -> list[dict]:
        """Remove and return the collection's items (all, or ``item_ids``), hydrated by pgSTAC."""
        only = "" if item_ids is None else " AND i.id = ANY(%(ids)s)"
        rows = conn.execute("SELECT pgstac.content_hydrate(i) FROM pgstac.items i WHERE i.collection = %(c)s"
                            + only + " ORDER BY i.id", {"c": collection_id, "ids": list(item_ids or [])}
                            ).fetchall()
        items = [row[0] for row in rows]
        conn.execute("DELETE FROM pgstac.items WHERE collection = %s AND id = ANY(%s)",
                     (collection_id, [item["id"] for item in items]))
        return items

    def lifecycle(self, collection_id: str | None = None, limit: int = drafts.TRANSITIONS_LISTED) -> Lifecycle:
        """The drafts (collections and counts) and the transitions, newest first."""
        return self._run_changes("lifecycle", lambda conn, _events: drafts.lifecycle(conn, collection_id, limit))

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
