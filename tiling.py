"""Tiling: a balanced grid of tiles planned over the output grid (the source's, or a reprojection's),
each tile small enough for one activity's time and memory budget, and one planned tile written
as a COG.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window

from cog_write import check_codec, cog_options, shaped_cog_options, verify_cog
from georeferencing import is_sensor_placed, provenance_tags, source_crs, transformer_options, warp_into
from output_staging import staged_output
from raster_crs import crs_compact_text, crs_epsg, parse_crs
from raster_env import GDAL_ERRORS, PathLike, env_options, gdal_env, numpy_dtype, parse_resampling, read_error
from raster_errors import InvalidOption
from raster_models import RasterLimits, Tile, TilePlan, TileResult, TileWindow
from raster_open import open_raster
from raster_stats import valid_fraction
from raster_validate import preflight
from reprojection import output_grid, warped_vrt
from vrt_documents import band_meta, window_vrt, write_band_meta


def tile_size_for_budget(max_pixels: int, blocksize: int = 512) -> int:
    """Largest square tile side (a multiple of ``blocksize``) with at most ``max_pixels`` pixels."""
    side = int(math.isqrt(max_pixels)) // blocksize * blocksize
    if side < blocksize:
        raise InvalidOption(str(max_pixels), f"budget of {max_pixels} pixels is below one "
                            f"{blocksize} x {blocksize} block")
    return side


def _balanced_edges(length: int, size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the fewest parts of at most ``size`` covering ``length``, as equal
    as possible (they differ by one pixel at most): no sliver at the edge."""
    parts = max(1, math.ceil(length / size))
    base, extra = divmod(length, parts)
    edges, offset = [], 0
    for index in range(parts):
        step = base + (1 if index < extra else 0)
        edges.append((offset, step))
        offset += step
    return edges


def tile_windows(width: int, height: int, size: int) -> Iterator[tuple[int, int, Window]]:
    """Row-major ``(row, col, window)`` of a grid of tiles of at most ``size`` pixels a side,
    balanced: a 3,100-pixel width at size 1024 is four tiles of 775, not three of 1024 and a
    28-pixel sliver (a sliver costs a task, an item and a mosaic source for almost no pixels)."""
    for row, (row_off, rows) in enumerate(_balanced_edges(height, size)):
        for col, (col_off, cols) in enumerate(_balanced_edges(width, size)):
            yield row, col, Window(col_off, row_off, cols, rows)


def tile_path(prefix: str, row: int, col: int) -> str:
    """Deterministic output path of a tile."""
    return f"{prefix.rstrip('/')}/tile_r{row:04d}_c{col:04d}.tif"


def plan_tiles(
    src: PathLike,
    *,
    output_prefix: str,
    tile_size: int | None = None,
    max_pixels: int = 4096 * 4096,
    max_tile_bytes: int | None = None,
    blocksize: int = 512,
    dst_crs: str | int | CRS | None = None,
    resolution: float | tuple[float, float] | None = None,
    resampling: str = "nearest",
    limits: RasterLimits | None = None,
    gdal_config: Mapping[str, str] | None = None,
    gcp_transform: str = "polynomial",
    rpc_dem: str | None = None,
) -> TilePlan:
    """Plan tiles covering the output grid exactly once, in row-major order.

    The output grid is the source grid, or with ``dst_crs`` the grid ``gdalwarp`` would choose.
    ``tile_size`` wins when given; otherwise the side is the largest multiple of ``blocksize``
    within the per-task budget: ``max_pixels``, and ``max_tile_bytes`` of decompressed pixels
    (all bands) when given. A source placed by GCPs or RPCs is always warped (``to_cog``'s
    ``gcp_transform`` and ``rpc_dem``; into its GCPs' CRS or EPSG:4326 without ``dst_crs``).
    Reads the header only.
    """
    warp_options, provenance = {}, {}
    with gdal_env(gdal_config), preflight(src, limits) as ds:
        crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        if is_sensor_placed(ds):
            dst_crs = dst_crs if dst_crs is not None else source_crs(ds)
            warp_options = transformer_options(ds, gcp_transform, rpc_dem)
            provenance = provenance_tags(ds, gcp_transform, rpc_dem)
        if dst_crs is not None:
            crs = parse_crs(dst_crs)
            transform, width, height = output_grid(ds, crs, resolution, limits, warp_options)
        size = tile_size or tile_size_for_budget(
            _pixel_budget(ds, max_pixels, max_tile_bytes), blocksize)
    if size < 1:
        raise InvalidOption(str(size), "tile size must be positive")
    parse_resampling(resampling)
    crs_text = crs_compact_text(crs) if dst_crs is not None else None
    tiles = [_plan_tile(i, r, c, w, transform, output_prefix, crs_text, resampling).model_copy(
                 update={"warp_options": warp_options, "georeferencing": provenance})
             for i, (r, c, w) in enumerate(tile_windows(width, height, size))]
    return TilePlan(source=str(src), warped=dst_crs is not None, crs_wkt=crs.to_wkt(),
                    epsg=crs_epsg(crs), width=width, height=height,
                    transform=list(transform)[:6], tile_size=size, rows=tiles[-1].row + 1,
                    cols=tiles[-1].col + 1, resampling=resampling, tiles=tiles)


def _pixel_budget(ds: DatasetReader, max_pixels: int, max_tile_bytes: int | None) -> int:
    if max_tile_bytes is None:
        return max_pixels
    bytes_per_pixel = sum(numpy_dtype(dt).itemsize for dt in ds.dtypes)
    return min(max_pixels, max_tile_bytes // bytes_per_pixel)


def _plan_tile(index: int, row: int, col: int, window: Window, transform: Affine, prefix: str,
               dst_crs: str | None, resampling: str) -> Tile:
    t = transform @ Affine.translation(window.col_off, window.row_off)
    w, h = int(window.width), int(window.height)
    xs = [t.c, t.c + w * t.a + h * t.b]
    ys = [t.f, t.f + w * t.d + h * t.e]
    return Tile(index=index, row=row, col=col,
                window=TileWindow(col_off=int(window.col_off), row_off=int(window.row_off),
                                  width=w, height=h),
                transform=list(t)[:6], bounds=[min(xs), min(ys), max(xs), max(ys)],
                output_path=tile_path(prefix, row, col), dst_crs=dst_crs,
                resampling=resampling)


def process_tile(
    src: PathLike,
    tile: Tile,
    dst: PathLike | None = None,
    *,
    profile: str | Mapping[str, str] = "deflate",
    max_z_error: float | None = None,
    overview_resampling: str = "nearest",
    blocksize: int = 512,
    threads: int | str = 1,
    warp_mem_limit_mb: int = 32,
    tmp_dir: PathLike | None = None,
    gdal_config: Mapping[str, str] | None = None,
) -> TileResult:
    """Write one planned tile as a COG (``dst`` defaults to ``tile.output_path``).

    Source-grid tiles are a windowed VRT over the source handed straight to the COG driver;
    warped tiles are warped into a tile-sized in-memory raster first. Memory is bounded by the
    tile and GDAL's cache, never by the source. One thread by default: tiles already run in
    parallel as separate activities, and per-thread codec buffers would multiply the footprint.
    """
    started = time.perf_counter()
    dst = str(dst or tile.output_path)
    config = env_options(gdal_config)
    options = shaped_cog_options(cog_options(profile, blocksize=blocksize, overview_resampling=overview_resampling,
                                             threads=threads, max_z_error=max_z_error),
                                 tile.window.width, tile.window.height)
    with rasterio.Env(**config), open_raster(src) as ds, staged_output(dst, tmp_dir) as tmp:
        options = check_codec(ds, options)
        try:
            if tile.dst_crs:
                _warped_tile_cog(ds, tile, tmp, options, warp_mem_limit_mb, threads)
            else:
                with rasterio.open(window_vrt(ds, _tile_window(tile))) as vrt:
                    rasterio.shutil.copy(vrt, tmp, driver="COG", **options)
        except GDAL_ERRORS as err:
            raise read_error(src, f"tile {tile.index} failed", err) from err
        verify_cog(tmp, config)
        with rasterio.open(tmp, driver="GTiff") as out:
            fraction = valid_fraction(out)
        size = os.path.getsize(tmp)
    return TileResult(index=tile.index, path=dst, size_bytes=size, width=tile.window.width,
                      height=tile.window.height, bounds=tile.bounds, valid_fraction=fraction,
                      is_empty=fraction == 0.0, cog_valid=True,
                      elapsed_s=time.perf_counter() - started)


def _tile_window(tile: Tile) -> Window:
    w = tile.window
    return Window(w.col_off, w.row_off, w.width, w.height)


def _placed_tile(ds: DatasetReader, tile: Tile, crs: CRS, transform: Affine, warp_mem_limit_mb: int,
                 threads: int | str) -> tuple[np.ndarray, dict, list[ColorInterp]]:
    """One tile of a source placed by GCPs or RPCs, warped by GDAL's transformer for them into
    memory: its bands, plus an alpha band when the source has one or no nodata."""
    bands = [i for i, c in zip(ds.indexes, ds.colorinterp) if c != ColorInterp.alpha]
    alpha = len(bands) + 1 if (ColorInterp.alpha in ds.colorinterp or ds.nodata is None) else 0
    nodata = None if alpha else ds.nodata
    shape = (len(bands) + (1 if alpha else 0), tile.window.height, tile.window.width)
    data = np.zeros(shape, dtype=numpy_dtype(ds.dtypes[0]))
    if nodata is not None:
        data[:] = nodata
    warp_into(ds, data, dst_crs=crs, dst_transform=transform, resampling=parse_resampling(tile.resampling),
              nodata=nodata, alpha=alpha, options=tile.warp_options, warp_mem_limit_mb=warp_mem_limit_mb,
              threads=threads)
    profile = {"driver": "GTiff", "width": shape[2], "height": shape[1], "count": shape[0],
               "dtype": ds.dtypes[0], "crs": crs, "transform": transform, "nodata": nodata}
    return data, profile, [ds.colorinterp[i - 1] for i in bands] + ([ColorInterp.alpha] if alpha else [])


def _warped_tile_cog(ds: DatasetReader, tile: Tile, tmp: str, options: dict[str, str],
                     warp_mem_limit_mb: int, threads: int | str) -> None:
    crs = parse_crs(tile.dst_crs)
    transform = Affine(*tile.transform)
    if tile.warp_options:
        data, profile, colorinterp = _placed_tile(ds, tile, crs, transform, warp_mem_limit_mb, threads)
    else:
        with warped_vrt(ds, crs, transform, tile.window.width, tile.window.height,
                        resampling=parse_resampling(tile.resampling), nodata=None,
                        warp_mem_limit_mb=warp_mem_limit_mb, threads=threads) as vrt:
            data = vrt.read()
            profile = {"driver": "GTiff", "width": vrt.width, "height": vrt.height,
                       "count": vrt.count, "dtype": vrt.dtypes[0], "crs": crs,
                       "transform": transform, "nodata": vrt.nodata}
            colorinterp = vrt.colorinterp
    with MemoryFile() as mem, mem.open(**profile) as tile_ds:
        tile_ds.write(data)
        tile_ds.colorinterp = colorinterp
        tile_ds.update_tags(**ds.tags(), **tile.georeferencing)  # a warp read into memory drops the tags
        write_band_meta(tile_ds, band_meta(ds))
        rasterio.shutil.copy(tile_ds, tmp, driver="COG", **options)
