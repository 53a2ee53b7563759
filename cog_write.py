"""``to_cog``: a source converted to a Cloud Optimized GeoTIFF by GDAL's COG driver, pixels
copied unchanged or streamed through a warped VRT, checked with strict COG validation before it
is published; and the creation options a profile means for the COG driver.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Mapping

import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from cog_profiles import COG_PROFILES, EIGHT_BIT_CODECS, LERC_CODECS
from output_staging import staged_output
from raster_checks import issue, nodata_problem
from raster_crs import crs_epsg, parse_crs
from raster_env import GDAL_ERRORS, PathLike, env_options, nodata_json, numpy_dtype, parse_resampling, read_error
from raster_errors import InvalidCog, InvalidOption
from raster_models import CogResult, RasterLimits
from raster_stats import valid_fraction
from raster_validate import preflight
from georeferencing import is_sensor_placed, provenance_tags, source_crs, transformer_options, warp_into
from reprojection import output_grid, warp_grid, warped_vrt
from vrt_documents import band_meta, window_vrt, write_band_meta

log = logging.getLogger(__name__)


def cog_options(profile: str | Mapping[str, str], *, blocksize: int, overview_resampling: str,
                threads: int | str, max_z_error: float | None = None) -> dict[str, str]:
    """COG driver creation options for a named profile (or explicit options).

    ``max_z_error`` (LERC profiles only) is the largest absolute error a pixel may take."""
    if isinstance(profile, str):
        if profile not in COG_PROFILES:
            raise InvalidOption(profile, f"unknown COG profile (known: {', '.join(COG_PROFILES)})")
        base = dict(COG_PROFILES[profile])
    else:
        base = {k.upper(): str(v) for k, v in profile.items()}
    if max_z_error is not None:
        if base.get("COMPRESS", "").upper() not in LERC_CODECS:
            raise InvalidOption(str(max_z_error), "max_z_error applies only to the LERC profiles "
                                f"(lerc, lerc_deflate), not {profile}")
        if not math.isfinite(max_z_error) or max_z_error < 0:
            raise InvalidOption(str(max_z_error), "max_z_error must be a finite number >= 0")
        base["MAX_Z_ERROR"] = repr(float(max_z_error))
    return {"BLOCKSIZE": str(blocksize), "OVERVIEW_RESAMPLING": parse_resampling(
        overview_resampling).name.upper(), "NUM_THREADS": str(threads), "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": FRESH_OVERVIEWS, **base}


#: The COG driver's overview mode: levels always computed from the full resolution, never the
#: source's own overviews copied (``AUTO`` copies them when a source has some: decimation 1 or
#: unsorted levels then make an output strict validation refuses).
FRESH_OVERVIEWS = "IGNORE_EXISTING"


def check_codec(ds: DatasetReader, options: Mapping[str, str]) -> dict[str, str]:
    """The creation options for this data: a codec setting the data cannot take is refused before
    any pixel is written (a lossy 8-bit codec for other data, a lossy LERC error bound for
    integers, LERC for complex data, which it cannot store), and complex data is written without
    a predictor (TIFF's predictors take integers and real floats only)."""
    codec = options.get("COMPRESS", "").upper()
    if any(numpy_dtype(t).kind == "c" for t in ds.dtypes):
        if codec in LERC_CODECS:
            raise InvalidOption(ds.name, f"{codec} cannot store complex data ({ds.dtypes[0]}): choose "
                                "deflate, zstd, lzw or none")
        if options.get("PREDICTOR", "NO").upper() not in ("NO", "1", "NONE"):
            options = {**options, "PREDICTOR": "NO"}
    if codec in EIGHT_BIT_CODECS and (set(ds.dtypes) != {"uint8"} or ds.count not in (1, 3, 4)):
        raise InvalidOption(ds.name, f"{codec} compression needs 1, 3 or 4 uint8 bands, not "
                            f"{ds.count} x {ds.dtypes[0]}")
    if codec in LERC_CODECS and float(options.get("MAX_Z_ERROR", 0)) > 0 \
            and numpy_dtype(ds.dtypes[0]).kind != "f":
        raise InvalidOption(ds.name, f"max_z_error {options['MAX_Z_ERROR']} applies to "
                            f"floating-point data, not {ds.dtypes[0]} (LERC with max_z_error 0 "
                            "is lossless for any type)")
    return dict(options)


def verify_cog(path: str, config: Mapping[str, str]) -> None:
    """Strict COG validation (warnings count as errors); raises ``InvalidCog``. A raster too thin
    to halve (one pixel wide or tall) has no overviews to have: rio-cogeo's advice to add them is
    not held against it."""
    ok, errors, warnings = cog_validate(path, strict=True, config=dict(config), quiet=True)
    if not ok and not errors and all(NO_OVERVIEWS_ADVICE in w for w in warnings):
        with rasterio.open(path) as out:
            ok = overview_cap(out.width, out.height) == 0
    if not ok:
        raise InvalidCog(path, "; ".join(errors + warnings))


#: rio-cogeo's warning for a raster above 512 pixels a side without overviews.
NO_OVERVIEWS_ADVICE = "it is recommended to include internal overviews"


def overview_cap(width: int, height: int) -> int:
    """The most overview levels a raster of this shape can have: halvings before either side
    falls below one pixel (0 for a raster one pixel wide or tall). GDAL keeps such a side at one
    pixel instead, and the level is then no reduction along it: readers that take a level's
    decimation from its width (rasterio, rio-cogeo) see 1 ("Invalid Decimation 1")."""
    return max(min(width, height), 1).bit_length() - 1


def shaped_cog_options(options: Mapping[str, str], width: int, height: int) -> dict[str, str]:
    """COG creation options for an output of this shape: generated overviews (halving until the
    image fits one block, as ``OVERVIEWS=AUTO`` and ``IGNORE_EXISTING`` do) limited to
    ``overview_cap`` levels with ``OVERVIEW_COUNT`` (GDAL >= 3.6), none when the cap is 0 or the
    image fits one block (``NONE`` then: with nothing to build, GDAL 3.10's COG driver copies a
    source's own overviews even under ``IGNORE_EXISTING``). Other options are kept."""
    options = dict(options)
    if options.get("OVERVIEWS", "AUTO").upper() not in ("AUTO", FRESH_OVERVIEWS):
        return options
    block, levels, w, h = int(options.get("BLOCKSIZE", 512)), 0, width, height
    while w > block or h > block:
        w, h, levels = w // 2, h // 2, levels + 1
    if levels == 0:  # one block holds it: no level to build (and the driver would copy the source's)
        return {**options, "OVERVIEWS": "NONE"}
    cap = overview_cap(width, height)
    if cap >= levels:
        return options
    return {**options, "OVERVIEWS": "NONE"} if cap == 0 else {**options, "OVERVIEW_COUNT": str(cap)}


def to_cog(
    src: PathLike,
    dst: PathLike,
    *,
    profile: str | Mapping[str, str] = "deflate",
    max_z_error: float | None = None,
    dst_crs: str | int | CRS | None = None,
    resolution: float | tuple[float, float] | None = None,
    resampling: str = "nearest",
    overview_resampling: str = "nearest",
    nodata: float | None = None,
    blocksize: int = 512,
    threads: int | str = "ALL_CPUS",
    warp_mem_limit_mb: int = 32,
    limits: RasterLimits | None = None,
    tmp_dir: PathLike | None = None,
    gdal_config: Mapping[str, str] | None = None,
    gcp_transform: str = "polynomial",
    rpc_dem: str | None = None,
) -> CogResult:
    """Convert ``src`` to a Cloud Optimized GeoTIFF at ``dst`` with GDAL's COG driver.

    ``profile`` names the compression (``COG_PROFILES``; the lossless ones choose the predictor by
    data type), ``max_z_error`` bounds LERC's per-pixel error for floating-point data.
    Without ``dst_crs`` pixels are copied unchanged (``nodata`` overrides the declared nodata).
    With ``dst_crs`` the source streams through a ``WarpedVRT`` into a local tiled intermediate,
    window by window, then into the COG; a source without nodata or alpha gains an alpha band so
    areas outside the source stay transparent. A source placed by GCPs or RPCs
    (``georeferencing``) is always warped, as gdalwarp warps it: into ``dst_crs``, else its GCPs'
    CRS or EPSG:4326, by ``gcp_transform`` (polynomial by GCP count, an order, or ``tps``) or the
    RPC model at the RPCs' height offset (``rpc_dem``: heights from that DEM), and the output's
    tags say which. The output is checked with strict COG validation before it is published at
    ``dst``.
    """
    started = time.perf_counter()
    config = env_options(gdal_config)
    options = cog_options(profile, blocksize=blocksize, overview_resampling=overview_resampling,
                          threads=threads, max_z_error=max_z_error)
    with rasterio.Env(**config), preflight(src, limits) as ds, staged_output(dst, tmp_dir) as tmp:
        options = check_codec(ds, options)
        placed = is_sensor_placed(ds)
        try:
            if placed:
                crs = parse_crs(dst_crs) if dst_crs is not None else source_crs(ds)
                warp_options = transformer_options(ds, gcp_transform, rpc_dem)
                grid = output_grid(ds, crs, resolution, limits, warp_options)
                _warp_placed_cog(ds, tmp, options, crs, grid, parse_resampling(resampling), nodata,
                                 warp_mem_limit_mb, threads, warp_options,
                                 provenance_tags(ds, gcp_transform, rpc_dem))
            elif dst_crs is None:
                _copy_cog(ds, tmp, shaped_cog_options(options, ds.width, ds.height), nodata)
            else:
                output_grid(ds, parse_crs(dst_crs), resolution, limits)
                _warp_cog(ds, tmp, options, parse_crs(dst_crs), resolution,
                          parse_resampling(resampling), nodata, warp_mem_limit_mb, threads)
        except GDAL_ERRORS as err:
            raise read_error(src, "conversion failed", err) from err
        verify_cog(tmp, config)
        result = _cog_result(tmp, str(dst), dst_crs is not None or placed, started)
    log.debug("wrote COG %s from %s in %.2fs", dst, src, result.elapsed_s)
    return result


def _copy_cog(ds: DatasetReader, tmp: str, options: dict[str, str], nodata: float | None) -> None:
    if nodata is None or nodata_json(nodata) == nodata_json(ds.nodata):
        rasterio.shutil.copy(ds, tmp, driver="COG", **options)
        return
    problem = nodata_problem(nodata, ds.dtypes[0])
    if problem:
        raise InvalidOption(ds.name, problem)
    xml = window_vrt(ds, Window(0, 0, ds.width, ds.height), nodata)
    with rasterio.open(xml) as vrt:
        rasterio.shutil.copy(vrt, tmp, driver="COG", **options)


def _warp_cog(ds: DatasetReader, tmp: str, options: dict[str, str], dst_crs: CRS,
              resolution: float | tuple[float, float] | None, resampling: Resampling,
              nodata: float | None, warp_mem_limit_mb: int, threads: int | str) -> None:
    transform, width, height = warp_grid(ds, dst_crs, resolution)
    intermediate = tmp + ".warped.tif"
    try:
        with warped_vrt(ds, dst_crs, transform, width, height, resampling=resampling,
                        nodata=nodata, warp_mem_limit_mb=warp_mem_limit_mb,
                        threads=threads) as vrt:
            rasterio.shutil.copy(vrt, intermediate, driver="GTiff", TILED="YES",
                                 BLOCKXSIZE="512", BLOCKYSIZE="512", BIGTIFF="IF_SAFER",
                                 SPARSE_OK="TRUE")
        with rasterio.open(intermediate, "r+") as warped:  # a warped VRT drops the source's tags
            warped.update_tags(**ds.tags())
        rasterio.shutil.copy(intermediate, tmp, driver="COG", **shaped_cog_options(options, width, height))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(intermediate)


def _warp_placed_cog(ds: DatasetReader, tmp: str, options: dict[str, str], crs: CRS,
                     grid: tuple[Affine, int, int], resampling: Resampling, nodata: float | None,
                     warp_mem_limit_mb: int, threads: int | str, warp_options: Mapping[str, str],
                     tags: Mapping[str, str]) -> None:
    """A raster placed by GCPs or RPCs warped by GDAL's transformer for them into a local tiled
    intermediate (chunked within ``warp_mem_limit_mb``), then into the COG. Without nodata or an
    alpha band the output gains an alpha band, so what the source does not cover stays
    transparent, as on the reprojection path."""
    transform, width, height = grid
    nodata = ds.nodata if nodata is None else nodata
    src_alpha = ColorInterp.alpha in ds.colorinterp
    bands = [i for i, c in zip(ds.indexes, ds.colorinterp) if c != ColorInterp.alpha]
    alpha = len(bands) + 1 if (src_alpha or nodata is None) else 0
    intermediate = tmp + ".warped.tif"
    profile = {"driver": "GTiff", "width": width, "height": height, "count": len(bands) + (1 if alpha else 0),
               "dtype": ds.dtypes[0], "crs": crs, "transform": transform, "nodata": None if alpha else nodata,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER", "SPARSE_OK": "TRUE"}
    try:
        with rasterio.open(intermediate, "w", **profile) as warped:
            warped.colorinterp = [ds.colorinterp[i - 1] for i in bands] + ([ColorInterp.alpha] if alpha else [])
            warp_into(ds, rasterio.band(warped, list(range(1, len(bands) + 1))), dst_crs=crs,
                      dst_transform=transform, resampling=resampling, nodata=None if alpha else nodata,
                      alpha=alpha, options=warp_options, warp_mem_limit_mb=warp_mem_limit_mb, threads=threads)
            warped.update_tags(**ds.tags(), **tags)
            write_band_meta(warped, [band_meta(ds)[i - 1] for i in bands])
        rasterio.shutil.copy(intermediate, tmp, driver="COG", **shaped_cog_options(options, width, height))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(intermediate)


def _cog_result(tmp: str, dst: str, reprojected: bool, started: float) -> CogResult:
    with rasterio.open(tmp, driver="GTiff") as out:
        fraction = valid_fraction(out)
        notes = [] if fraction != 0.0 else [issue("EmptyRaster", "every pixel is nodata/masked")]
        return CogResult(
            path=dst, size_bytes=os.path.getsize(tmp), epsg=crs_epsg(out.crs),
            crs_wkt=out.crs.to_wkt() if out.crs else None, bounds=list(out.bounds),
            width=out.width, height=out.height, count=out.count, dtype=out.dtypes[0],
            nodata=nodata_json(out.nodata), overview_count=len(out.overviews(1)),
            compression=out.compression.name if out.compression else None,
            predictor=_predictor(out),
            reprojected=reprojected, valid_fraction=fraction, is_empty=fraction == 0.0,
            cog_valid=True, warnings=notes, elapsed_s=time.perf_counter() - started)


def _predictor(ds: DatasetReader) -> int | None:
    value = int(ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR", 1))
    return None if value == 1 else value
