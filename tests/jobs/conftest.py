"""End-to-end job fixtures: the real function_app on the embedded runtime, with Azurite for blobs
and pgSTAC for the catalog, driven over HTTP like a user would."""
from __future__ import annotations

import os

import pytest

from http_client import Host
from local_runtime import LocalRuntime


@pytest.fixture(scope="module")
def service_env(azurite_connection_string, pgstac_dsn, tmp_path_factory):
    """RMH_* settings for Azurite + pgSTAC, applied for the module and undone after (items are
    validated against the shipped extension schemas: no RMH_STAC_SCHEMA_DIR needed)."""
    env = {
        "RMH_STORAGE_BACKEND": "azure",
        "RMH_STORAGE_CONNECTION_STRING": azurite_connection_string,
        "RMH_CATALOG_BACKEND": "pgstac",
        "RMH_PGSTAC_DSN": pgstac_dsn,
        "RMH_INPUT_CONTAINER": "rasters",
        "RMH_OUTPUT_CONTAINER": "cogs",
        "RMH_SYSTEM_CONTAINER": "rmh-system",
        "RMH_MAX_PIXELS_PER_TASK": str(1024 * 1024),
        "RMH_TILE_SIZE": "512",
        "RMH_SYNC_CONTAINERS": "watched",
        "RMH_SYNC_SCHEDULE": "0 0 0 1 1 *",  # once a year: tests fire ticks themselves
        "RMH_SYNC_CHUNK_SIZE": "25",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from settings import get_settings

    get_settings.cache_clear()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def host(service_env, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0) as runtime:
        yield Host(runtime)


@pytest.fixture(scope="module")
def store(service_env):
    import activities

    return activities.blob_store()
