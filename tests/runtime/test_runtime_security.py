"""The runtime's own routes under hostile or careless clients: the RPC endpoints on their own
loopback listener, the management webhooks behind the system/master key, no key handed to a
caller that presented none, empty keys refused, bounded bodies, and no 500 or empty-bodied
error for anything a client can send (a fuzz pass)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import documented_app
import local_runtime
from local_runtime import LocalRuntime
from web import call

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
HOOK = "/runtime/webhooks/durabletask"
KEYS = {"function_keys": {"default": "fkey-123"}, "master_key": "mkey-456"}


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[LocalRuntime]:
    documented_app.STATE.clear()
    with LocalRuntime(documented_app.app, db_path=tmp_path / "k.sqlite", port=0, **KEYS) as rt:
        yield rt


def secrets_of(rt: LocalRuntime) -> list[str]:
    return ["fkey-123", "mkey-456", str(rt.system_key)]


def test_rpc_endpoints_live_on_their_own_loopback_listener(keyed: LocalRuntime) -> None:
    binding = json.loads(keyed.durable_client_binding())
    assert binding["rpcBaseUrl"] == f"{keyed.rpc_url}/durabletask/"
    assert keyed.rpc_url.startswith("http://127.0.0.1:") and keyed.rpc_url != keyed.base_url
    assert keyed._runners[1].addresses[0][0] == "127.0.0.1"
    instance_id = keyed.start_new("E1_HelloSequence")
    keyed.wait_for(instance_id, 10)
    rpc = call("GET", f"{keyed.rpc_url}/durabletask/instances/{instance_id}")
    assert rpc.status == 200 and rpc.body["runtimeStatus"] == "Completed"
    public = f"{keyed.base_url}/durabletask/instances/{instance_id}"
    assert call("GET", public).status == 401
    assert call("GET", public, headers={"x-functions-key": "fkey-123"}).status == 404
    assert call("GET", f"{public}?code=mkey-456").status == 404
    started = call("POST", f"{keyed.rpc_url}/durabletask/orchestrators/E1_HelloSequence")
    assert started.status == 202
    assert not any(secret in started.text for secret in secrets_of(keyed))


def test_management_webhooks_need_the_system_or_master_key(keyed: LocalRuntime) -> None:
    url = f"{keyed.base_url}{HOOK}/instances"
    assert call("GET", url).status == 401
    assert call("GET", url, headers={"x-functions-key": "fkey-123"}).status == 401
    assert call("GET", f"{url}?code=fkey-123").status == 401
    assert call("GET", f"{url}?code=wrong").status == 401
    assert call("GET", f"{url}?code=mkey-456").status == 200
    assert call("GET", url, headers={"x-functions-key": str(keyed.system_key)}).status == 200
    denied = call("POST", f"{keyed.base_url}{HOOK}/orchestrators/E1_HelloSequence")
    assert denied.status == 401 and denied.body["Message"]
    assert not any(secret in denied.text for secret in secrets_of(keyed))


def test_keys_are_handed_only_to_callers_that_presented_one(keyed: LocalRuntime) -> None:
    start = f"{keyed.base_url}/api/orchestrators/E1_HelloSequence"
    anonymous = call("POST", start)
    assert anonymous.status == 202
    assert "code=" not in anonymous.text
    assert not any(secret in anonymous.text for secret in secrets_of(keyed))
    assert call("GET", anonymous.body["statusQueryGetUri"]).status == 401
    with_key = call("POST", start, headers={"x-functions-key": "fkey-123"})
    assert with_key.status == 202
    assert f"code={keyed.system_key}" in with_key.body["statusQueryGetUri"]
    assert "fkey-123" not in with_key.text and "mkey-456" not in with_key.text
    assert call("GET", with_key.body["statusQueryGetUri"]).status in (200, 202)
    hooked = call("POST", f"{keyed.base_url}{HOOK}/orchestrators/E1_HelloSequence?code=mkey-456")
    assert hooked.status == 202 and "mkey-456" not in hooked.text


@pytest.mark.parametrize("keys", [{"function_keys": {"default": ""}},
                                  {"function_keys": {"default": "   "}},
                                  {"master_key": ""}, {"system_key": ""}])
def test_empty_keys_are_refused(tmp_path: Path, keys: dict) -> None:
    with pytest.raises(local_runtime.RuntimeConfigError, match="empty"):
        LocalRuntime(documented_app.app, db_path=tmp_path / "e.sqlite", port=0, **keys)


def test_serve_refuses_an_empty_function_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "local_runtime.py"), "serve", "--app",
         f"{APPS / 'crash_app.py'}:app", "--db", str(tmp_path / "s.sqlite"), "--port", "0",
         "--function-key", "default="],
        cwd=str(ROOT), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "function key 'default' is empty" in result.stderr
    assert "listening on" not in result.stdout


def test_request_bodies_are_bounded(tmp_path: Path) -> None:
    with LocalRuntime(documented_app.app, db_path=tmp_path / "b.sqlite", port=0) as rt:
        big = call("POST", f"{rt.base_url}/api/orchestrators/E1_HelloSequence",
                   data=b"[" + b"1," * (600 * 1024) + b"1]")
        assert big.status == 413 and "1048576" in big.text
        hooked = call("POST", f"{rt.base_url}{HOOK}/orchestrators/E1_HelloSequence",
                      data=b'"' + b"x" * (2 * 1024 ** 2) + b'"')
        assert hooked.status == 413 and "1048576" in hooked.text
    with LocalRuntime(documented_app.app, db_path=tmp_path / "c.sqlite", port=0,
                      max_request_body=1000) as rt:
        small = call("POST", f"{rt.base_url}{HOOK}/orchestrators/E1_HelloSequence",
                     data=json.dumps("y" * 2000).encode())
        assert small.status == 413 and "1000" in small.text


def test_nested_json_odd_ids_and_odd_queries(keyed: LocalRuntime) -> None:
    hook = f"{keyed.base_url}{HOOK}"
    key = {"x-functions-key": "mkey-456"}
    for depth in (65, 5000, 200000):
        reply = call("POST", f"{hook}/orchestrators/E1_HelloSequence",
                     data=b"[" * depth + b"]" * depth, headers=key)
        assert reply.status == 400 and "nested deeper than 64" in reply.body["Message"]
    assert call("POST", f"{hook}/orchestrators/E1_HelloSequence", data=b"[" * 64 + b"]" * 64,
                headers=key).status == 202
    for path in ("a%2fb", "a%2Fb", "%2f", "a%5Cb", "..%2f..", "%00", "x" * 300):
        reply = call("GET", f"{hook}/instances/{path}", headers=key)
        assert reply.status == 404 and reply.body["Message"], (path, reply)
        started = call("POST", f"{hook}/orchestrators/E1_HelloSequence/{path}", headers=key)
        assert started.status in (400, 404) and started.body["Message"], (path, started)
    odd = ("top=99999999999999999999&createdTimeFrom=" + "9" * 5000
           + "&runtimeStatus=" + ",".join(["Nope"] * 200) + "&showInput=maybe")
    assert call("GET", f"{hook}/instances?{odd}", headers=key).status == 200
    assert call("GET", f"{hook}/instances", headers={**key, "x-ms-continuation-token": "@@"}
                ).status == 400
    assert call("DELETE", f"{hook}/instances?createdTimeFrom=-1e999", headers=key).status == 400
    for method in ("PUT", "PATCH"):
        reply = call(method, f"{hook}/instances/abc", headers=key)
        assert reply.status == 404 and reply.body["Message"]


FUZZ_PATHS = [
    "/orchestrators/{name}", "/orchestrators/{name}/{id}", "/instances", "/instances/",
    "/instances/{id}", "/instances/{id}/{op}", "/instances/{id}/raiseEvent/{name}",
    "/entities/{name}", "/entities/{name}/{id}", "/{name}",
]
FUZZ_VALUES = ["E1_HelloSequence", "Counter", "x", "", "%2f", "%00", "%ff%fe", "a" * 3000,
               "terminate", "rewind", "restart", "suspend", "resume", "$", "..", "%3F%23",
               "-1", "1e309", "NaN", "%C3%A9t%C3%A9", "%E9"]
FUZZ_QUERY = ["top", "createdTimeFrom", "createdTimeTo", "runtimeStatus", "showHistory",
              "showInput", "showHistoryOutput", "reason", "op", "timeout", "pollingInterval",
              "restartWithNewInstanceId", "returnInternalServerErrorOnFailure", "fetchState",
              "lastOperationTimeFrom", "instanceIdPrefix"]


def fuzz_body(rnd: random.Random) -> bytes | None:
    kind = rnd.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
    if kind == 2:
        depth = rnd.choice([10, 63, 65, 3000])
        return (b"{\"a\":" * depth) + b"1" + b"}" * depth
    if kind == 3:
        return str(rnd.choice([10 ** 400, -(10 ** 30), 1.5e308])).encode()
    if kind == 4:
        return json.dumps(rnd.choice([[], {}, "", None, True, [1, "x", None],
                                      {"input": {"deep": [1] * 50}}])).encode()
    if kind == 5:
        return b'"' + b"\\u" + b'"'
    if kind == 6:
        return b"[" * rnd.randrange(1, 100)
    return rnd.choice([b"null", b"0", b"\"text\"", b"{}"])


def test_fuzz_pass_finds_no_500_and_no_empty_error(keyed: LocalRuntime) -> None:
    rnd = random.Random(1307)
    targets = [(keyed.base_url + HOOK, {"x-functions-key": "mkey-456"}),
               (keyed.base_url + HOOK, {}), (keyed.rpc_url + "/durabletask", {}),
               (keyed.base_url + "/durabletask", {})]
    instance = keyed.start_new("E1_HelloSequence")
    keyed.wait_for(instance, 10)
    seen: set[int] = set()
    for _ in range(600):
        base, headers = rnd.choice(targets)
        path = rnd.choice(FUZZ_PATHS)
        for slot in ("{name}", "{id}", "{op}"):
            path = path.replace(slot, rnd.choice(FUZZ_VALUES + [instance]))
        query = "&".join(f"{rnd.choice(FUZZ_QUERY)}={rnd.choice(FUZZ_VALUES)}"
                         for _ in range(rnd.randrange(4)))
        method = rnd.choice(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"])
        content_type = rnd.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])
        data = fuzz_body(rnd)
        reply = call(method, f"{base}{path}{'?' + query if query else ''}", data=data,
                     headers={**headers, "Content-Type": content_type})
        seen.add(reply.status)
        assert reply.status != 500 and reply.status < 502, (method, path, query, data, reply)
        if reply.status >= 400 and method != "HEAD":
            assert reply.text.strip(), (method, path, query, reply)
    assert {200, 202, 400, 401, 404} <= seen
