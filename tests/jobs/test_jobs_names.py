"""Names on Azurite + pgSTAC: blob names in eight scripts, a 1,000-character name and names that
URLs, percent-decoders and normalizers would change go through cog_conversion,
process_tiled_raster, sync_container and event ingest, and come back exact (tests/names.py). On
today's Azure they failed with ``UnicodeEncodeError 'latin-1'`` (the raw name in blob metadata, an
HTTP header)."""
from __future__ import annotations

import pytest

from http_client import Host
from local_runtime import LocalRuntime
from names import (ALL_NAMES, LONG_NAME, SCRIPT_NAMES, TRICKY_NAMES, check_conversion, check_events, check_sync,
                   check_tiled, raster, upload)

EVENTS = "names-events"
#: A name Azure holds and a local directory does not: segments of 200 characters of 2- and
#: 3-byte UTF-8 (up to 600 bytes), so its output names are shortened to fit a file system.
WIDE_NAME = "/".join(("地図" * 100, "Ελλάδα" * 33 + "ab", "é" * 200, "ñ" * 150 + ".tif"))


@pytest.fixture(scope="module")
def host(service_env, store, tmp_path_factory):
    """The app, its Event Grid emulation watching the events container."""
    import function_app
    from settings import get_settings

    store.create_container(EVENTS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RMH_EVENT_CONTAINERS", EVENTS)
        get_settings.cache_clear()
        db = tmp_path_factory.mktemp("names-hub") / "hub.sqlite"
        with LocalRuntime(function_app.app, db_path=db, port=0, event_grid_containers=[EVENTS],
                          event_grid_poll_interval=0.5, blob_store=store) as runtime:
            yield Host(runtime)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def named(store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    upload(store, "names", [*ALL_NAMES, WIDE_NAME], raster(tmp))
    upload(store, "names-tiled", [*SCRIPT_NAMES.values(), LONG_NAME, WIDE_NAME, *TRICKY_NAMES.values()], raster(tmp, 300))
    return tmp


def test_every_name_converts_and_reads_back(host, store, named):
    check_conversion(host, store, [*ALL_NAMES, WIDE_NAME], container="names", output="names-out",
                     collection="names-cogs")


def test_every_name_tiles_and_reads_back(host, store, named):
    check_tiled(host, store, [*SCRIPT_NAMES.values(), LONG_NAME, WIDE_NAME, *TRICKY_NAMES.values()],
                container="names-tiled", output="names-tiles", collection="names-tiles")


def test_every_name_syncs_and_reads_back(host, named):
    check_sync(host, [*ALL_NAMES, WIDE_NAME], container="names", collection="names-sync")


def test_every_name_is_ingested_from_its_event(host, store, named):
    check_events(host.runtime, store, [*ALL_NAMES, WIDE_NAME], raster(named), container=EVENTS)
