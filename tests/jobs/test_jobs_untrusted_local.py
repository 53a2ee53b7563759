"""The untrusted-input checks of test_jobs_untrusted.py on the local-directory backend."""
from __future__ import annotations

import pytest

from services import applied_local_env
from untrusted import assert_nothing_reached, check_hostile_inputs


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """Local directory storage and a static catalog instead of Azurite and pgSTAC."""
    root = tmp_path_factory.mktemp("local-backend")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "rasters"}
    yield from applied_local_env(env)


def test_hostile_vrt_and_crs_reach_nothing_on_the_local_store(host, store, tmp_path):
    assert_nothing_reached(check_hostile_inputs(host, store, tmp_path))
