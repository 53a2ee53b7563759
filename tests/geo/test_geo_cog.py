"""to_cog(): pixel-identical copies, gdalwarp-identical grids, strict COGs, clean failures."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.warp import calculate_default_transform
from rio_cogeo.cogeo import cog_validate

import cog_write
import geo_ops
import raster_factory

GDALWARP = shutil.which("gdalwarp")


def assert_strict_cog(path) -> None:
    ok, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    assert ok, errors + warnings


def assert_same_pixels(a_path, b_path) -> None:
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        assert (a.width, a.height, a.count, a.dtypes) == (b.width, b.height, b.count, b.dtypes)
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
        assert a.colorinterp == b.colorinterp
        assert str(a.nodata) == str(b.nodata)


def test_variants_copy_is_pixel_identical(make_raster, variant, tmp_path):
    src = make_raster(width=700, height=600, **variant)
    result = geo_ops.to_cog(src, tmp_path / "out" / "cog.tif")
    assert_strict_cog(result.path)
    assert_same_pixels(src, result.path)
    assert result.cog_valid and not result.reprojected and not result.is_empty
    assert result.overview_count == 1 and result.compression == "deflate"
    assert result.size_bytes == Path(result.path).stat().st_size
    json.dumps(result.model_dump(mode="json"))


@pytest.mark.parametrize("profile", ["deflate", "zstd", "lzw", "lerc", "lerc_deflate", "none"])
def test_profiles(make_raster, tmp_path, profile):
    src = make_raster(width=600, height=520, count=3, nodata=0)
    result = geo_ops.to_cog(src, tmp_path / f"{profile}.tif", profile=profile,
                            overview_resampling="average", blocksize=256)
    assert_strict_cog(result.path)
    assert_same_pixels(src, result.path)
    with rasterio.open(result.path) as out:
        assert out.block_shapes[0] == (256, 256)
        assert out.overviews(1) == [2, 4]


def test_jpeg_profile_on_rgb_alpha(make_raster, tmp_path):
    src = make_raster(width=600, height=600, count=3, alpha=True)
    result = geo_ops.to_cog(src, tmp_path / "jpeg.tif", profile="jpeg")
    assert_strict_cog(result.path)
    with rasterio.open(result.path) as out, rasterio.open(src) as ref:
        np.testing.assert_array_equal(out.dataset_mask() > 0, ref.dataset_mask() > 0)


def test_unknown_profile_and_resampling(make_raster, tmp_path):
    src = make_raster()
    with pytest.raises(geo_ops.InvalidOption, match="unknown COG profile"):
        geo_ops.to_cog(src, tmp_path / "x.tif", profile="gif")
    with pytest.raises(geo_ops.InvalidOption, match="unknown resampling"):
        geo_ops.to_cog(src, tmp_path / "x.tif", dst_crs="EPSG:3857", resampling="magic")
    assert not (tmp_path / "x.tif").exists()


def test_nodata_override(make_raster, tmp_path):
    src = make_raster(dtype="int16", nodata=None)
    result = geo_ops.to_cog(src, tmp_path / "nd.tif", nodata=-32768)
    assert result.nodata == -32768
    with rasterio.open(src) as a, rasterio.open(result.path) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert_strict_cog(result.path)


# -- reprojection ----------------------------------------------------------------------------


def gdalwarp_grid(src, tmp_path, *extra) -> tuple:
    out = tmp_path / "gdalwarp.tif"
    subprocess.run([GDALWARP, "-q", "-overwrite", "-t_srs", "EPSG:3857", *extra, str(src),
                    str(out)], check=True)
    with rasterio.open(out) as ds:
        return ds.width, ds.height, ds.bounds


def assert_grid(result, width, height, bounds) -> None:
    assert (result.width, result.height) == (width, height)
    np.testing.assert_allclose(result.bounds, list(bounds), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["RGB.byte.tif", "RGBA.uint16.tif", "all-nodata.tif", "goes.tif"])
def test_reprojection_grid_matches_gdal(shared_rasters, tmp_path, name):
    src = shared_rasters / name
    result = geo_ops.to_cog(src, tmp_path / "3857.tif", dst_crs="EPSG:3857")
    assert_strict_cog(result.path)
    assert result.epsg == 3857 and result.reprojected
    with rasterio.open(src) as ds:
        transform, width, height = calculate_default_transform(
            ds.crs, "EPSG:3857", ds.width, ds.height, *ds.bounds)
    assert_grid(result, width, height, rasterio.transform.array_bounds(height, width, transform))
    if GDALWARP:
        assert_grid(result, *gdalwarp_grid(src, tmp_path))


@pytest.mark.skipif(GDALWARP is None, reason="Debian gdal-bin (gdalwarp) not installed")
def test_reprojection_with_resolution_matches_gdalwarp(make_raster, tmp_path):
    src = make_raster(width=500, height=400, dtype="float32", nodata=float("nan"),
                      crs="EPSG:32633")
    result = geo_ops.to_cog(src, tmp_path / "tr.tif", dst_crs="EPSG:3857", resolution=30.0,
                            resampling="bilinear")
    assert_grid(result, *gdalwarp_grid(src, tmp_path, "-tr", "30", "30"))
    assert result.nodata == "nan"
    assert_strict_cog(result.path)


def test_world_reprojects_to_web_mercator(shared_rasters, tmp_path):
    result = geo_ops.to_cog(shared_rasters / "world.rgb.tif", tmp_path / "w.tif",
                            dst_crs="EPSG:3857")
    assert_strict_cog(result.path)
    assert result.epsg == 3857 and result.count == 4  # alpha added: no nodata in the source
    west, south, east, north = result.bounds
    assert west == pytest.approx(-20037508.34, abs=1) and abs(north) < 2.1e7
    assert 0.5 < result.valid_fraction <= 1.0


def test_goes_keeps_its_non_epsg_crs(shared_rasters, tmp_path):
    result = geo_ops.to_cog(shared_rasters / "goes.tif", tmp_path / "goes.tif")
    assert_strict_cog(result.path)
    assert result.epsg is None
    assert "Geostationary" in result.crs_wkt or "geos" in result.crs_wkt
    with rasterio.open(shared_rasters / "goes.tif") as a, rasterio.open(result.path) as b:
        assert CRS.from_wkt(result.crs_wkt) == a.crs
        np.testing.assert_array_equal(a.read(), b.read())


def test_all_nodata_converts_and_says_empty(shared_rasters, tmp_path):
    result = geo_ops.to_cog(shared_rasters / "all-nodata.tif", tmp_path / "empty.tif")
    assert_strict_cog(result.path)
    assert result.is_empty and result.valid_fraction == 0.0
    assert [w.code for w in result.warnings] == ["EmptyRaster"]


@pytest.mark.parametrize("name", ["alpha.tif", "RGBA.uint16.tif", "shade.tif", "RGB.byte.tif"])
def test_real_rasters_copy_identical(shared_rasters, tmp_path, name):
    result = geo_ops.to_cog(shared_rasters / name, tmp_path / name)
    assert_strict_cog(result.path)
    assert_same_pixels(shared_rasters / name, result.path)


@pytest.mark.parametrize(
    ("name", "error"),
    [("corrupt.tif", geo_ops.UnreadableRaster), ("389225main_sw_1965_1024.jpg", geo_ops.MissingCRS),
     ("float_nan.tif", geo_ops.MissingCRS), ("rotated.tif", geo_ops.MissingCRS)],
)
def test_bad_inputs_raise_and_leave_nothing(shared_rasters, tmp_path, name, error):
    out_dir = tmp_path / "out"
    with pytest.raises(error, match=name.replace(".", r"\.")):
        geo_ops.to_cog(shared_rasters / name, out_dir / "x.tif")
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_rotated_georeferenced_source_reprojects_north_up(tmp_path, shared_rasters):
    src = tmp_path / "rotated_utm.tif"
    with rasterio.open(shared_rasters / "rotated.tif") as ds:
        profile = ds.profile | {"crs": "EPSG:32633", "transform": rasterio.Affine(
            17.32, 5.0, 500000, 10.0, -8.66, 5000000)}
        data = ds.read()
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    report = geo_ops.validate(src)
    assert report.valid and "RotatedTransform" in [w.code for w in report.warnings]
    result = geo_ops.to_cog(src, tmp_path / "north_up.tif", dst_crs="EPSG:32633")
    with rasterio.open(result.path) as out:
        assert out.transform.b == 0 and out.transform.d == 0
    assert_strict_cog(result.path)


# -- virtual paths and failure safety --------------------------------------------------------


def test_virtual_input_and_output(shared_rasters):
    data = (shared_rasters / "shade.tif").read_bytes()
    with MemoryFile(data, filename="shade.tif") as mem:
        dst = f"/vsimem/out_{id(mem)}/shade_cog.tif"
        result = geo_ops.to_cog(mem.name, dst)
        assert result.path == dst and result.size_bytes > 0
        with rasterio.open(dst) as out, rasterio.open(shared_rasters / "shade.tif") as ref:
            np.testing.assert_array_equal(out.read(), ref.read())
        ok, errors, _ = cog_validate(dst, strict=True, quiet=True)
        assert ok, errors
        rasterio.shutil.delete(dst)


def test_failed_validation_publishes_nothing(make_raster, tmp_path, monkeypatch):
    src = make_raster(width=600, height=600)
    dst = tmp_path / "out" / "never.tif"

    def reject(path, config):
        raise geo_ops.InvalidCog(path, "rejected for the test")

    monkeypatch.setattr(cog_write, "verify_cog", reject)
    with pytest.raises(geo_ops.InvalidCog):
        geo_ops.to_cog(src, dst)
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_output_is_replaced_atomically(make_raster, tmp_path):
    dst = tmp_path / "same.tif"
    geo_ops.to_cog(make_raster(seed=1), dst)
    second = make_raster(seed=2)
    geo_ops.to_cog(second, dst)
    assert_same_pixels(second, dst)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_raster_factory_is_deterministic(tmp_path):
    a = raster_factory.write_raster(tmp_path / "a.tif", count=2, dtype="float32", nodata=-1)
    b = raster_factory.write_raster(tmp_path / "b.tif", count=2, dtype="float32", nodata=-1)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        np.testing.assert_array_equal(ra.read(), rb.read())
        band = ra.read(1, masked=True)
        assert 0.05 < band.mask.mean() < 0.2 and band.std() > 0


def test_jpeg_profile_refused_for_float_data(make_raster, tmp_path):
    src = make_raster(dtype="float32", nodata=-1)
    with pytest.raises(geo_ops.InvalidOption, match="JPEG compression needs"):
        geo_ops.to_cog(src, tmp_path / "x.tif", profile="jpeg")
    assert list(tmp_path.glob("x.tif")) == []
