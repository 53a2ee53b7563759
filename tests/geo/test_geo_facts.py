"""Raster facts for cataloging (statistics, COG layout, gsd), the source's tags kept through every
output path, and thumbnails."""
from __future__ import annotations

import datetime as dt
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_bounds
from rio_cogeo.cogeo import cog_validate

import geo_ops

SOURCE_TIME = "2025:05:01 12:00:00"
SOURCE_TAGS = {"TIFFTAG_DATETIME": SOURCE_TIME, "TIFFTAG_ARTIST": "survey team", "PROJECT": "rmh-42"}
BAND_TAGS = {"SENSOR": "lidar-7"}


@pytest.fixture
def tagged(make_raster):
    """Factory: a synthetic raster (``raster_factory`` keywords) carrying ``SOURCE_TAGS``."""
    def make(**kwargs):
        path = make_raster(**kwargs)
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(**SOURCE_TAGS)
            dst.set_band_description(1, "elevation")
            dst.set_band_unit(1, "metre")
            dst.update_tags(1, **BAND_TAGS)
            dst.scales = (0.5,) + (1.0,) * (dst.count - 1)
            dst.offsets = (10.0,) + (0.0,) * (dst.count - 1)
        return path

    return make


def assert_source_tags(path):
    with rasterio.open(path) as out:  # a mosaic VRT too, which geo_ops never opens from a request
        tags, band_tags = out.tags(), out.tags(1)
        when = geo_ops.file_datetime(out)
        band = (out.descriptions[0], out.units[0], out.scales[0], out.offsets[0])
    assert {k: tags.get(k) for k in SOURCE_TAGS} == SOURCE_TAGS, tags
    assert when == dt.datetime(2025, 5, 1, 12, tzinfo=dt.timezone.utc)
    assert band == ("elevation", "metre", 0.5, 10.0) and band_tags.get("SENSOR") == "lidar-7", (band, band_tags)


# ----------------------------------------------------------------- tags through every output path

@pytest.mark.parametrize("how", ["copy", "nodata", "warp"])
def test_cogs_keep_the_source_tags(tagged, tmp_path, how):
    src = tagged(width=600, height=400, dtype="int16", nodata=-9999, crs="EPSG:32633")
    options = {"copy": {}, "nodata": {"nodata": -32768}, "warp": {"dst_crs": "EPSG:3857"}}[how]
    result = geo_ops.to_cog(src, tmp_path / "out.tif", **options)
    assert result.cog_valid
    assert_source_tags(result.path)


@pytest.mark.parametrize("warped", [False, True], ids=["window", "warped"])
def test_tiles_and_their_mosaic_keep_the_source_tags(tagged, tmp_path, warped):
    src = tagged(width=700, height=500, count=3, nodata=0, crs="EPSG:32633")
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=512,
                              dst_crs="EPSG:3857" if warped else None)
    paths = [geo_ops.process_tile(src, tile).path for tile in plan.tiles]
    for path in paths:
        assert_source_tags(path)
    mosaic = geo_ops.build_mosaic(paths, tmp_path / "mosaic.vrt")
    assert_source_tags(mosaic.path)


# ------------------------------------------------------------------------------------- facts

def test_statistics_come_from_a_decimated_read(make_raster):
    path = make_raster(width=3000, height=1500)
    with rasterio.open(path) as dataset:
        data = geo_ops.read_decimated(dataset, max_size=1024)
    assert data.shape == (1, 512, 1024)


def test_large_raster_without_overviews_is_sampled_by_blocks(tmp_path):
    path = tmp_path / "big.tif"
    data = np.tile(np.arange(1, 201, dtype="uint8"), (8000, 40))[None, :, :8000]
    with rasterio.open(path, "w", driver="GTiff", width=8000, height=8000, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_bounds(500000, 4900000, 580000, 4980000, 8000, 8000),
                       tiled=True, blockxsize=512, blockysize=512) as dst:
        dst.write(data)
    with rasterio.open(path) as dataset:
        sample = geo_ops.read_decimated(dataset, max_size=1024, sample_blocks=16)
    assert sample.shape == (1, 1, (3 * 512 + 320) ** 2)  # 4 x 4 blocks, the last row and column partial
    stats = geo_ops.band_statistics(sample[0])
    assert (stats.minimum, stats.maximum, stats.valid_percent) == (1, 200, 100.0)


def test_statistics_from_the_pixels_validation_read_equal_a_second_read(make_raster, variant):
    """Validation decodes a small raster whole; its statistics come from those pixels, and they
    are the statistics a second (decimated, here full-resolution) read gives, masks and NaN
    included, for every dtype, nodata and alpha variant."""
    path = make_raster(width=300, height=200, **variant)
    with geo_ops.validated(path) as (report, dataset):
        assert report.valid and report.pixels is not None
        assert report.pixels.shape == (dataset.count, 200, 300)
        shared = geo_ops.read_header(dataset, statistics=True, pixels=report.pixels)
    again = geo_ops.read_header(path, statistics=True)
    assert [b.statistics for b in shared.bands] == [b.statistics for b in again.bands]
    assert "pixels" not in report.model_dump()  # the pixels never travel with the report


def test_statistics_use_the_pixels_given_and_no_second_read(make_raster):
    path = make_raster(width=64, height=64, dtype="uint16", count=1)
    with geo_ops.validated(path) as (report, dataset):
        pixels = report.pixels.copy()
        pixels[:] = 7  # what the statistics say can only come from these pixels
        header = geo_ops.read_header(dataset, statistics=True, pixels=pixels)
    assert (header.bands[0].statistics.minimum, header.bands[0].statistics.maximum) == (7, 7)


def test_only_a_small_raster_read_whole_keeps_its_pixels(make_raster):
    big = make_raster(width=1200, height=300, blocksize=256)  # whole read, but past STATISTICS_SIZE
    sampled = make_raster(width=2048, height=2048, blocksize=256)  # 64 blocks: sampled, not whole
    for path in (big, sampled):
        with geo_ops.validated(path) as (report, dataset):
            assert report.valid and report.pixels is None
            header = geo_ops.read_header(dataset, statistics=True, pixels=report.pixels)
        assert header.bands[0].statistics == geo_ops.read_header(path, statistics=True).bands[0].statistics


def test_the_block_sampler_spreads_over_small_grids_too(make_raster):
    path = make_raster(width=1024, height=1024, blocksize=512)
    with rasterio.open(path) as dataset:
        windows = geo_ops.sample_windows(dataset, 16)
    assert sorted((int(w.row_off), int(w.col_off)) for w in windows) == [(0, 0), (0, 512), (512, 0), (512, 512)]


def test_header_with_statistics_and_ground_sample_distance(make_raster):
    header = geo_ops.read_header(make_raster(width=300, height=200, dtype="float32", nodata=-9999.0,
                                             crs="EPSG:32633", bounds=(500000, 4980000, 503000, 4982000)),
                                 statistics=True)
    assert header.gsd == pytest.approx(10.0, rel=0.01)  # 10 m pixels, UTM scale factor aside
    band = header.bands[0]
    assert band.nodata == -9999.0 and band.dtype == "float32"
    assert 80 < band.statistics.valid_percent < 100
    assert -100 <= band.statistics.minimum < band.statistics.maximum <= 3000
    geographic = geo_ops.read_header(make_raster(width=100, height=100, crs="EPSG:4326",
                                                 bounds=(10.0, 45.0, 11.0, 46.0)))
    assert geographic.gsd == pytest.approx(0.01 * 111_000 * np.sqrt(np.cos(np.radians(45.5))), rel=0.02)


def test_cog_layout_agrees_with_rio_cogeo(shared_rasters, make_raster, tmp_path):
    """The header-only COG check gives rio-cogeo's (non-strict) verdict on COGs, on plain
    GeoTIFFs, and on a tiled GeoTIFF whose overviews were appended after its data."""
    appended = make_raster(name="appended.tif", width=2048, height=2048, blocksize=256)
    with rasterio.open(appended, "r+") as dst:
        dst.build_overviews([2, 4, 8])
    striped = make_raster(name="striped.tif", width=1024, height=1024, tiled=False)
    cog = Path(geo_ops.to_cog(shared_rasters / "RGB.byte.tif", tmp_path / "cog.tif").path)
    cases = [shared_rasters / n for n in ("RGB.byte.tif", "goes.tif", "shade.tif", "alpha.tif")]
    cases += [appended, striped, cog, make_raster(name="small.tif", width=300, height=200)]
    verdicts = {}
    for path in cases:
        expected = cog_validate(str(path), quiet=True)[0]
        with rasterio.open(path) as dataset:
            verdicts[path.name] = (not geo_ops.cog_layout_errors(dataset), expected)
    assert all(ours == theirs for ours, theirs in verdicts.values()), verdicts
    assert verdicts["cog.tif"] == (True, True) and verdicts["appended.tif"] == (False, False)


# --------------------------------------------------------------------------------- thumbnails

def _png(path):
    with warnings.catch_warnings(), rasterio.open(path) as png:
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return png.driver, png.read()


def test_thumbnail_of_a_dem_is_small_stretched_and_transparent_where_nodata(make_raster, tmp_path, monkeypatch):
    src = geo_ops.to_cog(make_raster(width=2000, height=1500, dtype="float32", nodata=-9999.0,
                                     crs="EPSG:32633"), tmp_path / "dem.tif").path
    reads = []
    original = rasterio.io.DatasetReader.read

    def recording(self, *args, **kwargs):
        reads.append(kwargs.get("out_shape"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", recording)
    result = geo_ops.write_thumbnail(src, tmp_path / "dem.png")
    assert reads and all(shape is not None and max(shape[1:]) <= geo_ops.STATISTICS_SIZE for shape in reads)
    driver, pixels = _png(result.path)
    assert driver == "PNG" and (result.width, result.height) == (256, 192) and result.bands == "grey"
    grey, alpha = pixels
    assert 0.8 < (alpha == 255).mean() < 1.0 and set(np.unique(alpha)) == {0, 255}
    shown = grey[alpha == 255]
    assert shown.min() < 20 and shown.max() > 235  # stretched over the data's range
    assert result.size_bytes < 100_000


def test_thumbnail_of_rgb_imagery_keeps_its_colours(shared_rasters, tmp_path):
    result = geo_ops.write_thumbnail(geo_ops.to_cog(shared_rasters / "RGB.byte.tif", tmp_path / "c.tif").path,
                                     tmp_path / "rgb.png")
    _, pixels = _png(result.path)
    assert result.bands == "rgb" and pixels.shape == (4, result.height, 256) and 230 <= result.height <= 234
    with rasterio.open(shared_rasters / "RGB.byte.tif") as src:
        full = src.read(out_shape=(3, result.height, 256))
    inside = pixels[3] == 255
    assert 0.5 < inside.mean() < 1.0  # the nodata collar is transparent
    # the same colours (band means), not a stretched or grey picture
    assert np.abs(pixels[:3][:, inside].mean(axis=1) - full[:, inside].mean(axis=1)).max() < 3
    assert np.abs(pixels[0].astype(int) - pixels[2]).mean() > 5


def test_thumbnail_of_a_paletted_raster_uses_its_palette(tmp_path):
    path = tmp_path / "classes.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=from_bounds(0, 0, 1, 1, 64, 64)) as dst:
        dst.write(np.repeat(np.arange(64, dtype="uint8")[None, :] % 2, 64, axis=0)[None])
        dst.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 0, 255, 255)})
    _, pixels = _png(geo_ops.write_thumbnail(path, tmp_path / "classes.png").path)
    assert {tuple(c) for c in pixels[:3].reshape(3, -1).T} == {(255, 0, 0), (0, 0, 255)}


def test_thumbnail_refuses_a_full_read(make_raster, tmp_path):
    big = make_raster(width=2048, height=2048)  # tiled, no overviews
    with pytest.raises(geo_ops.InvalidOption, match="overviews"):
        geo_ops.write_thumbnail(big, tmp_path / "big.png")


def test_thumbnail_matches_gdal_translate_for_byte_data(shared_rasters, tmp_path):
    """Byte imagery is shown as it is: the pixels gdal_translate's decimation (from the same
    overviews) gives, with nodata transparent."""
    cog = geo_ops.to_cog(shared_rasters / "RGB.byte.tif", tmp_path / "rgb.tif").path
    ours = geo_ops.write_thumbnail(cog, tmp_path / "ours.png")
    subprocess.run(["gdal_translate", "-q", "-of", "PNG", "-outsize", str(ours.width), str(ours.height),
                    "-r", "nearest", cog, str(tmp_path / "gdal.png")], check=True)
    _, mine = _png(ours.path)
    _, theirs = _png(tmp_path / "gdal.png")
    valid = mine[3] == 255
    assert (theirs[:, ~valid] == 0).all()  # where ours is transparent, the data is nodata (0)
    assert np.abs(mine[:3][:, valid].astype(int) - theirs[:, valid]).mean() < 1


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32"])
def test_band_statistics_match_numpy_for_every_dtype(dtype):
    """Small integers go through a histogram; the figures must equal plain float64 moments."""
    rng = np.random.default_rng(7)
    low, high = ((np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype != "float32" else (-1e3, 1e3))
    data = rng.uniform(low, high, size=(257, 311)).astype(dtype)
    band = np.ma.masked_array(data, mask=rng.random(data.shape) < 0.25)
    stats = geo_ops.band_statistics(band)
    valid = band.compressed().astype("float64")
    assert (stats.minimum, stats.maximum) == (valid.min(), valid.max())
    assert stats.mean == pytest.approx(valid.mean(), rel=1e-9, abs=1e-9)
    assert stats.stddev == pytest.approx(valid.std(), rel=1e-7)
    assert stats.valid_percent == round(100.0 * valid.size / band.size, 4)
