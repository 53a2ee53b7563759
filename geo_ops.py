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

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Nodata = Union[float, str, None]  # NaN and infinities travel as "nan" / "inf" / "-inf" in JSON

#: GDAL configuration applied under every operation unless the caller overrides a key.
DEFAULT_GDAL_CONFIG: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_CACHEMAX": "32",  # MB: enough for one warp chunk or tile; peak RSS stays ~200 MB
    "CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE": "YES",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # Guards for untrusted files (https://gdal.org/user/security.html): no Python pixel
    # functions, no raw-file bands, no .aux.xml side files read or written, no sibling listing.
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
    "GDAL_PAM_ENABLED": "NO",
}

#: Drivers allowed to open inputs: self-contained, single-file formats.
ALLOWED_DRIVERS = frozenset({"GTiff", "COG", "JP2OpenJPEG", "PNG", "JPEG", "WEBP"})
#: Formats refused because they can reference other files or URLs.
REFERENCING_DRIVERS = frozenset({
    "VRT", "GTI", "WMS", "WMTS", "STACIT", "STACTA", "DAAS", "EEDAI", "netCDF", "HDF4", "HDF5",
    "MRF", "ESRIC", "PLMosaic", "OGCAPI", "Zarr", "GPKG", "MBTiles", "Rasterlite", "PDS4", "VICAR",
})
#: Leading bytes of the allowed formats, and the GDAL driver each one means.
MAGIC = {
    b"II*\x00": "GTiff", b"MM\x00*": "GTiff", b"II+\x00": "GTiff", b"MM\x00+": "GTiff",
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"\x00\x00\x00\x0cjP  ": "JP2OpenJPEG",
    b"\xffO\xffQ": "JP2OpenJPEG", b"RIFF": "WEBP",
}

#: Creation options of the GDAL COG driver per compression profile. ``PREDICTOR=YES`` lets GDAL
#: pick the predictor by data type: floating-point (3) for floats, horizontal (2) for integers.
#: LERC is lossless at ``MAX_Z_ERROR=0``; ``to_cog(max_z_error=...)`` trades accuracy for bytes.
COG_PROFILES: dict[str, dict[str, str]] = {
    "deflate": {"COMPRESS": "DEFLATE", "PREDICTOR": "YES"},
    "zstd": {"COMPRESS": "ZSTD", "PREDICTOR": "YES"},
    "lzw": {"COMPRESS": "LZW", "PREDICTOR": "YES"},
    "lerc": {"COMPRESS": "LERC_ZSTD", "MAX_Z_ERROR": "0"},
    "lerc_deflate": {"COMPRESS": "LERC_DEFLATE", "MAX_Z_ERROR": "0"},
    "webp": {"COMPRESS": "WEBP", "QUALITY": "85"},
    "jpeg": {"COMPRESS": "JPEG", "QUALITY": "85"},
    "none": {"COMPRESS": "NONE"},
}
#: Codecs that take ``MAX_Z_ERROR``.
LERC_CODECS = frozenset({"LERC", "LERC_ZSTD", "LERC_DEFLATE"})
#: Profiles whose output decodes to exactly the source's pixels (LERC ones at max_z_error 0, which
#: keep every visible pixel but store those under a fully transparent alpha as 0).
LOSSLESS_PROFILES = frozenset({"deflate", "zstd", "lzw", "lerc", "lerc_deflate", "none"})


# ----------------------------------------------------------------------------------------------
# Errors


class GeoOpsError(Exception):
    """Base class of the raster engine's errors; carries the offending path and the reason."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RasterNotFound(GeoOpsError):
    """The source does not exist or cannot be reached."""


class EmptyFile(GeoOpsError):
    """The file has zero bytes."""


class UnsupportedFormat(GeoOpsError):
    """The file is not a raster format on the allow-list (VRT, text, multi-file formats...)."""


class UnreadableRaster(GeoOpsError):
    """The raster cannot be opened, or its pixel blocks fail to decode."""


class MissingCRS(GeoOpsError):
    """The raster has no coordinate reference system."""


class DegenerateTransform(GeoOpsError):
    """The geotransform is missing (identity) or singular."""


class RasterTooLarge(GeoOpsError):
    """Pixel count, band count or estimated decompressed size exceeds the configured limits."""


class UnsupportedDtype(GeoOpsError):
    """A band's data type is not on the allowed list."""


class InvalidNodata(GeoOpsError):
    """The nodata value cannot be represented in the band's data type."""


class InvalidOption(GeoOpsError):
    """An argument (profile, resampling, tile size, CRS...) is not usable."""


class InvalidCog(GeoOpsError):
    """An output failed strict COG validation."""


class IncompatibleTiles(GeoOpsError):
    """Tiles given to a mosaic do not share CRS, resolution, bands or data type."""


class SourceUnavailable(GeoOpsError):
    """The source could not be reached (network or HTTP error): transient, worth a retry."""


class OutputWriteError(GeoOpsError):
    """Writing or publishing an output failed; nothing was left at the destination."""


class CannotReproject(GeoOpsError):
    """No grid in the target CRS can be computed for the raster: its CRS has no transformation to
    the target (an engineering or local CRS), or none of its points fall in the target's domain."""


ERRORS_BY_CODE: dict[str, type[GeoOpsError]] = {
    cls.__name__: cls for cls in (
        RasterNotFound, EmptyFile, UnsupportedFormat, UnreadableRaster, MissingCRS,
        DegenerateTransform, RasterTooLarge, UnsupportedDtype, InvalidNodata, InvalidOption,
        InvalidCog, IncompatibleTiles, SourceUnavailable, OutputWriteError, CannotReproject)
}


# ----------------------------------------------------------------------------------------------
# Models


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
        "float32", "float64")
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


# ----------------------------------------------------------------------------------------------
# Small helpers: environment, paths, nodata, CRS


def env_options(gdal_config: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Engine defaults, then ``extra``, then the caller's ``gdal_config`` (which wins).

    ``GDAL_CACHEMAX`` follows GDAL's convention (below 100000 it means megabytes) and is handed
    to ``rasterio.Env`` as bytes, since rasterio takes an int there as a byte count.
    """
    options = {**DEFAULT_GDAL_CONFIG, **extra, **(gdal_config or {})}
    if "GDAL_CACHEMAX" in options:
        value = str(options["GDAL_CACHEMAX"]).strip()
        if not value.isdigit():
            raise InvalidOption(value, "GDAL_CACHEMAX must be a whole number of MB (or bytes)")
        options["GDAL_CACHEMAX"] = int(value) * 1024 * 1024 if int(value) < 100000 else int(value)
    return options


def gdal_env(gdal_config: Mapping[str, Any] | None = None, **extra: Any
             ) -> rasterio.Env | contextlib.nullcontext:
    """``rasterio.Env`` with the engine defaults, overridden by ``gdal_config``; nothing to enter
    when the active environment already sets every one of those options to the same value (a
    dataset read inside the environment that opened it: entering and leaving an environment
    costs ~0.14 ms, three times a file)."""
    options = env_options(gdal_config, **extra)
    if rasterio.env.hasenv():
        active = rasterio.env.getenv()
        if all(k in active and active[k] == v for k, v in options.items()):
            return contextlib.nullcontext()
    return rasterio.Env(**options)


GDAL_ERRORS = (RasterioError, CPLE_BaseError)


def gdal_reason(err: BaseException) -> str:
    """The most specific message of a GDAL error chain (rasterio wraps the GDAL message)."""
    messages = []
    while err is not None and len(messages) < 4:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    specific = [m for m in messages if "See previous exception" not in m]
    return specific[-1] if specific else messages[0]


def is_virtual(path: PathLike) -> bool:
    """True for GDAL virtual paths (``/vsiaz/``, ``/vsicurl/``, ``/vsimem/``...)."""
    return str(path).startswith("/vsi")


def nodata_json(value: float | None) -> Nodata:
    """A nodata value as JSON can carry it: NaN and infinities become strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def parse_resampling(name: str | Resampling) -> Resampling:
    """A ``Resampling`` member from its name."""
    if isinstance(name, Resampling):
        return name
    try:
        return Resampling[name.lower()]
    except KeyError as err:
        raise InvalidOption(name, f"unknown resampling {name!r}") from err


#: Longest CRS text accepted (a WKT2 with a long history fits in a few KB).
MAX_CRS_TEXT = 16 * 1024
_AUTHORITY_CODE = re.compile(r"^([A-Za-z][A-Za-z0-9_]{0,31}):([A-Za-z0-9_]{1,32})$")
_WKT_KEYWORDS = re.compile(
    r"^(PROJCS|GEOGCS|GEOCCS|COMPD_CS|PROJCRS|PROJECTEDCRS|GEOGCRS|GEOGRAPHICCRS|GEODCRS|"
    r"GEODETICCRS|BOUNDCRS|COMPOUNDCRS)\s*[\[(]", re.IGNORECASE)
#: PROJ string parameters that name files (init files, grids): never taken from a request.
_PROJ_FILE_PARAMS = frozenset({"init", "nadgrids", "geoidgrids", "hgridshift", "vgridshift",
                               "grids", "file", "catalog", "gridlist"})


def parse_crs(value: str | int | CRS) -> CRS:
    """A ``CRS`` from text a client may send, without touching a file or the network.

    Accepted: an EPSG code (``3857``, ``"EPSG:3857"``), ``AUTHORITY:CODE`` (``"ESRI:102100"``,
    ``"OGC:CRS84"``), WKT1/WKT2, PROJJSON and PROJ strings without file parameters. GDAL's
    ``SetFromUserInput`` (``CRS.from_user_input``) is never used: it reads files and fetches URLs.
    """
    if isinstance(value, CRS):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidOption(str(value), "a CRS must be text or an EPSG code")
    text = str(value).strip()
    if len(text) > MAX_CRS_TEXT:
        raise InvalidOption(text[:40] + "...", f"CRS text is {len(text)} characters; the limit is {MAX_CRS_TEXT}")
    try:
        crs = _crs_from_text(text)
    except (CRSError, pyproj.exceptions.CRSError, ValueError) as err:
        raise InvalidOption(text[:200], f"unusable CRS: {str(err).splitlines()[0][:300]}") from None
    if not (crs.is_projected or crs.is_geographic):
        raise InvalidOption(text[:200], "a target CRS must be projected or geographic")
    return crs


def _crs_from_text(text: str) -> CRS:
    if text.isdigit():
        return CRS.from_epsg(int(text))
    match = _AUTHORITY_CODE.match(text)
    if match:
        authority, code = match.group(1).upper(), match.group(2)
        return CRS.from_epsg(int(code)) if authority == "EPSG" and code.isdigit() else \
            CRS.from_authority(authority, code)
    if _WKT_KEYWORDS.match(text):
        return CRS.from_wkt(text)
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict) or "type" not in data:
            raise ValueError("PROJJSON must be a JSON object with a 'type'")
        return CRS.from_wkt(pyproj.CRS.from_json_dict(data).to_wkt())
    if text.startswith("+"):
        keys = {part.lstrip("+").split("=", 1)[0].lower() for part in text.split()}
        if keys & _PROJ_FILE_PARAMS:
            raise ValueError(f"PROJ parameters naming files are not accepted: {sorted(keys & _PROJ_FILE_PARAMS)}")
        return CRS.from_proj4(text)
    raise ValueError("not an EPSG code, AUTHORITY:CODE, WKT, PROJJSON or PROJ string "
                     "(file names and URLs are never read)")


@lru_cache(maxsize=256)
def _crs_facts(wkt: str) -> tuple[int | None, str, dict[str, Any] | None]:
    """EPSG code (None when not an EPSG CRS), WKT2 and PROJJSON of a CRS, cached by its WKT."""
    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg(confidence_threshold=100)
    try:
        projjson = crs.to_dict(projjson=True)
    except CRSError:
        projjson = None
    return epsg, crs.to_wkt(version="WKT2_2019"), projjson


def crs_epsg(crs: CRS | None) -> int | None:
    """The EPSG code of ``crs`` when it is exactly an EPSG CRS, else None."""
    return _crs_facts(crs.to_wkt())[0] if crs else None


def _file_size(path: PathLike) -> int | None:
    """Size in bytes of a local file; None for virtual paths (not known without a request)."""
    if is_virtual(path):
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Format sniffing and opening (never reads pixels)


def _describe_bytes(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised signature {head[:8].hex()}"
    if text.lstrip().startswith("<"):
        return "an XML document"
    return "text" if text.isprintable() or "\n" in text else f"unrecognised signature {head[:8].hex()}"


def sniff_bytes(path: PathLike, head: bytes) -> str:
    """The allowed driver for a file's leading bytes; refuses empty files, text, XML and VRTs."""
    if not head:
        raise EmptyFile(path, "file is empty (0 bytes)")
    if b"<VRTDataset" in head:
        raise UnsupportedFormat(path, "is a GDAL VRT, which can reference other files or URLs")
    for magic, driver in MAGIC.items():
        if head.startswith(magic):
            return driver
    raise UnsupportedFormat(path, f"not a raster file: content is {_describe_bytes(head)}")


def _sniff_local(path: PathLike) -> str:
    """The driver for a local file from its first bytes; refuses missing, empty, text, XML."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise RasterNotFound(path, "no such file") from err
    if stat.S_ISDIR(st.st_mode):
        raise UnsupportedFormat(path, "is a directory, not a raster file")
    with open(path, "rb") as handle:
        return sniff_bytes(path, handle.read(512))


#: GDAL messages that mean the storage service, not the file, failed (retry, never a verdict).
_TRANSIENT = re.compile(
    r"CURL error|HTTP response code: (?:5\d\d|429|408)|Connection (?:refused|reset|timed out)|"
    r"Couldn't connect|Could not resolve|timed out|Operation timeout|SSL|Recv failure|"
    r"Send failure|Empty reply", re.IGNORECASE)


def is_transient_reason(reason: str) -> bool:
    """True when a GDAL error message describes a network or service fault."""
    return bool(_TRANSIENT.search(reason))


def read_error(path: PathLike, what: str, err: BaseException) -> GeoOpsError:
    """``SourceUnavailable`` for a network fault while reading, else ``UnreadableRaster``."""
    reason = gdal_reason(err)
    if is_transient_reason(reason):
        return SourceUnavailable(path, f"{what}: {reason}")
    return UnreadableRaster(path, f"{what}: {reason}")


def sniff_driver(path: PathLike, head: bytes | None = None) -> str:
    """The allowed GDAL driver for ``path`` judged by its first bytes, before GDAL opens it.

    A local file is read directly; for a virtual path the caller passes the leading bytes it
    fetched (``head``). Never asks GDAL to identify the file: identification is a full open with
    every driver, and the VRT driver would open the files and URLs a VRT names.
    """
    if not is_virtual(path):
        return _sniff_local(path)
    if head is None:
        raise UnsupportedFormat(path, "cannot judge a remote file without its leading bytes")
    return sniff_bytes(path, head)


def open_raster(path: PathLike, driver: str | None = None) -> DatasetReader:
    """Open ``path`` with exactly one (allowed) driver, or with the allow-list when None."""
    if driver is None:
        return open_allowed(path)
    if driver not in ALLOWED_DRIVERS:
        raise UnsupportedFormat(path, f"{driver} format is not on the allow-list")
    try:
        with catch_warnings():  # reported as MissingCRS / DegenerateTransform instead
            simplefilter("ignore", NotGeoreferencedWarning)
            return DatasetReader(str(path), driver=driver)  # rasterio.open minus its overhead
    except GDAL_ERRORS as err:
        raise _open_error(path, driver, err) from err


def _open_error(path: PathLike, driver: str, err: BaseException) -> GeoOpsError:
    reason = gdal_reason(err)
    if is_transient_reason(reason):
        return SourceUnavailable(path, reason)
    return UnreadableRaster(path, f"cannot open with {driver}: {reason}")


def open_allowed(path: PathLike, head: Callable[[], bytes] | None = None) -> DatasetReader:
    """Open ``path`` with an allowed driver only: no other driver ever sees its bytes.

    A local file is sniffed by its first bytes and opened with that driver. A virtual path is
    opened in one request with the allow-list as GDAL's candidate drivers; only when that fails
    are its leading bytes fetched (``head``, from the storage the caller knows) to say why: a
    VRT, a format off the list, an empty file, or a readable format that is damaged.
    """
    if not is_virtual(path):
        return open_raster(path, sniff_driver(path))
    try:
        with catch_warnings():
            simplefilter("ignore", NotGeoreferencedWarning)
            return DatasetReader(str(path), driver=sorted(ALLOWED_DRIVERS))
    except GDAL_ERRORS as err:
        reason = gdal_reason(err)
        if is_transient_reason(reason):
            raise SourceUnavailable(path, reason) from err
        if head is not None:
            driver = sniff_driver(path, head())  # raises the specific refusal of the format
            raise UnreadableRaster(path, f"cannot open with {driver}: {reason}") from err
        if "No such file" in reason or "does not exist" in reason or "404" in reason:
            raise RasterNotFound(path, reason) from err
        raise UnsupportedFormat(path, f"not recognised by the allowed drivers "
                                      f"({', '.join(sorted(ALLOWED_DRIVERS))}): {reason}") from err


# ----------------------------------------------------------------------------------------------
# Validation checks: each returns (errors, warnings) lists of Issue


Findings = tuple[list[Issue], list[Issue]]


def _issue(cls: type[GeoOpsError] | str, message: str) -> Issue:
    return Issue(code=cls if isinstance(cls, str) else cls.__name__, message=message)


def check_georeferencing(ds: DatasetReader) -> Findings:
    """CRS present, transform usable; rotation and south-up layouts are warnings."""
    errors, warnings = [], []
    t = ds.transform
    if ds.crs is None:
        how = " (only GCPs)" if ds.gcps[0] else (" (only RPCs)" if ds.rpcs else "")
        errors.append(_issue(MissingCRS, f"no coordinate reference system{how}"))
    if t == Affine.identity() and ds.crs is None:
        errors.append(_issue(DegenerateTransform, "no geotransform (identity pixel grid)"))
    elif not all(math.isfinite(v) for v in t[:6]) or abs(t.determinant) < 1e-30:
        errors.append(_issue(DegenerateTransform, f"singular geotransform {tuple(t[:6])}"))
    else:
        if t.b != 0 or t.d != 0:
            warnings.append(_issue("RotatedTransform", f"geotransform has rotation terms "
                                   f"(b={t.b:g}, d={t.d:g}); outputs are resampled north-up "
                                   "only when reprojected"))
        if t.e > 0:
            warnings.append(_issue("SouthUp", f"positive row pixel size ({t.e:g}): south-up"))
    return errors, warnings


def decompressed_bytes(ds: DatasetReader) -> int:
    """Bytes the full-resolution pixels take once decompressed, from the header alone."""
    itemsize = sum(np.dtype(dt).itemsize for dt in ds.dtypes)
    return ds.width * ds.height * itemsize


def check_size(ds: DatasetReader, limits: RasterLimits, file_bytes: int | None) -> Findings:
    """Pixel count, band count and decompressed size against ``limits`` (decompression-bomb guard)."""
    errors, warnings = [], []
    pixels, size = ds.width * ds.height, decompressed_bytes(ds)
    if pixels > limits.max_pixels:
        errors.append(_issue(RasterTooLarge, f"{ds.width} x {ds.height} = {pixels} pixels "
                             f"exceeds the limit of {limits.max_pixels}"))
    if ds.count > limits.max_bands:
        errors.append(_issue(RasterTooLarge, f"{ds.count} bands exceeds the limit of "
                             f"{limits.max_bands}"))
    if size > limits.max_decompressed_bytes:
        errors.append(_issue(RasterTooLarge, f"decompresses to {size} bytes, over the limit of "
                             f"{limits.max_decompressed_bytes}"))
    block_h, block_w = ds.block_shapes[0]
    block = block_h * block_w * (size // max(ds.width * ds.height, 1))
    if block > limits.max_block_bytes:
        errors.append(_issue(RasterTooLarge, f"one {block_w} x {block_h} block decompresses to "
                             f"{block} bytes, over the limit of {limits.max_block_bytes}"))
    if file_bytes and size / file_bytes > limits.warn_compression_ratio:
        warnings.append(_issue("HighCompressionRatio", f"{file_bytes} bytes on disk expand to "
                               f"{size} bytes ({size / file_bytes:.0f}x)"))
    return errors, warnings


def check_dtypes(ds: DatasetReader, limits: RasterLimits) -> Findings:
    """Every band's data type on the allowed list."""
    bad = sorted({dt for dt in ds.dtypes if dt not in limits.allowed_dtypes})
    if bad:
        return [_issue(UnsupportedDtype, f"data type(s) {', '.join(bad)} not allowed "
                       f"(allowed: {', '.join(limits.allowed_dtypes)})")], []
    return [], []


def nodata_problem(value: float, dtype: str) -> str | None:
    """Why ``value`` cannot be a nodata of ``dtype``, or None when it can."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        finite_max = np.finfo(dt).max
        if math.isfinite(value) and abs(value) > finite_max:
            return f"nodata {value!r} is outside the {dtype} range"
        return None
    if not math.isfinite(value):
        return f"nodata {value!r} is not representable in integer type {dtype}"
    info = np.iinfo(dt)
    if value != int(value) or not info.min <= value <= info.max:
        return f"nodata {value!r} is outside the {dtype} range [{info.min}, {info.max}]"
    return None


def check_nodata(ds: DatasetReader) -> Findings:
    """Nodata representable in each band's dtype (NaN included); mixed nodata/alpha flagged."""
    errors, warnings = [], []
    values = ds.nodatavals
    for bidx, (value, dtype) in enumerate(zip(values, ds.dtypes), start=1):
        problem = None if value is None else nodata_problem(value, dtype)
        if problem:
            errors.append(_issue(InvalidNodata, f"band {bidx}: {problem}"))
    keys = {str(nodata_json(v)) for v in values}
    if len(keys) > 1:
        warnings.append(_issue("MixedNodata", f"bands declare different nodata values {sorted(keys)}"))
    if values[0] is not None and ColorInterp.alpha in ds.colorinterp:
        warnings.append(_issue("NodataAndAlpha", "both a nodata value and an alpha band; "
                               "the alpha band wins for masking"))
    return errors, warnings


class BlockSample(BaseModel):
    """What decoding a sample of blocks found; ``whole``: the sample was every block."""

    blocks: int = 0
    pixels: int = 0
    valid_pixels: int = 0
    whole: bool = False
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)


def all_valid(ds: DatasetReader) -> bool:
    """No band has nodata, a mask or alpha: every pixel is valid (from the header alone)."""
    return all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


WHOLE_READ_BYTES = 64 * 2**20
"""A raster whose sampled blocks are all its blocks is decoded in one read up to this size."""


def check_blocks(ds: DatasetReader, limit: int) -> BlockSample:
    """Decode a sample of blocks of every band: a file can open and then fail on read.

    A raster of at most ``limit`` blocks (and ``WHOLE_READ_BYTES``) is decoded in one read; if
    that read fails, block by block, so the error names the block. The mask is read only when
    the header says some pixel can be invalid (nodata, a mask or alpha)."""
    windows = sample_windows(ds, limit)
    block_h, block_w = ds.block_shapes[0]
    size = ds.count * ds.width * ds.height * max(np.dtype(t).itemsize for t in ds.dtypes)
    if (len(windows) == math.ceil(ds.height / block_h) * math.ceil(ds.width / block_w)
            and size <= WHOLE_READ_BYTES):
        sample = _decode(ds, [Window(0, 0, ds.width, ds.height)], whole=True)
        if not sample.errors:
            sample.blocks = len(windows)
            return sample
    return _decode(ds, windows, whole=False)


def _decode(ds: DatasetReader, windows: list[Window], whole: bool) -> BlockSample:
    sample = BlockSample(whole=whole)
    every_pixel = all_valid(ds)
    for window in windows:
        try:
            data = ds.read(window=window)
            valid = (data[0].size if every_pixel
                     else int(np.count_nonzero(ds.dataset_mask(window=window))))
        except GDAL_ERRORS as err:
            where = ("the raster" if whole
                     else f"block at row {int(window.row_off)}, col {int(window.col_off)}")
            problem = read_error(ds.name, f"reading {where} failed", err)
            if isinstance(problem, SourceUnavailable):
                raise problem from err
            sample.errors.append(_issue(UnreadableRaster, problem.reason))
            return sample
        sample.blocks += 1
        sample.pixels += data[0].size
        sample.valid_pixels += valid
        if data.dtype.kind == "f" and not sample.warnings and np.isnan(data).any():
            if not all(v is not None and math.isnan(v) for v in ds.nodatavals):
                sample.warnings.append(_issue("UndeclaredNaN", "float pixels contain NaN but "
                                              "the nodata value is not NaN; NaN pixels are not "
                                              "masked"))
    return sample


#: Long side (pixels) of the decimated read band statistics come from (items, thumbnails).
STATISTICS_SIZE = 1024
#: Above this many pixels, a raster without overviews is not scanned for its valid fraction.
SCAN_LIMIT_PIXELS = 4096 * 4096


def valid_fraction(ds: DatasetReader, max_side: int = 512) -> float | None:
    """Share of valid (unmasked) pixels from a decimated mask read, served by overviews.

    None when the raster is larger than ``SCAN_LIMIT_PIXELS`` and has no overviews: a
    decimated read would then decode nearly every block.
    """
    if ds.width * ds.height > SCAN_LIMIT_PIXELS and not ds.overviews(1):
        return None
    scale = max(ds.width, ds.height) / max_side
    shape = (max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
    mask = ds.dataset_mask(out_shape=shape)
    return float(np.count_nonzero(mask)) / mask.size


def check_cog_layout(path: PathLike, driver: str, config: Mapping[str, str]) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's COG validator (errors and warnings); non-TIFF formats are simply not COGs."""
    if driver not in ("GTiff", "COG"):
        return False, [f"{driver} is not a GeoTIFF"], []
    return cog_validate(str(path), strict=False, config=dict(config), quiet=True)


# ----------------------------------------------------------------------------------------------
# validate: the composer


def validate(
    src: PathLike,
    *,
    limits: RasterLimits | None = None,
    sample_blocks: int = 16,
    check_cog: bool = True,
    gdal_config: Mapping[str, str] | None = None,
    head: Callable[[], bytes] | None = None,
) -> ValidationReport:
    """Validate a raster without trusting it: format, header, limits, a sample of blocks, COG layout.

    Format and size checks run on the header alone; blocks are only decoded when those pass, so
    a VRT, a text file or a decompression bomb is refused without reading any pixel.
    """
    with validated(src, limits=limits, sample_blocks=sample_blocks, gdal_config=gdal_config,
                   head=head) as (report, _ds):
        pass
    if check_cog and not report.errors and report.driver:
        with gdal_env(gdal_config):
            report.is_cog, report.cog_errors, report.cog_warnings = check_cog_layout(
                src, report.driver, env_options(gdal_config))
    report.valid = not report.errors
    log.debug("validated %s: %d errors, %d warnings", src, len(report.errors), len(report.warnings))
    return report


@contextlib.contextmanager
def validated(
    src: PathLike,
    *,
    limits: RasterLimits | None = None,
    sample_blocks: int = 16,
    gdal_config: Mapping[str, str] | None = None,
    head: Callable[[], bytes] | None = None,
) -> Iterator[tuple[ValidationReport, DatasetReader | None]]:
    """``validate`` without the COG layout check that keeps the dataset open for the caller:
    ``(report, dataset)``, the dataset None when validation found an error. One open serves
    validating and reading (each open of a remote file costs requests). ``head`` fetches a
    remote file's leading bytes, only to explain a refusal (see ``open_allowed``)."""
    limits = limits or RasterLimits()
    report = ValidationReport(path=str(src), valid=False, file_bytes=_file_size(src))
    with gdal_env(gdal_config):
        try:
            ds = open_allowed(src, head)
            report.driver = ds.driver
        except SourceUnavailable:
            raise  # transient: the caller retries, it is not a verdict on the file
        except GeoOpsError as err:
            report.errors.append(_issue(type(err), err.reason))
            yield report, None
            return
        with ds:
            try:
                _validate_dataset(ds, report, limits, sample_blocks)
            except SourceUnavailable:
                raise
            except GeoOpsError as err:
                report.errors.append(_issue(type(err), err.reason))
            report.valid = not report.errors
            yield report, (ds if report.valid else None)


def _validate_dataset(ds: DatasetReader, report: ValidationReport, limits: RasterLimits,
                      sample_blocks: int) -> None:
    report.width, report.height, report.count = ds.width, ds.height, ds.count
    report.dtypes = list(ds.dtypes)
    report.nodata = nodata_json(ds.nodata)
    report.crs_wkt = ds.crs.to_wkt() if ds.crs else None
    report.epsg = crs_epsg(ds.crs)
    report.decompressed_bytes = decompressed_bytes(ds)
    for check in (check_size(ds, limits, report.file_bytes), check_dtypes(ds, limits),
                  check_georeferencing(ds), check_nodata(ds)):
        report.errors.extend(check[0])
        report.warnings.extend(check[1])
    if any(e.code in ("RasterTooLarge", "UnsupportedDtype") for e in report.errors):
        return  # never decode pixels of a file that fails the size guard
    sample = check_blocks(ds, sample_blocks)
    report.blocks_sampled = sample.blocks
    report.errors.extend(sample.errors)
    report.warnings.extend(sample.warnings)
    if sample.errors:
        return
    try:  # a raster read whole, or without invalid pixels, needs no second look at its mask
        fraction = (sample.valid_pixels / max(sample.pixels, 1) if sample.whole or all_valid(ds)
                    else valid_fraction(ds))
    except GDAL_ERRORS as err:
        problem = read_error(ds.name, "reading the overview/decimated mask failed", err)
        if isinstance(problem, SourceUnavailable):
            raise problem from err
        report.errors.append(_issue(UnreadableRaster, problem.reason))
        return
    if fraction is None:  # large and without overviews: the sampled blocks speak for it
        fraction = sample.valid_pixels / max(sample.pixels, 1)
    report.valid_fraction = fraction
    report.is_empty = fraction == 0.0
    if report.is_empty:
        report.warnings.append(_issue("EmptyRaster", "every sampled pixel is nodata/masked"))


def preflight(src: PathLike, limits: RasterLimits | None = None) -> DatasetReader:
    """Open ``src`` after the header-only checks; raises the first blocking error.

    Must be called inside a ``rasterio.Env``. Georeferencing is required, since outputs are maps.
    """
    limits = limits or RasterLimits()
    ds = open_raster(src)
    errors: list[Issue] = []
    for check in (check_size(ds, limits, _file_size(src)), check_dtypes(ds, limits),
                  check_georeferencing(ds), check_nodata(ds)):
        errors.extend(check[0])
    if errors:
        ds.close()
        raise ERRORS_BY_CODE[errors[0].code](src, errors[0].message)
    return ds


# ----------------------------------------------------------------------------------------------
# Output staging: write somewhere temporary, validate, then publish in one step


@contextlib.contextmanager
def staged_output(dst: PathLike, tmp_dir: PathLike | None = None) -> Iterator[str]:
    """Yield a temporary path to write; on success move (or upload-copy) it to ``dst``.

    Local destinations are staged in a hidden sibling directory, then ``os.replace``d (atomic
    on one filesystem). Virtual destinations
    (``/vsiaz/``...) are written to a local temporary directory and copied in one sequential
    upload. On any failure temporary files are removed and ``dst`` is untouched.
    """
    dst = str(dst)
    if is_virtual(dst):
        parent = tmp_dir
    else:
        parent = os.path.dirname(os.path.abspath(dst))
        os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=".geo_ops_", dir=parent)
    staging = os.path.join(workdir, os.path.basename(dst) or "output.tif")
    try:
        yield staging
        publish(staging, dst)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def publish(local: str, dst: str) -> None:
    """Move or copy a finished local file to its destination.

    A VRT is re-serialised by GDAL's VRT driver at the destination (copying its "files" would
    upload every source tile again); anything else is copied byte for byte.
    """
    if not is_virtual(dst):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        os.replace(local, dst)
        return
    try:
        if local.lower().endswith(".vrt"):
            rasterio.shutil.copy(local, dst, driver="VRT")
        else:
            rasterio.shutil.copyfiles(local, dst)
    except GDAL_ERRORS as err:
        _remove_partial(dst)
        raise OutputWriteError(dst, f"upload failed: {err}") from err


def _remove_partial(dst: str) -> None:
    try:
        rasterio.shutil.delete(dst)
    except GDAL_ERRORS as err:
        log.warning("could not remove partial output %s: %s", dst, err)


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
        "OVERVIEWS": "AUTO", **base}


#: Codecs limited to 8-bit imagery: 1 (grey), 3 (RGB) or 4 (RGBA) bands.
EIGHT_BIT_CODECS = frozenset({"JPEG", "WEBP"})


def check_codec(ds: DatasetReader, options: Mapping[str, str]) -> None:
    """Refuse a codec setting the data cannot take, before any pixel is written: a lossy 8-bit
    codec for other data, a lossy LERC error bound for integers."""
    codec = options.get("COMPRESS", "").upper()
    if codec in EIGHT_BIT_CODECS and (set(ds.dtypes) != {"uint8"} or ds.count not in (1, 3, 4)):
        raise InvalidOption(ds.name, f"{codec} compression needs 1, 3 or 4 uint8 bands, not "
                            f"{ds.count} x {ds.dtypes[0]}")
    if codec in LERC_CODECS and float(options.get("MAX_Z_ERROR", 0)) > 0 \
            and np.dtype(ds.dtypes[0]).kind != "f":
        raise InvalidOption(ds.name, f"max_z_error {options['MAX_Z_ERROR']} applies to "
                            f"floating-point data, not {ds.dtypes[0]} (LERC with max_z_error 0 "
                            "is lossless for any type)")


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
    """COG creation options for an output of this shape: automatic overviews (halving until the
    image fits one block, as ``OVERVIEWS=AUTO`` does) limited to ``overview_cap`` levels with
    ``OVERVIEW_COUNT`` (GDAL >= 3.6), none when the cap is 0. Other options are kept."""
    options = dict(options)
    if options.get("OVERVIEWS", "AUTO").upper() != "AUTO":
        return options
    block, levels, w, h = int(options.get("BLOCKSIZE", 512)), 0, width, height
    while w > block or h > block:
        w, h, levels = w // 2, h // 2, levels + 1
    cap = overview_cap(width, height)
    if cap >= levels:
        return options
    return {**options, "OVERVIEWS": "NONE"} if cap == 0 else {**options, "OVERVIEW_COUNT": str(cap)}


# ----------------------------------------------------------------------------------------------
# VRT documents built here (never from user input): a window of one dataset, a mosaic of tiles


@dataclass(frozen=True)
class BandMeta:
    """What a band says about itself besides its pixels, kept on every output path (as
    ``gdal_translate`` keeps it): description, unit, scale, offset and its own metadata, less
    the ``STATISTICS_*`` items, which describe the source's pixels, not a window's or a warp's."""

    description: str | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    tags: tuple[tuple[str, str], ...] = ()


def band_meta(ds: DatasetReader) -> tuple[BandMeta, ...]:
    """Each band's ``BandMeta``."""
    return tuple(BandMeta(ds.descriptions[i] or None, ds.units[i] or None, ds.scales[i], ds.offsets[i],
                          tuple((k, v) for k, v in ds.tags(i + 1).items() if not k.startswith("STATISTICS_")))
                 for i in range(ds.count))


def write_band_meta(dst: Any, meta: Sequence[BandMeta]) -> None:
    """Set ``meta`` on the first bands of a dataset open for writing (a warp may have added an
    alpha band after them)."""
    meta = list(meta)[:dst.count]
    for bidx, band in enumerate(meta, start=1):
        if band.description:
            dst.set_band_description(bidx, band.description)
        if band.unit:
            dst.set_band_unit(bidx, band.unit)
        if band.tags:
            dst.update_tags(bidx, **dict(band.tags))
    extra = dst.count - len(meta)
    dst.scales = [b.scale for b in meta] + [1.0] * extra
    dst.offsets = [b.offset for b in meta] + [0.0] * extra


def _band_meta_xml(meta: BandMeta | None) -> str:
    if meta is None:
        return ""
    parts = [f"<Description>{escape(meta.description)}</Description>" if meta.description else "",
             f"<UnitType>{escape(meta.unit)}</UnitType>" if meta.unit else "",
             f"<Offset>{meta.offset!r}</Offset>" if meta.offset != 0.0 else "",
             f"<Scale>{meta.scale!r}</Scale>" if meta.scale != 1.0 else "", _metadata_xml(dict(meta.tags))]
    return "".join(parts)


def _band_xml(bidx: int, dtype: str, nodata: float | None, color: ColorInterp,
              sources: list[tuple[str, int | str, Window, Window]], meta: BandMeta | None = None) -> str:
    gdal_type = _GDAL_TYPES[dtype]
    parts = [f'<VRTRasterBand dataType="{gdal_type}" band="{bidx}">', _band_meta_xml(meta)]
    if nodata is not None:
        parts.append(f"<NoDataValue>{_nodata_text(nodata)}</NoDataValue>")
    parts.append(f"<ColorInterp>{color.name.capitalize()}</ColorInterp>")
    for path, source_band, src_win, dst_win in sources:
        parts.append(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename>'
            f"<SourceBand>{source_band}</SourceBand>{_rect('SrcRect', src_win)}"
            f"{_rect('DstRect', dst_win)}</SimpleSource>")
    parts.append("</VRTRasterBand>")
    return "".join(parts)


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
               "float32": "Float32", "float64": "Float64"}


def _nodata_text(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _rect(tag: str, w: Window) -> str:
    return (f'<{tag} xOff="{int(w.col_off)}" yOff="{int(w.row_off)}" '
            f'xSize="{int(w.width)}" ySize="{int(w.height)}"/>')


def _metadata_xml(tags: Mapping[str, str]) -> str:
    items = "".join(f'<MDI key="{escape(k, {chr(34): "&quot;"})}">{escape(v)}</MDI>' for k, v in tags.items())
    return f"<Metadata>{items}</Metadata>" if items else ""


def _vrt_xml(width: int, height: int, crs: CRS, transform: Affine, bands: list[str],
             mask: str | None, tags: Mapping[str, str] | None = None) -> str:
    gt = ",".join(repr(v) for v in transform.to_gdal())
    head = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(crs.to_wkt())}</SRS><GeoTransform>{gt}</GeoTransform>"
            f"{_metadata_xml(tags or {})}")
    mask_xml = f"<MaskBand>{mask}</MaskBand>" if mask else ""
    return head + "".join(bands) + mask_xml + "</VRTDataset>"


def _has_dataset_mask(ds: DatasetReader) -> bool:
    flags = ds.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags


def window_vrt(ds: DatasetReader, window: Window, nodata: float | None = None) -> str:
    """VRT XML exposing ``window`` of ``ds`` as a dataset (bands with their ``BandMeta``, nodata,
    alpha, internal mask, and the source's metadata, its datetime among them)."""
    width, height = int(window.width), int(window.height)
    dst_win = Window(0, 0, width, height)
    nodata = ds.nodata if nodata is None else nodata
    meta = band_meta(ds)
    bands = [_band_xml(b, ds.dtypes[b - 1], nodata, ds.colorinterp[b - 1],
                       [(ds.name, b, window, dst_win)], meta[b - 1]) for b in ds.indexes]
    mask = None
    if _has_dataset_mask(ds):
        mask = _band_xml(1, "uint8", None, ColorInterp.undefined,
                         [(ds.name, "mask,1", window, dst_win)])
    return _vrt_xml(width, height, ds.crs, ds.window_transform(window), bands, mask, ds.tags())


# ----------------------------------------------------------------------------------------------
# to_cog


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
) -> CogResult:
    """Convert ``src`` to a Cloud Optimized GeoTIFF at ``dst`` with GDAL's COG driver.

    ``profile`` names the compression (``COG_PROFILES``; the lossless ones choose the predictor by
    data type), ``max_z_error`` bounds LERC's per-pixel error for floating-point data.
    Without ``dst_crs`` pixels are copied unchanged (``nodata`` overrides the declared nodata).
    With ``dst_crs`` the source streams through a ``WarpedVRT`` into a local tiled intermediate,
    window by window, then into the COG; a source without nodata or alpha gains an alpha band so
    areas outside the source stay transparent. The output is checked with strict COG validation
    before it is published at ``dst``.
    """
    started = time.perf_counter()
    config = env_options(gdal_config)
    options = cog_options(profile, blocksize=blocksize, overview_resampling=overview_resampling,
                          threads=threads, max_z_error=max_z_error)
    with rasterio.Env(**config), preflight(src, limits) as ds, staged_output(dst, tmp_dir) as tmp:
        check_codec(ds, options)
        try:
            if dst_crs is None:
                _copy_cog(ds, tmp, shaped_cog_options(options, ds.width, ds.height), nodata)
            else:
                output_grid(ds, parse_crs(dst_crs), resolution, limits)
                _warp_cog(ds, tmp, options, parse_crs(dst_crs), resolution,
                          parse_resampling(resampling), nodata, warp_mem_limit_mb, threads)
        except GDAL_ERRORS as err:
            raise read_error(src, "conversion failed", err) from err
        verify_cog(tmp, config)
        result = _cog_result(tmp, str(dst), dst_crs is not None, started)
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


def _wrapping_grid(ds: DatasetReader, dst_crs: CRS, resolution: float | tuple[float, float] | None
                   ) -> tuple[Affine, int, int] | None:
    """The output grid where GDAL's suggestion fails: a source across the antimeridian, or around
    a pole, into a target whose x is a longitude (geographic, Mercator, Plate Carrée). GDAL then
    suggests a globe-wide strip at a fraction of the resolution (a UTM zone 60 scene into EPSG:3857
    came out 574 x 14 px). Here the extent is the source's outline with longitudes made continuous
    (so it may pass ±180°: a valid, contiguous grid), at the source's own resolution. A pole in a
    Mercator target cannot be represented: refused with the reason. None for every other case."""
    if ds.crs is None or not maps_to_lonlat(ds.crs.to_wkt()):
        return None
    period = _longitude_period(dst_crs)
    if period is None:
        return None
    wkt = ds.crs.to_wkt()
    src = pyproj.CRS.from_wkt(wkt)
    lons, lats = _pixels_to_lonlat(wkt, ds.transform, *_edge_pixels(ds.width, ds.height, 41))
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        return None
    lons = np.rad2deg(np.unwrap(np.deg2rad(lons)))
    west, south, east, north = _to_lonlat(wkt).transform_bounds(*ds.bounds, densify_pts=41)
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
                limits: RasterLimits | None = None) -> tuple[Affine, int, int]:
    """``warp_grid``, with what stops it named: CannotReproject when no grid can be computed
    (GDAL's or PROJ's error as the reason), RasterTooLarge over the pixel limit."""
    try:
        transform, width, height = warp_grid(ds, dst_crs, resolution)
    except (*GDAL_ERRORS, CRSError, pyproj.exceptions.ProjError) as err:
        raise CannotReproject(ds.name, f"no grid in {dst_crs.to_string() or 'the target CRS'} for its "
                              f"CRS and extent: {gdal_reason(err)}") from err
    check_warped_size(ds, width, height, limits)
    return transform, width, height


def warped_pixels(ds: DatasetReader, dst_crs: str | int | CRS, limits: RasterLimits | None = None) -> int:
    """Pixels of ``ds`` reprojected to ``dst_crs`` (the grid ``to_cog`` writes), refused as
    ``output_grid`` refuses them: what decides whether a reprojection fits one task."""
    _, width, height = output_grid(ds, parse_crs(dst_crs), limits=limits)
    return width * height


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


def _cog_result(tmp: str, dst: str, reprojected: bool, started: float) -> CogResult:
    with rasterio.open(tmp, driver="GTiff") as out:
        fraction = valid_fraction(out)
        notes = [] if fraction != 0.0 else [_issue("EmptyRaster", "every pixel is nodata/masked")]
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


# ----------------------------------------------------------------------------------------------
# Tiling


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
) -> TilePlan:
    """Plan tiles covering the output grid exactly once, in row-major order.

    The output grid is the source grid, or with ``dst_crs`` the grid ``gdalwarp`` would choose.
    ``tile_size`` wins when given; otherwise the side is the largest multiple of ``blocksize``
    within the per-task budget: ``max_pixels``, and ``max_tile_bytes`` of decompressed pixels
    (all bands) when given. Reads the header only.
    """
    with gdal_env(gdal_config), preflight(src, limits) as ds:
        crs, transform, width, height = ds.crs, ds.transform, ds.width, ds.height
        if dst_crs is not None:
            crs = parse_crs(dst_crs)
            transform, width, height = output_grid(ds, crs, resolution, limits)
        size = tile_size or tile_size_for_budget(
            _pixel_budget(ds, max_pixels, max_tile_bytes), blocksize)
    if size < 1:
        raise InvalidOption(str(size), "tile size must be positive")
    parse_resampling(resampling)
    crs_text = _crs_text(crs) if dst_crs is not None else None
    tiles = [_plan_tile(i, r, c, w, transform, output_prefix, crs_text, resampling)
             for i, (r, c, w) in enumerate(tile_windows(width, height, size))]
    return TilePlan(source=str(src), warped=dst_crs is not None, crs_wkt=crs.to_wkt(),
                    epsg=crs_epsg(crs), width=width, height=height,
                    transform=list(transform)[:6], tile_size=size, rows=tiles[-1].row + 1,
                    cols=tiles[-1].col + 1, resampling=resampling, tiles=tiles)


def _pixel_budget(ds: DatasetReader, max_pixels: int, max_tile_bytes: int | None) -> int:
    if max_tile_bytes is None:
        return max_pixels
    bytes_per_pixel = sum(np.dtype(dt).itemsize for dt in ds.dtypes)
    return min(max_pixels, max_tile_bytes // bytes_per_pixel)


def _crs_text(crs: CRS) -> str:
    """Compact, lossless text for a CRS: ``"EPSG:n"`` when it is exactly that, else WKT2."""
    epsg = crs_epsg(crs)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt(version="WKT2_2019")


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
        check_codec(ds, options)
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


def _warped_tile_cog(ds: DatasetReader, tile: Tile, tmp: str, options: dict[str, str],
                     warp_mem_limit_mb: int, threads: int | str) -> None:
    crs = parse_crs(tile.dst_crs)
    transform = Affine(*tile.transform)
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
        tile_ds.update_tags(**ds.tags())  # a warped VRT read into memory drops the source's tags
        write_band_meta(tile_ds, band_meta(ds))
        rasterio.shutil.copy(tile_ds, tmp, driver="COG", **options)


# ----------------------------------------------------------------------------------------------
# Mosaic


def build_mosaic(
    tile_paths: Sequence[PathLike],
    dst_vrt: PathLike,
    *,
    gdal_config: Mapping[str, str] | None = None,
) -> MosaicResult:
    """Write a VRT over tile COGs that share CRS, resolution, bands and dtype.

    Source paths are absolute (or the virtual paths given), so the VRT can be opened from
    anywhere the tiles can. Returns the mosaic grid and its footprint in EPSG:4326.
    """
    if not tile_paths:
        raise InvalidOption(str(dst_vrt), "no tiles to mosaic")
    with gdal_env(gdal_config):
        tiles = [_tile_facts(p) for p in tile_paths]
        grid = _mosaic_grid(tiles)
        with staged_output(dst_vrt) as tmp:
            Path(tmp).write_text(_mosaic_xml(tiles, grid), encoding="utf-8")
        geometry, bbox = footprint(grid.crs, grid.transform, grid.width, grid.height)
    first = tiles[0]
    return MosaicResult(path=str(dst_vrt), tile_count=len(tiles), width=grid.width,
                        height=grid.height, count=first.count, dtype=first.dtypes[0],
                        epsg=crs_epsg(grid.crs), crs_wkt=grid.crs.to_wkt(),
                        transform=list(grid.transform)[:6], bounds=list(grid.bounds),
                        bbox=bbox, footprint=geometry)


@dataclass(frozen=True)
class _TileFacts:
    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    colorinterp: tuple[ColorInterp, ...]
    mask: bool
    tags: tuple[tuple[str, str], ...] = ()
    bands: tuple[BandMeta, ...] = ()


@dataclass(frozen=True)
class _MosaicGrid:
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: tuple[float, float, float, float]


def _tile_facts(path: PathLike) -> _TileFacts:
    name = str(path) if is_virtual(path) else os.path.abspath(path)
    with open_raster(name) as ds:
        if ds.transform.b or ds.transform.d:
            raise IncompatibleTiles(name, "rotated tiles cannot be mosaicked")
        return _TileFacts(name, ds.crs, ds.transform, ds.width, ds.height, ds.count,
                          tuple(ds.dtypes), ds.nodata, tuple(ds.colorinterp),
                          _has_dataset_mask(ds), tuple(ds.tags().items()), band_meta(ds))


def _mosaic_grid(tiles: list[_TileFacts]) -> _MosaicGrid:
    first = tiles[0]
    xres, yres = first.transform.a, first.transform.e
    for t in tiles[1:]:
        same = (t.crs == first.crs and t.count == first.count and t.dtypes == first.dtypes
                and math.isclose(t.transform.a, xres, rel_tol=1e-9)
                and math.isclose(t.transform.e, yres, rel_tol=1e-9))
        if not same:
            raise IncompatibleTiles(t.path, f"differs from {first.path} in CRS, resolution, "
                                    "band count or data type")
    left = min(t.transform.c for t in tiles)
    top = max(t.transform.f for t in tiles)
    right = max(t.transform.c + t.width * xres for t in tiles)
    bottom = min(t.transform.f + t.height * yres for t in tiles)
    return _MosaicGrid(first.crs, Affine(xres, 0, left, 0, yres, top),
                       round((right - left) / xres), round((bottom - top) / yres),
                       (left, bottom, right, top))


def _mosaic_xml(tiles: list[_TileFacts], grid: _MosaicGrid) -> str:
    inverse = ~grid.transform
    placed = []
    for t in tiles:
        col, row = inverse @ (t.transform.c, t.transform.f)
        placed.append((t.path, Window(0, 0, t.width, t.height),
                       Window(round(col), round(row), t.width, t.height)))
    first = tiles[0]
    bands = [_band_xml(b, first.dtypes[b - 1], first.nodata, first.colorinterp[b - 1],
                       [(path, b, sw, dw) for path, sw, dw in placed], first.bands[b - 1])
             for b in range(1, first.count + 1)]
    mask = None
    if first.mask:
        mask = _band_xml(1, "uint8", None, ColorInterp.undefined,
                         [(path, "mask,1", sw, dw) for path, sw, dw in placed])
    return _vrt_xml(grid.width, grid.height, grid.crs, grid.transform, bands, mask, dict(first.tags))


# ----------------------------------------------------------------------------------------------
# Raster facts for cataloging: each fact has its home here (footprint, lon/lat transformer,
# block sampler, statistics, nodata, file datetime, COG layout, header size); stac_ops composes
# STAC items from a ``RasterHeader`` and never reads a raster itself.


@lru_cache(maxsize=256)
def maps_to_lonlat(wkt: str) -> bool:
    """Whether PROJ has a transformation from the CRS ``wkt`` to longitude/latitude: not for an
    engineering or local CRS (``LOCAL_CS``, ``ENGCRS``), which has no place on the Earth."""
    try:
        _to_lonlat(wkt)
    except pyproj.exceptions.ProjError:
        return False
    return True


@lru_cache(maxsize=64)
def _to_lonlat(wkt: str) -> pyproj.Transformer:
    """A cached transformer from the CRS ``wkt`` to longitude/latitude (EPSG:4326, x = lon)."""
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), "EPSG:4326", always_xy=True)


def lonlat(wkt: str, xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points of the CRS ``wkt`` as lon/lat; points outside the projection's domain are inf."""
    lons, lats = _to_lonlat(wkt).transform(np.asarray(xs, dtype="float64"),
                                           np.asarray(ys, dtype="float64"), errcheck=False)
    return np.asarray(lons, dtype="float64"), np.asarray(lats, dtype="float64")


def _edge_pixels(width: int, height: int, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates around the outer edge, clockwise from the top-left corner, closed."""
    steps = np.arange(per_edge) / per_edge
    cols = np.concatenate([width * steps, np.full(per_edge, width), width * (1 - steps),
                           np.zeros(per_edge), [0.0]])
    rows = np.concatenate([np.zeros(per_edge), height * steps, np.full(per_edge, height),
                           height * (1 - steps), [0.0]])
    return cols, rows


def _pixels_to_lonlat(wkt: str, transform: Affine, cols: np.ndarray, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = transform[:6]
    return lonlat(wkt, a * cols + b * rows + c, d * cols + e * rows + f)


def _contains_pole(wkt: str, transform: Affine, width: int, height: int) -> int:
    """+1 / -1 when the north / south pole lies inside a projected grid, else 0."""
    for sign in (1, -1):
        x, y = _to_lonlat(wkt).transform(0.0, 90.0 * sign, direction=pyproj.enums.TransformDirection.INVERSE,
                                         errcheck=False)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        col, row = ~transform @ (x, y)
        if -1e-6 <= col <= width + 1e-6 and -1e-6 <= row <= height + 1e-6:
            return sign
    return 0


def _unwrap(lons: Sequence[float]) -> list[float]:
    """Longitudes made continuous (no jump over 180 degrees between neighbours)."""
    out = [float(lons[0])]
    for lon in lons[1:]:
        out.append(float(lon) + 360.0 * round((out[-1] - lon) / 360.0))
    return out


def _clip_ring(ring: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a closed ring to ``lo <= lon <= hi``."""
    for edge, keep in ((lo, lambda x: x >= lo), (hi, lambda x: x <= hi)):
        out: list[tuple[float, float]] = []
        for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
            if keep(x2):
                if not keep(x1):
                    out.append((edge, y1 + (y2 - y1) * (edge - x1) / (x2 - x1)))
                out.append((x2, y2))
            elif keep(x1):
                out.append((edge, y1 + (y2 - y1) * (edge - x1) / (x2 - x1)))
        ring = out
        if not ring:
            return []
    return ring


def _simplify(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Douglas-Peucker: drop vertices closer than ``tolerance`` degrees to the simplified line."""
    if len(points) < 3:
        return points
    (x1, y1), (x2, y2) = points[0], points[-1]
    length = math.hypot(x2 - x1, y2 - y1)
    distances = [abs((x2 - x1) * (y1 - y) - (x1 - x) * (y2 - y1)) / length if length
                 else math.hypot(x - x1, y - y1) for x, y in points[1:-1]]
    index = max(range(len(distances)), key=distances.__getitem__)
    if distances[index] <= tolerance:
        return [points[0], points[-1]]
    left = _simplify(points[: index + 2], tolerance)
    return left[:-1] + _simplify(points[index + 1:], tolerance)


def _drop_collinear(pts: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Drop ring vertices (cyclic) within ``tolerance`` of the line through their neighbours."""
    out = list(pts)
    i = 0
    while len(out) > 3 and i < len(out):
        (x0, y0), (x, y), (x1, y1) = out[i - 1], out[i], out[(i + 1) % len(out)]
        length = math.hypot(x1 - x0, y1 - y0)
        if length and abs((x1 - x0) * (y0 - y) - (x0 - x) * (y1 - y0)) / length <= tolerance:
            out.pop(i)
        else:
            i += 1
    return out


def _ccw_ring(ring: list[tuple[float, float]], tolerance: float = 1e-6) -> list[list[float]]:
    """A closed GeoJSON exterior ring, counter-clockwise (RFC 7946), rounded to 1e-9 degrees and
    simplified to ``tolerance`` degrees (straight densified edges collapse to their corners)."""
    pts = [(round(x, 9), round(y, 9)) for x, y in ring]
    pts = [p for i, p in enumerate(pts) if i == 0 or p != pts[i - 1]]
    if pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) > 4:
        half = len(pts) // 2
        pts = _simplify(pts[: half + 1], tolerance)[:-1] + _simplify(pts[half:] + pts[:1], tolerance)[:-1]
        pts = _drop_collinear(pts, tolerance)
    area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]))
    if area < 0:
        pts.reverse()
    return [list(p) for p in pts + pts[:1]]


def _clamped_bbox(west: float, south: float, east: float, north: float) -> list[float]:
    return [round(min(180.0, max(-180.0, west)), 9), round(min(90.0, max(-90.0, south)), 9),
            round(min(180.0, max(-180.0, east)), 9), round(min(90.0, max(-90.0, north)), 9)]


def _box(west: float, south: float, east: float, north: float) -> tuple[dict[str, Any], list[float]]:
    ring = [(west, south), (east, south), (east, north), (west, north)]
    return {"type": "Polygon", "coordinates": [_ccw_ring(ring)]}, _clamped_bbox(west, south, east, north)


def _ring_footprint(lons: list[float], lats: list[float], tolerance: float
                    ) -> tuple[dict[str, Any], list[float]]:
    """Geometry and bbox of a lon/lat edge ring, split at the antimeridian when it crosses."""
    ulons = _unwrap(lons)
    south, north = min(lats), max(lats)
    if max(ulons) - min(ulons) >= 360.0 - 1e-9:
        return _box(-180.0, south, 180.0, north)
    shift = -360.0 * math.floor((min(ulons) + 180.0) / 360.0)
    ring = [(x + shift, y) for x, y in zip(ulons, lats)]
    west, east = min(ulons) + shift, max(ulons) + shift
    if east <= 180.0:
        return ({"type": "Polygon", "coordinates": [_ccw_ring(ring, tolerance)]},
                _clamped_bbox(west, south, east, north))
    clipped = [[(x - offset, y) for x, y in _clip_ring(ring, lo, lo + 360.0)]
               for lo, offset in ((-180.0, 0.0), (180.0, 360.0))]
    parts = [_ccw_ring(part, tolerance) for part in clipped if len(set(part)) >= 3]
    return ({"type": "MultiPolygon", "coordinates": [[p] for p in parts]},
            _clamped_bbox(west, south, east - 360.0, north))


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Monotone-chain convex hull (counter-clockwise)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        hull: list[tuple[float, float]] = []
        for p in seq:
            while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                      - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) <= 0:
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return half(pts) + half(pts[::-1])


def _sampled_footprint(wkt: str, transform: Affine, width: int, height: int, densify: int
                       ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """Convex hull of a grid of sample points that map to the globe (a geostationary disk)."""
    n = densify * 2
    cols, rows = np.meshgrid(np.linspace(0, width, n + 1), np.linspace(0, height, n + 1))
    lons, lats = _pixels_to_lonlat(wkt, transform, cols.ravel(), rows.ravel())
    ok = np.isfinite(lons) & np.isfinite(lats)
    if ok.sum() < 3:
        return None, None
    points = list(zip(lons[ok].tolist(), lats[ok].tolist()))
    west, east, south, north = lons[ok].min(), lons[ok].max(), lats[ok].min(), lats[ok].max()
    if east - west > 180.0:
        return _box(-180.0, south, 180.0, north)
    hull = _convex_hull(points)
    return {"type": "Polygon", "coordinates": [_ccw_ring(hull)]}, _clamped_bbox(west, south, east, north)


def footprint(crs: CRS | None, transform: Affine, width: int, height: int, *, densify: int = 21
              ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """GeoJSON geometry and bbox ``[west, south, east, north]`` in EPSG:4326 of a pixel grid.

    The grid's outer edge is densified (``densify`` points per edge) in pixel space, so rotated
    grids are exact, and simplified to half a pixel. A footprint that crosses the antimeridian is
    a MultiPolygon with ``west > east``; one that holds a pole reaches +/-90 over all longitudes;
    when the edge leaves the projection's valid area (a geostationary full disk) it is the convex
    hull of a grid of sample points that do map to the globe. ``(None, None)`` without a CRS or
    when no part of the grid maps to the globe.
    """
    if crs is None:
        return None, None
    wkt = crs.to_wkt()
    pole = 0 if crs.is_geographic else _contains_pole(wkt, transform, width, height)
    lons, lats = _pixels_to_lonlat(wkt, transform, *_edge_pixels(width, height, densify))
    finite = np.isfinite(lons) & np.isfinite(lats)
    if pole and finite.any():
        south, north = (float(lats[finite].min()), 90.0) if pole > 0 else (-90.0, float(lats[finite].max()))
        return _box(-180.0, south, 180.0, north)
    if finite.all():
        span_lat = (lats.max() - lats.min()) / height
        ulons = _unwrap(lons.tolist())
        tolerance = max(1e-9, 0.5 * min(span_lat, (max(ulons) - min(ulons)) / width))
        return _ring_footprint(lons.tolist(), lats.tolist(), tolerance)
    return _sampled_footprint(wkt, transform, width, height, densify)


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


def sample_windows(ds: DatasetReader, count: int) -> list[Window]:
    """Up to ``count`` whole blocks spread evenly over the block grid, corners included."""
    block_h, block_w = ds.block_shapes[0]
    rows, cols = math.ceil(ds.height / block_h), math.ceil(ds.width / block_w)
    side = max(1, int(math.sqrt(count)))
    n_rows, n_cols = min(side, rows), min(side, cols)
    picks = sorted({(r * (rows - 1) // max(1, n_rows - 1), c * (cols - 1) // max(1, n_cols - 1))
                    for r in range(n_rows) for c in range(n_cols)})
    return [Window(c * block_w, r * block_h, min(block_w, ds.width - c * block_w),
                   min(block_h, ds.height - r * block_h)) for r, c in picks]


def _mask_non_finite(data: np.ma.MaskedArray) -> np.ma.MaskedArray:
    if data.dtype.kind in "fc":
        data.mask = np.ma.getmaskarray(data) | ~np.isfinite(data.filled(0))
    return data


def read_decimated(ds: DatasetReader, *, max_size: int = 1024, sample_blocks: int = 64,
                   indexes: Sequence[int] | None = None) -> np.ma.MaskedArray:
    """A masked read of the bands for statistics or a preview, never a full read of a large raster.

    With overviews (every COG) or when the raster is small: one read at most ``max_size`` pixels
    on the long side, which GDAL serves from the overviews. A large raster without overviews is
    sampled instead: up to ``sample_blocks`` whole blocks spread over it (shape ``(bands, 1, n)``).
    Nodata, NaN, alpha and internal masks are masked out.
    """
    indexes = list(indexes or ds.indexes)
    scale = max(1.0, max(ds.width, ds.height) / max_size)
    try:
        if scale > 4 and not ds.overviews(1):
            parts = [ds.read(indexes, window=w, masked=True).reshape(len(indexes), 1, -1)
                     for w in sample_windows(ds, sample_blocks)]
            return _mask_non_finite(np.ma.concatenate(parts, axis=2))
        shape = (len(indexes), max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        return _mask_non_finite(ds.read(indexes, out_shape=shape, masked=True,
                                        resampling=Resampling.nearest))
    except GDAL_ERRORS as err:
        raise read_error(ds.name, "reading a decimated copy of the pixels failed", err) from err


def band_statistics(band: np.ma.MaskedArray) -> BandStatistics:
    """Minimum, maximum, mean, standard deviation and valid percentage of one masked band.

    Integers of up to 16 bits are counted into a histogram first (one pass over the pixels; the
    moments then come from at most 65,536 distinct values), others are summed in float64."""
    valid = band.compressed()
    if valid.size == 0:
        return BandStatistics(valid_percent=0.0)
    if valid.dtype.kind in "ui" and valid.dtype.itemsize <= 2:
        low = int(valid.min())
        counts = np.bincount((valid.astype(np.int32) - low) if low else valid)
        values = np.flatnonzero(counts)
        weights = counts[values].astype("float64")
        values = values.astype("float64") + low
        mean = float(np.dot(weights, values) / valid.size)
        stddev = math.sqrt(max(0.0, float(np.dot(weights, (values - mean) ** 2)) / valid.size))
        minimum, maximum = float(values[0]), float(values[-1])
    else:
        values = valid.astype("float64")
        minimum, maximum = float(values.min()), float(values.max())
        mean, stddev = float(values.mean()), float(values.std())
    return BandStatistics(minimum=minimum, maximum=maximum, mean=mean, stddev=stddev,
                          valid_percent=round(100.0 * valid.size / band.size, 4))


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


def _crs_code(crs: CRS | None) -> str | None:
    """``AUTHORITY:CODE`` of a CRS when it has one (EPSG, ESRI, OGC...), else None."""
    authority = crs.to_authority() if crs is not None else None
    return f"{authority[0]}:{authority[1]}" if authority else None


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
    with gdal_env(gdal_config), (contextlib.nullcontext(src) if isinstance(src, DatasetReader)
                                 else open_raster(src)) as ds:
        try:
            return _header_of(ds, densify, statistics, max_stats_size)
        except GDAL_ERRORS as err:  # a header GDAL cannot finish reading: the file's, named
            raise read_error(ds.name, "reading its header failed", err) from err


def _header_of(ds: DatasetReader, densify: int, statistics: bool, max_stats_size: int) -> RasterHeader:
    crs = ds.crs
    wkt = crs.to_wkt() if crs else None
    epsg, wkt2, projjson = _crs_facts(wkt) if wkt else (None, None, None)
    grid = (ds.transform, ds.width, ds.height)
    georeferenced = crs is not None and not ds.transform.is_identity and maps_to_lonlat(wkt)
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


class ThumbnailResult(BaseModel):
    """A PNG preview written by ``write_thumbnail``."""

    path: str
    width: int
    height: int
    bands: str  # "grey" or "rgb" (each with an alpha band)
    size_bytes: int


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
    than (4 x ``max_size``)² pixels without overviews is refused rather than read in full.
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
    if ds.width * ds.height > (4 * max_size) ** 2 and not ds.overviews(1):  # a 1 x 100,000 strip reads cheaply
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
