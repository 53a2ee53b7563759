"""Synthetic rasters for tests and benchmarks: deterministic smooth gradients plus noise.

A plain importable helper (no pytest): ``write_raster(path, width=..., dtype=..., ...)`` writes a
GeoTIFF whose content depends only on its arguments, so tests can compare outputs pixel for pixel.
Rows are generated and written in chunks, so an 8192 x 8192 x 3 raster never sits in memory whole.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_bounds
from rasterio.windows import Window

#: Bounds used when none are given, per CRS (a small area that is valid in that CRS).
DEFAULT_BOUNDS = {
    "EPSG:4326": (10.0, 45.0, 11.0, 46.0),
    "EPSG:3857": (1113194.9, 5621521.5, 1224514.4, 5780349.2),
    "EPSG:32633": (500000.0, 4980000.0, 510000.0, 4990000.0),
}
#: A CRS without an EPSG code (a custom transverse mercator), for proj:code = null paths.
CUSTOM_CRS = (
    "+proj=tmerc +lat_0=0 +lon_0=10.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=WGS84 +units=m +no_defs"
)
NODATA_FRACTION = 0.1
CHUNK_ROWS = 512


def default_bounds(crs: str | None, width: int, height: int) -> tuple[float, float, float, float]:
    """Bounds for ``crs``: the table above, else a 10 m pixel grid anchored at (500000, 4980000)."""
    if crs in DEFAULT_BOUNDS:
        return DEFAULT_BOUNDS[crs]
    return (500000.0, 4980000.0, 500000.0 + 10.0 * width, 4980000.0 + 10.0 * height)


def value_range(dtype: str, nodata: float | None) -> tuple[float, float]:
    """The range synthetic values span for ``dtype``, kept clear of an integer ``nodata``."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (-100.0, 3000.0)
    info = np.iinfo(dt)
    low, high = float(max(info.min, -30000)), float(min(info.max, 60000))
    if nodata is not None and not math.isnan(nodata):
        if nodata <= low + 1:
            low = nodata + 1
        if nodata >= high - 1:
            high = nodata - 1
    return (low, high)


def pattern(
    row_off: int, rows: int, width: int, height: int, band: int, *, dtype: str, seed: int,
    nodata: float | None = None,
) -> np.ndarray:
    """Rows ``row_off:row_off+rows`` of band ``band``: a diagonal gradient, a wave and noise."""
    yy, xx = np.mgrid[row_off:row_off + rows, 0:width].astype("float32")
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    smooth = 0.5 * u + 0.3 * v + 0.2 * (0.5 + 0.5 * np.sin(6.0 * u + 4.0 * v + band))
    rng = np.random.default_rng([seed, band, row_off])
    noisy = np.clip(smooth + rng.normal(0.0, 0.02, smooth.shape).astype("float32"), 0.0, 1.0)
    low, high = value_range(dtype, nodata)
    values = low + noisy * (high - low)
    if np.dtype(dtype).kind != "f":
        values = np.rint(values)
    return values.astype(dtype)


def nodata_region(row_off: int, rows: int, width: int, height: int) -> np.ndarray:
    """Boolean mask of the nodata corner (the top-left triangle, about 10 % of the raster)."""
    yy, xx = np.mgrid[row_off:row_off + rows, 0:width]
    u, v = xx / max(width, 1), yy / max(height, 1)
    return (u + v) < math.sqrt(2 * NODATA_FRACTION)


def _profile(
    width: int, height: int, count: int, dtype: str, crs: str | None,
    bounds: Sequence[float], nodata: float | None, tiled: bool, blocksize: int,
    compress: str | None, interleave: str,
) -> dict:
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": CRS.from_user_input(crs) if crs else None,
        "transform": from_bounds(*bounds, width, height), "nodata": nodata,
        "interleave": interleave,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    else:
        profile.update(tiled=False, blockysize=min(blocksize, height))
    if compress:
        profile["compress"] = compress
    if count >= 3 and dtype == "uint8":
        profile["photometric"] = "RGB"
    return profile


def write_raster(
    path: str | Path,
    *,
    width: int = 256,
    height: int = 256,
    count: int = 1,
    dtype: str = "uint8",
    crs: str | None = "EPSG:4326",
    bounds: Sequence[float] | None = None,
    nodata: float | None = None,
    alpha: bool = False,
    tiled: bool = True,
    blocksize: int = 256,
    compress: str | None = None,
    interleave: str = "pixel",
    seed: int = 0,
    fill_nodata: bool = True,
    empty: bool = False,
) -> Path:
    """Write a deterministic synthetic GeoTIFF and return its path.

    ``count`` data bands (plus an alpha band when ``alpha``); where ``nodata`` is given (NaN
    allowed) the top-left corner is set to it when ``fill_nodata``, and with ``alpha`` that corner
    is transparent. ``empty`` writes nodata (or alpha 0) everywhere. ``crs=None`` writes no CRS.
    """
    path = Path(path)
    bounds = tuple(bounds) if bounds is not None else default_bounds(crs, width, height)
    total = count + (1 if alpha else 0)
    profile = _profile(width, height, total, dtype, crs, bounds, nodata, tiled, blocksize,
                       compress, interleave)
    with rasterio.open(path, "w", **profile) as dst:
        if alpha:
            dst.colorinterp = _color_interp(count) + [ColorInterp.alpha]
        for row_off in range(0, height, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, height - row_off)
            dst.write(_chunk(row_off, rows, width, height, count, dtype, seed, nodata, alpha,
                             fill_nodata, empty), window=Window(0, row_off, width, rows))
    return path


def _color_interp(count: int) -> list[ColorInterp]:
    if count >= 3:
        return [ColorInterp.red, ColorInterp.green, ColorInterp.blue] + (
            [ColorInterp.undefined] * (count - 3))
    return [ColorInterp.gray] + [ColorInterp.undefined] * (count - 1)


def _chunk(
    row_off: int, rows: int, width: int, height: int, count: int, dtype: str, seed: int,
    nodata: float | None, alpha: bool, fill_nodata: bool, empty: bool,
) -> np.ndarray:
    bands = [pattern(row_off, rows, width, height, b, dtype=dtype, seed=seed, nodata=nodata)
             for b in range(count)]
    data = np.stack(bands)
    hole = (np.ones((rows, width), bool) if empty
            else nodata_region(row_off, rows, width, height))
    if nodata is not None and (fill_nodata or empty):
        data[:, hole] = nodata
    if alpha:
        top = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else 1
        mask = np.where(hole & (fill_nodata or empty), 0, top).astype(dtype)
        data = np.concatenate([data, mask[np.newaxis]])
    return data


def write_tiff_header_only(path: str | Path, *, width: int, height: int,
                           tile: int | None = None) -> Path:
    """A tiny hand-made TIFF that *claims* ``width`` x ``height`` deflate pixels (a bomb shape).

    One strip (or one ``tile`` x ``tile`` tile) of a few bytes: any reader that trusts the
    header would inflate it to ``width * height`` bytes. Used to prove size checks happen
    before any pixel is read.
    """
    import struct

    layout = ([(322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, 0), (325, 4, 1, 8)] if tile
              else [(273, 4, 1, 0), (278, 4, 1, height), (279, 4, 1, 8)])
    entries = sorted([  # (tag, type, count, value); types: 3 SHORT, 4 LONG
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8),
        (262, 3, 1, 1), (277, 3, 1, 1), (284, 3, 1, 1), *layout,
    ])
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    body = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, typ, cnt, val in entries:
        val = data_offset if tag in (273, 324) else val
        packed = struct.pack("<HHI", tag, typ, cnt)
        packed += struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val)
        body += packed
    body += struct.pack("<I", 0) + bytes(8)
    path = Path(path)
    path.write_bytes(bytes(body))
    return path


def write_imagery_from_terrain(dem: str | Path, path: str | Path, *, noise: float = 2.0,
                               seed: int = 3) -> Path:
    """8-bit RGB imagery rendered from a DEM (hypsometric tints, hill shading, sensor noise), on
    the DEM's grid: content that compresses like aerial or satellite imagery, not like noise."""
    with rasterio.open(dem) as ds:
        z, profile = ds.read(1).astype("float64"), ds.profile
        valid = ds.read_masks(1) > 0
    z = np.where(valid, z, 0.0)
    gy, gx = np.gradient(z, abs(profile["transform"].a))
    shade = np.clip(0.7 + 0.3 * (gx - gy) / (1 + np.hypot(gx, gy)), 0, 1)
    tint = np.stack([np.interp(z, [0, 800, 2500], [c, c + 60, 240]) for c in (60, 110, 50)])
    water = np.array([20.0, 40.0, 120.0])[:, None, None]
    rgb = np.where(valid, tint * shade, water)
    rgb += np.random.default_rng(seed).normal(0.0, noise, rgb.shape)
    profile.update(count=3, dtype="uint8", nodata=None, photometric="RGB", compress="deflate")
    path = Path(path)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(np.rint(rgb), 0, 255).astype("uint8"))
    return path


def write_complex(path: str | Path, *, dtype: str = "complex_int16", width: int = 600, height: int = 520,
                  crs: str | None = "EPSG:32633", nodata: float | None = None, tiled: bool = True) -> Path:
    """A complex raster (SAR single-look complex: ``complex_int16`` is GDAL's CInt16): the real part
    the factory's gradient, the imaginary part its mirror image, so the amplitude varies."""
    real = pattern(0, height, width, height, 0, dtype="int16", seed=7).astype("float32")
    values = (real + 1j * real[:, ::-1]).astype("complex64")
    profile = _profile(width, height, 1, dtype, crs, default_bounds(crs, width, height), nodata, tiled,
                       256, None, "pixel")
    path = Path(path)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values[np.newaxis].astype("complex128" if dtype == "complex128" else "complex64"))
    return path


def write_gcp_raster(path: str | Path, *, width: int = 400, height: int = 300, grid: int = 5,
                     crs: str | None = "EPSG:4326", dtype: str = "uint16", nodata: float | None = None,
                     curve: float = 0.02) -> Path:
    """A raster placed by ground control points only (no geotransform), as SAR GRD products are:
    ``grid`` x ``grid`` GCPs (or fewer: ``grid`` may be a count below 4, then on the diagonal)
    from a rotated, slightly curved mapping of pixels to lon/lat near (10 E, 45 N)."""
    from rasterio.control import GroundControlPoint

    def lonlat(col: float, row: float) -> tuple[float, float]:
        u, v = col / width, row / height
        return 10.0 + 0.8 * u + 0.25 * v + curve * u * v, 45.0 - 0.2 * u - 0.6 * v + curve * u * u

    if grid >= 2:
        points = [(c * width / (grid - 1), r * height / (grid - 1)) for r in range(grid) for c in range(grid)]
    else:
        points = []
    gcps = [GroundControlPoint(row=r, col=c, x=lonlat(c, r)[0], y=lonlat(c, r)[1], id=str(i))
            for i, (c, r) in enumerate(points)]
    values = pattern(0, height, width, height, 0, dtype=dtype, seed=11, nodata=nodata)
    path = Path(path)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=dtype,
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(values[np.newaxis])
        if gcps:
            dst.gcps = (gcps, CRS.from_user_input(crs) if crs else CRS())  # CRS(): GCPs without a CRS
    return path


def write_rpc_raster(path: str | Path, *, width: int = 400, height: int = 300, height_off: float = 500.0,
                     dtype: str = "uint8") -> Path:
    """A raster placed by RPCs only (a satellite sensor model): lines follow latitude and samples
    longitude over a 0.4 x 0.3 degree scene near (10 E, 45 N), and the sample also moves with
    height (0.05 of the sample scale per height scale), so the height used shows in the output."""
    from rasterio.rpc import RPC

    zeros = [0.0] * 20
    rpc = RPC(height_off=height_off, height_scale=500.0, lat_off=45.0, lat_scale=0.15, long_off=10.0,
              long_scale=0.2, line_off=height / 2, line_scale=height / 2, samp_off=width / 2, samp_scale=width / 2,
              line_num_coeff=[0.0, 0.0, -1.0] + zeros[3:], line_den_coeff=[1.0] + zeros[1:],
              samp_num_coeff=[0.0, 1.0, 0.0, 0.05] + zeros[4:], samp_den_coeff=[1.0] + zeros[1:])
    values = pattern(0, height, width, height, 0, dtype=dtype, seed=13)
    path = Path(path)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=dtype,
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(values[np.newaxis])
        dst.rpcs = rpc
    return path


def write_flat_dem(path: str | Path, height_m: float, bounds: tuple[float, float, float, float] = (9.5, 44.5, 10.5, 45.5)) -> Path:
    """A constant-height DEM in EPSG:4326 (for the RPC model's heights)."""
    path = Path(path)
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1, dtype="float32",
                       crs=CRS.from_epsg(4326), transform=from_bounds(*bounds, 100, 100)) as dst:
        dst.write(np.full((1, 100, 100), height_m, dtype="float32"))
    return path
