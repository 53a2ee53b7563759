"""The raster engine's result and request models: pydantic only, so they load without GDAL.

Results (``ValidationReport``, ``RasterHeader``, ``CogResult``, ``TilePlan``, ``TileResult``,
``MosaicResult``, ``ThumbnailResult``) dump to plain JSON; nodata values travel as ``Nodata``
(NaN and infinities as strings).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Union

from pydantic import BaseModel, Field

from raster_errors import ERRORS_BY_CODE, GeoOpsError


#: Longest CRS text accepted (a WKT2 or PROJJSON of a projected CRS is a few KB).
MAX_CRS_TEXT = 16 * 1024

Nodata = Union[float, str, None]  # NaN and infinities travel as "nan" / "inf" / "-inf" in JSON


class Issue(BaseModel):
    """One finding of validation: ``code`` is the error class name (or a warning name)."""

    code: str
    message: str


class RasterLimits(BaseModel):
    """Limits checked from the header, before any pixel is read."""

    max_pixels: int = 4_000_000_000
    max_bands: int = 64
    max_decompressed_bytes: int = 32 * 1024**3
    max_block_bytes: int = 256 * 1024**2  # one strip/tile (all bands) decoded at once
    allowed_dtypes: tuple[str, ...] = (
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
        "float32", "float64", "complex_int16", "complex64", "complex128")
    warn_compression_ratio: float = 1000.0


class ValidationReport(BaseModel):
    """What ``validate`` found; ``errors`` block processing, ``warnings`` do not."""

    path: str
    valid: bool
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
    driver: str | None = None
    width: int | None = None
    height: int | None = None
    count: int | None = None
    dtypes: list[str] = Field(default_factory=list)
    nodata: Nodata = None
    epsg: int | None = None
    crs_wkt: str | None = None
    file_bytes: int | None = None
    decompressed_bytes: int | None = None
    blocks_sampled: int = 0
    valid_fraction: float | None = None
    is_empty: bool | None = None
    is_cog: bool = False
    cog_errors: list[str] = Field(default_factory=list)
    cog_warnings: list[str] = Field(default_factory=list)
    pixels: Any = Field(default=None, exclude=True, repr=False)
    """The raster's pixels when validation decoded all of them and it is small enough to describe
    from them (``raster_checks.BlockSample.data``): ``read_header(..., pixels=)`` takes its
    statistics from them instead of reading them again. Never serialized."""

    def __eq__(self, other: object) -> bool:
        """Reports are equal when they say the same (the pixels they carry are not said)."""
        if not isinstance(other, ValidationReport):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def raise_for_errors(self) -> None:
        """Raise the first blocking error as its ``GeoOpsError`` subclass."""
        if self.errors:
            first = self.errors[0]
            raise ERRORS_BY_CODE.get(first.code, GeoOpsError)(self.path, first.message)


class BandStatistics(BaseModel):
    """Statistics of one band from a decimated read (``valid_percent`` alone when all is nodata)."""

    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    stddev: float | None = None
    valid_percent: float


class BandFacts(BaseModel):
    """One band as a catalog sees it; ``statistics`` only when asked for (a decimated read)."""

    index: int
    dtype: str
    nodata: Nodata = None
    colorinterp: str
    description: str | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    statistics: BandStatistics | None = None


class RasterHeader(BaseModel):
    """What a catalog item needs: the header's facts, and band statistics when asked for."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: list[str]
    nodata: Nodata
    epsg: int | None
    crs_code: str | None  # AUTHORITY:CODE (EPSG, ESRI, OGC...), None for a CRS without one
    crs_wkt2: str | None
    crs_projjson: dict[str, Any] | None
    transform: list[float]
    bounds: list[float]
    bbox: list[float] | None
    footprint: dict[str, Any] | None
    resolution: list[float]
    gsd: float | None  # metres on the ground of a pixel at the centre
    block_shape: list[int]
    overview_count: int
    compression: str | None
    colorinterp: list[str]
    has_colormap: bool = False
    is_cog: bool  # passes rio-cogeo's (non-strict) COG rules, judged from the TIFF directory
    header_bytes: int | None
    size_bytes: int | None = None  # local files only
    datetime: dt.datetime | None = None  # the file's own (TIFFTAG_DATETIME, IMAGERY domain)
    bands: list[BandFacts] = Field(default_factory=list)
    #: The body of the solar system the CRS is on, None for the Earth: then ``bbox`` and
    #: ``footprint`` are the body's planetocentric longitude/latitude, ``gsd`` its metres.
    body: str | None = None
    body_class: str | None = None  # the solar-system extension's target class ("planet", "satellite"...)
    #: How the raster itself is placed: by its geotransform, or (without one) by GCPs or RPCs, when
    #: the CRS, bounds, footprint and gsd are those of the GCPs' (RPCs') transformation.
    georeferencing: str = "geotransform"
    #: How the source of what was written was placed, when not by a geotransform (``RMH_*`` tags
    #: of a warped output, or the raster's own GCPs/RPCs): what an item says of it.
    placement: dict[str, str] = Field(default_factory=dict)


class CogResult(BaseModel):
    """A COG written by ``to_cog``."""

    path: str
    size_bytes: int | None
    epsg: int | None
    crs_wkt: str | None
    bounds: list[float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: Nodata
    overview_count: int
    compression: str | None
    predictor: int | None = None  # TIFF predictor: 2 horizontal, 3 floating-point
    reprojected: bool
    valid_fraction: float | None
    is_empty: bool
    cog_valid: bool
    warnings: list[Issue] = Field(default_factory=list)
    elapsed_s: float


class TileWindow(BaseModel):
    """A pixel window of the output grid."""

    col_off: int
    row_off: int
    width: int
    height: int


class Tile(BaseModel):
    """One unit of tiled work, self-contained (an activity's whole payload).

    A window of the output grid, its transform and bounds, where its COG goes, and for warped
    plans the target CRS (``"EPSG:n"`` or WKT2) and resampling; ``dst_crs`` None = source grid.
    """

    index: int
    row: int
    col: int
    window: TileWindow
    transform: list[float]
    bounds: list[float]
    output_path: str
    dst_crs: str | None = None
    resampling: str = "nearest"
    #: A source placed by GCPs or RPCs: GDAL's transformer options for it, and the tags that say so.
    warp_options: dict[str, str] = Field(default_factory=dict)
    georeferencing: dict[str, str] = Field(default_factory=dict)


class TilePlan(BaseModel):
    """A deterministic grid of tiles covering the output exactly once (row-major)."""

    source: str
    warped: bool
    crs_wkt: str
    epsg: int | None
    width: int
    height: int
    transform: list[float]
    tile_size: int
    rows: int
    cols: int
    resampling: str
    tiles: list[Tile]


class TileResult(BaseModel):
    """A tile COG written by ``process_tile``."""

    index: int
    path: str
    size_bytes: int | None
    width: int
    height: int
    bounds: list[float]
    valid_fraction: float | None
    is_empty: bool
    cog_valid: bool
    elapsed_s: float


class MosaicResult(BaseModel):
    """A VRT over tile COGs, openable as one dataset."""

    path: str
    tile_count: int
    width: int
    height: int
    count: int
    dtype: str
    epsg: int | None
    crs_wkt: str
    transform: list[float]
    bounds: list[float]
    bbox: list[float] | None
    footprint: dict[str, Any] | None


class ThumbnailResult(BaseModel):
    """A PNG preview written by ``write_thumbnail``."""

    path: str
    width: int
    height: int
    bands: str  # "grey" or "rgb" (each with an alpha band)
    size_bytes: int
