"""Benchmark: sync_container of N small COGs in Azurite into pgSTAC on the embedded runtime, next to
a plain single-process script doing the same work (list, read headers, build items, pypgstac load)
in the same run. The last line of stdout is one JSON object with the figures.

    python benchmarks/bench_sync.py [--files 1000] [--chunk-size N] [--repeat 3] [--chunk-sweep 100,500,1000]

Starts its own Azurite and PostgreSQL + pgSTAC on 127.0.0.1 (tests/services.py) unless
AZURITE_CONNECTION_STRING / PGSTAC_DSN are set. Where the time goes: ``ours.cpu_s`` splits the CPU
of the orchestrated run between the host (runtime, HTTP), the activity workers, Azurite and
PostgreSQL; ``task_work_*`` is the activities' own time, ``orchestration_overhead_s`` the wall time
not explained by it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import shutil
import signal
import subprocess
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_bounds  # noqa: E402

log = logging.getLogger("bench_sync")
CONTAINER = "bench-sync"
DRY = "bench-dry"


CACHE = Path(os.environ.get("RMH_BENCH_CACHE", Path.home() / ".cache" / "rmhgeoapi" / "bench-cogs"))


def make_cogs(count: int) -> list[Path]:
    """``count`` small COGs (256x256, 3 bands, deflate, one overview), each somewhere else; kept
    in ``CACHE`` (``RMH_BENCH_CACHE``) between runs (the same bytes every time: seeded)."""
    paths = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = CACHE / f"cog-{i:05d}.tif"
        if path.exists():
            paths.append(path)
            continue
        rng = np.random.default_rng(i)
        west, south = -170 + (i % 300) * 1.1, -60 + (i // 300) % 100 * 1.1
        data = (rng.random((3, 256, 256)) * 50 + np.linspace(0, 200, 256)).astype("uint8")
        partial = path.with_suffix(".part")
        with rasterio.open(partial, "w", driver="COG", width=256, height=256, count=3, dtype="uint8",
                           crs="EPSG:4326", transform=from_bounds(west, south, west + 1, south + 1, 256, 256),
                           compress="deflate", overview_count=1, blocksize=128) as dst:
            dst.write(data)
        partial.replace(path)
        paths.append(path)
    return paths


def upload(store, paths: list[Path]) -> None:
    store.create_container(CONTAINER)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: store.upload_from_path(CONTAINER, f"cogs/{p.name}", p), paths))


def baseline(store, dsn: str, collection: str, prefix: str = "") -> dict:
    """The plain script: list, read each header, build its item, then one pypgstac load."""
    import stac_collections
    import stac_ops
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    timings = {}
    start = time.perf_counter()
    blobs = list(store.iter_blobs(CONTAINER, prefix))
    timings["list_s"] = time.perf_counter() - start
    items = []
    for blob in blobs:
        gdal = store.gdal_read_path(CONTAINER, blob.name)
        item = stac_ops.item_from_raster(gdal.path, container=CONTAINER, blob_name=blob.name,
                                         collection_id=collection, source_etag=blob.etag,
                                         source_last_modified=blob.last_modified, data_size=blob.size,
                                         data_href=store.url(CONTAINER, blob.name), gdal_config=gdal.config)
        items.append(item.to_dict(include_self_link=False, transform_hrefs=False))
    timings["items_s"] = time.perf_counter() - start - timings["list_s"]
    load_start = time.perf_counter()
    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        loader.load_collections(iter([stac_collections.collection_for_container(CONTAINER, collection_id=collection)
                                      .to_dict(include_self_link=False, transform_hrefs=False)]),
                                insert_mode=Methods.upsert)
        loader.load_items(iter(items), insert_mode=Methods.upsert)
    timings["load_s"] = time.perf_counter() - load_start
    timings["wall_s"] = time.perf_counter() - start
    return {"items": len(items), **{k: round(v, 3) for k, v in timings.items()}}


def ours(files: int, chunk_size: int | None, state: Path, pool: str, workers: int | None,
         collection: str, *, progress: bool = True, threads: int = 1, prefix: str = "",
         dry_run: bool = False, memory: dict | None = None, extra: dict | None = None) -> dict:
    """sync_container through POST /api/jobs on the embedded runtime, followed to the end every
    0.25 s as ``cli.py run`` does: through ``GET /api/jobs/{id}`` (progress per file, counted from
    the running chunks' histories), or with ``progress=False`` through the SDK's status URL
    (the job's own status only: progress per chunk), the reference for what progress costs."""
    from local_runtime import LocalRuntime

    body = {"container": CONTAINER, "collection": collection, "prefix": prefix, "dry_run": dry_run,
            **({"chunk_size": chunk_size} if chunk_size else {}), **(extra or {})}
    with LocalRuntime("function_app:app", db_path=state / f"hub-{collection}.sqlite", port=0,
                      run_timers=False, activity_pool=pool, max_activity_workers=workers,
                      activity_threads=threads) as runtime:
        before = cpu_by_process()
        start = time.perf_counter()
        seen: set[int] = set()
        with peak_rss(memory):
            started = post(f"{runtime.base_url}/api/jobs/sync_container", body)
            status = follow(f"{runtime.base_url}/api/jobs/{started['id']}" if progress
                            else started["statusQueryGetUri"], seen=seen)
        wall = time.perf_counter() - start
        after = cpu_by_process()
        if dry_run:
            return {"status": status["runtimeStatus"], "wall_s": round(wall, 3),
                    "plan": status["output"]["detail"]["plan"]["counts"],
                    "cpu_s": {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}}
        pages = []
        for _ in range(5):
            tasks_start = time.perf_counter()
            get(f"{runtime.base_url}/api/jobs/{started['id']}/tasks?top=100")
            pages.append((time.perf_counter() - tasks_start) * 1000)
        tasks_page_ms = statistics.median(pages)
        jobs_page_ms = {}
        for name, query in (("summaries", ""), ("outputs", "?outputs=true")):
            timings = []
            for _ in range(5):
                jobs_start = time.perf_counter()
                get(f"{runtime.base_url}/api/jobs{query}")
                timings.append((time.perf_counter() - jobs_start) * 1000)
            jobs_page_ms[name] = round(statistics.median(timings), 1)
        tasks = get(f"{runtime.base_url}/api/jobs/{started['id']}/tasks?top=5000")["tasks"][:files]
        workers = runtime.max_activity_workers
        replay = runtime.engine.replay_stats.summary()
        timings = runtime._call(runtime.engine.activity_timings.summary)
        replay["full_chunk_replay"] = runtime._call(full_replays, runtime.engine, started["id"])
    output = status["output"]
    work = [t["work_seconds"] for t in tasks if t.get("work_seconds") is not None]
    busy = sum(work) / workers
    cpu = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}
    return {"status": status["runtimeStatus"], "items": output["done"], "failed": output["failed"],
            "chunk_size": chunk_size or "default", "progress": progress,
            "progress_values_seen": len(seen),
            "wall_s": round(wall, 3), "workers": workers, "tasks": len(tasks),
            "task_work_median_ms": round(statistics.median(work) * 1000, 2) if work else None,
            "task_work_total_s": round(sum(work), 3),
            "orchestration_overhead_s": round(max(0.0, wall - busy), 3),
            "cpu_s": cpu, "cpu_ms_per_file": {k: round(v * 1000 / files, 3) for k, v in cpu.items()},
            "tasks_page_ms": round(tasks_page_ms, 1), "jobs_page_ms": jobs_page_ms,
            # the runtime's record of each activity (local_state.ActivityTimings): scheduled → a
            # worker starts it (p50 / p95 / sum), and a worker idle while a task waited
            "queue_wait_ms": timings.get("queue_wait_ms", {}), "dispatch_gap_ms": timings.get("dispatch_gap_ms", {}),
            "activities": timings.get("activities", 0), "replay": replay}


@contextlib.contextmanager
def peak_rss(into: dict | None):
    """Sample the resident memory of this process (the host) and of its worker processes every
    0.1 s while the body runs; the peaks (MB) go into ``into``."""
    if into is None:
        yield
        return
    stop = threading.Event()
    me = os.getpid()

    def rss(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def sample() -> None:
        while not stop.is_set():
            workers = 0.0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[1]) == me:
                        workers = max(workers, rss(int(pid)))
                except OSError:
                    continue
            into["host_peak_mb"] = round(max(into.get("host_peak_mb", 0.0), rss(me)), 1)
            into["worker_peak_mb"] = round(max(into.get("worker_peak_mb", 0.0), workers), 1)
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def full_replays(engine, job_id: str) -> dict:
    """The cost of replaying each finished chunk's whole history through the SDK once (what its
    last and longest episode costs): median ms, events and microseconds per event. Runs on the
    engine's loop, which is idle once the job has ended."""
    from local_state import Live

    costs = []
    for row in engine.store.query_instances(prefix=f"{job_id}:"):
        live = Live(row.instance_id, row.name, row.execution_id, row.status, row.input,
                    row.created_time, json.loads(row.parent) if row.parent else None)
        live.history = [line for line in engine.store.history(row.instance_id)
                        if '"EventType": 1,' not in line]  # ExecutionCompleted: replay up to it
        engine._invoke(live, [])  # warm (imports, caches) as a long-running host is
        started = time.perf_counter()
        engine._invoke(live, [])
        costs.append((time.perf_counter() - started, len(live.history)))
    if not costs:
        return {}
    seconds = statistics.median(c[0] for c in costs)
    events = statistics.median(c[1] for c in costs)
    return {"chunks": len(costs), "events": events, "ms": round(seconds * 1000, 2),
            "us_per_event": round(seconds / events * 1e6, 2)}


@contextlib.contextmanager
def sampled(out: Path | None):
    """py-spy sampling of this process and its activity workers while the body runs (``--profile``),
    written as collapsed stacks to ``out``; nothing without ``out``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if out is None:
        yield
        return
    proc = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--subprocesses", "--nonblocking",
                             "--rate", "50", "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


SESSIONS: dict[str, int] = {}  # service name → session id (each service runs in its own session)
PARENTS: dict[str, int] = {}  # service name → pid whose live children are its (PostgreSQL's backends)


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by this benchmark's processes, grouped: this host (runtime + HTTP),
    its activity worker processes, and the services it started (``SESSIONS``: Azurite and the
    PostgreSQL postmaster, with their exited children's CPU; ``PARENTS``: the postmaster, whose
    live backends each run in a session of their own), from Linux /proc. Other users' processes
    on the machine (other test runs' Azurite, PostgreSQL) are not counted."""
    groups: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    by_session = {sid: name for name, sid in SESSIONS.items()}
    by_parent = {pid: name for name, pid in PARENTS.items()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid, session = int(stat[1]), int(stat[3])
        group = ("host" if int(pid) == me else "workers" if ppid == me and b"multiprocessing" in cmd
                 else by_session.get(session))
        child = by_parent.get(ppid) if not group else None
        if group or child:
            # utime, stime; for a service's leaders also their reaped children's (PostgreSQL's
            # exited backends); a live child's own only (its parent's figures exclude it)
            ticks = sum(int(x) for x in stat[11:13 if child or group in ("host", "workers") else 15])
            group = group or child
            groups[group] = groups.get(group, 0.0) + ticks / tick
    return groups


def postmaster(port: int) -> tuple[int, int]:
    """``(pid, session)`` of the PostgreSQL server listening on ``port``; its backends are its
    children, each in a session of its own (a postmaster child calls setsid)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"/postgres") and str(port).encode() in cmd:
            return int(pid), int(stat[3])
    return -1, -1


def pg_sessions(dsn: str) -> int:
    """Sessions PostgreSQL has opened so far (each new connection costs the server a backend)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT sum(sessions) FROM pg_stat_database").fetchone()[0])


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def follow(url: str, timeout: float = 1800, interval: float = 0.25, seen: set[int] | None = None) -> dict:
    """Poll a status URL until the job ends; ``seen`` collects the distinct counts of finished
    files that its progress showed while it ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=60) as response:
            status = json.loads(response.read())
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        progress = status.get("customStatus")
        if seen is not None and isinstance(progress, dict) and "done" in progress:
            seen.add(progress["done"] + progress.get("failed", 0))
        time.sleep(interval)
    raise TimeoutError(url)


def _requests(before: dict[str, int], after: dict[str, int], files: int) -> dict:
    """Blob storage requests between two tallies: by method, total, and per file (the data
    plane's transactions; on Azure the task hub's queues and tables come on top)."""
    by_method = {m: after.get(m, 0) - before.get(m, 0) for m in sorted(after) if after.get(m, 0) > before.get(m, 0)}
    total = sum(by_method.values())
    return {"by_method": by_method, "total": total, "per_file": round(total / files, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the app's default chunk size")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; medians are reported")
    parser.add_argument("--chunk-sweep", default="100,500,1000",
                        help="chunk sizes to measure replay cost at (comma list; empty: none)")
    parser.add_argument("--no-progress-cost", action="store_true",
                        help="skip the runs without progress (the reference for its cost)")
    parser.add_argument("--pool", choices=("thread", "process"), default="process",
                        help="activity pool of the embedded runtime (processes: no GIL contention)")
    parser.add_argument("--workers", type=int, default=None, help="activity workers (default: CPU count)")
    parser.add_argument("--threads", type=int, default=None,
                        help="activities at once per worker process (default: cli.py's, as make serve runs)")
    parser.add_argument("--scale", action="store_true",
                        help="the large cases instead (make bench-scale): 1k vs 10k files (linear cost), a "
                             "50,000-blob dry run (peak memory), a real 20,000-file sync, /tasks on it")
    parser.add_argument("--phases", default="linear,sync20k,dry50k",
                        help="with --scale: which of linear, sync20k, dry50k to run (comma-separated; each "
                             "on its own takes minutes, so they can be run one at a time)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the orchestrated run with py-spy into this file (collapsed stacks)")
    args = parser.parse_args()
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if args.phases - SCALE_PHASES or not args.phases:
        parser.error(f"unknown --phases {sorted(args.phases - SCALE_PHASES)}: give {', '.join(sorted(SCALE_PHASES))}")
    if args.threads is None:
        import cli

        args.threads = cli.PROCESS_THREADS
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from services import Azurite, PgStac

    azurite = pg = None
    try:
        conn = os.environ.get("AZURITE_CONNECTION_STRING")
        if not conn:  # our own Azurite logs each request: storage transactions per file
            azurite = Azurite(access_log=True).start()
            conn = azurite.connection_string
        dsn = os.environ.get("PGSTAC_DSN")
        if not dsn:
            pg = PgStac().start()
            dsn = pg.dsn
        if azurite is not None:
            SESSIONS["azurite"] = azurite.proc.pid
        if pg is not None:
            PARENTS["postgres"], SESSIONS["postgres"] = postmaster(pg.port)
        os.environ.update({"RMH_STORAGE_BACKEND": "azure", "RMH_STORAGE_CONNECTION_STRING": conn,
                           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": dsn})
        import activities

        store = activities.blob_store()
        counts = azurite.request_counts if azurite else dict
        if args.scale:
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
                print(json.dumps(scale(args, store, dsn, counts, Path(tmp))))
            return
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            started = time.perf_counter()
            upload(store, make_cogs(args.files))
            prepare_s = time.perf_counter() - started
            scripts, runs, plain = [], [], []
            for k in range(args.repeat):
                before, services_before = counts(), cpu_by_process()
                cpu_before = time.process_time()
                script = baseline(store, dsn, f"baseline-{k}")
                script["cpu_ms_per_file"] = round((time.process_time() - cpu_before) * 1000 / args.files, 3)
                services_after = cpu_by_process()
                script["service_cpu_ms_per_file"] = {  # what the script made Azurite and PostgreSQL spend
                    name: round((services_after.get(name, 0.0) - services_before.get(name, 0.0)) * 1000 / args.files, 3)
                    for name in ("azurite", "postgres")}
                middle = counts()
                script["storage_requests"] = _requests(before, middle, args.files)
                sessions = pg_sessions(dsn)
                with sampled(args.profile if k == 0 else None):
                    run = ours(args.files, args.chunk_size, Path(tmp), args.pool, args.workers, f"ours-{k}",
                               threads=args.threads)
                run["storage_requests"] = _requests(middle, counts(), args.files)
                run["postgres_sessions"] = pg_sessions(dsn) - sessions
                scripts.append(script)
                runs.append(run)
                if not args.no_progress_cost:
                    plain.append(ours(args.files, args.chunk_size, Path(tmp), args.pool, args.workers,
                                      f"plain-{k}", progress=False, threads=args.threads))
            sweep = {}
            for size in [int(x) for x in args.chunk_sweep.split(",") if x.strip()]:
                run = ours(args.files, size, Path(tmp), args.pool, args.workers, f"sweep-{size}",
                       threads=args.threads)
                sweep[str(size)] = {"items_per_s": round(run["items"] / run["wall_s"], 1),
                                    "host_cpu_ms_per_file": run["cpu_ms_per_file"].get("host"),
                                    "episodes_invoked": run["replay"]["invoked"],
                                    "episodes_elided": run["replay"]["elided"],
                                    "replay_s": run["replay"]["seconds"],
                                    "ms_per_invoked_episode": run["replay"]["ms_per_episode"],
                                    "full_chunk_replay": run["replay"]["full_chunk_replay"]}
            validation = validation_cost(store, args.files)
        print(json.dumps(summarize(args, prepare_s, scripts, runs, plain, sweep, validation)))
    finally:
        for service in (azurite, pg):
            if service is not None:
                service.stop()


def upload_copies(store, count: int, distinct: int = 1000) -> None:
    """``count`` COG blobs ``c/00000.tif`` … made of ``distinct`` different files (the work per
    file is the same; generating 20,000 distinct files would take longer than syncing them)."""
    cogs = make_cogs(min(count, distinct))
    store.create_container(CONTAINER)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.upload_from_path(CONTAINER, f"c/{i:05d}.tif", cogs[i % len(cogs)]),
                      range(count)))


SCALE_PHASES = {"linear", "sync20k", "dry50k"}


def scale(args, store, dsn: str, counts, tmp: Path) -> dict:
    """The large cases (``make bench-scale``): cost per file at 1,000 and 10,000 files (host CPU,
    requests: flat within ±20%), a dry run over 50,000 zero-byte blobs with peak memory, a real
    sync of 20,000 small COGs with items/s and peak memory, and ``/tasks?top=100`` on it."""
    started = time.perf_counter()
    phases = set(args.phases)
    result: dict = {"benchmark": "sync_container_scale", "phases": sorted(phases), "threads": args.threads}
    if phases & {"linear", "sync20k"}:
        upload_copies(store, 20_000 if "sync20k" in phases else 10_000)
    if "linear" in phases:
        linear = {}
        for files, prefix in ((1000, "c/00"), (10_000, "c/0")):
            before = counts()
            script = baseline(store, dsn, f"baseline-{files}", prefix)
            middle = counts()
            run = ours(files, args.chunk_size, tmp, args.pool, args.workers, f"ours-{files}", threads=args.threads,
                       prefix=prefix)
            linear[str(files)] = {"script_items_per_s": round(script["items"] / script["wall_s"], 1),
                                  "items_per_s": round(rate(run), 1), "cpu_ms_per_file": run["cpu_ms_per_file"],
                                  "requests_per_file": _requests(middle, counts(), files)["per_file"],
                                  "script_requests_per_file": _requests(before, middle, files)["per_file"]}
            print(json.dumps({"phase": f"linear-{files}", **linear[str(files)]}), file=sys.stderr, flush=True)
        small, large = linear["1000"], linear["10000"]
        result["linear"] = {**linear, "host_cpu_per_file_ratio": round(
            large["cpu_ms_per_file"]["host"] / small["cpu_ms_per_file"]["host"], 3),
            "requests_per_file_ratio": round(large["requests_per_file"] / small["requests_per_file"], 3),
            "target": "0.8 <= ratio <= 1.2"}
    if "sync20k" in phases:
        memory: dict = {}
        run = ours(20_000, args.chunk_size, tmp, args.pool, args.workers, "ours-20000", threads=args.threads,
                   prefix="c/", memory=memory)
        result["sync_20000"] = {"items": run["items"], "failed": run["failed"], "wall_s": run["wall_s"],
                                "items_per_s": round(rate(run), 1), "peak_rss_mb": memory,
                                "cpu_ms_per_file": run["cpu_ms_per_file"], "tasks_top100_ms": run["tasks_page_ms"],
                                "tasks_target_ms": 100}
        print(json.dumps({"phase": "sync-20000", **result["sync_20000"]}), file=sys.stderr, flush=True)
    if "dry50k" in phases:
        store.create_container(DRY)
        with concurrent.futures.ThreadPoolExecutor(10) as pool:  # the client's connection pool holds 10
            list(pool.map(lambda i: store.upload_bytes(DRY, f"d/{i:05d}.tif", b""), range(50_000)))
        memory = {}
        global CONTAINER
        CONTAINER, kept = DRY, CONTAINER
        try:
            dry = ours(50_000, args.chunk_size, tmp, args.pool, args.workers, "dry-50000", threads=args.threads,
                       dry_run=True, memory=memory)
        finally:
            CONTAINER = kept
        result["dry_run_50000"] = {**dry, "peak_rss_mb": memory}
        print(json.dumps({"phase": "dry-50000", **result["dry_run_50000"]}), file=sys.stderr, flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)  # uploads included
    return result


def rate(run: dict) -> float:
    return run["items"] / run["wall_s"]


def median_of(runs: list[dict], *path: str) -> float | None:
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            values.append(value)
    return round(statistics.median(values), 3) if values else None


def summarize(args, prepare_s: float, scripts: list[dict], runs: list[dict], plain: list[dict],
              sweep: dict, validation: dict) -> dict:
    """The figures: medians over the repeats, ratios from runs paired in time (script, ours)."""
    ratios = [rate(o) / rate(s) for s, o in zip(scripts, runs)]
    ratio = statistics.median(ratios)
    ours_requests = median_of(runs, "storage_requests", "per_file")
    script_requests = median_of(scripts, "storage_requests", "per_file")
    result = {
        "benchmark": "sync_container", "files": args.files, "chunk_size": args.chunk_size or "default",
        "repeat": args.repeat, "prepare_s": round(prepare_s, 2),
        "script": {"items_per_s": round(statistics.median(rate(s) for s in scripts), 1),
                   "wall_s": median_of(scripts, "wall_s"), "cpu_ms_per_file": median_of(scripts, "cpu_ms_per_file"),
                   "service_cpu_ms_per_file": {k: median_of(scripts, "service_cpu_ms_per_file", k)
                                               for k in ("azurite", "postgres")},
                   "storage_requests_per_file": script_requests, "runs": scripts},
        "ours": {"items_per_s": round(statistics.median(rate(r) for r in runs), 1), "pool": args.pool,
                 "wall_s": median_of(runs, "wall_s"),
                 "cpu_ms_per_file": {k: median_of(runs, "cpu_ms_per_file", k) for k in ("host", "workers", "azurite", "postgres")},
                 "storage_requests_per_file": ours_requests,
                 "tasks_page_ms": median_of(runs, "tasks_page_ms"), "runs": runs},
        "ratio_ours_vs_script": round(ratio, 3), "ratios": [round(r, 3) for r in ratios],
        "target_ratio": 1.2, "target_met": ratio >= 1.2,
        "requests_per_file_over_script": None if ours_requests is None or script_requests is None
        else round(ours_requests - script_requests, 2),
        "replay_by_chunk_size": sweep, "validation": validation,
    }
    if plain:
        with_progress = statistics.median(rate(r) for r in runs)
        without = statistics.median(rate(r) for r in plain)
        host_with = median_of(runs, "cpu_ms_per_file", "host")
        host_without = median_of(plain, "cpu_ms_per_file", "host")
        result["progress_cost"] = {
            "items_per_s_with": round(with_progress, 1), "items_per_s_without": round(without, 1),
            "slowdown_pct": round(100 * (without - with_progress) / without, 1),
            "progress_values_seen_with": median_of(runs, "progress_values_seen"),
            "progress_values_seen_without": median_of(plain, "progress_values_seen"),
            "host_cpu_ms_per_file_with": host_with, "host_cpu_ms_per_file_without": host_without,
            "target_pct": 5.0}
    return result


def validation_cost(store, files: int) -> dict:
    """What the boundary models cost per file: a chunk's file list validated (FileRef), each
    task dumped (ConvertTask), each outcome validated (TaskOutcome), the chunk's JobResult built,
    dumped and validated again by the parent, as in catalog_chunk; in microseconds per file."""
    from models import ConvertTask, FileRef, JobResult, TaskOutcome

    listed = [FileRef(name=b.name, etag=b.etag, size=b.size, last_modified=b.last_modified).model_dump(mode="json")
              for b in store.iter_blobs(CONTAINER)]
    started = time.perf_counter()
    refs = [FileRef.model_validate(f) for f in listed]
    base = ConvertTask(container=CONTAINER, file=FileRef(name=""), collection="c", stage="s")
    payloads = [base.model_copy(update={"file": f}).model_dump(mode="json") for f in refs]
    outcomes = [TaskOutcome.model_validate({"name": p["file"]["name"], "status": "done", "seconds": 0.01,
                                            "item_id": "x"}) for p in payloads]
    result = JobResult(operation="catalog_chunk")
    result.add(outcomes)
    JobResult.model_validate(result.model_dump(mode="json"))
    seconds = time.perf_counter() - started
    return {"files": len(listed), "us_per_file": round(seconds / max(1, len(listed)) * 1e6, 2)}


if __name__ == "__main__":
    main()
