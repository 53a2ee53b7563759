"""The catalog interface: what every catalog backend offers (``Catalog``), the errors and results
they share, and the item preparation both do before they store anything.

Two backends implement it: ``pgstac_catalog.PgStacCatalog`` (PostgreSQL with pgSTAC) and
``static_catalog.StaticCatalog`` (a static STAC catalog on disk or in a container). Items and
collections come from ``stac_ops`` and ``stac_collections`` (which compose them) and are
validated by ``stac_validation``; the backends only store them.

Never reads the environment; callers pass connections, pools, stores and roots in.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import pystac
from pydantic import BaseModel

from drafts import Lifecycle, Transition, VisibilityResult
from outbox import Outbox
from stac_collections import parse_iso
from stac_ops import ItemValidationError, check_id
from stac_validation import StacValidator


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


class ItemFacts(BaseModel):
    """An item as unpublish sees it (``find_items``): where it is (``draft``: among the drafts),
    where its source is (``rmh:source_container``, ``rmh:source_blob``; a tile's source blob is
    ``<blob>/<tile>``) and the href of each asset."""

    collection: str
    id: str
    draft: bool = False
    source_container: str | None = None
    source_blob: str | None = None
    assets: dict[str, str] = {}


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
    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True,
                     draft: bool = False) -> UpsertResult: ...
    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True, draft: bool = False) -> int: ...
    def flush_staged(self, stage_id: str, *, draft: bool = False) -> UpsertResult: ...
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
    # the lifecycle: unpublish (unpublish.py), drafts (drafts.py), change events (outbox.py)
    def find_items(self, *, collection: str | None = None, ids: Sequence[str] | None = None,
                   source_container: str | None = None, source_blobs: Sequence[str] | None = None,
                   source_prefix: str | None = None) -> list[ItemFacts]: ...
    def count_items(self, collection_id: str) -> int: ...
    def remove_searches(self, collection_id: str) -> int: ...
    def delete_collection(self, collection_id: str) -> bool: ...
    def mark_draft(self, collection_id: str, transition: Transition) -> bool: ...
    def set_visibility(self, action: str, collection_id: str, item_ids: Sequence[str] | None,
                       transition: Transition) -> VisibilityResult: ...
    def lifecycle(self, collection_id: str | None = None, limit: int = 100) -> Lifecycle: ...
    def event_outbox(self) -> Outbox: ...


def _item_dict(item: pystac.Item | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, pystac.Item):
        return item.to_dict(include_self_link=False, transform_hrefs=False)
    return dict(item)


def prepare_items(items: Iterable[pystac.Item | Mapping[str, Any]], validator: StacValidator | None) -> dict[str, dict[str, dict]]:
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
