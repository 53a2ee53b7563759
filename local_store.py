"""SQLite persistence for the embedded Durable runtime (``local_runtime.py``).

One file holds the task hub: instances, their history, pending new events (inbox), pending work
(activities and durable timers), and entity state and queues. The engine runs every mutation of one
scheduling round inside one transaction, so a ``kill -9`` leaves either the round or nothing.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

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
