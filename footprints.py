"""The catalog's items as footprints for the dashboard's map (``GET /api/footprints``).

A page of the configured catalog (pgSTAC's ``search()`` and its paging tokens, or the static
catalog), filtered by collection and bbox, as a GeoJSON FeatureCollection: each feature keeps the
item's geometry, bbox and properties, and says for each asset how a browser opens it:

* ``public``: the href as it is (under ``RMH_ASSET_BASE_URL``, or any other http(s) URL);
* ``signed``: a blob of this service's Azure storage account, opened through
  ``GET /api/items/{collection}/{id}/assets/{key}/href`` (function key), which answers a
  short-lived signed URL;
* ``files``: a file of the local store, at the URL the embedded host serves it under ``/files``
  (``cli.py serve``: the local store and the static catalog mirrored below their common parent,
  ``local_files.mirrored_mounts``); a relative href is resolved against its static item file.

A feature's ``body`` names the body of the solar system an item of another one is on (its
``ssys:targets``: its geometry is that body's lon/lat, which the map does not draw on the Earth),
null for the Earth. A feature's ``thumbnail`` names its thumbnail asset (key or role ``thumbnail``), if it has one;
``previews`` the raster assets the preview tiles draw (``previews.previewable_keys``: ``data``
first, then the others, e.g. time steps).
"""
from __future__ import annotations

import math
import os
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import catalogs
import previews
import storage
from models import CollectionId, Text
from settings import CatalogBackend, Settings, StorageBackend

MAX_LIMIT = 1000
DEFAULT_LIMIT = 250
FILES_PREFIX = "/files"
THUMBNAIL_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


class FootprintQuery(BaseModel):
    """The query string of ``GET /api/footprints``: ``collection`` (comma-separated ids; all when
    absent), ``bbox`` (``west,south,east,north`` in degrees), ``limit`` (1..1000) and ``token``
    (the previous page's ``next``). Other parameters (``code``, the function key) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    collection: list[CollectionId] = Field(default_factory=list, max_length=100)
    bbox: tuple[float, float, float, float] | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    token: Text | None = Field(None, min_length=1, max_length=1100)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> "FootprintQuery":
        return cls.model_validate(dict(params))

    @field_validator("collection", "bbox", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("bbox")
    @classmethod
    def _degrees(cls, bbox: tuple[float, float, float, float] | None):
        if bbox is None:
            return None
        west, south, east, north = bbox
        if not all(math.isfinite(v) for v in bbox):
            raise ValueError("bbox values must be finite numbers")
        if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
            raise ValueError("bbox is west,south,east,north in degrees, with -180 <= west <= east <= 180 "
                             "and -90 <= south <= north <= 90 (split a bbox that crosses the antimeridian)")
        return bbox

    @model_validator(mode="after")
    def _distinct(self) -> "FootprintQuery":
        if len(set(self.collection)) != len(self.collection):
            return self.model_copy(update={"collection": list(dict.fromkeys(self.collection))})
        return self


class AssetLinks:
    """How the dashboard opens an asset of an item, for this app's settings and blob store."""

    def __init__(self, config: Settings, store: storage.BlobStore):
        self.config = config
        self.blob_prefix = store.url_prefix() if isinstance(store, storage.AzureBlobStore) else None
        self.storage_dir, self.storage_url = None, None
        if config.storage_backend is StorageBackend.local:
            self.storage_dir = Path(config.storage_local_dir).resolve()
            self.storage_url = local_storage_url(config)
        static_local = config.catalog_backend is CatalogBackend.static and not config.static_catalog_container
        self.catalog_dir = Path(config.static_catalog_dir).resolve() if static_local else None

    def open(self, collection: str, item_id: str, key: str, href: str) -> dict[str, str] | None:
        """``{"kind": "public" | "signed" | "files", "url": ...}``, or None when a browser
        cannot reach the asset (a path outside the served directories)."""
        base = self.config.asset_base_url
        if base and href.startswith(base + "/"):
            return {"kind": "public", "url": href}
        if self.blob_prefix and href.startswith(self.blob_prefix):
            c, i, k = (urllib.parse.quote(part, safe="") for part in (collection, item_id, key))
            return {"kind": "signed", "url": f"items/{c}/{i}/assets/{k}/href"}
        scheme = urllib.parse.urlsplit(href).scheme.lower()
        if scheme in ("http", "https"):
            return {"kind": "public", "url": href}
        if self.storage_dir is None or scheme or not href:
            return None
        path = Path(href)
        if not path.is_absolute():
            if self.catalog_dir is None:
                return None
            # The static catalog's layout: <collection>/items/<id>.json; hrefs relative to it.
            path = self.catalog_dir / collection / "items" / path
        path = Path(os.path.normpath(path))
        if self.storage_dir not in path.parents:
            return None
        relative = path.relative_to(self.storage_dir).as_posix()
        return {"kind": "files", "url": f"{self.storage_url}/{urllib.parse.quote(relative)}"}


def local_storage_url(config: Settings) -> str:
    """The URL path under which the embedded host serves the local store: ``cli.local_mounts``
    mirrors the local store and the static catalog below their common parent under ``/files``
    (``.local/storage`` → ``/files/storage``)."""
    storage_dir = Path(config.storage_local_dir).resolve()
    directories = [storage_dir]
    if config.catalog_backend is CatalogBackend.static and not config.static_catalog_container:
        directories.append(Path(config.static_catalog_dir).resolve())
    common = Path(os.path.commonpath([str(d) for d in directories]))
    relative = storage_dir.relative_to(common).as_posix()
    return f"{FILES_PREFIX}/{relative}" if relative != "." else f"{FILES_PREFIX}/storage"


def thumbnail_key(assets: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The item's thumbnail asset: key ``thumbnail``, else the first with role ``thumbnail``, of a
    browser image type (or of no stated type)."""
    def is_image(asset: Mapping[str, Any]) -> bool:
        media = str(asset.get("type") or "")
        return not media or media.split(";")[0].strip().lower() in THUMBNAIL_TYPES

    if "thumbnail" in assets and is_image(assets["thumbnail"]):
        return "thumbnail"
    return next((key for key, asset in assets.items()
                 if "thumbnail" in (asset.get("roles") or []) and is_image(asset)), None)


def feature(item: Mapping[str, Any], links: AssetLinks) -> dict[str, Any]:
    """An item as the map draws it: geometry, bbox, properties, assets with how to open each."""
    collection, item_id = item.get("collection") or "", item.get("id") or ""
    assets = {}
    for key, asset in (item.get("assets") or {}).items():
        entry = {k: asset[k] for k in ("href", "type", "title", "roles") if k in asset}
        entry["open"] = links.open(collection, item_id, key, str(asset.get("href") or ""))
        assets[key] = entry
    return {"type": "Feature", "id": item_id, "collection": collection, "geometry": item.get("geometry"),
            "bbox": item.get("bbox"), "properties": item.get("properties") or {}, "assets": assets,
            "thumbnail": thumbnail_key(item.get("assets") or {}), "previews": previews.previewable_keys(item),
            "body": previews.body_of(item)}


def footprint_page(catalog, links: AssetLinks, query: FootprintQuery) -> dict[str, Any]:
    """One page of footprints as a GeoJSON FeatureCollection with the next page's token; a
    collection the catalog does not have is ``catalogs.CollectionNotFound``."""
    if query.collection:
        known = set(catalog.collection_ids())
        unknown = [c for c in query.collection if c not in known]
        if unknown:
            raise catalogs.CollectionNotFound(f"the catalog has no collection {', '.join(map(repr, unknown))}")
    page = catalog.search_page(query.collection or None, bbox=query.bbox, limit=query.limit, token=query.token)
    features = [feature(item, links) for item in page.items]
    return {"type": "FeatureCollection", "features": features, "numberReturned": len(features),
            "next": page.next_token}
