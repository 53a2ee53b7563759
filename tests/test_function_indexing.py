"""What the Functions Python worker does at start-up: import function_app, call app.get_functions()
and serialise every function's bindings. Run in a fresh interpreter, as the worker does, because
get_functions() may be called only once per app object."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

INDEX_SCRIPT = """
import json, function_app
out = {}
for fn in function_app.app.get_functions():
    trigger = fn.get_trigger()
    out[fn.get_function_name()] = {
        "trigger": trigger.type,
        "bindings": [json.loads(b) for b in fn.get_raw_bindings()],
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def indexed():
    proc = subprocess.run([sys.executable, "-c", INDEX_SCRIPT], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _binding(functions, name, btype):
    return next(b for b in functions[name]["bindings"] if b["type"] == btype)


def test_every_function_is_indexed_with_its_trigger(indexed):
    expected = {
        "submit_job": "httpTrigger",
        "get_job": "httpTrigger",
        "hello_world": "orchestrationTrigger",
        "say_hello": "activityTrigger",
        "job_metrics": "entityTrigger",
    }
    assert {name: f["trigger"] for name, f in indexed.items() if name in expected} == expected


def test_http_routes_methods_auth_and_client_binding(indexed):
    submit = _binding(indexed, "submit_job", "httpTrigger")
    assert submit["route"] == "jobs/{operation}" and submit["methods"] == ["POST"]
    assert submit["authLevel"] == "FUNCTION"
    get = _binding(indexed, "get_job", "httpTrigger")
    assert get["route"] == "jobs/{instance_id}" and get["methods"] == ["GET"]
    for name in ("submit_job", "get_job"):
        client = _binding(indexed, name, "durableClient")
        assert client["direction"] == "IN" and client["name"] == "client"
        assert _binding(indexed, name, "http")["direction"] == "OUT"


def test_durable_triggers_bind_their_parameters(indexed):
    assert _binding(indexed, "hello_world", "orchestrationTrigger")["name"] == "context"
    assert _binding(indexed, "say_hello", "activityTrigger")["name"] == "payload"
    assert _binding(indexed, "job_metrics", "entityTrigger")["name"] == "context"


def test_every_http_trigger_has_a_route(indexed):
    for name, function in indexed.items():
        if function["trigger"] == "httpTrigger":
            assert _binding(indexed, name, "httpTrigger").get("route"), name
