"""Timer schedules are checked as NCRONTAB (croniter), not by the characters they use: a schedule
that could never fire as written fails at start-up, naming the setting (#28 §4)."""
import pytest

from settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("RMH_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("setting", ["RMH_SYNC_SCHEDULE", "RMH_EVENT_DRAIN_SCHEDULE"])
@pytest.mark.parametrize("schedule", ["61 * * * * *", "0 0 25 * * *", "0 0 0 32 * *", "0 0 0 * 13 *",
                                      "0 0 0 * * funday", "0 0 0 * * * *", "*/0 * * * * *"])
def test_an_out_of_range_schedule_is_refused_naming_the_setting(monkeypatch, setting, schedule):
    monkeypatch.setenv(setting, schedule)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert setting in str(info.value) and "six-field NCRONTAB" in str(info.value)


@pytest.mark.parametrize("schedule", ["0 0 */6 * * *", "0 * * * * *", "0 30 9 * * mon-fri", "0 0 0 1 jan *",
                                      "15,45 * * * * *", "0 0 0 1 1 *"])
def test_valid_schedules_are_taken_as_written(monkeypatch, schedule):
    monkeypatch.setenv("RMH_SYNC_SCHEDULE", schedule)
    assert load_settings().sync_schedule == schedule
