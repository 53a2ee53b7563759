"""Raster facts for cataloging: ``read_header`` gives what a STAC item needs (grid, CRS facts,
footprint, ground sample distance, bands and their statistics, file datetime, COG layout, header
size) from the header alone, plus one decimated read when statistics are asked for. Each fact has
one home in the raster engine (footprint in ``grid_footprint``, statistics in ``raster_stats``,
CRS facts in ``raster_crs``); ``stac_ops`` composes items from a ``RasterHeader`` and never reads
a raster itself.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import re
from collections.abc import Mapping

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader

from iso_times import parse_iso
from georeferencing import TAG_GEOREFERENCING, PixelMapping, georeferencing, provenance_tags
from grid_footprint import footprint, maps_to_lonlat
from raster_crs import body_class, body_geod, celestial_body, crs_code, crs_facts, edge_pixels, pixels_to_lonlat
from raster_env import GDAL_ERRORS, PathLike, file_size, gdal_env, nodata_json, read_error
from raster_models import BandFacts, RasterHeader
from raster_open import open_raster
from raster_stats import STATISTICS_SIZE, band_statistics, read_decimated

log = logging.getLogger(__name__)


def ground_sample_distance(crs: CRS | None, transform: Affine, width: int, height: int) -> float | None:
    """Metres on the ground of one pixel at the grid's centre (square root of its two sides,
    measured geodesically on the WGS 84 ellipsoid, or on the body's own for a CRS of another
    body), for any CRS; None when the centre is off the globe."""
    if crs is None:
        return None
    cols = np.array([width / 2, width / 2 + 1, width / 2])
    rows = np.array([height / 2, height / 2, height / 2 + 1])
    wkt = crs.to_wkt()
    lons, lats = pixels_to_lonlat(wkt, transform, cols, rows)
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        return None
    geod = body_geod(wkt)
    _, _, across = geod.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, down = geod.inv(lons[0], lats[0], lons[2], lats[2])
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
        return parse_iso(text, utc=True)
    except ValueError:
        return None


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
    pixels: np.ma.MaskedArray | None = None,
) -> RasterHeader:
    """What a catalog item needs, from the header alone unless ``statistics`` (then one decimated
    read, served by the overviews, gives each band's statistics; none when ``pixels``, the whole
    raster as validation read it, already are that read). ``src`` is a path or an open dataset
    (left open). CRS facts are cached per distinct CRS."""
    with gdal_env(gdal_config), (contextlib.nullcontext(src) if isinstance(src, DatasetReader)
                                 else open_raster(src)) as ds:
        try:
            return _header_of(ds, densify, statistics, max_stats_size, pixels)
        except GDAL_ERRORS as err:  # a header GDAL cannot finish reading: the file's, named
            raise read_error(ds.name, "reading its header failed", err) from err


def _header_of(ds: DatasetReader, densify: int, statistics: bool, max_stats_size: int,
               pixels: np.ma.MaskedArray | None = None) -> RasterHeader:
    placed = georeferencing(ds) in ("gcps", "rpcs")
    mapping = PixelMapping(ds) if placed else None
    crs = mapping.crs if mapping else ds.crs
    wkt = crs.to_wkt() if crs else None
    epsg, wkt2, projjson = crs_facts(wkt) if wkt else (None, None, None)
    grid = (mapping or ds.transform, ds.width, ds.height)
    georeferenced = crs is not None and (placed or not ds.transform.is_identity) and maps_to_lonlat(wkt)
    body = celestial_body(wkt) if wkt else None
    geometry, bbox = footprint(crs, *grid, densify=densify) if georeferenced else (None, None)
    data = read_decimated(ds, max_size=max_stats_size, pixels=pixels) if statistics else None
    is_tiff = ds.driver in ("GTiff", "COG")
    return RasterHeader(
        path=ds.name, driver=ds.driver, width=ds.width, height=ds.height, count=ds.count,
        dtypes=list(ds.dtypes), nodata=nodata_json(ds.nodata), epsg=epsg, crs_code=crs_code(crs),
        crs_wkt2=wkt2, crs_projjson=projjson, transform=list(ds.transform)[:6],
        bounds=_placed_bounds(mapping, ds.width, ds.height) if mapping else list(ds.bounds),
        bbox=bbox, footprint=geometry, resolution=list(ds.res),
        gsd=ground_sample_distance(crs, *grid) if georeferenced else None,
        block_shape=list(ds.block_shapes[0]), overview_count=len(ds.overviews(1)),
        compression=ds.compression.name if ds.compression else None,
        colorinterp=[c.name for c in ds.colorinterp], has_colormap=has_colormap(ds),
        is_cog=is_tiff and not cog_layout_errors(ds), header_bytes=header_size(ds),
        size_bytes=file_size(ds.name), datetime=file_datetime(ds), bands=band_facts(ds, data),
        body=body, body_class=body_class(body), georeferencing=georeferencing(ds) or "geotransform",
        placement=placement_facts(ds))


def _placed_bounds(mapping: PixelMapping, width: int, height: int) -> list[float]:
    """Bounds in the GCPs' (RPCs') CRS of a raster placed by them: of its densified edge."""
    xs, ys = mapping.forward(*edge_pixels(width, height, 21))
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def placement_facts(ds: DatasetReader) -> dict[str, str]:
    """How the source of ``ds`` was placed when not by a geotransform: a warped output's ``RMH_*``
    tags (``georeferencing.provenance_tags``), else the raster's own GCPs or RPCs."""
    tags = ds.tags()
    if TAG_GEOREFERENCING in tags:
        return {k: v for k, v in tags.items() if k.startswith("RMH_")}
    return provenance_tags(ds) if georeferencing(ds) in ("gcps", "rpcs") else {}


def has_colormap(ds: DatasetReader) -> bool:
    try:
        return ds.count == 1 and bool(ds.colormap(1))
    except ValueError:  # rasterio: "NULL color table"
        return False
