"""Signed access to private assets, as Planetary Computer offers it: a token route the
planetary-computer SDK reads with its own code, and a per-asset route that redirects a
function-key holder to a short-lived signed URL. Against Azurite with private containers."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request

import pytest

from consumers import planetary_computer_token
from local_runtime import LocalRuntime
from raster_factory import write_raster

KEY = "function-key-0123456789"
TOKEN_KEY = "token-api-key-0123456789"


def call(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


@pytest.fixture(scope="module")
def keyed(service_env, tmp_path_factory):
    import function_app
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RMH_SAS_TOKEN_KEYS", TOKEN_KEY)
        get_settings.cache_clear()
        db = tmp_path_factory.mktemp("signed") / "hub.sqlite"
        with LocalRuntime(function_app.app, db_path=db, port=0, function_keys={"default": KEY}) as runtime:
            yield runtime
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def cataloged(keyed, store, tmp_path_factory):
    """One COG converted into a private output container and cataloged."""
    store.create_container("signed-in")
    source = write_raster(tmp_path_factory.mktemp("signed") / "s.tif", width=300, height=200, count=3,
                          crs="EPSG:32633")
    store.upload_from_path("signed-in", "a/scene.tif", source)
    request = urllib.request.Request(
        f"{keyed.base_url}/api/jobs/cog_conversion", method="POST",
        data=b'{"container": "signed-in", "blobs": ["a/scene.tif"], "output_container": "signed-out", '
             b'"collection": "signed"}',
        headers={"x-functions-key": KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        instance_id = json.loads(response.read())["id"]
    status = keyed.wait_for(instance_id, timeout=180)
    output = status["output"]
    assert output["done"] == 1, output
    from activities import catalog

    items = catalog().search("signed")
    assert len(items) == 1
    return items[0]


def test_the_asset_route_redirects_a_key_holder_to_a_signed_url(keyed, cataloged, store):
    href = cataloged.assets["data"].href
    assert href.startswith("http://127.0.0.1:") and "signed-out/" in href
    assert call(href)[0] in (403, 404)  # the container is private: the plain URL does not open
    route = f"{keyed.base_url}/api/items/signed/{cataloged.id}/assets/data"
    assert call(route)[0] == 401
    code, _, headers = call(route, {"x-functions-key": KEY})
    assert code == 302, (code, headers)
    location = headers["Location"]
    assert location.startswith(href + "?") and "sig=" in location and "sp=r" in location
    code, body, _ = call(location)
    assert code == 200 and body[:4] in (b"II*\x00", b"II+\x00")
    assert len(body) == store.get_properties("signed-out", href.split("signed-out/", 1)[1]).size
    assert call(f"{keyed.base_url}/api/items/signed/{cataloged.id}/assets/nope", {"x-functions-key": KEY})[0] == 404
    assert call(f"{keyed.base_url}/api/items/signed/no-such-item/assets/data", {"x-functions-key": KEY})[0] == 404


def test_the_token_route_answers_the_planetary_computer_sdk(keyed, cataloged, store, caplog):
    caplog.set_level(logging.DEBUG)
    base = f"{keyed.base_url}/api/sas/v1/token"
    account = store.account_name
    assert call(f"{base}/{account}/signed-out")[0] == 401
    assert call(f"{base}/{account}/signed-out", {"Ocp-Apim-Subscription-Key": "wrong-key-0123456789"})[0] == 401
    assert call(f"{base}/{account}/rmh-system", {"Ocp-Apim-Subscription-Key": TOKEN_KEY})[0] == 403
    assert call(f"{base}/otheraccount/signed-out", {"Ocp-Apim-Subscription-Key": TOKEN_KEY})[0] == 404
    assert call(f"{base}/{account}/never-made", {"Ocp-Apim-Subscription-Key": TOKEN_KEY})[0] == 404
    got = planetary_computer_token(base, account, "signed-out", subscription_key=TOKEN_KEY)
    expiry = dt.datetime.fromisoformat(got["expiry"])
    remaining = (expiry - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 55 * 60 < remaining <= 60 * 60, remaining  # RMH_SAS_TTL_MINUTES (60) minus the seconds since
    assert got["cached"] is True  # the SDK reused it: well over its 60 s refresh margin
    href = cataloged.assets["data"].href
    code, body, _ = call(f"{href}?{got['token']}")
    assert code == 200 and body[:2] == b"II"
    signature = next(p.split("=", 1)[1] for p in got["token"].split("&") if p.startswith("sig="))
    assert signature not in caplog.text  # never logged


def test_a_signed_url_stops_working_when_it_expires(cataloged, store):
    href = cataloged.assets["data"].href
    blob = urllib.request.unquote(href.split("signed-out/", 1)[1])
    access = store.read_sas("signed-out", blob, ttl=dt.timedelta(seconds=3))
    assert call(f"{href}?{access.token}")[0] == 200
    time.sleep(max(0.0, (access.expiry - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 2)
    assert call(f"{href}?{access.token}")[0] == 403
