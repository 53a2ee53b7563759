"""Raster engine: validation, COG conversion, reprojection, tiling, mosaics and header reads.

A typed library over rasterio and GDAL. Every operation takes explicit arguments, including the
GDAL configuration (``gdal_config``, applied with ``rasterio.Env``); nothing here reads the process
environment or knows about Azure. Sources and destinations are local paths or GDAL virtual paths
(``/vsiaz/...``, ``/vsicurl/...``). Results are pydantic models that dump to plain JSON.

Pixels always stream through GDAL (the COG driver, warped VRTs, windowed VRTs), so memory is
bounded by GDAL's block cache and one warp chunk or one tile, never by the size of the source.

This module is the engine's public face: its verbs and models, each defined in a room of its own.

=================== ==============================================================================
room                its one job
=================== ==============================================================================
``raster_errors``   the errors: ``GeoOpsError`` and a subclass per condition (plain Python)
``raster_models``   the result models (pydantic only)
``raster_env``      the GDAL configuration, GDAL's errors read as ours, virtual paths, nodata as JSON
``raster_crs``      CRS parsing without files or network, CRS facts, points and pixels as lon/lat
``raster_open``     opening untrusted rasters: sniffed by their bytes, allow-listed drivers only
``raster_stats``    bounded pixel reads: block sample, decimated read, band statistics, valid share
``raster_checks``   validation checks, each ``(errors, warnings)``
``raster_validate`` ``validate`` / ``validated`` / ``preflight``: the checks composed
``output_staging``  write to a temporary place, check, publish in one step
``vrt_documents``   VRT XML built here (a window, a mosaic's parts) and band metadata kept on outputs
``cog_profiles``    the COG compression profiles and codec facts (plain Python)
``reprojection``    the output grid of a warp, the warped VRT
``cog_write``       ``to_cog`` and the COG driver's creation options
``tiling``          ``plan_tiles`` and ``process_tile``
``mosaics``         ``build_mosaic``: a VRT over tile COGs
``georeferencing``  rasters placed by GCPs or RPCs: gdalwarp's transformer, grid and warp
``grid_footprint``  the lon/lat footprint and bbox of a pixel grid
``raster_facts``    ``read_header``: what a catalog item needs from a raster
``thumbnails``      ``write_thumbnail``: a PNG preview
=================== ==============================================================================
"""
from __future__ import annotations

from cog_profiles import COG_PROFILES, EIGHT_BIT_CODECS, LERC_CODECS, LOSSLESS_PROFILES  # noqa: F401
from cog_write import (NO_OVERVIEWS_ADVICE, check_codec, cog_options, overview_cap, shaped_cog_options,  # noqa: F401
                       to_cog, verify_cog)
from georeferencing import (GCP_TRANSFORMS, TAG_GCP_COUNT, TAG_GCP_TRANSFORM, TAG_GEOREFERENCING,  # noqa: F401
                            TAG_RPC_DEM, TAG_RPC_HEIGHT, georeferencing, is_sensor_placed, polynomial_order)
from grid_footprint import footprint, maps_to_lonlat  # noqa: F401
from mosaics import build_mosaic  # noqa: F401
from output_staging import publish, staged_output  # noqa: F401
from raster_checks import (WHOLE_READ_BYTES, BlockSample, Findings, all_valid, check_blocks,  # noqa: F401
                           check_cog_layout, check_dtypes, check_georeferencing, check_nodata, check_size,
                           decompressed_bytes, nodata_problem)
from raster_checks import issue as _issue  # noqa: F401  (cubes.py on the multidim branch calls geo_ops._issue)
from raster_crs import MAX_CRS_TEXT, celestial_body, crs_epsg, lonlat, parse_crs  # noqa: F401
from raster_env import (DEFAULT_GDAL_CONFIG, GDAL_ERRORS, PathLike, env_options, gdal_env,  # noqa: F401
                        gdal_reason, is_transient_reason, is_virtual, nodata_json, parse_resampling,
                        read_error)
from raster_errors import (ERRORS_BY_CODE, CannotReproject, DegenerateTransform, EmptyFile, GeoOpsError,  # noqa: F401
                           IncompatibleTiles, InvalidCog, InvalidNodata, InvalidOption, MissingCRS,
                           OutputWriteError, RasterNotFound, RasterTooLarge, SourceUnavailable,
                           UnreadableRaster, UnsupportedDtype, UnsupportedFormat)
from raster_facts import (band_facts, cog_layout_errors, file_datetime, ground_sample_distance,  # noqa: F401
                          header_size, parse_file_datetime, read_header)
from raster_models import (BandFacts, BandStatistics, CogResult, Issue, MosaicResult, Nodata,  # noqa: F401
                           RasterHeader, RasterLimits, ThumbnailResult, Tile, TilePlan, TileResult,
                           TileWindow, ValidationReport)
from raster_open import (ALLOWED_DRIVERS, MAGIC, REFERENCING_DRIVERS, open_allowed, open_raster,  # noqa: F401
                         sniff_bytes, sniff_driver)
from raster_stats import (SCAN_LIMIT_PIXELS, STATISTICS_SIZE, band_statistics, read_decimated,  # noqa: F401
                          sample_windows, valid_fraction)
from raster_validate import preflight, validate, validated  # noqa: F401
from reprojection import check_warped_size, output_grid, warp_grid, warped_pixels, warped_vrt  # noqa: F401
from thumbnails import preview_bands, write_thumbnail  # noqa: F401
from tiling import plan_tiles, process_tile, tile_path, tile_size_for_budget, tile_windows  # noqa: F401
from vrt_documents import BandMeta, band_meta, window_vrt, write_band_meta  # noqa: F401
