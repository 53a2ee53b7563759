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
def test_source_overviews_never_reach_the_output(tmp_path, factors):
    src = with_overviews(raster_factory.write_raster(tmp_path / "src.tif", width=1100, height=900), factors)
    with rasterio.open(src) as ds:
        assert ds.overviews(1) == factors  # the odd levels are there to be copied
    result = geo_ops.to_cog(src, tmp_path / "cog.tif")
    assert_strict_cog(result.path)
    plain = geo_ops.to_cog(raster_factory.write_raster(tmp_path / "plain.tif", width=1100, height=900),
                           tmp_path / "plain_cog.tif")
    with rasterio.open(result.path) as out, rasterio.open(plain.path) as fresh:
        assert out.overviews(1) == fresh.overviews(1) == [2, 4]  # halvings until one 512 block
        np.testing.assert_array_equal(out.read(), fresh.read())
        for level in range(2):  # each level computed from the pixels, as for a source without any
            np.testing.assert_array_equal(out.read(out_shape=(1, 900 >> level + 1, 1100 >> level + 1)),
                                          fresh.read(out_shape=(1, 900 >> level + 1, 1100 >> level + 1)))


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
