"""Change events on Azurite + pgSTAC, delivered by the app to an Event Grid custom topic through
the azure-eventgrid SDK with the app's managed identity (DefaultAzureCredential asking the App
Service identity endpoint, as on Azure Functions), against a local HTTPS receiver that holds the
SDK to the topic's publish contract: a burst of 300 changes gives 300 events, each delivered once
per id; every kind of change (created, updated, deleted, published, revoked) is announced; an
outage of the topic delays events and loses none."""
from __future__ import annotations

import os
import time

import pytest

import change_events
from event_receivers import TOKEN, EventGridTopic, IdentityEndpoint, per_id
from raster_factory import write_raster

pytestmark = pytest.mark.services
BURST = 300


@pytest.fixture(scope="module")
def topic(tmp_path_factory):
    receiver = EventGridTopic(tmp_path_factory.mktemp("topic")).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def identity():
    endpoint = IdentityEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def service_env(service_env, topic, identity):
    """The suite's Azurite + pgSTAC settings, with events to the topic: its endpoint, the drain
    timer every 2 s, the identity endpoint, and the topic's certificate trusted."""
    from settings import get_settings

    env = {"RMH_EVENT_GRID_ENDPOINT": topic.endpoint, "RMH_EVENT_DRAIN_SCHEDULE": "*/2 * * * * *",
           "REQUESTS_CA_BUNDLE": str(topic.cert), **identity.env}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield {**service_env, **env}
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    get_settings.cache_clear()


def of_collection(events: list[dict], collection: str) -> list[dict]:
    return [e for e in events if e["data"]["collection"] == collection]


def changes(events: list[dict]) -> list[tuple[str, str]]:
    return sorted((change_events.change_of(e).value, e["data"]["id"]) for e in events)


def test_the_sdk_publishes_cloudevents_to_the_topic_with_the_managed_identity(host, store, topic, identity, tmp_path):
    import stac_ops

    store.create_container("ev-one")
    store.upload_from_path("ev-one", "a/one.tif", write_raster(tmp_path / "one.tif", width=64, height=64,
                                                                crs="EPSG:4326", bounds=(10, 40, 10.5, 40.5)))
    status = host.run("catalog_file", {"container": "ev-one", "blob": "a/one.tif", "collection": "ev-one"})
    assert status["output"]["done"] == 1, status["output"]
    [event] = topic.wait_for(lambda events: of_collection(events, "ev-one"), 20, "the created event")
    item_id = stac_ops.item_id_for_blob("ev-one", "a/one.tif")
    assert event["type"] == "org.rmhgeoapi.item.created" and event["specversion"] == "1.0"
    assert event["subject"] == f"collections/ev-one/items/{item_id}" and event["source"] == "/rmhgeoapi"
    assert event["data"]["bbox"] == pytest.approx([10, 40, 10.5, 40.5]) and event["data"]["datetime"]
    assert event["data"]["assets"]["data"].endswith("/ev-one/a/one.tif")
    assert topic.violations == []
    request = topic.requests[-1]
    assert request["headers"]["Content-Type"].startswith("application/cloudevents-batch+json")
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "https://eventgrid.azure.net" in identity.resources  # the SDK's scope, through the identity


def test_a_burst_of_300_changes_gives_300_events_each_once(host, store, topic, tmp_path):
    import stac_ops

    store.create_container("ev-burst")
    source = write_raster(tmp_path / "b.tif", width=48, height=48, crs="EPSG:4326", bounds=(0, 0, 0.5, 0.5))
    names = [f"b/{i:03d}.tif" for i in range(BURST)]
    for name in names:
        store.upload_from_path("ev-burst", name, source)
    started = time.monotonic()
    status = host.run("sync_container", {"container": "ev-burst"}, timeout=600)
    assert status["output"]["done"] == BURST, status["output"]
    collection = stac_ops.default_collection_id("ev-burst")
    events = topic.wait_for(lambda all_: (lambda mine: mine if len(mine) >= BURST else None)(
        of_collection(all_, collection)), 120, f"{BURST} events")
    seconds = time.monotonic() - started
    time.sleep(3)  # a drain timer tick or two more: nothing is delivered twice
    events = of_collection(list(topic.events), collection)
    assert len(events) == BURST and set(per_id(events).values()) == {1}
    assert {e["data"]["id"] for e in events} == {stac_ops.item_id_for_blob("ev-burst", n) for n in names}
    assert {e["type"] for e in events} == {"org.rmhgeoapi.item.created"}
    assert topic.violations == []
    print(f"{BURST} changes: every event delivered within {seconds:.1f}s of the sync's start")

    store.upload_from_path("ev-burst", names[0], write_raster(tmp_path / "c.tif", width=48, height=48,
                                                               crs="EPSG:4326", bounds=(1, 1, 1.5, 1.5)))
    for name in names[1:3]:
        store.delete("ev-burst", name)
    again = host.run("sync_container", {"container": "ev-burst", "rerun": True})
    assert again["output"]["failed"] == 0, again["output"]
    later = topic.wait_for(lambda all_: (lambda mine: mine if len(mine) >= BURST + 3 else None)(
        of_collection(all_, collection)), 60, "the update and deletion events")
    assert changes(later[BURST:]) == sorted([("updated", stac_ops.item_id_for_blob("ev-burst", names[0]))] + [
        ("deleted", stac_ops.item_id_for_blob("ev-burst", n)) for n in names[1:3]])


def test_drafts_announce_nothing_until_published_then_publish_and_revoke(host, store, topic, tmp_path):
    import stac_ops

    store.create_container("ev-draft")
    store.upload_from_path("ev-draft", "d.tif", write_raster(tmp_path / "d.tif", width=48, height=48,
                                                              crs="EPSG:4326", bounds=(5, 5, 5.5, 5.5)))
    item_id = stac_ops.item_id_for_blob("ev-draft", "d.tif")
    drafted = host.run("catalog_file", {"container": "ev-draft", "blob": "d.tif", "collection": "ev-draft",
                                        "draft": True})
    assert drafted["output"]["done"] == 1, drafted["output"]
    published = host.run("publish", {"collection": "ev-draft", "reason": "reviewed"})
    assert published["output"]["detail"]["transition"]["items"] == 1, published["output"]
    revoked = host.run("revoke", {"collection": "ev-draft", "reason": "withdrawn"})
    assert revoked["output"]["detail"]["transition"]["items"] == 1, revoked["output"]
    events = topic.wait_for(lambda all_: (lambda mine: mine if len(mine) >= 2 else None)(
        of_collection(all_, "ev-draft")), 30, "the publish and revoke events")
    assert [(change_events.change_of(e).value, e["data"]["id"]) for e in events] == [
        ("published", item_id), ("revoked", item_id)]  # the draft write itself announced nothing


def test_an_outage_of_the_topic_delays_events_and_loses_none(host, store, topic, tmp_path):
    import stac_ops

    store.create_container("ev-outage")
    names = [f"o{i}.tif" for i in range(5)]
    for i, name in enumerate(names):
        store.upload_from_path("ev-outage", name, write_raster(tmp_path / name, width=48, height=48, crs="EPSG:4326",
                                                              bounds=(i, 20, i + 0.5, 20.5)))
    topic.fail_next(10_000)
    status = host.run("sync_container", {"container": "ev-outage"})
    assert status["output"]["done"] == 5, status["output"]
    collection = stac_ops.default_collection_id("ev-outage")
    time.sleep(3)
    assert of_collection(list(topic.events), collection) == []  # refused while the topic is down
    topic.fail_next(0)
    events = topic.wait_for(lambda all_: (lambda mine: mine if len(mine) >= 5 else None)(
        of_collection(all_, collection)), 60, "the events after the outage")
    assert {e["data"]["id"] for e in events} == {stac_ops.item_id_for_blob("ev-outage", n) for n in names}
    assert set(per_id(events).values()) == {1}
