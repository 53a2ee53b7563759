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
from thumbnails import (preview_bands, write_thumbnail, _thumbnail, _stretch)

log = logging.getLogger(__name__)



