"""Multidimensional inputs through the jobs on the local directory + static catalog (the embedded
defaults): the checks of cube_jobs_checks.py."""
from __future__ import annotations

import pytest

import cube_jobs_checks as checks
from services import applied_local_env


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cubes-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "rasters"}
    yield from applied_local_env(checks.env(env))


@pytest.fixture(scope="module")
def watching(service_env, store, tmp_path_factory):
    yield from checks.watching(store, tmp_path_factory)


def test_sync_catalogs_each_cube_and_store_in_place(host, store, tmp_path, validator):
    checks.check_sync_catalogs_cubes_in_place(host, store, tmp_path, validator)


def test_conversion_writes_slices_and_step_items_and_refuses_by_name(host, store, tmp_path, validator):
    status = checks.check_conversion(host, store, tmp_path, validator)
    checks.check_progress_and_tasks(host, status)
    checks.check_rerun_skips(host, store)
    checks.check_new_version_replaces_the_old(host, store, tmp_path)


def test_events_convert_and_forget_files_and_stores(watching, store, tmp_path):
    checks.check_events(watching, store, tmp_path)


def test_cube_items_written_as_drafts_wait_for_publish(host, store, tmp_path):
    """``draft`` reaches a cube's items into a public collection: the whole-file item a sync
    catalogs in place and the time steps' items a conversion writes (both were published at once)."""
    import activities
    import cube_factory as cf
    import stac_collections

    cat = activities.catalog()
    checks.upload(store, "cube-drafts", "d/air.nc", cf.write_netcdf(tmp_path / "air.nc", steps=2))
    for collection in ("cube-drafts-inplace", "cube-drafts-cogs"):
        cat.upsert_collection(stac_collections.collection_for_container("cube-drafts", collection_id=collection))
    synced = host.run("sync_container", {"container": "cube-drafts", "collection": "cube-drafts-inplace",
                                         "draft": True})
    assert synced["output"]["done"] == 1, synced["output"]
    converted = host.run("cog_conversion", {"container": "cube-drafts", "prefix": "d/",
                                            "collection": "cube-drafts-cogs", "draft": True})
    assert converted["output"]["done"] == 1, converted["output"]
    drafts = {d.collection: (d.items, d.whole) for d in cat.lifecycle().drafts if d.collection.startswith("cube-drafts")}
    assert drafts == {"cube-drafts-inplace": (1, False), "cube-drafts-cogs": (2, False)}, drafts
