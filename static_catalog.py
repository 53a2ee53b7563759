"""The static backend of the ``catalogs.Catalog`` interface: pystac-readable JSON files behind a
small ``CatalogStore`` I/O seam (a local directory, or a blob container in activities), relative
links throughout, and, when it knows the local storage root, asset hrefs relative to each item
file (or URLs under a base URL), so the catalog and the storage directory can be moved together.

Never reads the environment; callers pass stores and roots in.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import pystac

import drafts
import outbox
import stac_ops
from catalogs import (CatalogHealth, CollectionNotFound, InvalidPageToken, ItemFacts, ItemPage, PartitionTrunc,
                      UpsertResult, prepare_items, parse_datetime_interval)
from change_events import ItemChange, item_event
from drafts import Lifecycle, Transition, VisibilityResult
from stac_collections import apply_summary, item_span, summarize_items
from stac_ops import SOURCE_ETAG, CollectionValidationError, InvalidItemId, check_id
from stac_validation import STAC_VERSION, StacValidator
from dir_store import atomic_write_text
from static_index import FootprintIndex, IndexUnavailable
from storage import fit_component


logger = logging.getLogger(__name__)

_STATIC_TOKEN = re.compile(r"^next:(\d{1,9})$")


_EPOCH = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)


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
    """``CatalogStore`` on a local directory: its keys are files under ``root``, written with the
    blob store's atomic write (``dir_store.atomic_write_text``)."""

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
        atomic_write_text(path, text)  # the local store's one atomic write

    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]:
        """Keys of the ``.json`` files under ``prefix``, sorted; ``max_depth`` counts key segments."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # drafts, journal, locks: not the tree
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

    def _lock_file(self, name: str) -> int:
        path = self.root / ".locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock between threads and processes on this directory (``fcntl.flock``;
        released when the holder ends, even by ``kill -9``)."""
        fd = self._lock_file(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """``lock`` without waiting: yields whether it is held."""
        fd = self._lock_file(name)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def _text(stac: Mapping[str, Any]) -> str:
    """The JSON text of a STAC object as the catalog stores it."""
    return orjson.dumps(stac, option=orjson.OPT_INDENT_2).decode()


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
                 validator: StacValidator | None = None, storage_root: str | os.PathLike | None = None,
                 event_source: str | None = None, on_events: Callable[[int], None] | None = None) -> None:
        self.store = LocalDirectoryStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.catalog_id, self.description, self.title = catalog_id, description, title
        self.validator = validator
        self.storage_root = None if storage_root is None else Path(storage_root).resolve()
        # Change events are journalled with each change (outbox.Journal) when a source is given.
        self.event_source = event_source
        self.on_events = on_events
        self.journal = outbox.Journal(self.store)
        self.drafts = drafts.StaticDrafts(self.store)
        # On a local directory: the R*Tree sidecar that pages search_page (static_index.py).
        self.index = FootprintIndex(self.store.root) if isinstance(self.store, LocalDirectoryStore) else None

    @contextlib.contextmanager
    def _index_writing(self):
        """The index's write transaction (None without an index): an item's file and row change together."""
        if self.index is None:
            yield None
            return
        with self.index.writing() as writer:
            yield writer

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
        self.store.write_text(key, _text(stac))

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

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True,
                     draft: bool = False) -> UpsertResult:
        """Write each item atomically to its own file; identical files are not rewritten. With
        ``draft``, or into a draft collection, items go to the draft tree (``drafts.py``). A written
        item's event is journalled with it (``outbox.Journal``)."""
        grouped = prepare_items(items, self.validator if validate else None)
        requested = written = events = 0
        for collection_id, by_id in grouped.items():
            self._require_collection(collection_id)
            drafting = draft or self.drafts.is_draft(collection_id)
            for item_id, stac in by_id.items():
                stac = {**self._relative_hrefs(collection_id, stac), "links": [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ] + [link for link in stac.get("links", []) if link.get("rel") not in ("root", "parent", "collection", "self")]}
                requested += 1
                if drafting:
                    written += self.drafts.put(collection_id, item_id, _text(stac))
                    continue
                key = self._item_key(collection_id, item_id)
                previous = self._read(key)
                if previous != stac:
                    change = ItemChange.created if previous is None else ItemChange.updated
                    events += self._change(collection_id, key, _text(stac), change, stac)
                    written += 1
                self.drafts.delete(collection_id, item_id)  # a pending draft is superseded
        self._announce(events)
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    def _change(self, collection_id: str, key: str, text: str | None, change: ItemChange,
                stac: Mapping[str, Any]) -> int:
        """Write (or, with ``text`` None, delete) one item file with its event journalled; how
        many events that was (0 without an event source)."""
        event = item_event(change, stac, source=self.event_source) if self.event_source else None
        with self._index_writing() as index:
            with self.journal.change(collection_id, key, text, event) if event else contextlib.nullcontext():
                if text is None:
                    self.store.delete(key)
                else:
                    self.store.write_text(key, text)
            if index is not None:  # the file's row, in the same step to other writers
                name = key.rsplit("/", 1)[1]
                index.forget(collection_id, name) if text is None else index.put(collection_id, name, stac)
        return 1 if event else 0

    def _announce(self, events: int) -> None:
        if events and self.on_events is not None:
            try:
                self.on_events(events)
            except Exception as err:  # noqa: BLE001 - the drainer retries; the write stands
                logger.warning("delivering %d events failed (the drainer retries): %s", events, err)

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True, draft: bool = False) -> int:
        """A static catalog writes each item to its own file already: staging is writing."""
        return self.upsert_items(items, validate=validate, draft=draft).requested

    def flush_staged(self, stage_id: str, *, draft: bool = False) -> UpsertResult:
        """Nothing is ever staged here (see ``stage_items``)."""
        return UpsertResult(collection_ids=[], requested=0, written=0, unchanged=0)

    def event_outbox(self) -> outbox.Journal:
        """The journal this catalog's writes fill (``event_delivery.drain`` empties it)."""
        return self.journal

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        stac = self._read(self._item_key(collection_id, item_id))
        return None if stac is None else pystac.Item.from_dict(stac, migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.delete_items(collection_id, [item_id]) == 1

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        """Delete items (a ``deleted`` event each) and any draft of them; how many went."""
        removed = events = 0
        for item_id in item_ids:
            key = self._item_key(collection_id, item_id)
            stac = self._read(key)
            if stac is not None:
                events += self._change(collection_id, key, None, ItemChange.deleted, stac)
                removed += 1
            removed += self.drafts.delete(collection_id, item_id)
        self._announce(events)
        return removed

    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None, datetime: str | None = None,
               limit: int = 100) -> list[pystac.Item]:
        """Items of one collection by bbox and datetime, newest first (pgSTAC's default order)."""
        start, end = parse_datetime_interval(datetime)
        hits = [s for s in self._iter_items(collection_id) if _item_matches(s, bbox, start, end)]
        hits.sort(key=lambda s: (item_span(s)[0], s["id"]), reverse=True)
        return [pystac.Item.from_dict(s, migrate=False) for s in hits[:limit]]

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        """Item id -> ``rmh:source_etag``, drafts included (a draft's wins: it is the newer)."""
        public = {s["id"]: s["properties"].get(SOURCE_ETAG) for s in self._iter_items(collection_id)}
        return {**public, **{s["id"]: s["properties"].get(SOURCE_ETAG) for s in self.drafts.items(collection_id)}}

    # unpublish: items by source, collections emptied or removed

    def find_items(self, *, collection: str | None = None, ids: Sequence[str] | None = None,
                   source_container: str | None = None, source_blobs: Sequence[str] | None = None,
                   source_prefix: str | None = None) -> list[ItemFacts]:
        """Items, published and draft, by collection, ids and source (a source blob also finds its
        tiles' items), with where their source is and their assets' hrefs (as stored)."""
        wanted = set(ids) if ids is not None else None
        blobs = set(source_blobs) if source_blobs is not None else None
        found = []
        for cid in ([collection] if collection else self._collection_ids()):
            stored = [(s, False) for s in self._iter_items(cid)] + [(s, True) for s in self.drafts.items(cid)]
            for stac, draft in stored:
                props = stac.get("properties") or {}
                container, blob = props.get(stac_ops.SOURCE_CONTAINER), props.get(stac_ops.SOURCE_BLOB) or ""
                if (wanted is not None and stac["id"] not in wanted) or (
                        source_container is not None and container != source_container) or (
                        blobs is not None and blob not in blobs and not any(blob.startswith(b + "/") for b in blobs)) or (
                        source_prefix and not blob.startswith(source_prefix)):
                    continue
                found.append(ItemFacts(collection=cid, id=stac["id"], draft=draft, source_container=container,
                                       source_blob=props.get(stac_ops.SOURCE_BLOB),
                                       assets={k: a["href"] for k, a in (stac.get("assets") or {}).items()
                                               if isinstance(a, dict) and isinstance(a.get("href"), str)}))
        return found

    def count_items(self, collection_id: str) -> int:
        return sum(1 for _ in self.store.list_keys(f"{check_id(collection_id)}/items")) + len(
            self.drafts.item_ids(collection_id))

    def remove_searches(self, collection_id: str) -> int:
        """A static catalog has no registered searches."""
        return 0

    def delete_collection(self, collection_id: str) -> bool:
        """Remove an emptied collection's files, its draft state, and its link from ``catalog.json``."""
        stac = self._read(self._collection_key(collection_id))
        for item_id in self.drafts.item_ids(collection_id):
            self.drafts.delete(collection_id, item_id)
        self.drafts.unmark(collection_id)
        if stac is None:
            return False
        self.store.delete(f"{collection_id}/queryables.json")
        self.store.delete(self._collection_key(collection_id))
        self._write_root()
        return True

    # drafts: publish and revoke move item files between the draft tree and the public tree

    def mark_draft(self, collection_id: str, transition: Transition) -> bool:
        if not self.drafts.mark(check_id(collection_id)):
            return False
        self.drafts.record(transition)
        return True

    def set_visibility(self, action: str, collection_id: str, item_ids: Sequence[str] | None,
                       transition: Transition) -> VisibilityResult:
        """``publish``: move the collection's draft files (all, or ``item_ids``) into the public
        tree (a ``published`` event each); ``revoke``: move its items back (a ``revoked`` event
        each). Per item, each move journalled with its event; a rerun after a crash completes
        it. Without ``item_ids`` the collection itself stops (publish) or starts (revoke) being a draft."""
        self._require_collection(collection_id)
        moved = events = 0
        if action == "publish":
            for item_id in (item_ids if item_ids is not None else self.drafts.item_ids(collection_id)):
                text = self.drafts.read(collection_id, item_id)
                if text is None:
                    continue
                key = self._item_key(collection_id, item_id)
                if self.store.read_text(key) != text:  # else a crash came after the move: only the draft is left
                    events += self._change(collection_id, key, text, ItemChange.published, orjson.loads(text))
                self.drafts.delete(collection_id, item_id)
                moved += 1
            if item_ids is None:
                self.drafts.unmark(collection_id)
        else:
            wanted = item_ids if item_ids is not None else [s["id"] for s in self._iter_items(collection_id)]
            for item_id in wanted:
                key = self._item_key(collection_id, item_id)
                text = self.store.read_text(key)
                if text is None:
                    continue
                self.drafts.put(collection_id, item_id, text, keep_existing=True)  # a newer draft stays
                events += self._change(collection_id, key, None, ItemChange.revoked, orjson.loads(text))
                moved += 1
            if item_ids is None:
                self.drafts.mark(collection_id)
        recorded = self.drafts.record(transition.model_copy(update={"items": moved}))
        self._announce(events)
        return VisibilityResult(collection=collection_id, action=action, items=moved, transition=recorded)

    def lifecycle(self, collection_id: str | None = None, limit: int = drafts.TRANSITIONS_LISTED) -> Lifecycle:
        return self.drafts.lifecycle(collection_id, limit)

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
        if self.index is not None:
            with contextlib.suppress(IndexUnavailable):  # unwritable: read the files, as before
                return self._indexed_page(collection_ids or self._collection_ids(), bbox, offset, limit)
        hits = [s for cid in (collection_ids or self._collection_ids()) for s in self._iter_items(cid)
                if _item_matches(s, bbox, None, None)]
        hits.sort(key=lambda s: (item_span(s)[0] or _EPOCH, s["id"]), reverse=True)
        page = [{k: v for k, v in s.items() if k != "links"} for s in hits[offset:offset + limit]]
        more = offset + limit < len(hits)
        return ItemPage(items=page, next_token=f"next:{offset + limit}" if more else None)

    def _indexed_page(self, collection_ids: Sequence[str], bbox: Sequence[float] | None, offset: int,
                      limit: int) -> ItemPage:
        """``search_page`` through the index: only the page's item files are read."""
        for cid in collection_ids:
            items_dir = self.store.root / check_id(cid) / "items"
            self.index.reconcile(cid, items_dir, lambda name, cid=cid: self._read(f"{cid}/items/{name}"))
        found = self.index.page(collection_ids, bbox, offset, limit + 1)
        page = []
        for cid, name in found[:limit]:
            stac = self._read(f"{cid}/items/{name}")
            if stac is not None:  # removed since the query: the page is one shorter
                page.append({k: v for k, v in stac.items() if k != "links"})
        return ItemPage(items=page, next_token=f"next:{offset + limit}" if len(found) > limit else None)

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
        self._write_root(collections)

    def _write_root(self, collections: list[str] | None = None) -> None:
        """``catalog.json`` (a child link per collection) and its ``queryables.json``."""
        collections = self._collection_ids() if collections is None else collections
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
