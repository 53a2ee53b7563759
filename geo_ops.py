"""Raster engine: validation, COG conversion, reprojection, tiling, mosaics and header reads.

A typed library over rasterio and GDAL. Every operation takes explicit arguments, including the
GDAL configuration (``gdal_config``, applied with ``rasterio.Env``); nothing here reads the process
environment or knows about Azure. Sources and destinations are local paths or GDAL virtual paths
(``/vsiaz/...``, ``/vsicurl/...``). Results are pydantic models that dump to plain JSON.

Pixels always stream through GDAL (the COG driver, warped VRTs, windowed VRTs), so memory is
bounded by GDAL's block cache and one warp chunk or one tile, never by the size of the source.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union
from warnings import catch_warnings, simplefilter
from xml.sax.saxutils import escape

import numpy as np
import pyproj
import rasterio
import rasterio.shutil
from affine import Affine
from pydantic import BaseModel, Field
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate
from raster_errors import (GeoOpsError, RasterNotFound, EmptyFile, UnsupportedFormat, UnreadableRaster,
                           MissingCRS, DegenerateTransform, RasterTooLarge, UnsupportedDtype, InvalidNodata,
                           InvalidOption, InvalidCog, IncompatibleTiles, SourceUnavailable, OutputWriteError,
                           ERRORS_BY_CODE)
from raster_models import (Nodata, Issue, RasterLimits, ValidationReport, BandStatistics, BandFacts,
                           RasterHeader, CogResult, TileWindow, Tile, TilePlan, TileResult, MosaicResult,
                           ThumbnailResult)
from raster_env import (PathLike, DEFAULT_GDAL_CONFIG, env_options, gdal_env, GDAL_ERRORS, gdal_reason,
                        is_virtual, nodata_json, parse_resampling, _file_size, _TRANSIENT,
                        is_transient_reason, read_error)
from raster_crs import (MAX_CRS_TEXT, _AUTHORITY_CODE, _WKT_KEYWORDS, _PROJ_FILE_PARAMS, parse_crs,
                        _crs_from_text, _crs_facts, crs_epsg, _crs_code, _crs_text, _to_lonlat, lonlat,
                        _pixels_to_lonlat)
from raster_open import (ALLOWED_DRIVERS, REFERENCING_DRIVERS, MAGIC, _describe_bytes, sniff_bytes,
                         _sniff_local, sniff_driver, open_raster, _open_error, open_allowed)
from raster_stats import (STATISTICS_SIZE, SCAN_LIMIT_PIXELS, valid_fraction, sample_windows,
                          _mask_non_finite, read_decimated, band_statistics)
from raster_checks import (Findings, _issue, check_georeferencing, decompressed_bytes, check_size,
                           check_dtypes, nodata_problem, check_nodata, BlockSample, all_valid,
                           WHOLE_READ_BYTES, check_blocks, _decode, check_cog_layout)
from raster_validate import (validate, validated, _validate_dataset, preflight)
from output_staging import (staged_output, publish, _remove_partial)
from vrt_documents import (BandMeta, band_meta, write_band_meta, _band_meta_xml, _band_xml, _GDAL_TYPES,
                           _nodata_text, _rect, _metadata_xml, _vrt_xml, _has_dataset_mask, window_vrt)
from cog_profiles import (COG_PROFILES, LERC_CODECS, LOSSLESS_PROFILES, EIGHT_BIT_CODECS)
from grid_footprint import (_edge_pixels, _contains_pole, _unwrap, _clip_ring, _simplify, _drop_collinear,
                            _ccw_ring, _clamped_bbox, _box, _ring_footprint, _convex_hull, _sampled_footprint,
                            footprint)
from reprojection import (warp_grid, _wrapping_grid, _longitude_period, _native_resolution,
                          _within_area_of_use, warped_vrt)
from cog_write import (cog_options, check_codec, verify_cog, to_cog, _copy_cog, _warp_cog, _cog_result,
                       _predictor)
from tiling import (tile_size_for_budget, _balanced_edges, tile_windows, tile_path, plan_tiles, _pixel_budget,
                    _plan_tile, process_tile, _tile_window, _warped_tile_cog)
from mosaics import (build_mosaic, _TileFacts, _MosaicGrid, _tile_facts, _mosaic_grid, _mosaic_xml)

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------------------------
# Raster facts for cataloging: each fact has its home here (footprint, lon/lat transformer,
# block sampler, statistics, nodata, file datetime, COG layout, header size); stac_ops composes
# STAC items from a ``RasterHeader`` and never reads a raster itself.


_GEOD = pyproj.Geod(ellps="WGS84")


def ground_sample_distance(crs: CRS | None, transform: Affine, width: int, height: int) -> float | None:
    """Metres on the ground of one pixel at the grid's centre (square root of its two sides,
    measured geodesically), for any CRS; None when the centre is off the globe."""
    if crs is None:
        return None
    cols = np.array([width / 2, width / 2 + 1, width / 2])
    rows = np.array([height / 2, height / 2, height / 2 + 1])
    lons, lats = _pixels_to_lonlat(crs.to_wkt(), transform, cols, rows)
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        return None
    _, _, across = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, down = _GEOD.inv(lons[0], lats[0], lons[2], lats[2])
    gsd = math.sqrt(abs(across * down))
    return round(gsd, 3) if gsd > 0 else None


def band_facts(ds: DatasetReader, statistics: np.ma.MaskedArray | None = None) -> list[BandFacts]:
    """The bands of ``ds``; with ``statistics`` (a ``read_decimated`` of every band) their statistics."""
    return [BandFacts(index=i, dtype=ds.dtypes[i - 1], nodata=nodata_json(ds.nodatavals[i - 1]),
                      colorinterp=ds.colorinterp[i - 1].name, description=ds.descriptions[i - 1] or None,
                      unit=ds.units[i - 1] or None, scale=float(ds.scales[i - 1]),
                      offset=float(ds.offsets[i - 1]),
                      statistics=None if statistics is None else band_statistics(statistics[i - 1]))
            for i in ds.indexes]


_TIFF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def parse_file_datetime(text: str) -> dt.datetime | None:
    """A datetime tag's value (TIFF ``YYYY:MM:DD HH:MM:SS`` or ISO 8601) in UTC; a value without
    a zone is read as UTC. None when it does not parse."""
    match = _TIFF_DATETIME.match(text.strip())
    try:
        if match:
            return dt.datetime(*map(int, match.groups()), tzinfo=dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def file_datetime(ds: DatasetReader) -> dt.datetime | None:
    """The file's own datetime: ``TIFFTAG_DATETIME``, else the IMAGERY domain's
    ``ACQUISITIONDATETIME``; unparseable values are logged and skipped."""
    for text in filter(None, (ds.tags().get("TIFFTAG_DATETIME"),
                              ds.tags(ns="IMAGERY").get("ACQUISITIONDATETIME"))):
        parsed = parse_file_datetime(text)
        if parsed is not None:
            return parsed
        log.warning("raster %s: unparseable datetime tag %r ignored", ds.name, text)
    return None


def _tiff_tag(ds: DatasetReader, name: str, ovr: int | None = None) -> str | None:
    try:
        return ds.get_tag_item(name, "TIFF", bidx=1, ovr=ovr)
    except GDAL_ERRORS:
        return None


def _tiff_offsets(ds: DatasetReader) -> list[tuple[int, int]]:
    """``(IFD offset, first block offset)`` of the full resolution, then of each overview
    (0 where unknown or the block is sparse). Reads the TIFF directory only."""
    levels = [None, *range(len(ds.overviews(1)))]
    return [(int(_tiff_tag(ds, "IFD_OFFSET", ovr) or 0), int(_tiff_tag(ds, "BLOCK_OFFSET_0_0", ovr) or 0))
            for ovr in levels]


def header_size(ds: DatasetReader) -> int | None:
    """Bytes before the first pixel data of a TIFF (its IFDs and tag arrays, for a COG): what a
    reader fetches to open it (``file:header_size``). None for other formats."""
    if ds.driver not in ("GTiff", "COG"):
        return None
    offsets = [block for _, block in _tiff_offsets(ds) if block]
    return min(offsets) if offsets else None


def cog_layout_errors(ds: DatasetReader) -> list[str]:
    """Why ``ds`` is not a Cloud Optimized GeoTIFF (empty when it is), from its TIFF directory
    alone, by the rules of rio-cogeo's (non-strict) ``cog_validate`` on the already open dataset."""
    if ds.driver not in ("GTiff", "COG"):
        return [f"{ds.driver} is not a GeoTIFF"]
    errors = []
    if max(ds.width, ds.height) > 512 and ds.block_shapes[0][1] == ds.width:
        errors.append("larger than 512 pixels but not tiled")
    if any(name.lower().endswith(".ovr") for name in ds.files):
        errors.append("overviews are in an external .ovr file")
    ghost = _tiff_tag(ds, "GDAL_STRUCTURAL_METADATA") or ""
    if "KNOWN_INCOMPATIBLE_EDITION=YES" in ghost:
        errors.append("its COG layout was invalidated by a later edit")
    overviews = ds.overviews(1)
    if overviews != sorted(overviews) or any(level <= 1 for level in overviews):
        errors.append(f"overview decimations {overviews} are not increasing")
    if errors:
        return errors
    offsets = _tiff_offsets(ds)
    ifds, blocks = [ifd for ifd, _ in offsets], [block for _, block in offsets if block]
    if ifds[0] > 300:
        errors.append(f"the main IFD is at byte {ifds[0]}, not at the start")
    if ifds != sorted(ifds):
        errors.append("overview IFDs do not follow the main IFD in order")
    if blocks and min(blocks) < max(ifds):
        errors.append("pixel data precedes an IFD")
    if blocks != sorted(blocks, reverse=True):
        errors.append("overview data is not stored smallest overview first")
    return errors


def read_header(
    src: PathLike | DatasetReader,
    *,
    densify: int = 21,
    statistics: bool = False,
    max_stats_size: int = STATISTICS_SIZE,
    gdal_config: Mapping[str, str] | None = None,
) -> RasterHeader:
    """What a catalog item needs, from the header alone unless ``statistics`` (then one decimated
    read, served by the overviews, gives each band's statistics). ``src`` is a path or an open
    dataset (left open). CRS facts are cached per distinct CRS."""
    if isinstance(src, DatasetReader):
        with gdal_env(gdal_config):
            return _header_of(src, densify, statistics, max_stats_size)
    with gdal_env(gdal_config), open_raster(src) as ds:
        return _header_of(ds, densify, statistics, max_stats_size)


def _header_of(ds: DatasetReader, densify: int, statistics: bool, max_stats_size: int) -> RasterHeader:
    crs = ds.crs
    wkt = crs.to_wkt() if crs else None
    epsg, wkt2, projjson = _crs_facts(wkt) if wkt else (None, None, None)
    grid = (ds.transform, ds.width, ds.height)
    georeferenced = crs is not None and not ds.transform.is_identity
    geometry, bbox = footprint(crs, *grid, densify=densify) if georeferenced else (None, None)
    data = read_decimated(ds, max_size=max_stats_size) if statistics else None
    is_tiff = ds.driver in ("GTiff", "COG")
    return RasterHeader(
        path=ds.name, driver=ds.driver, width=ds.width, height=ds.height, count=ds.count,
        dtypes=list(ds.dtypes), nodata=nodata_json(ds.nodata), epsg=epsg, crs_code=_crs_code(crs),
        crs_wkt2=wkt2, crs_projjson=projjson, transform=list(ds.transform)[:6], bounds=list(ds.bounds),
        bbox=bbox, footprint=geometry, resolution=list(ds.res),
        gsd=ground_sample_distance(crs, *grid) if georeferenced else None,
        block_shape=list(ds.block_shapes[0]), overview_count=len(ds.overviews(1)),
        compression=ds.compression.name if ds.compression else None,
        colorinterp=[c.name for c in ds.colorinterp], has_colormap=_has_colormap(ds),
        is_cog=is_tiff and not cog_layout_errors(ds), header_bytes=header_size(ds),
        size_bytes=_file_size(ds.name), datetime=file_datetime(ds), bands=band_facts(ds, data))


def _has_colormap(ds: DatasetReader) -> bool:
    try:
        return ds.count == 1 and bool(ds.colormap(1))
    except ValueError:  # rasterio: "NULL color table"
        return False


# ----------------------------------------------------------------------------------------------
# Thumbnails


def preview_bands(colorinterp: Sequence[str]) -> list[int]:
    """The bands (1-based) a picture shows, from the bands' colour interpretation names: red,
    green and blue when they are named, else the first band that is not alpha."""
    rgb = [colorinterp.index(c) + 1 if c in colorinterp else None for c in ("red", "green", "blue")]
    if all(rgb):
        return rgb
    return [next((i for i, c in enumerate(colorinterp, start=1) if c != "alpha"), 1)]


def write_thumbnail(
    src: PathLike | DatasetReader,
    dst: PathLike,
    *,
    max_size: int = 256,
    rescale: Sequence[tuple[float, float]] | None = None,
    gdal_config: Mapping[str, str] | None = None,
) -> ThumbnailResult:
    """A PNG of at most ``max_size`` pixels on the long side: RGB(A) for colour imagery, grey
    (or the band's palette) otherwise, nodata and masked pixels transparent.

    Pixels come from one decimated read that GDAL serves from the overviews; a raster larger
    than four times ``max_size`` without overviews is refused rather than read in full.
    Non-byte data (and byte data with ``rescale``) is stretched linearly from ``rescale``, one
    ``(min, max)`` per shown band, by default the bands' statistics as an item states them
    (``read_header(statistics=True)``: a decimated read of ``STATISTICS_SIZE`` pixels).
    """
    if isinstance(src, DatasetReader):
        with gdal_env(gdal_config):
            return _thumbnail(src, str(dst), max_size, rescale)
    with gdal_env(gdal_config), open_raster(src) as ds:
        return _thumbnail(ds, str(dst), max_size, rescale)


def _thumbnail(ds: DatasetReader, dst: str, max_size: int,
               rescale: Sequence[tuple[float, float]] | None) -> ThumbnailResult:
    if max(ds.width, ds.height) > 4 * max_size and not ds.overviews(1):
        raise InvalidOption(ds.name, "has no overviews: a thumbnail would read every pixel")
    indexes = [1] if _has_colormap(ds) else preview_bands([c.name for c in ds.colorinterp])
    if rescale is None and not _has_colormap(ds) and ds.dtypes[indexes[0] - 1] != "uint8":
        stats = [band_statistics(b) for b in read_decimated(ds, max_size=STATISTICS_SIZE, indexes=indexes)]
        rescale = None if any(s.minimum is None for s in stats) else [(s.minimum, s.maximum) for s in stats]
    data = read_decimated(ds, max_size=max_size, indexes=indexes)
    alpha = np.where(np.ma.getmaskarray(data).all(axis=0), 0, 255).astype("uint8")  # as GDAL's dataset mask
    if _has_colormap(ds):
        palette = np.zeros((256, 4), dtype="uint8")
        for value, colour in ds.colormap(1).items():
            palette[value] = colour
        pixels = palette[data[0].filled(0).astype("uint8")].transpose(2, 0, 1)
        image = np.concatenate([pixels[:3], np.minimum(pixels[3:], alpha[None])])
    else:
        image = np.concatenate([_stretch(data, ds.dtypes[indexes[0] - 1], rescale), alpha[None]])
    with catch_warnings(), MemoryFile() as mem, staged_output(dst) as tmp:
        simplefilter("ignore", NotGeoreferencedWarning)  # a picture: no map coordinates
        preview = mem.open(driver="GTiff", width=image.shape[2], height=image.shape[1],
                           count=image.shape[0], dtype="uint8")
        preview.write(image)
        preview.colorinterp = ([ColorInterp.gray, ColorInterp.alpha] if image.shape[0] == 2 else
                               [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
        rasterio.shutil.copy(preview, tmp, driver="PNG", ZLEVEL="9")
        preview.close()
        size = os.path.getsize(tmp)
    return ThumbnailResult(path=dst, width=image.shape[2], height=image.shape[1],
                           bands="grey" if image.shape[0] == 2 else "rgb", size_bytes=size)


def _stretch(data: np.ma.MaskedArray, dtype: str, rescale: Sequence[tuple[float, float]] | None) -> np.ndarray:
    """Bands scaled to 0..255: byte data as it is unless ``rescale`` is given; other data from
    ``rescale`` or (all nodata) left at 0."""
    if dtype == "uint8" and rescale is None:
        return data.filled(0).astype("uint8")
    out = np.zeros(data.shape, dtype="uint8")
    for i, band in enumerate(data):
        if rescale is None:
            continue
        low, high = rescale[i]
        span = (high - low) or 1.0
        scaled = (band.filled(low).astype("float64") - low) * (255.0 / span)
        out[i] = np.clip(np.round(scaled), 0, 255).astype("uint8")
    return out
