"""Items from rasters: ids, footprints, projection, bands, datetime order, real-world rasters."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

import stac_ops

LAST_MODIFIED = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
GEOREFERENCED = ["RGB.byte.tif", "RGBA.uint16.tif", "all-nodata.tif", "alpha.tif", "goes.tif", "shade.tif",
                 "world.rgb.tif"]
NOT_GEOREFERENCED = ["float.tif", "float_nan.tif", "rotated.tif", "389225main_sw_1965_1024.jpg"]


def build(path, **kwargs) -> pystac.Item:
    kwargs.setdefault("container", "rasters")
    kwargs.setdefault("blob_name", f"in/{path.name}")
    kwargs.setdefault("source_href", f"https://account.blob.core.windows.net/rasters/in/{path.name}")
    kwargs.setdefault("source_etag", '"0x8DC0FFEE"')
    kwargs.setdefault("source_last_modified", LAST_MODIFIED)
    return stac_ops.item_from_raster(path, **kwargs)


# ------------------------------------------------------------------------------------- ids

def test_item_id_is_deterministic_readable_and_url_safe():
    first = stac_ops.item_id_for_blob("rasters", "2024/05/RGB.byte.tif")
    assert first == stac_ops.item_id_for_blob("rasters", "2024/05/RGB.byte.tif") == "rasters~2024~05~RGB.byte.tif"
    assert stac_ops.check_id(first) == first


@pytest.mark.parametrize("names", [("a/b.tif", "a-b.tif"), ("x y.tif", "x_y.tif"), ("é.tif", "e.tif"),
                                   ("a//b.tif", "a/b.tif"), ("/a.tif", "a.tif"),
                                   ("a~b.tif", "a/b.tif")])
def test_item_ids_of_distinct_blobs_differ(names):
    ids = {stac_ops.item_id_for_blob("rasters", name) for name in names}
    assert len(ids) == 2
    assert all(stac_ops.check_id(i) for i in ids)


def test_long_blob_names_give_ids_of_at_most_256_chars_that_still_differ():
    a = stac_ops.item_id_for_blob("rasters", "deep/" * 80 + "a.tif")
    b = stac_ops.item_id_for_blob("rasters", "deep/" * 80 + "b.tif")
    assert len(a) <= 256 and len(b) <= 256 and a != b
    assert a == stac_ops.item_id_for_blob("rasters", "deep/" * 80 + "a.tif")


def test_default_collection_per_container_and_override():
    assert stac_ops.resolve_collection_id("landsat-raw") == "landsat-raw"
    assert stac_ops.resolve_collection_id("landsat-raw", "curated") == "curated"
    with pytest.raises(stac_ops.InvalidItemId):
        stac_ops.resolve_collection_id("landsat-raw", "bad/id")


# ------------------------------------------------------------------------ real-world rasters

@pytest.mark.parametrize("name", GEOREFERENCED)
def test_items_from_real_rasters_validate_offline(shared_rasters, validator, name):
    item = build(shared_rasters / name)
    validator.validate_item(item)
    stac = item.to_dict()
    assert stac["properties"][stac_ops.SOURCE_ETAG] == '"0x8DC0FFEE"'
    assert stac["assets"]["source"]["roles"] == ["source"]
    assert stac["assets"]["data"]["roles"] == ["data"]
    west, south, east, north = stac["bbox"]
    assert -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south < north <= 90
    assert pystac.Item.from_dict(stac).to_dict() == stac


def test_goes_has_null_proj_code_and_wkt2(shared_rasters, validator):
    props = build(shared_rasters / "goes.tif").properties
    assert props["proj:code"] is None
    assert props["proj:wkt2"].startswith("PROJCRS")
    assert "Geostationary" in props["proj:wkt2"]


def test_goes_is_a_cog_with_header_size(shared_rasters):
    data = build(shared_rasters / "goes.tif").assets["data"]
    assert data.media_type == stac_ops.COG_MEDIA_TYPE
    assert 0 < data.extra_fields["file:header_size"] < data.extra_fields["file:size"]


def test_world_covers_the_globe(shared_rasters):
    item = build(shared_rasters / "world.rgb.tif")
    assert item.bbox == [-180.0, -90.0, 180.0, 90.0]
    assert item.properties["proj:code"] == "EPSG:4326"


def test_all_nodata_is_marked_as_having_no_valid_data(shared_rasters, validator):
    item = build(shared_rasters / "all-nodata.tif")
    validator.validate_item(item)
    assert item.properties[stac_ops.HAS_DATA] is False
    for band in item.assets["data"].extra_fields["bands"]:
        assert band["statistics"] == {"valid_percent": 0.0}
    assert item.properties["datetime"] == "2022-01-17T10:43:43Z"
    assert item.properties[stac_ops.DATETIME_SOURCE] == "file-metadata"


def test_rgb_byte_bands(shared_rasters):
    item = build(shared_rasters / "RGB.byte.tif")
    bands = item.assets["data"].extra_fields["bands"]
    assert [b["eo:common_name"] for b in bands] == ["red", "green", "blue"]
    assert all(b["data_type"] == "uint8" and b["nodata"] == 0 for b in bands)
    assert all(0 < b["statistics"]["valid_percent"] < 100 for b in bands)
    raster_bands = item.assets["data"].extra_fields["raster:bands"]
    assert all(b["spatial_resolution"] == pytest.approx(300.0379, rel=1e-3) for b in raster_bands)
    assert [b["statistics"] for b in raster_bands] == [b["statistics"] for b in bands]
    assert item.properties["proj:code"] == "EPSG:32618"
    assert item.properties["proj:shape"] == [718, 791]
    assert item.properties[stac_ops.HAS_DATA] is True


@pytest.mark.parametrize("name", NOT_GEOREFERENCED)
def test_rasters_without_georeferencing_raise_not_georeferenced(shared_rasters, name):
    with pytest.raises(stac_ops.NotGeoreferenced, match=name.split(".")[0]):
        build(shared_rasters / name)


def test_corrupt_raster_raises_raster_read_error(shared_rasters):
    with pytest.raises(stac_ops.RasterReadError, match="corrupt.tif"):
        build(shared_rasters / "corrupt.tif")


def test_missing_file_raises_raster_open_error(tmp_path):
    with pytest.raises(stac_ops.RasterOpenError, match="nothing.tif"):
        build(tmp_path / "nothing.tif")


# ------------------------------------------------------------------------ synthetic rasters

def test_antimeridian_crossing_utm_gives_multipolygon(make_raster, validator):
    path = make_raster(crs="EPSG:32660", bounds=(300000.0, 0.0, 900000.0, 1000000.0))
    item = build(path)
    validator.validate_item(item)
    west, south, east, north = item.bbox
    assert west > east, item.bbox
    assert 170 < west < 180 and -180 < east < -170
    assert item.geometry["type"] == "MultiPolygon"
    lons = [x for poly in item.geometry["coordinates"] for x, _ in poly[0]]
    assert min(lons) >= -180 and max(lons) <= 180


def test_antimeridian_crossing_geographic_bounds(make_raster):
    item = build(make_raster(crs="EPSG:4326", bounds=(170.0, -10.0, 190.0, 10.0)))
    assert item.bbox == [170.0, -10.0, -170.0, 10.0]
    assert item.geometry["type"] == "MultiPolygon"


def test_geographic_raster_touching_a_pole_keeps_its_longitudes(make_raster):
    item = build(make_raster(crs="EPSG:4326", bounds=(0.0, 80.0, 10.0, 90.0)))
    assert item.bbox == [0.0, 80.0, 10.0, 90.0]


def test_item_from_source_takes_the_json_of_a_source_blob(make_raster):
    path = make_raster()
    source = stac_ops.SourceBlob(container="rasters", blob_name="in/a.tif", href="https://a/rasters/in/a.tif",
                                 etag='"0x1"', last_modified=LAST_MODIFIED, size=123)
    item = stac_ops.item_from_source(path, source.model_dump(mode="json"))
    assert item.id == "rasters~in~a.tif"
    assert item.properties[stac_ops.SOURCE_ETAG] == '"0x1"'
    assert item.assets["source"].extra_fields["file:size"] == 123
    assert item.datetime == LAST_MODIFIED


def test_longitudes_beyond_180_are_wrapped(make_raster, validator):
    item = build(make_raster(crs="EPSG:4326", bounds=(185.0, 0.0, 195.0, 10.0)))
    validator.validate_item(item)
    assert item.bbox == [-175.0, 0.0, -165.0, 10.0]
    assert item.geometry["type"] == "Polygon"


def test_north_pole_raster_reaches_90_over_all_longitudes(make_raster, validator):
    item = build(make_raster(crs="EPSG:3413", bounds=(-1_000_000.0, -1_000_000.0, 1_000_000.0, 1_000_000.0)))
    validator.validate_item(item)
    west, south, east, north = item.bbox
    assert (west, east, north) == (-180.0, 180.0, 90.0)
    assert 70 < south < 85


def test_south_pole_raster(make_raster):
    item = build(make_raster(crs="EPSG:3031", bounds=(-500_000.0, -500_000.0, 500_000.0, 500_000.0)))
    assert item.bbox[1] == -90.0 and item.bbox[0] == -180.0 and item.bbox[2] == 180.0


def test_geometry_is_counter_clockwise_and_closed(make_raster):
    ring = build(make_raster()).geometry["coordinates"][0]
    assert ring[0] == ring[-1]
    area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:]))
    assert area > 0


def test_datetime_order_request_then_file_then_blob(make_raster):
    """What the user gives wins; then the file's own datetime; then the blob's last-modified time
    (which every blob has, so as the first rule it would shadow the others)."""
    tagged = make_raster(tags={"TIFFTAG_DATETIME": "2019:07:04 08:30:00"})
    plain = make_raster()
    override = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)
    item = build(tagged, datetime_override=override)
    assert item.datetime == override and item.properties[stac_ops.DATETIME_SOURCE] == "request"
    item = build(plain, datetime_override=override)
    assert item.datetime == override and item.properties[stac_ops.DATETIME_SOURCE] == "request"
    item = build(tagged)
    assert item.datetime == dt.datetime(2019, 7, 4, 8, 30, tzinfo=dt.timezone.utc)
    assert item.properties[stac_ops.DATETIME_SOURCE] == "file-metadata"
    item = build(plain)
    assert item.datetime == LAST_MODIFIED and item.properties[stac_ops.DATETIME_SOURCE] == "blob-last-modified"
    with pytest.raises(stac_ops.MissingDatetime):
        build(plain, source_last_modified=None)


def test_nan_nodata_scale_offset_and_units(make_raster, validator):
    data = np.full((1, 32, 32), np.nan, dtype="float32")
    data[0, :16] = 7.5
    path = make_raster(dtype="float32", nodata=float("nan"), data=data, width=32, height=32)
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets, dst.units = (0.01,), (-5.0,), ("K",)
    item = build(path)
    validator.validate_item(item)
    band = item.assets["data"].extra_fields["bands"][0]
    assert band["nodata"] == "nan" and band["data_type"] == "float32" and band["unit"] == "K"
    raster_band = item.assets["data"].extra_fields["raster:bands"][0]
    assert raster_band["scale"] == 0.01 and raster_band["offset"] == -5.0 and raster_band["nodata"] == "nan"
    assert band["statistics"]["valid_percent"] == 50.0
    assert band["statistics"]["minimum"] == band["statistics"]["maximum"] == 7.5


def test_cog_gets_cog_media_type_and_header_size(make_raster, tmp_path, validator):
    src = make_raster(width=512, height=512, count=3)
    cog = tmp_path / "out.cog.tif"
    cog_translate(src, cog, cog_profiles.get("deflate"), overview_level=2, quiet=True)
    item = build(cog, data_href="https://account.blob.core.windows.net/cogs/out.cog.tif")
    validator.validate_item(item)
    data = item.assets["data"]
    assert data.media_type == stac_ops.COG_MEDIA_TYPE
    assert data.href.startswith("https://")
    assert 0 < data.extra_fields["file:header_size"] < data.extra_fields["file:size"] == cog.stat().st_size


def test_open_dataset_and_gdal_virtual_path_are_accepted(make_raster):
    path = make_raster()
    kwargs = dict(container="c", blob_name="x.tif", source_last_modified=LAST_MODIFIED, data_href="https://x/x.tif")
    with rasterio.open(path) as dataset:
        from_dataset = stac_ops.item_from_raster(dataset, **kwargs)
    with rasterio.MemoryFile(path.read_bytes()) as memfile:
        assert memfile.name.startswith("/vsimem/")
        from_vsi = stac_ops.item_from_raster(memfile.name, **kwargs)
    from_path = stac_ops.item_from_raster(path, **kwargs)
    from_vsi.assets["data"].extra_fields["file:size"] = from_path.assets["data"].extra_fields["file:size"]
    assert from_dataset.to_dict() == from_vsi.to_dict() == from_path.to_dict()


def test_items_are_deterministic(make_raster):
    path = make_raster(count=3)
    assert build(path).to_dict() == build(path).to_dict()


def test_no_source_asset_when_data_is_the_source(make_raster):
    path = make_raster()
    item = build(path, source_href=str(path))
    assert set(item.assets) == {"data"}


def test_rotated_but_georeferenced_raster(make_raster, tmp_path, validator):
    from affine import Affine

    path = tmp_path / "rot.tif"
    transform = Affine.translation(500000, 4000000) @ Affine.rotation(20) @ Affine.scale(30, -30)
    with rasterio.open(path, "w", driver="GTiff", width=50, height=40, count=1, dtype="uint8",
                       crs="EPSG:32618", transform=transform) as dst:
        dst.write(np.ones((1, 40, 50), dtype="uint8"))
    item = build(path)
    validator.validate_item(item)
    assert len(item.properties["proj:transform"]) == 6 and item.properties["proj:transform"][1] != 0
    assert math.isclose(item.assets["data"].extra_fields["raster:bands"][0]["spatial_resolution"], 30.0)


def test_plan_sync_compares_blob_etags_with_the_catalog():
    blobs = [stac_ops.SourceBlob(container="r", blob_name=name, etag=etag)
             for name, etag in [("new.tif", '"1"'), ("same.tif", '"2"'), ("changed.tif", '"4"')]]
    catalog = {"r~same.tif": '"2"', "r~changed.tif": '"3"', "r~gone.tif": '"5"'}
    plan = stac_ops.plan_sync([b.model_dump(mode="json") for b in blobs], catalog)
    assert [b.blob_name for b in plan.to_add] == ["new.tif"]
    assert [b.blob_name for b in plan.to_update] == ["changed.tif"]
    assert plan.unchanged == ["r~same.tif"] and plan.to_delete == ["r~gone.tif"]
    assert stac_ops.SyncPlan.model_validate(plan.model_dump(mode="json")) == plan


# ------------------------------------------------------------- what the items tell their consumers

def test_only_a_valid_cog_is_typed_and_titled_as_one(make_raster, tmp_path):
    plain = build(make_raster(width=1024, height=1024))  # striped: not a COG
    data = plain.assets["data"]
    assert (data.media_type, data.title, data.roles) == (stac_ops.GEOTIFF_MEDIA_TYPE, "GeoTIFF", ["data"])
    assert "file:header_size" not in data.extra_fields and "cloud-optimized" not in str(plain.to_dict())
    assert plain.properties["title"] == "in/" + plain.properties[stac_ops.SOURCE_BLOB].split("/")[-1]
    assert build(make_raster(), title="A site, tile 1").properties["title"] == "A site, tile 1"


def test_statistics_are_in_bands_and_raster_bands_for_every_reader(make_raster, validator):
    from pystac.extensions.raster import RasterExtension

    item = build(make_raster(dtype="float32", nodata=-9999.0, count=2))
    validator.validate_item(item)
    data = item.assets["data"]
    stac_11 = [band["statistics"] for band in data.extra_fields["bands"]]
    pystac_read = [band.statistics.to_dict() for band in RasterExtension.ext(data).bands]  # raster v1.1.0
    assert stac_11 == pystac_read and all(s["minimum"] < s["maximum"] for s in stac_11)
    assert stac_ops.RASTER_EXT in item.stac_extensions and stac_ops.RASTER_EXT == RasterExtension.get_schema_uri()


def test_renders_say_how_to_draw_the_data(make_raster, shared_rasters, validator):
    dem = build(make_raster(dtype="float32", nodata=-9999.0))
    stats = dem.assets["data"].extra_fields["bands"][0]["statistics"]
    assert dem.properties["renders"] == {"default": {
        "assets": ["data"], "title": "float32 values", "rescale": [[stats["minimum"], stats["maximum"]]],
        "colormap_name": stac_ops.SINGLE_BAND_COLORMAP}}
    assert stac_ops.RENDER_EXT in dem.stac_extensions
    validator.validate_item(dem)
    grey = build(make_raster())
    assert grey.properties["renders"]["default"] == {"assets": ["data"], "title": "Greyscale"}
    rgb16 = build(make_raster(count=3, dtype="uint16", photometric="RGB"))
    render = rgb16.properties["renders"]["default"]
    assert render["title"] == "True colour"
    assert render["rescale"] == [[b["statistics"]["minimum"], b["statistics"]["maximum"]]
                                 for b in rgb16.assets["data"].extra_fields["bands"]]
    assert build(make_raster(count=3, photometric="RGB")).properties["renders"]["default"] == {
        "assets": ["data"], "title": "True colour"}  # byte imagery is drawn as it is
    empty = build(shared_rasters / "all-nodata.tif")
    assert "renders" not in empty.properties and stac_ops.RENDER_EXT not in empty.stac_extensions


def test_item_ids_name_an_output_container_other_than_the_default():
    plain = stac_ops.item_id_for_blob("rasters", "in/a.tif")
    elsewhere = stac_ops.item_id_for_blob("rasters", "in/a.tif", output_container="cogs-3857")
    assert elsewhere == f"{plain}~~cogs-3857"
    assert stac_ops.item_id_for_blob("rasters", "in/a.tif", output_container="other") != elsewhere
    hashed = stac_ops.item_id_for_blob("rasters", "in/ä b.tif", output_container="cogs-3857")
    assert hashed.endswith("~~cogs-3857") and len(hashed) <= stac_ops.MAX_ID_LENGTH


def test_items_open_rasters_with_the_allowed_drivers_only(tmp_path):
    """A VRT disguised as a GeoTIFF is refused by its bytes; GDAL never opens the file it names."""
    from raster_factory import write_raster
    from untrusted import OpenWatch, hostile_vrt

    sentinel = write_raster(tmp_path / "sentinel.tif", width=8, height=8, count=1, crs="EPSG:4326")
    evil = tmp_path / "evil.tif"
    evil.write_bytes(hostile_vrt(str(sentinel)))
    watch = OpenWatch(sentinel)
    try:
        with pytest.raises(stac_ops.RasterOpenError, match="VRT"):
            build(evil)
        with rasterio.MemoryFile(evil.read_bytes(), ext=".tif") as memfile:  # a GDAL virtual path
            with pytest.raises(stac_ops.RasterOpenError, match="allowed drivers"):
                stac_ops.read_facts(memfile.name)
        assert watch.count() == 0
    finally:
        watch.close()
