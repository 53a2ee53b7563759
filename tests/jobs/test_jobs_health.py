"""``GET /api/health`` as a load balancer sees it: anonymous, up or down and nothing else. With the
catalog unreachable (a pgSTAC DSN naming a port nothing listens on) it answers 503
``{"status": "down"}`` to anyone, and says which part is down only behind the function key."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from local_runtime import LocalRuntime
from services import free_port

KEY = "health-test-key"


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("health-down")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "pgstac",
           "RMH_PGSTAC_DSN": f"postgresql://nobody:secret-pw@127.0.0.1:{free_port()}/nothing?connect_timeout=2",
           "RMH_TEMP_DIR": str(root / "work"), "RMH_OUTAGE_SECONDS": "1"}
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_STAC_SCHEMA_DIR"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def keyed(service_env, tmp_path_factory):
    import function_app

    db = tmp_path_factory.mktemp("health-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY}) as runtime:
        yield runtime.base_url


def get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"x-functions-key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_a_catalog_that_is_down_is_503_down_and_nothing_more(keyed):
    started = time.monotonic()
    code, body = get(f"{keyed}/api/health")
    assert code == 503 and body == {"status": "down"}, body
    first = time.monotonic() - started
    started = time.monotonic()
    assert get(f"{keyed}/api/health") == (503, {"status": "down"})
    assert time.monotonic() - started < 12.0, "a check waits at most HEALTH_TIMEOUT_SECONDS"
    code, body = get(f"{keyed}/api/health/details", KEY)
    assert code == 503 and body["status"] == "down" and body["catalog"]["ok"] is False, body
    assert body["storage"]["ok"] and body["runtime"]["ok"], body
    assert "secret-pw" not in json.dumps(body), "the DSN's password never reaches an answer"
    print(f"first anonymous probe with the catalog down: {first:.1f}s")
