"""Unpublish: remove what the service published for a set of sources, items or a collection, and
only that.

What the service wrote says so: items carry their source (``rmh:source_container``,
``rmh:source_blob``; a tile's is ``<blob>/<tile>``) and output blobs carry ``rmh_*`` metadata
(``rmh_source``: ``<container>/<blob>``, see ``output_names.py``). A plan is a list of *output
groups*, one per source (or per item, when items are named): the group's items (tile items
included), and its output blobs: COGs, tiles, thumbnails, the mosaic VRT. A blob is taken only
when its metadata says the service wrote it, and never from a container an item names as its
source: a data team's blob is never removed.

* **sources** (``blobs`` or a ``prefix`` in ``container``): every item of those sources (in one
  ``collection`` or all) and every output blob whose ``rmh_source`` is one of them, found under
  the source's stem in the output containers (catalogued or not: a ``catalog: false`` conversion
  is removed too). A deleted source's whole output goes this way (sync and blob events).
* **items** (ids in ``collection``): those items, and the outputs their assets point at.
* **a whole collection**: its items grouped by source, the outputs their assets point at (and a
  tiled source's mosaic), then the collection itself and its registered searches.

``remove_group`` deletes a group's blobs first, then its items (each with its ``deleted``
event), so a group that failed on a blob keeps its items and is planned again, whole, by a rerun.
Plain Python on a catalog and a store; never reads the environment.
"""
from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

import output_names
from catalogs import Catalog, ItemFacts
from storage import BlobStore, ContainerNotFound, StorageError


class UnpublishError(Exception):
    """Base class of the errors of unpublishing."""


class OutputNotRemoved(UnpublishError):
    """An output blob could not be deleted (the reason names it); the group's items are kept."""


class ItemRef(BaseModel):
    collection: str
    id: str


class OutputBlob(BaseModel):
    container: str
    blob: str

    @property
    def path(self) -> str:
        return f"{self.container}/{self.blob}"


class OutputGroup(BaseModel):
    """What one task removes: a source's (or an item's) items and output blobs."""

    name: str
    items: list[ItemRef] = []
    blobs: list[OutputBlob] = []


class Selection(BaseModel):
    """What to unpublish (``models.UnpublishRequest`` without the job's own fields)."""

    container: str
    collection: str | None = None
    items: list[str] | None = None
    blobs: list[str] | None = None
    prefix: str | None = None
    entire_collection: bool = False


# ----------------------------------------------------------------------------------- sources

def parents(blob: str) -> list[str]:
    """``a/b/c`` → ``["a/b", "a"]``: the blobs a tile item's ``<blob>/<tile>`` may belong to."""
    parts = blob.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


def source_of(item: ItemFacts) -> str | None:
    """The source blob of an item: its ``rmh:source_blob``, or for a tile item (whose
    ``rmh:source_blob`` is ``<blob>/<tile>``) the blob its ``source`` asset points at."""
    if not item.source_container or not item.source_blob:
        return None
    href = urllib.parse.unquote(item.assets.get("source", ""))
    if not href:
        return item.source_blob
    for candidate in [item.source_blob, *parents(item.source_blob)]:
        if href.endswith(f"/{item.source_container}/{candidate}") or href == f"{item.source_container}/{candidate}":
            return candidate
    return item.source_blob


def selected(source: str | None, selection: Selection) -> bool:
    if source is None:
        return False
    if selection.blobs is not None:
        return source in selection.blobs
    return source.startswith(selection.prefix or "")


def output_containers(items: Iterable[ItemFacts], defaults: Sequence[str]) -> list[str]:
    """The containers outputs may be in: the configured and requested ones, and each converted
    item's own (an item id ending ``~~<container>``)."""
    found = list(dict.fromkeys(defaults))
    for item in items:
        if "~~" in item.id:
            found.append(item.id.rsplit("~~", 1)[1])
    return list(dict.fromkeys(found))


# ------------------------------------------------------------------------------------- blobs

def _metadata(store: BlobStore, container: str, blob, name: str) -> dict[str, str] | None:
    """A blob's metadata (listings on Azure do not carry it: then its properties); None when
    there is no such blob."""
    if blob is not None and blob.metadata:
        return blob.metadata
    try:
        return store.get_properties(container, name).metadata
    except StorageError:  # not found, no such container, a name no blob can have
        return None


def _names_in(path: str, container: str) -> list[str]:
    """The blob names an href's path may give in ``container``: what follows a leading
    ``<container>/`` or each ``/<container>/`` (an Azure URL, a base URL, a relative local path)."""
    names = [path[len(container) + 1:]] if path.startswith(f"{container}/") else []
    marker, start = f"/{container}/", 0
    while (at := path.find(marker, start)) >= 0:
        names.append(path[at + len(marker):])
        start = at + 1
    return [name for name in names if name]


def source_outputs(store: BlobStore, container: str, source_container: str, source: str) -> list[OutputBlob]:
    """Every blob in ``container`` written from the source (``rmh_source``): its COG and
    thumbnail (``<stem>.*``), its tiles, their thumbnails and its mosaic (``<stem>/``). A mosaic
    written before mosaics carried ``rmh_source`` goes with the tiles beside it."""
    stem = output_names.output_stem(source_container, source)
    folder = output_names.tiled_folder(source_container, source)  # the stem fitted as written
    cog = output_names.cog_name(source_container, source)
    wanted = output_names.source_ref(source_container, source)
    found, legacy_mosaic = [], None
    # A last segment over 255 bytes was written fitted (folder != stem): look under those names too.
    fitted = (f"{folder}/", cog, output_names.thumbnail_name(cog)) if folder != stem else ()
    for prefix in (f"{stem}.", f"{stem}/", *fitted):
        try:
            listed = list(store.iter_blobs(container, prefix))
        except ContainerNotFound:
            return []
        for blob in listed:
            metadata = _metadata(store, container, blob, blob.name) or {}
            if metadata.get(output_names.SOURCE_KEY) == wanted:
                found.append(OutputBlob(container=container, blob=blob.name))
            elif blob.name == f"{folder}/mosaic.vrt" and not output_names.written_by_us(metadata):
                legacy_mosaic = OutputBlob(container=container, blob=blob.name)
    if legacy_mosaic is not None and any(b.blob.startswith(f"{folder}/tiles/") for b in found):
        found.append(legacy_mosaic)
    return sorted({b.blob: b for b in found}.values(), key=lambda b: b.blob)


def prefix_outputs(store: BlobStore, container: str, source_container: str, prefix: str) -> dict[str, list[OutputBlob]]:
    """Blobs in ``container`` written from sources under ``prefix``, by source."""
    wanted = output_names.source_ref(source_container, prefix)
    by_source: dict[str, list[OutputBlob]] = {}
    try:
        listed = list(store.iter_blobs(container, output_names.source_ref(source_container, prefix)))
    except ContainerNotFound:
        return {}
    for blob in listed:
        source = (_metadata(store, container, blob, blob.name) or {}).get(output_names.SOURCE_KEY, "")
        if source.startswith(wanted):
            by_source.setdefault(source.split("/", 1)[1], []).append(OutputBlob(container=container, blob=blob.name))
    return by_source


def referenced_outputs(store: BlobStore, item: ItemFacts, containers: Sequence[str]) -> list[OutputBlob]:
    """The blobs an item's assets point at that the service wrote (``rmh_*`` metadata), in the
    output containers; never one in the item's source container."""
    found: dict[str, OutputBlob] = {}
    for href in item.assets.values():
        path = urllib.parse.unquote(urllib.parse.urlsplit(href).path if "://" in href else href)
        for container in containers:
            if container == item.source_container:
                continue
            for name in _names_in(path, container):
                metadata = _metadata(store, container, None, name)
                if metadata is not None and output_names.written_by_us(metadata):
                    blob = OutputBlob(container=container, blob=name)
                    found[blob.path] = blob
                    break
    return list(found.values())


# -------------------------------------------------------------------------------------- plan

def plan_groups(catalog: Catalog, store: BlobStore, selection: Selection,
                defaults: Sequence[str]) -> list[OutputGroup]:
    """The output groups of a selection (see the module docstring), in name order."""
    if selection.items is not None:
        items = catalog.find_items(collection=selection.collection, ids=selection.items)
        containers = output_containers(items, defaults)
        return sorted((OutputGroup(name=f"{item.collection}/{item.id}", items=[ItemRef(collection=item.collection, id=item.id)],
                                   blobs=referenced_outputs(store, item, containers)) for item in items),
                      key=lambda g: g.name)
    if selection.entire_collection:
        return _collection_groups(catalog, store, selection, defaults)
    return _source_groups(catalog, store, selection, defaults)


def _collection_groups(catalog: Catalog, store: BlobStore, selection: Selection,
                       defaults: Sequence[str]) -> list[OutputGroup]:
    items = catalog.find_items(collection=selection.collection)
    containers = output_containers(items, defaults)
    groups: dict[str, OutputGroup] = {}
    for item in items:
        source = source_of(item)
        name = f"{item.source_container}/{source}" if source else f"{item.collection}/{item.id}"
        group = groups.setdefault(name, OutputGroup(name=name))
        group.items.append(ItemRef(collection=item.collection, id=item.id))
        group.blobs += referenced_outputs(store, item, containers)
        if source and any(b.blob.startswith(output_names.tiled_folder(item.source_container, source) + "/tiles/")
                          for b in group.blobs):
            mosaic = output_names.tiled_mosaic_name(item.source_container, source)
            group.blobs += [OutputBlob(container=b.container, blob=mosaic) for b in group.blobs
                            if b.blob.startswith(mosaic.removesuffix("mosaic.vrt") + "tiles/")
                            and _metadata(store, b.container, None, mosaic) is not None]
    for group in groups.values():
        group.blobs = sorted({b.path: b for b in group.blobs}.values(), key=lambda b: b.path)
    return sorted(groups.values(), key=lambda g: g.name)


def _source_groups(catalog: Catalog, store: BlobStore, selection: Selection,
                   defaults: Sequence[str]) -> list[OutputGroup]:
    items = [item for item in catalog.find_items(
        collection=selection.collection, source_container=selection.container, source_blobs=selection.blobs,
        source_prefix=selection.prefix) if selected(source_of(item), selection)]
    containers = output_containers(items, defaults)
    groups: dict[str, OutputGroup] = {}

    def group(source: str) -> OutputGroup:
        name = output_names.source_ref(selection.container, source)
        return groups.setdefault(name, OutputGroup(name=name))

    for item in items:
        found = group(source_of(item))
        found.items.append(ItemRef(collection=item.collection, id=item.id))
        found.blobs += referenced_outputs(store, item, containers)
    for container in containers:
        if container == selection.container:  # a source container holds the data team's blobs
            continue
        if selection.blobs is not None:
            for source in selection.blobs:
                outputs = source_outputs(store, container, selection.container, source)
                if outputs:
                    group(source).blobs += outputs
        else:
            for source, outputs in prefix_outputs(store, container, selection.container, selection.prefix or "").items():
                group(source).blobs += outputs
                folder = output_names.tiled_folder(selection.container, source)
                if any(b.blob.startswith(f"{folder}/tiles/") for b in outputs):
                    group(source).blobs += [b for b in source_outputs(store, container, selection.container, source)
                                            if b.blob == output_names.tiled_mosaic_name(selection.container, source)]
    for found in groups.values():
        found.blobs = sorted({b.path: b for b in found.blobs}.values(), key=lambda b: b.path)
    return sorted(groups.values(), key=lambda g: g.name)


# ------------------------------------------------------------------------------------ remove

class GroupRemoved(BaseModel):
    """What removing one group did."""

    items: int
    blobs: int


def remove_group(catalog: Catalog, store: BlobStore, group: OutputGroup) -> GroupRemoved:
    """Delete a group's blobs, then its items. A blob that cannot be deleted (for a reason other
    than an outage, which propagates to be retried) fails the group with ``OutputNotRemoved``
    naming it, before any item goes; blobs and items already gone count as nothing."""
    blobs = 0
    for blob in group.blobs:
        try:
            blobs += store.delete(blob.container, blob.blob)
        except (StorageError, OSError) as err:
            raise OutputNotRemoved(f"{blob.path} could not be deleted: {type(err).__name__}: {err}") from None
    items = 0
    by_collection: dict[str, list[str]] = {}
    for item in group.items:
        by_collection.setdefault(item.collection, []).append(item.id)
    for collection, ids in sorted(by_collection.items()):
        items += catalog.delete_items(collection, ids)
    return GroupRemoved(items=items, blobs=blobs)
