"""Fixtures that run the catalog's real consumers on 127.0.0.1 (see tests/consumers.py).

Servers against the module's pgSTAC database (``pgstac_dsn``):
- ``stac_api``: stac-fastapi-pgstac; its extra environment is ``stac_api_env`` ({} by default).
- ``titiler``: titiler-pgstac with ``titiler_env`` (``consumers.TITILER_ENV`` by default) on top
  of its database URL. Parametrize it to test what a user sets, e.g. ``@pytest.mark.parametrize(
  "titiler_env", [{**TITILER_ENV, **titiler_azure_env(conn, alternate_key="vsiaz")}], indirect=True)``,
  or start more configurations in one module with ``consumer_servers.titiler(dsn, env)``.
- ``stac_browser``: STAC Browser on the ``stac_api``; ``stac_browser_for(catalog_url, **options)``
  serves it for any catalog (a STAC API root or a static ``catalog.json`` over HTTP).
- ``browser``: headless Chromium for the session; ``artifact_dir``: where a test keeps its
  screenshots (``.local/artifacts/consumers/<test>/``, or under ``RMH_TEST_ARTIFACTS``).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from consumers import TITILER_ENV, Browser, StacApi, StacBrowser, TiTiler, artifacts_root

class ConsumerServers:
    """Starts consumer servers and stops every one it started at the end of the module."""

    def __init__(self) -> None:
        self.started = []

    def _start(self, server):
        self.started.append(server)
        return server.start()

    def stac_api(self, dsn: str, env: dict[str, str] | None = None):
        return self._start(StacApi(dsn, env))

    def titiler(self, dsn: str, env: dict[str, str] | None = None):
        return self._start(TiTiler(dsn, env))

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.cleanup()


@pytest.fixture(scope="module")
def consumer_servers():
    servers = ConsumerServers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="module")
def stac_api_env(request) -> dict[str, str]:
    return dict(getattr(request, "param", {}))


@pytest.fixture(scope="module")
def stac_api(consumer_servers, pgstac_dsn, stac_api_env):
    """stac-fastapi-pgstac on the module's pgSTAC database; ``.url``, ``.get_json(path)``."""
    return consumer_servers.stac_api(pgstac_dsn, stac_api_env)


@pytest.fixture(scope="module")
def titiler_env(request) -> dict[str, str]:
    return dict(getattr(request, "param", TITILER_ENV))


@pytest.fixture(scope="module")
def titiler(consumer_servers, pgstac_dsn, titiler_env):
    """titiler-pgstac on the module's pgSTAC database with ``titiler_env``; ``.url``, ``.get(path)``."""
    return consumer_servers.titiler(pgstac_dsn, titiler_env)


@pytest.fixture(scope="module")
def stac_browser_for():
    """Factory: ``stac_browser_for(catalog_url, **options)`` -> a started ``StacBrowser``."""
    started: list[StacBrowser] = []

    def start(catalog_url: str, **options) -> StacBrowser:
        config = {"catalogUrl": catalog_url, "catalogTitle": "rmhgeoapi", "locale": "en",
                  "detectLocaleFromBrowser": False, "storeLocale": False, **options}
        site = StacBrowser(config).start()
        started.append(site)
        return site

    try:
        yield start
    finally:
        for site in started:
            site.stop()


@pytest.fixture(scope="module")
def stac_browser(stac_browser_for, stac_api):
    """STAC Browser whose catalog is the ``stac_api`` landing page."""
    return stac_browser_for(stac_api.url + "/")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's) through playwright-core, for the whole session."""
    driver = Browser(log_dir=artifacts_root() / "consumers").start()
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture
def artifact_dir(request) -> Path:
    """A fresh directory for this test's screenshots, kept after the run."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:120]
    path = artifacts_root() / "consumers" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    path = artifacts_root() / "consumers"
    if path.is_dir() and any(path.iterdir()):
        terminalreporter.write_line(f"consumer screenshots and tiles: {path}")
