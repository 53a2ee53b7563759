"""Where change events wait until they are delivered, written with the change they announce, so a
change that commits always has its event and a change that does not commit has none.

* **pgSTAC** (``PgOutbox``): a table of our own, ``public.rmh_outbox``, in the catalog's database;
  the catalog appends an item's event (``append``) in the same transaction as the item write.
  A drainer claims due events with ``FOR UPDATE SKIP LOCKED`` (two drainers never hold the same
  event), delivers them and deletes them in that transaction; a crash before the delete leaves
  them to be delivered again (at least once, same id).
* **Static catalog** (``Journal``): files beside the catalog (``.events/``, hidden from the
  public tree and from the embedded host's ``/files``). A change is journalled first as *pending*
  (with the hash of the text it will write), applied, then marked *ready*; the three steps run
  under the collection's lock where the store has locks (a local directory). A pending entry left
  by a crash is settled by the next holder of that lock: the item file holds the text the entry
  announced → the change happened, the entry becomes ready; otherwise it did not, and the entry
  is dropped. A store without locks (a blob container) settles pending entries only once they
  are older than ``grace``.

Both hand a drainer a batch (``with outbox.batch(n) as batch``): ``batch.events``, then
``batch.sent()`` or ``batch.failed(reason, retry_in)``; a batch left unanswered stays pending.
Never reads the environment; callers pass connections and stores in.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Protocol

import orjson
import psycopg
from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

#: The longest wait before a failed event is offered again (backoff doubles up to it).
MAX_RETRY_SECONDS = 600.0


class EventBatch(Protocol):
    """Events claimed for one delivery attempt."""

    events: list[dict[str, Any]]

    def sent(self) -> None: ...
    def failed(self, reason: str, retry_in: float) -> None: ...


class Outbox(Protocol):
    """Pending change events of one catalog."""

    def batch(self, limit: int) -> contextlib.AbstractContextManager[EventBatch]: ...
    def pending(self) -> int: ...


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 2, 4, 8 … up to 10 minutes."""
    return min(MAX_RETRY_SECONDS, 2.0 ** max(1, attempts))


# ------------------------------------------------------------------------------------ pgSTAC

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS public.rmh_outbox (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    last_error text
)
"""

_CLAIM = """
SELECT seq, event, attempts FROM public.rmh_outbox
WHERE next_attempt <= now()
ORDER BY seq
LIMIT %s
FOR UPDATE SKIP LOCKED
"""


def ensure_table(conn: psycopg.Connection, lock: Callable[[psycopg.Connection], None]) -> None:
    """Create the outbox table when it is missing (``lock`` serialises creators)."""
    if conn.execute("SELECT to_regclass('public.rmh_outbox')").fetchone()[0] is None:
        lock(conn)
        conn.execute(OUTBOX_DDL)


def append(conn: psycopg.Connection, events: Sequence[dict[str, Any]]) -> None:
    """Add events to the outbox in the caller's transaction (they commit or roll back with it),
    with one COPY."""
    if events:
        with conn.cursor() as cur, cur.copy("COPY public.rmh_outbox (event_id, event) FROM STDIN") as copy:
            for event in events:
                copy.write_row((event["id"], orjson.dumps(event).decode()))


class PgBatch:
    """Claimed outbox rows, locked until the claiming transaction ends."""

    def __init__(self, conn: psycopg.Connection, rows: list[tuple[int, dict, int]]):
        self._conn = conn
        self._seqs = [seq for seq, _, _ in rows]
        self._attempts = {seq: attempts for seq, _, attempts in rows}
        self.events = [{**event, "sequence": f"{seq:020d}"} for seq, event, _ in rows]

    def sent(self) -> None:
        self._conn.execute("DELETE FROM public.rmh_outbox WHERE seq = ANY(%s)", (self._seqs,))

    def failed(self, reason: str, retry_in: float) -> None:
        self._conn.execute(
            "UPDATE public.rmh_outbox SET attempts = attempts + 1, last_error = %s, "
            "next_attempt = now() + make_interval(secs => %s) WHERE seq = ANY(%s)",
            (reason[:1000], retry_in, self._seqs))

    @property
    def attempts(self) -> int:
        return max(self._attempts.values(), default=0)


@contextlib.contextmanager
def connection_of(source: psycopg.Connection | ConnectionPool) -> Iterator[psycopg.Connection]:
    """A connection of ``source``: borrowed from a pool for the block, or the connection itself."""
    if isinstance(source, ConnectionPool):
        with source.connection() as conn:
            yield conn
    else:
        yield source


class PgOutbox:
    """The pgSTAC catalog's outbox table, read by drainers."""

    def __init__(self, source: psycopg.Connection | ConnectionPool):
        self._source = source

    def _connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        return connection_of(self._source)

    @contextlib.contextmanager
    def batch(self, limit: int) -> Iterator[PgBatch]:
        """Up to ``limit`` due events, oldest first, claimed until the block ends."""
        with self._connection() as conn, conn.transaction():
            if conn.execute("SELECT to_regclass('public.rmh_outbox')").fetchone()[0] is None:
                yield PgBatch(conn, [])
                return
            yield PgBatch(conn, conn.execute(_CLAIM, (limit,)).fetchall())

    def pending(self) -> int:
        with self._connection() as conn, conn.transaction():
            if conn.execute("SELECT to_regclass('public.rmh_outbox')").fetchone()[0] is None:
                return 0
            return conn.execute("SELECT count(*) FROM public.rmh_outbox").fetchone()[0]


# --------------------------------------------------------------------------- static catalog

class JournalStore(Protocol):
    """What the journal needs of ``static_catalog.CatalogStore`` (atomic ``write_text``)."""

    def read_text(self, key: str) -> str | None: ...
    def write_text(self, key: str, text: str) -> None: ...
    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]: ...
    def delete(self, key: str) -> bool: ...


JOURNAL_ROOT = ".events"
#: How old a pending entry of a store without locks must be before it is settled (far longer
#: than one journalled write takes).
DEFAULT_GRACE_SECONDS = 600.0


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stamp() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


class JournalBatch:
    """Ready journal entries claimed for one delivery attempt."""

    def __init__(self, store: JournalStore, entries: list[tuple[str, dict[str, Any]]]):
        self._store = store
        self._entries = entries
        self.events = [{**entry["event"], "sequence": key.rsplit("/", 1)[-1].split("-", 1)[0]}
                       for key, entry in entries]

    def sent(self) -> None:
        for key, _ in self._entries:
            self._store.delete(key)

    def failed(self, reason: str, retry_in: float) -> None:
        for key, entry in self._entries:
            entry = {**entry, "attempts": entry.get("attempts", 0) + 1, "last_error": reason[:1000],
                     "next_attempt": time.time() + retry_in}
            self._store.write_text(key, orjson.dumps(entry).decode())

    @property
    def attempts(self) -> int:
        return max((entry.get("attempts", 0) for _, entry in self._entries), default=0)


class Journal:
    """The static catalog's durable journal of change events (see the module docstring)."""

    def __init__(self, store: JournalStore, *, grace: float = DEFAULT_GRACE_SECONDS):
        self.store = store
        self.grace = grace

    def _lock(self, name: str) -> contextlib.AbstractContextManager[Any]:
        lock = getattr(self.store, "lock", None)
        return lock(name) if lock is not None else contextlib.nullcontext()

    @property
    def locks(self) -> bool:
        return getattr(self.store, "lock", None) is not None

    @contextlib.contextmanager
    def change(self, collection: str, key: str, after: str | None, event: dict[str, Any] | None) -> Iterator[None]:
        """Journal ``event`` around the change of ``key`` to the text ``after`` (None: deleted),
        which the block applies. Under the collection's lock: earlier pending entries of the
        collection are settled first, then this one is written pending, the block runs, and the
        entry becomes ready. No event: the block runs under the lock alone."""
        with self._lock(f"collection-{collection}"):
            self._settle(collection, locked=True)
            if event is None:
                yield
                return
            pending = f"{JOURNAL_ROOT}/pending/{collection}/{_stamp()}.json"
            self.store.write_text(pending, orjson.dumps({"event": event, "key": key, "after": text_hash(after),
                                                         "at": time.time()}).decode())
            try:
                yield
            except BaseException:
                self.store.delete(pending)
                raise
            self._promote(pending, event)

    def _promote(self, pending: str, event: dict[str, Any]) -> None:
        name = pending.rsplit("/", 1)[-1]
        self.store.write_text(f"{JOURNAL_ROOT}/ready/{name}", orjson.dumps({"event": event, "attempts": 0}).decode())
        self.store.delete(pending)

    def _settle(self, collection: str, *, locked: bool) -> int:
        """Settle the pending entries of a collection a crash left behind; how many became ready."""
        promoted = 0
        for key in list(self.store.list_keys(f"{JOURNAL_ROOT}/pending/{collection}")):
            text = self.store.read_text(key)
            if text is None:
                continue
            entry = orjson.loads(text)
            if not locked and time.time() - entry.get("at", 0) < self.grace:
                continue  # perhaps still being written: judged once it is old enough
            if text_hash(self.store.read_text(entry["key"])) == entry.get("after"):
                self._promote(key, entry["event"])
                promoted += 1
            else:
                logger.info("journal: %s did not reach %s; its event is dropped", key, entry["key"])
                self.store.delete(key)
        return promoted

    def settle_all(self) -> int:
        """Settle every collection's pending entries (a drainer does this first)."""
        collections = {key.split("/")[2] for key in self.store.list_keys(f"{JOURNAL_ROOT}/pending")
                       if key.count("/") >= 3}
        promoted = 0
        for collection in sorted(collections):
            with self._lock(f"collection-{collection}"):
                promoted += self._settle(collection, locked=self.locks)
        return promoted

    @contextlib.contextmanager
    def batch(self, limit: int) -> Iterator[JournalBatch]:
        """Up to ``limit`` due ready entries, oldest first. With locks, one drainer at a time (a
        second finds an empty batch), so a clean run delivers each event once."""
        lock = getattr(self.store, "try_lock", None)
        with (lock("drain") if lock is not None else contextlib.nullcontext(True)) as held:
            if not held:
                yield JournalBatch(self.store, [])
                return
            self.settle_all()
            entries: list[tuple[str, dict[str, Any]]] = []
            now = time.time()
            for key in sorted(self.store.list_keys(f"{JOURNAL_ROOT}/ready")):
                text = self.store.read_text(key)
                if text is None:
                    continue
                entry = orjson.loads(text)
                if entry.get("next_attempt", 0) <= now:
                    entries.append((key, entry))
                if len(entries) >= limit:
                    break
            yield JournalBatch(self.store, entries)

    def pending(self) -> int:
        return sum(1 for _ in self.store.list_keys(JOURNAL_ROOT))
