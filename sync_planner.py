"""A sync's plan built as the container is listed, in memory bounded by a chunk and the names shown.

The plan of a sync held every listed blob three times over (the listing, the diff, the work list,
each as a model) until its end: a dry run of 200,000 zero-byte blobs peaked at 627 MB in its
worker, on the way to gigabytes at a million. Here each listed blob is compared with the catalog's
ETags as it comes, added to the chunk being filled, and the chunk written (or, in a dry run,
counted) when full; only the counts, the first ``PLAN_NAMES_SHOWN`` names of each kind and the ids
of items whose blob is gone are kept (the catalog's ETags, for an incremental sync, are what it
compares with). The plan is what ``SyncJobPlan.build`` made of the whole lists, but for the order
of the work (listing order, not added then changed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from models import PLAN_NAMES_SHOWN, ChunkRef, FileRef, SyncJobPlan, SyncPlanRequest
from raster_names import is_raster_name
from stac_ops import item_id_for_blob
from storage import BlobInfo

KINDS = ("added", "changed", "removed", "unchanged", "ignored")


class SyncPlanner:
    """Fill a plan blob by blob (``add``), then ``finish`` it."""

    def __init__(self, request: SyncPlanRequest, collection: str, known: Mapping[str, str | None],
                 write_chunk: Callable[[int, list[FileRef]], ChunkRef] | None) -> None:
        self.request, self.collection = request, collection
        self.remaining = dict(known)  # the catalog's items not (yet) seen listed
        self.write_chunk = write_chunk
        self.counts = dict.fromkeys(KINDS, 0)
        self.shown: dict[str, list[str]] = {kind: [] for kind in KINDS}
        self.chunk: list[FileRef] = []
        self.chunks: list[ChunkRef] = []

    def _note(self, kind: str, name: str) -> None:
        self.counts[kind] += 1
        if len(self.shown[kind]) < PLAN_NAMES_SHOWN:
            self.shown[kind].append(name)

    def add(self, blob: BlobInfo) -> None:
        if not is_raster_name(blob.name):
            self._note("ignored", blob.name)
            return
        item_id = item_id_for_blob(self.request.container, blob.name)
        known = item_id in self.remaining
        etag = self.remaining.pop(item_id, None)
        if known and blob.etag is not None and etag == blob.etag:
            self._note("unchanged", blob.name)
            return
        kind = "changed" if known else "added"
        self._note(kind, blob.name)
        self.chunk.append(FileRef(name=blob.name, etag=blob.etag or "", size=blob.size,
                                  last_modified=blob.last_modified, kind=kind))
        if len(self.chunk) >= self.request.chunk_size:
            self._flush()

    def _flush(self) -> None:
        if self.chunk and self.write_chunk is not None:
            self.chunks.append(self.write_chunk(len(self.chunks), self.chunk))
        self.chunk = []

    def finish(self) -> SyncJobPlan:
        self._flush()
        removed = sorted(self.remaining) if self.request.mode == "incremental" else []
        self.counts["removed"], self.shown["removed"] = len(removed), removed[:PLAN_NAMES_SHOWN]
        return SyncJobPlan(collection=self.collection, mode=self.request.mode, dry_run=self.request.dry_run,
                           counts=self.counts, truncated=any(n > PLAN_NAMES_SHOWN for n in self.counts.values()),
                           removed_ids=removed, chunks=self.chunks, **self.shown)


def plan_container(request: SyncPlanRequest, collection: str, blobs: Iterable[BlobInfo],
                   known: Mapping[str, str | None],
                   write_chunk: Callable[[int, list[FileRef]], ChunkRef] | None) -> SyncJobPlan:
    """The plan of a sync over ``blobs`` (a lazy listing) against the catalog's ``known`` ETags;
    ``write_chunk(index, files)`` stores a full chunk (None: a dry run, nothing written)."""
    planner = SyncPlanner(request, collection, known, write_chunk)
    for blob in blobs:
        planner.add(blob)
    return planner.finish()
