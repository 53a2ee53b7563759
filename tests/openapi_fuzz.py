"""Schemathesis against a served app (``tests/jobs/test_openapi_served*.py``): every operation of
the document the app serves, called with requests generated from the document (positive data:
what the document allows), each answer checked against the document. Bounded for CI: a fixed
number of examples per operation, no shrinking, derandomised (the same requests every run)."""
from __future__ import annotations

import collections
import json
import urllib.request
from typing import Any

MAX_EXAMPLES = 15


def served_document(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/api/openapi.json", timeout=60) as answer:
        assert answer.headers["Content-Type"].startswith("application/json")
        return json.loads(answer.read())


def fuzz(base_url: str, key: str, *, max_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Run every operation; the calls made, the statuses seen, and every failed check."""
    import hypothesis
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                     response_schema_conformance, status_code_conformance)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, response_headers_conformance]
    schema = schemathesis.openapi.from_dict(served_document(base_url))
    statuses: collections.Counter = collections.Counter()
    failures: list[tuple[str, str]] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                             suppress_health_check=list(hypothesis.HealthCheck))
        def call(case):
            response = case.call(base_url=base_url, headers={"x-functions-key": key}, timeout=120,
                                 allow_redirects=False)
            statuses[(operation.label, response.status_code)] += 1
            try:
                case.validate_response(response, checks=checks)
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - schemathesis raises a group
                found = err.exceptions if isinstance(err, BaseExceptionGroup) else [err]
                failures.extend((operation.label, f"{type(e).__name__}: {e}"[:3000]) for e in found)

        call()
    return {"operations": operations, "calls": sum(statuses.values()), "statuses": statuses, "failures": failures}


def keep_report(report: dict[str, Any], name: str) -> None:
    """The run's calls per operation and status, and its failures, as a test artifact
    (``.local/artifacts/openapi/<name>.json``)."""
    from consumers import artifacts_root

    folder = artifacts_root() / "openapi"
    folder.mkdir(parents=True, exist_ok=True)
    by_operation: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (label, status), count in sorted(report["statuses"].items()):
        by_operation[label][str(status)] = count
    (folder / f"{name}.json").write_text(json.dumps({
        "operations": report["operations"], "calls": report["calls"], "statuses": by_operation,
        "failures": report["failures"]}, indent=1))
