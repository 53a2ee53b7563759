"""Offline validation: core schemas from pystac, extension schemas from ../shared, never the network."""
from __future__ import annotations

import datetime as dt
import socket

import pytest

import stac_collections
import stac_ops
import stac_validation

LAST_MODIFIED = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: validation must be offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def item(make_raster):
    return stac_ops.item_from_raster(make_raster(count=3), container="c", blob_name="a.tif",
                                     source_last_modified=LAST_MODIFIED,
                                     data_alternates={"vsiaz": "/vsiaz/c/a.tif"}).to_dict()


def test_every_extension_schema_is_checked(validator, item):
    uris, skipped = validator.schema_uris(item)
    assert skipped == []
    assert {stac_ops.RENDER_EXT, stac_ops.ALTERNATE_EXT, stac_ops.RASTER_EXT, stac_ops.EO_EXT} <= set(uris)
    assert set(item["stac_extensions"]) <= set(uris)
    assert validator.errors(item) == []


INVALID = [
    (("properties", "proj:shape"), [1, 2, 3]),
    (("properties", "proj:code"), 4326),
    (("properties", "proj:transform"), [1, 2, 3]),
    (("assets", "data", "raster:bands", 0, "spatial_resolution"), "ten"),
    (("assets", "data", "raster:bands", 0, "sampling"), "nearest"),
    (("assets", "data", "raster:bands", 0, "statistics", "minimum"), "low"),
    (("assets", "data", "raster:scale"), 1.0),
    (("properties", "renders", "default", "assets"), []),
    (("properties", "renders", "default", "rescale"), [[0]]),
    (("properties", "renders", "default", "minmax_zoom"), [2.5, 9]),
    (("assets", "data", "alternate", "vsiaz", "href"), 5),
    (("assets", "data", "alternate", "vsiaz"), {"title": "no href"}),
    (("assets", "data", "bands", 0, "data_type"), "uint7"),
    (("assets", "data", "bands", 0, "nodata"), "none"),
    (("assets", "data", "bands", 0, "statistics"), {}),
    (("assets", "data", "bands", 0, "statistics", "valid_percent"), 101),
    (("assets", "data", "file:size"), -1),
    (("assets", "data", "file:header_size"), "big"),
    (("assets", "data", "bands", 0, "eo:common_name"), "ultraviolet-ish"),
    (("assets", "data", "href"), None),
    (("bbox",), [1, 2]),
    (("geometry",), {"type": "Polygon", "coordinates": [[1, 2]]}),
    (("properties", "datetime"), "yesterday"),
    (("links",), [{"href": "x"}]),
    (("id",), 5),
]


def _mutate(item: dict, path: tuple, value) -> dict:
    target = item
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return item


@pytest.fixture(params=[True, False], ids=["fast-path", "jsonschema-only"])
def any_validator(request, schema_dir):
    return stac_validation.StacValidator(schema_dir, use_fast_path=request.param)


@pytest.mark.parametrize(("path", "value"), INVALID)
def test_invalid_fields_are_caught_by_the_right_schema(any_validator, item, path, value):
    _mutate(item, path, value)
    with pytest.raises(stac_ops.ItemValidationError, match=str(item["id"])):
        any_validator.validate_item(item)


@pytest.mark.parametrize(("path", "value"), INVALID)
def test_fast_path_never_accepts_what_jsonschema_rejects(validator, item, path, value):
    _mutate(item, path, value)
    uris, _ = validator.schema_uris(item)
    assert validator._fast_accepts(uris, item) is False


def test_fast_path_compiles_each_schema_once_and_decides_alone(schema_dir, item, monkeypatch):
    """A valid item costs one accelerator call per schema and no jsonschema validation at all."""
    validator = stac_validation.StacValidator(schema_dir)
    uris, _ = validator.schema_uris(item)
    validator.validate_item(item)
    compiled = dict(validator._fast)
    assert set(compiled) == set(uris) and all(compiled.values())  # jsonschema-rs is installed
    monkeypatch.setattr(validator, "_validator", lambda uri: pytest.fail(f"jsonschema ran for {uri}"))
    for n in range(50):
        validator.validate_item({**item, "id": f"{item['id']}-{n}"})
    assert validator._fast == compiled


def test_fast_path_accepts_our_items(validator, item, shared_rasters):
    uris, _ = validator.schema_uris(item)
    assert validator._fast_accepts(uris, item) is True
    world = stac_ops.item_from_raster(shared_rasters / "goes.tif", container="c", blob_name="g.tif",
                                      source_last_modified=LAST_MODIFIED, source_href="https://a/g.tif").to_dict()
    assert validator._fast_accepts(validator.schema_uris(world)[0], world) is True


def test_unknown_extension_is_an_error_with_a_schema_dir(any_validator, item):
    item["stac_extensions"].append("https://stac-extensions.github.io/sat/v1.0.0/schema.json")
    with pytest.raises(stac_ops.SchemaUnavailable, match="sat/v1.0.0"):
        any_validator.validate_item(item)


def test_projjson_reference_is_answered_offline_never_fetched(any_validator, item):
    """The projection (v0.7) and datacube (v0.4) schemas refer to PROJJSON's schema by URL: it is
    answered from PROJ's own copy (pyproj's data directory), so a bad PROJJSON is rejected with
    reasons and a good one passes, with nothing fetched (the registry retrieves nothing)."""
    import pyproj

    assert set(stac_validation.projjson_schemas()) >= {"https://proj.org/schemas/v0.4/projjson.schema.json",
                                                "https://proj.org/schemas/v0.7/projjson.schema.json"}
    item["properties"]["proj:projjson"] = pyproj.CRS.from_epsg(4326).to_json_dict()
    any_validator.validate_item(item)
    item["properties"]["proj:projjson"] = {"type": "GeographicCRS"}
    with pytest.raises(stac_ops.ItemValidationError, match="projjson"):
        any_validator.validate_item(item)


def test_the_shipped_schemas_are_checked_by_default(item):
    default = stac_validation.StacValidator()
    uris, skipped = default.schema_uris(item)
    assert skipped == [] and set(item["stac_extensions"]) <= set(uris)
    item["properties"]["renders"]["default"]["assets"] = "data"
    with pytest.raises(stac_ops.ItemValidationError, match="render"):
        default.validate_item(item)


def test_without_bundled_schemas_only_core_is_checked(item):
    core_only = stac_validation.StacValidator(bundled=False)
    uris, skipped = core_only.schema_uris(item)
    assert uris == [stac_validation.CORE_SCHEMAS["Feature"]]
    assert set(skipped) == set(item["stac_extensions"])
    core_only.validate_item(item)
    del item["properties"]["datetime"]
    with pytest.raises(stac_ops.ItemValidationError):
        core_only.validate_item(item)


def test_missing_schema_dir_is_reported(tmp_path):
    with pytest.raises(stac_ops.SchemaUnavailable, match="does not exist"):
        stac_validation.StacValidator(tmp_path / "nope")


def test_collections_validate(validator):
    collection = stac_collections.collection_for_container("landsat-raw", license="CC-BY-4.0")
    validator.validate_collection(collection)
    bad = collection.to_dict()
    bad["extent"]["spatial"]["bbox"] = [[1, 2]]
    with pytest.raises(stac_ops.CollectionValidationError, match="landsat-raw"):
        validator.validate_collection(bad)


def test_a_collection_whose_items_share_an_asset_key_but_no_field_of_it_stays_valid(validator):
    """A collection of a NetCDF's and a GRIB's items (their ``source`` assets differ in title,
    type and roles) and a raster's: ``item_assets`` keeps a key only with what it can say about
    it (two fields, or one and a description); the collection validates (it failed every
    finalize_catalog of such a job, and so the job)."""
    summary = stac_collections.ItemSummary(count=3, bbox=[0.0, 0.0, 1.0, 1.0], assets=[
        stac_collections.AssetSummary(key="source", type="application/netcdf", title="Original NetCDF",
                                      roles=["source", "data"], items=1),
        stac_collections.AssetSummary(key="source", type="application/wmo-GRIB2", title="Original GRIB2",
                                      roles=["source", "data"], items=1),
        stac_collections.AssetSummary(key="source", type="image/tiff", title="Original raster",
                                      roles=["source"], items=1),
        stac_collections.AssetSummary(key="thumbnail", type="image/png", title="Thumbnail", roles=["thumbnail"],
                                      items=3),
        stac_collections.AssetSummary(key="data", type="image/tiff", title="A", roles=["data"], items=2),
        stac_collections.AssetSummary(key="data", type="image/tiff", title="B", roles=["data"], items=1)])
    item_assets = stac_collections.summary_item_assets(summary)
    assert "source" not in item_assets, item_assets  # nothing the three agree on
    assert item_assets["thumbnail"] == {"title": "Thumbnail", "type": "image/png", "roles": ["thumbnail"]}
    assert item_assets["data"]["type"] == "image/tiff" and item_assets["data"]["roles"] == ["data"]
    collection = stac_collections.apply_summary(
        stac_collections.collection_for_container("mixed", collection_id="mixed"), summary)
    validator.validate_collection(collection)
