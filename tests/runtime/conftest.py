"""Fixtures for the embedded Durable runtime tests.

Every test fails automatically if the SDK's desynchronisation warning
("Potential duplicate Task completion") is logged by any thread.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
for path in (str(ROOT), str(APPS)):
    if path not in sys.path:
        sys.path.insert(0, path)

from local_runtime import LocalRuntime  # noqa: E402

DESYNC_WARNING = "Potential duplicate Task completion"


class _Recorder(logging.Handler):
    """Keeps every record at WARNING or above, from any thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_desync_warning() -> Iterator[None]:
    """Fail the test if the SDK reported a duplicate task completion."""
    recorder = _Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        root.removeHandler(recorder)
        logging.captureWarnings(False)
    desync = [r.getMessage() for r in recorder.records if DESYNC_WARNING in r.getMessage()]
    assert not desync, f"SDK desynchronised ({len(desync)} warnings): {desync[:5]}"


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRuntime]:
    """A started runtime over the conformance app, on a fresh task hub and a free port."""
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    with LocalRuntime(conformance_app.app, db_path=tmp_path / "hub.sqlite", port=0) as rt:
        yield rt
