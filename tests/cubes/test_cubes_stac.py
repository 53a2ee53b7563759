"""Items describe the cube: the datacube extension (validated offline against the shipped
schema), a COG asset per variable and level with raster bands that decode to the source, the
source asset, the step's time; the whole-file item and collection summaries."""
from __future__ import annotations

import datetime as dt

import pytest

import cube_factory as cf
import cubes
import stac_ops
import stac_validation


@pytest.fixture(scope="module")
def validator():
    return stac_validation.StacValidator()


def items_of(facts, outputs, validator, **kwargs):
    steps = sorted({o.index.get("time") for o in outputs}, key=lambda s: (s is None, s))
    return [cubes.slice_item(facts, step, [o for o in outputs if o.index.get("time") == step],
                             item_id=f"cube~{step}", collection_id="cubes", source_href="rasters/in/x.nc",
                             href_for=lambda p: p, validator=validator, **kwargs) for step in steps]


def test_slice_items_carry_the_datacube_extension_and_validate(tmp_path, convert, validator):
    path = cf.write_netcdf(tmp_path / "x.nc", steps=2, levels=(85000.0, 50000.0), bounds=True)
    facts, outputs = convert(path)
    items = items_of(facts, outputs, validator)
    assert len(items) == 2
    item = items[1]
    props = item["properties"]
    assert cubes.DATACUBE_EXT in item["stac_extensions"]
    assert (props["datetime"], props["start_datetime"], props["end_datetime"]) == (
        "2000-01-02T00:00:00Z", "2000-01-01T12:00:00Z", "2000-01-02T12:00:00Z")
    dims = props["cube:dimensions"]
    assert dims["time"] == {"type": "temporal", "extent": ["2000-01-01T12:00:00Z", "2000-01-02T12:00:00Z"],
                            "values": ["2000-01-02T00:00:00Z"]}
    assert dims["x"]["axis"] == "x" and dims["x"]["reference_system"] == 4326 and dims["x"]["extent"] == [-180, 180]
    assert dims["plev"] == {"type": "plev", "values": [85000.0, 50000.0], "unit": "Pa"}
    assert props["cube:variables"]["tas"] == {"dimensions": ["time", "plev", "y", "x"], "type": "data",
                                              "unit": "K", "description": "tas long name"}
    assert set(item["assets"]) == {"tas:plev0", "tas:plev1", "source"}
    band = item["assets"]["tas:plev1"]["raster:bands"][0]
    assert (band["scale"], band["offset"], band["nodata"], band["unit"]) == (0.01, 273.15, cf.FILL_INT16, "K")
    assert item["assets"]["tas:plev1"]["type"] == stac_ops.COG_MEDIA_TYPE
    assert item["assets"]["source"]["type"] == "application/netcdf" and "source" in item["assets"]["source"]["roles"]
    assert props["renders"]["tas:plev0"]["assets"] == ["tas:plev0"]
    assert item["bbox"] == pytest.approx([-180, -90, 180, 90])


def test_a_cube_without_time_takes_the_fallback_datetime(tmp_path, convert, validator):
    path = cf.write_grib(tmp_path / "static.grib2", [dict(category=0, number=0, level=2)])
    facts, outputs = convert(path)
    facts.dimensions.clear()  # GRIB always has a valid time: simulate a cube without one
    for v in facts.variables:
        v.dims = []
    outputs = [o.model_copy(update={"index": {}}) for o in outputs]
    with pytest.raises(stac_ops.MissingDatetime):
        items_of(facts, outputs, validator)
    when = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    item = items_of(facts, outputs, validator, fallback_datetime=when)[0]
    assert item["properties"]["datetime"] == "2024-05-01T00:00:00Z"


def test_the_whole_file_item_and_the_collection_summarise_the_cube(tmp_path, convert, validator):
    a = cubes.open_cube(cf.write_netcdf(tmp_path / "a.nc", steps=3, variables=("tas", "pr")))
    b = cubes.open_cube(cf.write_netcdf(tmp_path / "b.nc", steps=2, time_values=[10, 11]))
    item = cubes.cube_item(a, item_id="a", collection_id="cubes", source_href="rasters/a.nc",
                           source_size=123, validator=validator)
    props = item["properties"]
    assert (props["datetime"], props["start_datetime"], props["end_datetime"]) == (
        None, "2000-01-01T00:00:00Z", "2000-01-03T00:00:00Z")
    assert set(props["cube:variables"]) == {"tas", "pr"} and list(item["assets"]) == ["source"]
    assert item["assets"]["source"]["file:size"] == 123
    fields = cubes.collection_fields([a, b])
    assert fields["summaries"] == {"cube:variables": ["pr", "tas"],
                                   "datetime": {"minimum": "2000-01-01T00:00:00Z", "maximum": "2000-01-12T00:00:00Z"}}
    assert fields["cube:dimensions"]["time"]["extent"] == ["2000-01-01T00:00:00Z", "2000-01-12T00:00:00Z"]
    collection = {"type": "Collection", "stac_version": stac_ops.STAC_VERSION, "id": "cubes",
                  "description": "cubes", "license": "other", "links": [],
                  "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                             "temporal": {"interval": [[fields["summaries"]["datetime"]["minimum"],
                                                        fields["summaries"]["datetime"]["maximum"]]]}},
                  "stac_extensions": [cubes.DATACUBE_EXT], "summaries": fields["summaries"],
                  "cube:dimensions": fields["cube:dimensions"], "cube:variables": fields["cube:variables"]}
    validator.validate_collection(collection)


def test_the_datacube_schema_rejects_what_it_should(validator, tmp_path):
    facts = cubes.open_cube(cf.write_netcdf(tmp_path / "a.nc", steps=1))
    item = cubes.cube_item(facts, item_id="a", collection_id="cubes", source_href="rasters/a.nc")
    item["properties"]["cube:dimensions"]["x"]["type"] = "temporal"  # x must be spatial
    with pytest.raises(stac_ops.ItemValidationError, match="datacube"):
        validator.validate_item(item)


def test_a_collection_takes_its_cube_items_datacube_fields_and_drops_them_with_the_last(tmp_path, convert, validator):
    import stac_collections

    facts, outputs = convert(cf.write_netcdf(tmp_path / "x.nc", steps=2, levels=(85000.0, 50000.0)))
    items = items_of(facts, outputs, validator)
    collection = stac_collections.collection_for_container("rasters", collection_id="cubes")
    stac_collections.apply_summary(collection, stac_collections.summarize_items(items))
    stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
    validator.validate_collection(stac)
    assert cubes.DATACUBE_EXT in stac["stac_extensions"] and stac["summaries"]["cube:variables"] == ["tas"]
    dims = stac["cube:dimensions"]
    assert dims["time"] == {"type": "temporal", "extent": ["2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z"]}
    assert dims["plev"]["values"] == [50000.0, 85000.0] and dims["x"]["extent"] == [-180.0, 180.0]
    assert stac["cube:variables"]["tas"]["unit"] == "K"
    plain = {**items[0], "properties": {k: v for k, v in items[0]["properties"].items() if not k.startswith("cube:")}}
    stac_collections.apply_summary(collection, stac_collections.summarize_items([plain]))
    stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
    assert "cube:dimensions" not in stac and "cube:variables" not in stac.get("summaries", {})
    assert cubes.DATACUBE_EXT not in stac["stac_extensions"]
