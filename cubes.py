"""Multidimensional rasters: NetCDF (classic and NetCDF-4), HDF5, GRIB2 and Zarr stores.

A cube becomes one Cloud Optimized GeoTIFF per variable and per 2-D slice (each time step times
each position along the other non-spatial dimensions), holding the source's stored values
unchanged (lossless profiles only; CF ``scale_factor``/``add_offset`` travel as the band's scale
and offset, ``_FillValue`` as its nodata), and is described in STAC with the datacube extension.

The verbs, in the order the activities call them:

- ``stage_file`` / ``stage_store``: the source copied to a worker-local cache keyed by its ETag,
  bounded in size (several slice-group activities on one host read one copy). The local name is
  ours, never the blob's, so no name reaches GDAL as syntax.
- ``open_cube``: the format judged by its bytes, the references it could follow refused
  (``check_hdf5`` and ``check_zarr_store``), then the cube described (``CubeFacts``).
- ``plan_slices``: slice groups, each a bounded unit of work for one activity.
- ``convert_slices``: one group's COGs, staged and validated before they are published.
- ``cube_dimensions`` / ``cube_variables`` / ``slice_item`` / ``cube_item`` /
  ``collection_fields``: the STAC.

Engines: GDAL (rasterio) reads NetCDF, HDF5 and GRIB2 from the local copy (its netCDF driver
georeferences CF grids, its GRIB driver GRIB's own grids); zarr-python reads Zarr v2 and v3
(GDAL 3.10 in the rasterio wheel knows the v3 draft's codec names only). h5py inspects HDF5
link structure before any library that would follow a link opens the file. Like ``geo_ops``,
nothing here reads the environment or knows about Azure: callers pass paths, limits and
download callables.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from warnings import catch_warnings, simplefilter

import numpy as np
import pyproj
import rasterio
import rasterio.shutil
from affine import Affine
from pydantic import BaseModel, Field
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader

import geo_ops
from geo_ops import GDAL_ERRORS, GeoOpsError, Issue, Nodata, PathLike, nodata_json

log = logging.getLogger(__name__)

#: Formats judged by their leading bytes (a Zarr store is a directory).
NETCDF_CLASSIC_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: HDF5 may sit behind a user block of 512 × 2^n bytes.
HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)
GRIB_MAGIC = b"GRIB"
ZARR_MARKERS = (".zgroup", ".zarray", ".zmetadata", "zarr.json")

#: Media types of the source asset, by format.
MEDIA_TYPES = {"netcdf": "application/netcdf", "hdf5": "application/x-hdf5",
               "grib": "application/wmo-GRIB2", "zarr": "application/vnd+zarr"}
FORMAT_TITLES = {"netcdf": "NetCDF", "hdf5": "NetCDF-4 / HDF5", "grib": "GRIB2", "zarr": "Zarr store"}

DATACUBE_EXT = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"

#: A name read from a file (variable, array, dimension) that can be handed to GDAL or become a
#: path segment: letters, digits, ``_ . -`` and ``/`` between group names; nothing GDAL's
#: subdataset syntax (``NETCDF:"file":var``) or a path could read as more than a name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
MAX_NAME = 256

#: The GDAL drivers cube files are opened with (never identified by GDAL).
CUBE_DRIVERS = {"netcdf": ["netCDF"], "hdf5": ["netCDF"], "grib": ["GRIB"]}

#: GDAL options for reading cubes: the stored values, not GDAL's unit conversions, and extra
#: dimension values listed even where GDAL would skip them. (``GDAL_NETCDF_BOTTOMUP`` stays
#: unset: setting it overrides the row order the driver detects from the y coordinate.)
CUBE_GDAL_CONFIG = {"GRIB_NORMALIZE_UNITS": "NO", "GDAL_NETCDF_REPORT_EXTRA_DIM_VALUES": "YES"}

#: Spacing of 1-D coordinates may vary by this fraction of a step and still be a regular grid.
REGULAR_TOLERANCE = 1e-3

_CF_TAGS = ("units", "long_name", "standard_name", "description", "comment", "cell_methods")


# ----------------------------------------------------------------------------------------------
# Errors: every one is a per-file failure with a named condition (GeoOpsError, so the activities'
# existing handling reports it by class name).


class CubeError(GeoOpsError):
    """Base class of the cube engine's errors; carries the offending path and the reason."""


class UnsafeReference(CubeError):
    """The file or store names another file, a URL or a place outside itself (HDF5 external
    links, virtual datasets, external storage; Zarr keys outside the store)."""


class UnsafeName(CubeError):
    """A name the file holds cannot be used safely (it could be read as GDAL syntax or a path)."""


class SourceTooLarge(CubeError):
    """The source is larger than the worker-local staging limit."""


class TooManySlices(CubeError):
    """The cube holds more 2-D slices than one file may produce."""


class SliceTooLarge(CubeError):
    """One 2-D slice holds more pixels than one activity's budget."""


class NoGriddedVariable(CubeError):
    """No variable of the file lies on a georeferenced 2-D grid."""


class CurvilinearGrid(CubeError):
    """The variables lie on a curvilinear grid (2-D latitude/longitude), which is not converted."""


class IrregularGrid(CubeError):
    """The spatial coordinates are not evenly spaced, so no geotransform describes them."""


class UndecodableTime(CubeError):
    """A time coordinate's CF units or calendar cannot be decoded."""


class UnreadableCube(CubeError):
    """The file is in a cube format but its structure or pixels cannot be read."""


ERRORS_BY_CODE: dict[str, type[GeoOpsError]] = {
    **geo_ops.ERRORS_BY_CODE,
    **{cls.__name__: cls for cls in (
        CubeError, UnsafeReference, UnsafeName, SourceTooLarge, TooManySlices, SliceTooLarge,
        NoGriddedVariable, CurvilinearGrid, IrregularGrid, UndecodableTime, UnreadableCube)},
}


# ----------------------------------------------------------------------------------------------
# Models (plain JSON across the Durable boundary)


class CubeDimension(BaseModel):
    """A non-spatial dimension: its raw coordinate values, and for time their decoded instants."""

    name: str
    kind: Literal["temporal", "other"]
    size: int
    values: list[float | str] = Field(default_factory=list)
    unit: str | None = None
    calendar: str | None = None
    datetimes: list[str] | None = None  # RFC 3339, one per value (temporal only)
    bounds: list[list[str]] | None = None  # [start, end] per value when the file has CF bounds


class CubeGrid(BaseModel):
    """The output grid of a variable (north-up, longitudes wrapped) and how a slice reaches it."""

    crs_wkt: str
    epsg: int | None
    transform: list[float]
    width: int
    height: int
    flip_rows: bool = False  # the source rows run south to north
    roll_columns: int = 0  # np.roll shift that puts the western-most column first
    wrapped: bool = False  # longitudes moved from 0–360 to −180–180


class CubeSlice(BaseModel):
    """One 2-D slice: its position along each non-spatial dimension, and where it is read."""

    index: dict[str, int] = Field(default_factory=dict)
    band: int | None = None  # GDAL band (netCDF, HDF5, GRIB)


class CubeVariable(BaseModel):
    """A gridded variable: CF metadata, its grid and its slices."""

    name: str
    dims: list[str]  # non-spatial dimensions, outermost first
    dtype: str
    nodata: Nodata = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    long_name: str | None = None
    standard_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    grid: CubeGrid
    subdataset: str | None = None  # the GDAL name opened (built here from a checked name)
    slices: list[CubeSlice] = Field(default_factory=list)


class CubeFacts(BaseModel):
    """What ``open_cube`` found: the variables converted, the dimensions, what was left out."""

    path: str
    format: Literal["netcdf", "hdf5", "grib", "zarr"]
    variables: list[CubeVariable]
    dimensions: dict[str, CubeDimension]
    attrs: dict[str, str] = Field(default_factory=dict)
    skipped: list[Issue] = Field(default_factory=list)  # variables not converted, and why
    warnings: list[Issue] = Field(default_factory=list)

    @property
    def slice_count(self) -> int:
        return sum(len(v.slices) for v in self.variables)

    @property
    def time_dimension(self) -> CubeDimension | None:
        return next((d for d in self.dimensions.values() if d.kind == "temporal"), None)


class SliceTask(BaseModel):
    """One slice of a group: the variable it belongs to and its COG's path."""

    variable: str
    slice: CubeSlice
    output_path: str


class SliceGroup(BaseModel):
    """A self-contained unit of work (one activity): the source, the variables it touches, and
    the slices of a run of time steps."""

    index: int
    source: str
    format: str
    steps: list[int | None]  # time indices covered (None: the cube has no time dimension)
    variables: list[CubeVariable]  # with only this group's slices
    tasks: list[SliceTask]


class SliceOutput(BaseModel):
    """A COG written for one slice."""

    variable: str
    index: dict[str, int]
    path: str
    size_bytes: int | None
    cog_valid: bool


class SliceGroupResult(BaseModel):
    """What ``convert_slices`` wrote for one group."""

    index: int
    outputs: list[SliceOutput]
    elapsed_s: float


# ----------------------------------------------------------------------------------------------
# Staging: a worker-local copy keyed by the source's ETag, bounded in size


def source_key(container: str, name: str, etag: str) -> str:
    """The cache key of a source version (container, blob or store prefix, ETag)."""
    return hashlib.sha256(f"{container}\n{name}\n{etag}".encode()).hexdigest()[:32]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_size(path: PathLike, size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise SourceTooLarge(path, f"{size:,} bytes is over the staging limit of {max_bytes:,} "
                             "bytes (RMH_MAX_CUBE_BYTES)")


def stage_file(cache_dir: PathLike, key: str, *, size: int | None, max_bytes: int,
               download: Callable[[Path], Any]) -> Path:
    """The source as a local file ``<cache_dir>/rmh-cube-<key>/source``, downloaded once per
    host (``download(path)`` writes it; concurrent callers wait on a lock and reuse it).

    ``size`` (the listed blob size) is checked before the download and the file's real size
    after it. Each use touches the directory, so the worker's stale-staging sweep (entries
    untouched for the function timeout) only removes copies no activity is using.
    """
    _check_size(key, size, max_bytes)
    directory = Path(cache_dir) / f"rmh-cube-{key}"
    final = directory / "source"
    with _locked(directory):
        if not final.is_file():
            partial = directory / ".partial"
            partial.unlink(missing_ok=True)
            download(partial)
            try:
                _check_size(key, partial.stat().st_size, max_bytes)
            except SourceTooLarge:
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, final)
        os.utime(directory)
    return final


def check_member_name(store: str, name: str) -> str:
    """A blob name relative to a Zarr store's prefix, refused when it could land outside it."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeReference(store, f"store member {name!r} is not a plain relative key")
    return name


def stage_store(cache_dir: PathLike, key: str, members: Sequence[tuple[str, int | None]], *,
                max_bytes: int, download: Callable[[str, Path], Any]) -> Path:
    """A Zarr store (a prefix of many blobs) as a local directory, downloaded once per host.

    ``members`` are (name relative to the store's prefix, size); ``download(name, path)`` writes
    one. Names that could leave the directory are refused before anything is written.
    """
    names = [check_member_name(key, name) for name, _ in members]
    _check_size(key, sum(size or 0 for _, size in members), max_bytes)
    directory = Path(cache_dir) / f"rmh-cube-{key}"
    root = directory / "store"
    with _locked(directory):
        if not (directory / ".complete").is_file():
            partial = directory / ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            total = 0
            for name in names:
                target = partial.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                download(name, target)
                total += target.stat().st_size
                if total > max_bytes:
                    shutil.rmtree(partial, ignore_errors=True)
                    _check_size(key, total, max_bytes)
            os.replace(partial, root)
            (directory / ".complete").touch()
        os.utime(directory)
    return root


def zarr_store_roots(names: Sequence[str]) -> list[str]:
    """The prefixes of listed blob names that are Zarr store roots (each a dataset of its own):
    a prefix holding ``.zgroup``, ``.zmetadata``, ``.zarray`` or ``zarr.json``, outermost only."""
    candidates = set()
    for name in names:
        head, _, leaf = name.rpartition("/")
        if leaf in ZARR_MARKERS:
            candidates.add(head)
    roots: list[str] = []
    for prefix in sorted(candidates, key=len):
        if not any(prefix == r or prefix.startswith(r + "/") or r == "" for r in roots):
            roots.append(prefix)
    return sorted(roots)


# ----------------------------------------------------------------------------------------------
# Format and references: judged before any library that follows references sees the file


def sniff_cube(path: PathLike) -> str:
    """``netcdf``, ``hdf5``, ``grib`` or ``zarr`` from the bytes (or a store's markers)."""
    path = Path(path)
    if path.is_dir():
        if any((path / marker).is_file() for marker in ZARR_MARKERS):
            return "zarr"
        raise geo_ops.UnsupportedFormat(path, "a directory that is not a Zarr store")
    with open(path, "rb") as handle:
        head = handle.read(max(HDF5_OFFSETS) + len(HDF5_MAGIC))
    if not head:
        raise geo_ops.EmptyFile(path, "file is empty (0 bytes)")
    if head.startswith(NETCDF_CLASSIC_MAGIC):
        return "netcdf"
    if any(head[o:o + len(HDF5_MAGIC)] == HDF5_MAGIC for o in HDF5_OFFSETS):
        return "hdf5"
    if head.startswith(GRIB_MAGIC):
        return "grib"
    raise geo_ops.UnsupportedFormat(path, "not a NetCDF, HDF5, GRIB or Zarr file")


def check_hdf5(path: PathLike) -> bool:
    """Refuse an HDF5 (or NetCDF-4) file that names other files: external links, virtual
    datasets, external raw storage. Links are listed without being followed, and a dataset's
    layout is read from its creation properties before anything reads its data. True when the
    file is NetCDF-4 (netCDF-c's ``_NCProperties`` on the root group)."""
    import h5py

    problems: list[str] = []
    try:
        with h5py.File(path, "r") as handle:
            netcdf4 = "_NCProperties" in handle.attrs
            def visit(name: str, link: Any) -> None:
                if isinstance(link, h5py.ExternalLink):
                    problems.append(f"external link {name!r} to {link.filename!r}")
                elif isinstance(link, h5py.HardLink):
                    problems.extend(_hdf5_object_problems(handle, name))
            handle.visititems_links(visit)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise UnreadableCube(path, f"cannot read the HDF5 structure: {err}") from err
    if problems:
        raise UnsafeReference(path, "names other files: " + "; ".join(problems[:5]))
    return netcdf4


def _hdf5_object_problems(handle: Any, name: str) -> list[str]:
    import h5py

    info = h5py.h5o.get_info(handle.id, name.encode(), lapl=None)
    if info.type != h5py.h5o.TYPE_DATASET:
        return []
    dataset = h5py.h5o.open(handle.id, name.encode())
    dcpl = dataset.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        return [f"virtual dataset {name!r}"]
    if dcpl.get_external_count() > 0:
        return [f"dataset {name!r} stored in external files"]
    return []


def check_zarr_store(root: PathLike) -> None:
    """Refuse a Zarr store whose metadata could reach outside it: consolidated metadata keys
    with ``..``, absolute or backslash paths, v3 storage transformers (which redirect chunk
    keys), chunk key separators other than ``.`` and ``/``, any symbolic link, and metadata
    that is not JSON. (zarr-python then opens the arrays the directory holds, never the
    consolidated listing: ``use_consolidated=False``.)"""
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise UnsafeReference(root, f"{path.relative_to(root)} is a symbolic link")
        if path.name not in ZARR_MARKERS + (".zattrs",):
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UnreadableCube(root, f"{path.relative_to(root)} is not JSON: {err}") from err
        _check_zarr_meta(root, path.relative_to(root).as_posix(), meta)


def _check_zarr_meta(root: Path, where: str, meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    if meta.get("storage_transformers"):
        raise UnsafeReference(root, f"{where}: storage transformers can redirect chunk keys")
    for key in ("metadata",):  # v2 .zmetadata: {"metadata": {"a/.zarray": {...}}}
        if isinstance(meta.get(key), dict):
            for member, inner in meta[key].items():
                _check_key(root, where, member)
                _check_zarr_meta(root, f"{where}:{member}", inner)
    consolidated = meta.get("consolidated_metadata")  # v3 zarr.json
    if isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict):
        for member, inner in consolidated["metadata"].items():
            _check_key(root, where, member)
            _check_zarr_meta(root, f"{where}:{member}", inner)
    separator = meta.get("dimension_separator")  # v2 chunk keys: "0.0" or "0/0"
    encoding = meta.get("chunk_key_encoding")  # v3
    if isinstance(encoding, dict):
        separator = (encoding.get("configuration") or {}).get("separator", separator)
    if separator is not None and separator not in (".", "/"):
        raise UnsafeReference(root, f"{where}: chunk key separator {separator!r} is not '.' or '/'")


def _check_key(root: Path, where: str, key: str) -> None:
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or ":" in key or any(p in ("..", ".") for p in parts):
        raise UnsafeReference(root, f"{where}: key {key!r} points outside the store")


def check_name(path: PathLike, name: str) -> str:
    """A variable or array name, refused unless it is a plain name (``SAFE_NAME``)."""
    if len(name) > MAX_NAME or not SAFE_NAME.match(name) or ".." in name.split("/"):
        raise UnsafeName(path, f"name {name[:80]!r} is not a plain variable name")
    return name


# ----------------------------------------------------------------------------------------------
# Time: CF units and calendars (cftime), as RFC 3339 instants STAC can carry


def decode_times(path: PathLike, values: Sequence[float], units: str, calendar: str | None
                 ) -> list[str]:
    """CF time values (``<unit> since <epoch>``) as RFC 3339 UTC strings.

    Every CF calendar is decoded by cftime; dates a real calendar lacks (30 February of a
    ``360_day`` calendar) take the last real day of their month, and the calendar is kept in
    the cube's dimension (``calendar``) so nothing is hidden.
    """
    import cftime

    try:
        dates = cftime.num2date(np.asarray(values, dtype="float64"), units,
                                calendar=(calendar or "standard").lower(),
                                only_use_cftime_datetimes=True)
    except (ValueError, TypeError, OverflowError) as err:
        raise UndecodableTime(path, f"time units {units!r} calendar {calendar!r}: {err}") from err
    return [_rfc3339(path, d) for d in np.atleast_1d(dates)]


def _rfc3339(path: PathLike, date: Any) -> str:
    if not 1 <= date.year <= 9999:
        raise UndecodableTime(path, f"year {date.year} is outside what STAC datetimes carry")
    last = (dt.date(date.year + (date.month == 12), date.month % 12 + 1, 1) - dt.timedelta(days=1)).day \
        if date.year < 9999 or date.month < 12 else 31
    real = dt.datetime(date.year, date.month, min(date.day, last), date.hour, date.minute,
                       date.second, tzinfo=dt.timezone.utc)
    return real.isoformat().replace("+00:00", "Z")


def is_time_units(units: str | None) -> bool:
    return bool(units) and " since " in units.lower()


# ----------------------------------------------------------------------------------------------
# Grids: north-up, longitudes in −180..180 where the grid allows it


def normalize_grid(path: PathLike, crs: CRS, transform: Affine, width: int, height: int) -> CubeGrid:
    """The output grid of a source grid: rows flipped to run north to south, and for a
    geographic grid, longitudes moved into −180..180 (a whole-world grid is rolled so its
    western-most column comes first; a grid east of 180° is shifted by 360°; a regional grid
    across the antimeridian keeps its longitudes past 180°)."""
    if transform.b != 0 or transform.d != 0:
        raise IrregularGrid(path, "the grid is rotated; only north-up grids are converted")
    flip = transform.e > 0
    if flip:
        transform = Affine(transform.a, 0, transform.c, 0, -transform.e, transform.f + transform.e * height)
    roll, wrapped = 0, False
    if crs.is_geographic and transform.a > 0:
        transform, roll, wrapped = _wrap_longitudes(transform, width)
    return CubeGrid(crs_wkt=crs.to_wkt(), epsg=geo_ops.crs_epsg(crs), transform=list(transform)[:6],
                    width=width, height=height, flip_rows=flip, roll_columns=roll, wrapped=wrapped)


def _wrap_longitudes(t: Affine, width: int) -> tuple[Affine, int, bool]:
    west, dx = t.c, t.a
    east = west + dx * width
    if -180 - dx / 2 <= west and east <= 180 + dx / 2:
        return t, 0, False
    if abs(dx * width - 360) <= dx / 2:  # the whole world: roll the western-most column first
        edges = (west + dx * np.arange(width) + 180 + dx / 2) % 360 - 180 - dx / 2
        start = int(np.argmin(edges))
        return Affine(dx, 0, float(edges[start]), 0, t.e, t.f), -start, True
    shift = -360.0 * math.floor((west + 180 + dx / 2) / 360)
    return Affine(dx, 0, west + shift, 0, t.e, t.f), 0, shift != 0


def to_output(grid: CubeGrid, data: np.ndarray) -> np.ndarray:
    """A source slice on the output grid: rows flipped and columns rolled as planned."""
    if grid.flip_rows:
        data = data[::-1, :]
    if grid.roll_columns:
        data = np.roll(data, grid.roll_columns, axis=1)
    return np.ascontiguousarray(data)


def grid_from_coordinates(path: PathLike, x: np.ndarray, y: np.ndarray, crs: CRS) -> CubeGrid:
    """The grid of 1-D cell-centre coordinates (evenly spaced, else ``IrregularGrid``)."""
    for name, values in (("x", x), ("y", y)):
        if values.size < 2:
            raise IrregularGrid(path, f"the {name} coordinate has {values.size} value(s)")
        steps = np.diff(values.astype("float64"))
        if steps[0] == 0 or not np.allclose(steps, steps[0], rtol=0, atol=abs(steps[0]) * REGULAR_TOLERANCE):
            raise IrregularGrid(path, f"the {name} coordinate is not evenly spaced "
                                f"(steps {steps.min():g} to {steps.max():g})")
    dx = (float(x[-1]) - float(x[0])) / (x.size - 1)
    dy = (float(y[-1]) - float(y[0])) / (y.size - 1)
    if dx < 0:
        raise IrregularGrid(path, "the x coordinate decreases (east to west)")
    transform = Affine(dx, 0, float(x[0]) - dx / 2, 0, dy, float(y[0]) - dy / 2)
    return normalize_grid(path, crs, transform, int(x.size), int(y.size))


# ----------------------------------------------------------------------------------------------
# open_cube: the composer


def open_cube(path: PathLike, *, gdal_config: Mapping[str, Any] | None = None) -> CubeFacts:
    """Judge, check and describe a staged cube (a local file or a Zarr store directory)."""
    fmt = sniff_cube(path)
    if fmt == "hdf5" and check_hdf5(path):
        fmt = "netcdf"  # NetCDF-4: the same driver, the NetCDF media type
    if fmt == "zarr":
        check_zarr_store(path)
        return describe_zarr(path)
    with geo_ops.gdal_env(gdal_config, **CUBE_GDAL_CONFIG):
        return describe_gdal(path, fmt)


def _open(path: PathLike, name: str, fmt: str) -> DatasetReader:
    try:
        with catch_warnings():
            simplefilter("ignore", NotGeoreferencedWarning)
            return DatasetReader(name, driver=CUBE_DRIVERS[fmt])
    except GDAL_ERRORS as err:
        raise UnreadableCube(path, f"cannot open with {CUBE_DRIVERS[fmt][0]}: "
                             f"{geo_ops.gdal_reason(err)}") from err


def _subdataset_name(path: PathLike, fmt: str, variable: str) -> str:
    check_name(path, variable.lstrip("/"))
    return f'NETCDF:"{Path(path).resolve()}":{variable}'


# -- GDAL: NetCDF and HDF5 (netCDF driver), GRIB


def describe_gdal(path: PathLike, fmt: str) -> CubeFacts:
    """The cube as GDAL's netCDF or GRIB driver sees it."""
    try:
        opened = _open(path, str(Path(path).resolve()), fmt)
    except UnreadableCube as err:
        if "not recognized as being in a supported file format" in err.reason and fmt != "grib":
            raise NoGriddedVariable(path, "GDAL's netCDF driver finds no raster in it (no variable of "
                                    "two or more dimensions, or a damaged file)") from err
        raise
    with opened as ds:
        if fmt == "grib":
            return _describe_grib(path, ds)
        listed = ds.tags(ns="SUBDATASETS")  # as GDAL wrote them (rasterio's list drops quotes)
        subdatasets = [listed[k] for k in sorted(listed, key=_subdataset_order) if k.endswith("_NAME")]
        attrs = {k.removeprefix("NC_GLOBAL#"): v for k, v in ds.tags().items() if k.startswith("NC_GLOBAL#")}
        single = None if subdatasets else ds.tags(1).get("NETCDF_VARNAME") if ds.count else None
    prefix = f'NETCDF:"{Path(path).resolve()}":'
    names = [s[len(prefix):] if s.startswith(prefix) else s for s in subdatasets] if subdatasets \
        else [single] if single else []
    facts = CubeFacts(path=str(path), format=fmt, variables=[], dimensions={}, attrs=attrs)
    for name in names:
        try:
            _add_netcdf_variable(path, fmt, name, facts)
        except UndecodableTime:
            raise  # a file-wide fact: every variable on that time axis
        except CubeError as err:  # this variable only: the others are still converted
            facts.skipped.append(geo_ops._issue(type(err), err.reason))
    if not facts.variables:
        raise _nothing_gridded(path, facts)
    return facts


def _subdataset_order(key: str) -> int:
    match = re.match(r"^SUBDATASET_(\d+)_", key)
    return int(match.group(1)) if match else 0


def _nothing_gridded(path: PathLike, facts: CubeFacts) -> CubeError:
    reasons = [s for s in facts.skipped if s.code != "NotGridded"]
    if reasons:  # the one named reason the file was refused for
        cls = ERRORS_BY_CODE.get(reasons[0].code, NoGriddedVariable)
        return cls(path, "; ".join(r.message for r in reasons[:3]))
    detail = "; ".join(s.message for s in facts.skipped[:3])
    return NoGriddedVariable(path, "no variable lies on a georeferenced 2-D grid" + (f": {detail}" if detail else ""))


def _braced(text: str | None) -> list[str]:
    return [v for v in (text or "").strip("{}").split(",") if v != ""]


def _number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _add_netcdf_variable(path: PathLike, fmt: str, name: str, facts: CubeFacts) -> None:
    subdataset = _subdataset_name(path, fmt, name)
    try:
        opened = _open(path, subdataset, fmt)
    except UnreadableCube as err:
        facts.skipped.append(Issue(code="NotGridded", message=f"{name}: GDAL does not read it as a raster "
                                   f"({err.reason})"))
        return
    with opened as ds:
        tags = ds.tags()
        if ds.tags(ns="GEOLOCATION"):
            raise CurvilinearGrid(path, f"{name}: 2-D latitude/longitude coordinates "
                                  "(a curvilinear grid; convert it to a regular grid first)")
        crs = ds.crs or _lonlat_crs(tags)
        if crs is None or ds.transform.is_identity:
            what = "no CRS (no grid_mapping, not degrees east/north)" if not ds.transform.is_identity \
                else "no spatial coordinates"
            facts.skipped.append(Issue(code="NotGridded", message=f"{name}: {what}"))
            return
        _check_spacing(path, fmt, name, tags, ds.width, ds.height)
        grid = normalize_grid(path, crs, ds.transform, ds.width, ds.height)
        dims = _braced(tags.get("NETCDF_DIM_EXTRA"))
        for dim in dims:
            check_name(path, dim)
            if dim not in facts.dimensions:
                facts.dimensions[dim] = _netcdf_dimension(path, dim, tags)
        band_tags = ds.tags(1) if ds.count else {}
        variable = CubeVariable(
            name=name.lstrip("/"), dims=dims, dtype=ds.dtypes[0], nodata=nodata_json(ds.nodata),
            scale=ds.scales[0] if ds.count else 1.0, offset=ds.offsets[0] if ds.count else 0.0,
            unit=band_tags.get("units") or None, long_name=band_tags.get("long_name"),
            standard_name=band_tags.get("standard_name"), grid=grid, subdataset=subdataset,
            tags={k: v for k, v in band_tags.items() if k in _CF_TAGS},
            slices=[_netcdf_slice(path, facts.dimensions, dims, ds.tags(b), b) for b in range(1, ds.count + 1)])
        _missing_value_note(facts, variable, band_tags)
    _add_time_bounds(path, fmt, facts, tags)
    facts.variables.append(variable)


_AXIS_HINTS = {
    "x": ({"longitude", "projection_x_coordinate", "grid_longitude"}, {"degrees_east", "degree_east"}),
    "y": ({"latitude", "projection_y_coordinate", "grid_latitude"}, {"degrees_north", "degree_north"}),
}


def _check_spacing(path: PathLike, fmt: str, name: str, tags: Mapping[str, str], width: int, height: int) -> None:
    """Refuse 1-D x/y coordinates that are not evenly spaced: GDAL's netCDF driver compares only
    the first, middle and last steps and otherwise georeferences them with their mean step."""
    for axis, size in (("x", width), ("y", height)):
        names, units = _AXIS_HINTS[axis]
        candidates = {k.split("#")[0] for k, v in tags.items() if "#" in k and (
            (k.endswith("#axis") and v.upper() == axis.upper()) or (k.endswith("#standard_name") and v in names)
            or (k.endswith("#units") and v.lower() in units))}
        for coordinate in sorted(candidates):
            if coordinate == name or not SAFE_NAME.match(coordinate):
                continue
            try:
                with _open(path, _subdataset_name(path, fmt, coordinate), fmt) as ds:
                    if ds.height != 1 or ds.width != size:
                        continue
                    values = ds.read(1)[0].astype("float64")
            except CubeError:
                continue
            steps = np.diff(values)
            if steps.size and (steps[0] == 0 or not np.allclose(
                    steps, steps[0], rtol=0, atol=abs(steps[0]) * REGULAR_TOLERANCE)):
                raise IrregularGrid(path, f"{name}: coordinate {coordinate!r} is not evenly spaced "
                                    f"(steps {steps.min():g} to {steps.max():g})")


def _lonlat_crs(tags: Mapping[str, str]) -> CRS | None:
    """WGS 84 longitude/latitude for a CF grid of degrees east/north without a grid mapping."""
    units = {v.lower() for k, v in tags.items() if k.endswith("#units")}
    if units & {"degrees_east", "degree_east", "degrees_e", "degreee"} and \
            units & {"degrees_north", "degree_north", "degrees_n", "degreen"}:
        return CRS.from_epsg(4326)
    return None


def _netcdf_dimension(path: PathLike, dim: str, tags: Mapping[str, str]) -> CubeDimension:
    values = [_number(v) for v in _braced(tags.get(f"NETCDF_DIM_{dim}_VALUES"))]
    units = tags.get(f"{dim}#units")
    calendar = tags.get(f"{dim}#calendar")
    if is_time_units(units) or tags.get(f"{dim}#axis") == "T" or tags.get(f"{dim}#standard_name") == "time":
        if not is_time_units(units):
            raise UndecodableTime(path, f"time dimension {dim!r} has units {units!r}")
        return CubeDimension(name=dim, kind="temporal", size=len(values), values=values, unit=units,
                             calendar=calendar, datetimes=decode_times(path, values, units, calendar))
    return CubeDimension(name=dim, kind="other", size=len(values), values=values, unit=units)


def _netcdf_slice(path: PathLike, dimensions: Mapping[str, CubeDimension], dims: list[str],
                  band_tags: Mapping[str, str], band: int) -> CubeSlice:
    index = {}
    for dim in dims:
        text = band_tags.get(f"NETCDF_DIM_{dim}")
        position = _position(dimensions[dim].values, _number(text)) if text is not None else None
        if position is None:
            raise UnreadableCube(path, f"band {band}: no position along {dim!r}")
        index[dim] = position
    return CubeSlice(index=index, band=band)


def _position(values: Sequence[float | str], value: float | str) -> int | None:
    """Where ``value`` is in ``values`` (numbers compared as numbers)."""
    for i, candidate in enumerate(values):
        if candidate == value or (isinstance(candidate, (int, float)) and isinstance(value, (int, float))
                                  and math.isclose(candidate, value, rel_tol=1e-12, abs_tol=0)):
            return i
    return None


def _missing_value_note(facts: CubeFacts, variable: CubeVariable, tags: Mapping[str, str]) -> None:
    missing = tags.get("missing_value")
    if missing is not None and _number(missing) != variable.nodata and str(variable.nodata) != missing:
        facts.warnings.append(Issue(code="SecondMissingValue", message=(
            f"{variable.name}: missing_value {missing} differs from the nodata carried "
            f"({variable.nodata}); its pixels keep their stored value")))


def _add_time_bounds(path: PathLike, fmt: str, facts: CubeFacts, tags: Mapping[str, str]) -> None:
    """CF ``bounds`` of the time dimension as [start, end] instants, when they hold together."""
    time_dim = facts.time_dimension
    bounds_name = tags.get(f"{time_dim.name}#bounds") if time_dim else None
    if not bounds_name or time_dim.bounds is not None:
        return
    try:
        with _open(path, _subdataset_name(path, fmt, bounds_name), fmt) as ds:
            raw = ds.read(1).astype("float64")
    except (CubeError, *GDAL_ERRORS):
        return
    values = np.asarray(time_dim.values, dtype="float64")
    for candidate in (raw, raw[::-1]):
        if candidate.shape == (values.size, 2) and np.all(candidate[:, 0] <= values) \
                and np.all(values <= candidate[:, 1]):
            starts = decode_times(path, candidate[:, 0], time_dim.unit, time_dim.calendar)
            ends = decode_times(path, candidate[:, 1], time_dim.unit, time_dim.calendar)
            time_dim.bounds = [list(pair) for pair in zip(starts, ends)]
            return
    facts.warnings.append(Issue(code="TimeBoundsIgnored", message=(
        f"time bounds {bounds_name!r} do not enclose the time values")))


def _slug(text: str) -> str:
    """A GRIB variable's name from GDAL's description of it (``"var167 of table 128 of center
    74"`` for a parameter GDAL's tables lack): only ever a path segment and an asset key, never
    handed back to GDAL, so it is made plain rather than refused."""
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text).strip("_.-")[:MAX_NAME]
    return slug if slug and SAFE_NAME.match(slug) else "variable"


def _grib_time(text: str | None) -> float | None:
    if not text:
        return None
    match = re.match(r"^\s*(-?\d+)", text)
    return float(match.group(1)) if match else None


def _grib_level(short_name: str) -> tuple[str, float | str]:
    """``"850-ISBL"`` → (``"ISBL"``, 850); a level without a number keeps its text."""
    value, _, kind = short_name.partition("-")
    return (kind or short_name or "level"), _number(value) if kind else short_name


def _describe_grib(path: PathLike, ds: DatasetReader) -> CubeFacts:
    """GRIB messages (bands) grouped into variables by element and level type; time from the
    valid time, a level dimension per level type holding more than one level."""
    if ds.transform.is_identity or ds.crs is None:
        raise NoGriddedVariable(path, "the GRIB grid has no georeferencing GDAL can read")
    grid = normalize_grid(path, ds.crs, ds.transform, ds.width, ds.height)
    bands = []
    for b in range(1, ds.count + 1):
        tags = ds.tags(b)
        kind, level = _grib_level(tags.get("GRIB_SHORT_NAME", ""))
        bands.append((b, tags.get("GRIB_ELEMENT") or f"band{b}", kind, level, _grib_time(tags.get("GRIB_VALID_TIME")), tags))
    times = sorted({t for *_, t, _ in bands if t is not None})
    facts = CubeFacts(path=str(path), format="grib", variables=[], dimensions={})
    if times:
        facts.dimensions["time"] = CubeDimension(
            name="time", kind="temporal", size=len(times), values=times, unit="seconds since 1970-01-01",
            datetimes=decode_times(path, times, "seconds since 1970-01-01", "standard"))
    groups: dict[tuple[str, str], list] = {}
    for entry in bands:
        groups.setdefault((entry[1], entry[2]), []).append(entry)
    for (element, kind), entries in groups.items():
        levels = sorted({e[3] for e in entries}, key=lambda v: (isinstance(v, str), v))
        name = _slug(f"{element}_{kind}" if len(levels) > 1 else f"{element}_{entries[0][5].get('GRIB_SHORT_NAME') or kind}")
        dims = (["time"] if times else []) + ([kind] if len(levels) > 1 else [])
        if len(levels) > 1 and kind not in facts.dimensions:
            facts.dimensions[kind] = CubeDimension(name=kind, kind="other", size=len(levels), values=levels,
                                                   unit=_grib_level_unit(ds.descriptions[entries[0][0] - 1]))
        slices = []
        for b, _, _, level, when, _ in entries:
            index = {"time": times.index(when)} if times and when is not None else {}
            if len(levels) > 1:
                index[kind] = levels.index(level)
            slices.append(CubeSlice(index=index, band=b))
        if len({tuple(s.index.items()) for s in slices}) != len(slices):
            facts.warnings.append(Issue(code="DuplicateMessages", message=(
                f"{name}: several messages share a time and level; each is written")))
        first = entries[0][5]
        unit = (first.get("GRIB_UNIT") or "").strip("[]") or None
        facts.variables.append(CubeVariable(
            name=name, dims=dims, dtype=ds.dtypes[entries[0][0] - 1], nodata=nodata_json(ds.nodatavals[entries[0][0] - 1]),
            unit=unit, long_name=(first.get("GRIB_COMMENT") or None), grid=grid,
            tags={k: v for k, v in first.items() if k in ("GRIB_ELEMENT", "GRIB_COMMENT", "GRIB_DISCIPLINE")},
            slices=slices))
    if not facts.variables:
        raise _nothing_gridded(path, facts)
    return facts


def _grib_level_unit(description: str | None) -> str | None:
    """The level's unit from GDAL's band description (``"850[Pa] ISBL=..."`` → ``Pa``)."""
    match = re.match(r"^\S*?\[([^\]]+)\]", description or "")
    return match.group(1) if match else None


# -- Zarr (zarr-python)


def describe_zarr(root: PathLike) -> CubeFacts:
    """The store's gridded arrays as zarr-python reads them (v2 and v3), georeferenced from CF
    coordinates: 1-D x/y arrays named as the array's last two dimensions, a ``grid_mapping``
    (through ``pyproj.CRS.from_cf``) or degrees east/north for longitude/latitude."""
    arrays, attrs = _zarr_arrays(root)
    facts = CubeFacts(path=str(root), format="zarr", variables=[], dimensions={},
                      attrs={k: str(v) for k, v in attrs.items() if isinstance(v, (str, int, float))})
    for name, array in arrays.items():
        dims = _zarr_dims(array)
        if dims is None or len(dims) < 2 or name in dims or not _is_spatial(arrays, dims[-2:]):
            continue
        try:
            facts.variables.append(_zarr_variable(root, name, array, dims, arrays, facts))
        except (UnsafeName, CurvilinearGrid, IrregularGrid, NoGriddedVariable, UndecodableTime) as err:
            facts.skipped.append(geo_ops._issue(type(err), err.reason))
    curvilinear = [n for n, a in arrays.items() if _zarr_dims(a) and len(_zarr_dims(a)) >= 2
                   and "coordinates" in a.attrs and not _is_spatial(arrays, _zarr_dims(a)[-2:])]
    for name in curvilinear:
        facts.skipped.append(geo_ops._issue(CurvilinearGrid, f"{name}: 2-D latitude/longitude coordinates "
                                            "(a curvilinear grid; convert it to a regular grid first)"))
    if not facts.variables:
        raise _nothing_gridded(root, facts)
    return facts


def _zarr_arrays(root: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    import zarr

    try:
        group = zarr.open_group(str(root), mode="r", use_consolidated=False)
        arrays = {}
        for name, array in group.arrays():
            arrays[check_name(root, name)] = array
        return arrays, dict(group.attrs)
    except CubeError:
        raise
    except Exception as err:  # zarr-python raises many types for a damaged store
        raise UnreadableCube(root, f"cannot read the Zarr store: {type(err).__name__}: {err}") from err


def _zarr_dims(array: Any) -> list[str] | None:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    return list(names) if names and all(isinstance(n, str) for n in names) else None


def _is_spatial(arrays: Mapping[str, Any], dims: Sequence[str]) -> bool:
    return all(d in arrays and _zarr_dims(arrays[d]) == [d] for d in dims)


def _zarr_crs(root: PathLike, array: Any, arrays: Mapping[str, Any], x: Any, y: Any) -> CRS:
    mapping = array.attrs.get("grid_mapping")
    if isinstance(mapping, str) and mapping in arrays:
        cf = dict(arrays[mapping].attrs)
        text = cf.get("crs_wkt") or cf.get("spatial_ref")
        try:
            crs = pyproj.CRS.from_wkt(text) if isinstance(text, str) else pyproj.CRS.from_cf(cf)
        except pyproj.exceptions.CRSError as err:
            raise NoGriddedVariable(root, f"grid mapping {mapping!r}: {err}") from err
        return CRS.from_wkt(crs.to_wkt())
    units = {str(x.attrs.get("units", "")).lower(), str(y.attrs.get("units", "")).lower()}
    names = {str(x.attrs.get("standard_name", "")), str(y.attrs.get("standard_name", ""))}
    if units <= {"degrees_east", "degree_east", "degrees_north", "degree_north"} and len(units) == 2 \
            or names == {"longitude", "latitude"}:
        return CRS.from_epsg(4326)
    raise NoGriddedVariable(root, f"{array.path}: x/y coordinates without a CRS (no grid_mapping, "
                            "not degrees east/north)")


def _zarr_variable(root: PathLike, name: str, array: Any, dims: list[str],
                   arrays: Mapping[str, Any], facts: CubeFacts) -> CubeVariable:
    ydim, xdim = dims[-2:]
    x, y = arrays[xdim], arrays[ydim]
    grid = grid_from_coordinates(root, np.asarray(x[:]), np.asarray(y[:]), _zarr_crs(root, array, arrays, x, y))
    extra = [check_name(root, d) for d in dims[:-2]]
    for dim in extra:
        if dim not in facts.dimensions:
            facts.dimensions[dim] = _zarr_dimension(root, dim, arrays)
    attrs = dict(array.attrs)
    nodata = attrs.get("_FillValue", attrs.get("missing_value"))
    if nodata is None and array.metadata.zarr_format == 2:
        nodata = array.fill_value  # xarray's convention for v2 stores
    shape = [facts.dimensions[d].size for d in extra]
    slices = [CubeSlice(index=dict(zip(extra, map(int, pos)))) for pos in np.ndindex(*shape)] if extra else [CubeSlice()]
    return CubeVariable(
        name=name, dims=extra, dtype=str(array.dtype), nodata=_nodata_value(nodata),
        scale=float(attrs.get("scale_factor", 1.0)), offset=float(attrs.get("add_offset", 0.0)),
        unit=_text(attrs.get("units")), long_name=_text(attrs.get("long_name")),
        standard_name=_text(attrs.get("standard_name")), grid=grid,
        tags={k: str(v) for k, v in attrs.items() if k in _CF_TAGS}, slices=slices)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _nodata_value(value: Any) -> Nodata:
    if value is None or isinstance(value, (list, dict, bool)):
        return None
    try:
        return nodata_json(float(value))
    except (TypeError, ValueError):
        return None


def _zarr_dimension(root: PathLike, dim: str, arrays: Mapping[str, Any]) -> CubeDimension:
    coord = arrays.get(dim)
    if coord is None or _zarr_dims(coord) != [dim]:
        raise UnreadableCube(root, f"dimension {dim!r} has no coordinate array")
    values = [_number(repr(float(v))) if np.issubdtype(np.asarray(v).dtype, np.number) else str(v)
              for v in np.asarray(coord[:]).tolist()]
    units, calendar = _text(coord.attrs.get("units")), _text(coord.attrs.get("calendar"))
    if is_time_units(units):
        dimension = CubeDimension(name=dim, kind="temporal", size=len(values), values=values, unit=units,
                                  calendar=calendar, datetimes=decode_times(root, values, units, calendar))
        bounds = coord.attrs.get("bounds")
        if isinstance(bounds, str) and bounds in arrays:
            raw = np.asarray(arrays[bounds][:], dtype="float64")
            if raw.shape == (len(values), 2):
                dimension.bounds = [list(p) for p in zip(decode_times(root, raw[:, 0], units, calendar),
                                                         decode_times(root, raw[:, 1], units, calendar))]
        return dimension
    return CubeDimension(name=dim, kind="other", size=len(values), values=values, unit=units)


# ----------------------------------------------------------------------------------------------
# plan_slices: slice groups, each bounded work for one activity


def slice_name(variable: CubeVariable, index: Mapping[str, int]) -> str:
    """The file name of a slice's COG: the variable and its position along each dimension."""
    parts = [variable.name.replace("/", "_")] + [f"{d}{index[d]:05d}" for d in variable.dims if d in index]
    return "_".join(parts) + ".tif"


def plan_slices(facts: CubeFacts, output_prefix: str, *, max_slices: int, max_pixels_per_task: int,
                max_slices_per_task: int) -> list[SliceGroup]:
    """Slice groups: consecutive time steps (every variable and level of a step in the same
    group, so one group writes whole steps), each holding at most ``max_slices_per_task``
    slices and ``max_pixels_per_task`` pixels (at least one step). Refuses a cube of more than
    ``max_slices`` slices (``TooManySlices``) and a slice over the pixel budget (``SliceTooLarge``)."""
    total = facts.slice_count
    if total > max_slices:
        raise TooManySlices(facts.path, f"{total:,} slices ({len(facts.variables)} variables) is over "
                            f"the limit of {max_slices:,} per file (RMH_MAX_CUBE_SLICES)")
    for v in facts.variables:
        if v.grid.width * v.grid.height > max_pixels_per_task:
            raise SliceTooLarge(facts.path, f"{v.name}: a {v.grid.width} x {v.grid.height} slice is over "
                                f"the budget of {max_pixels_per_task:,} pixels per task")
    time_dim = facts.time_dimension
    by_step: dict[int | None, list[tuple[CubeVariable, CubeSlice]]] = {}
    for v in facts.variables:
        for s in v.slices:
            by_step.setdefault(s.index.get(time_dim.name) if time_dim and time_dim.name in v.dims else None, []).append((v, s))
    groups: list[list[tuple[int | None, list]]] = [[]]
    count = pixels = 0
    for step in sorted(by_step, key=lambda k: (k is not None, k or 0)):
        members = by_step[step]
        size = sum(v.grid.width * v.grid.height for v, _ in members)
        if groups[-1] and (count + len(members) > max_slices_per_task or pixels + size > max_pixels_per_task):
            groups.append([])
            count = pixels = 0
        groups[-1].append((step, members))
        count, pixels = count + len(members), pixels + size
    return [_slice_group(i, facts, output_prefix, steps) for i, steps in enumerate(groups) if steps]


def _slice_group(index: int, facts: CubeFacts, prefix: str, steps: list) -> SliceGroup:
    variables: dict[str, CubeVariable] = {}
    tasks = []
    for _, members in steps:
        for v, s in members:
            variables.setdefault(v.name, v.model_copy(update={"slices": []})).slices.append(s)
            tasks.append(SliceTask(variable=v.name, slice=s,
                                   output_path=f"{prefix.rstrip('/')}/{v.name.replace('/', '_')}/{slice_name(v, s.index)}"))
    return SliceGroup(index=index, source=facts.path, format=facts.format, steps=[s for s, _ in steps],
                      variables=list(variables.values()), tasks=tasks)


# ----------------------------------------------------------------------------------------------
# convert_slices: one group's COGs


def convert_slices(group: SliceGroup, *, profile: str = "deflate", blocksize: int = 512,
                   threads: int | str = 1, overview_resampling: str = "nearest",
                   tmp_dir: PathLike | None = None, gdal_config: Mapping[str, Any] | None = None,
                   skip_existing: Callable[[str], bool] | None = None) -> SliceGroupResult:
    """Write each slice of ``group`` as a COG at its ``output_path`` (local or ``/vsiaz/``).

    Only lossless profiles: the COG holds the source's stored values, with the variable's
    scale, offset, nodata, unit and CF attributes on its band and its position as dataset tags.
    Each COG is staged, strictly validated, then published; a slice that fails raises and
    leaves nothing at its path (the group's earlier COGs stay: they are whole and current).
    ``skip_existing(path)`` lets a retry keep the COGs an earlier attempt published.
    """
    if profile not in geo_ops.LOSSLESS_PROFILES:
        raise geo_ops.InvalidOption(profile, f"cubes are converted with lossless profiles only "
                                    f"({', '.join(sorted(geo_ops.LOSSLESS_PROFILES))})")
    started = time.perf_counter()
    config = geo_ops.env_options(gdal_config, **CUBE_GDAL_CONFIG)
    options = geo_ops.cog_options(profile, blocksize=blocksize, overview_resampling=overview_resampling,
                                  threads=threads)
    variables = {v.name: v for v in group.variables}
    outputs = []
    with rasterio.Env(**config), _slice_reader(group) as read:
        for task in group.tasks:
            variable = variables[task.variable]
            if skip_existing is not None and skip_existing(task.output_path):
                outputs.append(SliceOutput(variable=task.variable, index=task.slice.index, path=task.output_path,
                                           size_bytes=None, cog_valid=True))
                continue
            data = to_output(variable.grid, read(variable, task.slice))
            outputs.append(_write_slice(group, variable, task, data, options, config, tmp_dir))
    return SliceGroupResult(index=group.index, outputs=outputs, elapsed_s=time.perf_counter() - started)


@contextlib.contextmanager
def _slice_reader(group: SliceGroup) -> Iterator[Callable[[CubeVariable, CubeSlice], np.ndarray]]:
    """A function reading one slice's stored values; datasets opened once per group."""
    opened: dict[str, Any] = {}
    try:
        if group.format == "zarr":
            arrays, _ = _zarr_arrays(group.source)

            def read(variable: CubeVariable, s: CubeSlice) -> np.ndarray:
                key = tuple(s.index[d] for d in variable.dims)
                try:
                    return np.asarray(arrays[variable.name][key + (slice(None), slice(None))])
                except Exception as err:
                    raise UnreadableCube(group.source, f"{variable.name} {s.index}: {type(err).__name__}: {err}") from err
        else:
            def read(variable: CubeVariable, s: CubeSlice) -> np.ndarray:
                name = variable.subdataset or str(Path(group.source).resolve())
                if name not in opened:
                    opened[name] = _open(group.source, name, group.format)
                try:
                    return opened[name].read(s.band)
                except GDAL_ERRORS as err:
                    raise UnreadableCube(group.source, f"{variable.name} band {s.band}: "
                                         f"{geo_ops.gdal_reason(err)}") from err
        yield read
    finally:
        for ds in opened.values():
            ds.close()


def _position_tags(group: SliceGroup, variable: CubeVariable, s: CubeSlice) -> dict[str, str]:
    return {f"DIM_{dim}_INDEX": str(i) for dim, i in s.index.items()}


def _write_slice(group: SliceGroup, variable: CubeVariable, task: SliceTask, data: np.ndarray,
                 options: Mapping[str, str], config: Mapping[str, Any], tmp_dir: PathLike | None) -> SliceOutput:
    grid = variable.grid
    nodata = None if variable.nodata is None else float(variable.nodata)
    with geo_ops.staged_output(task.output_path, tmp_dir) as tmp:
        try:
            with rasterio.open("/vsimem/cube-slice", "w", driver="MEM", width=grid.width, height=grid.height,
                               count=1, dtype=data.dtype, crs=CRS.from_wkt(grid.crs_wkt),
                               transform=Affine(*grid.transform), nodata=nodata) as mem:
                mem.write(data, 1)
                mem.scales, mem.offsets = (variable.scale,), (variable.offset,)
                if variable.unit:
                    mem.units = (variable.unit,)
                mem.descriptions = (variable.name,)
                mem.update_tags(1, **variable.tags)
                mem.update_tags(**_position_tags(group, variable, task.slice), CUBE_VARIABLE=variable.name)
                # Overviews as to_cog writes any shape: no level that is no reduction across.
                rasterio.shutil.copy(mem, tmp, driver="COG",
                                     **geo_ops.shaped_cog_options(options, grid.width, grid.height))
        except GDAL_ERRORS as err:
            raise geo_ops.read_error(group.source, f"{variable.name} {task.slice.index}", err) from err
        geo_ops.verify_cog(tmp, config)
        size = os.path.getsize(tmp)
    return SliceOutput(variable=variable.name, index=task.slice.index, path=task.output_path,
                       size_bytes=size, cog_valid=True)


# ----------------------------------------------------------------------------------------------
# STAC: the datacube extension on items and collections, a source asset, per-slice COG assets


def _grid_extent(grid: CubeGrid) -> tuple[float, float, float, float]:
    t = Affine(*grid.transform)
    west, north = t.c, t.f
    return west, north + t.e * grid.height, west + t.a * grid.width, north


def _reference_system(grid: CubeGrid) -> int | str:
    """The EPSG code, else the CRS as WKT2 (a string, as ``proj:wkt2`` carries it)."""
    return grid.epsg if grid.epsg is not None else pyproj.CRS.from_wkt(grid.crs_wkt).to_wkt()


def _dimension_object(dim: CubeDimension, positions: Sequence[int] | None = None) -> dict[str, Any]:
    picks = range(dim.size) if positions is None else positions
    if dim.kind == "temporal":
        stamps = [dim.datetimes[i] for i in picks]
        if dim.bounds:
            extent = [min(dim.bounds[i][0] for i in picks), max(dim.bounds[i][1] for i in picks)]
        else:
            extent = [min(stamps), max(stamps)]
        return {"type": "temporal", "extent": extent, "values": sorted(set(stamps))}
    values = [dim.values[i] for i in picks]
    out: dict[str, Any] = {"type": dim.name, "values": values}
    if dim.unit:
        out["unit"] = dim.unit
    return out


def cube_dimensions(facts: CubeFacts, *, step: int | None = None) -> dict[str, Any]:
    """``cube:dimensions``: x and y of the output grid (the first variable's), then each
    non-spatial dimension; with ``step`` the time dimension holds that one step."""
    grid = facts.variables[0].grid
    west, south, east, north = _grid_extent(grid)
    t = Affine(*grid.transform)
    ref = _reference_system(grid)
    dims: dict[str, Any] = {
        "x": {"type": "spatial", "axis": "x", "extent": [west, east], "step": t.a, "reference_system": ref},
        "y": {"type": "spatial", "axis": "y", "extent": [south, north], "step": t.e, "reference_system": ref},
    }
    for name, dim in facts.dimensions.items():
        picks = [step] if dim.kind == "temporal" and step is not None else None
        dims[name] = _dimension_object(dim, picks)
    return dims


def cube_variables(facts: CubeFacts) -> dict[str, Any]:
    """``cube:variables``: each converted variable's dimensions, unit and description."""
    out = {}
    for v in facts.variables:
        entry: dict[str, Any] = {"dimensions": [*v.dims, "y", "x"], "type": "data"}
        if v.unit:
            entry["unit"] = v.unit
        if v.long_name or v.standard_name:
            entry["description"] = v.long_name or v.standard_name
        out[v.name] = entry
    return out


def step_times(facts: CubeFacts, step: int | None) -> dict[str, Any]:
    """``datetime`` (and ``start_datetime``/``end_datetime`` from CF bounds) of a time step;
    a cube without time gets ``datetime`` None and the caller's rule (the blob's time)."""
    dim = facts.time_dimension
    if dim is None or step is None:
        return {"datetime": None}
    out: dict[str, Any] = {"datetime": dim.datetimes[step]}
    if dim.bounds:
        out.update(start_datetime=dim.bounds[step][0], end_datetime=dim.bounds[step][1])
    return out


def source_asset(facts: CubeFacts, href: str, *, size: int | None = None,
                 alternates: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The cube file (or store root) itself, for a user who opens the cube."""
    asset: dict[str, Any] = {"href": href, "type": MEDIA_TYPES[facts.format],
                             "title": f"Original {FORMAT_TITLES[facts.format]}", "roles": ["source", "data"]}
    if size is not None:
        asset["file:size"] = size
    if alternates:
        asset["alternate"] = {k: {"href": v} for k, v in alternates.items()}
    return asset


def _asset_key(variable: str, index: Mapping[str, int], dims: Sequence[str], time_dim: str | None) -> str:
    parts = [variable.replace("/", "_")] + [f"{d}{index[d]}" for d in dims if d != time_dim and d in index]
    return "~".join(parts)


def slice_item(facts: CubeFacts, step: int | None, outputs: Sequence[SliceOutput], *, item_id: str,
               collection_id: str, source_href: str, href_for: Callable[[str], str],
               source_size: int | None = None, fallback_datetime: dt.datetime | None = None,
               properties: Mapping[str, Any] | None = None, gdal_config: Mapping[str, Any] | None = None,
               validator: Any = None) -> dict[str, Any]:
    """The STAC item of one time step: a COG asset per variable (and level), keyed
    ``<variable>[~<dim><i>]``, with statistics, raster bands (scale, offset, nodata, unit) read
    from the COGs; the source asset; the datacube fields of that step; a render per variable."""
    import stac_ops

    time_name = facts.time_dimension.name if facts.time_dimension else None
    dims_of = {v.name: v.dims for v in facts.variables}
    assets: dict[str, Any] = {}
    renders: dict[str, Any] = {}
    first = None
    for out in outputs:
        header = stac_ops.read_facts(out.path, gdal_config=gdal_config)
        first = first or header
        key = _asset_key(out.variable, out.index, dims_of[out.variable], time_name)
        asset = stac_ops.get_data_asset(header, href=href_for(out.path), size=out.size_bytes).to_dict()
        asset["title"] = f"{out.variable} " + " ".join(f"{d}={facts.dimensions[d].values[i]}"
                                                        for d, i in out.index.items() if d != time_name)
        asset["title"] = asset["title"].strip()
        assets[key] = asset
        render = stac_ops.get_renders(header).get("default")
        if render:
            renders[key] = {**render, "assets": [key], "title": asset["title"]}
    if first is None:
        raise NoGriddedVariable(facts.path, f"time step {step}: no slice was written")
    geometry, bbox = stac_ops.get_geometry(first)
    assets["source"] = source_asset(facts, source_href, size=source_size)
    props: dict[str, Any] = {**stac_ops.get_projection(first), **step_times(facts, step),
                             "cube:dimensions": cube_dimensions(facts, step=step),
                             "cube:variables": cube_variables(facts)}
    if props["datetime"] is None:
        if fallback_datetime is None:
            raise stac_ops.MissingDatetime(f"{facts.path}: no time dimension and no fallback datetime")
        props["datetime"] = stac_ops._utc(fallback_datetime).isoformat().replace("+00:00", "Z")
    if renders:
        props["renders"] = renders
    props.update(properties or {})
    item = {"type": "Feature", "stac_version": stac_ops.STAC_VERSION, "id": item_id, "collection": collection_id,
            "geometry": geometry, "bbox": bbox, "properties": props, "assets": assets,
            "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"}],
            "stac_extensions": _extensions(assets, renders)}
    if validator is not None:
        validator.validate_item(item)
    return item


def _extensions(assets: Mapping[str, Any], renders: Mapping[str, Any]) -> list[str]:
    import stac_ops

    fields = {k for a in assets.values() for k in a}
    out = [DATACUBE_EXT, stac_ops.PROJECTION_EXT]
    if "raster:bands" in fields:
        out.append(stac_ops.RASTER_EXT)
    if any(k.startswith("file:") for k in fields):
        out.append(stac_ops.FILE_EXT)
    if renders:
        out.append(stac_ops.RENDER_EXT)
    if "alternate" in fields:
        out.append(stac_ops.ALTERNATE_EXT)
    return out


def cube_item(facts: CubeFacts, *, item_id: str, collection_id: str, source_href: str,
              source_size: int | None = None, fallback_datetime: dt.datetime | None = None,
              properties: Mapping[str, Any] | None = None, validator: Any = None) -> dict[str, Any]:
    """The STAC item of the whole file: its footprint, its time range, the full datacube
    description and the source asset (what a user opens with xarray or GDAL)."""
    import stac_ops

    grid = facts.variables[0].grid
    geometry, bbox = geo_ops.footprint(CRS.from_wkt(grid.crs_wkt), Affine(*grid.transform), grid.width, grid.height)
    dims = cube_dimensions(facts)
    props: dict[str, Any] = {"cube:dimensions": dims, "cube:variables": cube_variables(facts)}
    time_dim = facts.time_dimension
    if time_dim is not None:
        start, end = dims[time_dim.name]["extent"]
        props.update(datetime=None, start_datetime=start, end_datetime=end)
    elif fallback_datetime is not None:
        props["datetime"] = stac_ops._utc(fallback_datetime).isoformat().replace("+00:00", "Z")
    else:
        raise stac_ops.MissingDatetime(f"{facts.path}: no time dimension and no fallback datetime")
    props.update(properties or {})
    assets = {"source": source_asset(facts, source_href, size=source_size)}
    item = {"type": "Feature", "stac_version": stac_ops.STAC_VERSION, "id": item_id, "collection": collection_id,
            "geometry": geometry, "bbox": bbox, "properties": props, "assets": assets,
            "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"}],
            "stac_extensions": _extensions(assets, {})}
    if validator is not None:
        validator.validate_item(item)
    return item


def collection_fields(cubes: Sequence[CubeFacts]) -> dict[str, Any]:
    """What a collection of cube items adds: the datacube fields merged over its files (each
    dimension's extent widened, values joined), and summaries of variables and time range."""
    dims: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for facts in cubes:
        for name, dim in cube_dimensions(facts).items():
            dims[name] = _merge_dimension(dims.get(name), dim)
        variables.update(cube_variables(facts))
    times = [d["extent"] for d in dims.values() if d.get("type") == "temporal"]
    summaries: dict[str, Any] = {"cube:variables": sorted(variables)}
    if times:
        summaries["datetime"] = {"minimum": min(t[0] for t in times), "maximum": max(t[1] for t in times)}
    return {"cube:dimensions": dims, "cube:variables": variables, "summaries": summaries}


def _merge_dimension(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    merged = dict(old)
    if "extent" in new and "extent" in old:
        merged["extent"] = [min(old["extent"][0], new["extent"][0]), max(old["extent"][1], new["extent"][1])]
    if "values" in new and "values" in old:
        merged["values"] = sorted(set(old["values"]) | set(new["values"]), key=lambda v: (isinstance(v, str), v))
    return merged
