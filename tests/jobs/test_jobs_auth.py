"""Function-key auth on the job API, anonymous health: what a deployment with keys enforces."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from local_runtime import LocalRuntime


def call(method, url, headers=None, body=None):
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def keyed(service_env, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("keyed") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": "s3cret"}) as runtime:
        yield runtime.base_url


def test_job_routes_need_the_function_key(keyed):
    assert call("POST", f"{keyed}/api/jobs/hello_world", body={"count": 1}) == 401
    assert call("GET", f"{keyed}/api/jobs") == 401
    assert call("GET", f"{keyed}/api/metrics", {"x-functions-key": "wrong"}) == 401
    assert call("POST", f"{keyed}/api/jobs/hello_world", {"x-functions-key": "s3cret"}, {"count": 1}) == 202
    assert call("GET", f"{keyed}/api/jobs?code=s3cret") == 200
    assert call("GET", f"{keyed}/api/lifecycle") == 401
    assert call("GET", f"{keyed}/api/lifecycle", {"x-functions-key": "s3cret"}) == 200


def body_of(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_health_is_anonymous_and_says_up_or_down_only(keyed):
    code, body = body_of(f"{keyed}/api/health")
    assert code == 200 and body == {"status": "up"}, body  # no backend, container, version or count
    assert call("GET", f"{keyed}/api/health/details") == 401
    assert call("GET", f"{keyed}/api/health/details", {"x-functions-key": "wrong"}) == 401
    code, body = body_of(f"{keyed}/api/health/details", {"x-functions-key": "s3cret"})
    assert code == 200 and body["status"] == "up", body
    assert body["storage"]["input_container"] == "rasters" and body["catalog"]["items"] >= 0, body
