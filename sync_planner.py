"""A sync's plan built as the container is listed, in memory bounded by a chunk and the names shown.

The plan of a sync held every listed blob three times over (the listing, the diff, the work list,
each as a model) until its end: a dry run of 200,000 zero-byte blobs peaked at 627 MB in its
worker, on the way to gigabytes at a million. Here each listed blob is compared with the catalog's
ETags as it comes, added to the chunk being filled, and the chunk written (or, in a dry run,
counted) when full; only the counts, the first ``PLAN_NAMES_SHOWN`` names of each kind and the ids
of items whose blob is gone are kept (the catalog's ETags, for an incremental sync, are what it
compares with). The plan is what ``SyncJobPlan.build`` made of the whole lists, but for the order
of the work (listing order, not added then changed).

Zarr stores (one source for all the blobs below a marker, ``cube_jobs.listed_sources``) are found
by a first pass over the listing that keeps only the stores' roots; the second pass gathers each
store's blobs (contiguous in name order) while the other blobs go by one at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import cube_jobs
import cubes
from cube_checks import ZARR_MARKERS
from models import PLAN_NAMES_SHOWN, ChunkRef, FileRef, SyncJobPlan, SyncPlanRequest
from raster_names import is_cube_name, is_raster_name
from stac_ops import item_id_for_blob
from storage import BlobInfo

KINDS = ("added", "changed", "removed", "unchanged", "ignored")


class SyncPlanner:
    """Fill a plan source by source (``add``; ``ignore`` for names that are none), then ``finish``
    it. ``track_present``: keep the names listed (``present``), for finding the sources gone."""

    def __init__(self, request: SyncPlanRequest, collection: str, known: Mapping[str, str | None],
                 write_chunk: Callable[[int, list[FileRef]], ChunkRef] | None, *, track_present: bool = False) -> None:
        self.request, self.collection, self.known = request, collection, known
        self.write_chunk = write_chunk
        self.present: set[str] | None = set() if track_present else None
        self.counts = dict.fromkeys(KINDS, 0)
        self.shown: dict[str, list[str]] = {kind: [] for kind in KINDS}
        self.chunk: list[FileRef] = []
        self.chunks: list[ChunkRef] = []

    def _note(self, kind: str, name: str) -> None:
        self.counts[kind] += 1
        if len(self.shown[kind]) < PLAN_NAMES_SHOWN:
            self.shown[kind].append(name)
        if self.present is not None and kind != "removed":
            self.present.add(name)

    def ignore(self, name: str) -> None:
        self._note("ignored", name)

    def add(self, source: FileRef) -> None:
        item_id = item_id_for_blob(self.request.container, source.name)
        known = item_id in self.known
        if known and source.etag and self.known[item_id] == source.etag:
            self._note("unchanged", source.name)
            return
        kind = "changed" if known else "added"
        self._note(kind, source.name)
        self.chunk.append(source.model_copy(update={"kind": kind, "etag": source.etag or ""}))
        if len(self.chunk) >= self.request.chunk_size:
            self._flush()

    def _flush(self) -> None:
        if self.chunk and self.write_chunk is not None:
            self.chunks.append(self.write_chunk(len(self.chunks), self.chunk))
        self.chunk = []

    def finish(self, removed: list[str]) -> SyncJobPlan:
        """The plan, with the ids of the items whose source is gone (``removed``)."""
        self._flush()
        self.counts["removed"], self.shown["removed"] = len(removed), removed[:PLAN_NAMES_SHOWN]
        return SyncJobPlan(collection=self.collection, mode=self.request.mode, dry_run=self.request.dry_run,
                           counts=self.counts, truncated=any(n > PLAN_NAMES_SHOWN for n in self.counts.values()),
                           removed_ids=removed, chunks=self.chunks, **self.shown)


def listed_sources(listing: Callable[[], Iterable[BlobInfo]]) -> Iterator[FileRef | str]:
    """``cube_jobs.listed_sources`` as a stream over two passes of ``listing()``: each raster and
    cube file and each Zarr store (a ``FileRef``), and each name that is none (a ``str``)."""
    candidates = set()
    for blob in listing():
        head, _, leaf = blob.name.rpartition("/")
        if leaf in ZARR_MARKERS:
            candidates.add(head)
    roots = {r for r in cubes.zarr_store_roots([f"{c}/{ZARR_MARKERS[0]}" for c in candidates]) if r}
    root, members = None, []
    for blob in listing():
        parts = blob.name.split("/")
        mine = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in roots), None) \
            if roots else None
        if mine != root and members:
            yield cube_jobs._store_ref(root, members)
            members = []
        root = mine
        if mine is not None:
            members.append(blob)
        elif is_cube_name(blob.name) or is_raster_name(blob.name):
            yield FileRef(name=blob.name, etag=blob.etag, size=blob.size, last_modified=blob.last_modified,
                          form="cube" if is_cube_name(blob.name) else "raster")
        else:
            yield blob.name
    if members:
        yield cube_jobs._store_ref(root, members)


def plan_listing(planner: SyncPlanner, listing: Callable[[], Iterable[BlobInfo]]) -> None:
    """Every source of ``listing()`` into ``planner``."""
    for source in listed_sources(listing):
        if isinstance(source, str):
            planner.ignore(source)
        else:
            planner.add(source)
