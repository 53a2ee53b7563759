"""validate(): every kind of bad file turned into a specific reason; good files pass."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import DatasetReader, MemoryFile

import geo_ops
import raster_open
import raster_stats
import raster_factory


def codes(issues: list[geo_ops.Issue]) -> list[str]:
    return [i.code for i in issues]


def test_synthetic_variants_are_valid(make_raster, variant):
    path = make_raster(**variant)
    report = geo_ops.validate(path)
    assert report.valid, report.errors
    assert report.errors == []
    assert report.blocks_sampled > 0
    assert report.is_empty is False
    assert report.count == variant["count"] + (1 if variant.get("alpha") else 0)
    assert report.dtypes[0] == variant["dtype"]
    nodata = variant.get("nodata")
    if nodata is not None and math.isnan(nodata):
        assert report.nodata == "nan"
    elif nodata is not None:
        assert report.nodata == nodata
    roundtrip = geo_ops.ValidationReport.model_validate_json(report.model_dump_json())
    assert roundtrip == report


def test_custom_crs_has_no_epsg(make_raster):
    report = geo_ops.validate(make_raster(crs=raster_factory.CUSTOM_CRS))
    assert report.valid and report.epsg is None and "Transverse" in report.crs_wkt


def test_cog_layout_reported_not_blocking(make_raster, tmp_path):
    striped = make_raster(width=1200, height=900, tiled=False)
    report = geo_ops.validate(striped)
    assert report.valid and not report.is_cog
    assert any("not tiled" in e for e in report.cog_errors)
    cog = geo_ops.to_cog(striped, tmp_path / "cog.tif")
    assert geo_ops.validate(cog.path).is_cog


@pytest.mark.parametrize(
    ("name", "valid", "error_codes", "warning_codes"),
    [
        ("RGB.byte.tif", True, [], []),
        ("shade.tif", True, [], []),
        ("world.rgb.tif", True, [], []),
        ("goes.tif", True, [], []),
        ("alpha.tif", True, [], []),
        ("RGBA.uint16.tif", True, [], []),
        ("all-nodata.tif", True, [], ["EmptyRaster"]),
        ("float_nan.tif", False, ["MissingCRS"], ["SouthUp"]),
        ("float.tif", False, ["MissingCRS"], ["SouthUp"]),
        ("rotated.tif", False, ["MissingCRS"], ["RotatedTransform"]),
        ("corrupt.tif", False, ["UnreadableRaster"], []),
        ("389225main_sw_1965_1024.jpg", False, ["MissingCRS", "DegenerateTransform"], []),
    ],
)
def test_real_rasters(shared_rasters: Path, name, valid, error_codes, warning_codes):
    report = geo_ops.validate(shared_rasters / name)
    assert report.valid is valid
    assert codes(report.errors) == error_codes
    for code in warning_codes:
        assert code in codes(report.warnings)
    for issue in report.errors:
        assert issue.message


def test_corrupt_names_the_read_failure(shared_rasters):
    report = geo_ops.validate(shared_rasters / "corrupt.tif")
    (error,) = report.errors
    assert error.code == "UnreadableRaster"
    assert "reading block at row" in error.message and "failed" in error.message
    with pytest.raises(geo_ops.UnreadableRaster, match="corrupt.tif"):
        report.raise_for_errors()


def test_all_nodata_is_empty(shared_rasters):
    report = geo_ops.validate(shared_rasters / "all-nodata.tif")
    assert report.is_empty is True and report.valid_fraction == 0.0


def test_float_nan_nodata_is_reported_as_nan(shared_rasters):
    assert geo_ops.validate(shared_rasters / "float_nan.tif").nodata == "nan"


def test_jpeg_photo_refused_for_georeferencing(shared_rasters):
    report = geo_ops.validate(shared_rasters / "389225main_sw_1965_1024.jpg")
    assert report.driver == "JPEG"
    with pytest.raises(geo_ops.MissingCRS, match="no coordinate reference system"):
        report.raise_for_errors()


# -- refusals without reading pixels ---------------------------------------------------------


def forbid(monkeypatch, message, *targets):
    """Make each ``(object, attribute)`` of ``targets`` fail the test with ``message`` when called."""
    def forbidden(*args, **kwargs):
        raise AssertionError(message)

    for owner, name in targets:
        monkeypatch.setattr(owner, name, forbidden)


@pytest.fixture
def no_pixel_reads(monkeypatch):
    """Fail the test if any dataset read happens."""
    forbid(monkeypatch, "pixels were read", (DatasetReader, "read"), (DatasetReader, "dataset_mask"))


@pytest.fixture
def no_gdal_open(monkeypatch):
    """Fail the test if the file is handed to GDAL to open as a dataset (raster_open opens with
    ``DatasetReader`` directly)."""
    forbid(monkeypatch, "rasterio.open was called", (rasterio, "open"), (raster_open, "DatasetReader"))


def test_vrt_pointing_at_local_file_refused(tmp_path, shared_rasters, no_gdal_open):
    vrt = tmp_path / "innocent.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="791" rasterYSize="718"><VRTRasterBand dataType="Byte" band="1">'
        f'<SimpleSource><SourceFilename>{shared_rasters / "RGB.byte.tif"}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>")
    report = geo_ops.validate(vrt)
    assert codes(report.errors) == ["UnsupportedFormat"]
    assert "VRT" in report.errors[0].message and "reference other files" in report.errors[0].message
    assert report.blocks_sampled == 0


def test_vrt_on_virtual_path_refused_by_its_leading_bytes(shared_rasters):
    """A virtual path is opened only by the allowed drivers; the caller's head bytes say why not."""
    xml = (f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1">'
           f'<SimpleSource><SourceFilename>{shared_rasters / "RGB.byte.tif"}</SourceFilename>'
           "</SimpleSource></VRTRasterBand></VRTDataset>").encode()
    with MemoryFile(xml, filename="remote.tif") as mem:
        with geo_ops.validated(mem.name, head=lambda: xml[:512]) as (report, ds):
            assert ds is None
        unexplained = geo_ops.validate(mem.name)
    assert codes(report.errors) == ["UnsupportedFormat"]
    assert "is a GDAL VRT, which can reference other files" in report.errors[0].message
    assert codes(unexplained.errors) == ["UnsupportedFormat"]
    assert "not recognised by the allowed drivers" in unexplained.errors[0].message


def test_claimed_huge_raster_refused_before_reading(tmp_path, no_pixel_reads):
    path = raster_factory.write_tiff_header_only(tmp_path / "bomb.tif", width=10**6,
                                                 height=10**6)
    assert path.stat().st_size < 1024
    report = geo_ops.validate(path)
    assert "RasterTooLarge" in codes(report.errors)
    message = next(i.message for i in report.errors if i.code == "RasterTooLarge")
    assert "1000000 x 1000000" in message
    assert report.decompressed_bytes == 10**12
    assert report.blocks_sampled == 0 and report.is_empty is None
    with pytest.raises(geo_ops.RasterTooLarge, match="bomb.tif"):
        report.raise_for_errors()


def test_zero_byte_file_refused(tmp_path, no_gdal_open):
    path = tmp_path / "empty.tif"
    path.touch()
    report = geo_ops.validate(path)
    assert codes(report.errors) == ["EmptyFile"]
    assert "0 bytes" in report.errors[0].message


def test_text_file_named_tif_refused(tmp_path, no_gdal_open):
    path = tmp_path / "readme.tif"
    path.write_text("this is not a raster\nat all\n")
    report = geo_ops.validate(path)
    assert codes(report.errors) == ["UnsupportedFormat"]
    assert "not a raster file" in report.errors[0].message and "text" in report.errors[0].message


def test_missing_file(tmp_path):
    report = geo_ops.validate(tmp_path / "nope.tif")
    assert codes(report.errors) == ["RasterNotFound"]


# -- limits and data quality --------------------------------------------------------------


def test_limits_bands_and_dtype(make_raster):
    path = make_raster(count=5, dtype="float64")
    limits = geo_ops.RasterLimits(max_bands=4, allowed_dtypes=("uint8", "float32"))
    report = geo_ops.validate(path, limits=limits)
    assert codes(report.errors) == ["RasterTooLarge", "UnsupportedDtype"]
    with pytest.raises(geo_ops.RasterTooLarge, match="5 bands"):
        report.raise_for_errors()
    assert report.blocks_sampled == 0


def test_decompressed_size_limit(make_raster):
    path = make_raster(width=512, height=512, count=3, compress="deflate")
    report = geo_ops.validate(path, limits=geo_ops.RasterLimits(max_decompressed_bytes=10**5))
    assert codes(report.errors) == ["RasterTooLarge"]
    assert "786432 bytes" in report.errors[0].message


def test_high_compression_ratio_warns(make_raster):
    path = make_raster(width=2048, height=2048, nodata=0, empty=True, compress="deflate")
    report = geo_ops.validate(path, limits=geo_ops.RasterLimits(warn_compression_ratio=50))
    assert "HighCompressionRatio" in codes(report.warnings)
    assert "EmptyRaster" in codes(report.warnings)


def test_undeclared_nan_warns(tmp_path):
    path = tmp_path / "nan.tif"
    data = np.arange(64 * 64, dtype="float32").reshape(1, 64, 64)
    data[0, :8, :8] = np.nan
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
                       crs="EPSG:4326", transform=rasterio.transform.from_origin(0, 1, 0.01, 0.01)
                       ) as dst:
        dst.write(data)
    report = geo_ops.validate(path)
    assert report.valid and "UndeclaredNaN" in codes(report.warnings)


def test_fractional_nodata_on_integer_band_is_an_error(make_raster):
    path = make_raster(dtype="uint8", nodata=0.5, fill_nodata=False)
    report = geo_ops.validate(path)
    assert codes(report.errors) == ["InvalidNodata"]
    assert "0.5" in report.errors[0].message


def test_virtual_input_path(shared_rasters):
    with MemoryFile((shared_rasters / "shade.tif").read_bytes(), filename="shade.tif") as mem:
        report = geo_ops.validate(mem.name)
    assert report.valid and report.epsg == 3857 and report.file_bytes is None


def test_gdal_config_is_applied(make_raster):
    path = make_raster()
    report = geo_ops.validate(path, gdal_config={"GDAL_CACHEMAX": "16",
                                                 "GDAL_HTTP_MAX_RETRY": "5"})
    assert report.valid
    with pytest.raises(geo_ops.InvalidOption):
        geo_ops.validate(path, gdal_config={"GDAL_CACHEMAX": "5%"})


def test_unreachable_remote_source_raises_transient_error():
    with pytest.raises(geo_ops.SourceUnavailable, match="127.0.0.1"):
        geo_ops.validate("/vsicurl/http://127.0.0.1:9/x.tif",
                         gdal_config={"GDAL_HTTP_MAX_RETRY": "0", "GDAL_HTTP_TIMEOUT": "2"})


def test_single_huge_tile_refused_before_reading(tmp_path, no_pixel_reads):
    # 60000 x 60000 in one deflate tile: within the pixel limits, but one block is 3.6 GB
    path = raster_factory.write_tiff_header_only(tmp_path / "tile.tif", width=60000,
                                                 height=60000, tile=60000)
    report = geo_ops.validate(path)
    messages = [i.message for i in report.errors if i.code == "RasterTooLarge"]
    assert any("block decompresses to" in m for m in messages), report.errors
    assert report.blocks_sampled == 0


def test_large_raster_without_overviews_is_judged_by_its_sample(make_raster, monkeypatch):
    monkeypatch.setattr(raster_stats, "SCAN_LIMIT_PIXELS", 100 * 100)
    empty = geo_ops.validate(make_raster(width=600, height=600, nodata=0, empty=True))
    assert empty.is_empty and empty.valid_fraction == 0.0 and empty.blocks_sampled > 0
    full = geo_ops.validate(make_raster(width=600, height=600, nodata=0))
    assert not full.is_empty and 0.5 < full.valid_fraction <= 1.0


def test_nodata_and_alpha_together_warns(make_raster):
    report = geo_ops.validate(make_raster(count=3, alpha=True, nodata=0))
    assert report.valid and "NodataAndAlpha" in codes(report.warnings)


def test_gcp_only_georeferencing_is_named_and_accepted(tmp_path):
    """Placed by GCPs with their CRS (no geotransform): valid, with a warning that names the
    transformation a conversion warps it by (issue 23: it used to be refused as MissingCRS)."""
    from rasterio.control import GroundControlPoint

    path = tmp_path / "gcps.tif"
    gcps = [GroundControlPoint(row=r, col=c, x=10 + c / 100, y=45 - r / 100)
            for r, c in [(0, 0), (0, 99), (99, 0), (99, 99)]]
    with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="uint8", gcps=gcps, crs="EPSG:4326") as dst:
        dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(4326))
        dst.write(np.ones((1, 100, 100), dtype="uint8"))
    report = geo_ops.validate(path)
    assert report.valid and codes(report.warnings) == ["GcpGeoreferenced"]
    assert "4 GCPs in EPSG:4326" in report.warnings[0].message and "polynomial-1" in report.warnings[0].message


def test_validated_keeps_the_dataset_open_for_the_caller(make_raster, shared_rasters):
    path = make_raster(width=300, height=200, count=2, crs="EPSG:32633")
    with geo_ops.validated(path) as (report, ds):
        assert report.valid and not ds.closed
        assert ds.read(1, window=((0, 2), (0, 2))).shape == (2, 2)
    assert ds.closed
    with geo_ops.validated(shared_rasters / "float.tif") as (report, ds):
        assert ds is None and [e.code for e in report.errors] == ["MissingCRS"]
    with geo_ops.validated(shared_rasters / "corrupt.tif") as (report, ds):
        assert ds is None and report.errors[0].code == "UnreadableRaster"


@pytest.mark.parametrize("blocks", [64, 2], ids=["read-whole", "sampled-blocks"])
def test_valid_fraction_is_the_same_read_whole_or_by_blocks(tmp_path, blocks):
    """A small raster is decoded in one read, a larger one by sampled blocks plus its mask: the
    valid fraction must not depend on which way it went."""
    path = tmp_path / "half.tif"
    data = np.ones((1, 1024, 1024), dtype="uint8")
    data[:, :, :256] = 0  # a quarter nodata
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint8",
                       nodata=0, crs="EPSG:32633", tiled=True, blockxsize=256, blockysize=256,
                       transform=rasterio.transform.from_origin(500000, 4900000, 10, 10)) as dst:
        dst.write(data)
    report = geo_ops.validate(path, sample_blocks=blocks)
    assert report.errors == []
    assert report.valid_fraction == pytest.approx(0.75, abs=0.01)
    with rasterio.open(path) as ds:
        assert geo_ops.check_blocks(ds, blocks).whole is (blocks == 64)
