"""Multidimensional conversion: cubes.py against `gdal_translate -of COG` of each slice.

Generates a NetCDF-4 of ``--days`` daily ``--width`` x ``--height`` float32 grids (365 x 1440 x
720 by default: about 1.5 GB of values) and a GRIB2 of ``--grib-vars`` variables x
``--grib-steps`` steps, then converts both as the runtime would: ``open_cube`` and
``plan_slices`` once per file, the slice groups in a process pool of one worker per core (the
embedded runtime's worker processes; on Azure, one activity per group), each group one
``convert_slices`` with one GDAL thread. The reference, in the same run, is `gdal_translate -of
COG` of every slice (``-b N`` of the variable's subdataset, the same creation options), by a
shell loop and by ``xargs -P <cores>``. Prints files/s, slices/s, peak RSS per worker, and as its
last line one JSON object.

    .venv/bin/python benchmarks/bench_multidim.py            # the full size
    .venv/bin/python benchmarks/bench_multidim.py --days 30  # a quick run
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import cubes  # noqa: E402

PROFILE = "deflate"
CREATION = ["COMPRESS=DEFLATE", "PREDICTOR=YES", "BLOCKSIZE=512", "OVERVIEW_RESAMPLING=NEAREST",
            "NUM_THREADS=1", "BIGTIFF=IF_SAFER", "OVERVIEWS=AUTO"]


def daily_field(day: int, lat: np.ndarray, lon: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A temperature-like field: latitude gradient, a travelling wave, noise at 0.01 K."""
    base = 288.0 - 40.0 * np.sin(np.radians(lat))[:, None] ** 2
    wave = 6.0 * np.sin(np.radians(lon)[None, :] * 3 + day / 10.0) * np.cos(np.radians(lat))[:, None]
    noise = rng.normal(0, 0.5, size=(lat.size, lon.size))
    return np.round(base + wave + noise, 2).astype("float32")


def write_netcdf(path: Path, days: int, width: int, height: int) -> None:
    import netCDF4

    step = 360.0 / width
    lon = -180 + step * (np.arange(width) + 0.5)
    lat = 90 - (180.0 / height) * (np.arange(height) + 0.5)
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("time", None)
        ds.createDimension("lat", height)
        ds.createDimension("lon", width)
        t = ds.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2023-01-01", "standard"
        y = ds.createVariable("lat", "f8", ("lat",))
        x = ds.createVariable("lon", "f8", ("lon",))
        y.units, x.units = "degrees_north", "degrees_east"
        y[:], x[:] = lat, lon
        v = ds.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, complevel=1, shuffle=True,
                              chunksizes=(1, height, width), fill_value=np.float32(-9999))
        v.units, v.long_name = "K", "near-surface air temperature"
        for day in range(days):
            t[day] = day
            v[day] = daily_field(day, lat, lon, rng)


def write_grib(path: Path, variables: int, steps: int, width: int, height: int) -> None:
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    params = [(0, 0), (2, 2), (2, 3), (1, 1), (3, 0), (0, 6)][:variables]  # TMP UGRD VGRD RH PRES DPT
    lon = -180 + (360.0 / width) * (np.arange(width) + 0.5)
    lat = 90 - (180.0 / height) * (np.arange(height) + 0.5)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp, open(path, "wb") as out:
        tif = Path(tmp) / "m.tif"
        for category, number in params:
            for hour in range(steps):
                with rasterio.open(tif, "w", driver="GTiff", width=width, height=height, count=1,
                                   dtype="float32", crs="EPSG:4326",
                                   transform=from_origin(-180, 90, 360.0 / width, 180.0 / height)) as dst:
                    dst.write(daily_field(hour, lat, lon, rng), 1)
                grb = Path(tmp) / "m.grb2"
                rasterio.shutil.copy(tif, grb, driver="GRIB", DISCIPLINE=0, PDS_PDTN=0, INPUT_UNIT="K",
                                     IDS="CENTER=98 SUBCENTER=0 MASTER_TABLE=2 SIGNF_REF_TIME=1 "
                                         "REF_TIME=2024-01-01T00:00:00Z PROD_STATUS=0 TYPE=1",
                                     PDS_TEMPLATE_ASSEMBLED_VALUES=f"{category} {number} 2 0 0 0 0 1 {hour * 6} 103 0 2 255 0 0",
                                     DATA_ENCODING="SIMPLE_PACKING", DECIMAL_SCALE_FACTOR=2)
                out.write(grb.read_bytes())


def convert_group(group_json: str) -> tuple[int, int, float, int]:
    """One slice group in a worker: (pid, slices, seconds, peak RSS in KiB so far)."""
    group = cubes.SliceGroup.model_validate_json(group_json)
    result = cubes.convert_slices(group, profile=PROFILE, threads=1)
    return os.getpid(), len(result.outputs), result.elapsed_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_ours(sources: list[Path], out: Path, workers: int) -> dict:
    started = time.perf_counter()
    groups = []
    slices = 0
    for source in sources:
        facts = cubes.open_cube(source)
        slices += facts.slice_count
        groups += cubes.plan_slices(facts, str(out / source.name), max_slices=100_000,
                                    max_pixels_per_task=64 * 1024 * 1024, max_slices_per_task=64)
    planned = time.perf_counter() - started
    rss: dict[int, int] = {}
    # spawned workers, as the embedded runtime's: their peak RSS is their own, not a fork's copy of
    # the parent that generated the inputs
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for pid, _, _, peak in pool.map(convert_group, [g.model_dump_json() for g in groups]):
            rss[pid] = max(rss.get(pid, 0), peak)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "plan_seconds": planned, "groups": len(groups), "slices": slices,
            "peak_rss_mb_per_worker": round(max(rss.values()) / 1024, 1),
            "bytes": sum(p.stat().st_size for p in out.rglob("*.tif"))}


def reference_commands(sources: list[Path], out: Path) -> list[list[str]]:
    """gdal_translate of every slice: ``-b N`` of the variable's subdataset (netCDF) or file (GRIB)."""
    import rasterio

    commands = []
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        with rasterio.open(str(source)) as ds:
            count = ds.count
        name = f'NETCDF:"{source}":tas' if source.suffix == ".nc" else str(source)
        creation = [arg for co in CREATION for arg in ("-co", co)]
        for band in range(1, count + 1):
            commands.append(["gdal_translate", "-q", "-of", "COG", *creation, "-b", str(band), name,
                             str(out / f"{source.stem}_{band:05d}.tif")])
    return commands


def run_reference(commands: list[list[str]], out: Path, parallel: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    script = "\n".join(" ".join(_quote(a) for a in c) for c in commands)
    started = time.perf_counter()
    if parallel == 1:
        subprocess.run(["bash", "-c", script], check=True)
    else:  # one command per line, run by xargs -P
        subprocess.run(["bash", "-c", f"xargs -P {parallel} -I CMD bash -c CMD"], input=script.encode(), check=True)
    return time.perf_counter() - started


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def same_pixels(ours: Path, theirs: Path) -> bool:
    import rasterio

    with rasterio.open(ours) as a, rasterio.open(theirs) as b:
        return bool(np.array_equal(a.read(1), b.read(1), equal_nan=True) and a.transform.almost_equals(b.transform))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--grib-vars", type=int, default=4)
    parser.add_argument("--grib-steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--dir", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-multidim-"))
    work.mkdir(parents=True, exist_ok=True)
    nc, grib = work / "daily.nc", work / "forecast.grib2"
    t0 = time.perf_counter()
    write_netcdf(nc, args.days, args.width, args.height)
    write_grib(grib, args.grib_vars, args.grib_steps, args.width, args.height)
    print(f"inputs: {nc.stat().st_size / 1e6:.0f} MB NetCDF-4, {grib.stat().st_size / 1e6:.0f} MB GRIB2 "
          f"written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    sources = [nc, grib]
    ours_dir, ref_dir = work / "ours", work / "reference"
    ours = run_ours(sources, ours_dir, args.workers)
    print(f"cubes.py: {ours['slices']} slices in {ours['seconds']:.1f} s ({ours['groups']} groups, "
          f"{args.workers} workers, peak RSS {ours['peak_rss_mb_per_worker']} MB)", file=sys.stderr)
    commands = reference_commands(sources, ref_dir)
    loop = run_reference(commands, ref_dir, 1)
    print(f"shell loop: {len(commands)} slices in {loop:.1f} s", file=sys.stderr)
    xargs = run_reference(commands, ref_dir, args.workers)
    print(f"xargs -P {args.workers}: {len(commands)} slices in {xargs:.1f} s", file=sys.stderr)
    checks = [same_pixels(ours_dir / "daily.nc" / "tas" / f"tas_time{i:05d}.tif", ref_dir / f"daily_{i + 1:05d}.tif")
              for i in (0, args.days // 2, args.days - 1)]
    result = {
        "benchmark": "multidim", "days": args.days, "grid": [args.height, args.width],
        "grib_variables": args.grib_vars, "grib_steps": args.grib_steps, "workers": args.workers,
        "files": len(sources), "slices": ours["slices"], "raw_bytes": args.days * args.width * args.height * 4,
        "ours_seconds": round(ours["seconds"], 2), "ours_files_per_s": round(len(sources) / ours["seconds"], 3),
        "ours_slices_per_s": round(ours["slices"] / ours["seconds"], 2),
        "ours_peak_rss_mb_per_worker": ours["peak_rss_mb_per_worker"], "ours_groups": ours["groups"],
        "ours_output_mb": round(ours["bytes"] / 1e6, 1),
        "shell_loop_seconds": round(loop, 2), "shell_loop_slices_per_s": round(len(commands) / loop, 2),
        "xargs_seconds": round(xargs, 2), "xargs_slices_per_s": round(len(commands) / xargs, 2),
        "ratio_vs_shell_loop": round(loop / ours["seconds"], 2),
        "ratio_vs_xargs": round(xargs / ours["seconds"], 2),
        "pixels_identical_to_gdal_translate": all(checks),
    }
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
