"""STAC of cubes: the datacube extension on items and collections, a source asset for the file
itself, per-slice COG assets."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyproj
from affine import Affine
from rasterio.crs import CRS

from cube_errors import NoGriddedVariable
from cube_models import CubeDimension, CubeFacts, CubeGrid, SliceOutput
import geo_ops

#: Media types of the source asset, by format.
MEDIA_TYPES = {"netcdf": "application/netcdf", "hdf5": "application/x-hdf5",
               "grib": "application/wmo-GRIB2", "zarr": "application/vnd+zarr"}
FORMAT_TITLES = {"netcdf": "NetCDF", "hdf5": "NetCDF-4 / HDF5", "grib": "GRIB2", "zarr": "Zarr store"}
DATACUBE_EXT = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"


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
    """``<variable>[:<dim><i>...]``: ``:`` is in no variable name (``SAFE_NAME``) and is one of the
    characters the app's asset and preview routes take in a key (letters, digits, ``_ . : -``)."""
    parts = [variable.replace("/", "_")] + [f"{d}{index[d]}" for d in dims if d != time_dim and d in index]
    return ":".join(parts)


def slice_item(facts: CubeFacts, step: int | None, outputs: Sequence[SliceOutput], *, item_id: str,
               collection_id: str, source_href: str, href_for: Callable[[str], str],
               source_size: int | None = None, fallback_datetime: dt.datetime | None = None,
               properties: Mapping[str, Any] | None = None, gdal_config: Mapping[str, Any] | None = None,
               source_alternates: Mapping[str, str] | None = None,
               alternates_for: Callable[[str], Mapping[str, str]] | None = None,
               thumbnail: tuple[str, Mapping[str, str] | None] | None = None,
               validator: Any = None) -> dict[str, Any]:
    """The STAC item of one time step: a COG asset per variable (and level), keyed
    ``<variable>[:<dim><i>]``, with statistics, raster bands (scale, offset, nodata, unit) read
    from the COGs; the source asset; the datacube fields of that step; a render per variable.
    ``href_for(path)`` / ``alternates_for(path)``: a COG's public href and alternate hrefs;
    ``thumbnail``: (href, alternates) of a PNG preview of the step."""
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
        asset = stac_ops.get_data_asset(header, href=href_for(out.path), size=out.size_bytes,
                                        alternates=alternates_for(out.path) if alternates_for else None).to_dict()
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
    assets["source"] = source_asset(facts, source_href, size=source_size, alternates=source_alternates)
    if thumbnail is not None:
        assets["thumbnail"] = stac_ops.get_thumbnail_asset(thumbnail[0], alternates=thumbnail[1]).to_dict()
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
              properties: Mapping[str, Any] | None = None, source_alternates: Mapping[str, str] | None = None,
              validator: Any = None) -> dict[str, Any]:
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
    assets = {"source": source_asset(facts, source_href, size=source_size, alternates=source_alternates)}
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


def merge_item_fields(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The datacube fields a collection takes from its cube items' properties: variables
    joined; a non-spatial dimension's values joined and a temporal one's extent widened (its
    values, one per item, are left to the items). Spatial dimensions are the collection's own
    (``collection_cube_fields``). Empty when no item is a cube."""
    dims: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    for props in items:
        for name, dim in (props.get("cube:dimensions") or {}).items():
            if dim.get("type") == "spatial":
                continue
            if dim.get("type") == "temporal":
                dim = {k: v for k, v in dim.items() if k != "values"}
            dims[name] = _merge_dimension(dims.get(name), dim)
        variables.update(props.get("cube:variables") or {})
    return {"cube:dimensions": dims, "cube:variables": variables} if variables else {}


def collection_cube_fields(merged: Mapping[str, Any], bbox: Sequence[float] | None) -> dict[str, Any]:
    """``cube:dimensions`` and ``cube:variables`` of a collection: ``merged`` (from
    ``merge_item_fields``) with x and y as the collection's WGS 84 ``bbox`` (its items may lie
    in different CRSs, so their grids' extents are not merged)."""
    if not merged:
        return {}
    west, south, east, north = bbox if bbox is not None else (-180.0, -90.0, 180.0, 90.0)
    spatial = {"x": {"type": "spatial", "axis": "x", "extent": [west, east], "reference_system": 4326},
               "y": {"type": "spatial", "axis": "y", "extent": [south, north], "reference_system": 4326}}
    return {"cube:dimensions": {**spatial, **merged["cube:dimensions"]}, "cube:variables": dict(merged["cube:variables"])}
