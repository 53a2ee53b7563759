"""The names of test_jobs_names.py on the local directory + static catalog (the embedded defaults):
the 1,000-character name's item has a file name within 255 bytes (on today's code:
``OSError: [Errno 36] File name too long``, and its COG left without an item)."""
from __future__ import annotations

import pytest

from http_client import Host
from local_runtime import LocalRuntime
from names import (ALL_NAMES, LONG_NAME, SCRIPT_NAMES, TRICKY_NAMES, check_conversion, check_events, check_sync,
                   check_tiled, raster, upload)
from services import applied_local_env

EVENTS = "names-events"


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("names-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "names", "RMH_EVENT_CONTAINERS": EVENTS}
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def host(service_env, store, tmp_path_factory):
    import function_app

    store.create_container(EVENTS)
    db = tmp_path_factory.mktemp("names-local-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, event_grid_containers=[EVENTS],
                      event_grid_poll_interval=0.5, blob_store=store) as runtime:
        yield Host(runtime)


@pytest.fixture(scope="module")
def named(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    upload(store, "names", ALL_NAMES, raster(tmp))
    upload(store, "names-tiled", [*SCRIPT_NAMES.values(), LONG_NAME, *TRICKY_NAMES.values()], raster(tmp, 300))
    return tmp


def test_every_name_converts_and_reads_back(host, store, named):
    check_conversion(host, store, ALL_NAMES, container="names", output="names-out", collection="names-cogs")


def test_every_name_tiles_and_reads_back(host, store, named):
    check_tiled(host, store, [*SCRIPT_NAMES.values(), LONG_NAME, *TRICKY_NAMES.values()],
                container="names-tiled", output="names-tiles", collection="names-tiles")


def test_every_name_syncs_and_reads_back(host, named):
    check_sync(host, ALL_NAMES, container="names", collection="names-sync")


def test_every_name_is_ingested_from_its_event(host, store, named):
    check_events(host.runtime, store, ALL_NAMES, raster(named), container=EVENTS)
