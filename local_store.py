"""Embedded Durable runtime: the task hub in one SQLite file.

One file holds instances, their history, pending new events (inbox), pending work (activities,
durable timers, HTTP calls), entity state and queues, and the Event Grid emulation's state (what
each watched container held at the last acknowledged poll, and the events not yet delivered).
The engine runs every mutation of one scheduling round inside one transaction, so a ``kill -9``
leaves either the round or nothing (WAL journal).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
    instance_id       TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    execution_id      TEXT NOT NULL,
    status            TEXT NOT NULL,
    input             TEXT,      -- JSON text of the input token as received
    output            TEXT,      -- JSON text
    custom_status     TEXT,      -- JSON text
    created_time      TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    parent            TEXT,      -- JSON {instance_id, execution_id, task_id} or NULL
    engine            TEXT       -- JSON bookkeeping of the live execution, NULL when finished
);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_time, instance_id);
CREATE TABLE IF NOT EXISTS history(
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY(instance_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    event        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox(instance_id);
CREATE TABLE IF NOT EXISTS work(
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id      INTEGER NOT NULL,
    kind         TEXT NOT NULL,   -- 'activity' | 'timer'
    due_at       REAL,            -- epoch seconds, timers only
    payload      TEXT NOT NULL,   -- JSON
    PRIMARY KEY(instance_id, execution_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities(
    entity_id     TEXT PRIMARY KEY,  -- '@name@key', name lower-cased
    exists_       INTEGER NOT NULL,
    state         TEXT,              -- entityState text exactly as the SDK returned it
    last_modified TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entity_queue(
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id TEXT NOT NULL,
    message   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS watched_containers(
    container   TEXT PRIMARY KEY,    -- its first poll recorded what was there, without events
    baseline_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_watch(
    container    TEXT NOT NULL,
    name         TEXT NOT NULL,
    etag         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT,
    PRIMARY KEY(container, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_outbox(
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    subject  TEXT NOT NULL,          -- one blob's events are delivered in order
    event    TEXT NOT NULL,          -- the Event Grid event, JSON
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at   REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_subject ON event_outbox(subject, id);
CREATE TABLE IF NOT EXISTS counters(
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

INSTANCE_COLUMNS = (
    "instance_id", "name", "execution_id", "status", "input", "output", "custom_status",
    "created_time", "last_updated_time", "parent", "engine",
)


@dataclass
class InstanceRow:
    """One row of ``instances``."""

    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_time: str
    last_updated_time: str
    parent: str | None
    engine: str | None


class Store:
    """Thin typed access to the task hub file; used from one thread only (the engine loop)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; nested use joins the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    @contextmanager
    def savepoint(self, name: str = "episode") -> Iterator[None]:
        """A nested unit inside a transaction: rolled back alone if its body raises."""
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            raise
        self._db.execute(f"RELEASE {name}")

    # -- instances -------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> InstanceRow | None:
        row = self._db.execute(
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances WHERE instance_id = ?",
            (instance_id,),
        ).fetchone()
        return InstanceRow(*row) if row else None

    def live_instances(self) -> list[InstanceRow]:
        rows = self._db.execute(
            f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances "
            "WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')"
        ).fetchall()
        return [InstanceRow(*row) for row in rows]

    def put_instance(self, row: InstanceRow) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO instances({', '.join(INSTANCE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))})",
            tuple(getattr(row, c) for c in INSTANCE_COLUMNS),
        )

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE instances SET {assignments} WHERE instance_id = ?",
            (*fields.values(), instance_id),
        )

    def query_instances(
        self,
        *,
        statuses: Sequence[str] | None = None,
        created_from: str | None = None,
        created_to: str | None = None,
        prefix: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
    ) -> list[InstanceRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if created_from:
            clauses.append("created_time >= ?")
            params.append(created_from)
        if created_to:
            clauses.append("created_time <= ?")
            params.append(created_to)
        if prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(prefix), prefix])
        if after:
            clauses.append("(created_time, instance_id) > (?, ?)")
            params.extend(after)
        sql = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_time, instance_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [InstanceRow(*row) for row in self._db.execute(sql, params).fetchall()]

    def delete_instance(self, instance_id: str) -> None:
        for table in ("instances", "history", "inbox", "work"):
            self._db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))

    # -- history ---------------------------------------------------------------------------
    def history(self, instance_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def append_history(self, instance_id: str, start: int, events: Sequence[str]) -> None:
        self._db.executemany(
            "INSERT INTO history(instance_id, seq, event) VALUES (?, ?, ?)",
            ((instance_id, start + i, e) for i, e in enumerate(events)),
        )

    def clear_history(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))

    # -- inbox -----------------------------------------------------------------------------
    def add_inbox(self, instance_id: str, execution_id: str, event: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO inbox(instance_id, execution_id, event) VALUES (?, ?, ?)",
            (instance_id, execution_id, json.dumps(event)),
        )
        return int(cur.lastrowid or 0)

    def inbox(self, instance_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, execution_id, event FROM inbox WHERE instance_id = ? ORDER BY id",
            (instance_id,),
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def delete_inbox(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM inbox WHERE id = ?", ((i,) for i in ids))

    def clear_inbox(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    # -- work ------------------------------------------------------------------------------
    def add_work(self, rows: Sequence[tuple[str, str, int, str, float | None, str]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO work(instance_id, execution_id, task_id, kind, due_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def delete_work(self, keys: Iterable[tuple[str, str, int]]) -> None:
        self._db.executemany(
            "DELETE FROM work WHERE instance_id = ? AND execution_id = ? AND task_id = ?", keys
        )

    def clear_work(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM work WHERE instance_id = ?", (instance_id,))

    def update_work_payload(self, key: tuple[str, str, int], payload: str) -> None:
        self._db.execute(
            "UPDATE work SET payload = ? WHERE instance_id = ? AND execution_id = ? AND task_id = ?",
            (payload, *key))

    def all_work(self) -> list[tuple[str, str, int, str, float | None, str]]:
        return self._db.execute(
            "SELECT instance_id, execution_id, task_id, kind, due_at, payload FROM work"
        ).fetchall()

    # -- entities --------------------------------------------------------------------------
    def get_entity(self, entity_id: str) -> tuple[bool, str | None] | None:
        row = self._db.execute(
            "SELECT exists_, state FROM entities WHERE entity_id = ?", (entity_id,)
        ).fetchone()
        return (bool(row[0]), row[1]) if row else None

    def put_entity(self, entity_id: str, exists: bool, state: str | None, when: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entities(entity_id, exists_, state, last_modified)"
            " VALUES (?, ?, ?, ?)",
            (entity_id, int(exists), state, when),
        )

    def list_entities(self, name: str, *, modified_from: str | None = None,
                      modified_to: str | None = None, after: str | None = None,
                      limit: int = 100) -> list[tuple[str, str | None, str]]:
        """(entity id, state, last modified) of existing entities named ``name``, by id."""
        prefix = f"@{name.lower()}@"
        clauses = ["substr(entity_id, 1, ?) = ?", "exists_ = 1"]
        params: list[Any] = [len(prefix), prefix]
        for clause, value in (("last_modified >= ?", modified_from),
                              ("last_modified <= ?", modified_to), ("entity_id > ?", after)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        params.append(limit)
        return self._db.execute(
            "SELECT entity_id, state, last_modified FROM entities WHERE "
            + " AND ".join(clauses) + " ORDER BY entity_id LIMIT ?", params).fetchall()

    def add_entity_message(self, entity_id: str, message: dict[str, Any]) -> int:
        cur = self._db.execute(
            "INSERT INTO entity_queue(entity_id, message) VALUES (?, ?)",
            (entity_id, json.dumps(message)),
        )
        return int(cur.lastrowid or 0)

    def entity_messages(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute(
            "SELECT id, entity_id, message FROM entity_queue ORDER BY id"
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def delete_entity_messages(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM entity_queue WHERE id = ?", ((i,) for i in ids))

    # -- Event Grid emulation ------------------------------------------------------------------
    def has_baseline(self, container: str) -> bool:
        return self._db.execute("SELECT 1 FROM watched_containers WHERE container = ?",
                                (container,)).fetchone() is not None

    def set_baseline(self, container: str, when: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO watched_containers(container, baseline_at)"
                         " VALUES (?, ?)", (container, when))

    def watched_blobs(self, container: str) -> dict[str, tuple[str, int, str | None]]:
        rows = self._db.execute(
            "SELECT name, etag, size, content_type FROM blob_watch WHERE container = ?",
            (container,)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def put_watched_blob(self, container: str, name: str, etag: str, size: int,
                         content_type: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO blob_watch(container, name, etag, size, content_type)"
            " VALUES (?, ?, ?, ?, ?)", (container, name, etag, size, content_type))

    def delete_watched_blob(self, container: str, name: str) -> None:
        self._db.execute("DELETE FROM blob_watch WHERE container = ? AND name = ?",
                         (container, name))

    def add_outbox(self, subject: str, event: dict[str, Any]) -> int:
        cur = self._db.execute("INSERT INTO event_outbox(subject, event) VALUES (?, ?)",
                               (subject, json.dumps(event)))
        return int(cur.lastrowid or 0)

    def due_outbox(self, now: float, limit: int) -> list[tuple[int, int, dict[str, Any]]]:
        """(id, attempts, event) of the oldest undelivered event of each subject, if it is due."""
        rows = self._db.execute(
            "SELECT id, attempts, event, due_at FROM event_outbox WHERE id IN "
            "(SELECT min(id) FROM event_outbox GROUP BY subject) ORDER BY id").fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows if r[3] <= now][:limit]

    def next_outbox_due(self) -> float | None:
        row = self._db.execute("SELECT min(due_at) FROM event_outbox").fetchone()
        return row[0] if row and row[0] is not None else None

    def delete_outbox(self, event_id: int) -> None:
        self._db.execute("DELETE FROM event_outbox WHERE id = ?", (event_id,))

    def retry_outbox(self, event_id: int, due_at: float) -> None:
        self._db.execute("UPDATE event_outbox SET attempts = attempts + 1, due_at = ? WHERE id = ?",
                         (due_at, event_id))

    def next_counter(self, name: str) -> int:
        """A persistent, strictly increasing counter (e.g. Event Grid sequencers)."""
        self._db.execute("INSERT OR IGNORE INTO counters(name, value) VALUES (?, 0)", (name,))
        self._db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (name,))
        return int(self._db.execute("SELECT value FROM counters WHERE name = ?",
                                    (name,)).fetchone()[0])
