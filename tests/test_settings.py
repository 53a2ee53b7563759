"""Settings: embedded defaults, and a bad or missing value fails naming the setting."""
import json
from pathlib import Path

import pytest

from settings import CatalogBackend, Settings, SettingsError, StorageBackend, load_settings

SAMPLE = Path(__file__).resolve().parents[1] / "local.settings.sample.json"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("RMH_"):
            monkeypatch.delenv(key)


def test_embedded_defaults_need_no_configuration():
    settings = load_settings()
    assert settings.storage_backend is StorageBackend.local
    assert settings.catalog_backend is CatalogBackend.static
    assert settings.gdal_options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_values_come_from_prefixed_environment(monkeypatch):
    monkeypatch.setenv("RMH_SYNC_CONTAINERS", "rasters, uploads-2")
    monkeypatch.setenv("RMH_GDAL_OPTIONS", '{"GDAL_CACHEMAX": 64}')
    monkeypatch.setenv("RMH_TILE_SIZE", "2048")
    settings = load_settings()
    assert settings.sync_containers == ["rasters", "uploads-2"]
    assert settings.gdal_options == {"GDAL_CACHEMAX": "64"}
    assert settings.tile_size == 2048


@pytest.mark.parametrize(
    "env, names",
    [
        ({"RMH_CATALOG_BACKEND": "pgstac"}, ["RMH_PGSTAC_DSN"]),
        ({"RMH_STORAGE_BACKEND": "azure"},
         ["RMH_STORAGE_CONNECTION_STRING", "RMH_STORAGE_ACCOUNT_URL"]),
        ({"RMH_OUTPUT_CONTAINER": "Bad_Name"}, ["RMH_OUTPUT_CONTAINER", "lowercase"]),
        ({"RMH_SYNC_CONTAINERS": "ok-name,x"}, ["RMH_SYNC_CONTAINERS", "3 to 63"]),
        ({"RMH_SYNC_SCHEDULE": "0 */5 * * *"}, ["RMH_SYNC_SCHEDULE", "six-field"]),
        ({"RMH_GDAL_OPTIONS": "{not json"}, ["RMH_GDAL_OPTIONS", "JSON"]),
        ({"RMH_TILE_SIZE": "lots"}, ["RMH_TILE_SIZE", "integer"]),
        ({"RMH_TILE_SIZE": "16"}, ["RMH_TILE_SIZE", "256"]),
        ({"RMH_STORAGE_BACKEND": "s3"}, ["RMH_STORAGE_BACKEND", "local", "azure"]),
        ({"RMH_TASK_HUB_NAME": "my-hub"}, ["RMH_TASK_HUB_NAME"]),
        ({"RMH_STAC_SCHEMA_DIR": "/no/such/dir"}, ["RMH_STAC_SCHEMA_DIR", "not a directory"]),
        ({"RMH_EVENT_GRID_ENDPOINT": "http://topic.example/api/events"}, ["RMH_EVENT_GRID_ENDPOINT"]),
        ({"RMH_EVENT_WEBHOOKS": "https://ok.example/hook, file:///etc/passwd"}, ["RMH_EVENT_WEBHOOKS", "file:"]),
        ({"RMH_EVENT_DRAIN_SCHEDULE": "* * * * *"}, ["RMH_EVENT_DRAIN_SCHEDULE", "six-field"]),
        ({"RMH_KEY_NAMES": "curator=not-a-fingerprint"}, ["RMH_KEY_NAMES", "16 hex digits"]),
    ],
)
def test_bad_or_missing_setting_is_named(monkeypatch, env, names):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    for name in names:
        assert name in str(info.value)


def test_secrets_do_not_show_in_repr(monkeypatch):
    monkeypatch.setenv("RMH_STORAGE_BACKEND", "azure")
    monkeypatch.setenv("RMH_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=SECRETKEY")
    settings = load_settings()
    assert "SECRETKEY" not in repr(settings)
    assert "SECRETKEY" not in str(settings.model_dump())


def test_sample_lists_every_setting_and_nothing_else():
    values = json.loads(SAMPLE.read_text())["Values"]
    ours = {key for key in values if key.startswith("RMH_")}
    expected = {"RMH_" + name.upper() for name in Settings.model_fields}
    assert ours == expected


def test_sample_values_load(monkeypatch):
    for key, value in json.loads(SAMPLE.read_text())["Values"].items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.storage_connection_string is None
    assert settings.pgstac_dsn is None


def test_events_are_recorded_only_with_a_target_and_key_names_map_fingerprints(monkeypatch):
    assert not load_settings().events_enabled
    monkeypatch.setenv("RMH_EVENT_WEBHOOKS", "http://127.0.0.1:8080/hook, https://example.org/events?t=1")
    monkeypatch.setenv("RMH_KEY_NAMES", "curator=0123456789ABCDEF, ops=fedcba9876543210")
    settings = load_settings()
    assert settings.events_enabled and settings.event_webhooks == ["http://127.0.0.1:8080/hook",
                                                                   "https://example.org/events?t=1"]
    assert settings.key_names == {"0123456789abcdef": "curator", "fedcba9876543210": "ops"}
