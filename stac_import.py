"""STAC made elsewhere, read and rewritten for this catalog.

* **Reading** (``read_sources``): NDJSON exports (one item per line), ItemCollections (a
  FeatureCollection of items), single items, and static catalogs (``catalog.json`` /
  ``collection.json`` with their ``child`` and ``item`` links followed, each link resolved by
  ``href_policy`` so it never leaves the container, this storage or an allow-listed host). What
  cannot be read is a ``SourceFailure`` naming the document and the condition; the rest is read.
* **Items** (``source_item``, ``plan_assets``): an item is migrated to STAC 1.1 (pystac's
  migration), its assets sorted into rasters (GeoTIFF, JPEG 2000: what the conversion path
  takes) and the rest (thumbnails, metadata, anything else: kept as they are), each href
  resolved. A raster href that leads nowhere the import may read fails the item, by name; any
  other href that leads to a host not allow-listed (or another scheme) is kept as written,
  never fetched; a local path or a ``..`` out of the container fails the item whatever the asset.
* **Rewriting** (``imported_item``, ``imported_collection``): hrefs into storage become the
  blobs' public hrefs (with their alternates, ``vsiaz`` on Azure); a converted raster points at
  its COG, the original kept as the asset's ``source`` alternate (alternate-assets); provenance
  in ``rmh:imported_from`` and ``rmh:import_digest`` (``import_digest``: the source item, the
  asset versions, the target and the options: a rerun skips an item whose digest is unchanged).

Reads only through the ``SourceReader`` the caller passes; never the environment, storage or the
network itself.
"""
from __future__ import annotations

import copy
import hashlib
import json
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from pydantic import BaseModel
from pystac import STACError

from href_policy import (BlobLocation, HostNotAllowed, HrefError, HrefPolicy, HrefSchemeRefused, Location,
                         UrlLocation)
from stac_ops import (ALTERNATE_EXT, COG_MEDIA_TYPE, IMPORT_DIGEST, IMPORTED_FROM, STAC_VERSION, InvalidItemId,
                      check_id)

#: The largest JSON document read whole (a catalog, a collection, an item, an ItemCollection).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
#: The longest line of an NDJSON export (one item).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Names read as NDJSON (one JSON item per line).
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".geojsonl", ".ndgeojson")
#: Names read as JSON documents (under a prefix: the others are ignored).
JSON_SUFFIXES = (".json", ".geojson")
#: Media types of the assets converted to COGs (with any parameters: ``image/tiff; application=geotiff``).
RASTER_MEDIA_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")
#: File suffixes of the assets converted to COGs when an asset has no media type.
RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".gtif", ".geotiff", ".cog", ".jp2"})
#: Roles of assets that are never converted, whatever their type (previews, sidecars).
KEPT_ROLES = frozenset({"thumbnail", "overview", "metadata"})
#: Link relations of a source's own structure: dropped (the catalog writes its own).
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "child", "item", "items", "collection",
                             "next", "prev", "previous", "first", "last"})


class StacImportError(Exception):
    """Base class of the import's own conditions."""


class NotStac(StacImportError):
    """A document that is not JSON, or not a STAC item, ItemCollection, catalog or collection."""


class DocumentTooLarge(StacImportError):
    """A document (or an NDJSON line) above the size an import reads."""


class InvalidSourceItem(StacImportError):
    """A source item that cannot be migrated or has no usable id."""


class DuplicateItem(StacImportError):
    """A second source item with the id of one already read for the same collection."""


class AssetTooLarge(StacImportError):
    """A raster asset above one task's pixel budget (RMH_MAX_PIXELS_PER_TASK)."""


class DocumentUnavailable(StacImportError):
    """A document named by the request or a link that does not exist or could not be fetched."""


# ----------------------------------------------------------------------------------- sources


class SourceItem(BaseModel):
    """One item as read: where from (``location``, for people), the base its relative hrefs
    resolve against (``base``, a ``str()`` of a Location), its source collection id."""

    name: str
    location: str
    base: str
    item: dict[str, Any]
    collection: str | None = None


class SourceCollection(BaseModel):
    """A collection document of the source, by its id."""

    id: str
    location: str
    stac: dict[str, Any]


class SourceFailure(BaseModel):
    """A document or link that could not be read: its name, the condition and why."""

    name: str
    error: str
    reason: str


class SourceRead(BaseModel):
    """What ``read_sources`` found."""

    items: list[SourceItem] = []
    collections: dict[str, SourceCollection] = {}
    failures: list[SourceFailure] = []
    documents: int = 0
    ignored: list[str] = []


class SourceReader(Protocol):
    """How ``read_sources`` reads: a document whole, an NDJSON blob line by line. A document that
    cannot be read is a StacImportError (``DocumentUnavailable``, ``DocumentTooLarge``); faults
    of the service (storage unreachable) propagate as they are."""

    def read(self, location: Location) -> bytes: ...
    def lines(self, location: BlobLocation) -> Iterable[bytes]: ...


def is_ndjson(name: str) -> bool:
    return name.lower().endswith(NDJSON_SUFFIXES)


def is_source_name(name: str) -> bool:
    """A blob a prefix import reads: NDJSON or JSON by its name."""
    return is_ndjson(name) or name.lower().endswith(JSON_SUFFIXES)


def parse_document(data: bytes, where: str) -> dict[str, Any]:
    """A JSON object of at most MAX_DOCUMENT_BYTES, or NotStac / DocumentTooLarge naming ``where``."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise DocumentTooLarge(f"{where}: {len(data)} bytes; an import reads documents of at most "
                               f"{MAX_DOCUMENT_BYTES} bytes (split it into NDJSON)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise NotStac(f"{where}: not JSON ({str(err)[:120]})") from None
    if not isinstance(doc, dict) or doc.get("type") not in ("Feature", "FeatureCollection", "Catalog", "Collection"):
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise NotStac(f"{where}: not a STAC item, ItemCollection, catalog or collection (type {kind!r})")
    features = doc.get("features") if doc["type"] == "FeatureCollection" else [doc] if doc["type"] == "Feature" else []
    if features and isinstance(features, list) and not is_stac_item(features[0]):
        raise NotStac(f"{where}: GeoJSON without stac_version, not STAC")
    return doc


def is_stac_item(doc: Any) -> bool:
    """A STAC item: a GeoJSON Feature that says which STAC version it is."""
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "stac_version" in doc


def _failure(name: str, err: Exception) -> SourceFailure:
    return SourceFailure(name=name, error=type(err).__name__, reason=str(err)[:1000])


def _item_base(doc: Mapping[str, Any], fallback: Location, policy: HrefPolicy) -> Location:
    """What an inline item's relative hrefs resolve against: its own ``self`` link when that
    leads somewhere the import may read, else the document that holds it."""
    for link in doc.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and isinstance(link.get("href"), str):
            try:
                return policy.resolve(link["href"], fallback)
            except HrefError:
                break
    return fallback


class _Walk:
    """One ``read_sources`` run: a queue of documents and what they gave."""

    def __init__(self, reader: SourceReader, policy: HrefPolicy, follow_links: bool,
                 on_item: Callable[[SourceItem], None] | None):
        self.reader, self.policy, self.follow_links = reader, policy, follow_links
        self.out = SourceRead()
        self.emit = on_item or self.out.items.append
        self.seen: set[str] = set()
        # (document, the collection it is under, a failure to read it is one, its links are followed)
        self.queue: deque[tuple[Location, str | None, bool, bool]] = deque()

    def run(self, roots: Sequence[BlobLocation], *, strict: bool) -> SourceRead:
        self.queue.extend((root, None, strict, self.follow_links) for root in roots)
        while self.queue:
            location, collection, named, follow = self.queue.popleft()
            if str(location) in self.seen:
                continue
            self.seen.add(str(location))
            self.visit(location, collection, named, follow)
        return self.out

    def visit(self, location: Location, collection: str | None, named: bool, follow: bool) -> None:
        if isinstance(location, BlobLocation) and is_ndjson(location.name):
            self.out.documents += 1
            self.ndjson(location)
            return
        try:
            doc = parse_document(self.reader.read(location), str(location))
        except NotStac as err:
            if named:
                self.out.failures.append(_failure(str(location), err))
            else:
                self.out.ignored.append(str(location))
            return
        except StacImportError as err:
            self.out.failures.append(_failure(str(location), err))
            return
        self.out.documents += 1
        kind = doc["type"]
        if kind == "Feature":
            self.item(doc, str(location), location, collection, own=True)
        elif kind == "FeatureCollection":
            features = doc.get("features")
            if not isinstance(features, list):
                self.out.failures.append(_failure(str(location), NotStac(f"{location}: 'features' is not a list")))
                return
            for index, feature in enumerate(features):
                self.item(feature, f"{location}, feature {index}", location, collection, own=False)
        else:
            if kind == "Collection" and isinstance(doc.get("id"), str):
                self.out.collections.setdefault(doc["id"], SourceCollection(id=doc["id"], location=str(location),
                                                                             stac=doc))
                collection = doc["id"]
            if follow:
                self.links(doc, location, collection)

    def ndjson(self, location: BlobLocation) -> None:
        try:
            lines = self.reader.lines(location)
            for number, line in enumerate(lines, start=1):
                self.ndjson_line(location, number, line)
        except StacImportError as err:
            self.out.failures.append(_failure(str(location), err))

    def ndjson_line(self, location: BlobLocation, number: int, line: bytes) -> None:
        if not line.strip():
            return
        where = f"{location}, line {number}"
        if len(line) > MAX_LINE_BYTES:
            self.out.failures.append(_failure(where, DocumentTooLarge(
                f"{where}: {len(line)} bytes; the limit is {MAX_LINE_BYTES}")))
            return
        try:
            doc = json.loads(line)
        except (ValueError, UnicodeDecodeError) as err:
            self.out.failures.append(_failure(where, NotStac(f"{where}: not JSON ({str(err)[:120]})")))
            return
        self.item(doc, where, location, None, own=False)

    def item(self, doc: Any, where: str, holder: Location, collection: str | None, *, own: bool) -> None:
        if not is_stac_item(doc):
            self.out.failures.append(_failure(where, NotStac(f"{where}: not a STAC item (a GeoJSON Feature "
                                                               "with stac_version)")))
            return
        item_id = doc.get("id")
        name = item_id if isinstance(item_id, str) and item_id else where
        base = holder if own else _item_base(doc, holder, self.policy)
        source_collection = doc.get("collection") if isinstance(doc.get("collection"), str) else collection
        self.emit(SourceItem(name=name, location=where, base=str(base), item=doc, collection=source_collection))
        if source_collection and source_collection not in self.out.collections:
            self.collection_link(doc, base)

    def collection_link(self, doc: Mapping[str, Any], base: Location) -> None:
        """An inline item's ``collection`` link, read once per document it names."""
        for link in doc.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "collection" and isinstance(link.get("href"), str):
                try:
                    target = self.policy.resolve(link["href"], base)
                except HrefError:
                    return
                if str(target) not in self.seen:  # read for its metadata only: its links are not followed
                    self.queue.append((target, None, False, False))
                return

    def links(self, doc: Mapping[str, Any], location: Location, collection: str | None) -> None:
        for link in doc.get("links") or []:
            if not isinstance(link, dict) or link.get("rel") not in ("child", "item"):
                continue
            href = link.get("href")
            try:
                target = self.policy.resolve(href if isinstance(href, str) else "", location)
            except HrefError as err:
                self.out.failures.append(_failure(str(href)[:300], err.at(f"{link['rel']} link of {location}")))
                continue
            self.queue.append((target, collection, True, True))


def read_sources(roots: Sequence[BlobLocation], reader: SourceReader, policy: HrefPolicy, *,
                 follow_links: bool = True, strict: bool = True,
                 on_item: Callable[[SourceItem], None] | None = None) -> SourceRead:
    """The items and collections of ``roots``. ``follow_links``: walk a catalog's or collection's
    ``child`` and ``item`` links (once each, however often they are linked). ``strict``: a root
    that is not STAC is a failure (False: it is listed as ignored, as a prefix's other JSON is).
    ``on_item``: called with each item as it is read, instead of collecting them in
    ``SourceRead.items`` (an export of any length then never sits in memory whole). A document
    or link that cannot be read is a ``SourceFailure``; faults of the service propagate."""
    return _Walk(reader, policy, follow_links, on_item).run(roots, strict=strict)


# ------------------------------------------------------------------------------------- items


def migrated(stac: Mapping[str, Any]) -> dict[str, Any]:
    """The document in STAC 1.1 (pystac's migration of older versions and extension URLs)."""
    doc = copy.deepcopy(dict(stac))
    if doc.get("stac_version") == STAC_VERSION:
        return doc
    from pystac.serialization import identify_stac_object, migrate_to_latest

    try:
        return migrate_to_latest(doc, identify_stac_object(doc))
    except (STACError, KeyError, TypeError, ValueError, AttributeError) as err:  # a document pystac cannot place
        raise InvalidSourceItem(f"cannot migrate {doc.get('type')} {str(doc.get('id'))[:100]!r} from STAC "
                                f"{doc.get('stac_version')!r}: {type(err).__name__}: {str(err)[:200]}") from None


def source_item(stac: Mapping[str, Any]) -> dict[str, Any]:
    """A source item migrated to STAC 1.1 with a usable id and an assets object (else InvalidSourceItem)."""
    item = migrated(stac)
    try:
        check_id(item.get("id"))
    except InvalidItemId as err:
        raise InvalidSourceItem(f"item id {str(item.get('id'))[:100]!r}: {err}") from None
    if not isinstance(item.get("assets"), dict) or not all(isinstance(a, dict) for a in item["assets"].values()):
        raise InvalidSourceItem(f"item {item['id']!r} has no assets object")
    return item


def as_member_of(item: Mapping[str, Any], collection: str) -> dict[str, Any]:
    """The item as it is validated before anything is converted: its content as the source wrote
    it, in ``collection``, without the links of the source's own structure (which describe its
    place in another catalog, and go)."""
    links = [link for link in item.get("links") or [] if not (isinstance(link, dict) and link.get("rel") in STRUCTURAL_RELS)]
    return {**item, "collection": collection, "links": [
        {"rel": "collection", "href": "../collection.json", "type": "application/json"}, *links]}


def is_raster_asset(asset: Mapping[str, Any]) -> bool:
    """An asset the conversion path takes: a GeoTIFF or JPEG 2000 by its media type (or, without
    one, by its file name), unless its roles say it is a preview or a sidecar."""
    if KEPT_ROLES & set(asset.get("roles") or ()):
        return False
    media = asset.get("type")
    if isinstance(media, str) and media.strip():
        return media.strip().lower().startswith(RASTER_MEDIA_TYPES)
    href = asset.get("href") if isinstance(asset.get("href"), str) else ""
    return PurePosixPath(urllib.parse.urlsplit(href).path).suffix.lower() in RASTER_SUFFIXES


@dataclass(frozen=True)
class AssetPlan:
    """One asset of an item: where its href leads (None: kept as written, never read)."""

    key: str
    href: str
    raster: bool
    location: Location | None


def plan_assets(item: Mapping[str, Any], base: Location, policy: HrefPolicy) -> list[AssetPlan]:
    """Every asset with where it leads; raises the HrefError (naming the asset) that refuses the item."""
    plans = []
    for key, asset in item["assets"].items():
        raster = is_raster_asset(asset)
        href = asset.get("href")
        try:
            location: Location | None = policy.resolve(href if isinstance(href, str) else "", base)
        except (HostNotAllowed, HrefSchemeRefused) as err:
            if raster:
                raise err.at(f"raster asset {key!r}") from None
            location = None
        except HrefError as err:
            raise err.at(f"asset {key!r}") from None
        plans.append(AssetPlan(key=key, href=str(href), raster=raster, location=location))
    return plans


def import_digest(source: Mapping[str, Any], *, collection: str, options: Mapping[str, Any],
                  asset_versions: Mapping[str, str]) -> str:
    """What an imported item was made from: the source item as read, the version (ETag, or URL)
    of each asset read, the target collection and the conversion options. Equal digests: the
    item and its COGs would come out the same, so a rerun skips it."""
    text = json.dumps({"item": source, "collection": collection, "options": options,
                       "assets": dict(sorted(asset_versions.items()))}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PublicHref:
    """How consumers reach a blob: its href and its alternate hrefs (``{"vsiaz": ...}``)."""

    href: str
    alternates: Mapping[str, str]


Public = Callable[[BlobLocation], PublicHref]


def _alternates(public: PublicHref) -> dict[str, dict[str, str]]:
    return {name: {"href": href} for name, href in public.alternates.items()}


def _kept_asset(asset: Mapping[str, Any], plan: AssetPlan, public: Public, *, cog: bool) -> dict[str, Any]:
    out = dict(asset)
    if isinstance(plan.location, BlobLocation):
        where = public(plan.location)
        out["href"] = where.href
        if where.alternates:
            out["alternate"] = {**(asset.get("alternate") or {}), **_alternates(where)}
    elif isinstance(plan.location, UrlLocation):
        out["href"] = plan.location.url
    if cog:
        out["type"] = COG_MEDIA_TYPE
    return out


def _converted_asset(asset: Mapping[str, Any], plan: AssetPlan, output: BlobLocation, public: Public) -> dict[str, Any]:
    """The asset pointed at its COG; the original (its href, type and file facts) kept as the
    ``source`` alternate. File facts of the original (size, checksum) leave the COG's asset."""
    original: dict[str, Any] = {k: v for k, v in asset.items() if k.startswith("file:") or k == "type"}
    original["title"] = "Original file"
    original["href"] = (public(plan.location).href if isinstance(plan.location, BlobLocation)
                        else plan.location.url if isinstance(plan.location, UrlLocation) else plan.href)
    cog = public(output)
    out = {k: v for k, v in asset.items() if not k.startswith("file:")}
    out.update(href=cog.href, type=COG_MEDIA_TYPE)
    out["roles"] = list(asset.get("roles") or ["data"])
    out["alternate"] = {**(asset.get("alternate") or {}), **_alternates(cog), "source": original}
    return out


def kept_links(links: Iterable[Any], base: Location, policy: HrefPolicy, public: Public) -> list[dict[str, Any]]:
    """The source's links that are not its own structure: relative ones made absolute (dropped
    when they lead nowhere the import may read), absolute ones kept as written (never fetched)."""
    out = []
    for link in links or []:
        if not isinstance(link, dict) or link.get("rel") in STRUCTURAL_RELS or not isinstance(link.get("href"), str):
            continue
        href = link["href"]
        try:
            target = policy.resolve(href, base)
        except (HostNotAllowed, HrefSchemeRefused):
            out.append(dict(link))
            continue
        except HrefError:
            continue
        out.append({**link, "href": public(target).href if isinstance(target, BlobLocation) else target.url})
    return out


def imported_item(item: Mapping[str, Any], *, plans: Sequence[AssetPlan], base: Location, policy: HrefPolicy,
                  collection: str, public: Public, converted: Mapping[str, BlobLocation], cogs: Iterable[str],
                  provenance: str, digest: str) -> dict[str, Any]:
    """The item as this catalog stores it: in ``collection``; rasters converted (``converted``:
    asset key -> its COG) or kept as validated COGs (``cogs``), other assets kept; every href
    into storage public; provenance recorded."""
    out = copy.deepcopy(dict(item))
    out["collection"] = collection
    # STAC 1.1 asks an item naming its collection to link it; the catalogs write the real one.
    out["links"] = [{"rel": "collection", "href": "../collection.json", "type": "application/json"},
                    *kept_links(item.get("links"), base, policy, public)]
    cog_keys = set(cogs)
    by_key = {plan.key: plan for plan in plans}
    assets = {}
    for key, asset in item["assets"].items():
        plan = by_key[key]
        if key in converted:
            assets[key] = _converted_asset(asset, plan, converted[key], public)
        else:
            assets[key] = _kept_asset(asset, plan, public, cog=key in cog_keys)
    out["assets"] = assets
    out["properties"] = {**item.get("properties", {}), IMPORTED_FROM: provenance, IMPORT_DIGEST: digest}
    extensions = list(item.get("stac_extensions") or [])
    if any("alternate" in asset for asset in assets.values()) and ALTERNATE_EXT not in extensions:
        extensions.append(ALTERNATE_EXT)
    out["stac_extensions"] = extensions
    return out


def imported_collection(stac: Mapping[str, Any], *, collection_id: str, base: Location, policy: HrefPolicy,
                        public: Public) -> dict[str, Any]:
    """A source collection as this catalog's ``collection_id``: migrated, its own structure
    dropped, its asset hrefs resolved like an item's non-raster assets (kept when they lead to
    another host; a local path or a ``..`` out of the container refuses it)."""
    out = migrated(stac)
    out["id"] = collection_id
    out["links"] = kept_links(stac.get("links"), base, policy, public)
    assets = out.get("assets")
    if isinstance(assets, dict):
        plans = plan_assets({"assets": {k: {**a, "roles": ["metadata"]} for k, a in assets.items()
                                        if isinstance(a, dict)}}, base, policy)
        out["assets"] = {p.key: _kept_asset(assets[p.key], p, public, cog=False) for p in plans}
    return out


class SeenItems:
    """The item ids read so far per target collection: a second item with an id already read
    for the same collection is a ``DuplicateItem`` naming where the first came from."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], str] = {}

    def check(self, item: SourceItem, collection: str) -> None:
        key = (collection, str(item.item.get("id")))
        if key in self.first:
            raise DuplicateItem(f"item {key[1]!r} of collection {collection!r} was read already from {self.first[key]}")
        self.first[key] = item.location
