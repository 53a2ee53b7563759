"""Fixtures for the embedded Durable runtime tests (the desynchronisation check that fails any
test logging "Potential duplicate Task completion" is autouse in tests/conftest.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
for path in (str(ROOT), str(APPS), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from local_runtime import LocalRuntime  # noqa: E402

@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRuntime]:
    """A started runtime over the conformance app, on a fresh task hub and a free port."""
    monkeypatch.setenv("TICK_SCHEDULE", "0 0 0 1 1 *")
    import conformance_app

    with LocalRuntime(conformance_app.app, db_path=tmp_path / "hub.sqlite", port=0) as rt:
        yield rt


@pytest.fixture
def docs(tmp_path: Path) -> Iterator[LocalRuntime]:
    """A started runtime over the documented-patterns app (fresh hub, free ports, 202 polls
    without Retry-After wait 50 ms)."""
    import documented_app

    documented_app.STATE.clear()
    with LocalRuntime(documented_app.app, db_path=tmp_path / "docs.sqlite", port=0,
                      http_poll_ms=50) as rt:
        yield rt
