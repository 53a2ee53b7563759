"""Issue 23 §1 on rasters made here: whatever GDAL reads and is georeferenced becomes a valid COG
and an item; what is refused is refused by name. Each class of the corpus trial's findings has
its test: source overviews that leak, GCP and RPC georeferencing, non-Earth bodies, complex data
types, values that are not plain JSON."""
from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

import geo_ops
import raster_factory


def assert_strict_cog(path) -> None:
    ok, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    assert ok, errors + warnings


# ---------------------------------------------------------------- overviews are always built fresh


def with_overviews(path, factors, *, external=False):
    """``path`` given overviews at ``factors`` as GDAL builds them when told to (decimation 1,
    unsorted levels: what other tools leave in files), internal or in a ``.ovr`` beside it."""
    with rasterio.Env(TIFF_USE_OVR=external), rasterio.open(path, "r+") as ds:
        ds.build_overviews(factors, Resampling.nearest)
    return path


@pytest.mark.parametrize("factors", [[1], [4, 2, 8], [3], [16]], ids=["decimation-1", "unsorted", "odd", "coarse-only"])
@pytest.mark.parametrize("size", [(1100, 900), (500, 450)], ids=["two-levels", "one-block"])
def test_source_overviews_never_reach_the_output(tmp_path, factors, size):
    width, height = size
    src = with_overviews(raster_factory.write_raster(tmp_path / "src.tif", width=width, height=height), factors)
    with rasterio.open(src) as ds:
        assert ds.overviews(1) == factors  # the odd levels are there to be copied
    result = geo_ops.to_cog(src, tmp_path / "cog.tif")
    assert_strict_cog(result.path)
    plain = geo_ops.to_cog(raster_factory.write_raster(tmp_path / "plain.tif", width=width, height=height),
                           tmp_path / "plain_cog.tif")
    with rasterio.open(result.path) as out, rasterio.open(plain.path) as fresh:
        levels = [2, 4] if width > 1024 else []  # halvings until one 512 block
        assert out.overviews(1) == fresh.overviews(1) == levels
        np.testing.assert_array_equal(out.read(), fresh.read())
        for level in range(len(levels)):  # each level computed from the pixels, as for a source without any
            shape = (1, height >> level + 1, width >> level + 1)
            np.testing.assert_array_equal(out.read(out_shape=shape), fresh.read(out_shape=shape))


def test_external_overviews_are_never_read(tmp_path):
    """A ``.ovr`` beside a source is not opened (GDAL lists no sibling files): not for the COG's
    overviews, not for an item's statistics, not for a thumbnail."""
    src = raster_factory.write_raster(tmp_path / "src.tif", width=1100, height=900)
    with_overviews(src, [1, 3], external=True)
    ovr = tmp_path / "src.tif.ovr"
    assert ovr.exists()
    with rasterio.open(src) as plain:
        assert plain.overviews(1) == [1, 3]  # rasterio alone would use it
    with geo_ops.gdal_env(), geo_ops.open_raster(src) as ds:
        assert ds.overviews(1) == [] and [os.path.basename(f) for f in ds.files] == ["src.tif"]
    ovr.write_bytes(b"II*\x00" + b"\xff" * 64)  # damaged: any read of it would fail
    result = geo_ops.to_cog(src, tmp_path / "cog.tif")
    assert_strict_cog(result.path)
    header = geo_ops.read_header(src, statistics=True)
    assert header.overview_count == 0 and header.bands[0].statistics.valid_percent == 100.0
    with rasterio.open(result.path) as out:
        assert out.overviews(1) == [2, 4]


# ------------------------------------------------------------------------ complex data (SAR SLC)


COMPLEX_TYPES = {"complex_int16": "cint16", "complex64": "cfloat32", "complex128": "cfloat64"}


@pytest.mark.parametrize("dtype", sorted(COMPLEX_TYPES))
@pytest.mark.parametrize("profile", ["deflate", "zstd", "lzw", "none"])
def test_complex_rasters_become_lossless_cogs(tmp_path, dtype, profile):
    """Complex data (SAR single-look complex) is validated, written with its own type (no
    predictor: TIFF's take real values only) and read back identical."""
    src = raster_factory.write_complex(tmp_path / "slc.tif", dtype=dtype)
    report = geo_ops.validate(src)
    assert report.valid, report.errors
    result = geo_ops.to_cog(src, tmp_path / "cog.tif", profile=profile)
    assert_strict_cog(result.path)
    with rasterio.open(result.path) as out, rasterio.open(src) as ds:
        assert out.dtypes == ds.dtypes == (dtype,)
        np.testing.assert_array_equal(out.read(), ds.read())
        assert out.overviews(1) == [2]


def test_complex_rasters_refuse_lerc_by_name(tmp_path):
    src = raster_factory.write_complex(tmp_path / "slc.tif", dtype="complex64")
    with pytest.raises(geo_ops.InvalidOption, match="LERC_ZSTD cannot store complex data"):
        geo_ops.to_cog(src, tmp_path / "cog.tif", profile="lerc")
    assert not (tmp_path / "cog.tif").exists()


@pytest.mark.parametrize("dtype", sorted(COMPLEX_TYPES))
def test_complex_rasters_are_cataloged_by_their_amplitude(tmp_path, dtype):
    import stac_ops
    import stac_validation

    src = raster_factory.write_complex(tmp_path / "slc.tif", dtype=dtype, nodata=0)
    item = stac_ops.item_from_raster(src, container="c", blob_name="slc.tif",
                                     source_last_modified=dt_now(), validator=stac_validation.StacValidator())
    band = item.assets["data"].extra_fields["raster:bands"][0]
    assert band["data_type"] == COMPLEX_TYPES[dtype] == item.properties["rmh:data_type"]
    with rasterio.open(src) as ds:
        amplitude = np.abs(ds.read(1))
    stats = band["statistics"]
    assert stats["minimum"] == pytest.approx(amplitude[amplitude > 0].min(), rel=1e-6)
    assert stats["maximum"] == pytest.approx(amplitude.max(), rel=1e-6)
    assert "renders" not in item.properties  # tilers draw real values only
    thumb = geo_ops.write_thumbnail(src, tmp_path / "thumb.png")
    with rasterio.open(thumb.path) as png:
        grey = png.read(1)
        assert grey.min() < 30 and grey.max() > 225  # stretched over the amplitude


def test_complex_rasters_reproject_and_tile(tmp_path):
    src = raster_factory.write_complex(tmp_path / "slc.tif", dtype="complex_int16", width=900, height=700)
    result = geo_ops.to_cog(src, tmp_path / "warped.tif", dst_crs="EPSG:4326")
    assert_strict_cog(result.path)
    with rasterio.open(result.path) as out:
        assert out.dtypes[0] == "complex_int16" and np.abs(out.read(1)).max() > 0
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=512)
    for tile in plan.tiles:
        assert_strict_cog(geo_ops.process_tile(src, tile).path)


def dt_now():
    import datetime as dt

    return dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def test_complex_assets_are_not_offered_for_preview(tmp_path):
    """The dashboard's preview tiles are drawn by rio-tiler, which reads real values only: a
    complex asset is not previewable (NotPreviewable, never rio-tiler's KeyError)."""
    import previews
    import stac_ops

    src = raster_factory.write_complex(tmp_path / "slc.tif", dtype="complex_int16")
    item = stac_ops.item_from_raster(src, container="c", blob_name="slc.tif", source_last_modified=dt_now())
    assert previews.previewable_keys(item.to_dict()) == []
    real = raster_factory.write_raster(tmp_path / "real.tif")
    assert previews.previewable_keys(stac_ops.item_from_raster(
        real, container="c", blob_name="real.tif", source_last_modified=dt_now()).to_dict()) == ["data"]


# ------------------------------------------------------------------- items hold plain JSON only

GRIDS = {  # name: (crs, transform, width, height)
    "utm": ("EPSG:32633", (10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), 300, 200),
    "lonlat": ("EPSG:4326", (0.001, 0.0, 10.0, 0.0, -0.001, 46.0), 300, 200),
    "geostationary-disk": ("+proj=geos +lon_0=-75 +h=35786023 +ellps=GRS80 +units=m +no_defs",
                           (36_666.67, 0.0, -5_500_000.0, 0.0, -36_666.67, 5_500_000.0), 300, 300),
    "geostationary-pacific": ("+proj=geos +lon_0=140.7 +h=35785863 +ellps=WGS84 +units=m +no_defs",
                              (100_011.1, 0.0, -4_500_500.0, 0.0, -100_000.0, 5_500_000.0), 90, 110),
    "north-pole": ("EPSG:3413", (6_666.67, 0.0, -1_000_000.0, 0.0, -6_666.67, 1_000_000.0), 300, 300),
    "antimeridian": ("EPSG:32660", (2_000.0, 0.0, 300_000.0, 0.0, -2_000.0, 1_000_000.0), 300, 300),
    "south-up": ("EPSG:32633", (10.0, 0.0, 500_000.0, 0.0, 10.0, 5_000_000.0), 300, 200),
    "rotated": ("EPSG:32633", (8.66, -5.0, 500_000.0, -5.0, -8.66, 5_000_000.0), 300, 200),
    "custom-tmerc": (raster_factory.CUSTOM_CRS, (10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), 300, 200),
}
DTYPES = {"uint8": 0, "int16": -9999, "uint32": None, "float32": float("nan"), "float64": -1e30,
          "complex64": None}


def write_on_grid(path, crs, transform, width, height, dtype, nodata):
    from affine import Affine

    values = raster_factory.pattern(0, height, width, height, 0, dtype="float32", seed=3)
    if nodata is not None:
        values[:20, :20] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=dtype,
                       crs=rasterio.crs.CRS.from_user_input(crs), transform=Affine(*transform),
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(values.astype(dtype)[np.newaxis])
    return path


def assert_plain_json(value, where="item"):
    """Only JSON's own types (a numpy float is a float subclass that orjson, pgSTAC's writer and
    the static catalog's, refuses: "Type is not JSON serializable: numpy.float64")."""
    if isinstance(value, dict):
        for key, inner in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            assert_plain_json(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            assert_plain_json(inner, f"{where}[{i}]")
    else:
        assert type(value) in (str, int, float, bool, type(None)), f"{where}: {type(value).__name__} {value!r}"


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_items_hold_plain_json_for_every_crs_and_dtype(tmp_path, grid):
    import orjson

    import stac_ops
    import stac_validation

    validator = stac_validation.StacValidator()
    for dtype, nodata in DTYPES.items():
        src = write_on_grid(tmp_path / f"{dtype}.tif", *GRIDS[grid], dtype, nodata)
        item = stac_ops.item_from_raster(src, container="c", blob_name=f"{grid}/{dtype}.tif",
                                         source_last_modified=dt_now(), validator=validator)
        stac = item.to_dict()
        assert_plain_json(stac, f"{grid}/{dtype}")
        assert orjson.loads(orjson.dumps(stac)) == stac


def test_numpy_values_given_to_an_item_become_plain_json(tmp_path):
    """Values a caller passes in (extra properties from a library that computed them with
    numpy) are made plain before the item is built, so no writer meets a numpy scalar."""
    import orjson

    import stac_ops

    src = raster_factory.write_raster(tmp_path / "a.tif")
    item = stac_ops.item_from_raster(src, container="c", blob_name="a.tif", source_last_modified=dt_now(),
                                     properties={"x:value": np.float64(1.5), "x:list": [np.int32(2), (np.float32(0.25),)]})
    stac = item.to_dict()
    assert_plain_json(stac)
    assert stac["properties"]["x:value"] == 1.5 and stac["properties"]["x:list"] == [2, [0.25]]
    orjson.dumps(stac)


# ----------------------------------------------------------------------------- other bodies


def write_body_raster(path, crs, bounds=(-300_000.0, -300_000.0, 300_000.0, 300_000.0), size=200):
    from rasterio.transform import from_bounds

    values = raster_factory.pattern(0, size, size, size, 0, dtype="float32", seed=5)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
                       crs=rasterio.crs.CRS.from_user_input(crs), transform=from_bounds(*bounds, size, size),
                       nodata=-9999.0, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(values[np.newaxis])
    return path


@pytest.mark.parametrize(("crs", "body", "target_class"), [
    ("IAU_2015:49910", "Mars", "planet"), ("IAU_2015:30110", "Moon", "satellite"),
    ("IAU_2015:50210", "Europa", "satellite"),
], ids=["mars", "moon", "europa"])
def test_rasters_of_other_bodies_are_cataloged_with_the_solar_system_extension(tmp_path, crs, body, target_class):
    """Issue 23: Mars and Europa rasters raised PROJ's ProjError (no transformation to WGS 84).
    They are cataloged in their body's planetocentric lon/lat with ssys:targets, proj:* as any
    raster, gsd in the body's metres, and validated against the shipped ssys schema."""
    import orjson

    import stac_ops
    import stac_validation

    src = write_body_raster(tmp_path / "body.tif", crs)
    assert geo_ops.validate(src).valid
    item = stac_ops.item_from_raster(src, container="c", blob_name="body.tif", source_last_modified=dt_now(),
                                     validator=stac_validation.StacValidator())
    props = item.properties
    assert props["ssys:targets"] == [body] and props["ssys:target_class"] == target_class
    assert stac_ops.SSYS_EXT in item.stac_extensions
    assert props["proj:code"] == crs and props["proj:shape"] == [200, 200]
    assert props["gsd"] == pytest.approx(3000.0, rel=0.01)  # 3 km pixels on the body
    west, south, east, north = item.bbox
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    orjson.dumps(item.to_dict())
    earth = stac_ops.item_from_raster(raster_factory.write_raster(tmp_path / "earth.tif"), container="c",
                                      blob_name="earth.tif", source_last_modified=dt_now())
    assert not any(k.startswith("ssys:") for k in earth.properties) and stac_ops.SSYS_EXT not in earth.stac_extensions


def test_rasters_of_other_bodies_convert_and_reproject_within_their_body(tmp_path):
    src = write_body_raster(tmp_path / "mars.tif", "IAU_2015:49910")
    copied = geo_ops.to_cog(src, tmp_path / "cog.tif")
    assert_strict_cog(copied.path)
    with rasterio.open(copied.path) as out, rasterio.open(src) as ds:
        np.testing.assert_array_equal(out.read(), ds.read())
        assert out.crs == ds.crs
    warped = geo_ops.to_cog(src, tmp_path / "lonlat.tif", dst_crs="IAU_2015:49900")  # Mars lon/lat
    assert_strict_cog(warped.path)
    header = geo_ops.read_header(warped.path)
    assert header.body == "Mars" and header.crs_code == "IAU_2015:49900"
    with pytest.raises(geo_ops.CannotReproject, match="EPSG:3857"):
        geo_ops.to_cog(src, tmp_path / "earth.tif", dst_crs="EPSG:3857")  # no way from Mars to the Earth
    assert not (tmp_path / "earth.tif").exists()


def test_items_of_other_bodies_are_not_drawn_on_the_earth(tmp_path):
    import footprints
    import previews
    import stac_ops

    item = stac_ops.item_from_raster(write_body_raster(tmp_path / "mars.tif", "IAU_2015:49910"), container="c",
                                     blob_name="mars.tif", source_last_modified=dt_now()).to_dict()
    assert previews.body_of(item) == "Mars" and previews.previewable_keys(item) == []
    links = type("Links", (), {"open": lambda self, *a: None})()
    assert footprints.feature(item, links)["body"] == "Mars"


# ------------------------------------------------------------------ GCP and RPC georeferencing

import shutil  # noqa: E402
import subprocess  # noqa: E402

GDALWARP = shutil.which("gdalwarp")
needs_gdalwarp = pytest.mark.skipif(GDALWARP is None, reason="Debian gdal-bin (gdalwarp) not installed")


def gdalwarp(src, dst, *args):
    subprocess.run([GDALWARP, "-q", "-overwrite", "-r", "near", "-dstalpha", *args, str(src), str(dst)], check=True)
    return dst


def assert_same_warp(ours, theirs):
    with rasterio.open(ours) as a, rasterio.open(theirs) as b:
        assert (a.width, a.height, a.crs) == (b.width, b.height, b.crs)
        assert a.transform.almost_equals(b.transform, precision=1e-9), (a.transform, b.transform)
        np.testing.assert_array_equal(a.read(), b.read())


@needs_gdalwarp
@pytest.mark.parametrize(("grid", "method"), [(2, "polynomial-1"), (3, "polynomial-2"), (5, "polynomial-2")],
                         ids=["4-gcps", "9-gcps", "25-gcps"])
def test_gcp_rasters_are_warped_as_gdalwarp_warps_them(tmp_path, grid, method):
    """Issue 23: rasters placed by GCPs were refused ("no coordinate reference system (only
    GCPs)"). They are warped into the GCPs' CRS with the polynomial gdalwarp chooses by their
    count (order 1 below 6 GCPs, 2 from 6 on: GDAL avoids 3 as unstable), the same grid and
    pixels as gdalwarp, and the output says how it was placed."""
    src = raster_factory.write_gcp_raster(tmp_path / "gcp.tif", grid=grid)
    report = geo_ops.validate(src)
    assert report.valid and [w.code for w in report.warnings] == ["GcpGeoreferenced"]
    result = geo_ops.to_cog(src, tmp_path / "cog.tif", resampling="nearest")
    assert_strict_cog(result.path)
    assert result.reprojected and result.epsg == 4326
    assert_same_warp(result.path, gdalwarp(src, tmp_path / "gdalwarp.tif"))
    with rasterio.open(result.path) as out:
        assert out.tags()["RMH_GCP_TRANSFORM"] == method and out.tags()["RMH_GCP_COUNT"] == str(grid * grid)
    assert method == f"polynomial-{geo_ops.polynomial_order(grid * grid)}"


@needs_gdalwarp
@pytest.mark.parametrize(("method", "args"), [("tps", ["-tps"]), ("polynomial-1", ["-order", "1"]),
                                              ("polynomial-3", ["-order", "3"])])
def test_gcp_transform_can_be_chosen(tmp_path, method, args):
    """An order (gdalwarp -order n) or a thin-plate spline (gdalwarp -tps) on request. The spline
    is compared by its grid and most of its pixels: Debian's gdalwarp (GDAL 3.6) solves it a
    little differently from the wheel's GDAL 3.10 (89.7% of the pixels equal at nearest here)."""
    src = raster_factory.write_gcp_raster(tmp_path / "gcp.tif", grid=5, curve=0.2)
    result = geo_ops.to_cog(src, tmp_path / "cog.tif", resampling="nearest", gcp_transform=method)
    assert_strict_cog(result.path)
    theirs = gdalwarp(src, tmp_path / "gdalwarp.tif", *args)
    if method != "tps":
        assert_same_warp(result.path, theirs)
    else:
        default = geo_ops.to_cog(src, tmp_path / "default.tif", resampling="nearest")
        with rasterio.open(result.path) as a, rasterio.open(theirs) as b, rasterio.open(default.path) as c:
            assert (a.width, a.height) == (b.width, b.height) and a.transform.almost_equals(b.transform)
            assert (a.read() == b.read()).mean() > 0.85
            assert a.shape != c.shape or (a.read() != c.read()).any()  # not the polynomial
    with rasterio.open(result.path) as out:
        assert out.tags()["RMH_GCP_TRANSFORM"] == method


def test_gcp_rasters_that_cannot_be_placed_are_refused_by_name(tmp_path):
    two = raster_factory.write_gcp_raster(tmp_path / "two.tif", grid=1)
    with rasterio.open(two, "r+") as ds:  # two points: no transformation can be fitted
        from rasterio.control import GroundControlPoint
        ds.gcps = ([GroundControlPoint(0, 0, 10, 45), GroundControlPoint(100, 100, 11, 44)], rasterio.crs.CRS.from_epsg(4326))
    report = geo_ops.validate(two)
    assert [e.code for e in report.errors] == ["DegenerateTransform"] and "at least 3" in report.errors[0].message
    no_crs = raster_factory.write_gcp_raster(tmp_path / "nocrs.tif", crs=None)
    assert [e.code for e in geo_ops.validate(no_crs).errors][:1] == ["MissingCRS"]
    nine = raster_factory.write_gcp_raster(tmp_path / "nine.tif", grid=3)
    with pytest.raises(geo_ops.InvalidOption, match="order 3 needs at least 10 GCPs"):
        geo_ops.to_cog(nine, tmp_path / "cog.tif", gcp_transform="polynomial-3")
    with pytest.raises(geo_ops.InvalidOption, match="unknown GCP transform"):
        geo_ops.to_cog(nine, tmp_path / "cog.tif", gcp_transform="cubic")
    assert not (tmp_path / "cog.tif").exists()


def test_gcp_rasters_are_cataloged_as_they_lie_and_as_written(tmp_path):
    """Cataloged in place (a sync), a GCP raster's item has its footprint from the GCPs'
    transformation and says so; the item of its COG describes the warped grid that was written."""
    import stac_ops
    import stac_validation

    validator = stac_validation.StacValidator()
    src = raster_factory.write_gcp_raster(tmp_path / "gcp.tif", grid=5, nodata=0)
    in_place = stac_ops.item_from_raster(src, container="c", blob_name="gcp.tif", source_last_modified=dt_now(),
                                         validator=validator)
    props = in_place.properties
    assert (props["rmh:georeferencing"], props["rmh:gcp_count"], props["rmh:gcp_transform"]) == ("gcps", 25, "polynomial-2")
    assert props["proj:code"] == "EPSG:4326" and "proj:transform" not in props and props["proj:shape"] == [300, 400]
    result = geo_ops.to_cog(src, tmp_path / "cog.tif")
    written = stac_ops.item_from_raster(result.path, container="c", blob_name="gcp.tif",
                                        source_last_modified=dt_now(), validator=validator)
    with rasterio.open(result.path) as out:
        assert written.properties["proj:transform"] == list(out.transform)[:6]
        assert written.properties["proj:shape"] == [out.height, out.width]
    assert written.properties["rmh:gcp_transform"] == "polynomial-2"
    for a, b in zip(in_place.bbox, written.bbox):  # the same place, to a fraction of a pixel (0.002 deg)
        assert abs(a - b) < 0.003


@needs_gdalwarp
def test_rpc_rasters_are_warped_at_the_height_offset_or_a_configured_dem(tmp_path):
    """RPCs: warped with the RPC model at the RPCs' HEIGHT_OFF (no DEM unless one is configured),
    as gdalwarp -rpc does; with a DEM, at its heights; the output and its item say which."""
    import stac_ops

    src = raster_factory.write_rpc_raster(tmp_path / "rpc.tif", height_off=500.0)
    assert [w.code for w in geo_ops.validate(src).warnings] == ["RpcGeoreferenced"]
    plain = geo_ops.to_cog(src, tmp_path / "cog.tif", resampling="nearest")
    assert_strict_cog(plain.path)
    assert_same_warp(plain.path, gdalwarp(src, tmp_path / "gw.tif", "-rpc", "-to", "RPC_HEIGHT=500"))
    item = stac_ops.item_from_raster(plain.path, container="c", blob_name="rpc.tif", source_last_modified=dt_now())
    assert (item.properties["rmh:georeferencing"], item.properties["rmh:rpc_height"]) == ("rpcs", 500.0)
    dem = raster_factory.write_flat_dem(tmp_path / "dem.tif", 1500.0)
    on_dem = geo_ops.to_cog(src, tmp_path / "dem_cog.tif", resampling="nearest", rpc_dem=str(dem))
    assert_same_warp(on_dem.path, gdalwarp(src, tmp_path / "gw1500.tif", "-rpc", "-to", "RPC_HEIGHT=1500"))
    with rasterio.open(plain.path) as a, rasterio.open(on_dem.path) as b:
        assert a.transform != b.transform  # the height moves the scene
        assert b.tags()["RMH_RPC_DEM"] == "dem.tif" and "RMH_RPC_HEIGHT" not in b.tags()
    in_place = stac_ops.item_from_raster(src, container="c", blob_name="rpc.tif", source_last_modified=dt_now())
    assert in_place.properties["rmh:rpc_height"] == 500.0 and in_place.properties["proj:code"] == "EPSG:4326"


def test_gcp_rasters_take_the_tiled_path(tmp_path):
    src = raster_factory.write_gcp_raster(tmp_path / "gcp.tif", width=900, height=700, grid=5)
    whole = geo_ops.to_cog(src, tmp_path / "whole.tif", resampling="nearest")
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=512, resampling="nearest")
    assert plan.warped and len(plan.tiles) > 1
    for tile in plan.tiles:
        out = geo_ops.process_tile(src, tile)
        assert_strict_cog(out.path)
        with rasterio.open(out.path) as t:
            assert t.tags()["RMH_GCP_TRANSFORM"] == "polynomial-2"
    mosaic = geo_ops.build_mosaic([t.output_path for t in plan.tiles], tmp_path / "tiles" / "mosaic.vrt")
    with rasterio.open(mosaic.path) as m, rasterio.open(whole.path) as w:
        assert (m.width, m.height) == (w.width, w.height) and m.transform.almost_equals(w.transform)
        assert (m.read() == w.read()).mean() > 0.98  # GDAL's approximate transformer differs at chunk edges
