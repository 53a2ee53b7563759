"""Benchmark of the embedded Durable runtime (``make bench-runtime``).

Fan-out of N no-op activities (N = 100, 1,000, 5,000, 10,000; above 1,000 split into
sub-orchestrations of 1,000): wall time, overhead per task against the floor (the same N calls
made directly in a loop), and peak RSS. Then threads against processes for the activity pool, on
no-op tasks, on raster work (GDAL through rasterio, which releases the GIL) and on pure-Python CPU
work (which holds it). Every case runs in its own subprocess so peak RSS is per case.

The last line of stdout is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import azure.durable_functions as df

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 1000
FAN_OUT_SIZES = (100, 1000, 5000, 10000)
RASTER_TASKS = 8
RASTER_SIZE = 1024

app = df.DFApp()


@app.activity_trigger(input_name="value")
def noop(value: int) -> int:
    return value


def _raster(seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    data = (rng.random((RASTER_SIZE, RASTER_SIZE)) * 1000).astype("float32")
    return data + np.linspace(0, 500, RASTER_SIZE, dtype="float32")


def _profile(**extra: Any) -> dict[str, Any]:
    from rasterio.transform import from_origin

    return {"driver": "GTiff", "width": RASTER_SIZE, "height": RASTER_SIZE, "count": 1,
            "dtype": "float32", "tiled": True, "blockxsize": 256, "blockysize": 256,
            "crs": "EPSG:3857", "transform": from_origin(0, 0, 10, 10), **extra}


@app.activity_trigger(input_name="seed")
def raster_compress(seed: int) -> int:
    """GDAL work: write a tiled DEFLATE GeoTIFF (level 9, predictor 3) to memory."""
    import rasterio
    from rasterio.io import MemoryFile

    data = _raster(seed)
    with rasterio.Env(GDAL_NUM_THREADS="1"), MemoryFile() as memfile:
        with memfile.open(**_profile(compress="deflate", predictor=3, zlevel=9)) as dst:
            dst.write(data, 1)
        return len(memfile.read())


@app.activity_trigger(input_name="seed")
def raster_overviews(seed: int) -> int:
    """GDAL work: build DEFLATE-compressed average overviews 2..16, as COG creation does."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile

    data = _raster(seed)
    with rasterio.Env(GDAL_NUM_THREADS="1"), MemoryFile() as memfile:
        with memfile.open(**_profile(compress="deflate", predictor=3, zlevel=6)) as dst:
            dst.write(data, 1)
            dst.build_overviews([2, 4, 8, 16], Resampling.average)
        return len(memfile.read())


@app.activity_trigger(input_name="rounds")
def python_cpu(rounds: int) -> int:
    """CPU-bound pure-Python work (holds the GIL)."""
    total = 0
    for i in range(rounds):
        total = (total + i * i) % 1_000_003
    return total


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    count, activity, arg = spec["count"], spec.get("activity", "noop"), spec.get("arg")
    if count <= CHUNK:
        tasks = [context.call_activity(activity, i if arg is None else arg + i)
                 for i in range(count)]
        return len((yield context.task_all(tasks)))
    chunks = [min(CHUNK, count - start) for start in range(0, count, CHUNK)]
    sizes = yield context.task_all([
        context.call_sub_orchestrator("fan_out", {**spec, "count": size}) for size in chunks])
    return sum(sizes)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_seconds(activity: str, count: int, arg: int | None) -> float:
    import local_runtime

    user_fn = local_runtime.index_app(app).activities[activity.lower()].fn
    started = time.perf_counter()
    for i in range(count):
        user_fn(i if arg is None else arg + i)
    return time.perf_counter() - started


def run_case(count: int, pool: str, activity: str, arg: int | None, workers: int | None
             ) -> dict[str, Any]:
    """One measurement, in this process: warm-up, direct-call floor, then the runtime (after
    an untimed warm-up fan-out that starts the pool's workers)."""
    import logging

    from local_runtime import LocalRuntime

    logging.basicConfig(level=logging.ERROR)
    floor_seconds(activity, 1, arg)  # imports (numpy, rasterio) happen here, untimed
    floor = floor_seconds(activity, count, arg)
    with tempfile.TemporaryDirectory() as tmp:
        # By import string, as `serve` does: the process pool then spawns workers that import
        # this module themselves instead of forking the threaded host.
        with LocalRuntime(f"{Path(__file__).resolve()}:app", db_path=Path(tmp) / "bench.sqlite",
                          port=0, activity_pool=pool, max_activity_workers=workers) as rt:
            warm_up = rt.start_new("fan_out", {"count": 2 * (workers or os.cpu_count() or 1),
                                               "activity": activity, "arg": arg})
            rt.wait_for(warm_up, timeout=600)  # worker start-up and imports, untimed
            started = time.perf_counter()
            instance_id = rt.start_new("fan_out", {"count": count, "activity": activity,
                                                   "arg": arg})
            status = rt.wait_for(instance_id, timeout=600)
            wall = time.perf_counter() - started
    if status["runtimeStatus"] != "Completed" or status["output"] != count:
        raise RuntimeError(f"fan-out of {count} ended {status['runtimeStatus']}: "
                           f"{status['output']}")
    return {"n": count, "pool": pool, "activity": activity, "wall_s": round(wall, 4),
            "floor_s": round(floor, 6), "peak_rss_mb": round(peak_rss_mb(), 1)}


def subprocess_case(count: int, pool: str = "thread", activity: str = "noop",
                    arg: int | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", str(count), "--pool", pool,
               "--activity", activity]
    if arg is not None:
        command += ["--arg", str(arg)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=str(ROOT))
    return json.loads(done.stdout.strip().splitlines()[-1])


def fan_out_figures() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for count in FAN_OUT_SIZES:
        case = subprocess_case(count)
        floor = case["floor_s"]
        case["overhead_ms_per_task"] = round((case["wall_s"] - floor) / count * 1000, 4)
        case["tasks_per_s"] = round(count / case["wall_s"], 1)
        figures[str(count)] = case
        print(f"fan-out {count:>6}: {case['wall_s']:.3f}s wall, "
              f"{case['overhead_ms_per_task']:.3f} ms/task overhead, "
              f"{case['tasks_per_s']:.0f} tasks/s, peak RSS {case['peak_rss_mb']} MB",
              flush=True)
    return figures


def pool_figures() -> dict[str, Any]:
    workloads = {"noop": (1000, None), "raster_compress": (RASTER_TASKS, 0),
                 "raster_overviews": (RASTER_TASKS, 0), "python_cpu": (RASTER_TASKS, 3_000_000)}
    figures: dict[str, Any] = {}
    for activity, (count, arg) in workloads.items():
        row: dict[str, Any] = {"tasks": count}
        floors = []
        for pool in ("thread", "process"):
            case = subprocess_case(count, pool, activity, arg)
            floors.append(case["floor_s"])
            row[f"{pool}_wall_s"] = case["wall_s"]
            row[f"{pool}_peak_rss_mb"] = case["peak_rss_mb"]
        row["serial_floor_s"] = round(min(floors), 4)
        row["speedup_thread"] = round(row["serial_floor_s"] / row["thread_wall_s"], 2)  # vs serial
        row["speedup_process"] = round(row["serial_floor_s"] / row["process_wall_s"], 2)
        figures[activity] = row
        print(f"pool {activity:>15}: serial {row['serial_floor_s']:.3f}s, threads "
              f"{row['thread_wall_s']:.3f}s, processes {row['process_wall_s']:.3f}s",
              flush=True)
    return figures


def gil_stall_probe(runs: int = 3) -> dict[str, float]:
    """Longest stall (ms) a spinning Python thread sees while a workload runs in another thread.

    C code that releases the GIL leaves the spinner stalls of a few ms (scheduler noise); code
    that holds it stalls the spinner for most of a call; pure Python yields every 5 ms
    (sys.getswitchinterval) but stalls grow when the box is loaded."""
    import threading

    import local_runtime

    activities = local_runtime.index_app(app).activities

    def max_stall(work: Any, arg: int) -> float:
        done = threading.Event()

        def background() -> None:
            for i in range(runs):
                work(arg + i)
            done.set()

        thread = threading.Thread(target=background)
        thread.start()
        last, worst = time.perf_counter(), 0.0
        while not done.is_set():
            now = time.perf_counter()
            worst, last = max(worst, now - last), now
        thread.join()
        return round(worst * 1000, 1)

    return {"raster_compress_max_stall_ms": max_stall(activities["raster_compress"].fn, 0),
            "raster_overviews_max_stall_ms": max_stall(activities["raster_overviews"].fn, 0),
            "python_cpu_max_stall_ms": max_stall(activities["python_cpu"].fn, 3_000_000)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", type=int, help="run one fan-out in this process")
    parser.add_argument("--pool", default="thread")
    parser.add_argument("--activity", default="noop")
    parser.add_argument("--arg", type=int, default=None)
    parser.add_argument("--skip-pools", action="store_true")
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case, args.pool, args.activity, args.arg, None)))
        return 0
    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    fan = fan_out_figures()
    pools = {} if args.skip_pools else pool_figures()
    if not args.skip_pools:
        pools["gil_stall_probe"] = gil_stall_probe()
        print(f"GIL stall probe: {pools['gil_stall_probe']}", flush=True)
    ratio = fan["5000"]["wall_s"] / fan["1000"]["wall_s"]
    result = {
        "benchmark": "embedded_durable_runtime",
        "cpu_count": os.cpu_count(),
        "activity_workers": os.cpu_count(),
        "fan_out": fan,
        "n5000_over_n1000_wall_ratio": round(ratio, 2),
        "targets": {
            "overhead_ms_per_task_at_1000_le_2": fan["1000"]["overhead_ms_per_task"] <= 2.0,
            "n5000_within_6x_of_n1000": ratio <= 6.0,
        },
        "pools": pools,
        "chosen_pool": "thread",
        "pool_choice_reason": (
            "threads by default: the Azure Python worker runs sync activities in a thread pool "
            "of one process, so local concurrency matches production; lower dispatch cost per "
            "task (noop row); shared clients and caches; in-process state for tests. The raster "
            "and python_cpu rows vary run to run on a shared 2-vCPU box (load average recorded); "
            "processes match or beat threads there when GIL-holding phases (rasterio "
            "build_overviews, numpy glue, pure Python; see the stall probe) dominate, so "
            "'--activity-pool process' (spawned workers, like FUNCTIONS_WORKER_PROCESS_COUNT>1) "
            "is the option for such work on many-core hosts"),
        "load_average_start_end": [load_at_start, round(os.getloadavg()[0], 2)],
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
