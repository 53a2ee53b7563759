"""The embedded host's /files mounts serve local directories the way Blob storage serves blobs:
byte ranges, ETags and conditional requests, CORS for browsers, and nothing hidden or outside."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from local_files import mirrored_mounts
from local_runtime import LocalRuntime


def fetch(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), _headers(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), _headers(err.headers)


def _headers(message) -> dict:
    """Header names in their canonical case (the server sends ``Etag``)."""
    return {"-".join(w.capitalize() for w in k.split("-")).replace("Etag", "ETag"): v for k, v in message.items()}


@pytest.fixture
def served(tmp_path):
    import conformance_app

    root = tmp_path / "local"
    (root / "storage" / "cogs" / "a").mkdir(parents=True)
    (root / "storage" / ".meta").mkdir()
    (root / "catalog").mkdir()
    blob = bytes(range(256)) * 40
    (root / "storage" / "cogs" / "a" / "x.tif").write_bytes(blob)
    (root / "storage" / ".meta" / "secret.json").write_text("{}")
    (root / "catalog" / "catalog.json").write_text('{"type": "Catalog"}')
    (tmp_path / "outside.txt").write_text("SENTINEL-CONTENT")
    mounts = mirrored_mounts({"storage": root / "storage", "catalog": root / "catalog"})
    assert sorted(mounts) == ["/files/catalog", "/files/storage"]
    with LocalRuntime(conformance_app.app, db_path=tmp_path / "hub.sqlite", port=0, files=mounts) as rt:
        yield rt.base_url, blob


def test_files_are_served_with_ranges_etags_and_cors(served):
    base, blob = served
    code, body, headers = fetch(f"{base}/files/storage/cogs/a/x.tif")
    assert code == 200 and body == blob
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Accept-Ranges"] == "bytes"
    etag = headers["ETag"]
    code, body, headers = fetch(f"{base}/files/storage/cogs/a/x.tif", headers={"Range": "bytes=100-355",
                                                                              "Origin": "http://other"})
    assert code == 206 and body == blob[100:356]
    assert headers["Content-Range"] == f"bytes 100-355/{len(blob)}"
    assert headers["Access-Control-Allow-Origin"] == "*"
    code, body, _ = fetch(f"{base}/files/storage/cogs/a/x.tif", headers={"If-None-Match": etag})
    assert code == 304 and body == b""
    code, body, headers = fetch(f"{base}/files/storage/cogs/a/x.tif", method="HEAD")
    assert code == 200 and int(headers["Content-Length"]) == len(blob)
    code, _, headers = fetch(f"{base}/files/storage/cogs/a/x.tif", method="OPTIONS",
                             headers={"Origin": "http://other", "Access-Control-Request-Headers": "range"})
    assert code == 204 and "Range" in headers["Access-Control-Allow-Headers"]
    code, body, _ = fetch(f"{base}/files/catalog/catalog.json")
    assert code == 200 and b"Catalog" in body


def test_nothing_hidden_or_outside_is_served(served):
    base, _ = served
    for path in ("/files/storage/.meta/secret.json", "/files/storage/cogs/a/../../.meta/secret.json",
                 "/files/storage/%2e%2e/%2e%2e/outside.txt", "/files/storage/cogs/a%2f..%2f..%2f..%2foutside.txt",
                 "/files/storage/cogs", "/files/storage/", "/files/storage/missing.tif"):
        code, body, _ = fetch(f"{base}{path}")
        assert code == 404 and b"SENTINEL-CONTENT" not in body and body, (path, code, body)


def test_files_need_a_key_when_keys_are_configured(tmp_path):
    import conformance_app

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    with LocalRuntime(conformance_app.app, db_path=tmp_path / "hub.sqlite", port=0,
                      files={"/files/d": tmp_path / "d"}, function_keys={"default": "k" * 20}) as rt:
        assert fetch(f"{rt.base_url}/files/d/f.txt")[0] == 401
        assert fetch(f"{rt.base_url}/files/d/f.txt", headers={"x-functions-key": "k" * 20})[0] == 200
