"""The pure parts of the cube jobs (cube_jobs.py): which listed blobs are cube files and Zarr
stores, a store's version, the ids of time steps' items and whose they are, the options a cube
refuses, and the blob event that stands for a store."""
from __future__ import annotations

import datetime as dt

import pytest

import cube_jobs
import cubes
import raster_names
from models import CogOptions
from storage import BlobInfo

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def blob(name: str, etag: str = "e1", size: int = 10, minutes: int = 0) -> BlobInfo:
    return BlobInfo(name=name, size=size, etag=etag, last_modified=T0 + dt.timedelta(minutes=minutes))


def test_a_listing_holds_files_and_each_zarr_store_as_one_source():
    listing = [blob("a.tif"), blob("b/air.nc"), blob("b/t.GRIB2"), blob("notes.txt"),
               blob("s.zarr/.zgroup"), blob("s.zarr/.zmetadata"), blob("s.zarr/sst/.zarray"),
               blob("s.zarr/sst/0.0.0", size=100, minutes=5), blob("s.zarr/inner.nc"),
               blob("deep/v3/zarr.json"), blob("deep/v3/sst/zarr.json"), blob("deep/v3/sst/c/0/0/0")]
    sources, ignored = cube_jobs.listed_sources(listing)
    forms = {f.name: f.form for f in sources}
    assert forms == {"a.tif": "raster", "b/air.nc": "cube", "b/t.GRIB2": "cube", "s.zarr": "zarr", "deep/v3": "zarr"}
    assert ignored == ["notes.txt"]  # a store's blobs are its own, never sources or ignored names
    store = next(f for f in sources if f.name == "s.zarr")
    assert store.size == 140 and store.last_modified == T0 + dt.timedelta(minutes=5)
    assert store.etag == cube_jobs.store_etag([(".zgroup", "e1"), (".zmetadata", "e1"), ("sst/.zarray", "e1"),
                                               ("sst/0.0.0", "e1"), ("inner.nc", "e1")])


def test_a_store_at_the_containers_root_is_not_a_source():
    sources, ignored = cube_jobs.listed_sources([blob(".zgroup"), blob("sst/.zarray"), blob("x.nc")])
    assert [f.name for f in sources] == ["x.nc"] and ignored == [".zgroup", "sst/.zarray"]


def test_a_stores_version_changes_with_any_blob_and_not_with_their_order():
    base = [("a", "1"), ("b", "2")]
    assert cube_jobs.store_etag(base) == cube_jobs.store_etag(reversed(base))
    assert cube_jobs.store_etag(base) != cube_jobs.store_etag([("a", "1"), ("b", "3")])
    assert cube_jobs.store_etag(base) != cube_jobs.store_etag(base + [("c", "1")])
    assert cube_jobs.store_etag(base).startswith("zarr-")


def test_step_item_ids_and_whose_they_are():
    assert cube_jobs.slice_item_id("rasters~a.nc", 42) == "rasters~a.nc~t00042"
    assert cube_jobs.slice_item_id("rasters~a.nc", None) == "rasters~a.nc~static"
    assert cube_jobs.is_slice_item_of("rasters~a.nc", "rasters~a.nc~t00042")
    assert cube_jobs.is_slice_item_of("rasters~a.nc", "rasters~a.nc~t123456")
    for other in ("rasters~a.nc", "rasters~a.nc~t0042", "rasters~a.nc.tif~t00042", "rasters~a.nc~t00042.tif"):
        assert not cube_jobs.is_slice_item_of("rasters~a.nc", other), other
    long = "c~" + "x" * 252
    step = cube_jobs.slice_item_id(long, 7)
    assert len(step) <= 256 and step.endswith("~t00007") and cube_jobs.is_slice_item_of(long, step)
    assert cube_jobs.slice_item_id(long, 7) != cube_jobs.slice_item_id("c~" + "x" * 251 + "y", 7)


@pytest.mark.parametrize("options,reason", [
    (CogOptions(profile="jpeg"), "lossy"),
    (CogOptions(profile="webp"), "lossy"),
    (CogOptions(profile="lerc", max_z_error=0.5), "max_z_error"),
    (CogOptions(target_crs="EPSG:3857"), "target_crs"),
])
def test_options_that_change_values_are_refused_by_name(options, reason):
    with pytest.raises(cubes.LossyOption, match=reason):
        cube_jobs.check_options("rasters/a.nc", options)


@pytest.mark.parametrize("options", [CogOptions(), CogOptions(profile="zstd"), CogOptions(profile="lerc"),
                                     CogOptions(profile="none")])
def test_lossless_options_pass(options):
    cube_jobs.check_options("rasters/a.nc", options)


def test_the_form_of_a_name():
    assert [cube_jobs.form_of_name(n) for n in ("a.nc", "a.HDF5", "a.tif", "a.zarr", "a.txt")] == [
        "cube", "cube", "raster", "zarr", None]


def test_a_stores_root_marker_event_is_the_stores(monkeypatch):
    import azure.functions as func

    import function_app
    from settings import get_settings

    monkeypatch.setenv("RMH_EVENT_CONTAINERS", "rasters")
    get_settings.cache_clear()

    def event(name: str) -> func.EventGridEvent:
        return func.EventGridEvent(id="1", data={"eTag": "0x8D"}, topic="t",
                                   subject=f"/blobServices/default/containers/rasters/blobs/{name}",
                                   event_type="Microsoft.Storage.BlobCreated", event_time=T0, data_version="1")

    try:
        assert function_app.ingest_request(event("era5.zarr/.zmetadata")).blob == "era5.zarr"
        assert function_app.ingest_request(event("d/era5.zarr/zarr.json")).blob == "d/era5.zarr"
        for ignored in ("era5.zarr/sst/.zarray", "era5.zarr/sst/0.0.0", "era5.zarr/.zgroup", "era5.zarr",
                        "store/zarr.json"):
            assert function_app.ingest_request(event(ignored)) is None, ignored
        assert function_app.ingest_request(event("air.nc")).blob == "air.nc"
    finally:
        get_settings.cache_clear()
    assert raster_names.is_cube_name("x.Grb2") and not raster_names.is_cube_name("x.hdf")
