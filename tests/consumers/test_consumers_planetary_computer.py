"""The planetary-computer SDK (1.0.0, in .venv-consumers) run for real: what it asks a token API
for and which hrefs it signs. The token API here is a file on a static site, standing in for the
route #11 adds, so the request the SDK makes can be read back."""
from __future__ import annotations

import datetime as dt
import json

from consumers import StaticSite, planetary_computer_sign, planetary_computer_token

TOKEN = "sv=2025-11-05&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rl&sig=c2lnbmF0dXJl"


def token_site(expiry: dt.datetime) -> StaticSite:
    answer = json.dumps({"msft:expiry": expiry.isoformat().replace("+00:00", "Z"), "token": TOKEN}).encode()
    return StaticSite(files={"/api/sas/v1/token/devstoreaccount1/cogs": answer}, cors=None)


def test_the_sdk_asks_account_and_container_with_its_key_and_caches_the_token():
    expiry = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(minutes=10)
    with token_site(expiry) as site:
        got = planetary_computer_token(f"{site.url}/api/sas/v1/token", "devstoreaccount1", "cogs",
                                       subscription_key="function-key-123",
                                       href="https://devstoreaccount1.blob.core.windows.net/cogs/a/b.tif")
        requests = list(site.requests)
    assert [(r.method, r.path, r.status) for r in requests] == [
        ("GET", "/api/sas/v1/token/devstoreaccount1/cogs", 200)]  # the second get_token came from its cache
    assert requests[0].headers["Ocp-Apim-Subscription-Key"] == "function-key-123"
    assert got["cached"] is True
    assert got["token"] == TOKEN and dt.datetime.fromisoformat(got["expiry"]) == expiry
    assert 500 < got["ttl"] <= 600
    assert got["signed"] == f"https://devstoreaccount1.blob.core.windows.net/cogs/a/b.tif?{TOKEN}"


def test_the_sdk_refreshes_a_token_within_a_minute_of_expiry():
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
    with token_site(expiry) as site:
        got = planetary_computer_token(f"{site.url}/api/sas/v1/token", "devstoreaccount1", "cogs")
        requests = list(site.requests)
    assert got["cached"] is False and len(requests) == 2
    assert "Ocp-Apim-Subscription-Key" not in requests[0].headers  # no key set: no header at all


def test_sign_touches_only_blob_core_windows_net_asset_hrefs():
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    blob = "https://devstoreaccount1.blob.core.windows.net/cogs/rasters/x.tif"
    item = {
        "type": "Feature", "stac_version": "1.1.0", "id": "x", "properties": {"datetime": "2025-01-01T00:00:00Z"},
        "geometry": None, "links": [{"rel": "preview", "href": blob}],
        "assets": {
            "data": {"href": blob, "alternate": {"vsiaz": {"href": "/vsiaz/cogs/rasters/x.tif"}}},
            "azurite": {"href": "http://127.0.0.1:10000/devstoreaccount1/cogs/rasters/x.tif"},
            "signed": {"href": blob + "?st=2025&se=2030&sp=r&sig=abc"},
        },
    }
    with token_site(expiry) as site:
        signed = planetary_computer_sign(item, f"{site.url}/api/sas/v1/token")
    assert signed["assets"]["data"]["href"] == f"{blob}?{TOKEN}"
    assert signed["assets"]["data"]["alternate"] == item["assets"]["data"]["alternate"]
    assert signed["assets"]["azurite"] == item["assets"]["azurite"]  # not *.blob.core.windows.net
    assert signed["assets"]["signed"] == item["assets"]["signed"]  # already has st/se/sp
    assert signed["links"] == item["links"]  # links are never signed
