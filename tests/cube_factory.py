"""Synthetic multidimensional files for tests and benchmarks: NetCDF (classic, NetCDF-4), HDF5,
GRIB2 and Zarr (v2, v3), written here with netCDF4, h5py, GDAL's GRIB writer and zarr-python.

Values are deterministic (a smooth field plus the step and level), packed variables store int16
with ``scale_factor``/``add_offset``, and a few pixels hold the fill value, so tests can compare
outputs with the stored values exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

FILL_INT16 = -32767
FILL_FLOAT = -9999.0


def field(steps: int, height: int, width: int, *, dtype: str = "float32", levels: int = 0,
          fill: float | None = None) -> np.ndarray:
    """(steps[, levels], height, width) values: a gradient plus step*100 (+ level*10), with the
    first pixel of every slice set to ``fill``."""
    rows, cols = np.mgrid[0:height, 0:width]
    base = (rows * 7 + cols * 3) % 997
    shape = (steps, levels) if levels else (steps,)
    out = np.empty(shape + (height, width), dtype=dtype)
    for pos in np.ndindex(*shape):
        value = base + pos[0] * 100 + (pos[1] * 10 if levels else 0)
        out[pos] = value.astype(dtype)
        if fill is not None:
            out[pos][0, 0] = fill
    return out


def lonlat_axes(width: int, height: int, *, west: float = -180.0, north: float = 90.0,
                step: float | None = None, ascending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre longitudes and latitudes of a regular grid (latitudes north to south, or
    south to north when ``ascending``)."""
    step = step or 360.0 / width
    lon = west + step * (np.arange(width) + 0.5)
    lat = north - step * (np.arange(height) + 0.5)
    return lon, (lat[::-1] if ascending else lat)


def write_netcdf(path: Path, *, fmt: str = "NETCDF4", steps: int = 3, width: int = 16, height: int = 8,
                 lon: np.ndarray | None = None, lat: np.ndarray | None = None, packed: bool = True,
                 levels: Sequence[float] = (), time_units: str = "days since 2000-01-01",
                 calendar: str = "standard", time_values: Sequence[float] | None = None,
                 bounds: bool = False, variables: Sequence[str] = ("tas",),
                 projected: bool = False, curvilinear: bool = False, chunked: bool = True) -> Path:
    """A CF NetCDF cube: ``time`` (+ ``plev``) × ``lat`` × ``lon`` (or ``y`` × ``x`` with a
    Lambert conformal ``grid_mapping`` when ``projected``; 2-D lat/lon when ``curvilinear``)."""
    import netCDF4

    if lon is None or lat is None:
        lon, lat = lonlat_axes(width, height)
    width, height = len(lon), len(lat)
    ds = netCDF4.Dataset(path, "w", format=fmt)
    try:
        ds.Conventions = "CF-1.8"
        ds.title = "synthetic cube"
        ds.createDimension("time", None)
        if levels:
            ds.createDimension("plev", len(levels))
        ydim, xdim = ("y", "x") if projected or curvilinear else ("lat", "lon")
        ds.createDimension(ydim, height)
        ds.createDimension(xdim, width)
        t = ds.createVariable("time", "f8", ("time",))
        t.units, t.calendar, t.standard_name, t.axis = time_units, calendar, "time", "T"
        t[:] = np.asarray(time_values if time_values is not None else np.arange(steps), dtype="f8")
        steps = len(t[:])
        if bounds:
            ds.createDimension("nv", 2)
            t.bounds = "time_bnds"
            tb = ds.createVariable("time_bnds", "f8", ("time", "nv"))
            tb[:] = np.stack([t[:] - 0.5, t[:] + 0.5], axis=1)
        if levels:
            p = ds.createVariable("plev", "f8", ("plev",))
            p.units, p.standard_name, p.axis, p.positive = "Pa", "air_pressure", "Z", "down"
            p[:] = np.asarray(levels, dtype="f8")
        _coordinates(ds, lon, lat, projected, curvilinear)
        dims = ("time",) + (("plev",) if levels else ()) + (ydim, xdim)
        for name in variables:
            _variable(ds, name, dims, steps, len(levels), height, width, packed, chunked,
                      projected, curvilinear)
    finally:
        ds.close()
    return path


def _coordinates(ds, lon, lat, projected: bool, curvilinear: bool) -> None:
    if projected:
        x = ds.createVariable("x", "f8", ("x",))
        y = ds.createVariable("y", "f8", ("y",))
        x.units = y.units = "m"
        x.standard_name, y.standard_name = "projection_x_coordinate", "projection_y_coordinate"
        x[:], y[:] = lon, lat
        gm = ds.createVariable("lambert", "i4")
        gm.grid_mapping_name = "lambert_conformal_conic"
        gm.standard_parallel = [33.0, 45.0]
        gm.longitude_of_central_meridian = -97.0
        gm.latitude_of_projection_origin = 40.0
        gm.false_easting = gm.false_northing = 0.0
        gm.semi_major_axis, gm.inverse_flattening = 6378137.0, 298.257223563
        return
    if curvilinear:
        glon, glat = np.meshgrid(lon, lat)
        glon = glon + 0.3 * np.arange(len(lat))[:, None]  # sheared: truly 2-D
        la = ds.createVariable("lat", "f4", ("y", "x"))
        lo = ds.createVariable("lon", "f4", ("y", "x"))
        la.units, la.standard_name = "degrees_north", "latitude"
        lo.units, lo.standard_name = "degrees_east", "longitude"
        la[:], lo[:] = glat, glon
        return
    la = ds.createVariable("lat", "f8", ("lat",))
    lo = ds.createVariable("lon", "f8", ("lon",))
    la.units, la.standard_name, la.axis = "degrees_north", "latitude", "Y"
    lo.units, lo.standard_name, lo.axis = "degrees_east", "longitude", "X"
    la[:], lo[:] = lat, lon


def _variable(ds, name, dims, steps, levels, height, width, packed, chunked, projected, curvilinear) -> None:
    chunks = dict(chunksizes=(1,) * (len(dims) - 2) + (height, width)) if chunked and ds.data_model == "NETCDF4" else {}
    compression = dict(zlib=True, complevel=1) if ds.data_model == "NETCDF4" else {}
    if packed:
        v = ds.createVariable(name, "i2", dims, fill_value=FILL_INT16, **chunks, **compression)
        v.scale_factor, v.add_offset = 0.01, 273.15
        data = field(steps, height, width, dtype="int16", levels=levels, fill=FILL_INT16)
    else:
        v = ds.createVariable(name, "f4", dims, fill_value=np.float32(FILL_FLOAT), **chunks, **compression)
        data = field(steps, height, width, dtype="float32", levels=levels, fill=FILL_FLOAT)
    v.units, v.long_name, v.standard_name = "K", f"{name} long name", "air_temperature"
    if projected:
        v.grid_mapping = "lambert"
    if curvilinear:
        v.coordinates = "lat lon"
    v.set_auto_maskandscale(False)
    v[:] = data


def stored_values(path: Path, variable: str) -> np.ndarray:
    """The variable's stored (raw, not CF-decoded) values, as netCDF-c reads them."""
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        v = ds.variables[variable]
        v.set_auto_maskandscale(False)
        return np.asarray(v[:])


def decoded_values(path: Path, variable: str) -> np.ma.MaskedArray:
    """The variable CF-decoded (scale, offset, fill masked), as netCDF4-python decodes it."""
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        return ds.variables[variable][:]


def write_hdf5(path: Path, *, steps: int = 2, width: int = 8, height: int = 4) -> Path:
    """A plain HDF5 file (h5py, not netCDF) with CF attributes and dimension scales, which
    netCDF-c reads as a NetCDF-4 file."""
    import h5py

    lon, lat = lonlat_axes(width, height, west=0.0, north=40.0, step=5.0)
    with h5py.File(path, "w") as f:
        t = f.create_dataset("time", data=np.arange(steps, dtype="f8"))
        t.attrs["units"] = "hours since 2010-06-01 00:00:00"
        y = f.create_dataset("lat", data=lat)
        x = f.create_dataset("lon", data=lon)
        y.attrs["units"], x.attrs["units"] = "degrees_north", "degrees_east"
        for scale, name in ((t, "time"), (y, "lat"), (x, "lon")):
            scale.make_scale(name)
        v = f.create_dataset("precip", data=field(steps, height, width, dtype="float32"))
        v.attrs["units"], v.attrs["long_name"] = "mm", "precipitation"
        for i, scale in enumerate((t, y, x)):
            v.dims[i].attach_scale(scale)
    return path


def write_grib(path: Path, messages: Sequence[dict], *, width: int = 8, height: int = 4,
               west: float = 0.0, north: float = 50.0, step: float = 1.0) -> Path:
    """A GRIB2 file of one message per entry (``element`` category/number, ``level`` type and
    value, ``hour`` of forecast), concatenated as GRIB files are. IEEE floats: exact values."""
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin

    parts = []
    for i, m in enumerate(messages):
        tif, grb = path.with_suffix(f".{i}.tif"), path.with_suffix(f".{i}.grb2")
        with rasterio.open(tif, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                           crs="EPSG:4326", transform=from_origin(west, north, step, step)) as dst:
            dst.write(field(1, height, width)[0] + i, 1)
        template = (f"{m['category']} {m['number']} 2 0 0 0 0 1 {m.get('hour', 0)} "
                    f"{m.get('surface', 103)} 0 {m.get('level', 2)} 255 0 0")
        with rasterio.Env():
            rasterio.shutil.copy(tif, grb, driver="GRIB", DISCIPLINE=0, PDS_PDTN=0,
                                 IDS="CENTER=98 SUBCENTER=0 MASTER_TABLE=2 SIGNF_REF_TIME=1 "
                                     "REF_TIME=2024-01-01T00:00:00Z PROD_STATUS=0 TYPE=1",
                                 PDS_TEMPLATE_ASSEMBLED_VALUES=template, DATA_ENCODING="IEEE_FLOATING_POINT",
                                 INPUT_UNIT="K")  # values stored as given, no °C to K
        parts.append(grb.read_bytes())
        tif.unlink()
        grb.unlink()
    path.write_bytes(b"".join(parts))
    return path


def write_zarr(path: Path, *, zarr_format: int = 3, steps: int = 3, width: int = 8, height: int = 4,
               ascending: bool = True, compressor: str = "default", consolidated: bool = True) -> Path:
    """A CF-style Zarr store as xarray writes one: coordinate arrays named as their dimension,
    dimension names (v3 ``dimension_names``, v2 ``_ARRAY_DIMENSIONS``), time in CF units."""
    import zarr

    lon, lat = lonlat_axes(width, height, west=-20.0, north=60.0, step=2.5, ascending=ascending)
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    kwargs = {} if compressor == "default" else {"compressors": None}

    def array(name, data, dims, **extra):
        named = {"dimension_names": dims} if zarr_format == 3 else {}
        a = root.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(1,) * (data.ndim - 2) + data.shape[-2:]
                              if data.ndim > 2 else data.shape, **named, **kwargs, **extra)
        a[...] = data
        if zarr_format == 2:
            a.attrs["_ARRAY_DIMENSIONS"] = dims
        return a

    array("lat", lat, ["lat"]).attrs.update(units="degrees_north", standard_name="latitude")
    array("lon", lon, ["lon"]).attrs.update(units="degrees_east", standard_name="longitude")
    array("time", np.arange(steps, dtype="i8") * 6, ["time"]).attrs.update(
        units="hours since 2020-03-01 00:00:00", calendar="proleptic_gregorian")
    v = array("sst", field(steps, height, width, dtype="float32", fill=np.nan), ["time", "lat", "lon"],
              fill_value=np.nan)
    v.attrs.update(units="degC", long_name="sea surface temperature", _FillValue="NaN" if zarr_format == 3 else None)
    if zarr_format == 2:
        del v.attrs["_FillValue"]
    if consolidated:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(path))
    return path
