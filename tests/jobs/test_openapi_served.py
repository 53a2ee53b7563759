"""The served app holds to its OpenAPI document on Azurite + pgSTAC: ``GET /api/openapi.json`` is
the generated document, and Schemathesis calls every operation with requests generated from it
(a bounded run): no server error, and every answer's status, content type, headers and body as
the document says."""
from __future__ import annotations

import time

import pytest

import openapi
from dashboard_checks import KEY
from local_runtime import LocalRuntime
from openapi_fuzz import fuzz, keep_report, served_document

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def keyed(service_env, store, tmp_path_factory):
    import function_app

    store.create_container("rasters")
    with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("openapi") / "hub.sqlite", port=0,
                      function_keys={"default": KEY}) as runtime:
        yield runtime.base_url


def test_the_app_serves_its_generated_document(keyed):
    assert served_document(keyed) == openapi.document()


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(keyed):
    started = time.monotonic()
    report = fuzz(keyed, KEY)
    seconds = time.monotonic() - started
    keep_report(report, "azurite-pgstac")
    assert report["operations"] >= 25 and report["calls"] >= 150, report
    assert not report["failures"], "\n\n".join(f"{label}: {failure}" for label, failure in report["failures"][:10])
    assert not any(status >= 500 for _, status in report["statuses"]), report["statuses"]
    assert seconds < 180, f"the bounded run took {seconds:.0f} s"
