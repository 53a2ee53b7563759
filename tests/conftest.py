"""Shared fixtures: repository paths and the real-world rasters from ../shared/rasters."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def _shared_dir(name: str, env: str) -> Path:
    """``../shared/<name>`` beside the clone (or ``$env``). Users who cloned without ``../shared``
    get a skip; in CI (``CI`` set) its absence is a failure."""
    path = Path(os.environ.get(env) or REPO_ROOT.parent / "shared" / name)
    if not path.is_dir():
        message = f"{path} not found (set {env})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_rasters() -> Path:
    """The real-world test rasters (``../shared/rasters``)."""
    return _shared_dir("rasters", "RMHGEOAPI_SHARED_RASTERS")


@pytest.fixture(scope="session")
def schema_dir() -> Path:
    """The STAC extension schemas the app ships (``stac_schemas/``) and validates against."""
    import stac_validation

    return stac_validation.BUNDLED_SCHEMA_DIR


@pytest.fixture(scope="session")
def validator():
    """A validator of items and collections against core and extension schemas, offline (the
    app's own: pystac's core schemas and the shipped extension schemas)."""
    import stac_validation

    return stac_validation.StacValidator()


@pytest.fixture(scope="session")
def azurite_connection_string():
    """Connection string of a running Azurite: ``AZURITE_CONNECTION_STRING`` or one started here."""
    from services import Azurite

    if os.environ.get("AZURITE_CONNECTION_STRING"):
        yield os.environ["AZURITE_CONNECTION_STRING"]
        return
    azurite = Azurite().start()
    try:
        yield azurite.connection_string
    finally:
        azurite.stop()


@pytest.fixture(scope="session")
def pgstac_server():
    """A PostgreSQL + PostGIS + pgSTAC server started for the session (None when ``PGSTAC_DSN`` is set)."""
    from services import PgStac

    if os.environ.get("PGSTAC_DSN"):
        yield None
        return
    server = PgStac().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pgstac_dsn(pgstac_server, request) -> str:
    """DSN of a fresh pgSTAC database for the test module (or ``PGSTAC_DSN`` when set)."""
    if pgstac_server is None:
        return os.environ["PGSTAC_DSN"]
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.module.__name__)[-50:].lower()
    return pgstac_server.create_database(name)


@pytest.fixture(scope="session")
def azurite_oauth():
    """Azurite over HTTPS with bearer-token auth, for the managed-identity / user delegation SAS path."""
    from services import Azurite

    azurite = Azurite(oauth=True).start()
    try:
        yield azurite
    finally:
        azurite.stop()


_REPORT = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def run_report(request) -> list[str]:
    """Lines a test wants shown at the end of the run (package size, tool timings)."""
    return request.config.stash.setdefault(_REPORT, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_REPORT, [])
    if lines:
        terminalreporter.section("rmhgeoapi report")
        for line in lines:
            terminalreporter.write_line(line)
