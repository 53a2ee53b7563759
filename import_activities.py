"""Activities of importing STAC made elsewhere: stac_import reads and rewrites it, href_policy
decides where its hrefs may lead, remote_fetch reads allow-listed hosts; raster assets go through
``convert_blob`` (the conversion path of cog_conversion), scheduled by the import_chunk
orchestrator."""
from __future__ import annotations

import functools
import json
import re
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import azure.durable_functions as df
import pystac

import geo_ops
import href_policy
import output_names
import plan_chunks
import remote_fetch
import stac_collections
import stac_import
import stac_ops
import stac_validation
from activity_frame import ITEM_ERRORS, Item, activity, gdal_config, judged, limits, scrub
from catalog_items import asset_hrefs, mark_new_draft
from clients import blob_store, catalog, settings
from models import (PLAN_NAMES_SHOWN, AssetConversion, ChunkRef, FileRef, ImportEntry, ImportItemTask, ImportPlan,
                    ImportPlanRequest, ImportPrepared, ImportWriteTask, TaskOutcome)
from storage import BlobNotFound, BlobStore, ContainerNotFound
from work_files import staging_dir

bp = df.Blueprint()

#: Conditions of one imported item (or document): a per-item failure, never retried.
IMPORT_ITEM_ERRORS: tuple[type[Exception], ...] = (*ITEM_ERRORS, stac_import.StacImportError, href_policy.HrefError,
                                                   remote_fetch.RemoteFetchError)


def import_policy() -> href_policy.HrefPolicy:
    """Where an import may read: this storage (its account's blob URLs, RMH_ASSET_BASE_URL, /vsiaz/),
    RMH_IMPORT_ALLOWED_HOSTS, never the system container."""
    config, store = settings(), blob_store()
    own = [config.asset_base_url] if config.asset_base_url else []
    url_prefix = getattr(store, "url_prefix", None)
    if url_prefix is not None:
        own.append(url_prefix())
    return href_policy.HrefPolicy.of(own_prefixes=own, allowed_hosts=config.import_allowed_hosts,
                                     protected_containers=[config.system_container])


class StoreSourceReader:
    """``stac_import.SourceReader`` over storage and the allow-listed hosts."""

    def __init__(self, store: BlobStore, policy: href_policy.HrefPolicy):
        self.store, self.policy = store, policy

    def read(self, location: href_policy.Location) -> bytes:
        limit = stac_import.MAX_DOCUMENT_BYTES
        if isinstance(location, href_policy.UrlLocation):
            try:
                return remote_fetch.fetch_bytes(location.url, allowed=self.policy.url_allowed, max_bytes=limit)
            except remote_fetch.RemoteTooLarge as err:
                raise stac_import.DocumentTooLarge(str(err)) from None
            except remote_fetch.RemoteFetchError as err:
                raise stac_import.DocumentUnavailable(f"{type(err).__name__}: {err}") from None
        try:
            size = self.store.get_properties(location.container, location.name).size
            if size > limit:
                raise stac_import.DocumentTooLarge(f"{location}: {size} bytes; an import reads documents of "
                                                   f"at most {limit} bytes (split it into NDJSON)")
            return self.store.download_bytes(location.container, location.name)
        except (BlobNotFound, ContainerNotFound) as err:
            raise stac_import.DocumentUnavailable(f"{location} does not exist ({err})") from None

    def lines(self, location: href_policy.BlobLocation) -> Iterator[bytes]:
        try:
            with self.store.downloaded(location.container, location.name) as path, open(path, "rb") as handle:
                yield from handle
        except (BlobNotFound, ContainerNotFound) as err:
            raise stac_import.DocumentUnavailable(f"{location} does not exist ({err})") from None


class ImportChunks:
    """The items of a plan written as chunk blobs (``imports/<plan id>/chunk-NNNNN.json`` in the
    system container) as they are read, ``size`` per chunk."""

    def __init__(self, store: BlobStore, system: str, plan_id: str, size: int):
        self.store, self.system, self.plan_id, self.size = store, system, plan_id, size
        self.pending: list[ImportEntry] = []
        self.chunks: list[ChunkRef] = []
        store.create_container(system)

    def add(self, entry: ImportEntry) -> None:
        self.pending.append(entry)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = output_names.plan_chunk_name(self.plan_id, len(self.chunks), folder="imports")
        self.chunks.append(plan_chunks.write_chunk(self.store, self.system, name, self.pending))
        self.pending = []

    @property
    def items(self) -> int:
        return sum(c.count for c in self.chunks) + len(self.pending)


@activity(bp, ImportPlanRequest)
def plan_import(request: ImportPlanRequest) -> ImportPlan:
    """Read the source (one document and its links, or every STAC document under a prefix),
    write its items as chunk blobs, create the collections they go to when missing."""
    store, config, policy = blob_store(), settings(), import_policy()
    if request.blob is not None:
        roots, ignored = [href_policy.BlobLocation(request.container, request.blob)], []
        strict = follow = True
    else:
        roots, ignored = [], []
        for blob in store.iter_blobs(request.container, request.prefix or ""):
            if stac_import.is_source_name(blob.name):
                roots.append(href_policy.BlobLocation(request.container, blob.name))
            else:
                ignored.append(blob.name)
        strict = follow = False
    chunks = ImportChunks(store, config.system_container, request.plan_id, request.chunk_size)
    failures: list[TaskOutcome] = []
    targets: dict[str, None] = {}
    seen = stac_import.SeenItems()

    def add(item: stac_import.SourceItem) -> None:
        collection = request.collection or item.collection or stac_ops.default_collection_id(request.container)
        try:
            stac_ops.check_id(collection)
            seen.check(item, collection)
        except (stac_ops.StacOpsError, stac_import.StacImportError) as err:
            failures.append(TaskOutcome(name=item.name, status="failed", error=type(err).__name__,
                                        reason=scrub(f"{item.location}: {err}")[:1000]))
            return
        targets[collection] = None
        chunks.add(ImportEntry(name=item.name, location=item.location, base=item.base, collection=collection,
                               item=item.item))

    read = stac_import.read_sources(roots, StoreSourceReader(store, policy), policy, follow_links=follow,
                                    strict=strict, on_item=add)
    chunks.flush()
    failures = [TaskOutcome(name=f.name, status="failed", error=f.error, reason=scrub(f.reason))
                for f in read.failures] + failures
    failures += _import_collections(request, list(targets), read.collections, policy)
    unlisted: dict[str, int] = {}  # an export of many bad lines is counted, not carried through history
    for failure in failures[PLAN_NAMES_SHOWN:]:
        unlisted[failure.error or "Error"] = unlisted.get(failure.error or "Error", 0) + 1
    return ImportPlan(chunks=chunks.chunks, items=chunks.items, documents=read.documents, collections=list(targets),
                      failures=failures[:PLAN_NAMES_SHOWN], unlisted_failures=unlisted,
                      ignored=len(ignored) + len(read.ignored),
                      ignored_names=(ignored + read.ignored)[:PLAN_NAMES_SHOWN])


def _import_collections(request: ImportPlanRequest, targets: list[str],
                        sources: dict[str, stac_import.SourceCollection], policy: href_policy.HrefPolicy) -> list[TaskOutcome]:
    """Create each target collection that does not exist: from its source collection.json (for a
    request's ``collection``: the source's only one), else titled after the import. A source
    collection that cannot be brought in is a failure by name; its items still go in, to a
    collection made as if it had none."""
    cat, failures = catalog(), []
    where = f"{request.container}/{request.blob if request.blob is not None else request.prefix or ''}"
    for collection_id in targets:
        if cat.get_collection(collection_id) is not None:
            continue
        source = (sources.get(collection_id) if request.collection is None
                  else next(iter(sources.values())) if len(sources) == 1 else None)
        if source is not None:
            try:
                stac = stac_import.imported_collection(
                    source.stac, collection_id=collection_id, base=href_policy.location_from_text(source.location),
                    policy=policy, public=_public_href)
                cat.upsert_collection(pystac.Collection.from_dict(stac, migrate=False))
                if request.draft:
                    mark_new_draft(cat, collection_id, request.job)
                continue
            except (*IMPORT_ITEM_ERRORS, pystac.STACError, KeyError, TypeError, ValueError) as err:
                # pystac's own errors (a collection it cannot read) are named as NotStac
                error = type(err).__name__ if isinstance(err, IMPORT_ITEM_ERRORS) else "NotStac"
                failures.append(TaskOutcome(name=f"collection {collection_id}", status="failed", error=error,
                                            reason=scrub(f"{source.location}: {err}")[:1000]))
        cat.upsert_collection(stac_collections.collection_for_container(
            request.container, collection_id=collection_id, kind="cogs", source=where,
            title=f"STAC imported from {where} ({collection_id})",
            description=f"Items imported from the STAC in {where}; raster assets converted to Cloud "
                        "Optimized GeoTIFFs, the originals kept as each asset's source alternate."))
        if request.draft:
            mark_new_draft(cat, collection_id, request.job)
    return failures


@functools.lru_cache(maxsize=16)
def _import_chunk(container: str, blob: str) -> tuple[ImportEntry, ...]:
    """The entries of an import chunk blob, read once per process (chunk names are unique per run)."""
    return tuple(ImportEntry.model_validate(e) for e in json.loads(blob_store().download_bytes(container, blob)))


@functools.lru_cache(maxsize=2)
def _import_validator(schema_dir: str | None) -> stac_validation.StacValidator:
    return stac_validation.StacValidator(schema_dir)


def _public_href(location: href_policy.BlobLocation) -> stac_import.PublicHref:
    href, alternates = asset_hrefs(blob_store(), location.container, location.name)
    return stac_import.PublicHref(href=href, alternates=alternates)


def _entry(task: ImportItemTask) -> ImportEntry:
    return _import_chunk(task.chunk.container, task.chunk.blob)[task.index]


def _imported(task: ImportItemTask) -> Item:
    entry = _entry(task)
    return Item(entry.name, entry.location)


def _import_failure(task: ImportItemTask, err: Exception, outcome: TaskOutcome) -> ImportPrepared:
    """A failed item, named by its id with where it was read and the condition."""
    entry = _entry(task)
    reason = scrub(err.reason if isinstance(err, geo_ops.GeoOpsError) else str(err))
    return ImportPrepared(name=entry.name, status="failed", error=outcome.error, location=entry.location,
                          reason=f"{entry.location}: {reason}"[:2000], seconds=outcome.seconds)


def _import_item(bp):
    """A per-item import activity: its failure is an ImportPrepared that says where the item was read."""
    return activity(bp, ImportItemTask, item=_imported, errors=IMPORT_ITEM_ERRORS, failure=_import_failure)


@_import_item(bp)
def prepare_import_item(task: ImportItemTask) -> ImportPrepared:
    """Validate one source item, resolve its hrefs, skip it when its digest is unchanged, fetch
    its allow-listed remote rasters, and judge each raster asset: a valid COG is kept, any other
    is to be converted."""
    return _prepare_import(blob_store(), task, _entry(task))


def _prepare_import(store: BlobStore, task: ImportItemTask, entry: ImportEntry) -> ImportPrepared:
    policy = import_policy()
    item = stac_import.source_item(entry.item)
    schemas = settings().stac_schema_dir
    _import_validator(str(schemas) if schemas else None).validate_item(stac_import.as_member_of(item, entry.collection))
    base = href_policy.location_from_text(entry.base)
    plans = stac_import.plan_assets(item, base, policy)
    rasters = [plan for plan in plans if plan.raster]
    versions = {plan.key: _asset_version(store, plan) for plan in rasters}
    digest = stac_import.import_digest(entry.item, collection=entry.collection, asset_versions=versions,
                                       options=task.options.model_dump(mode="json"))
    prepared = ImportPrepared(name=entry.name, status="done", item_id=item["id"], location=entry.location,
                              digest=digest)
    existing = catalog().get_item(entry.collection, item["id"])
    if existing is not None and existing.properties.get(stac_ops.IMPORT_DIGEST) == digest:
        return prepared.model_copy(update={"status": "skipped"})
    for plan in rasters:
        _prepare_raster(store, plan, prepared)
    return prepared


def _asset_version(store: BlobStore, plan: stac_import.AssetPlan) -> str:
    """What a raster asset is now: its blob's ETag, or (not fetched for this) its URL."""
    if isinstance(plan.location, href_policy.UrlLocation):
        return plan.location.url
    try:
        return store.get_properties(plan.location.container, plan.location.name).etag
    except (BlobNotFound, ContainerNotFound) as err:
        raise BlobNotFound(f"raster asset {plan.key!r}: {err}") from None


def _prepare_raster(store: BlobStore, plan: stac_import.AssetPlan, prepared: ImportPrepared) -> None:
    """Validate one raster asset with the allow-listed drivers: a valid COG is kept, anything
    else is to be converted (within one task's pixel budget)."""
    location, fetched = plan.location, None
    if isinstance(location, href_policy.UrlLocation):
        location, fetched = _fetch_asset(store, prepared.item_id or prepared.name, plan.key, location.url)
    try:
        _judge_raster(store, plan, location, fetched, prepared)
    except BaseException:
        if fetched:  # a copy that is not going to be converted is not kept
            store.delete(location.container, location.name)
        raise


def _judge_raster(store: BlobStore, plan: stac_import.AssetPlan, location: href_policy.BlobLocation,
                  fetched: str | None, prepared: ImportPrepared) -> None:
    props = store.get_properties(location.container, location.name)
    file = FileRef(name=location.name, etag=fetched or props.etag, size=props.size)
    gdal = store.gdal_read_path(location.container, location.name)
    head = functools.partial(store.read_head, location.container, location.name)
    try:
        report = judged(store, location.container, location.name, lambda: geo_ops.validate(
            gdal.path, limits=limits(), gdal_config=gdal_config(gdal.config), head=head))
        report.raise_for_errors()
    except geo_ops.GeoOpsError as err:
        raise type(err)(err.path, f"raster asset {plan.key!r} ({plan.href[:300]}): {err.reason}") from None
    if report.is_cog:
        prepared.cogs.append(plan.key)
        if fetched:  # a remote COG stays where it is; the copy was only for judging it
            store.delete(location.container, location.name)
        return
    pixels = (report.width or 0) * (report.height or 0)
    if pixels > settings().max_pixels_per_task:
        raise stac_import.AssetTooLarge(
            f"raster asset {plan.key!r} ({plan.href[:300]}) is not a COG and has {pixels} pixels, above one "
            f"task's budget ({settings().max_pixels_per_task}, RMH_MAX_PIXELS_PER_TASK): convert it with "
            "cog_conversion or process_tiled_raster first")
    if fetched:
        prepared.fetched[plan.key] = location.name
    prepared.conversions.append(AssetConversion(key=plan.key, container=location.container, file=file))


def _fetch_asset(store: BlobStore, item_id: str, key: str, url: str) -> tuple[href_policy.BlobLocation, str]:
    """An allow-listed remote asset copied into the system container (``imports/remote/<hash of
    the item id and URL>/<name>``: one copy per item, so an item's copy is removed once it is
    written without touching another's), and the SHA-256 of its bytes: its version, so a fetch
    of the same bytes converts nothing again."""
    config, policy = settings(), import_policy()
    leaf = PurePosixPath(urllib.parse.urlsplit(url).path).name
    leaf = re.sub(r"[^A-Za-z0-9._-]", "_", leaf).strip(".") or "asset"
    name = output_names.fetched_asset_name(output_names.digest(item_id + chr(10) + url, 24), leaf[:200])
    with staging_dir("fetch") as tmp:
        local = Path(tmp) / "asset"
        try:
            fetched = remote_fetch.fetch_to_path(url, local, allowed=policy.url_allowed,
                                                 max_bytes=config.import_max_fetch_bytes)
        except remote_fetch.RemoteFetchError as err:
            raise type(err)(f"raster asset {key!r}: {err}") from None
        store.create_container(config.system_container)
        try:
            current = store.get_properties(config.system_container, name).metadata.get(output_names.SHA256_KEY)
        except BlobNotFound:
            current = None
        if current != fetched.sha256:
            store.upload_from_path(config.system_container, name, local, metadata={output_names.SHA256_KEY: fetched.sha256})
    return href_policy.BlobLocation(config.system_container, name), fetched.sha256


@activity(bp, ImportWriteTask, item=lambda write: _imported(write.task), errors=IMPORT_ITEM_ERRORS,
          failure=lambda write, err, outcome: _import_failure(write.task, err, outcome))
def write_import_item(write: ImportWriteTask) -> TaskOutcome:
    """The item rewritten for this catalog (converted assets pointing at their COGs) and staged
    for the chunk's batch write; fetched copies removed once converted."""
    task, prepared = write.task, write.prepared
    entry = _entry(task)
    item = _imported_item(write, entry)
    catalog().stage_items(task.stage, [item], draft=task.draft)
    store = blob_store()
    for staged in prepared.fetched.values():
        store.delete(settings().system_container, staged)
    return TaskOutcome(name=entry.name, status="done", item_id=item["id"])


def _imported_item(write: ImportWriteTask, entry: ImportEntry) -> dict[str, Any]:
    policy = import_policy()
    item = stac_import.source_item(entry.item)
    base = href_policy.location_from_text(entry.base)
    plans = stac_import.plan_assets(item, base, policy)
    converted = {key: href_policy.location_from_text(output) for key, output in write.outputs.items()}
    return stac_import.imported_item(item, plans=plans, base=base, policy=policy, collection=entry.collection,
                                     public=_public_href, converted=converted, cogs=write.prepared.cogs,
                                     provenance=entry.location, digest=write.prepared.digest or "")
