"""Benchmark: cog_conversion of N files on the embedded runtime against a shell baseline that runs
``gdal_translate -of COG`` through ``xargs -P <cores>`` with the same compression on the same
inputs, in the same run. The last line of stdout is one JSON object with the figures.

    python benchmarks/bench_convert.py [--files 100] [--runs 5] [--workers N] [--catalog]

Inputs: N GeoTIFFs (striped, deflate, not COGs) cut from the demo's DEM (768 x 768 float32 with
nodata) and from 8-bit RGB imagery rendered from it, alternately. Storage is the embedded
default (a local directory), so both sides read and write local files; the job runs with
``catalog: false`` unless ``--catalog`` (then the static catalog is written too). The runtime
and its activity worker processes are started and warmed up (one hello_world job) before the
clock starts: a deployed app's workers are warm. Runs are paired and interleaved, the order
alternating (shell then ours, ours then shell, ...); the ratio (shell's wall / ours: ours' files
per second against the shell's) is the median of the pairs' ratios (``ratio_median``, goal 1.0).

Where our time goes, per run, from the runtime's own record of each activity (scheduled by its
orchestrator, started and finished in a worker, completed in the history; ``ActivityTimings``):
``queue_wait_ms`` (scheduled → started: mostly tasks waiting for a busy worker, since a chunk
schedules all its files at once), ``dispatch_gap_ms`` (a worker idle while a task waited: the
runtime's dispatch latency), and ``dispatch_overhead_s``, the wall time beyond the activities'
run time spread over the workers, split into the lead (POST → the first activity starts), the
dispatch gaps, other idle worker time in the busy span (a chunk's inspect and convert phases,
a chunk ending), and the tail (the last activity finished → the job seen completed). Also CPU
seconds of the host and of the worker processes against the shell's (all its gdal_translate
processes), the activities' own work time (from ``/tasks``), and a per-stage timing of one
conversion of each kind.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

CONTAINER = "rasters"
PREFIX = "bench/"
TARGET_RATIO = 1.0
#: How often the job's status is polled (the shell's end needs no polling: keep the lag small).
POLL_S = 0.05
#: The same compression on both sides: our default profile's GDAL options, and the overview
#: resampling a conversion with the default resampling (bilinear) uses.
GDAL_OPTIONS = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "OVERVIEW_RESAMPLING": "AVERAGE"}


def make_inputs(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 768 x 768 windows of the demo DEM and of imagery rendered from it."""
    import rasterio
    from rasterio.windows import Window

    import cli
    import raster_factory

    (folder / "in").mkdir(parents=True)
    dem = cli.write_sample_raster(folder / "dem.tif")
    rgb = raster_factory.write_imagery_from_terrain(dem, folder / "rgb.tif")
    size, paths = 768, []
    for i in range(count):
        source = dem if i % 2 == 0 else rgb
        with rasterio.open(source) as ds:
            window = Window((i * 97) % (ds.width - size), (i * 53) % (ds.height - size), size, size)
            profile = {**ds.profile, "width": size, "height": size, "tiled": False,
                       "blockysize": 16, "compress": "deflate",
                       "transform": ds.window_transform(window)}
            profile.pop("blockxsize", None)
            path = folder / "in" / f"{'dem' if source == dem else 'rgb'}-{i:03d}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(ds.read(window=window))
                dst.update_tags(**ds.tags())
        paths.append(path)
    return paths


def process_cpu_s() -> dict[str, float]:
    """CPU seconds so far of this process (the runtime's host) and of its descendants that are
    still alive (the activity worker processes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(pid)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    me, mine = os.getpid(), {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return {"host": stats.get(me, (0, 0.0))[1],
            "workers": sum(cpu for pid, (_, cpu) in stats.items() if pid in mine and pid != me)}


def shell_baseline(sources: list[Path], out: Path, workers: int) -> dict:
    """``ls | xargs -P <workers> gdal_translate -of COG`` with the same creation options."""
    out.mkdir(parents=True)
    co = " ".join(f"-co {k}={v}" for k, v in GDAL_OPTIONS.items())
    script = (f"xargs -P {workers} -I{{}} sh -c 'gdal_translate -q -of COG {co} \"$1\" "
              f"{shlex.quote(str(out))}/\"$(basename \"$1\")\"' _ {{}}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], input="\n".join(map(str, sources)), text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    written = list(out.glob("*.tif"))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "files": len(written),
            "bytes": sum(p.stat().st_size for p in written)}


def ours(runtime, run: int, catalog: bool) -> dict:
    """One cog_conversion of the prefix into a fresh output container, followed to the end, with
    where its wall time went (``where_the_time_goes``)."""
    from bench_sync import follow, get, post

    container = f"bench-out-{run}"
    runtime._call(runtime.engine.activity_timings.clear)
    cpu_before = process_cpu_s()
    started, posted = time.perf_counter(), time.time()
    reply = post(f"{runtime.base_url}/api/jobs/cog_conversion",
                 {"container": CONTAINER, "prefix": PREFIX, "output_container": container,
                  "catalog": catalog})
    status = follow(reply["statusQueryGetUri"], interval=POLL_S)
    wall, ended = time.perf_counter() - started, time.time()
    cpu_after = process_cpu_s()
    timings = runtime._call(runtime.engine.activity_timings.summary)
    tasks = get(f"{runtime.base_url}/api/jobs/{reply['id']}/tasks?top=5000")["tasks"]
    work = [t["work_seconds"] for t in tasks if t.get("work_seconds") is not None]
    output = status["output"]
    cpu = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after}
    return {"wall_s": round(wall, 3), "cpu_s": round(sum(cpu.values()), 2), "cpu_by_process_s": cpu,
            "status": status["runtimeStatus"], "done": output["done"],
            "failed": output["failed"], "container": container,
            "task_work_total_s": round(sum(work), 3),
            "task_work_median_ms": round(statistics.median(work) * 1000, 1) if work else None,
            "activities": timings, **where_the_time_goes(timings, posted, ended, wall, runtime.max_activity_workers)}


def where_the_time_goes(timings: dict, posted: float, ended: float, wall: float, workers: int) -> dict:
    """The wall time beyond the activities' run time (spread over ``workers``) and where it went,
    from the runtime's record of each activity: the lead (POST → the first start), the tail (the
    last finish → the job seen completed), and in between the worker time not spent running
    activities, split into dispatch gaps (idle while a task was scheduled and waiting) and the
    rest (idle with nothing scheduled yet: between a chunk's phases, at a chunk's end)."""
    if not timings.get("activities"):
        return {"queue_wait_ms": {}, "dispatch_gap_ms": {}, "dispatch_overhead_s": round(wall, 3)}
    span, run_s = timings["span"], timings["run_ms"]["sum"] / 1000
    busy = span["last_finished"] - span["first_started"]
    gaps = timings["dispatch_gap_ms"]["sum"] / 1000
    return {
        "queue_wait_ms": timings["queue_wait_ms"], "dispatch_gap_ms": timings["dispatch_gap_ms"],
        "dispatch_overhead_s": round(wall - run_s / workers, 3),
        "overhead_breakdown_s": {
            "lead": round(span["first_started"] - posted, 3),
            "dispatch_gaps": round(gaps / workers, 3),
            "idle_nothing_scheduled": round(max(0.0, busy * workers - run_s - gaps) / workers, 3),
            "tail": round(ended - span["last_finished"], 3),
            "result_to_history_p50_ms": timings["result_ms"]["p50"]},
    }


def stage_profile(source: Path, tmp: Path) -> dict:
    """Where one conversion's time goes: preflight (validation), the COG driver, strict
    validation of the output, and the copy into the store, each timed on its own."""
    import rasterio
    import rasterio.shutil
    from rio_cogeo.cogeo import cog_validate

    import geo_ops

    timings: dict[str, float] = {}
    options = geo_ops.cog_options("deflate", blocksize=512, overview_resampling="average",
                                  threads="ALL_CPUS")
    config = geo_ops.env_options(None)
    with rasterio.Env(**config):
        t = time.perf_counter()
        with geo_ops.preflight(source, None):
            timings["preflight_s"] = time.perf_counter() - t
        t = time.perf_counter()
        rasterio.shutil.copy(source, tmp / "driver.tif", driver="COG", **options)
        timings["cog_driver_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cog_validate(str(tmp / "driver.tif"), strict=True, quiet=True, config=dict(config))
        timings["verify_cog_s"] = time.perf_counter() - t
    t = time.perf_counter()
    geo_ops.to_cog(source, tmp / "to_cog.tif", overview_resampling="average")
    timings["to_cog_s"] = time.perf_counter() - t
    t = time.perf_counter()
    shutil.copyfile(tmp / "to_cog.tif", tmp / "stored.tif")
    timings["store_copy_s"] = time.perf_counter() - t
    return {k: round(v * 1000, 1) for k, v in timings.items()} | {"unit": "ms"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="paired runs (the median of their ratios)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="xargs -P and the runtime's activity worker processes (default: cores)")
    parser.add_argument("--catalog", action="store_true", help="also catalog each COG (static catalog)")
    args = parser.parse_args(argv)
    if not shutil.which("gdal_translate"):
        sys.exit("gdal_translate not found: `make gdal-bin` installs Debian's gdal-bin")
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ.update({"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(tmp / "storage"),
                           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(tmp / "catalog"),
                           "RMH_TEMP_DIR": str(tmp / "work")})
        import activities
        from local_runtime import LocalRuntime

        started = time.perf_counter()
        sources = make_inputs(tmp / "inputs", args.files)
        store = activities.blob_store()
        store.create_container(CONTAINER)
        for path in sources:
            store.upload_from_path(CONTAINER, f"{PREFIX}{path.name}", path)
        stored = [Path(store.gdal_read_path(CONTAINER, f"{PREFIX}{p.name}").path) for p in sources]
        prepare_s = time.perf_counter() - started
        shell_runs, our_runs = [], []
        with LocalRuntime("function_app:app", db_path=tmp / "hub.sqlite", port=0, run_timers=False,
                          activity_pool="process", max_activity_workers=args.workers) as runtime:
            from bench_sync import follow, post

            warm = post(f"{runtime.base_url}/api/jobs/hello_world", {"count": args.workers * 4})
            follow(warm["statusQueryGetUri"])
            for run in range(args.runs):  # paired, the order alternating
                if run % 2:
                    our_runs.append(ours(runtime, run, args.catalog))
                shell_runs.append(shell_baseline(stored, tmp / f"shell-{run}", args.workers))
                if not run % 2:
                    our_runs.append(ours(runtime, run, args.catalog))
                print(f"run {run + 1}/{args.runs}: shell {shell_runs[-1]['wall_s']:.2f} s, "
                      f"ours {our_runs[-1]['wall_s']:.2f} s ({our_runs[-1]['done']} done, "
                      f"{our_runs[-1]['failed']} failed)", flush=True)
        our_bytes = sum(b.size for b in store.iter_blobs(our_runs[-1]["container"]))
        stages = stage_profile(stored[0], tmp) | {"file": sources[0].name}
        stages_rgb = stage_profile(stored[1], tmp) | {"file": sources[1].name}
    ratios = [s["wall_s"] / o["wall_s"] for s, o in zip(shell_runs, our_runs)]
    ratio = statistics.median(ratios)  # ours' files per second against the shell's, median of the pairs
    middle = our_runs[sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]]
    shell_wall = round(statistics.median(r["wall_s"] for r in shell_runs), 3)
    our_wall = round(statistics.median(r["wall_s"] for r in our_runs), 3)
    result = {
        "benchmark": "bench_convert", "files": args.files, "runs": args.runs,
        "workers": args.workers, "cpus": os.cpu_count(), "catalog": args.catalog,
        "gdal_options": GDAL_OPTIONS, "prepare_s": round(prepare_s, 1),
        "shell": {"wall_s": shell_wall, "files_per_s": round(args.files / shell_wall, 2),
                  "walls_s": [r["wall_s"] for r in shell_runs], "bytes": shell_runs[-1]["bytes"],
                  "cpu_s": round(statistics.median(r["cpu_s"] for r in shell_runs), 2),
                  "cpu_ms_per_file": round(1000 * statistics.median(r["cpu_s"] for r in shell_runs) / args.files, 1)},
        "ours": {"wall_s": our_wall, "files_per_s": round(args.files / our_wall, 2),
                 "walls_s": [r["wall_s"] for r in our_runs], "bytes": our_bytes,
                 "cpu_s": round(statistics.median(r["cpu_s"] for r in our_runs), 2),
                 "cpu_ms_per_file": round(1000 * statistics.median(r["cpu_s"] for r in our_runs) / args.files, 1),
                 "cpu_by_process_s": middle["cpu_by_process_s"],
                 "done": our_runs[-1]["done"], "failed": our_runs[-1]["failed"],
                 "task_work_total_s": middle["task_work_total_s"],
                 "activities": {k: middle["activities"].get(k) for k in ("activities", "workers", "run_ms",
                                                                         "result_ms", "by_activity")}},
        "one_file_stages": [stages, stages_rgb],
        "ratios": [round(r, 3) for r in ratios],
        "ratio_median": round(ratio, 3),
        "ratio_of_medians": round(shell_wall / our_wall, 3),
        # the run of the median ratio: where its wall time went
        "queue_wait_ms": middle["queue_wait_ms"],
        "dispatch_gap_ms": middle["dispatch_gap_ms"],
        "dispatch_overhead_s": middle["dispatch_overhead_s"],
        "overhead_breakdown_s": middle.get("overhead_breakdown_s"),
        "dispatch_overhead_s_runs": [r["dispatch_overhead_s"] for r in our_runs],
        "cpu_ratio_shell_vs_ours": round(statistics.median(s["cpu_s"] for s in shell_runs)
                                         / statistics.median(o["cpu_s"] for o in our_runs), 3),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
    }
    print(json.dumps(result, separators=(",", ":")))
    return result


if __name__ == "__main__":
    main()
