"""sync_planner: the plan of a sync built as the container is listed. The same plan as the whole
lists give (``cube_jobs.listed_sources`` + ``stac_ops.plan_sync`` + ``SyncJobPlan.build``),
Zarr stores one source each, chunks of the listed work written as they fill, and memory that does
not grow with the number of blobs listed (a dry run of 200,000 zero-byte blobs peaked at 627 MB
in its worker before)."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import cube_jobs
import stac_ops
import sync_planner
from models import PLAN_NAMES_SHOWN, ChunkRef, SyncJobPlan, SyncPlanRequest
from storage import BlobInfo

REPO = Path(__file__).resolve().parents[1]

WHEN = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def blobs(n: int, *, etag=lambda i: f'"{i}"', stores: bool = False):
    """``n`` blobs: a tenth not rasters, a few NetCDF files; with ``stores`` two Zarr stores too
    (one nested in a folder, one with an array's own marker below its root)."""
    names = (f"d/{i:07d}.nc" if i % 97 == 1 else f"d/{i:07d}.tif" if i % 10 else f"d/{i:07d}.txt" for i in range(n))
    if stores:  # in name order after the numbered ones, as a listing gives them
        names = [*names, "d/a.zarr/.zgroup", "d/a.zarr/t/.zarray", "d/a.zarr/t/0.0", "d/a.zarr/t/0.1",
                 "e/b.zarr-notes.tif", "e/b.zarr/x/c/0", "e/b.zarr/zarr.json", "e/b.zarr0.tif"]
    for i, name in enumerate(names):  # lazily: the listing itself takes no memory here
        yield BlobInfo(name=name, size=i, etag=etag(i), last_modified=WHEN)


def plan(request, listing, known, write, removed=(), track=True):
    planner = sync_planner.SyncPlanner(request, "col", known, write, track_present=track)
    sync_planner.plan_listing(planner, listing)
    return planner.finish(list(removed)), planner.present


def old_plan(request: SyncPlanRequest, listed: list[BlobInfo], known: dict) -> tuple[SyncJobPlan, list[str]]:
    """What the plan was built as before: every listed blob kept, compared at the end."""
    sources, ignored = cube_jobs.listed_sources(listed)
    forms = {f.name: f.form for f in sources}
    diff = stac_ops.plan_sync([stac_ops.SourceBlob(container=request.container, blob_name=f.name, etag=f.etag,
                                                   size=f.size, last_modified=f.last_modified) for f in sources], known)
    from models import FileRef

    work = [FileRef(name=b.blob_name, etag=b.etag or "", size=b.size, last_modified=b.last_modified, kind=k,
                    form=forms[b.blob_name])
            for k, part in (("added", diff.to_add), ("changed", diff.to_update)) for b in part]
    names = {stac_ops.item_id_for_blob(request.container, f.name): f.name for f in sources}
    return SyncJobPlan.build(request, "col", work, [names[i] for i in diff.unchanged], ignored, []), work


def test_the_plan_is_the_one_the_whole_lists_give_with_chunks_written_as_they_fill():
    listed = list(blobs(2500, stores=True))
    known = {stac_ops.item_id_for_blob("box", b.name): (b.etag if i % 3 else '"old"')
             for i, b in enumerate(listed[:1800]) if b.name.endswith(".tif")}
    known["box~d/gone.tif"] = '"x"'
    written: dict[int, list] = {}

    def write(index, files):
        written[index] = [f.model_dump(mode="json") for f in files]
        return ChunkRef(container="sys", blob=f"plans/p/chunk-{index:05d}.json", count=len(files))

    for mode in ("incremental", "full"):
        request = SyncPlanRequest(container="box", plan_id="p", chunk_size=100, mode=mode)
        written.clear()
        planned, present = plan(request, lambda: iter(listed), known if mode == "incremental" else {}, write)
        expected, work = old_plan(request, listed, known if mode == "incremental" else {})
        plan_ = planned
        assert plan_.counts == expected.counts, mode
        for kind in ("unchanged", "ignored", "removed"):
            assert sorted(getattr(plan_, kind)) == sorted(getattr(expected, kind)), (mode, kind)
        assert sorted(plan_.added) == sorted(expected.added) and sorted(plan_.changed) == sorted(expected.changed)
        assert plan_.truncated == expected.truncated
        count = plan_.counts["added"] + plan_.counts["changed"]
        assert [c.count for c in plan_.chunks] == [100] * (count // 100) + ([count % 100] if count % 100 else [])
        files = sorted((f for i in range(len(plan_.chunks)) for f in written[i]), key=lambda f: f["name"])
        assert files == sorted((f.model_dump(mode="json") for f in work), key=lambda f: f["name"]), mode
        sources, ignored = cube_jobs.listed_sources(listed)
        assert present == {f.name for f in sources} | set(ignored), mode  # what finds the sources gone
    stores = {f["name"]: f for i in written for f in written[i] if f["form"] == "zarr"}
    assert set(stores) == {"d/a.zarr", "e/b.zarr"} and stores["d/a.zarr"]["size"] > 0
    assert plan_.counts["ignored"] == sum(1 for i in range(2500) if i % 10 == 0 and i % 97 != 1)
    assert plan_.truncated is True


def test_a_dry_run_keeps_counts_and_shown_names_only_however_many_blobs_it_lists():
    """Measured in a fresh interpreter: in a process that has run other tests, the interpreter's
    string-interning table (pathlib interns each name's parts) may resize during the measurement
    and its peak is not the plan's (15.6 MB seen in the full suite against 2 MB alone)."""
    script = textwrap.dedent(f"""
        import sys, tracemalloc
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from test_sync_planner import PLAN_NAMES_SHOWN, SyncPlanRequest, blobs, plan
        request = SyncPlanRequest(container="box", plan_id="p", dry_run=True)
        for n in (20_000, 100_000):
            tracemalloc.start()
            planned, _ = plan(request, lambda: blobs(n), {{}}, None, track=False)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(n, peak, planned.counts["added"], len(planned.chunks), len(planned.added))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {int(n): (int(peak), int(added), int(chunks), int(shown))
            for n, peak, added, chunks, shown in (line.split() for line in done.stdout.splitlines())}
    small, large = rows[20_000][0], rows[100_000][0]
    assert rows[100_000][1:] == (sum(1 for i in range(100_000) if i % 10 or i % 97 == 1), 0, PLAN_NAMES_SHOWN)
    # the old plan kept ~2.5 KB a blob: 250 MB here; what is left (a few MB) is the interpreter's
    # string-interning table (pathlib interns each name's parts), not the plan
    assert large < 10_000_000 and small < 10_000_000, (small, large)
