"""Compression profiles: the predictor chosen by data type, lossless round trips, LERC's error bound."""
from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rio_cogeo.cogeo import cog_validate

import cli
import geo_ops
import raster_factory

PREDICTED = {"deflate", "zstd", "lzw"}


def assert_strict_cog(path) -> None:
    ok, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    assert ok, errors + warnings


def read_all(path) -> tuple[np.ndarray, np.ndarray, object]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask(), ds.nodata


def rounding(values: np.ndarray) -> float:
    """LERC's bound holds before the value is rounded to its type: allow one unit in the last place."""
    return float(np.spacing(np.abs(values).max()))


@pytest.mark.parametrize("profile", sorted(geo_ops.LOSSLESS_PROFILES))
def test_lossless_profiles_round_trip_every_variant(make_raster, variant, tmp_path, profile):
    src = make_raster(width=300, height=260, **variant)
    result = geo_ops.to_cog(src, tmp_path / f"{profile}.tif", profile=profile, blocksize=256)
    assert_strict_cog(result.path)
    (data, mask, nodata), (ref, ref_mask, ref_nodata) = read_all(result.path), read_all(src)
    np.testing.assert_array_equal(mask, ref_mask)
    if profile in PREDICTED or profile == "none":
        np.testing.assert_array_equal(data, ref)  # NaN == NaN here: NaN nodata, bit for bit
    else:  # LERC keeps every visible pixel; it stores those under a transparent alpha as 0
        visible = ref_mask > 0
        np.testing.assert_array_equal(data[:, visible], ref[:, visible])
        if variant.get("alpha"):
            assert (data[:-1, ~visible] == 0).all() and (~visible).any()
        else:
            np.testing.assert_array_equal(data, ref)
    assert str(nodata) == str(ref_nodata)
    floating = np.dtype(variant["dtype"]).kind == "f"
    assert result.predictor == ((3 if floating else 2) if profile in PREDICTED else None)


@pytest.fixture(scope="module")
def terrain(tmp_path_factory):
    """The demo's synthetic DEM (float32 metres with nodata), at a quarter of its size."""
    return cli.write_sample_raster(tmp_path_factory.mktemp("dem") / "dem.tif", 768, 512)


@pytest.fixture(scope="module")
def imagery(tmp_path_factory, terrain):
    """8-bit RGB rendered from the terrain (tints and hill shading plus sensor noise)."""
    return raster_factory.write_imagery_from_terrain(terrain, tmp_path_factory.mktemp("rgb") / "rgb.tif")


@pytest.mark.parametrize("source", ["terrain", "imagery"])
def test_default_profile_writes_gdal_best_lossless_bytes(request, tmp_path, source):
    src = request.getfixturevalue(source)
    ours = geo_ops.to_cog(src, tmp_path / "ours.tif", overview_resampling="average")
    sizes = {}
    for name, options in {"plain": {"COMPRESS": "DEFLATE"},
                          "predictor": {"COMPRESS": "DEFLATE", "PREDICTOR": "YES"}}.items():
        rasterio.shutil.copy(src, tmp_path / f"{name}.tif", driver="COG",
                             OVERVIEW_RESAMPLING="AVERAGE", **options)
        sizes[name] = os.path.getsize(tmp_path / f"{name}.tif")
    assert ours.size_bytes <= sizes["predictor"]
    assert ours.size_bytes < 0.95 * sizes["plain"], (ours.size_bytes, sizes)
    np.testing.assert_array_equal(read_all(ours.path)[0], read_all(src)[0])


@pytest.mark.parametrize("profile", ["lerc", "lerc_deflate"])
@pytest.mark.parametrize("nodata", [-9999.0, float("nan")])
def test_lerc_max_z_error_bounds_the_error_and_keeps_nodata(make_raster, tmp_path, profile, nodata):
    src = make_raster(width=400, height=300, dtype="float32", nodata=nodata, crs="EPSG:32633")
    lossless = geo_ops.to_cog(src, tmp_path / "lossless.tif", profile=profile)
    lossy = geo_ops.to_cog(src, tmp_path / "lossy.tif", profile=profile, max_z_error=0.5)
    assert_strict_cog(lossy.path)
    (data, mask, out_nodata), (ref, ref_mask, _) = read_all(lossy.path), read_all(src)
    np.testing.assert_array_equal(mask, ref_mask)
    valid = ref_mask > 0
    assert valid.sum() and (~valid).sum()
    assert np.abs(data[0][valid] - ref[0][valid]).max() <= 0.5 + rounding(ref[0][valid])
    np.testing.assert_array_equal(np.isnan(data[0][~valid]) if np.isnan(nodata)
                                  else data[0][~valid] == nodata, True)
    assert str(out_nodata) == str(nodata)
    assert lossy.size_bytes < 0.8 * lossless.size_bytes
    np.testing.assert_array_equal(read_all(lossless.path)[0], ref)


def test_lerc_tile_takes_the_error_bound(make_raster, tmp_path):
    src = make_raster(width=600, height=500, dtype="float64", nodata=-1e30, crs="EPSG:32633")
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=300)
    tile = plan.tiles[-1]
    result = geo_ops.process_tile(src, tile, profile="lerc", max_z_error=0.25)
    assert_strict_cog(result.path)
    with rasterio.open(src) as ds:
        w = tile.window
        ref = ds.read(1, window=((w.row_off, w.row_off + w.height), (w.col_off, w.col_off + w.width)))
    data = read_all(result.path)[0][0]
    assert 0 < np.abs(data - ref).max() <= 0.25 + rounding(ref)


@pytest.mark.parametrize("profile, max_z_error, says", [
    ("deflate", 0.1, "only to the LERC profiles"),
    ("zstd", 0.0, "only to the LERC profiles"),
    ("lerc", -0.1, "finite number >= 0"),
    ("lerc", float("nan"), "finite number >= 0"),
    ("lerc", float("inf"), "finite number >= 0"),
])
def test_bad_error_bounds_are_refused_before_anything_is_written(make_raster, tmp_path, profile,
                                                                 max_z_error, says):
    src = make_raster(dtype="float32")
    with pytest.raises(geo_ops.InvalidOption, match=says):
        geo_ops.to_cog(src, tmp_path / "x.tif", profile=profile, max_z_error=max_z_error)
    assert not (tmp_path / "x.tif").exists()


def test_lossy_lerc_refused_for_integers_lossless_accepted(make_raster, tmp_path):
    src = make_raster(dtype="int16", nodata=-9999, crs="EPSG:32633")
    with pytest.raises(geo_ops.InvalidOption, match="applies to floating-point data, not int16"):
        geo_ops.to_cog(src, tmp_path / "x.tif", profile="lerc", max_z_error=1.0)
    assert not (tmp_path / "x.tif").exists()
    result = geo_ops.to_cog(src, tmp_path / "y.tif", profile="lerc", max_z_error=0)
    np.testing.assert_array_equal(read_all(result.path)[0], read_all(src)[0])
