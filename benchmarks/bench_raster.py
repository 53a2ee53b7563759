"""Raster engine benchmark: geo_ops against GDAL's own tools on the same inputs and options.

    python benchmarks/bench_raster.py [--runs 5] [--cases all|speed|bytes] [--workdir DIR] [--keep]

Generates its inputs in a temporary directory (an 8192 x 8192 x 3 uint8 striped UTM GeoTIFF, a
6000 x 6000 float32 EPSG:4326 DEM with nodata, 200 small COGs; for the output-bytes cases the
demo's 3072 x 2048 float32 DEM and 8-bit RGB imagery rendered from it), then measures every candidate in
its own subprocess: wall time (median of ``--runs``, candidates interleaved so machine noise hits
all of them alike), CPU time (user + system, all threads; robust when other work shares the
machine) and peak RSS (``os.wait4`` rusage of that child). Python candidates time the operation
itself (not interpreter start-up or imports); the GDAL command-line anchors are timed as a whole
process. Human-readable lines go first; the LAST stdout line is one JSON object with every figure.

Output bytes: each of our lossless profiles against ``gdal_translate -of COG`` with every lossless
GDAL setting (DEFLATE, ZSTD, LZW with ``PREDICTOR=YES``, LERC_ZSTD at ``MAX_Z_ERROR=0``, and plain
DEFLATE, the old default) on the same data in the same run; GDAL's best lossless setting is the one
with the fewest bytes. Every output of ours is checked: strict COG validation, and pixel equality
with the source for the lossless profiles (the error bound for the lossy LERC case).

The Debian GDAL tools (``gdal_translate``, ``gdalwarp``; package ``gdal-bin``) are optional: when
absent their figures are null and the same-GDAL anchors (rasterio's GDAL) still give ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

OVERVIEW_RESAMPLING = "average"
COG_OPTIONS = {"COMPRESS": "DEFLATE", "NUM_THREADS": "ALL_CPUS",
               "OVERVIEW_RESAMPLING": OVERVIEW_RESAMPLING.upper()}
TILE_SIZE = 1024
HEADER_FILES = 200
#: Output-bytes cases: our profiles (profile, max_z_error) and GDAL's settings (-co options).
OUR_PROFILES = {"deflate": ("deflate", None), "zstd": ("zstd", None), "lerc": ("lerc", None)}
LOSSY_LERC = {"dem": 0.01}  # metres: the DEM's lossy LERC case (not compared as lossless)
GDAL_LOSSLESS = {
    "deflate_predictor": {"COMPRESS": "DEFLATE", "PREDICTOR": "YES"},
    "zstd_predictor": {"COMPRESS": "ZSTD", "PREDICTOR": "YES"},
    "lzw_predictor": {"COMPRESS": "LZW", "PREDICTOR": "YES"},
    "lerc_zstd": {"COMPRESS": "LERC_ZSTD", "MAX_Z_ERROR": "0"},
    "deflate": {"COMPRESS": "DEFLATE"},
}
#: Our profile -> the GDAL setting it is made of.
SAME_SETTING = {"ours.deflate": "deflate_predictor", "ours.zstd": "zstd_predictor", "ours.lerc": "lerc_zstd"}
BYTES_TARGETS = {"bytes_ratio": 1.0, "time_ratio": 1.1}
TARGETS = {"wall_ratio": 1.05, "cog_peak_ratio": 1.2, "warp_peak_mb": 300.0,
           "tiles_peak_mb": 150.0, "headers_files_per_s": 900.0}


# ----------------------------------------------------------------------------------------------
# Child side: one measured operation per process


def app_gdal_config() -> dict:
    """The GDAL options the app runs the engine under (settings' defaults and the retry budget's:
    what ``activity_frame.gdal_config`` passes), so the engine is measured as the app runs it."""
    from settings import Settings

    return Settings().gdal_config


def child_to_cog(src: str, dst: str) -> dict:
    import geo_ops

    started = time.perf_counter()
    geo_ops.to_cog(src, dst, profile="deflate", overview_resampling=OVERVIEW_RESAMPLING, gdal_config=app_gdal_config())
    return {"wall_s": time.perf_counter() - started}


def child_rio_copy(src: str, dst: str) -> dict:
    import rasterio
    import rasterio.shutil

    started = time.perf_counter()
    with rasterio.Env():
        rasterio.shutil.copy(src, dst, driver="COG", **COG_OPTIONS)
    return {"wall_s": time.perf_counter() - started}


def child_to_cog_warp(src: str, dst: str) -> dict:
    import geo_ops

    started = time.perf_counter()
    result = geo_ops.to_cog(src, dst, dst_crs="EPSG:3857", resampling="nearest",
                            overview_resampling=OVERVIEW_RESAMPLING, gdal_config=app_gdal_config())
    return {"wall_s": time.perf_counter() - started, "shape": [result.width, result.height],
            "bounds": result.bounds}


def child_rio_cog_target_srs(src: str, dst: str) -> dict:
    import rasterio
    import rasterio.shutil

    started = time.perf_counter()
    with rasterio.Env():
        rasterio.shutil.copy(src, dst, driver="COG", TARGET_SRS="EPSG:3857",
                             WARP_RESAMPLING="NEAREST", **COG_OPTIONS)
    return {"wall_s": time.perf_counter() - started}


def child_tiles(src: str, dst: str) -> dict:
    import geo_ops

    started = time.perf_counter()
    config = app_gdal_config()
    plan = geo_ops.plan_tiles(src, output_prefix=dst, tile_size=TILE_SIZE, gdal_config=config)
    results = [geo_ops.process_tile(src, tile, overview_resampling=OVERVIEW_RESAMPLING, gdal_config=config)
               for tile in plan.tiles]
    return {"wall_s": time.perf_counter() - started, "tiles": len(results)}


def child_tiles_whole_array(src: str, dst: str) -> dict:
    """The naive approach: read the whole array, then write each tile from memory."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile
    from rasterio.windows import Window

    started = time.perf_counter()
    os.makedirs(dst, exist_ok=True)
    count = 0
    with rasterio.open(src) as ds:
        data = ds.read()
        for row_off in range(0, ds.height, TILE_SIZE):
            for col_off in range(0, ds.width, TILE_SIZE):
                window = Window(col_off, row_off, min(TILE_SIZE, ds.width - col_off),
                                min(TILE_SIZE, ds.height - row_off))
                profile = {"driver": "GTiff", "width": window.width, "height": window.height,
                           "count": ds.count, "dtype": ds.dtypes[0], "crs": ds.crs,
                           "transform": ds.window_transform(window), "nodata": ds.nodata}
                tile = data[:, row_off:row_off + window.height, col_off:col_off + window.width]
                with MemoryFile() as mem, mem.open(**profile) as tmp:
                    tmp.write(tile)
                    rasterio.shutil.copy(tmp, f"{dst}/tile_{row_off}_{col_off}.tif",
                                         driver="COG", **{**COG_OPTIONS, "NUM_THREADS": "1"})
                count += 1
    return {"wall_s": time.perf_counter() - started, "tiles": count}


def child_headers(src_dir: str, _dst: str) -> dict:
    import geo_ops

    files = sorted(str(p) for p in Path(src_dir).glob("*.tif"))
    passes, config = [], app_gdal_config()
    for _ in range(3):
        started = time.perf_counter()
        headers = [geo_ops.read_header(f, gdal_config=config) for f in files]
        passes.append(time.perf_counter() - started)
    assert all(h.bbox and h.footprint and h.epsg for h in headers)
    return {"wall_s": statistics.median(passes), "first_pass_s": passes[0], "files": len(files)}


def child_to_cog_profile(src: str, dst: str, profile: str, max_z_error: str = "") -> dict:
    import geo_ops

    started = time.perf_counter()
    result = geo_ops.to_cog(src, dst, profile=profile, overview_resampling=OVERVIEW_RESAMPLING,
                            max_z_error=float(max_z_error) if max_z_error else None)
    return {"wall_s": time.perf_counter() - started, "size_bytes": result.size_bytes,
            "predictor": result.predictor}


def child_rio_copy_options(src: str, dst: str, options: str) -> dict:
    """rasterio's own GDAL with explicit creation options (``KEY=VALUE,KEY=VALUE``)."""
    import rasterio
    import rasterio.shutil

    co = dict(item.split("=", 1) for item in options.split(","))
    started = time.perf_counter()
    with rasterio.Env():
        rasterio.shutil.copy(src, dst, driver="COG", NUM_THREADS="ALL_CPUS",
                             OVERVIEW_RESAMPLING=OVERVIEW_RESAMPLING.upper(), **co)
    return {"wall_s": time.perf_counter() - started}


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def run_child(case: str, src: str, dst: str) -> dict:
    """Run one case (``name`` or ``name:arg:arg``); adds the CPU time of the operation itself
    (imports excluded)."""
    name, *args = case.split(":")
    before = _cpu_s()
    figures = CHILDREN[name](src, dst, *args)
    figures["op_cpu_s"] = _cpu_s() - before
    return figures


CHILDREN = {f.__name__.removeprefix("child_"): f for f in (
    child_to_cog, child_rio_copy, child_to_cog_warp, child_rio_cog_target_srs, child_tiles,
    child_tiles_whole_array, child_headers, child_to_cog_profile, child_rio_copy_options)}


# ----------------------------------------------------------------------------------------------
# Parent side: inputs, measurement, report


def make_inputs(workdir: Path) -> dict[str, Path]:
    import rasterio.shutil

    import raster_factory

    inputs = {
        "rgb": raster_factory.write_raster(
            workdir / "rgb_8192_utm_striped.tif", width=8192, height=8192, count=3,
            dtype="uint8", crs="EPSG:32633", tiled=False, blocksize=8),
        "dem": raster_factory.write_raster(
            workdir / "dem_6000_4326.tif", width=6000, height=6000, count=1, dtype="float32",
            crs="EPSG:4326", bounds=(5.0, 44.0, 11.0, 50.0), nodata=-9999.0, tiled=True,
            blocksize=256),
    }
    headers = workdir / "headers"
    headers.mkdir()
    crss = ["EPSG:32633", "EPSG:4326", "EPSG:3857", "EPSG:32632"]
    scratch = workdir / "scratch.tif"
    for i in range(HEADER_FILES):
        raster_factory.write_raster(scratch, width=256, height=256, count=3, nodata=0,
                                    crs=crss[i % len(crss)], seed=i)
        rasterio.shutil.copy(scratch, headers / f"cog_{i:03d}.tif", driver="COG",
                             COMPRESS="DEFLATE")
    scratch.unlink()
    inputs["headers"] = headers
    inputs.update(make_bytes_inputs(workdir))
    return inputs


def make_bytes_inputs(workdir: Path) -> dict[str, Path]:
    """The demo's DEM (``make demo`` generates the same one) and 8-bit imagery rendered from it."""
    import cli
    import raster_factory

    dem = cli.write_sample_raster(workdir / "demo_dem_3072x2048_float32.tif")
    rgb = raster_factory.write_imagery_from_terrain(dem, workdir / "imagery_3072x2048_rgb8.tif")
    return {"bytes.dem": dem, "bytes.rgb": rgb}


def make_inputs_in_child(workdir: Path, cases: str) -> dict[str, Path]:
    """Generate the inputs in a subprocess, keeping this parent process small (see measure)."""
    done = subprocess.run([sys.executable, __file__, "--make-inputs", str(workdir),
                           "--cases", cases],
                          check=True, capture_output=True, text=True)
    return {k: Path(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def measure(cmd: list[str], *, inner: bool) -> dict:
    """Run ``cmd``; wall time (the child's own when ``inner``), CPU time and peak RSS in MB.

    The parent never imports numpy/rasterio before measuring: Linux carries a forked child's
    peak RSS across ``exec``, so a fat parent would inflate every child's figure.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    figures = json.loads(out.strip().splitlines()[-1]) if inner else {"wall_s": wall}
    figures["peak_mb"] = usage.ru_maxrss / 1024
    figures["cpu_s"] = figures.pop("op_cpu_s", usage.ru_utime + usage.ru_stime)
    return figures


def python_cmd(case: str, src: Path, dst: Path) -> list[str]:
    return [sys.executable, __file__, "--child", case, str(src), str(dst)]


def bytes_candidates(inputs: dict[str, Path], out: Path) -> dict[str, tuple[list[str], bool]]:
    """``bytes.<data>.ours.<profile>``, ``bytes.<data>.rasterio.<setting>`` (same GDAL as ours)
    and ``bytes.<data>.gdal.<setting>`` (``gdal_translate``) for the DEM and the imagery."""
    cands: dict[str, tuple[list[str], bool]] = {}
    for data in ("dem", "rgb"):
        src = inputs[f"bytes.{data}"]
        ours = dict(OUR_PROFILES)
        if data in LOSSY_LERC:
            ours[f"lerc_z{LOSSY_LERC[data]}"] = ("lerc", LOSSY_LERC[data])
        for name, (profile, max_z) in ours.items():
            case = f"to_cog_profile:{profile}" + (f":{max_z}" if max_z is not None else "")
            cands[f"bytes.{data}.ours.{name}"] = (python_cmd(case, src, out / f"b_{data}_ours_{name}.tif"), True)
        for name in GDAL_LOSSLESS:
            co = ",".join(f"{k}={v}" for k, v in GDAL_LOSSLESS[name].items())
            cands[f"bytes.{data}.rasterio.{name}"] = (
                python_cmd(f"rio_copy_options:{co}", src, out / f"b_{data}_rio_{name}.tif"), True)
        if shutil.which("gdal_translate"):
            for name, options in GDAL_LOSSLESS.items():
                co = [arg for key, value in {**options, "NUM_THREADS": "ALL_CPUS",
                                             "OVERVIEW_RESAMPLING": OVERVIEW_RESAMPLING.upper()}.items()
                      for arg in ("-co", f"{key}={value}")]
                cands[f"bytes.{data}.gdal.{name}"] = (
                    ["gdal_translate", "-q", "-of", "COG", *co, str(src),
                     str(out / f"b_{data}_gdal_{name}.tif")], False)
    return cands


def candidates(inputs: dict[str, Path], out: Path, cases: str = "all") -> dict[str, tuple[list[str], bool]]:
    cands = bytes_candidates(inputs, out) if cases in ("all", "bytes") else {}
    if cases == "bytes":
        return cands
    cands |= {
        "cog.to_cog": (python_cmd("to_cog", inputs["rgb"], out / "cog_ours.tif"), True),
        "cog.rasterio_copy": (python_cmd("rio_copy", inputs["rgb"], out / "cog_rio.tif"), True),
        "warp.to_cog": (python_cmd("to_cog_warp", inputs["dem"], out / "warp_ours.tif"), True),
        "warp.rasterio_cog_target_srs": (python_cmd("rio_cog_target_srs", inputs["dem"],
                                                    out / "warp_rio.tif"), True),
        "tiles.windowed": (python_cmd("tiles", inputs["rgb"], out / "tiles_ours"), True),
        "tiles.whole_array": (python_cmd("tiles_whole_array", inputs["rgb"],
                                         out / "tiles_whole"), True),
        "headers.read_header": (python_cmd("headers", inputs["headers"], out), True),
    }
    co = [arg for key, value in COG_OPTIONS.items() for arg in ("-co", f"{key}={value}")]
    if shutil.which("gdal_translate"):
        cands["cog.gdal_translate"] = (["gdal_translate", "-q", "-of", "COG", *co,
                                        str(inputs["rgb"]), str(out / "cog_cli.tif")], False)
    if shutil.which("gdalwarp"):
        cands["warp.gdalwarp"] = (["gdalwarp", "-q", "-overwrite", "-t_srs", "EPSG:3857",
                                   "-r", "near", "-of", "COG", *co, "-wo", "NUM_THREADS=ALL_CPUS",
                                   str(inputs["dem"]), str(out / "warp_cli.tif")], False)
    return cands


def run_all(cands: dict, runs: int, out: Path) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {name: [] for name in cands}
    for run in range(runs):
        for name, (cmd, inner) in cands.items():
            for stale in out.glob("tiles_*"):
                shutil.rmtree(stale, ignore_errors=True)
            samples[name].append(measure(cmd, inner=inner))
            if name.startswith("bytes."):
                samples[name][-1]["size_bytes"] = Path(cmd[-1]).stat().st_size
            last = samples[name][-1]
            print(f"run {run + 1}/{runs} {name:30s} wall {last['wall_s']:7.3f} s  "
                  f"cpu {last['cpu_s']:7.3f} s  peak {last['peak_mb']:7.1f} MB", flush=True)
    return samples


def summarise(samples: dict[str, list[dict]]) -> dict:
    medians = {name: {"wall_s": round(statistics.median(s["wall_s"] for s in runs), 3),
                      "cpu_s": round(statistics.median(s["cpu_s"] for s in runs), 3),
                      "peak_mb": round(max(s["peak_mb"] for s in runs), 1),
                      "walls_s": [round(s["wall_s"], 3) for s in runs],
                      **({"size_bytes": runs[-1]["size_bytes"]} if "size_bytes" in runs[-1] else {})}
               for name, runs in samples.items() if runs}
    return medians


def ratio(figures: dict, a: str, b: str, key: str) -> float | None:
    if a in figures and b in figures and figures[b][key]:
        return round(figures[a][key] / figures[b][key], 3)
    return None


def grid_check(out: Path) -> dict:
    import rasterio

    checks = {}
    pairs = {"warp_grid_equals_gdalwarp": ("warp_ours.tif", "warp_cli.tif"),
             "warp_grid_equals_cog_target_srs": ("warp_ours.tif", "warp_rio.tif"),
             "cog_shape_equals_gdal_translate": ("cog_ours.tif", "cog_cli.tif")}
    for key, (ours, theirs) in pairs.items():
        if (out / ours).exists() and (out / theirs).exists():
            with rasterio.open(out / ours) as a, rasterio.open(out / theirs) as b:
                checks[key] = (a.shape == b.shape and a.transform.almost_equals(b.transform)
                               and a.overviews(1) == b.overviews(1))
    return checks


def bytes_report(figures: dict, samples: dict, inputs: dict[str, Path], out: Path) -> dict:
    """Per data set: bytes per pixel and time of every candidate; GDAL's best lossless setting
    (fewest bytes) from rasterio's GDAL (the build ours runs on) and from gdal_translate; our
    profiles' ratios to both and to the same setting; the checks of our outputs.

    A time ratio is the median of the per-run ratios (candidates run back to back in each run),
    which cancels most of the drift of a shared machine; ``time_min`` compares the fastest runs."""
    import rasterio

    def ratios(ours: str, ref: str) -> dict:
        a, b = samples[f"bytes.{data}.{ours}"], samples[f"bytes.{data}.{ref}"]
        return {"bytes": round(a[-1]["size_bytes"] / b[-1]["size_bytes"], 3),
                "time": round(statistics.median(x["wall_s"] / y["wall_s"] for x, y in zip(a, b)), 3),
                "time_min": round(min(x["wall_s"] for x in a) / min(y["wall_s"] for y in b), 3)}

    section = {}
    for data in ("dem", "rgb"):
        with rasterio.open(inputs[f"bytes.{data}"]) as ds:
            pixels, shape = ds.width * ds.height, [ds.count, ds.height, ds.width, ds.dtypes[0]]
        table = {name.removeprefix(f"bytes.{data}."): {
            "bytes": f["size_bytes"], "bytes_per_pixel": round(f["size_bytes"] / pixels, 4),
            "wall_s": f["wall_s"], "cpu_s": f["cpu_s"]}
            for name, f in figures.items() if name.startswith(f"bytes.{data}.")}
        ours = {n: t for n, t in table.items() if n.startswith("ours.")}
        entry = {"shape": shape, "pixels": pixels, "candidates": table}
        for tool in ("rasterio", "gdal"):
            lossless = [n for n in table if n.startswith(f"{tool}.") and n != f"{tool}.deflate"]
            if not lossless:
                continue
            best = min(lossless, key=lambda n: table[n]["bytes"])
            entry[f"{tool}_best_lossless"] = best
            entry[f"ours_vs_{tool}_best"] = {n: ratios(n, best) for n in ours}
            entry[f"ours_vs_{tool}_same_setting"] = {
                n: ratios(n, f"{tool}.{ref}") for n, ref in SAME_SETTING.items() if f"{tool}.{ref}" in table}
            entry[f"default_vs_{tool}_old_default_bytes"] = round(
                ours["ours.deflate"]["bytes"] / table[f"{tool}.deflate"]["bytes"], 3)
        entry["checks"] = _check_outputs(inputs[f"bytes.{data}"], out, data)
        section[data] = entry
    return section


def _check_outputs(src: Path, out: Path, data: str) -> dict:
    """Strict COG validation of each of our outputs; lossless ones equal the source's valid
    pixels exactly, the lossy LERC one stays within its bound."""
    import numpy as np
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    checks = {}
    with rasterio.open(src) as ds:
        ref, valid = ds.read(), ds.dataset_mask() > 0
    for path in sorted(out.glob(f"b_{data}_ours_*.tif")):
        name = path.stem.removeprefix(f"b_{data}_ours_")
        with rasterio.open(path) as ds:
            pixels, mask = ds.read(), ds.dataset_mask() > 0
        error = float(np.abs(pixels[:, valid].astype("float64") - ref[:, valid]).max())
        rounding = float(np.spacing(np.abs(ref[:, valid]).max().astype(ref.dtype))) \
            if ref.dtype.kind == "f" else 0.0  # LERC's bound holds before float32 rounding
        check = {"cog_valid": cog_validate(str(path), strict=True, quiet=True)[0],
                 "mask_equal": bool((mask == valid).all()), "max_abs_error": error}
        if name in OUR_PROFILES:
            check["pixel_exact"] = bool(np.array_equal(pixels[:, valid], ref[:, valid]))
        else:
            check["within_bound"] = error <= LOSSY_LERC[data] + rounding
        checks[name] = check
    return checks


def bytes_targets(section: dict) -> dict:
    """Per data set: our default and our best lossless profile against GDAL's best lossless
    setting on the same GDAL build (rasterio's: the bytes are then comparable exactly)."""
    met = {}
    for data, s in section.items():
        ratios = s["ours_vs_rasterio_best"]
        best = min((n for n in ratios if n.removeprefix("ours.") in OUR_PROFILES),
                   key=lambda n: ratios[n]["bytes"])
        for label, name in (("default", "ours.deflate"), ("best_profile", best)):
            r = ratios[name]
            met[f"{data}_{label}_bytes_vs_gdal_best"] = r["bytes"] <= BYTES_TARGETS["bytes_ratio"]
            met[f"{data}_{label}_time_vs_gdal_best"] = r["time"] <= BYTES_TARGETS["time_ratio"]
        met[f"{data}_best_profile"] = best.removeprefix("ours.")
        met[f"{data}_outputs_checked"] = all(
            c["cog_valid"] and c["mask_equal"] and c.get("pixel_exact", c.get("within_bound"))
            for c in s["checks"].values())
    return met


def report(figures: dict, samples: dict, checks: dict, runs: int, setup_s: float,
           total_s: float) -> dict:
    headers = samples["headers.read_header"]
    files_per_s = round(HEADER_FILES / statistics.median(s["wall_s"] for s in headers), 1)
    cold_files_per_s = round(HEADER_FILES / statistics.median(s["first_pass_s"] for s in headers), 1)
    ratios = {
        "cog_wall_vs_gdal_translate": ratio(figures, "cog.to_cog", "cog.gdal_translate", "wall_s"),
        "cog_peak_vs_gdal_translate": ratio(figures, "cog.to_cog", "cog.gdal_translate", "peak_mb"),
        "cog_wall_vs_rasterio_copy": ratio(figures, "cog.to_cog", "cog.rasterio_copy", "wall_s"),
        "cog_peak_vs_rasterio_copy": ratio(figures, "cog.to_cog", "cog.rasterio_copy", "peak_mb"),
        "warp_wall_vs_gdalwarp": ratio(figures, "warp.to_cog", "warp.gdalwarp", "wall_s"),
        "warp_wall_vs_cog_target_srs": ratio(figures, "warp.to_cog",
                                             "warp.rasterio_cog_target_srs", "wall_s"),
        "tiles_wall_vs_whole_array": ratio(figures, "tiles.windowed", "tiles.whole_array",
                                           "wall_s"),
        "cog_cpu_vs_gdal_translate": ratio(figures, "cog.to_cog", "cog.gdal_translate", "cpu_s"),
        "cog_cpu_vs_rasterio_copy": ratio(figures, "cog.to_cog", "cog.rasterio_copy", "cpu_s"),
        "warp_cpu_vs_gdalwarp": ratio(figures, "warp.to_cog", "warp.gdalwarp", "cpu_s"),
        "tiles_cpu_vs_whole_array": ratio(figures, "tiles.windowed", "tiles.whole_array",
                                          "cpu_s"),
        "tiles_peak_vs_whole_array": ratio(figures, "tiles.windowed", "tiles.whole_array",
                                           "peak_mb"),
        "warp_peak_vs_gdalwarp": ratio(figures, "warp.to_cog", "warp.gdalwarp", "peak_mb"),
    }
    targets = {
        "cog_wall_vs_gdal_translate": _le(ratios["cog_wall_vs_gdal_translate"], TARGETS["wall_ratio"]),
        "cog_wall_vs_rasterio_copy": _le(ratios["cog_wall_vs_rasterio_copy"], TARGETS["wall_ratio"]),
        "cog_peak_vs_anchor": _le(ratios["cog_peak_vs_rasterio_copy"], TARGETS["cog_peak_ratio"]),
        "warp_wall_vs_gdalwarp": _le(ratios["warp_wall_vs_gdalwarp"], TARGETS["wall_ratio"]),
        "warp_peak_mb": _le(figures["warp.to_cog"]["peak_mb"], TARGETS["warp_peak_mb"]),
        "tiles_peak_mb": _le(figures["tiles.windowed"]["peak_mb"], TARGETS["tiles_peak_mb"]),
        "tiles_wall_vs_whole_array": _le(ratios["tiles_wall_vs_whole_array"], TARGETS["wall_ratio"]),
        "headers_files_per_s": files_per_s >= TARGETS["headers_files_per_s"],
    }
    return {"benchmark": "bench_raster", "runs": runs, "cpus": os.cpu_count(),
            "gdal_cli": _cli_version(), "gdal_rasterio": _rio_gdal(),
            "overview_resampling": OVERVIEW_RESAMPLING, "figures": figures, "ratios": ratios,
            "headers_files_per_s": files_per_s, "headers_cold_files_per_s": cold_files_per_s,
            "checks": checks, "targets_met": targets, "all_targets_met": all(
                v for v in targets.values() if v is not None),
            "setup_s": round(setup_s, 1), "total_s": round(total_s, 1)}


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _cli_version() -> str | None:
    if not shutil.which("gdalinfo"):
        return None
    return subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()


def _rio_gdal() -> str:
    import rasterio

    return rasterio.__gdal_version__


def assemble(cases: str, figures: dict, samples: dict, inputs: dict, out: Path, runs: int,
             setup_s: float, started: float) -> dict:
    speed = {n: f for n, f in figures.items() if not n.startswith("bytes.")}
    if cases == "bytes":
        result = {"benchmark": "bench_raster", "runs": runs, "cpus": os.cpu_count(),
                  "gdal_cli": _cli_version(), "gdal_rasterio": _rio_gdal(),
                  "overview_resampling": OVERVIEW_RESAMPLING, "targets_met": {}}
    else:
        result = report(speed, samples, grid_check(out), runs, setup_s, 0.0)
    if cases in ("all", "bytes"):
        result["bytes"] = bytes_report(figures, samples, inputs, out)
        met = bytes_targets(result["bytes"])
        result["bytes_targets_met"] = met
        result["all_targets_met"] = result.get("all_targets_met", True) and all(
            v for v in met.values() if isinstance(v, bool))
    result["setup_s"], result["total_s"] = round(setup_s, 1), round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "SRC", "DST"), help=argparse.SUPPRESS)
    parser.add_argument("--make-inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cases", choices=("all", "speed", "bytes"), default="all",
                        help="speed: conversion, warp, tiles, headers; bytes: output bytes per profile")
    args = parser.parse_args(argv)
    if args.make_inputs:
        maker = make_bytes_inputs if args.cases == "bytes" else make_inputs
        print(json.dumps({k: str(v) for k, v in maker(args.make_inputs).items()}))
        return 0
    if args.child:
        case, src, dst = args.child
        print(json.dumps(run_child(case, src, dst)))
        return 0
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_raster_", dir=args.workdir))
    try:
        inputs = make_inputs_in_child(workdir, args.cases)
        setup_s = time.perf_counter() - started
        out = workdir / "out"
        out.mkdir()
        samples = run_all(candidates(inputs, out, args.cases), args.runs, out)
        figures = summarise(samples)
        result = assemble(args.cases, figures, samples, inputs, out, args.runs, setup_s, started)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for data, section in result.get("bytes", {}).items():
        print(f"{data} {section['shape']}: GDAL's best lossless setting is "
              f"{section['rasterio_best_lossless']} (gdal_translate: {section.get('gdal_best_lossless')})")
        for name, row in sorted(section["candidates"].items()):
            print(f"  {name:28s} {row['bytes_per_pixel']:7.4f} bytes/pixel  {row['wall_s']:6.3f} s")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
