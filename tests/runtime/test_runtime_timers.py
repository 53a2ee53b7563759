"""Timer triggers: NCRONTAB parsing, %SETTING% resolution and a fired tick."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import local_runtime
from local_runtime import CronSchedule, LocalRuntime


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*/5 * * * * *", "2026-01-01T00:00:03", "2026-01-01T00:00:05"),
    ("0 */10 * * * *", "2026-01-01T00:09:59", "2026-01-01T00:10:00"),
    ("0 30 9 * * 1-5", "2026-01-02T10:00:00", "2026-01-05T09:30:00"),
    ("0 0 0 1 jan *", "2026-03-01T00:00:00", "2027-01-01T00:00:00"),
    ("15,45 * * * * *", "2026-01-01T00:00:45", "2026-01-01T00:01:15"),
    ("0 0 12 * * sun", "2026-01-01T00:00:00", "2026-01-04T12:00:00"),
])
def test_ncrontab_next(expression: str, after: str, expected: str) -> None:
    assert CronSchedule.parse(expression).next_after(at(after)) == at(expected)


def test_bad_schedules_rejected() -> None:
    with pytest.raises(local_runtime.InvalidSchedule):
        CronSchedule.parse("* * * * *")
    with pytest.raises(local_runtime.InvalidSchedule):
        CronSchedule.parse("61 * * * * *")


def test_setting_name_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SCHEDULE", "0 0 * * * *")
    assert local_runtime.resolve_setting("%MY_SCHEDULE%") == "0 0 * * * *"
    assert local_runtime.resolve_setting("%OTHER%", {"OTHER": "1 * * * * *"}) == "1 * * * * *"
    with pytest.raises(local_runtime.InvalidSchedule):
        local_runtime.resolve_setting("%MISSING_SCHEDULE%")


def test_fire_timer_runs_function_with_durable_client(runtime: LocalRuntime) -> None:
    import conformance_app

    before = len(conformance_app.TICKS)
    runtime.fire_timer("ticker")
    assert len(conformance_app.TICKS) == before + 1
    status = runtime.wait_for(conformance_app.TICKS[-1], 5)
    assert status["output"][0] == "Hello Tokyo!"


def test_schedule_fires_on_its_own(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICK_SCHEDULE", "* * * * * *")
    import conformance_app

    before = len(conformance_app.TICKS)
    with LocalRuntime(conformance_app.app, db_path=tmp_path / "t.sqlite", port=0) as rt:
        import time

        deadline = time.time() + 3
        while len(conformance_app.TICKS) == before and time.time() < deadline:
            time.sleep(0.05)
        assert len(conformance_app.TICKS) > before
        rt.wait_for(conformance_app.TICKS[-1], 5)


def test_unset_schedule_setting_disables_only_that_timer(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("TICK_SCHEDULE", raising=False)
    import conformance_app

    with LocalRuntime(conformance_app.app, db_path=tmp_path / "u.sqlite", port=0) as rt:
        assert rt.wait_for(rt.start_new("fan_out_in", 3), 5)["output"] == 6
    assert "ticker is in error" in caplog.text
