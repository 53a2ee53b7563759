"""State survives a runtime restart on the same SQLite file; the process pool works too."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from local_runtime import LocalRuntime


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    return conformance_app.app


def test_waiting_instance_timer_and_entity_survive_restart(app, tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    with LocalRuntime(app, db_path=db, port=0) as rt:
        waiting = rt.start_new("waiter")
        timed = rt.start_new("approval", 0.5)
        rt.signal_entity("Counter", "durable", "add", 11)
        time.sleep(0.2)
        assert rt.get_status(waiting)["runtimeStatus"] == "Running"
    time.sleep(0.5)
    with LocalRuntime(app, db_path=db, port=0) as rt:
        assert rt.wait_for(timed, 10)["output"] == {"approved": None, "timed_out": True}
        rt.raise_event(waiting, "Go", 8)
        assert rt.wait_for(waiting, 10)["output"] == 16
        assert rt.read_entity("Counter", "durable") == (True, 11)


def test_events_raised_while_pending_are_kept_across_restart(app, tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    with LocalRuntime(app, db_path=db, port=0) as rt:
        instance_id = rt.start_new("waiter")
        rt.suspend(instance_id)
        rt.raise_event(instance_id, "Go", 5)
    with LocalRuntime(app, db_path=db, port=0) as rt:
        assert rt.get_status(instance_id)["runtimeStatus"] == "Suspended"
        rt.resume(instance_id)
        assert rt.wait_for(instance_id, 10)["output"] == 10


def test_process_pool_runs_activities(app, tmp_path: Path) -> None:
    with LocalRuntime(app, db_path=tmp_path / "p.sqlite", port=0, activity_pool="process",
                      max_activity_workers=2) as rt:
        assert rt.wait_for(rt.start_new("fan_out_in", 20), 30)["output"] == 380
        status = rt.wait_for(rt.start_new("activity_failure"), 30)
        assert "ValueError: kaboom" in status["output"]


def test_host_failure_in_one_episode_fails_only_that_instance(
        app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import local_runtime

    original = local_runtime.Engine._build_node

    def broken_for_race(self, live, action):
        if live.name == "race":
            raise local_runtime.UnsupportedOperation("simulated host bug")
        return original(self, live, action)

    monkeypatch.setattr(local_runtime.Engine, "_build_node", broken_for_race)
    with LocalRuntime(app, db_path=tmp_path / "h.sqlite", port=0) as rt:
        broken = rt.start_new("race", 30)
        healthy = rt.start_new("fan_out_in", 10)
        status = rt.wait_for(broken, 10)
        assert status["runtimeStatus"] == "Failed"
        assert "embedded runtime error: simulated host bug" in status["output"]
        assert rt.wait_for(healthy, 10)["output"] == 90


def test_failed_round_reloads_state_and_work_continues(
        app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import local_runtime

    original = local_runtime.Engine._flush_results
    failures = {"left": 2}

    def flaky_flush(self):
        if self.results and failures["left"]:
            failures["left"] -= 1
            self.results.clear()
            raise OSError("simulated disk error")
        return original(self)

    monkeypatch.setattr(local_runtime.Engine, "_flush_results", flaky_flush)
    with LocalRuntime(app, db_path=tmp_path / "r.sqlite", port=0) as rt:
        assert rt.wait_for(rt.start_new("fan_out_in", 30), 20)["output"] == 870
    assert failures["left"] == 0


def test_spawned_process_pool_from_import_string(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    ref = f"{Path(__file__).resolve().parent / 'apps' / 'crash_app.py'}:app"
    with LocalRuntime(ref, db_path=tmp_path / "s.sqlite", port=0, activity_pool="process",
                      max_activity_workers=2) as rt:
        status = rt.wait_for(rt.start_new("fan_out_200", 20), 60)
    assert status["output"] == [{"index": i, "square": i * i} for i in range(20)]


@pytest.mark.parametrize("by_reference", [True, False], ids=["spawned", "forked"])
def test_process_pool_forwards_activity_logs_to_the_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        by_reference: bool) -> None:
    import os

    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    app = f"{conformance_app.__file__}:app" if by_reference else conformance_app.app
    caplog.set_level("INFO")
    with LocalRuntime(app, db_path=tmp_path / "l.sqlite", port=0, activity_pool="process",
                      max_activity_workers=1) as rt:
        status = rt.wait_for(rt.start_new("chatty_then_explode", "job-7"), 60)
    assert status["runtimeStatus"] == "Failed"
    said = [r for r in caplog.records if r.getMessage().startswith("chatty says job-7")]
    assert len(said) == 1 and said[0].process != os.getpid()
    failed = [r for r in caplog.records if "Activity function 'explode' failed: ValueError: "
              "job-7 went wrong" in r.getMessage()]
    assert len(failed) == 1 and failed[0].process != os.getpid()
    assert failed[0].levelname == "WARNING" and "conformance_app.py" in failed[0].getMessage()


def test_a_worker_killed_as_it_starts_a_call_fails_that_call_on_a_busy_machine(tmp_path: Path) -> None:
    """A call that kills its worker at once (a segfault on open): the worker's "taken" must reach
    the host first, or the host never learns whose call died and the job waits forever. With
    results on a Queue, its feeder thread sent "taken" later, and on a busy machine the kill
    often came first (5 of 15 runs hung with two busy loops beside); results on a SimpleQueue
    are written before the call starts. Five runs beside two busy loops: every one completes."""
    ref = f"{Path(__file__).resolve().parent / 'apps' / 'crash_app.py'}:app"
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        outcomes = []
        for run in range(5):
            with LocalRuntime(ref, db_path=tmp_path / f"k{run}.sqlite", port=0, activity_pool="process",
                              max_activity_workers=2) as rt:
                instance_id = rt.start_new("die_then_retry", str(tmp_path / f"died-{run}"))
                outcomes.append(rt.wait_for(instance_id, 30)["runtimeStatus"])
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert outcomes == ["Completed"] * 5


def test_a_worker_process_killed_mid_activity_is_replaced_and_the_retry_runs(tmp_path: Path) -> None:
    """A worker killed by the OS (OOM, a segfault in a native library) fails only the activity it
    ran, with the host's reason; the pool is rebuilt, so the retry and later activities run."""
    ref = f"{Path(__file__).resolve().parent / 'apps' / 'crash_app.py'}:app"
    marker = tmp_path / "died"
    with LocalRuntime(ref, db_path=tmp_path / "k.sqlite", port=0, activity_pool="process",
                      max_activity_workers=2) as rt:
        instance_id = rt.start_new("die_then_retry", str(marker))
        status = rt.wait_for(instance_id, 60)
        history = rt.get_status(instance_id, show_history=True)["historyEvents"]
    assert marker.exists()
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"]["first"].startswith("survived in ")
    assert [r["index"] for r in status["output"]["after"]] == [0, 1, 2, 3]
    failed = [e for e in history if e["EventType"] == "TaskFailed"]
    assert len(failed) == 1 and "Activity host failure" in failed[0]["Reason"], failed
