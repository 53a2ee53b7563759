"""sync_planner: the plan of a sync built as the container is listed. The same plan as the whole
lists give (``stac_ops.plan_sync`` + ``SyncJobPlan.build``), chunks of the listed work written
as they fill, and memory that does not grow with the number of blobs listed (a dry run of 200,000
zero-byte blobs peaked at 627 MB in its worker before)."""
from __future__ import annotations

import datetime as dt
import tracemalloc

import stac_ops
import sync_planner
from models import PLAN_NAMES_SHOWN, ChunkRef, SyncJobPlan, SyncPlanRequest
from storage import BlobInfo

WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def blobs(n: int, *, etag=lambda i: f'"{i}"'):
    for i in range(n):
        name = f"d/{i:07d}.tif" if i % 10 else f"d/{i:07d}.txt"  # a tenth not rasters
        yield BlobInfo(name=name, size=i, etag=etag(i), last_modified=WHEN)


def old_plan(request: SyncPlanRequest, listed: list[BlobInfo], known: dict) -> tuple[SyncJobPlan, list[str]]:
    """What the plan was built as before: every listed blob kept, compared at the end."""
    rasters = [b for b in listed if b.name.endswith(".tif")]
    ignored = [b.name for b in listed if not b.name.endswith(".tif")]
    diff = stac_ops.plan_sync([stac_ops.SourceBlob(container=request.container, blob_name=b.name, etag=b.etag,
                                                   size=b.size, last_modified=b.last_modified) for b in rasters], known)
    from models import FileRef

    work = [FileRef(name=b.blob_name, etag=b.etag or "", size=b.size, last_modified=b.last_modified, kind=k)
            for k, part in (("added", diff.to_add), ("changed", diff.to_update)) for b in part]
    names = {stac_ops.item_id_for_blob(request.container, b.name): b.name for b in rasters}
    return SyncJobPlan.build(request, "col", work, [names[i] for i in diff.unchanged], ignored,
                             diff.to_delete if request.mode == "incremental" else []), [f.name for f in work]


def test_the_plan_is_the_one_the_whole_lists_give_with_chunks_written_as_they_fill():
    listed = list(blobs(2500))
    known = {stac_ops.item_id_for_blob("box", b.name): (b.etag if i % 3 else '"old"')
             for i, b in enumerate(listed[:1800]) if b.name.endswith(".tif")}
    known["box~d/gone.tif"] = '"x"'
    written: dict[int, list] = {}

    def write(index, files):
        written[index] = [f.name for f in files]
        return ChunkRef(container="sys", blob=f"plans/p/chunk-{index:05d}.json", count=len(files))

    for mode in ("incremental", "full"):
        request = SyncPlanRequest(container="box", plan_id="p", chunk_size=100, mode=mode)
        written.clear()
        plan = sync_planner.plan_container(request, "col", iter(listed), known if mode == "incremental" else {}, write)
        expected, work_names = old_plan(request, listed, known if mode == "incremental" else {})
        assert plan.counts == expected.counts, mode
        for kind in ("unchanged", "ignored", "removed"):
            assert getattr(plan, kind) == getattr(expected, kind), (mode, kind)
        assert sorted(plan.added) == sorted(expected.added) and sorted(plan.changed) == sorted(expected.changed)
        assert plan.removed_ids == expected.removed_ids and plan.truncated == expected.truncated
        work = plan.counts["added"] + plan.counts["changed"]
        assert [c.count for c in plan.chunks] == [100] * (work // 100) + ([work % 100] if work % 100 else [])
        assert sorted(n for i in range(len(plan.chunks)) for n in written[i]) == sorted(work_names), mode
    assert plan.counts["ignored"] == 250 and plan.truncated is True


def test_a_dry_run_keeps_counts_and_shown_names_only_however_many_blobs_it_lists():
    request = SyncPlanRequest(container="box", plan_id="p", dry_run=True)

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            plan = sync_planner.plan_container(request, "col", blobs(n), {}, None)
            return tracemalloc.get_traced_memory()[1], plan
        finally:
            tracemalloc.stop()

    small, plan_small = peak(20_000)
    large, plan_large = peak(100_000)
    assert plan_large.counts["added"] == 90_000 and plan_large.chunks == [] and len(plan_large.added) == PLAN_NAMES_SHOWN
    # the old plan kept ~2.5 KB a blob: 250 MB here; what is left (a few MB) is the interpreter's
    # string-interning table (pathlib interns each name's parts), not the plan
    assert large < 10_000_000 and small < 10_000_000, (small, large)
