"""read_header(): catalog facts from the header, correct at the antimeridian and the poles."""
from __future__ import annotations

import json

import pytest
from rasterio.io import DatasetReader

import geo_ops
import raster_factory


@pytest.fixture
def no_pixel_reads(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pixels were read")

    monkeypatch.setattr(DatasetReader, "read", forbidden)


def test_utm_scene(shared_rasters, no_pixel_reads):
    header = geo_ops.read_header(shared_rasters / "RGB.byte.tif")
    assert header.epsg == 32618 and header.crs_projjson["id"]["code"] == 32618
    assert header.crs_wkt2.startswith("PROJCRS")
    assert (header.width, header.height, header.count) == (791, 718, 3)
    assert header.nodata == 0.0 and header.dtypes == ["uint8"] * 3
    west, south, east, north = header.bbox
    assert west == pytest.approx(-78.96, abs=0.01) and north == pytest.approx(25.55, abs=0.01)
    assert header.footprint["type"] == "Polygon"
    ring = header.footprint["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 5
    assert not header.is_cog and header.overview_count == 0
    assert header.header_bytes and header.header_bytes > 0
    json.dumps(header.model_dump(mode="json"))


def test_goes_has_no_epsg_but_wkt2_and_projjson(shared_rasters):
    header = geo_ops.read_header(shared_rasters / "goes.tif")
    assert header.epsg is None
    assert "Geostationary" in header.crs_wkt2
    assert header.crs_projjson["type"] == "ProjectedCRS"
    west, south, east, north = header.bbox  # the disk edge is off the globe: finite bbox anyway
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90


def test_whole_world(shared_rasters):
    header = geo_ops.read_header(shared_rasters / "world.rgb.tif")
    assert header.epsg == 4326 and header.bbox == [-180.0, -90.0, 180.0, 90.0]
    assert header.footprint["type"] == "Polygon"


def test_cog_quick_check(shared_rasters, tmp_path):
    cog = geo_ops.to_cog(shared_rasters / "RGB.byte.tif", tmp_path / "c.tif")
    header = geo_ops.read_header(cog.path)
    assert header.is_cog and header.overview_count == 1 and header.block_shape == [512, 512]
    assert header.compression == "deflate"


def test_nan_nodata_and_custom_crs(make_raster):
    header = geo_ops.read_header(make_raster(dtype="float32", nodata=float("nan"),
                                             crs=raster_factory.CUSTOM_CRS))
    assert header.nodata == "nan" and header.epsg is None
    assert 10 < header.bbox[0] < 11 and header.footprint["type"] == "Polygon"
    assert json.loads(json.dumps(header.model_dump(mode="json")))["nodata"] == "nan"


def test_antimeridian_crossing(make_raster):
    path = make_raster(crs="EPSG:32660", bounds=(500000, 6600000, 900000, 7000000))
    header = geo_ops.read_header(path)
    west, south, east, north = header.bbox
    assert west > east  # STAC convention for a bbox crossing the antimeridian
    assert 170 < west < 180 and -180 < east < -170
    assert header.footprint["type"] == "MultiPolygon"
    for polygon in header.footprint["coordinates"]:
        lons = [x for x, _ in polygon[0]]
        assert max(lons) - min(lons) < 180


@pytest.mark.parametrize(("crs", "pole"), [("EPSG:3413", 90.0), ("EPSG:3031", -90.0)])
def test_polar_extent_reaches_the_pole(make_raster, crs, pole):
    path = make_raster(crs=crs, bounds=(-500000, -500000, 500000, 500000))
    header = geo_ops.read_header(path)
    west, south, east, north = header.bbox
    assert (north if pole > 0 else south) == pole
    assert (west, east) == (-180.0, 180.0)


def test_header_on_virtual_path(shared_rasters):
    from rasterio.io import MemoryFile

    with MemoryFile((shared_rasters / "shade.tif").read_bytes(), filename="s.tif") as mem:
        header = geo_ops.read_header(mem.name)
    assert header.epsg == 3857 and header.path.startswith("/vsimem/")


def test_header_refuses_what_validate_refuses(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello")
    with pytest.raises(geo_ops.UnsupportedFormat):
        geo_ops.read_header(path)
