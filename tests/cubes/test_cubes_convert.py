"""Multidimensional files become one lossless COG per variable and slice: values identical to
the stored ones, CF metadata on the band, time decoded, grids north-up and in −180..180."""
from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

import cube_factory as cf
import cubes
import geo_ops


def read(output: cubes.SliceOutput):
    with rasterio.open(output.path) as ds:
        return ds.read(1), ds


def by_coordinates(stored: np.ndarray, lon: np.ndarray, lat: np.ndarray, path: str) -> np.ndarray:
    """The source values at each output pixel centre, found by coordinates (an oracle that
    knows nothing of flips and rolls)."""
    with rasterio.open(path) as ds:
        t, w, h = ds.transform, ds.width, ds.height
    xs = t.c + t.a * (np.arange(w) + 0.5)
    ys = t.f + t.e * (np.arange(h) + 0.5)
    cols = [int(np.argmin(np.abs(((lon - x + 180) % 360) - 180))) for x in xs]
    rows = [int(np.argmin(np.abs(lat - y))) for y in ys]
    return stored[np.ix_(rows, cols)]


def assert_valid_cogs(outputs):
    for out in outputs:
        ok, errors, warnings = cog_validate(out.path, strict=True, quiet=True)
        assert ok and not errors and not warnings, (out.path, errors, warnings)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF4", "NETCDF4_CLASSIC"])
@pytest.mark.parametrize("ascending", [False, True], ids=["lat-descending", "lat-ascending"])
def test_netcdf_slices_hold_the_stored_values_north_up(tmp_path, convert, fmt, ascending):
    lon, lat = cf.lonlat_axes(16, 8, west=-40, north=70, step=5, ascending=ascending)
    path = cf.write_netcdf(tmp_path / "tas.nc", fmt=fmt, lon=lon, lat=lat, steps=3)
    facts, outputs = convert(path)
    assert facts.format == "netcdf"  # NetCDF-4 is HDF5 underneath, told apart by _NCProperties
    assert [o.index for o in outputs] == [{"time": i} for i in range(3)]
    stored = cf.stored_values(path, "tas")
    for out in outputs:
        data, _ = read(out)
        expected = by_coordinates(stored[out.index["time"]], lon, lat, out.path)
        assert data.dtype == np.int16 and np.array_equal(data, expected)
        with rasterio.open(out.path) as ds:
            assert ds.transform.e < 0 and ds.crs.to_epsg() == 4326
            assert ds.bounds == pytest.approx((-40, 30, 40, 70))
    assert_valid_cogs(outputs)


def test_cf_metadata_travels_with_the_band_and_decodes_to_the_source(tmp_path, convert):
    path = cf.write_netcdf(tmp_path / "packed.nc", steps=2)
    facts, outputs = convert(path)
    variable = facts.variables[0]
    assert (variable.scale, variable.offset, variable.nodata) == (0.01, 273.15, cf.FILL_INT16)
    assert (variable.unit, variable.long_name, variable.standard_name) == ("K", "tas long name", "air_temperature")
    decoded = cf.decoded_values(path, "tas")
    lon, lat = cf.lonlat_axes(16, 8)
    for out in outputs:
        with rasterio.open(out.path) as ds:
            assert ds.scales == (0.01,) and ds.offsets == (273.15,) and ds.nodata == cf.FILL_INT16
            assert ds.units == ("K",) and ds.tags(1)["standard_name"] == "air_temperature"
            raw = ds.read(1, masked=True)
        mine = raw.astype("float64") * 0.01 + 273.15  # CF decoding of what we wrote
        source = by_coordinates(decoded[out.index["time"]].filled(np.nan), lon, lat, out.path)
        assert np.array_equal(np.isnan(source), raw.mask)
        assert np.allclose(mine.filled(np.nan)[~raw.mask], source[~raw.mask], rtol=0, atol=1e-9)


@pytest.mark.parametrize("units,calendar,values,expected", [
    ("days since 2000-01-01", "standard", [0, 31.5], ["2000-01-01T00:00:00Z", "2000-02-01T12:00:00Z"]),
    ("hours since 1990-06-30 18:00:00", "proleptic_gregorian", [6], ["1990-07-01T00:00:00Z"]),
    ("days since 2001-01-01", "noleap", [58, 59], ["2001-02-28T00:00:00Z", "2001-03-01T00:00:00Z"]),
    ("days since 2000-01-01", "360_day", [59], ["2000-02-29T00:00:00Z"]),  # 30 February → last real day
    ("days since 2000-01-01", "360_day", [58], ["2000-02-29T00:00:00Z"]),
])
def test_time_coordinates_decode_in_their_calendar(tmp_path, convert, units, calendar, values, expected):
    path = cf.write_netcdf(tmp_path / "t.nc", time_units=units, calendar=calendar, time_values=values)
    facts = cubes.open_cube(path)
    time = facts.time_dimension
    assert (time.unit, time.calendar, time.datetimes) == (units, calendar, expected)


def test_time_bounds_become_start_and_end(tmp_path):
    path = cf.write_netcdf(tmp_path / "b.nc", steps=2, bounds=True)
    facts = cubes.open_cube(path)
    assert facts.time_dimension.bounds == [["1999-12-31T12:00:00Z", "2000-01-01T12:00:00Z"],
                                           ["2000-01-01T12:00:00Z", "2000-01-02T12:00:00Z"]]
    assert cubes.step_times(facts, 1) == {"datetime": "2000-01-02T00:00:00Z",
                                          "start_datetime": "2000-01-01T12:00:00Z",
                                          "end_datetime": "2000-01-02T12:00:00Z"}
    assert [v.name for v in facts.variables] == ["tas"]  # time_bnds is not a gridded variable


def test_undecodable_time_is_a_named_refusal(tmp_path):
    path = cf.write_netcdf(tmp_path / "bad.nc", time_units="fortnights since the flood", calendar="standard")
    with pytest.raises(cubes.UndecodableTime, match="fortnights"):
        cubes.open_cube(path)


def test_levels_are_a_dimension_and_each_level_a_slice(tmp_path, convert):
    path = cf.write_netcdf(tmp_path / "plev.nc", steps=2, levels=(85000.0, 50000.0), packed=False)
    facts, outputs = convert(path)
    assert facts.variables[0].dims == ["time", "plev"]
    assert facts.dimensions["plev"].values == [85000.0, 50000.0] and facts.dimensions["plev"].unit == "Pa"
    assert sorted((o.index["time"], o.index["plev"]) for o in outputs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    stored = cf.stored_values(path, "tas")
    lon, lat = cf.lonlat_axes(16, 8)
    for out in outputs:
        data, _ = read(out)
        assert np.array_equal(data, by_coordinates(stored[out.index["time"], out.index["plev"]], lon, lat, out.path))


def test_longitudes_0_to_360_are_wrapped_to_minus_180_to_180(tmp_path, convert):
    lon, lat = cf.lonlat_axes(36, 18, west=0.0, north=90.0)  # centres 5..355
    path = cf.write_netcdf(tmp_path / "global.nc", lon=lon, lat=lat, steps=1, packed=False)
    facts, outputs = convert(path)
    assert facts.variables[0].grid.wrapped and facts.variables[0].grid.roll_columns != 0
    with rasterio.open(outputs[0].path) as ds:
        assert ds.bounds == pytest.approx((-180, -90, 180, 90))
        data = ds.read(1)
    stored = cf.stored_values(path, "tas")[0]
    assert np.array_equal(data, by_coordinates(stored, lon, lat, outputs[0].path))
    assert data[0, 0] == stored[0, 18] and data[0, 18] == stored[0, 0]  # −175° is 185°; 5° stays


def test_a_regional_grid_east_of_180_is_shifted_not_rolled(tmp_path, convert):
    lon, lat = cf.lonlat_axes(10, 5, west=200.0, north=50.0, step=2.0)
    path = cf.write_netcdf(tmp_path / "pacific.nc", lon=lon, lat=lat, steps=1, packed=False)
    facts, outputs = convert(path)
    assert facts.variables[0].grid.roll_columns == 0  # GDAL or we shift it by 360°
    with rasterio.open(outputs[0].path) as ds:
        assert ds.bounds == pytest.approx((-160, 40, -140, 50))
        assert np.array_equal(ds.read(1), cf.stored_values(path, "tas")[0])


def test_projected_grid_with_grid_mapping(tmp_path, convert):
    x = -500_000 + 10_000 * (np.arange(12) + 0.5)
    y = 300_000 - 10_000 * (np.arange(6) + 0.5)
    path = cf.write_netcdf(tmp_path / "lcc.nc", lon=x, lat=y, projected=True, steps=2)
    facts, outputs = convert(path)
    with rasterio.open(outputs[0].path) as ds:
        assert "Lambert_Conformal_Conic" in ds.crs.to_wkt() or "Lambert Conic Conformal" in ds.crs.to_wkt()
        assert ds.transform == Affine(10_000, 0, -500_000, 0, -10_000, 300_000)
        assert np.array_equal(ds.read(1), cf.stored_values(path, "tas")[0])
    assert_valid_cogs(outputs)


def test_curvilinear_grid_is_refused_by_name(tmp_path):
    path = cf.write_netcdf(tmp_path / "curvi.nc", curvilinear=True, steps=1)
    with pytest.raises(cubes.CurvilinearGrid, match="curvilinear"):
        cubes.open_cube(path)


def test_irregular_coordinates_are_not_converted(tmp_path):
    lon = np.array([0.5, 1.5, 2.5, 4.5, 8.5, 9.5, 10.5, 11.5])
    lat = np.array([45.5, 44.5, 43.5, 42.5])
    path = cf.write_netcdf(tmp_path / "irregular.nc", lon=lon, lat=lat, steps=1)
    with pytest.raises(cubes.IrregularGrid, match="'lon' is not evenly spaced"):
        cubes.open_cube(path)


def test_the_slice_bound_refuses_a_file_by_name(tmp_path):
    path = cf.write_netcdf(tmp_path / "many.nc", steps=30, variables=("tas", "pr"))
    facts = cubes.open_cube(path)
    assert facts.slice_count == 60
    with pytest.raises(cubes.TooManySlices, match="60 slices"):
        cubes.plan_slices(facts, str(tmp_path / "o"), max_slices=59, max_pixels_per_task=10**8,
                          max_slices_per_task=8)
    with pytest.raises(cubes.SliceTooLarge):
        cubes.plan_slices(facts, str(tmp_path / "o"), max_slices=60, max_pixels_per_task=100,
                          max_slices_per_task=8)


def test_slice_groups_hold_whole_steps_within_the_bounds(tmp_path):
    path = cf.write_netcdf(tmp_path / "many.nc", steps=30, variables=("tas", "pr"))
    facts = cubes.open_cube(path)
    groups = cubes.plan_slices(facts, str(tmp_path / "many.nc"), max_slices=1000,
                               max_pixels_per_task=16 * 8 * 6, max_slices_per_task=8)
    assert [len(g.tasks) for g in groups] == [6] * 10  # 3 steps × 2 variables, by the pixel budget
    assert [s for g in groups for s in g.steps] == list(range(30))
    paths = [t.output_path for g in groups for t in g.tasks]
    assert len(set(paths)) == 60 and paths[0].endswith("/many.nc/tas/tas_time00000.tif")
    groups = cubes.plan_slices(facts, str(tmp_path / "o"), max_slices=1000, max_pixels_per_task=10**8,
                               max_slices_per_task=5)
    assert {len(g.tasks) for g in groups} == {4}  # two whole steps fit in five slices


def test_hdf5_with_dimension_scales(tmp_path, convert):
    path = cf.write_hdf5(tmp_path / "precip.h5")
    facts, outputs = convert(path)
    assert facts.format == "hdf5" and [v.name for v in facts.variables] == ["precip"]
    assert facts.time_dimension.datetimes == ["2010-06-01T00:00:00Z", "2010-06-01T01:00:00Z"]
    data, _ = read(outputs[1])
    assert np.array_equal(data, cf.field(2, 4, 8)[1])
    assert_valid_cogs(outputs)


GRIB_MESSAGES = [
    dict(category=0, number=0, level=2, hour=0), dict(category=0, number=0, level=2, hour=6),
    dict(category=2, number=2, level=10, hour=0), dict(category=2, number=2, level=10, hour=6),
    dict(category=0, number=0, surface=100, level=85000, hour=0),
    dict(category=0, number=0, surface=100, level=50000, hour=0),
]


def test_grib2_messages_become_variables_levels_and_times(tmp_path, convert):
    path = cf.write_grib(tmp_path / "fc.grib2", GRIB_MESSAGES)
    facts, outputs = convert(path)
    names = {v.name: v for v in facts.variables}
    assert set(names) == {"TMP_2-HTGL", "UGRD_10-HTGL", "TMP_ISBL"}
    assert names["TMP_ISBL"].dims == ["time", "ISBL"] and facts.dimensions["ISBL"].values == [50000.0, 85000.0]
    assert names["TMP_2-HTGL"].unit == "K"  # the stored unit: GDAL's conversion to °C is off
    assert facts.time_dimension.datetimes == ["2024-01-01T00:00:00Z", "2024-01-01T06:00:00Z"]
    assert len(outputs) == 6
    for out in outputs:
        band = next(s.band for s in names[out.variable].slices if s.index == out.index)
        data, _ = read(out)
        assert np.array_equal(data, (cf.field(1, 4, 8)[0] + band - 1).astype("float64"))
        with rasterio.open(out.path) as ds:
            assert ds.bounds == pytest.approx((0, 46, 8, 50))
    assert_valid_cogs(outputs)


def test_grib2_lambert_grid(tmp_path, convert):
    import rasterio.shutil
    from rasterio.transform import from_origin

    tif = tmp_path / "lcc.tif"
    crs = "+proj=lcc +lat_1=25 +lat_2=25 +lat_0=25 +lon_0=265 +x_0=0 +y_0=0 +R=6371229 +units=m +no_defs"
    with rasterio.open(tif, "w", driver="GTiff", width=10, height=6, count=1, dtype="float32", crs=crs,
                       transform=from_origin(-1_000_000, 1_000_000, 3000, 3000)) as dst:
        dst.write(cf.field(1, 6, 10)[0], 1)
    rasterio.shutil.copy(tif, tmp_path / "lcc.grib2", driver="GRIB", DATA_ENCODING="IEEE_FLOATING_POINT")
    facts, outputs = convert(tmp_path / "lcc.grib2")
    with rasterio.open(outputs[0].path) as ds:
        assert "Lambert" in ds.crs.to_wkt()
        assert np.array_equal(ds.read(1), cf.field(1, 6, 10)[0].astype("float64"))
    assert_valid_cogs(outputs)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stores_v2_and_v3(tmp_path, convert, zarr_format):
    path = cf.write_zarr(tmp_path / f"sst-v{zarr_format}.zarr", zarr_format=zarr_format, ascending=True)
    facts, outputs = convert(path)
    assert facts.format == "zarr" and [v.name for v in facts.variables] == ["sst"]
    assert facts.variables[0].nodata == "nan" and facts.variables[0].unit == "degC"
    assert facts.time_dimension.datetimes == ["2020-03-01T00:00:00Z", "2020-03-01T06:00:00Z", "2020-03-01T12:00:00Z"]
    stored = cf.field(3, 4, 8, fill=np.nan)
    for out in outputs:
        data, _ = read(out)
        expected = stored[out.index["time"]][::-1]  # written south to north, output north-up
        assert np.array_equal(data, expected, equal_nan=True)
        with rasterio.open(out.path) as ds:
            assert math.isnan(ds.nodata) and ds.bounds == pytest.approx((-20, 50, 0, 60))
    assert_valid_cogs(outputs)


def test_zarr_store_roots_are_found_among_listed_names():
    names = ["a/x.zarr/.zgroup", "a/x.zarr/t/.zarray", "a/x.zarr/t/0.0", "b/y.zarr/zarr.json",
             "b/y.zarr/v/zarr.json", "b/y.zarr/v/c/0/0", "c/plain.tif", "top.zarr/.zmetadata"]
    assert cubes.zarr_store_roots(names) == ["a/x.zarr", "b/y.zarr", "top.zarr"]


def test_staging_downloads_once_and_refuses_what_is_too_large(tmp_path):
    source = cf.write_netcdf(tmp_path / "s.nc", steps=1)
    calls = []

    def download(path):
        calls.append(path)
        path.write_bytes(source.read_bytes())

    key = cubes.source_key("rasters", "in/s.nc", "0x1")
    first = cubes.stage_file(tmp_path / "cache", key, size=source.stat().st_size, max_bytes=10**9, download=download)
    second = cubes.stage_file(tmp_path / "cache", key, size=source.stat().st_size, max_bytes=10**9, download=download)
    assert first == second and len(calls) == 1 and first.read_bytes() == source.read_bytes()
    assert "s.nc" not in str(first)  # the blob's name never reaches GDAL
    with pytest.raises(cubes.SourceTooLarge, match="RMH_MAX_CUBE_BYTES"):
        cubes.stage_file(tmp_path / "cache", "other", size=10**6, max_bytes=1000, download=download)
    with pytest.raises(cubes.SourceTooLarge):  # the listed size lied: checked again after download
        cubes.stage_file(tmp_path / "cache", "liar", size=10, max_bytes=1000, download=download)
    assert len(calls) == 2 and not (tmp_path / "cache" / "rmh-cube-liar" / "source").exists()


def test_a_store_is_staged_member_by_member_inside_its_directory(tmp_path):
    store = cf.write_zarr(tmp_path / "src.zarr", zarr_format=2)
    members = [(p.relative_to(store).as_posix(), p.stat().st_size) for p in sorted(store.rglob("*")) if p.is_file()]
    root = cubes.stage_store(tmp_path / "cache", "k", members, max_bytes=10**8,
                             download=lambda name, path: path.write_bytes((store / name).read_bytes()))
    assert cubes.open_cube(root).variables[0].name == "sst"
    with pytest.raises(cubes.UnsafeReference):
        cubes.stage_store(tmp_path / "cache", "k2", [("../evil", 1)], max_bytes=10**8, download=None)


def test_a_global_grib_grid_over_0_to_360_comes_out_in_minus_180_to_180(tmp_path, convert):
    path = cf.write_grib(tmp_path / "global.grib2", [dict(category=0, number=0, level=2)], width=360, height=10,
                         west=-0.5, north=5.5, step=1.0)  # centres 0°..359°, as ERA5 GRIB holds them
    facts, outputs = convert(path)
    with rasterio.open(outputs[0].path) as ds:
        assert ds.bounds == pytest.approx((-180.5, -4.5, 179.5, 5.5))
        data = ds.read(1)
    source = cf.field(1, 10, 360)[0]  # column j is longitude j
    for lon in (-180, -10, 0, 10, 179):
        assert data[3, lon + 180] == source[3, lon % 360], lon


def test_a_second_missing_value_is_reported_not_hidden(tmp_path):
    import netCDF4

    path = cf.write_netcdf(tmp_path / "mv.nc", steps=1)
    with netCDF4.Dataset(path, "a") as ds:
        ds.variables["tas"].missing_value = np.int16(-32000)
    facts = cubes.open_cube(path)
    assert facts.variables[0].nodata == cf.FILL_INT16
    assert [w.code for w in facts.warnings] == ["SecondMissingValue"]


@pytest.mark.parametrize("width, height", [(2, 3000), (3000, 2), (3, 7000)], ids=["2x3000", "3000x2", "3x7000"])
def test_a_narrow_grid_has_only_the_overviews_its_shorter_side_allows(tmp_path, convert, width, height):
    """A transect two or three cells wide: the COG driver's automatic overviews halved it three
    or four times, each level still one pixel across (decimations [2, 2, 2]: no reduction along
    it). Slices are written as to_cog writes any shape (geo_ops.shaped_cog_options): at most the
    halvings the shorter side allows, each a real reduction, and still strictly valid."""
    lon, lat = cf.lonlat_axes(width, height, west=10, north=80, step=0.01)
    path = cf.write_netcdf(tmp_path / "transect.nc", lon=lon, lat=lat, steps=1)
    _, outputs = convert(path)
    assert_valid_cogs(outputs)
    for out in outputs:
        with rasterio.open(out.path) as ds:
            assert (ds.width, ds.height) == (width, height)
            levels = ds.overviews(1)
            assert len(levels) == geo_ops.overview_cap(width, height) == 1, levels
            assert levels == sorted(set(levels)) and all(level > 1 for level in levels), levels
