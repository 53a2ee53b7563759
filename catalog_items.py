"""The STAC items and collections the activities write: an item of a raster blob (its id, its
assets' hrefs), and a job's collection, created when missing."""
from __future__ import annotations

from typing import Any

import drafts
import stac_collections
import stac_ops
from activity_frame import gdal_config
from clients import blob_store, settings
from models import CollectionSpec, ConvertTask
from storage import BlobStore


def item_for(task: ConvertTask, *, raster: Any, access: dict[str, str], data: tuple[str, str],
             data_size: int | None, item_blob_name: str | None = None, title: str | None = None,
             thumbnail: tuple[str, str] | None = None, pixels: Any = None):
    """The STAC item of ``raster``, whose file is the blob ``data`` (container, name); its id comes
    from the source container and ``item_blob_name`` (default: the source blob), qualified by the
    output container when a conversion writes elsewhere than RMH_OUTPUT_CONTAINER; its ``source``
    asset is the source blob, its ``thumbnail`` the PNG blob ``thumbnail``. Every asset href is
    the blob's public href (``RMH_ASSET_BASE_URL``, else the store's URL), with the store's
    alternate hrefs (``vsiaz`` on Azure). ``pixels``: what validation read of ``raster`` whole
    (``ValidationReport.pixels``), so its statistics are not read twice."""
    store = blob_store()
    blob_name = item_blob_name or task.file.name
    source_href, source_alternates = asset_hrefs(store, task.container, task.file.name)
    data_href, data_alternates = asset_hrefs(store, *data)
    thumbnail_href, thumbnail_alternates = asset_hrefs(store, *thumbnail) if thumbnail else (None, None)
    return stac_ops.item_from_raster(
        raster, container=task.container, blob_name=blob_name, collection_id=task.collection,
        item_id=item_id(task.container, blob_name, task.output_container), title=title,
        source_href=source_href, source_alternates=source_alternates, source_etag=task.file.etag,
        source_last_modified=task.file.last_modified, source_size=task.file.size,
        data_href=data_href, data_alternates=data_alternates, data_size=data_size,
        thumbnail_href=thumbnail_href, thumbnail_alternates=thumbnail_alternates,
        datetime_override=task.datetime, gdal_config=gdal_config(access), pixels=pixels,
    )


def item_id(container: str, blob_name: str, output_container: str | None = None) -> str:
    """The id of the item of a blob (cataloged in place, or converted into ``output_container``):
    qualified by the output container only when that is not RMH_OUTPUT_CONTAINER."""
    elsewhere = output_container if output_container not in (None, settings().output_container) else None
    return stac_ops.item_id_for_blob(container, blob_name, output_container=elsewhere)


def asset_hrefs(store: BlobStore, container: str, name: str) -> tuple[str, dict[str, str]]:
    """A blob's asset href (``<RMH_ASSET_BASE_URL>/<container>/<blob>``, else the store's URL:
    the https blob URL, or a local path the static catalog writes relative to each item) and its
    alternate hrefs (``{"vsiaz": "/vsiaz/<container>/<blob>"}`` on Azure)."""
    return store.public_href(container, name, settings().asset_base_url), store.alternate_hrefs(container, name)


def ensure_collection(cat, spec: CollectionSpec) -> str:
    """The collection's id; created when missing, retitled when the request names a new title or
    description."""
    collection_id = stac_ops.resolve_collection_id(spec.container, spec.collection)
    existing = cat.get_collection(collection_id)
    if existing is None:
        cat.upsert_collection(stac_collections.collection_for_container(
            spec.container, collection_id=collection_id, kind=spec.holds, source=spec.source,
            target_crs=spec.target_crs, title=spec.title, description=spec.description))
        if spec.draft:  # a new collection written as a draft: all of it waits for publish
            mark_new_draft(cat, collection_id, spec.job)
    elif (spec.title or existing.title) != existing.title or (spec.description or existing.description) != existing.description:
        existing.title, existing.description = spec.title or existing.title, spec.description or existing.description
        cat.upsert_collection(existing)
    return collection_id


def mark_new_draft(cat, collection_id: str, job: str | None) -> None:
    """A collection a job has just created as a draft: all of it waits for ``publish``."""
    cat.mark_draft(collection_id, drafts.Transition(
        collection=collection_id, action="draft", items=0, by=f"job {job or '(unknown)'}",
        reason="created as a draft by the job that writes it", job=job))
