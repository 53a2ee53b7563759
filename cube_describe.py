"""``open_cube``: a staged cube judged, checked and described (``CubeFacts``): GDAL's netCDF
driver for NetCDF and HDF5, its GRIB driver for GRIB2, zarr-python for Zarr stores."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from warnings import catch_warnings, simplefilter

import numpy as np
import pyproj
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader

from cube_checks import MAX_NAME, SAFE_NAME, check_hdf5, check_name, check_zarr_store, sniff_cube
from cube_errors import (ERRORS_BY_CODE, CubeError, CurvilinearGrid, IrregularGrid, NoGriddedVariable,
                         UndecodableTime, UnreadableCube, UnsafeName)
from cube_grids import REGULAR_TOLERANCE, decode_times, grid_from_coordinates, is_time_units, normalize_grid
from cube_models import CubeDimension, CubeFacts, CubeSlice, CubeVariable
import geo_ops
from geo_ops import GDAL_ERRORS, Issue, Nodata, PathLike, nodata_json

#: The GDAL drivers cube files are opened with (never identified by GDAL).
CUBE_DRIVERS = {"netcdf": ["netCDF"], "hdf5": ["netCDF"], "grib": ["GRIB"]}
#: GDAL options for reading cubes: the stored values, not GDAL's unit conversions, and extra
#: dimension values listed even where GDAL would skip them. (``GDAL_NETCDF_BOTTOMUP`` stays
#: unset: setting it overrides the row order the driver detects from the y coordinate.)
CUBE_GDAL_CONFIG = {"GRIB_NORMALIZE_UNITS": "NO", "GDAL_NETCDF_REPORT_EXTRA_DIM_VALUES": "YES"}
_CF_TAGS = ("units", "long_name", "standard_name", "description", "comment", "cell_methods")


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


def open_dataset(path: PathLike, name: str, fmt: str) -> DatasetReader:
    """``name`` (the staged file, or a subdataset built here from a checked name) opened with the
    format's GDAL driver only; GDAL's refusal is ``UnreadableCube``."""
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
        opened = open_dataset(path, str(Path(path).resolve()), fmt)
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
        opened = open_dataset(path, subdataset, fmt)
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
                with open_dataset(path, _subdataset_name(path, fmt, coordinate), fmt) as ds:
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
        with open_dataset(path, _subdataset_name(path, fmt, bounds_name), fmt) as ds:
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
    arrays, attrs = zarr_arrays(root)
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


def zarr_arrays(root: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays the store's directory holds (never its consolidated listing), by checked name,
    and the root group's attributes."""
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
