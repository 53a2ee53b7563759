"""Benchmark: the scale goals of #26, each a phase run on request; the reference measured in the
same run; the last line of stdout one JSON object with the figures.

    python benchmarks/bench_scale.py --phases cpu,segments,dry,pages,collections [--small 1000]
        [--large 100000] [--pairs 1] [--segment-files 5000] [--dry-blobs 1000000] [--items 10000]
        [--jobs 1000] [--footprints 1000] [--collections 50]

Phases (``make bench-scale PHASES=cpu,pages``):

* ``cpu``: sync_container of ``--small`` and ``--large`` files (Azurite + pgSTAC, bench_sync's
  harness), CPU per file of the host, the workers and PostgreSQL (Azurite's apart: it grows with
  the blobs it holds), the plain script's at the same sizes; ``/tasks?top=100`` and ``/api/jobs``
  on the large job; the time tasks wait between scheduled and done beyond their own work. Keys
  ``cpu_ms_per_file_<small>``, ``cpu_ms_per_file_<large>``, ``cpu_per_file_ratio_<large>_vs_<small>``
  (``1k``, ``100k``…). With ``--backend local`` the files are a local directory store's (hard
  links to ``distinct`` COGs: the bytes of 100,000 files without 22 GB of copies) and the catalog
  the same real pgSTAC: the issue's "run the 100k phase on the local backend too if Azurite's
  growth hides ours" (Azurite's CPU per request grows with the blobs its container holds).
  ``cpu_per_file_vs_script``: ours against the plain script's at ``--small``; with ``--pairs n``
  the two run ``n`` times one after the other and the key is the median of the pairs' ratios
  (``pairs_<small>`` lists them; the ``run_<small>`` reported is the one of median CPU).
* ``segments``: ``--segment-files`` files in chunks of 10 (many chunks at a small size), gathered
  by the job itself (``segment_chunks`` above the chunk count: the code before segments) and in
  segments of 100: the job's host CPU per file before → after.
* ``dry``: a dry-run sync of ``--dry-blobs`` zero-byte blobs on the local backend: seconds, host
  and worker peak RSS (key ``dry_run_<n>``).
* ``collections``: ``--collections`` collections made one by one (two items each, so each has its
  partition): the time to create one (pgSTAC's upsert and our queryables) at 1, 10, 50, 100…
  collections, ours (rows of its own) against the code before (one row per property shared by
  every collection: pgSTAC's trigger maintained every collection's partitions sixteen times),
  each in a database of its own (key ``new_collection_ms_at_<n>``).
* ``pages``: ``/api/footprints?limit=1000`` on a static catalog of ``--items`` items through the
  footprint index, and the reference: the same page read by scanning every item file (the code
  before the index); the same on a real pgSTAC of those items (``footprints_pgstac_limit1000_ms``),
  the reference pgSTAC hydrating the page itself (the code before); the time to first paint in
  Debian's Chromium of the dashboard's job list with ``--jobs`` jobs in the hub and of its map of
  ``--footprints`` footprints (``dashboard_jobs_first_paint_ms``, ``dashboard_footprints_first_paint_ms``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import bench_sync  # noqa: E402  (the sync benchmark's harness: services, CPU by process, peak RSS)
from services import applied_local_env  # noqa: E402

PHASES = {"cpu", "segments", "dry", "pages", "collections"}
PROCESSES = ("host", "workers", "postgres")


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def ours_cpu(run: dict) -> float:
    """Our processes' CPU per file: host + workers + PostgreSQL (Azurite reported apart)."""
    return round(sum(run["cpu_ms_per_file"].get(k, 0.0) for k in PROCESSES), 3)


def cpu_phase(args, store, dsn: str, counts, tmp: Path) -> dict:
    prepare_start = time.perf_counter()
    if args.backend == "local":
        linked_copies(store, args.large)
    else:
        bench_sync.upload_copies(store, args.large)
    prepare_s = time.perf_counter() - prepare_start
    out: dict = {"backend": args.backend, "prepare_s": round(prepare_s, 1)}
    for files in (args.small, args.large):
        prefix = "c/" if files == args.large else f"c/{'0' * (5 - len(str(files - 1)))}"
        if files != args.large and files not in (10, 100, 1000, 10_000):
            raise SystemExit("--small must be 10, 100, 1000 or 10000 (a prefix of the c/00000 names)")
        label = size_label(files)
        pairs = []  # (script, ours) run one after the other: a busy machine weighs on both alike
        for pair in range(args.pairs if files == args.small else 1):
            script_cpu = None
            script = {"items": None}
            if files == args.small or not args.script_small_only:
                before_services, cpu_before = bench_sync.cpu_by_process(), time.process_time()
                script = bench_sync.baseline(store, dsn, f"scale-script-{files}-{pair}", prefix)
                after_services = bench_sync.cpu_by_process()
                script_cpu = ((time.process_time() - cpu_before) * 1000 / files
                              + (after_services.get("postgres", 0) - before_services.get("postgres", 0)) * 1000 / files)
            collection = f"scale-{files}-{pair}"
            run = bench_sync.ours(files, args.chunk_size, tmp, args.pool, args.workers, collection,
                                  threads=args.threads, prefix=prefix)
            figures = {"items": run["items"], "failed": run["failed"],
                       "pgstac_items": pgstac_count(dsn, collection), "wall_s": run["wall_s"],
                       "cpu_ms_per_file": run["cpu_ms_per_file"], "tasks_top100_ms": run["tasks_page_ms"],
                       "jobs_page_ms": run["jobs_page_ms"], "queue_wait_ms": run["queue_wait_ms"],
                       "replay": {k: run["replay"].get(k) for k in ("invoked", "elided", "seconds")},
                       "script_cpu_ms_per_file": round(script_cpu, 3) if script_cpu is not None else None,
                       "script_items": script["items"]}
            print(json.dumps({"phase": f"cpu-{label}", "pair": pair, **figures}), file=sys.stderr, flush=True)
            pairs.append((script_cpu, ours_cpu(run), figures))
        middle = sorted(pairs, key=lambda p: p[1])[(len(pairs) - 1) // 2]  # the run of median CPU
        out[f"cpu_ms_per_file_{label}"] = middle[1]
        out[f"run_{label}"] = middle[2]
        if files == args.small:  # the script ran in every pair there
            out[f"pairs_{label}"] = [{"script": round(s, 3), "ours": o, "ratio": round(o / s, 3)} for s, o, _ in pairs]
            out["cpu_per_file_vs_script"] = round(statistics.median(o / s for s, o, _ in pairs), 3)
    small, large = size_label(args.small), size_label(args.large)
    out[f"cpu_per_file_ratio_{large}_vs_{small}"] = round(
        out[f"cpu_ms_per_file_{large}"] / out[f"cpu_ms_per_file_{small}"], 3)
    out["target"] = "ratio within 0.8..1.2; tasks_top100_ms < 100; cpu_per_file_vs_script <= 1.2"
    return out


def pgstac_count(dsn: str, collection: str) -> int:
    """The items pgSTAC holds in ``collection`` (the exact count after the sync)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s", (collection,)).fetchone()[0]


def linked_copies(store, count: int, distinct: int = 1000) -> None:
    """``count`` blobs ``c/00000.tif`` … in a local directory store: the first ``distinct`` written
    through the store (``bench_sync.upload_copies``), the rest hard links to them and to their
    metadata sidecars (the same bytes; one inode per ``distinct`` file, so the same ETag)."""
    bench_sync.upload_copies(store, min(count, distinct), distinct)
    def paths(i: int) -> tuple[Path, Path]:  # the blob's file and its sidecar, as the store names them
        name = f"c/{i:05d}.tif"
        return store._blob_path(bench_sync.CONTAINER, name), store._meta_path(bench_sync.CONTAINER, name)

    for i in range(distinct, count):
        for source, target in zip(paths(i % distinct), paths(i)):
            if not target.exists():
                os.link(source, target)


def segments_phase(args, store, tmp: Path) -> dict:
    files = args.segment_files
    bench_sync.upload_copies(store, files)
    out: dict = {"files": files, "chunk_size": 10, "chunks": -(-files // 10)}
    for name, segment in (("job_gathers_all", 10_000), ("segments_of_100", None)):
        run = bench_sync.ours(files, 10, tmp, args.pool, args.workers, f"seg-{name}", threads=args.threads,
                              prefix="c/", extra={"segment_chunks": segment} if segment else None)
        out[name] = {"items": run["items"], "failed": run["failed"], "wall_s": run["wall_s"],
                     "host_cpu_ms_per_file": run["cpu_ms_per_file"].get("host"),
                     "replay_s": run["replay"].get("seconds"), "episodes": run["replay"].get("invoked")}
        print(json.dumps({"phase": f"segments-{name}", **out[name]}), file=sys.stderr, flush=True)
    before, after = out["job_gathers_all"]["host_cpu_ms_per_file"], out["segments_of_100"]["host_cpu_ms_per_file"]
    out["host_cpu_after_vs_before"] = round(after / before, 3) if before else None
    return out


@contextlib.contextmanager
def local_backend(tmp: Path):
    """The app's settings pointed at a local directory and a static catalog for the body
    (``services.applied_local_env``, as the tests' local modules do)."""
    with contextlib.contextmanager(applied_local_env)({
            "RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(tmp / "storage"),
            "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(tmp / "catalog"),
            "RMH_TEMP_DIR": str(tmp / "work")}):
        yield tmp / "storage", tmp / "catalog"


def dry_phase(args, tmp: Path) -> dict:
    from local_runtime import LocalRuntime

    n = args.dry_blobs
    with local_backend(tmp / "dry") as (storage_dir, _):
        started = time.perf_counter()
        for d in range(0, n, 1000):  # 1,000 zero-byte files a directory
            folder = storage_dir / "dry" / f"d{d // 1000:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(d, min(n, d + 1000)):
                os.close(os.open(folder / f"{i:07d}.tif", os.O_CREAT | os.O_WRONLY, 0o644))
        prepare_s = time.perf_counter() - started
        memory: dict = {}
        with LocalRuntime("function_app:app", db_path=tmp / "dry-hub.sqlite", port=0, run_timers=False,
                          activity_pool=args.pool, max_activity_workers=args.workers,
                          activity_threads=args.threads) as runtime:
            start = time.perf_counter()
            with bench_sync.peak_rss(memory):
                job = bench_sync.post(f"{runtime.base_url}/api/jobs/sync_container",
                                      {"container": "dry", "dry_run": True})
                status = bench_sync.follow(job["statusQueryGetUri"], timeout=7200, interval=1.0)
            seconds = time.perf_counter() - start
    plan = (status.get("output") or {}).get("detail", {}).get("plan", {}).get("counts")
    result = {"status": status["runtimeStatus"], "blobs": n, "seconds": round(seconds, 1),
              "host_peak_mb": memory.get("host_peak_mb"), "worker_peak_mb": memory.get("worker_peak_mb"),
              "plan": plan, "prepare_s": round(prepare_s, 1), "target_mb": 500}
    print(json.dumps({"phase": f"dry-{size_label(n)}", **result}), file=sys.stderr, flush=True)
    return result


def catalog_items(n: int) -> list[dict]:
    """``n`` small items spread over the globe (1-degree footprints), datetimes over a year."""
    import stac_ops

    base = {"type": "Feature", "stac_version": "1.0.0", "stac_extensions": [], "links": [],
            "assets": {"data": {"href": "https://example.invalid/d.tif", "type": "image/tiff; application=geotiff",
                                "roles": ["data"]}}}
    items = []
    for i in range(n):
        west, south = -180 + (i * 7) % 359, -80 + (i * 13) % 159
        item = copy.deepcopy(base)
        item.update(id=stac_ops.item_id_for_blob("c", f"f/{i:07d}.tif"), collection="pages",
                    bbox=[west, south, west + 1, south + 1],
                    geometry={"type": "Polygon", "coordinates": [[[west, south], [west + 1, south], [west + 1, south + 1],
                                                                  [west, south + 1], [west, south]]]},
                    properties={"datetime": (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
                                             + dt.timedelta(hours=i % 8760)).isoformat().replace("+00:00", "Z")})
        items.append(item)
    return items


def timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def pages_phase(args, tmp: Path) -> dict:
    import stac_collections
    import static_catalog
    from local_runtime import LocalRuntime

    n = args.items
    with local_backend(tmp / "pages") as (_, catalog_dir):
        catalog = static_catalog.StaticCatalog(catalog_dir)
        catalog.upsert_collection(stac_collections.build_collection("pages"))
        started = time.perf_counter()
        items = catalog_items(n)
        for i in range(0, n, 500):
            catalog.upsert_items(items[i:i + 500], validate=False)
        write_s = time.perf_counter() - started
        scan = static_catalog.StaticCatalog(catalog_dir)
        scan.index = None  # the reference: every item file read, as before the index
        world = (-180, -90, 180, 90)
        result = {"items": n, "write_s": round(write_s, 1),
                  "scan_page_1000_ms": timed(lambda: scan.search_page(["pages"], bbox=world, limit=1000), 3),
                  "index_page_1000_ms": timed(lambda: catalog.search_page(["pages"], bbox=world, limit=1000)),
                  "index_page_1000_europe_ms": timed(lambda: catalog.search_page(["pages"], bbox=(-10, 35, 30, 70),
                                                                               limit=1000))}
        with LocalRuntime("function_app:app", db_path=tmp / "pages-hub.sqlite", port=0, run_timers=False) as runtime:
            url = f"{runtime.base_url}/api/footprints?limit=1000"
            first = bench_sync.get(url)
            result["footprints_http_limit1000_ms"] = timed(lambda: bench_sync.get(url))
            result["footprints_returned"] = first["numberReturned"]
    result.update(pgstac_pages(items, tmp))
    result.update(first_paints(items[:args.footprints], args.jobs, tmp))
    result["target_ms"] = 300
    print(json.dumps({"phase": f"pages-{size_label(n)}", **result}), file=sys.stderr, flush=True)
    return result


def pgstac_pages(items: list[dict], tmp: Path) -> dict:
    """The same items in a real pgSTAC (PostgreSQL + pgSTAC as the tests start it, or the one
    ``PGSTAC_DSN`` names): the catalog's page of 1,000 and ``/api/footprints?limit=1000`` over
    HTTP, each the median of five."""
    import psycopg
    from psycopg.types.json import Jsonb

    import pgstac_catalog
    import stac_collections
    from local_runtime import LocalRuntime
    from services import PgStac

    pg = None
    dsn = os.environ.get("PGSTAC_DSN")
    if not dsn:
        pg = PgStac().start()
        dsn = pg.dsn
    try:
        with psycopg.connect(dsn) as conn:
            catalog = pgstac_catalog.PgStacCatalog(conn)
            catalog.upsert_collection(stac_collections.build_collection("pages"))
            for i in range(0, len(items), 1000):
                catalog.upsert_items(items[i:i + 1000], validate=False)
            world = (-180, -90, 180, 90)
            # the reference: the page as pgSTAC hydrates it (the code before, 1.2 ms an item)
            hydrated = {"collections": ["pages"], "bbox": list(world), "limit": 1000, "fields": {"exclude": ["links"]}}
            out = {"pgstac_hydrated_page_1000_ms": timed(lambda: catalog.run_in_transaction(
                       "hydrated page", lambda c: c.execute("SELECT pgstac.search(%s)", (Jsonb(hydrated),)).fetchone()), 3),
                   "pgstac_page_1000_ms": timed(lambda: catalog.search_page(["pages"], bbox=world, limit=1000))}
        with local_backend(tmp / "pages-pgstac"):
            os.environ.update({"RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": dsn})
            try:
                from settings import get_settings

                get_settings.cache_clear()
                with LocalRuntime("function_app:app", db_path=tmp / "pages-pgstac-hub.sqlite", port=0,
                                  run_timers=False) as runtime:
                    url = f"{runtime.base_url}/api/footprints?limit=1000&collection=pages"
                    first = bench_sync.get(url)
                    out["footprints_pgstac_limit1000_ms"] = timed(lambda: bench_sync.get(url))
                    out["footprints_pgstac_returned"] = first["numberReturned"]
            finally:
                os.environ.pop("RMH_PGSTAC_DSN", None)
                get_settings.cache_clear()
    finally:
        if pg is not None:
            pg.stop()
    return out


def shared_row_queryables(conn, collection_id: str) -> None:
    """The reference (the code before): the collection appended to one row per property shared by
    every collection, a statement per property (pgSTAC's statement trigger then maintains the
    partitions of every collection each row names)."""
    import stac_ops
    from psycopg.types.json import Jsonb

    for name, definition in stac_ops.QUERYABLES.items():
        rows = conn.execute("SELECT id, collection_ids, definition FROM pgstac.queryables WHERE name = %s",
                            (name,)).fetchall()
        if any(ids is None or collection_id in ids for _, ids, _ in rows):
            continue
        same = next((row_id for row_id, _, existing in rows if existing == definition), None)
        if same is not None:
            conn.execute("UPDATE pgstac.queryables SET collection_ids = array_append(collection_ids, %s) "
                         "WHERE id = %s", (collection_id, same))
        else:
            conn.execute("INSERT INTO pgstac.queryables (name, definition, collection_ids) VALUES (%s, %s, %s)",
                         (name, Jsonb(definition), [collection_id]))


def collections_phase(args, tmp: Path) -> dict:
    """A catalog of ``--collections`` collections (two items each, so each has its partition),
    made one by one: the time to create a collection (pgSTAC's upsert and our queryables) as the
    catalog grows, ours against the code before, each in a database of its own."""
    import psycopg
    from psycopg.types.json import Jsonb

    import pgstac_catalog
    import pgstac_summaries
    import stac_collections
    from services import PgStac

    count = args.collections
    marks = sorted({m for m in (1, 10, 50, 100, 200, 500, 1000, 2000) if m <= count} | {count})
    items = catalog_items(2)
    out: dict = {"collections": count}
    pg = PgStac().start()
    try:
        for variant, register in (("before", shared_row_queryables), ("after", pgstac_summaries.register_queryables)):
            dsn = pg.create_database(f"collections_{variant}")
            times: dict[str, float] = {}
            started = time.perf_counter()
            with psycopg.connect(dsn) as conn:
                catalog = pgstac_catalog.PgStacCatalog(conn)
                for k in range(1, count + 1):
                    collection = stac_collections.build_collection(f"coll-{k:05d}")
                    body = collection.to_dict(include_self_link=False, transform_hrefs=False)
                    begin = time.perf_counter()
                    catalog.run_in_transaction(f"create {collection.id}", lambda c, b=body: (
                        c.execute("SELECT pgstac.upsert_collection(%s)", (Jsonb(b),)), register(c, b["id"])))
                    if k in marks:
                        times[str(k)] = round((time.perf_counter() - begin) * 1000, 1)
                    catalog.upsert_items([{**item, "collection": collection.id} for item in items], validate=False)
            out[variant] = {"new_collection_ms": times, "total_s": round(time.perf_counter() - started, 1)}
            print(json.dumps({"phase": f"collections-{variant}", **out[variant]}), file=sys.stderr, flush=True)
    finally:
        pg.stop()
    out[f"new_collection_ms_at_{count}"] = {v: out[v]["new_collection_ms"][str(count)] for v in ("before", "after")}
    return out


def first_paints(items: list[dict], jobs: int, tmp: Path, repeat: int = 5) -> dict:
    """Time to first paint in Debian's Chromium (headless, playwright-core as the tests drive it),
    median of ``repeat`` fresh pages: the dashboard's job list with ``jobs`` finished jobs in the
    task hub (hello_world, one greeting each: a hub of many jobs at little cost), and its map
    with ``items`` footprints (a static catalog of those items alone). The page marks
    ``rmh:jobs-painted`` / ``rmh:footprints-painted`` once the frame that shows them has been
    painted; their ``startTime`` is counted from the navigation's start."""
    import concurrent.futures

    import stac_collections
    import static_catalog
    from consumers import Browser
    from local_runtime import LocalRuntime

    out: dict = {"dashboard_jobs_in_hub": jobs, "dashboard_footprints": len(items)}
    with local_backend(tmp / "pages-browser") as (_, catalog_dir):
        catalog = static_catalog.StaticCatalog(catalog_dir)
        catalog.upsert_collection(stac_collections.build_collection("pages"))
        for i in range(0, len(items), 500):
            catalog.upsert_items(items[i:i + 500], validate=False)
        with LocalRuntime("function_app:app", db_path=tmp / "pages-browser-hub.sqlite", port=0,
                          run_timers=False) as runtime:
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                submitted = list(pool.map(lambda i: bench_sync.post(f"{runtime.base_url}/api/jobs/hello_world",
                                                                    {"name": f"p{i}", "count": 1}), range(jobs)))
            for job in submitted:
                bench_sync.follow(job["statusQueryGetUri"], timeout=600, interval=0.2)
            out["dashboard_jobs_create_s"] = round(time.perf_counter() - started, 1)
            shown = min(jobs, 100)
            driver = Browser(log_dir=tmp / "browser").start()
            try:
                out["chromium"] = driver.version
                for key, view, mark, drawn in (
                        ("dashboard_jobs_first_paint_ms", "#/jobs", "rmh:jobs-painted",
                         f"document.querySelectorAll('#jobs-rows tr').length === {shown}"),
                        ("dashboard_footprints_first_paint_ms", "#/map", "rmh:footprints-painted",
                         f"document.querySelectorAll('#map path.footprint').length === {len(items)}")):
                    times = []
                    for _ in range(repeat):
                        with driver.page(f"{runtime.base_url}/api/dashboard{view}", timeout=120,
                                         wait=[{"js": f"performance.getEntriesByName('{mark}').length > 0"}]) as page:
                            page.wait({"js": drawn})
                            times.append(page.evaluate(f"performance.getEntriesByName('{mark}')[0].startTime"))
                    out[key] = round(statistics.median(times), 1)
                    out[key.replace("_ms", "_runs_ms")] = [round(t) for t in times]
            finally:
                driver.stop()
    print(json.dumps({"phase": "pages-chromium", **out}), file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="cpu,segments,dry,pages,collections")
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--segment-files", type=int, default=5000)
    parser.add_argument("--dry-blobs", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in the hub whose list Chromium draws (pages)")
    parser.add_argument("--footprints", type=int, default=1000, help="footprints the map draws in Chromium (pages)")
    parser.add_argument("--collections", type=int, default=50,
                        help="collections: the catalog's size, in collections, when the last one is made")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--script-small-only", action="store_true",
                        help="cpu: run the plain script at --small only (its CPU per file is flat; "
                             "at 100,000 files it adds about 20 minutes)")
    parser.add_argument("--pairs", type=int, default=1,
                        help="cpu: at --small, run the plain script and ours this many times, one after the "
                             "other: cpu_per_file_vs_script is the median of the pairs' ratios")
    parser.add_argument("--backend", choices=("azurite", "local"), default="azurite",
                        help="cpu: the files in Azurite (default) or in a local directory store; pgSTAC both")
    parser.add_argument("--pool", choices=("thread", "process"), default="process")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - PHASES:
        parser.error(f"unknown --phases {sorted(phases - PHASES)}: give {', '.join(sorted(PHASES))}")
    if args.threads is None:
        import cli

        args.threads = cli.PROCESS_THREADS
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result: dict = {"benchmark": "scale", "phases": sorted(phases)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        if phases & {"cpu", "segments"}:
            with services(args.backend, tmp) as (store, dsn, counts):
                if "cpu" in phases:
                    result["cpu"] = cpu_phase(args, store, dsn, counts, tmp)
                    result.update({k: v for k, v in result["cpu"].items() if k.startswith("cpu_")})
                if "segments" in phases:
                    result["segments"] = segments_phase(args, store, tmp)
        if "dry" in phases:
            result[f"dry_run_{size_label(args.dry_blobs)}"] = dry_phase(args, tmp)
        if "pages" in phases:
            result["pages"] = pages_phase(args, tmp)
        if "collections" in phases:
            result["collections"] = collections_phase(args, tmp)
            result.update({k: v for k, v in result["collections"].items() if k.startswith("new_collection_ms_at")})
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


@contextlib.contextmanager
def services(backend: str = "azurite", tmp: Path | None = None):
    """Azurite (or, ``backend="local"``, a local directory store under ``tmp``) and PostgreSQL +
    pgSTAC as bench_sync starts them (or the ones the env names)."""
    from services import Azurite, PgStac

    azurite = pg = None
    saved = {k: os.environ.get(k) for k in ("RMH_STORAGE_BACKEND", "RMH_STORAGE_CONNECTION_STRING",
                                             "RMH_STORAGE_LOCAL_DIR", "RMH_CATALOG_BACKEND", "RMH_PGSTAC_DSN")}
    try:
        conn = os.environ.get("AZURITE_CONNECTION_STRING")
        if backend == "local":
            conn = None
        elif not conn:
            azurite = Azurite(access_log=True).start()
            conn = azurite.connection_string
            bench_sync.SESSIONS["azurite"] = azurite.proc.pid
        dsn = os.environ.get("PGSTAC_DSN")
        if not dsn:
            pg = PgStac().start()
            dsn = pg.dsn
            bench_sync.PARENTS["postgres"], bench_sync.SESSIONS["postgres"] = bench_sync.postmaster(pg.port)
        storage = ({"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(tmp / "storage")}
                   if backend == "local" else
                   {"RMH_STORAGE_BACKEND": "azure", "RMH_STORAGE_CONNECTION_STRING": conn})
        os.environ.update({**storage, "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": dsn})
        from settings import get_settings

        get_settings.cache_clear()
        import activities

        yield activities.blob_store(), dsn, (azurite.request_counts if azurite else dict)
    finally:
        for service in (azurite, pg):
            if service is not None:
                service.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    main()
