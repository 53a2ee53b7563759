"""An unpublish that cannot delete an output (a lease held on it in Azurite) names the object in
its failure and keeps the group's items; once the lease is gone, ``retry`` finishes the group."""
from __future__ import annotations

import os

import pytest

from unpublish_checks import OUTPUT, items_of, listing, rasters

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def service_env(service_env):
    """The suite's Azurite + pgSTAC settings, with outages ridden out for a second only (a lease
    looks like a storage fault that retrying does not fix)."""
    from settings import get_settings

    saved = os.environ.get("RMH_OUTAGE_SECONDS")
    os.environ["RMH_OUTAGE_SECONDS"] = "1"
    get_settings.cache_clear()
    yield {**service_env, "RMH_OUTAGE_SECONDS": "1"}
    os.environ.pop("RMH_OUTAGE_SECONDS") if saved is None else os.environ.__setitem__("RMH_OUTAGE_SECONDS", saved)
    get_settings.cache_clear()


def test_a_failed_delete_names_the_object_and_retry_finishes(host, store, tmp_path, azurite_connection_string):
    from azure.storage.blob import BlobClient

    container, source = "unpub-fault", "src/small0.tif"
    store.create_container(container)
    store.upload_from_path(container, source, rasters(tmp_path)[source])
    converted = host.run("cog_conversion", {"container": container, "blobs": [source], "collection": "unpub-fault"})
    assert converted["output"]["done"] == 1, converted["output"]
    cog = f"{container}/src/small0.tif"
    lease = BlobClient.from_connection_string(azurite_connection_string, OUTPUT, cog).acquire_lease(-1)

    status = host.run("unpublish", {"container": container, "blobs": [source]})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["completed_with_errors"], output
    [failure] = output["failures"]
    assert failure["name"] == f"{container}/{source}" and f"{OUTPUT}/{cog}" in failure["reason"], failure
    assert len(items_of(container, source)) == 1  # the group's items stay until its blobs went
    assert cog in listing(store, OUTPUT, f"{container}/src")
    code, tasks = host.get(f"/api/jobs/{status['instanceId']}/tasks?status=failed")
    assert code == 200 and tasks["total"] >= 1, tasks  # each attempt the orchestrator retried
    assert all(t["name"] == f"{container}/{source}" and f"{OUTPUT}/{cog}" in t["reason"] for t in tasks["tasks"])

    lease.release()
    code, started = host.post(f"/api/jobs/{status['instanceId']}/retry")
    assert code == 202, started
    retried = host.follow(started["statusQueryGetUri"])
    assert retried["output"]["failed"] == 0 and retried["output"]["done"] == 1, retried["output"]
    assert items_of(container, source) == [] and listing(store, OUTPUT, f"{container}/src") == {}
    assert listing(store, container).keys() == {source}
