"""A spatial index of a static catalog on a local directory: an SQLite R*Tree sidecar
(``<catalog>/.index/footprints.sqlite``) that answers a page of items by collection and bbox,
newest first, without reading every item file (``/api/footprints?limit=1000`` read all 10,000
item files of a catalog for each page: 7.8 s).

Why SQLite's R*Tree: it ships with Python (no new dependency), and its write lock serializes
writers across threads *and* processes (the activity workers), so it stays correct under
concurrent writers where an index file rewritten by each writer (a grid of JSON files written
atomically) would lose the updates of writers that read it before another replaced it. The
catalog writes an item file and its index row under the index's write lock (``writing``): two
writers of one item leave the file and the row of the same one. The item files stay the truth:
a read first reconciles the index with the names in each collection's ``items/`` directory
(items written by a version without the index, or by a writer that died between its file and
its row, are indexed then; removed ones dropped), skipped when the directory has not changed
since the last reconciliation; ``rebuild`` (run by the catalog's ``finalize``) reads every file.

Never reads the environment.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

INDEX_DIR = ".index"
INDEX_FILE = "footprints.sqlite"
#: A directory changed this recently is scanned again (its mtime may not show a change made in
#: the same clock tick as the last scan).
TRUST_AFTER_NS = 2_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, collection TEXT NOT NULL, file TEXT NOT NULL, item_id TEXT NOT NULL,
    start TEXT NOT NULL, west REAL, south REAL, east REAL, north REAL, UNIQUE (collection, file));
CREATE INDEX IF NOT EXISTS items_order ON items (collection, start, item_id);
CREATE VIRTUAL TABLE IF NOT EXISTS boxes USING rtree (id, min_x, max_x, min_y, max_y);
CREATE TABLE IF NOT EXISTS scanned (collection TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
"""


class StaticIndexError(Exception):
    """Base class of the static catalog index's errors."""


class IndexUnavailable(StaticIndexError):
    """The index database cannot be opened or written (the catalog falls back to reading files)."""


def _ranges(west: float, east: float) -> list[tuple[float, float]]:
    """Longitude ranges of a box; one crossing the antimeridian (west > east) is two."""
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


class FootprintIndex:
    """The R*Tree sidecar of a static catalog rooted at ``root`` (a local directory)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX_DIR / INDEX_FILE
        self._ready = False

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, once per instance, one process at a time (a lock file beside
        the index): switching a fresh file to WAL while another connection opens it answers
        "database is locked" at once, without waiting out the busy timeout (seen with eight
        concurrent writers on a loaded machine). WAL persists in the file, so later connections
        only wait for the write lock, which the busy timeout covers."""
        if self._ready:
            return
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._ready = True

    @contextlib.contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise IndexUnavailable(f"footprint index {self.path} cannot be opened: {err}") from err
        try:
            self._prepare(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator["IndexWriter"]:
        """A write transaction: files written and rows put inside it are one step to other writers."""
        with self._connect(write=True) as conn:
            yield IndexWriter(conn)

    def rebuild(self, collection: str, stacs: Iterator[tuple[str, Mapping[str, Any]]]) -> None:
        """Index a collection anew from ``(file name, item)`` of every item file."""
        with self.writing() as writer:
            writer.forget_collection(collection)
            for name, stac in stacs:
                writer.put(collection, name, stac)

    def reconcile(self, collection: str, items_dir: Path, read: Callable[[str], Mapping[str, Any] | None]) -> None:
        """Index the item files of ``items_dir`` the index lacks and drop rows of files gone."""
        try:
            mtime = items_dir.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        with self._connect(write=False) as conn:
            row = conn.execute("SELECT mtime_ns FROM scanned WHERE collection = ?", (collection,)).fetchone()
        if row is not None and row[0] == mtime and time.time_ns() - mtime > TRUST_AFTER_NS:
            return
        on_disk = set()
        if mtime >= 0:
            with os.scandir(items_dir) as entries:
                on_disk = {e.name for e in entries if e.name.endswith(".json") and not e.name.startswith(".")}
        with self.writing() as writer:
            indexed = {f for (f,) in writer.conn.execute("SELECT file FROM items WHERE collection = ?", (collection,))}
            for name in indexed - on_disk:
                writer.forget(collection, name)
            for name in sorted(on_disk - indexed):
                stac = read(name)
                if stac is not None:
                    writer.put(collection, name, stac)
            writer.conn.execute("INSERT OR REPLACE INTO scanned VALUES (?, ?)", (collection, mtime))

    def page(self, collections: Sequence[str], bbox: Sequence[float] | None, offset: int,
             limit: int) -> list[tuple[str, str]]:
        """``(collection, file name)`` of up to ``limit`` items from ``offset``, newest first
        (start datetime, then id, descending), whose bbox meets ``bbox`` (exactly, as
        ``static_catalog._item_matches``: the R*Tree's single-precision boxes only narrow)."""
        marks = ", ".join("?" * len(collections))
        where, params = [f"i.collection IN ({marks})"], list(collections)
        if bbox is not None:
            west, south, east, north = (float(v) for v in bbox[:4])
            near, exact = [], []
            for q_west, q_east in _ranges(west, east):
                near.append("(min_x <= ? AND max_x >= ? AND min_y <= ? AND max_y >= ?)")
                exact.append("(CASE WHEN i.west <= i.east THEN i.west <= ? AND ? <= i.east "
                             "ELSE (i.west <= ? AND ? <= 180.0) OR (-180.0 <= ? AND ? <= i.east) END)")
            where.append(f"i.id IN (SELECT id / 2 FROM boxes WHERE {' OR '.join(near)})")
            for q_west, q_east in _ranges(west, east):
                params += [q_east, q_west, north, south]
            where.append("i.south <= ? AND i.north >= ?")
            params += [north, south]
            where.append(f"({' OR '.join(exact)})")
            for q_west, q_east in _ranges(west, east):
                params += [q_east, q_west, q_east, q_west, q_east, q_west]
        sql = (f"SELECT i.collection, i.file FROM items i WHERE {' AND '.join(where)} "
               "ORDER BY i.start DESC, i.item_id DESC LIMIT ? OFFSET ?")
        params += [limit, offset]
        with self._connect(write=False) as conn:
            return [(c, f) for c, f in conn.execute(sql, params)]


def _order_key(start: dt.datetime | None) -> str:
    """A start datetime as text that sorts as the datetimes do (UTC, fixed width); none: year 1."""
    when = (start or dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f").rjust(26, "0")


class IndexWriter:
    """Rows of one write transaction (``FootprintIndex.writing``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def put(self, collection: str, name: str, stac: Mapping[str, Any]) -> None:
        from stac_collections import item_span

        start = item_span(stac)[0]
        box = stac.get("bbox") or [None] * 4
        west, south, east, north = (float(v) if v is not None else None for v in box[:4]) if len(box) >= 4 \
            else (None,) * 4
        self.forget(collection, name)
        cursor = self.conn.execute(
            "INSERT INTO items (collection, file, item_id, start, west, south, east, north) VALUES (?,?,?,?,?,?,?,?)",
            (collection, name, stac["id"], _order_key(start),
             west, south, east, north))
        if None not in (west, south, east, north):
            for part, (low, high) in enumerate(_ranges(west, east)):
                self.conn.execute("INSERT INTO boxes VALUES (?, ?, ?, ?, ?)",
                                  (cursor.lastrowid * 2 + part, low, high, south, north))

    def forget(self, collection: str, name: str) -> None:
        row = self.conn.execute("SELECT id FROM items WHERE collection = ? AND file = ?", (collection, name)).fetchone()
        if row is not None:
            self.conn.execute("DELETE FROM boxes WHERE id IN (?, ?)", (row[0] * 2, row[0] * 2 + 1))
            self.conn.execute("DELETE FROM items WHERE id = ?", (row[0],))

    def forget_collection(self, collection: str) -> None:
        self.conn.execute("DELETE FROM boxes WHERE id / 2 IN (SELECT id FROM items WHERE collection = ?)",
                          (collection,))
        self.conn.execute("DELETE FROM items WHERE collection = ?", (collection,))
