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
from raster_facts import (_GEOD, ground_sample_distance, band_facts, _TIFF_DATETIME, parse_file_datetime,
                          file_datetime, _tiff_tag, _tiff_offsets, header_size, cog_layout_errors,
                          read_header, _header_of, _has_colormap)

log = logging.getLogger(__name__)



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
