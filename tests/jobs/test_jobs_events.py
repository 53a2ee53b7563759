"""Event-driven ingest on Azurite + pgSTAC: blob events (the embedded runtime's Event Grid
emulation) catalog an upload within seconds, update it on overwrite, remove it on delete, keep up
with a burst of 300 uploads exactly once each, turn a re-delivered event into no second job, and
leave nothing for the scheduled sync to do."""
from __future__ import annotations

import pytest

from events import (CONTAINER, check_burst, check_create_overwrite_delete, check_duplicate_event_is_one_job,
                    check_next_sync_plans_nothing)
from local_runtime import LocalRuntime


@pytest.fixture(scope="module")
def watching(service_env, store, tmp_path_factory):
    import function_app
    from settings import get_settings

    store.create_container(CONTAINER)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RMH_EVENT_CONTAINERS", CONTAINER)
        get_settings.cache_clear()
        db = tmp_path_factory.mktemp("events") / "hub.sqlite"
        with LocalRuntime(function_app.app, db_path=db, port=0, event_grid_containers=[CONTAINER],
                          event_grid_poll_interval=0.5, blob_store=store) as runtime:
            yield runtime
    get_settings.cache_clear()


def test_upload_overwrite_delete(watching, store, tmp_path):
    check_create_overwrite_delete(watching, store, tmp_path)


def test_a_duplicated_event_is_one_job(watching, store, tmp_path):
    check_duplicate_event_is_one_job(watching, store, tmp_path)


def test_a_burst_of_300_uploads_is_cataloged_once_each(watching, store, tmp_path):
    check_burst(watching, store, tmp_path, count=300)
    check_next_sync_plans_nothing(watching)
