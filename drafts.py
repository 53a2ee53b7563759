"""Where drafts live, and the record of their transitions (draft, publish, revoke).

A draft item is written, validated and kept like any other, but where no consumer looks:

* **pgSTAC**: ``public.rmh_draft_items`` in the catalog's database, outside ``pgstac.items``, so
  neither ``pgstac.search`` (stac-fastapi-pgstac, titiler-pgstac's mosaics) nor any item route
  sees it. Publishing moves the rows into ``pgstac.items`` in one transaction (the catalog's own
  batched write), revoking moves them back. A collection in ``public.rmh_draft_collections`` takes
  every item written to it as a draft until it is published.
* **Static catalog**: ``.drafts/<collection>/items/<id>.json`` beside the catalog: not linked from
  ``catalog.json`` and, being hidden, not served by the embedded host's ``/files``. A draft file
  holds the item exactly as it will be published (links and relative hrefs for its public place),
  so publishing copies it unchanged. ``.drafts/<collection>/draft.json`` marks a draft collection.

Transitions (``Transition``: when, which action, how many items, by whom, why, which job) go to
``public.rmh_transitions`` or ``.lifecycle/`` and are listed newest first.

Never reads the environment; callers pass connections and stores in.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Literal, Protocol

import orjson
import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

Action = Literal["draft", "publish", "revoke"]
#: Transitions listed when a caller gives no limit.
TRANSITIONS_LISTED = 100


class Transition(BaseModel):
    """One change of what consumers see of a collection: ``draft`` (a job wrote it as a draft),
    ``publish`` or ``revoke``; ``items`` moved, ``by`` whom (a key name or fingerprint, or the job),
    ``reason`` why."""

    collection: str
    action: Action
    items: int = Field(ge=0)
    by: str
    reason: str
    job: str | None = None
    at: dt.datetime | None = None


class DraftCollection(BaseModel):
    """A collection with draft items: ``whole`` when the collection itself is a draft (everything
    written to it waits for ``publish``), else only some items wait (a job's ``draft`` output)."""

    collection: str
    items: int
    whole: bool
    since: dt.datetime | None = None


class Lifecycle(BaseModel):
    """What ``GET /api/lifecycle`` answers: the drafts, and the transitions newest first."""

    drafts: list[DraftCollection]
    transitions: list[Transition]


class VisibilityResult(BaseModel):
    """What a publish or revoke did: the items it moved, and the transition it recorded."""

    collection: str
    action: Action
    items: int
    transition: Transition


# ------------------------------------------------------------------------------------ pgSTAC

_DDL = (
    """CREATE TABLE IF NOT EXISTS public.rmh_draft_items (
        collection text NOT NULL, id text NOT NULL, content jsonb NOT NULL,
        drafted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (collection, id))""",
    """CREATE TABLE IF NOT EXISTS public.rmh_draft_collections (
        collection text PRIMARY KEY, since timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS public.rmh_transitions (
        seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), collection text NOT NULL,
        action text NOT NULL, items integer NOT NULL, by text NOT NULL, reason text NOT NULL, job text)""",
)

_PUT = """
INSERT INTO public.rmh_draft_items (collection, id, content) VALUES (%s, %s, %s)
ON CONFLICT (collection, id) DO UPDATE SET content = EXCLUDED.content, drafted_at = now()
WHERE public.rmh_draft_items.content IS DISTINCT FROM EXCLUDED.content
"""

_PUT_KEEP = """
INSERT INTO public.rmh_draft_items (collection, id, content) VALUES (%s, %s, %s)
ON CONFLICT (collection, id) DO NOTHING
"""


def ensure_tables(conn: psycopg.Connection, lock: Callable[[psycopg.Connection], None]) -> None:
    """Create the draft and transition tables when missing (``lock`` serialises creators)."""
    if conn.execute("SELECT to_regclass('public.rmh_transitions')").fetchone()[0] is None:
        lock(conn)
        for statement in _DDL:
            conn.execute(statement)


def is_draft(conn: psycopg.Connection, collection: str) -> bool:
    return conn.execute("SELECT 1 FROM public.rmh_draft_collections WHERE collection = %s",
                        (collection,)).fetchone() is not None


def mark(conn: psycopg.Connection, collection: str) -> bool:
    """Make the collection a draft; False when it already was."""
    return conn.execute("INSERT INTO public.rmh_draft_collections (collection) VALUES (%s) "
                        "ON CONFLICT DO NOTHING", (collection,)).rowcount == 1


def unmark(conn: psycopg.Connection, collection: str) -> bool:
    return conn.execute("DELETE FROM public.rmh_draft_collections WHERE collection = %s",
                        (collection,)).rowcount == 1


def put(conn: psycopg.Connection, collection: str, items: Sequence[Mapping[str, Any]], *,
        keep_existing: bool = False) -> int:
    """Write draft items (replacing changed ones, or keeping an existing draft with
    ``keep_existing``); how many were written."""
    written = 0
    with conn.cursor() as cur:
        for item in items:
            cur.execute(_PUT_KEEP if keep_existing else _PUT, (collection, item["id"], Jsonb(dict(item))))
            written += cur.rowcount
    return written


def take(conn: psycopg.Connection, collection: str, ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """Remove and return the collection's draft items (all, or those of ``ids``), by id."""
    if ids is None:
        rows = conn.execute("DELETE FROM public.rmh_draft_items WHERE collection = %s RETURNING content",
                            (collection,)).fetchall()
    else:
        rows = conn.execute("DELETE FROM public.rmh_draft_items WHERE collection = %s AND id = ANY(%s) "
                            "RETURNING content", (collection, list(ids))).fetchall()
    return sorted((row[0] for row in rows), key=lambda item: item["id"])


def discard(conn: psycopg.Connection, collection: str, ids: Sequence[str]) -> int:
    return conn.execute("DELETE FROM public.rmh_draft_items WHERE collection = %s AND id = ANY(%s)",
                        (collection, list(ids))).rowcount


def etags(conn: psycopg.Connection, collection: str, key: str) -> dict[str, str | None]:
    return dict(conn.execute("SELECT id, content->'properties'->>%s FROM public.rmh_draft_items "
                             "WHERE collection = %s", (key, collection)).fetchall())


def count(conn: psycopg.Connection, collection: str) -> int:
    return conn.execute("SELECT count(*) FROM public.rmh_draft_items WHERE collection = %s",
                        (collection,)).fetchone()[0]


def record(conn: psycopg.Connection, transition: Transition) -> Transition:
    at = conn.execute("INSERT INTO public.rmh_transitions (collection, action, items, by, reason, job) "
                      "VALUES (%s, %s, %s, %s, %s, %s) RETURNING at",
                      (transition.collection, transition.action, transition.items, transition.by,
                       transition.reason, transition.job)).fetchone()[0]
    return transition.model_copy(update={"at": at})


def lifecycle(conn: psycopg.Connection, collection: str | None, limit: int) -> Lifecycle:
    drafts = conn.execute(
        "SELECT coalesce(i.collection, c.collection), count(i.id), c.collection IS NOT NULL, c.since "
        "FROM (SELECT collection, id FROM public.rmh_draft_items) i "
        "FULL JOIN public.rmh_draft_collections c ON c.collection = i.collection "
        "WHERE %(c)s::text IS NULL OR coalesce(i.collection, c.collection) = %(c)s "
        "GROUP BY 1, 3, 4 ORDER BY 1", {"c": collection}).fetchall()
    rows = conn.execute(
        "SELECT collection, action, items, by, reason, job, at FROM public.rmh_transitions "
        "WHERE %(c)s::text IS NULL OR collection = %(c)s ORDER BY seq DESC LIMIT %(n)s",
        {"c": collection, "n": limit}).fetchall()
    return Lifecycle(
        drafts=[DraftCollection(collection=c, items=n, whole=whole, since=since) for c, n, whole, since in drafts],
        transitions=[Transition(collection=c, action=a, items=n, by=b, reason=r, job=j, at=at)
                     for c, a, n, b, r, j, at in rows])


# --------------------------------------------------------------------------- static catalog

class DraftStore(Protocol):
    """What the static drafts need of ``static_catalog.CatalogStore``."""

    def read_text(self, key: str) -> str | None: ...
    def write_text(self, key: str, text: str) -> None: ...
    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]: ...
    def delete(self, key: str) -> bool: ...


DRAFTS_ROOT = ".drafts"
TRANSITIONS_ROOT = ".lifecycle"


class StaticDrafts:
    """The static catalog's draft tree and transition log (see the module docstring)."""

    def __init__(self, store: DraftStore):
        self.store = store

    @staticmethod
    def item_key(collection: str, item_id: str) -> str:
        return f"{DRAFTS_ROOT}/{collection}/items/{item_id}.json"

    @staticmethod
    def _marker(collection: str) -> str:
        return f"{DRAFTS_ROOT}/{collection}/draft.json"

    def is_draft(self, collection: str) -> bool:
        return self.store.read_text(self._marker(collection)) is not None

    def mark(self, collection: str) -> bool:
        if self.is_draft(collection):
            return False
        self.store.write_text(self._marker(collection), orjson.dumps(
            {"since": dt.datetime.now(dt.timezone.utc).isoformat()}).decode())
        return True

    def unmark(self, collection: str) -> bool:
        return self.store.delete(self._marker(collection))

    def item_ids(self, collection: str) -> list[str]:
        prefix = f"{DRAFTS_ROOT}/{collection}/items/"
        return sorted(key[len(prefix):-len(".json")] for key in self.store.list_keys(prefix.rstrip("/")))

    def read(self, collection: str, item_id: str) -> str | None:
        return self.store.read_text(self.item_key(collection, item_id))

    def items(self, collection: str) -> Iterator[dict[str, Any]]:
        for item_id in self.item_ids(collection):
            text = self.read(collection, item_id)
            if text is not None:
                yield orjson.loads(text)

    def put(self, collection: str, item_id: str, text: str, *, keep_existing: bool = False) -> bool:
        existing = self.read(collection, item_id)
        if existing == text or (keep_existing and existing is not None):
            return False
        self.store.write_text(self.item_key(collection, item_id), text)
        return True

    def delete(self, collection: str, item_id: str) -> bool:
        return self.store.delete(self.item_key(collection, item_id))

    def collections(self) -> list[str]:
        return sorted({key.split("/")[1] for key in self.store.list_keys(DRAFTS_ROOT) if key.count("/") >= 2})

    def record(self, transition: Transition) -> Transition:
        stamped = transition.model_copy(update={"at": dt.datetime.now(dt.timezone.utc)})
        self.store.write_text(f"{TRANSITIONS_ROOT}/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json",
                              stamped.model_dump_json())
        return stamped

    def lifecycle(self, collection: str | None, limit: int) -> Lifecycle:
        drafts = []
        for name in self.collections():
            if collection is not None and name != collection:
                continue
            marker = self.store.read_text(self._marker(name))
            since = orjson.loads(marker).get("since") if marker else None
            count = len(self.item_ids(name))
            if count or marker:
                drafts.append(DraftCollection(collection=name, items=count, whole=marker is not None, since=since))
        transitions: list[Transition] = []
        for key in sorted(self.store.list_keys(TRANSITIONS_ROOT), reverse=True):
            text = self.store.read_text(key)
            if text is None:
                continue
            transition = Transition.model_validate_json(text)
            if collection is None or transition.collection == collection:
                transitions.append(transition)
            if len(transitions) >= limit:
                break
        return Lifecycle(drafts=drafts, transitions=transitions)


def ids_of(items: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(item["id"]) for item in items]
