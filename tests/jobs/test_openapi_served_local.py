"""The served app holds to its OpenAPI document on the embedded defaults (local storage, the static
catalog), as ``make serve`` runs it: Schemathesis finds no server error and no answer off the
document; and the API's page (Swagger UI from npm, served by the app) shows every operation in
Debian's Chromium with nothing loaded from outside this machine (screenshot kept in
``.local/artifacts/openapi/``)."""
from __future__ import annotations

import shutil
import time

import pytest

import cli
import openapi
from consumers import Browser, artifacts_root
from dashboard_checks import KEY, call
from local_runtime import LocalRuntime
from models import OPERATIONS
from openapi_fuzz import fuzz, keep_report, served_document


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("openapi-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work")}
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN", "RMH_STAC_SCHEMA_DIR",
                    "RMH_STATIC_CATALOG_CONTAINER", "RMH_ASSET_BASE_URL", "RMH_TILER_URL"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def served(service_env, store, tmp_path_factory):
    import function_app
    from settings import get_settings

    store.create_container("rasters")
    with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("openapi-local-hub") / "hub.sqlite",
                      port=0, function_keys={"default": KEY}, files=cli.local_mounts(get_settings())) as runtime:
        yield runtime.base_url


def test_the_app_serves_its_generated_document(served):
    assert served_document(served) == openapi.document()


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(served):
    started = time.monotonic()
    report = fuzz(served, KEY)
    seconds = time.monotonic() - started
    keep_report(report, "local-static")
    assert report["operations"] >= 25 and report["calls"] >= 150, report
    assert not report["failures"], "\n\n".join(f"{label}: {failure}" for label, failure in report["failures"][:10])
    assert not any(status >= 500 for _, status in report["statuses"]), report["statuses"]
    assert seconds < 180, f"the bounded run took {seconds:.0f} s"


def test_the_api_page_shows_every_operation_offline(served):
    code, page, headers = call(f"{served}/api/docs")
    assert code == 200 and headers["Content-Type"].startswith("text/html") and b"swagger-ui" in page
    shots = artifacts_root() / "openapi"
    shots.mkdir(parents=True, exist_ok=True)
    driver = Browser(log_dir=shots / "browser").start()
    try:
        with driver.page(f"{served}/api/docs", wait=[{"text": "Start a sync_container job"}, {"idle": True}]) as page:
            page.screenshot(shots / "api-docs.png")
            text = page.text()
            for name in OPERATIONS:
                assert f"/api/jobs/{name}" in text, name
            for route in ("/api/previews/", "/api/footprints", "/api/sas/v1/token/", "/api/health"):
                assert route in text, route
            log = page.log()
            assert not log["blocked"] and not log["errors"], (log["blocked"], log["errors"])
            assert all(status == 200 for url, status in log["requests"] if "/api/" in url), log["requests"]
    finally:
        driver.stop()
    shutil.rmtree(shots / "browser", ignore_errors=True)
