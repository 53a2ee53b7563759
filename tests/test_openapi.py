"""The OpenAPI document (``openapi.py``) is valid OpenAPI 3.1, covers every route the app registers
(and no other), says for every operation what its request model says (fields, defaults, limits),
lists the error answers, and agrees with ``cli.py --help`` and the README. Serving it and holding
the running app to it (Schemathesis) is ``tests/jobs/test_openapi_served*.py``."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from pydantic.json_schema import SkipJsonSchema

import cli
import function_app
import openapi
from models import OPERATIONS

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def document():
    return openapi.document()


ROUTES_SCRIPT = """
import json, function_app
routes = []
for function in function_app.app.get_functions():
    trigger = function.get_trigger()
    if trigger.type == "httpTrigger":
        routes += [[str(m.value), trigger.route, str(trigger.auth_level.value).lower()] for m in trigger.methods]
print(json.dumps(routes))
"""


def registered_routes() -> dict[tuple[str, str], str]:
    """(method, route) -> auth level of every HTTP function the app registers (indexed in a fresh
    interpreter: the SDK indexes an app once per process, and a runtime may have done so here)."""
    done = subprocess.run([sys.executable, "-c", ROUTES_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return {(method, route): auth for method, route, auth in json.loads(done.stdout.strip().splitlines()[-1])}


def documented(document) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def caller_fields(model) -> set[str]:
    """The fields a caller may send: all but those the service sets itself (``SkipJsonSchema``,
    e.g. ``requested_by``, which a request naming is refused)."""
    return {name for name, info in model.model_fields.items()
            if not any(isinstance(m, SkipJsonSchema) for m in info.metadata)}


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_the_app_registers_is_documented_and_nothing_else(document):
    expected = set()
    for (method, route), auth in registered_routes().items():
        if route == "jobs/{operation}":
            expected |= {(method, f"/api/jobs/{name}") for name in OPERATIONS}
        else:
            expected.add((method, openapi.api_path(route)))
        documented_auth = next(r.auth for r in openapi.ROUTES if r.route == route and r.method == method)
        assert (documented_auth == "function") == (auth == "function"), (route, auth, documented_auth)
    assert documented(document) == expected
    assert len(expected) >= 25


def test_every_operation_has_its_request_models_fields_defaults_and_limits(document):
    schemas = document["components"]["schemas"]
    for name, model in OPERATIONS.items():
        post = document["paths"][f"/api/jobs/{name}"]["post"]
        schema = schemas[post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert set(schema["properties"]) == {*caller_fields(model), "rerun"}, name
        assert schema["additionalProperties"] is False, "unknown fields are refused (400)"
        for field, info in model.model_fields.items():
            if field in caller_fields(model) and not info.is_required():
                assert schema["properties"][field].get("default") == info.default, (name, field)
        assert set(schema.get("required", [])) == {f for f, i in model.model_fields.items() if i.is_required()}
        assert {"202", "200", "400", "404", "409", "413", "401"} <= set(post["responses"]), name
    hello = schemas["HelloWorldRequest"]["properties"]["count"]
    assert (hello["minimum"], hello["maximum"], hello["default"]) == (1, 1000, 3)
    conversion = schemas["CogConversionRequest"]["properties"]
    assert conversion["blobs"]["anyOf"][0]["maxItems"] == 10000
    assert "lerc" in conversion["profile"]["enum"] and conversion["profile"]["default"] == "deflate"


def test_error_answers_are_documented_with_their_shape(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and status != "401":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema["$ref"].endswith(("ErrorAnswer", "AlreadyRunning", "Health", "HealthStatus")), (path, status)
            if operation["security"]:
                assert "401" in operation["responses"], (path, method)
    assert document["components"]["schemas"]["ErrorAnswer"]["required"] == ["error"]


def test_the_documented_id_pattern_is_the_apps_less_the_dot_segments():
    for candidate in ("sync_container-rasters", "cog_conversion-1a2b3c4d5e6f:chunk-00001", "a.b", "x" * 256):
        assert function_app.JOB_ID.match(candidate) and re.match(openapi.JOB_ID_PATTERN, candidate), candidate
    for candidate in ("", "x" * 257, "a/b", "a b", "é"):
        assert not function_app.JOB_ID.match(candidate) and not re.match(openapi.JOB_ID_PATTERN, candidate)
    assert not re.match(openapi.JOB_ID_PATTERN, "..") and not re.match(openapi.JOB_ID_PATTERN, ".")


def _help_fields(help_text: str) -> dict[str, dict[str, str]]:
    """``cli.py --help``'s operations: operation -> field -> its note (required, optional, default X)."""
    fields: dict[str, dict[str, str]] = {}
    current = None
    for line in help_text.splitlines():
        op = re.match(r"^  (\w+): ", line)
        field = re.match(r"^      (\w+): (\S+) \((.+)\)$", line)
        if op and op.group(1) in OPERATIONS:
            current = op.group(1)
            fields[current] = {}
        elif field and current:
            fields[current][field.group(1)] = field.group(3)
    return fields


def test_cli_help_lists_what_the_document_says_of_each_operation(document):
    listed = _help_fields(cli.operations_help())
    schemas = document["components"]["schemas"]
    assert set(listed) == set(OPERATIONS)
    for name in OPERATIONS:
        post = document["paths"][f"/api/jobs/{name}"]["post"]
        schema = schemas[post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        properties = {k: v for k, v in schema["properties"].items() if k != "rerun"}
        assert set(listed[name]) == set(properties), name
        for field, prop in properties.items():
            note = listed[name][field]
            if field in schema.get("required", []):
                assert note == "required", (name, field)
            elif prop.get("default") is None:
                assert note == "optional", (name, field, note)
            else:
                assert note.startswith("default ") and str(prop["default"]).lower() in note.lower(), (name, field, note)


def test_the_readme_lists_every_documented_route_and_operation_field(document):
    readme = (REPO_ROOT / "README.md").read_text()
    normalise = lambda path: re.sub(r"\{[^}]*\}", "{}", path)  # noqa: E731
    listed_routes = {normalise(m.group(1)) for m in re.finditer(r"`(?:GET|POST) (/api/[^`?]+)", readme)}
    for method, path in documented(document):
        if path.startswith("/api/jobs/") and path.removeprefix("/api/jobs/") in OPERATIONS:
            path = "/api/jobs/{operation}"
        assert normalise(path) in listed_routes, f"README's Job API table lacks {method} {path}"
    for name, model in OPERATIONS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"README's operations table lacks {name}"
        fields_column = row.split("|")[2]
        named = set(re.findall(r"`(\w+)`", fields_column))
        assert caller_fields(model) <= named, (name, caller_fields(model) - named)
