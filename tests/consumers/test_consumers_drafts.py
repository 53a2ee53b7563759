"""Drafts as the real consumers see them: a collection the app writes as a draft (``draft: true``)
has 0 items in stac-fastapi-pgstac's ``/search`` and an empty titiler-pgstac mosaic until it is
published through the job API; then ``/search`` has them all and the mosaic draws them; ``revoke``
hides them again. Each transition is listed by ``GET /api/lifecycle`` with the name of the key
that asked for it (RMH_KEY_NAMES) and its reason."""
from __future__ import annotations

import json
import time

import pytest

from consumers import TITILER_ENV, lonlat_centre, opaque_fraction, read_png, tile_of, titiler_azure_env
from dashboard_checks import call, wait_for_job
from local_runtime import LocalRuntime
from raster_factory import write_raster

pytestmark = pytest.mark.services

UTM33 = "EPSG:32633"
INPUT, OUTPUT, SYSTEM, COLLECTION = "drafts-rasters", "drafts-cogs", "drafts-system", "drafted"
BOUNDS = [(500000.0 + 6000 * i, 4980000.0, 505120.0 + 6000 * i, 4985120.0) for i in range(3)]
REVIEWER_KEY, OTHER_KEY = "reviewer-key-0123456789abcdef", "another-key-fedcba9876543210"


#: titiler-pgstac keeps a mosaic's asset list for TITILER_PGSTAC_CACHE_TTL seconds (300 by default):
#: a tile drawn before a publish or revoke shows the old state that long (README: drafts).
CACHE_TTL = 1


@pytest.fixture(scope="module")
def titiler_env(azurite_connection_string) -> dict[str, str]:
    return {**TITILER_ENV, **titiler_azure_env(azurite_connection_string, alternate_key="vsiaz"),
            "TITILER_PGSTAC_CACHE_TTL": str(CACHE_TTL)}


@pytest.fixture(scope="module")
def app(azurite_connection_string, pgstac_dsn, tmp_path_factory):
    """The app over HTTP with two function keys (one named in RMH_KEY_NAMES), after a conversion
    written as a draft."""
    import callers
    from settings import get_settings

    inputs = tmp_path_factory.mktemp("draft-inputs")
    env = {"RMH_STORAGE_BACKEND": "azure", "RMH_STORAGE_CONNECTION_STRING": azurite_connection_string,
           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": pgstac_dsn, "RMH_INPUT_CONTAINER": INPUT,
           "RMH_OUTPUT_CONTAINER": OUTPUT, "RMH_SYSTEM_CONTAINER": SYSTEM,
           "RMH_KEY_NAMES": f"reviewer={callers.fingerprint(REVIEWER_KEY)}"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_ASSET_BASE_URL", "RMH_STORAGE_ACCOUNT_URL", "RMH_EVENT_GRID_ENDPOINT", "RMH_EVENT_WEBHOOKS"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        try:
            import activities
            import function_app

            store = activities.blob_store()
            store.create_container(INPUT)
            for i, bounds in enumerate(BOUNDS):
                path = write_raster(inputs / f"d{i}.tif", width=512, height=512, count=3, crs=UTM33, bounds=bounds,
                                    seed=i)
                store.upload_from_path(INPUT, f"d/{i}.tif", path)
            with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite", port=0,
                              function_keys={"reviewer": REVIEWER_KEY, "other": OTHER_KEY}) as runtime:
                status = run(runtime.base_url, "cog_conversion", {
                    "blobs": [f"d/{i}.tif" for i in range(3)], "collection": COLLECTION, "draft": True})
                assert status["output"]["done"] == 3, status["output"]
                yield runtime.base_url
        finally:
            get_settings.cache_clear()


def run(base: str, operation: str, body: dict, key: str = REVIEWER_KEY) -> dict:
    code, answer, _ = call(f"{base}/api/jobs/{operation}", key=key, method="POST", body=body)
    assert code == 202, (operation, code, answer)
    return wait_for_job(json.loads(answer)["statusQueryGetUri"])  # the URL carries the system key


def searched(stac_api) -> list[str]:
    return sorted(f["id"] for f in stac_api.get_json(f"/search?collections={COLLECTION}&limit=100")["features"])


def mosaic_tile(titiler) -> tuple[int, bytes]:
    time.sleep(CACHE_TTL + 0.5)  # past titiler-pgstac's cache of the mosaic's assets
    code, registered = titiler.post_json("/searches/register", {"collections": [COLLECTION],
                                                               "filter-lang": "cql2-json"})
    assert code == 200, registered
    x, y = tile_of(*lonlat_centre(UTM33, BOUNDS[1]), 14)
    status, body, _ = titiler.get(f"/searches/{registered['id']}/tiles/WebMercatorQuad/14/{x}/{y}.png?assets=data")
    return status, body


def lifecycle(base: str) -> dict:
    code, body, _ = call(f"{base}/api/lifecycle?collection={COLLECTION}", key=REVIEWER_KEY)
    assert code == 200, body
    return json.loads(body)


def test_a_draft_collection_is_invisible_until_published_and_revoke_hides_it_again(app, stac_api, titiler,
                                                                                     artifact_dir):
    import stac_ops

    expected = sorted(stac_ops.item_id_for_blob(INPUT, f"d/{i}.tif") for i in range(3))
    assert searched(stac_api) == []  # 0 items in /search before publish
    assert stac_api.get_json(f"/collections/{COLLECTION}/items")["features"] == []
    status, body = mosaic_tile(titiler)
    assert status in (204, 404) or opaque_fraction(read_png(body)) == 0.0, (status, body[:300])
    (artifact_dir / "mosaic-before-publish.txt").write_text(f"{status} {body[:300]!r}")
    state = lifecycle(app)
    assert state["drafts"] == [{"collection": COLLECTION, "items": 3, "whole": True, "since": state["drafts"][0]["since"]}]
    assert [(t["action"], t["by"]) for t in state["transitions"]] == [("draft", state["transitions"][0]["by"])]

    published = run(app, "publish", {"collection": COLLECTION, "reason": "reviewed by the survey team"})
    assert published["output"]["detail"]["transition"]["items"] == 3, published["output"]
    assert searched(stac_api) == expected  # N after
    status, body = mosaic_tile(titiler)
    assert status == 200, body[:300]
    (artifact_dir / "mosaic-after-publish.png").write_bytes(body)
    assert opaque_fraction(read_png(body)) == 1.0

    revoked = run(app, "revoke", {"collection": COLLECTION, "items": [expected[0]], "reason": "wrong date"},
                  key=OTHER_KEY)
    assert revoked["output"]["detail"]["transition"]["items"] == 1, revoked["output"]
    assert searched(stac_api) == expected[1:]
    whole = run(app, "revoke", {"collection": COLLECTION, "reason": "withdrawn"})
    assert whole["output"]["detail"]["transition"]["items"] == 2
    assert searched(stac_api) == []
    status, body = mosaic_tile(titiler)
    assert status in (204, 404) or opaque_fraction(read_png(body)) == 0.0

    import callers

    transitions = lifecycle(app)["transitions"]
    assert [(t["action"], t["items"], t["by"], t["reason"]) for t in transitions[:3]] == [
        ("revoke", 2, "reviewer", "withdrawn"),
        ("revoke", 1, f"key {callers.fingerprint(OTHER_KEY)}", "wrong date"),
        ("publish", 3, "reviewer", "reviewed by the survey team")]
    assert all(t["at"] and t["job"].startswith(("publish-", "revoke-")) for t in transitions[:3])


def test_transition_requests_are_checked(app):
    for body, status, words in (({"collection": COLLECTION}, 400, "reason"),
                                ({"collection": COLLECTION, "reason": "x", "requested_by": "admin"}, 400, "requested_by"),
                                ({"collection": "no-such", "reason": "x"}, 404, "no-such")):
        code, answer, _ = call(f"{app}/api/jobs/publish", key=REVIEWER_KEY, method="POST", body=body)
        assert code == status and words in answer.decode(), (body, code, answer)
    code, answer, _ = call(f"{app}/api/lifecycle?collection=..", key=REVIEWER_KEY)
    assert code == 400, answer
    assert call(f"{app}/api/lifecycle")[0] == 401
