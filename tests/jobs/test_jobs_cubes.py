"""Multidimensional inputs through the jobs on Azurite + pgSTAC: the checks of
cube_jobs_checks.py (the collection's datacube fields come from pgSTAC's SQL summary here)."""
from __future__ import annotations

import pytest

import cube_jobs_checks as checks


@pytest.fixture(scope="module")
def service_env(service_env):
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in checks.env().items():
            patch.setenv(key, value)
        get_settings.cache_clear()
        yield {**service_env, **checks.env()}
    get_settings.cache_clear()


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
