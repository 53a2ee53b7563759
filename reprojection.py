"""Reprojection: the output grid of a warp as ``gdalwarp -t_srs [-tr]`` would choose it (and where
GDAL's suggestion fails, across the antimeridian or around a pole, the source's own extent at its
own resolution), and the warped VRT onto a grid.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform

from georeferencing import is_sensor_placed, source_crs, transformer_options, warp_grid as sensor_warp_grid
from grid_footprint import maps_to_lonlat
from raster_crs import celestial_body, crs_epsg, edge_pixels, parse_crs, pixels_to_lonlat, to_lonlat
from raster_env import GDAL_ERRORS, gdal_reason
from raster_errors import CannotReproject, InvalidOption, RasterTooLarge
from raster_models import RasterLimits


def warp_grid(ds: DatasetReader, dst_crs: CRS,
              resolution: float | tuple[float, float] | None = None) -> tuple[Affine, int, int]:
    """Output transform and size of a reprojection, as ``gdalwarp -t_srs [-tr]`` computes them.

    GDAL suggests the grid (``GDALSuggestedWarpOutput2``); a requested resolution then keeps the
    suggested top-left corner and rounds the size to the nearest pixel, like gdalwarp does.
    """
    wrapped = _wrapping_grid(ds, dst_crs, resolution)
    if wrapped is not None:
        return wrapped
    if ds.transform.b == 0 and ds.transform.d == 0:
        width, height, bounds = _within_area_of_use(ds, dst_crs)
        transform, width, height = calculate_default_transform(ds.crs, dst_crs, width, height,
                                                               *bounds)
    else:
        with WarpedVRT(ds, crs=dst_crs) as vrt:  # GDAL's suggestion from the rotated transform
            transform, width, height = vrt.transform, vrt.width, vrt.height
    if resolution is None:
        return transform, width, height
    xres, yres = (resolution, resolution) if isinstance(resolution, (int, float)) else resolution
    extent_x, extent_y = width * transform.a, height * -transform.e
    width, height = int(extent_x / xres + 0.5), int(extent_y / yres + 0.5)
    return Affine(xres, 0, transform.c, 0, -yres, transform.f), max(width, 1), max(height, 1)


def check_warped_size(ds: DatasetReader, width: int, height: int, limits: RasterLimits | None) -> None:
    """Refuse a reprojection whose output grid passes the pixel limit a source is held to:
    pixels far longer than wide (a 1 x 100,000 strip of 10 km x 0.1 m pixels) become square
    pixels of their finer side, gigapixels from a small file."""
    limits = limits or RasterLimits()
    if width * height > limits.max_pixels:
        xres, yres = abs(ds.transform.a) or 1.0, abs(ds.transform.e) or 1.0
        raise RasterTooLarge(ds.name, f"reprojected, its {ds.width} x {ds.height} pixels would become "
                             f"{width} x {height} = {width * height} pixels, over the limit of "
                             f"{limits.max_pixels} (its pixels are {max(xres, yres) / min(xres, yres):.0f} "
                             "times longer than wide; reprojection makes them square)")


def output_grid(ds: DatasetReader, dst_crs: CRS, resolution: float | tuple[float, float] | None = None,
                limits: RasterLimits | None = None, warp_options: Mapping[str, str] | None = None
                ) -> tuple[Affine, int, int]:
    """``warp_grid`` (for a raster placed by GCPs or RPCs, ``georeferencing.warp_grid`` with
    ``warp_options``, its transformer's), with what stops it named: CannotReproject when no grid
    can be computed (GDAL's or PROJ's error as the reason), RasterTooLarge over the pixel limit."""
    try:
        if is_sensor_placed(ds):
            transform, width, height = sensor_warp_grid(ds, dst_crs, resolution, warp_options)
        else:
            transform, width, height = warp_grid(ds, dst_crs, resolution)
    except (*GDAL_ERRORS, CRSError, pyproj.exceptions.ProjError) as err:
        raise CannotReproject(ds.name, f"no grid in {dst_crs.to_string() or 'the target CRS'} for its "
                              f"CRS and extent: {gdal_reason(err)}") from err
    check_warped_size(ds, width, height, limits)
    return transform, width, height


def warped_pixels(ds: DatasetReader, dst_crs: str | int | CRS | None, limits: RasterLimits | None = None,
                  *, gcp_transform: str = "polynomial", rpc_dem: str | None = None) -> int:
    """Pixels of what ``to_cog`` writes of ``ds``: reprojected to ``dst_crs``, or (a raster placed
    by GCPs or RPCs, warped even without one) into its GCPs' CRS or EPSG:4326 by ``to_cog``'s
    ``gcp_transform`` / ``rpc_dem``, else its own; refused as ``output_grid`` refuses them: what
    decides whether a conversion fits one task."""
    placed = is_sensor_placed(ds)
    crs = parse_crs(dst_crs) if dst_crs is not None else source_crs(ds) if placed else None
    if crs is None:
        return ds.width * ds.height
    options = transformer_options(ds, gcp_transform, rpc_dem) if placed else None
    _, width, height = output_grid(ds, crs, limits=limits, warp_options=options)
    return width * height


def _wrapping_grid(ds: DatasetReader, dst_crs: CRS, resolution: float | tuple[float, float] | None
                   ) -> tuple[Affine, int, int] | None:
    """The output grid where GDAL's suggestion fails: a source across the antimeridian, or around
    a pole, into a target whose x is a longitude (geographic, Mercator, Plate Carrée). GDAL then
    suggests a globe-wide strip at a fraction of the resolution (a UTM zone 60 scene into EPSG:3857
    came out 574 x 14 px). Here the extent is the source's outline with longitudes made continuous
    (so it may pass ±180°: a valid, contiguous grid), at the source's own resolution. A pole in a
    Mercator target cannot be represented: refused with the reason. None for every other case."""
    if ds.crs is None or not maps_to_lonlat(ds.crs.to_wkt()) or celestial_body(ds.crs.to_wkt()) is not None:
        return None  # a CRS of another body: GDAL's own suggestion, within that body
    period = _longitude_period(dst_crs)
    if period is None:
        return None
    wkt = ds.crs.to_wkt()
    src = pyproj.CRS.from_wkt(wkt)
    lons, lats = pixels_to_lonlat(wkt, ds.transform, *edge_pixels(ds.width, ds.height, 41))
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        return None
    lons = np.rad2deg(np.unwrap(np.deg2rad(lons)))
    west, south, east, north = to_lonlat(wkt).transform_bounds(*ds.bounds, densify_pts=41)
    pole = "North" if north >= 90 else "South" if south <= -90 else None
    if pole and ds.crs.is_geographic:
        return None  # a lon/lat grid reaching a pole is clipped to the target's area of use
    crosses = pole is None and (lons.max() > 180 or lons.min() < -180)
    if pole is None and not crosses:
        return None
    dst = pyproj.CRS.from_wkt(dst_crs.to_wkt())
    if pole and not dst.is_geographic:
        raise InvalidOption(ds.name, f"the raster covers the {pole} Pole, which {dst_crs.to_string()} cannot "
                                     "represent (a Mercator grid ends short of the poles): keep its CRS or choose "
                                     "a polar one (EPSG:3413, EPSG:3031)")
    from_lonlat = pyproj.Transformer.from_crs("EPSG:4326", dst, always_xy=True)
    if pole:
        left, right = from_lonlat.transform([-180.0, 180.0], [0.0, 0.0])[0]
        edge = from_lonlat.transform([0.0, 0.0], [south if pole == "North" else north, 90.0 if pole == "North" else -90.0])[1]
        bottom, top = min(edge), max(edge)
    else:
        tx, ty = from_lonlat.transform(lons, lats, errcheck=False)
        tx = np.unwrap(np.asarray(tx, dtype=float), period=period)
        left, right, bottom, top = float(tx.min()), float(tx.max()), float(np.min(ty)), float(np.max(ty))
    xres, yres = ((resolution, resolution) if isinstance(resolution, (int, float)) else resolution) \
        if resolution is not None else (_native_resolution(ds, src, dst),) * 2
    width, height = max(1, math.ceil((right - left) / xres)), max(1, math.ceil((top - bottom) / yres))
    if resolution is None:  # fit the extent exactly (the pixels get a hair finer)
        xres, yres = (right - left) / width, (top - bottom) / height
    return Affine(xres, 0, left, 0, -yres, top), width, height


def _longitude_period(dst_crs: CRS) -> float | None:
    """Target x units per 360° of longitude when x is a linear function of longitude alone
    (geographic, Mercator, equirectangular), else None."""
    dst = pyproj.CRS.from_wkt(dst_crs.to_wkt())
    if dst.is_geographic:
        return 360.0
    try:
        forward = pyproj.Transformer.from_crs("EPSG:4326", dst, always_xy=True)
        x, _ = forward.transform([0.0, 45.0, 90.0, 45.0], [0.0, 0.0, 0.0, 40.0], errcheck=True)
    except pyproj.exceptions.ProjError:
        return None
    quarter = x[2] - x[0]
    linear = math.isclose(x[1] - x[0], quarter / 2, rel_tol=1e-9) and math.isclose(x[3], x[1], rel_tol=1e-9)
    return 4 * quarter if linear and quarter > 0 else None


def _native_resolution(ds: DatasetReader, src: pyproj.CRS, dst: pyproj.CRS) -> float:
    """The target-CRS length of one source pixel, measured halfway between the centre and the
    bottom edge (away from a pole at the centre), the finer of its two directions."""
    to_dst = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    col, row = ds.width / 2, ds.height * 0.75
    pts = [ds.transform * (col, row), ds.transform * (col + 1, row), ds.transform * (col, row + 1)]
    x, y = to_dst.transform([p[0] for p in pts], [p[1] for p in pts])
    steps = [math.hypot(x[i] - x[0], y[i] - y[0]) for i in (1, 2)]
    return min(step for step in steps if step > 0)


def _within_area_of_use(ds: DatasetReader, dst_crs: CRS) -> tuple[int, int, tuple[float, ...]]:
    """Source size and bounds, with lon/lat sources clipped to the target CRS's latitudes.

    A whole-globe EPSG:4326 raster reaches +-90 degrees, where Web Mercator is infinite and the
    suggested grid degenerates; clipping to the target's area of use (+-85.06 for EPSG:3857)
    gives the grid ``gdalwarp -te`` over that area would. Other sources are unchanged.
    """
    left, bottom, right, top = ds.bounds
    area = None
    if ds.crs.is_geographic:
        with contextlib.suppress(pyproj.exceptions.CRSError):
            epsg = crs_epsg(dst_crs)
            area = (pyproj.CRS.from_epsg(epsg) if epsg else
                    pyproj.CRS.from_wkt(dst_crs.to_wkt(version="WKT2_2019"))).area_of_use
    if area is None or (bottom >= area.south and top <= area.north):
        return ds.width, ds.height, (left, bottom, right, top)
    south, north = max(bottom, area.south), min(top, area.north)
    height = max(1, round(ds.height * (north - south) / (top - bottom)))
    return ds.width, height, (left, south, right, north)


def warped_vrt(ds: DatasetReader, dst_crs: CRS, transform: Affine, width: int, height: int, *,
               resampling: Resampling, nodata: float | None, warp_mem_limit_mb: int,
               threads: int | str) -> WarpedVRT:
    """A ``WarpedVRT`` onto the given grid; adds alpha when the source has no nodata or alpha."""
    src_nodata = ds.nodata if nodata is None else nodata
    has_alpha = ColorInterp.alpha in ds.colorinterp
    kwargs: dict[str, Any] = {}
    if src_nodata is not None:
        kwargs.update(src_nodata=src_nodata, nodata=src_nodata)
    elif not has_alpha:
        kwargs["add_alpha"] = True
    # A geographic source whose longitudes pass ±180° (170..190) is found by the warper only if
    # its CRS wraps longitudes around its centre (PROJ's lon_wrap), not into [-180, 180].
    left, _, right, _ = ds.bounds
    if ds.crs and ds.crs.is_geographic and (right > 180 or left < -180):
        kwargs["src_crs"] = CRS.from_proj4(f"{ds.crs.to_proj4()} +lon_wrap={(left + right) / 2:g}")
    return WarpedVRT(ds, crs=dst_crs, transform=transform, width=width, height=height,
                     resampling=resampling, warp_mem_limit=warp_mem_limit_mb,
                     warp_extras={"NUM_THREADS": str(threads), "INIT_DEST": "NO_DATA"}, **kwargs)
