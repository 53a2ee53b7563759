"""Small pieces of the HTTP side: route templates, keys, rewind answers."""

from __future__ import annotations

import pytest

import azure.durable_functions as df
import local_http
from local_runtime import LocalRuntime


@pytest.mark.parametrize(("template", "path"), [
    ("jobs/{operation}", "/api/jobs/{operation}"),
    ("items/{id:int}", "/api/items/{id}"),
    ("/files/{*rest}", "/api/files/{rest:.*}"),
    ("things/{name?}", "/api/things/{name}"),
])
def test_route_templates(template: str, path: str) -> None:
    assert local_http.aiohttp_route(template) == path


def test_route_prefix_can_be_empty() -> None:
    assert local_http.aiohttp_route("jobs/{x}", "") == "/jobs/{x}"


def test_key_levels() -> None:
    keys = local_http.Keys.build({"default": "f1"}, "m1")
    assert keys.allows("anonymous", None)
    assert keys.allows("function", "f1") and keys.allows("function", "m1")
    assert not keys.allows("function", "nope") and not keys.allows("function", None)
    assert keys.allows("admin", "m1") and not keys.allows("admin", "f1")
    assert keys.allows("system", "m1") and not keys.allows("system", "f1")
    open_keys = local_http.Keys.build(None, None)
    assert not open_keys.configured and open_keys.allows("admin", None)


def test_rewind_answers(runtime: LocalRuntime) -> None:
    client = df.DurableOrchestrationClient(runtime.durable_client_binding())
    done = runtime.start_new("chaining")
    runtime.wait_for(done, 5)
    with pytest.raises(Exception, match="only supported on failed"):
        runtime.run_coroutine(client.rewind(done, "why"))
    failed = runtime.start_new("failing")
    assert runtime.wait_for(failed, 5)["runtimeStatus"] == "Failed"
    runtime.run_coroutine(client.rewind(failed, "try again"))
    status = runtime.wait_for(failed, 5)
    assert (status["runtimeStatus"], status["output"]) == (
        "Failed", "Orchestrator function 'failing' failed: orchestrator gave up")
    history = runtime.get_status(failed, show_history=True)["historyEvents"]
    assert [e.get("Data") for e in history if e["EventType"] == "GenericEvent"] == [
        "Rewound: try again"]


def test_context_argument_is_injected(runtime: LocalRuntime) -> None:
    import urllib.request

    status = runtime.wait_for(runtime.start_new("context_user"), 5)
    assert status["output"] == "hi from whoami (36)"
    with urllib.request.urlopen(f"{runtime.base_url}/api/whoami") as response:
        assert response.read() == b"whoami_http"
