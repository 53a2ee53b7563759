"""Benchmark: sync_container of N small COGs in Azurite into pgSTAC on the embedded runtime, next to
a plain single-process script doing the same work (list, read headers, build items, pypgstac load)
in the same run. The last line of stdout is one JSON object with the figures.

    python benchmarks/bench_sync.py [--files 1000] [--chunk-size 100]

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


def make_cogs(folder: Path, count: int) -> list[Path]:
    """``count`` small COGs (256x256, 3 bands, deflate, one overview), each somewhere else."""
    paths = []
    rng = np.random.default_rng(1)
    for i in range(count):
        path = folder / f"cog-{i:05d}.tif"
        west, south = -170 + (i % 300) * 1.1, -60 + (i // 300) * 1.1
        data = (rng.random((3, 256, 256)) * 50 + np.linspace(0, 200, 256)).astype("uint8")
        with rasterio.open(path, "w", driver="COG", width=256, height=256, count=3, dtype="uint8",
                           crs="EPSG:4326", transform=from_bounds(west, south, west + 1, south + 1, 256, 256),
                           compress="deflate", overview_count=1, blocksize=128) as dst:
            dst.write(data)
        paths.append(path)
    return paths


def upload(store, paths: list[Path]) -> None:
    store.create_container(CONTAINER)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: store.upload_from_path(CONTAINER, f"cogs/{p.name}", p), paths))


def baseline(store, dsn: str, collection: str) -> dict:
    """The plain script: list, read each header, build its item, then one pypgstac load."""
    import stac_ops
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    timings = {}
    start = time.perf_counter()
    blobs = list(store.iter_blobs(CONTAINER))
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
        loader.load_collections(iter([stac_ops.collection_for_container(CONTAINER, collection_id=collection)
                                      .to_dict(include_self_link=False, transform_hrefs=False)]),
                                insert_mode=Methods.upsert)
        loader.load_items(iter(items), insert_mode=Methods.upsert)
    timings["load_s"] = time.perf_counter() - load_start
    timings["wall_s"] = time.perf_counter() - start
    return {"items": len(items), **{k: round(v, 3) for k, v in timings.items()}}


def ours(files: int, chunk_size: int, state: Path, pool: str, workers: int | None) -> dict:
    """sync_container through POST /api/jobs on the embedded runtime, followed to the end."""
    from local_runtime import LocalRuntime

    with LocalRuntime("function_app:app", db_path=state / f"hub-{pool}.sqlite", port=0,
                      run_timers=False, activity_pool=pool, max_activity_workers=workers) as runtime:
        start = time.perf_counter()
        started = post(f"{runtime.base_url}/api/jobs/sync_container",
                       {"container": CONTAINER, "collection": "ours", "chunk_size": chunk_size})
        status = follow(started["statusQueryGetUri"])
        wall = time.perf_counter() - start
        tasks_start = time.perf_counter()
        get(f"{runtime.base_url}/api/jobs/{started['id']}/tasks?status=done&top=100&skip=500")
        tasks_page_ms = (time.perf_counter() - tasks_start) * 1000
        tasks = get(f"{runtime.base_url}/api/jobs/{started['id']}/tasks?top=5000")["tasks"]
        workers = runtime.max_activity_workers
        replay = runtime.engine.replay_stats.summary()
    output = status["output"]
    work = [t["work_seconds"] for t in tasks if t.get("work_seconds") is not None]
    busy = sum(work) / workers
    return {"status": status["runtimeStatus"], "items": output["done"], "failed": output["failed"],
            "wall_s": round(wall, 3), "workers": workers, "tasks": len(tasks),
            "task_work_median_ms": round(statistics.median(work) * 1000, 2) if work else None,
            "task_work_total_s": round(sum(work), 3),
            "orchestration_overhead_s": round(max(0.0, wall - busy), 3),
            "tasks_page_ms": round(tasks_page_ms, 1), "replay": replay}


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


def cpu_by_process() -> dict[str, float]:
    """CPU seconds used so far by this machine's processes, grouped: this host (runtime + HTTP),
    its activity worker processes, Azurite, PostgreSQL (Linux /proc)."""
    groups: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        group = ("azurite" if "azurite" in cmd else "postgres" if "postgres" in cmd
                 else "workers" if "multiprocessing" in cmd else "host" if int(pid) == os.getpid() else None)
        if group:
            groups[group] = groups.get(group, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return groups


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def follow(url: str, timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=60) as response:
            status = json.loads(response.read())
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.1)
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
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--pool", choices=("thread", "process"), default="process",
                        help="activity pool of the embedded runtime (processes: no GIL contention)")
    parser.add_argument("--workers", type=int, default=None, help="activity workers (default: CPU count)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the orchestrated run with py-spy into this file (collapsed stacks)")
    args = parser.parse_args()
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
        os.environ.update({"RMH_STORAGE_BACKEND": "azure", "RMH_STORAGE_CONNECTION_STRING": conn,
                           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": dsn})
        import activities

        store = activities.blob_store()
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            started = time.perf_counter()
            upload(store, make_cogs(Path(tmp), args.files))
            prepare_s = time.perf_counter() - started
            requests_before = azurite.request_counts() if azurite else {}
            script = baseline(store, dsn, "baseline")
            requests_script = azurite.request_counts() if azurite else {}
            before = cpu_by_process()
            with sampled(args.profile):
                engine = ours(args.files, args.chunk_size, Path(tmp), args.pool, args.workers)
            after = cpu_by_process()
            engine["cpu_s"] = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}
            if azurite:
                script["storage_requests"] = _requests(requests_before, requests_script, args.files)
                engine["storage_requests"] = _requests(requests_script, azurite.request_counts(), args.files)
        script_rate = script["items"] / script["wall_s"]
        our_rate = engine["items"] / engine["wall_s"]
        result = {
            "benchmark": "sync_container", "files": args.files, "chunk_size": args.chunk_size,
            "prepare_s": round(prepare_s, 2),
            "script": {**script, "items_per_s": round(script_rate, 1)},
            "ours": {**engine, "pool": args.pool, "items_per_s": round(our_rate, 1)},
            "ratio_ours_vs_script": round(our_rate / script_rate, 3),
            "target_ratio": 0.5, "target_met": our_rate / script_rate >= 0.5,
        }
        print(json.dumps(result))
    finally:
        for service in (azurite, pg):
            if service is not None:
                service.stop()


if __name__ == "__main__":
    main()
