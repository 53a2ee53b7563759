"""Which blob of this service's storage an item's asset names: the way back from an href the
catalog holds to ``(container, blob)``, so a route can read the asset through the same storage
access as the jobs (``storage.BlobStore.gdal_read_path``) and never open a file or URL an href
(or a request) names.

An href is one of this service's when it is
* under ``RMH_ASSET_BASE_URL`` (``<base>/<container>/<blob>``),
* a blob URL of the configured Azure storage account, or
* on the local backend, a path inside the storage directory: absolute (a pgSTAC catalog over
  local storage), or relative to the static catalog's item file
  (``<catalog>/<collection>/items/<id>.json``).
Anything else (another host, a path outside the store) is ``AssetOutsideStorage``.
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import storage
from settings import CatalogBackend, Settings, StorageBackend


class AssetLocationError(Exception):
    """Base class of the errors of resolving an asset href to a blob."""


class AssetOutsideStorage(AssetLocationError):
    """The asset's href names no blob of this service's storage (another host, another path)."""


def _split(relative: str, href: str) -> tuple[str, str]:
    container, _, blob = urllib.parse.unquote(relative).partition("/")
    try:
        return storage.check_container_name(container), storage.check_blob_name(blob)
    except storage.StorageError:
        raise AssetOutsideStorage(f"asset href {href[:200]!r} names no blob of this service's storage") from None


def asset_blob(href: str, *, collection: str, config: Settings, store: storage.BlobStore) -> tuple[str, str]:
    """``(container, blob)`` of an asset href of an item of ``collection``."""
    base = config.asset_base_url
    if base and href.startswith(base + "/"):
        return _split(href[len(base) + 1:].split("?", 1)[0], href)
    if isinstance(store, storage.AzureBlobStore):
        prefix = store.url_prefix()
        if href.startswith(prefix):
            return _split(href[len(prefix):].split("?", 1)[0], href)
        raise AssetOutsideStorage(f"asset href {href[:200]!r} is not a blob of this service's storage account")
    if config.storage_backend is not StorageBackend.local or urllib.parse.urlsplit(href).scheme or not href:
        raise AssetOutsideStorage(f"asset href {href[:200]!r} is not a file of this service's storage")
    root = Path(config.storage_local_dir).resolve()
    path = Path(href)
    if not path.is_absolute():
        if config.catalog_backend is not CatalogBackend.static or config.static_catalog_container:
            raise AssetOutsideStorage(f"relative asset href {href[:200]!r} outside a local static catalog")
        path = Path(config.static_catalog_dir).resolve() / collection / "items" / path
    path = Path(os.path.normpath(path))
    if root not in path.parents:
        raise AssetOutsideStorage(f"asset href {href[:200]!r} is outside the storage directory")
    return _split(urllib.parse.quote(path.relative_to(root).as_posix()), href)
