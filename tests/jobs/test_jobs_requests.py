"""What a client can send the job API: bounded bodies and fields, no 500 and no empty body for any
input (a fuzz pass over every route), one job for concurrent identical submissions, and the
small refusals (duplicate blobs, output into the input or system container, unknown filters)."""
from __future__ import annotations

import concurrent.futures
import json
import random
import threading
import urllib.error
import urllib.request

import pytest

import function_app
from function_app import ApiError, MAX_BODY_BYTES, read_json_body


def raw(method: str, url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def answer(method: str, url: str, data: bytes | None = None) -> tuple[int, dict]:
    code, body = raw(method, url, data)
    return code, json.loads(body) if body else {}


def test_oversize_body_is_413_with_the_limit(host):
    body = json.dumps({"container": "rasters", "prefix": "x" * (MAX_BODY_BYTES + 10)}).encode()
    code, text = raw("POST", f"{host.url}/api/jobs/list_container", body)
    assert code == 413 and str(MAX_BODY_BYTES) in text.decode(), (code, text[:200])
    with pytest.raises(ApiError) as err:  # the app's own bound, as on Azure (the host allows 100 MB)
        read_json_body(body)
    assert err.value.status == 413 and str(MAX_BODY_BYTES) in str(err.value)


def test_oversize_fields_are_400_naming_the_field(host):
    cases = {"prefix": {"prefix": "p" * 1025}, "blob": {"blob": "b" * 1025},
             "target_crs": {"blobs": ["a.tif"], "target_crs": "PROJCS[" + "x" * 20000 + "]"}}
    operations = {"prefix": "list_container", "blob": "validate_raster", "target_crs": "cog_conversion"}
    for field, body in cases.items():
        code, reply = answer("POST", f"{host.url}/api/jobs/{operations[field]}", json.dumps(body).encode())
        assert code == 400, (field, code, reply)
        assert field in [p["field"] for p in reply["problems"]], reply


def test_deep_json_and_odd_ids_are_4xx_with_a_message(host):
    deep = ("[" * 5000 + "]" * 5000).encode()
    nested = json.dumps({"container": "rasters", "prefix": ""})[:-1].encode() + b', "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    for body in (deep, nested):
        code, reply = answer("POST", f"{host.url}/api/jobs/list_container", body)
        assert code == 400 and reply["error"], (code, reply)
    for path in ("/api/jobs/a%2fb", "/api/jobs/a%2fb/tasks", "/api/jobs/%00x", "/api/jobs/" + "x" * 300,
                 "/api/jobs/a%2f..%2f..%2fetc/retry"):
        method = "POST" if path.endswith("retry") else "GET"
        code, body = raw(method, f"{host.url}{path}")
        assert 400 <= code < 500 and body, (path, code, body)


def test_unknown_filters_and_bad_containers_are_refused(host, store):
    code, reply = answer("GET", f"{host.url}/api/jobs/hello_world-x/tasks?status=bogus")
    assert code == 400 and "bogus" in reply["error"], reply
    code, reply = answer("POST", f"{host.url}/api/jobs/list_container", b'{"container": "never-made"}')
    assert code == 404 and "never-made" in reply["error"]
    store.create_container("clash")
    for output in ("clash", "rmh-system"):
        code, reply = answer("POST", f"{host.url}/api/jobs/cog_conversion", json.dumps(
            {"container": "clash", "blobs": ["a.tif"], "output_container": output}).encode())
        assert code == 400 and reply["problems"][0]["field"] == "output_container", reply


def test_duplicate_blobs_are_one_file(host, store, tmp_path):
    from raster_factory import write_raster

    store.create_container("dupes")
    store.upload_from_path("dupes", "one.tif", write_raster(tmp_path / "one.tif", width=64, height=64,
                                                            count=1, crs="EPSG:32633"))
    status = host.run("cog_conversion", {"container": "dupes", "blobs": ["one.tif", "one.tif", "one.tif"],
                                         "output_container": "dupes-out", "catalog": False})
    assert status["output"]["total"] == 1 and status["output"]["done"] == 1, status["output"]


def test_twenty_concurrent_identical_submissions_start_one_job(host):
    body = json.dumps({"name": "race", "count": 1000}).encode()
    barrier = threading.Barrier(20)

    def submit(_):
        barrier.wait()
        return answer("POST", f"{host.url}/api/jobs/hello_world", body)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))
    codes = sorted(code for code, _ in answers)
    # Exactly one start; every other answer points at that job: 409 while it runs, or 200 with its
    # result once it has finished (a fast machine can finish 1,000 greetings before the last request).
    assert codes.count(202) == 1 and codes.count(409) + codes.count(200) == 19, codes
    started = next(reply for code, reply in answers if code == 202)
    for code, reply in answers:
        if code == 409:
            assert reply["statusQueryGetUri"] == started["statusQueryGetUri"], reply
        elif code == 200:
            assert reply["instanceId"] == started["id"] and reply["runtimeStatus"] == "Completed", reply
    final = host.follow(started["statusQueryGetUri"] + "&showHistory=true")
    assert final["runtimeStatus"] == "Completed" and len(final["output"]["greetings"]) == 1000
    assert sum(event["EventType"] == "ExecutionStarted" for event in final["historyEvents"]) == 1, \
        "the job was started more than once"


def test_two_concurrent_syncs_of_one_container_start_one(host, store, tmp_path):
    from raster_factory import write_raster

    store.create_container("twosync")
    for i in range(6):
        store.upload_from_path("twosync", f"f{i}.tif", write_raster(tmp_path / f"f{i}.tif", width=64, height=64,
                                                                    count=1, crs="EPSG:32633"))
    bodies = [{"container": "twosync"}, {"container": "twosync", "mode": "incremental"}]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda b: answer("POST", f"{host.url}/api/jobs/sync_container",
                                                 json.dumps(b).encode()), bodies))
    assert sorted(code for code, _ in answers) == [202, 409], answers
    url = next(reply for code, reply in answers if code == 202)["statusQueryGetUri"]
    assert host.follow(url)["output"]["done"] == 6


ROUTES = [("POST", "/api/jobs/{op}"), ("GET", "/api/jobs/{id}"), ("GET", "/api/jobs/{id}/tasks"),
          ("GET", "/api/jobs"), ("POST", "/api/jobs/{id}/retry"), ("POST", "/api/jobs/{id}/terminate"),
          ("GET", "/api/metrics"), ("GET", "/api/health"), ("GET", "/api/dashboard"),
          ("GET", "/api/dashboard/static/{file}"), ("GET", "/api/footprints"), ("GET", "/api/collections"),
          ("GET", "/api/items/{collection}/{id}/assets/{file}"), ("GET", "/api/items/{collection}/{id}/assets/{file}/href"),
          ("GET", "/api/lifecycle")]


def _fuzz_value(rng: random.Random):
    return rng.choice([None, True, -1, 0, 10**30, -10**30, 1e308, "", "x" * rng.randint(1, 3000),
                       "../../etc/passwd", "%2f", "\u0000", "EPSG:4326", [], [1, "a"], {"a": {}},
                       ["a.tif"] * 3, rng.random()])


def _fuzz_body(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if kind == 1:
        return json.dumps(_fuzz_value(rng)).encode()
    fields = ["container", "prefix", "blob", "blobs", "target_crs", "profile", "chunk_size", "count",
              "name", "rerun", "output_container", "tile_size", "datetime", "mode", "dry_run", "bogus",
              "collection", "items", "reason", "requested_by", "draft"]
    return json.dumps({f: _fuzz_value(rng) for f in rng.sample(fields, rng.randint(1, 6))}).encode()


def _fuzz_path(rng: random.Random, template: str) -> str:
    # (unpublish is not fuzzed here: a valid random request would remove outputs other modules wrote
    # in the session's Azurite; tests/unpublish_checks.py holds its requests to 400s and 404s)
    op = rng.choice(["hello_world", "list_container", "cog_conversion", "sync_container", "publish", "revoke",
                     "nope", "%2e%2e", "x" * 200])
    job = rng.choice(["hello_world-abc", "sync_container-rasters", "%2f", "a:b", "x" * 300, "%00", "..", "é"])
    file = rng.choice(["dashboard.js", "vendor/leaflet/dist/leaflet.js", "vendor/..%2f..%2fpackage.json",
                       "%2e%2e/function_app.py", "data", "thumbnail", "x" * 300, "%00"])
    collection = rng.choice(["rasters", "no-such", "%2e%2e", "a%20b", "x" * 200])
    path = template.format(op=op, id=job, file=file, collection=collection)
    query = rng.choice(["", "?top=-1", "?top=99999999999999999999", "?skip=nan", "?status=%00",
                        "?stale_minutes=inf", "?operation=zz", "?status=failed,bogus", "?top=1e3",
                        "?status=completed_with_errors,failed", "?bbox=1,2,3", "?bbox=nan,0,1,1",
                        "?bbox=-200,-90,200,90", "?bbox=%00", "?limit=0", "?limit=1e9", "?token=next:%00",
                        "?token=next:abc", "?token=" + "t" * 500, "?collection=no-such", "?collection=,,,",
                        "?collection=" + ",".join(["c"] * 200), "?limit=abc", "?collection=%2e%2e"])
    return path + query


def test_fuzz_every_route_finds_no_500_and_no_empty_error(host):
    rng = random.Random(20261202)
    seen = []
    for _ in range(400):
        method, template = rng.choice(ROUTES)
        method = rng.choice([method] * 4 + ["PUT", "DELETE", "PATCH"])
        data = _fuzz_body(rng) if method in ("POST", "PUT", "PATCH") else None
        path = _fuzz_path(rng, template)
        try:
            code, body = raw(method, f"{host.url}{path}", data)
        except (urllib.error.URLError, ValueError) as err:  # the client refused to send it
            seen.append((path, repr(err)))
            continue
        assert code < 500, (method, path, data[:100] if data else None, code, body[:300])
        if code >= 400:
            assert body.strip(), (method, path, code)
    assert len(seen) < 40, seen


#: A control character (NUL, the rest of C0, DEL, C1) or a lone surrogate in every free-text field
#: of every request model: (operation, the other fields it needs, the field, its bad value).
CONTROL_CASES = [
    ("list_container", {}, "prefix", "a\x00"),
    ("list_container", {}, "prefix", "\x01"),
    ("sync_container", {}, "prefix", "dir/\x1f"),
    ("sync_container", {}, "collection", "ok\x00"),
    ("sync_container", {}, "collection_title", "A title\x00"),
    ("sync_container", {}, "collection_description", "Line\x00"),
    ("sync_container", {}, "container", "rast\x00ers"),
    ("catalog_file", {}, "blob", "a\x7f.tif"),
    ("catalog_file", {"blob": "a.tif"}, "collection_title", "t\x1b[31m"),
    ("validate_raster", {}, "blob", "a\x85.tif"),
    ("cog_conversion", {}, "blobs", ["good.tif", "b\x00.tif"]),
    ("cog_conversion", {}, "prefix", "\ud800"),
    ("cog_conversion", {"prefix": ""}, "output_container", "out\x00put"),
    ("cog_conversion", {"prefix": ""}, "collection_description", "\x00"),
    ("cog_conversion", {"prefix": ""}, "target_crs", "EPSG:3857\x00"),
    ("process_tiled_raster", {}, "blob", "t\x0b.tif"),
    ("process_tiled_raster", {"blob": "a.tif"}, "collection_title", "\x9b"),
    ("ingest_blob", {}, "blob", "\x00.tif"),
    ("ingest_blob", {"blob": "a.tif"}, "version", "v\x00"),
    ("hello_world", {}, "name", "Ada\x00"),
]


@pytest.mark.parametrize("operation, body, field, value", CONTROL_CASES,
                         ids=[f"{op}-{field}-{i}" for i, (op, _, field, _) in enumerate(CONTROL_CASES)])
def test_control_characters_are_400_naming_the_field(host, operation, body, field, value):
    """Refused at submission, before any storage or catalog call: a NUL in a prefix used to reach
    Azure's listing, which answered 500, ridden out as an outage for minutes per attempt."""
    code, reply = answer("POST", f"{host.url}/api/jobs/{operation}",
                         json.dumps({**body, field: value}).encode())
    assert code == 400, (operation, field, code, reply)
    fields = [p["field"].split(".")[0] for p in reply["problems"]]
    assert fields == [field], reply
    assert "control character" in reply["problems"][0]["problem"] or "surrogate" in reply["problems"][0]["problem"]


def test_line_breaks_are_text_in_a_description_and_a_crs(host, store):
    """A description and a WKT CRS may span lines: tabs and line breaks are their only control
    characters (a dry-run sync and a conversion of a named blob are accepted)."""
    store.create_container("multiline")
    code, reply = answer("POST", f"{host.url}/api/jobs/sync_container", json.dumps(
        {"container": "multiline", "dry_run": True, "collection_description": "Line one.\n\n\tLine two."}).encode())
    assert code == 202, reply
    wkt = 'GEOGCRS["WGS 84",\n  DATUM["World Geodetic System 1984",\n    ELLIPSOID["WGS 84",6378137,298.257223563]],\n' \
          '  CS[ellipsoidal,2],\n  AXIS["lat",north],\n  AXIS["lon",east],\n  ANGLEUNIT["degree",0.0174532925199433]]'
    code, reply = answer("POST", f"{host.url}/api/jobs/cog_conversion", json.dumps(
        {"container": "multiline", "blobs": ["a.tif"], "output_container": "multiline-out", "target_crs": wkt}).encode())
    assert code == 202, reply
    for title in ("Title\nwith a break", "Title\twith a tab"):
        code, reply = answer("POST", f"{host.url}/api/jobs/sync_container", json.dumps(
            {"container": "multiline", "dry_run": True, "collection_title": title}).encode())
        assert code == 400 and reply["problems"][0]["field"] == "collection_title", reply


@pytest.mark.parametrize("operation, body", [
    ("sync_container", {}), ("list_container", {}), ("catalog_file", {"blob": "plans/x.json"}),
    ("validate_raster", {"blob": "a.tif"}), ("cog_conversion", {"prefix": "", "output_container": "elsewhere"}),
    ("process_tiled_raster", {"blob": "a.tif", "output_container": "elsewhere"}), ("ingest_blob", {"blob": "a.tif"}),
])
def test_no_job_reads_the_system_container(host, store, operation, body):
    """The system container holds the service's own state (chunk plans, inventories): as the token,
    asset and output routes refuse it, every operation that takes a container refuses it (400)."""
    store.create_container("rmh-system")
    code, reply = answer("POST", f"{host.url}/api/jobs/{operation}",
                         json.dumps({**body, "container": "rmh-system"}).encode())
    assert code == 400, (operation, code, reply)
    assert reply["problems"][0]["field"] == "container" and "system container" in reply["problems"][0]["problem"]


def test_settings_refuse_the_system_container_as_a_data_container(monkeypatch):
    from settings import SettingsError, load_settings

    for key in ("RMH_INPUT_CONTAINER", "RMH_SYNC_CONTAINERS", "RMH_EVENT_CONTAINERS"):
        with monkeypatch.context() as patch:
            patch.setenv(key, "rmh-system")
            with pytest.raises(SettingsError, match=f"{key} names the system container"):
                load_settings()
