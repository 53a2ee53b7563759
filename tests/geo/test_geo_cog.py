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


#: Shapes GDAL holds whose automatic overviews were one pixel wide (decimation 1 across: strict
#: validation refused them as "Invalid Decimation 1 for overview level 0"), with the overview
#: levels each can have: halvings before either side falls below one pixel.
DEGENERATE = {(1, 100_000): 0, (100_000, 1): 0, (1, 1): 0, (1, 600): 0, (2, 100_000): 1, (100_000, 2): 1,
              (3, 7000): 1, (5, 40_000): 2}


@pytest.mark.parametrize("width, height", sorted(DEGENERATE), ids=[f"{w}x{h}" for w, h in sorted(DEGENERATE)])
def test_any_shape_gdal_holds_makes_a_valid_cog(make_raster, tmp_path, width, height):
    src = make_raster(width=width, height=height, count=1, crs="EPSG:32633",
                      bounds=(500000, 4980000, 500000 + 10 * width, 4980000 + 10 * height))
    result = geo_ops.to_cog(src, tmp_path / "cog.tif")
    ok, errors, warnings = cog_validate(result.path, strict=True, quiet=True)
    if max(width, height) > 512 and DEGENERATE[(width, height)] == 0:
        assert errors == [] and [w for w in warnings if geo_ops.NO_OVERVIEWS_ADVICE not in w] == [], warnings
    else:
        assert ok, errors + warnings
    assert_same_pixels(src, result.path)
    with rasterio.open(result.path) as out:
        assert len(out.overviews(1)) == result.overview_count == DEGENERATE[(width, height)]
        assert all(factor > 1 for factor in out.overviews(1))
    thumbnail = geo_ops.write_thumbnail(result.path, tmp_path / "t.png")
    assert thumbnail.width >= 1 and thumbnail.height >= 1


def test_overview_levels_are_capped_by_the_shorter_side():
    options = {"BLOCKSIZE": "512", "OVERVIEWS": "AUTO"}
    assert geo_ops.shaped_cog_options(options, 4096, 4096) == options  # what AUTO makes: 3 levels
    assert geo_ops.shaped_cog_options(options, 1, 100_000)["OVERVIEWS"] == "NONE"
    assert geo_ops.shaped_cog_options(options, 3, 100_000)["OVERVIEW_COUNT"] == "1"
    assert geo_ops.shaped_cog_options({**options, "OVERVIEWS": "NONE"}, 1, 9) == {**options, "OVERVIEWS": "NONE"}


def test_a_degenerate_shape_tiles_into_valid_cogs(make_raster, tmp_path):
    src = make_raster(width=1, height=3000, count=1, crs="EPSG:32633", bounds=(500000, 4980000, 500010, 5010000))
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=1024, max_pixels=1 << 20)
    assert plan.cols == 1 and plan.rows == 3
    for tile in plan.tiles:
        result = geo_ops.process_tile(src, tile)
        ok, errors, warnings = cog_validate(result.path, strict=True, quiet=True)
        assert errors == [] and all(geo_ops.NO_OVERVIEWS_ADVICE in w for w in warnings), errors + warnings


def test_pixels_far_longer_than_wide_are_refused_before_reprojecting(make_raster, tmp_path):
    """A 1 x 100,000 strip of 10 km x 0.1 m pixels reprojects to square pixels of 0.1 m: 4.7
    billion of them from a 100 kB file. Refused by the pixel limit a source is held to, with the
    shapes in the reason, before anything is warped (and so is its tile plan)."""
    src = make_raster(width=1, height=100_000, count=1, crs="EPSG:32633")  # 10 km x 10 km
    for attempt in (lambda: geo_ops.to_cog(src, tmp_path / "out.tif", dst_crs="EPSG:4326"),
                    lambda: geo_ops.plan_tiles(src, output_prefix="t", dst_crs="EPSG:4326", max_pixels=1 << 20)):
        with pytest.raises(geo_ops.RasterTooLarge, match="100000 times longer than wide"):
            attempt()
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("crs, bounds", [
    ('LOCAL_CS["bogus",UNIT["metre",1]]', (0, 0, 100, 100)),
    ('ENGCRS["bogus",EDATUM["x"],CS[Cartesian,2],AXIS["x",east],AXIS["y",north],LENGTHUNIT["metre",1]]',
     (0, 0, 10, 10)),
    ("EPSG:4326", (1000, 500, 2000, 600)),
], ids=["local-cs", "engineering-crs", "lonlat-out-of-range"])
def test_a_crs_with_no_way_to_the_target_is_a_named_condition(tmp_path, crs, bounds):
    """Reprojecting a raster whose CRS has no place on the Earth, or whose extent is out of range:
    CannotReproject (PROJ's ProjError and GDAL's CPLE_AppDefinedError used to escape raw); its
    header still reads, without a footprint (cataloging it is then stac_ops' FootprintError)."""
    from rasterio.transform import from_bounds

    path = tmp_path / "bogus.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                       crs=CRS.from_user_input(crs), transform=from_bounds(*bounds, 64, 64)) as dst:
        dst.write(np.ones((1, 64, 64), dtype="uint8"))
    for attempt in (lambda: geo_ops.to_cog(path, tmp_path / "out.tif", dst_crs="EPSG:3857"),
                    lambda: geo_ops.plan_tiles(path, output_prefix="t", dst_crs="EPSG:3857", max_pixels=1 << 20)):
        with pytest.raises(geo_ops.CannotReproject, match="EPSG:3857"):
            attempt()
    header = geo_ops.read_header(path)
    if crs != "EPSG:4326":
        assert header.footprint is None and header.bbox is None and header.gsd is None
