"""Reprojection across the antimeridian and around the poles: GDAL's suggested grid for these is a
globe-wide strip at a fraction of the resolution; warp_grid gives the source's own extent (with
longitudes made continuous) at its own resolution, or refuses what the target cannot represent."""
from __future__ import annotations

import pytest
import rasterio
import rasterio.vrt

import geo_ops

CASES = {
    "utm60": dict(crs="EPSG:32660", bounds=(300000.0, 0.0, 900000.0, 1000000.0)),
    "lonlat-170-190": dict(crs="EPSG:4326", bounds=(170.0, -10.0, 190.0, 10.0)),
    "arctic": dict(crs="EPSG:3413", bounds=(-1000000.0, -1000000.0, 1000000.0, 1000000.0)),
}


@pytest.mark.parametrize(("case", "target"), [("utm60", "EPSG:3857"), ("utm60", "EPSG:4326"),
                                              ("lonlat-170-190", "EPSG:3857")])
def test_antimeridian_source_keeps_its_extent_and_resolution(make_raster, tmp_path, case, target):
    src = make_raster(width=400, height=400, nodata=0, **CASES[case])
    result = geo_ops.to_cog(src, tmp_path / "out.tif", dst_crs=target)
    assert result.valid_fraction > 0.85, result  # every source pixel found its place
    assert result.width < 1000 and result.height > 300, (result.width, result.height)  # not a strip
    west, _, east, _ = result.bounds
    limit = 180.0 if target == "EPSG:4326" else 20037508.34
    assert west < limit < east, result.bounds  # one contiguous grid across the antimeridian


def test_north_pole_source_into_lon_lat_covers_every_longitude_at_its_resolution(make_raster, tmp_path):
    src = make_raster(width=400, height=400, nodata=0, **CASES["arctic"])  # 5 km pixels
    result = geo_ops.to_cog(src, tmp_path / "out.tif", dst_crs="EPSG:4326")
    west, south, east, north = result.bounds
    assert (west, east, north) == (pytest.approx(-180), pytest.approx(180), pytest.approx(90))
    assert 76 < south < 78
    assert (north - south) / result.height < 0.06  # about 5 km of latitude, not 0.6 degrees
    assert result.valid_fraction > 0.5


def test_north_pole_source_into_web_mercator_is_refused_with_the_reason(make_raster, tmp_path):
    src = make_raster(width=400, height=400, nodata=0, **CASES["arctic"])
    with pytest.raises(geo_ops.InvalidOption, match="North Pole.*EPSG:3857 cannot represent"):
        geo_ops.to_cog(src, tmp_path / "out.tif", dst_crs="EPSG:3857")
    with pytest.raises(geo_ops.InvalidOption, match="North Pole"):
        geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "t"), tile_size=256, dst_crs="EPSG:3857")
    assert not (tmp_path / "out.tif").exists()


def test_ordinary_sources_keep_gdals_grid(make_raster):
    src = make_raster(width=400, height=400, crs="EPSG:32633", bounds=(300000.0, 5000000.0, 700000.0, 5400000.0))
    with rasterio.open(src) as ds:
        transform, width, height = geo_ops.warp_grid(ds, rasterio.crs.CRS.from_string("EPSG:3857"))
        with rasterio.vrt.WarpedVRT(ds, crs="EPSG:3857") as vrt:
            assert (width, height) == (vrt.width, vrt.height) and transform == vrt.transform
