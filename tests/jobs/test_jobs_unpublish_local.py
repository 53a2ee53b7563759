"""Unpublish on the local directory + static catalog (the embedded defaults): the same checks as
on Azurite + pgSTAC (tests/unpublish_checks.py), and the static catalog's tree keeps no link to
what went."""
from __future__ import annotations

import pytest

from services import applied_local_env
from unpublish_checks import (check_a_deletion_event_removes_a_tiled_sources_whole_output,
                              check_items_and_a_whole_collection, check_sync_removes_a_deleted_tiled_sources_whole_output,
                              check_tiled_source_unpublished)


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("unpublish-local")
    yield from applied_local_env({
        "RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
        "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
        "RMH_TEMP_DIR": str(root / "work")})


def test_a_tiled_source_is_unpublished_and_its_source_blob_stays(host, store, tmp_path):
    check_tiled_source_unpublished(host, store, tmp_path)


def test_items_by_id_then_the_whole_collection(host, store, tmp_path, service_env):
    import pystac

    collection = check_items_and_a_whole_collection(host, store, tmp_path)
    root = pystac.Catalog.from_file(f"{service_env['RMH_STATIC_CATALOG_DIR']}/catalog.json")
    assert collection not in [child.id for child in root.get_children()]


def test_sync_removes_a_deleted_tiled_sources_whole_output(host, store, tmp_path):
    check_sync_removes_a_deleted_tiled_sources_whole_output(host, store, tmp_path)


def test_a_deletion_event_removes_a_tiled_sources_whole_output(host, store, tmp_path):
    check_a_deletion_event_removes_a_tiled_sources_whole_output(host, store, tmp_path)

