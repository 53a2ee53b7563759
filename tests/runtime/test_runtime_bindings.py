"""Bindings beyond the trigger against a real blob store (a local directory and Azurite), and a
clear refusal at start-up, naming the function, for anything the runtime cannot run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest

import bindings_app
import local_runtime
from local_runtime import LocalRuntime
from web import call


@pytest.fixture(params=["local", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    from storage import AzureBlobStore, LocalDirStore

    if request.param == "local":
        blobs = LocalDirStore(tmp_path / "blobs")
    else:
        connection = request.getfixturevalue("azurite_connection_string")
        blobs = AzureBlobStore(connection_string=connection)
    for container in ("inbox", "outbox", "notes", "events"):
        blobs.create_container(container)
        for blob in list(blobs.iter_blobs(container)):  # a shared Azurite keeps old blobs
            blobs.delete(container, blob.name)
    return blobs


@pytest.fixture
def bound(store, tmp_path: Path) -> Iterator[LocalRuntime]:
    with LocalRuntime(bindings_app.app, db_path=tmp_path / "b.sqlite", port=0,
                      blob_store=store) as rt:
        yield rt


def test_activity_blob_input_and_output(bound: LocalRuntime, store) -> None:
    name = f"greeting-{id(store)}.txt"
    store.upload_bytes("inbox", name, b"hello blobs")
    status = bound.wait_for(bound.start_new("shout_file", {"name": name}), 20)
    assert status["output"] == {"found": True, "length": 11, "stream_name": None}
    assert store.download_bytes("outbox", f"{name}.loud") == b"HELLO BLOBS"
    missing = bound.wait_for(bound.start_new("shout_file", {"name": "absent.txt"}), 20)
    assert missing["output"] == {"found": False}
    assert not store.exists("outbox", "absent.txt.loud")


def test_blob_shapes_str_bytes_and_out_bytes(bound: LocalRuntime, store) -> None:
    store.upload_bytes("inbox", "raw.bin", b"abc\x00")
    status = bound.wait_for(bound.start_new("copy_bytes", "raw.bin"), 20)
    assert status["output"] == ["bytes", "str", 4]
    assert store.download_bytes("outbox", "raw.bin.copy") == b"\x00cba"


def test_unresolvable_binding_expression_fails_the_task(bound: LocalRuntime) -> None:
    status = bound.wait_for(bound.start_new("shout_file", {"other": 1}), 20)
    assert status["runtimeStatus"] == "Failed"
    assert "binding expression {data.name}" in status["output"]


def test_http_function_blob_input_and_output(bound: LocalRuntime, store) -> None:
    url = f"{bound.base_url}/api/notes/todo"
    assert call("GET", url).status == 404
    assert call("PUT", url, data=b"buy milk", headers={"Content-Type": "text/plain"}
                ).status == 201
    assert store.download_bytes("notes", "todo.txt") == b"buy milk"
    reply = call("GET", url)
    assert (reply.status, reply.text) == (200, "buy milk")


def test_the_apps_own_store_is_the_default(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from settings import get_settings
    from storage import LocalDirStore

    monkeypatch.setenv("RMH_STORAGE_BACKEND", "local")
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "app-blobs"))
    get_settings.cache_clear()
    try:
        own = LocalDirStore(tmp_path / "app-blobs")
        own.create_container("inbox")
        own.upload_bytes("inbox", "a.txt", b"from settings")
        with LocalRuntime(bindings_app.app, db_path=tmp_path / "d.sqlite", port=0) as rt:
            rt.wait_for(rt.start_new("shout_file", {"name": "a.txt"}), 20)
        assert own.download_bytes("outbox", "a.txt.loud") == b"FROM SETTINGS"
    finally:
        get_settings.cache_clear()


def _app_with(decorate) -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    decorate(app)
    return app


def _queue_trigger(app: df.DFApp) -> None:
    @app.queue_trigger(arg_name="msg", queue_name="jobs", connection="AzureWebJobsStorage")
    def take_job(msg: func.QueueMessage) -> None:
        pass


def _queue_output(app: df.DFApp) -> None:
    @app.activity_trigger(input_name="x")
    @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
    def enqueue(x: str, out: func.Out[str]) -> None:
        pass


def _blob_trigger(app: df.DFApp) -> None:
    @app.blob_trigger(arg_name="blob", path="inbox/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass


def _event_grid_output(app: df.DFApp) -> None:
    @app.route(route="publish")
    @app.event_grid_output(arg_name="out", topic_endpoint_uri="T", topic_key_setting="K")
    def publish(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse("")


def _blob_in_orchestrator(app: df.DFApp) -> None:
    @app.blob_input(arg_name="b", path="inbox/x", connection="AzureWebJobsStorage")
    @app.orchestration_trigger(context_name="context")
    def reads_blob(context, b):
        yield context.call_activity("x", 1)


@pytest.mark.parametrize(("decorate", "function", "what"), [
    (_queue_trigger, "take_job", "trigger queueTrigger"),
    (_queue_output, "enqueue", "queue binding 'out'"),
    (_blob_trigger, "on_blob", "trigger blobTrigger"),
    (_event_grid_output, "publish", "eventGrid binding 'out'"),
])
def test_unsupported_bindings_stop_the_runtime_naming_the_function(
        tmp_path: Path, decorate, function: str, what: str) -> None:
    app = _app_with(decorate)
    with pytest.raises(local_runtime.UnsupportedBinding) as refused:
        LocalRuntime(app, db_path=tmp_path / "u.sqlite", port=0)
    assert f"function {function!r}" in str(refused.value)
    assert what in str(refused.value)
    assert "not supported by the embedded runtime" in str(refused.value)
    assert not (tmp_path / "u.sqlite").exists()


def test_a_blob_binding_on_an_orchestrator_is_refused_as_the_worker_refuses_it(
        tmp_path: Path) -> None:
    """The SDK hands the worker a wrapper whose one parameter is ``context``, so a binding of an
    orchestrator names no parameter and the worker refuses the app at load."""
    with pytest.raises(local_runtime.AppRefused, match="function 'reads_blob': binding"):
        LocalRuntime(_app_with(_blob_in_orchestrator), db_path=tmp_path / "o.sqlite", port=0)
    assert not (tmp_path / "o.sqlite").exists()


def test_event_grid_trigger_receives_the_event_grid_schema(store, tmp_path: Path) -> None:
    import time

    with LocalRuntime(bindings_app.app, db_path=tmp_path / "e.sqlite", port=0,
                      blob_store=store, event_grid_containers=["inbox"],
                      event_grid_poll_interval=0.1) as rt:
        deadline = time.time() + 5
        while not rt._call(rt.engine.store.has_baseline, "inbox") and time.time() < deadline:
            time.sleep(0.02)  # the first poll records the (empty) container, without events
        info = store.upload_bytes("inbox", "new/scene.tif", b"II*\x00" + b"0" * 96,
                                  content_type="image/tiff")
        records = []
        while time.time() < deadline and not records:
            records = [json.loads(store.download_bytes("events", b.name))
                       for b in store.list_page("events").blobs]
            time.sleep(0.05)
    assert len(records) == 1, records
    event = records[0]
    assert event["type"] == "Microsoft.Storage.BlobCreated"
    assert event["subject"] == "/blobServices/default/containers/inbox/blobs/new/scene.tif"
    assert event["topic"].startswith("/subscriptions/") and "storageAccounts/" in event["topic"]
    assert event["dataVersion"] == "" and event["eventTime"]
    data = event["data"]
    assert data["api"] == "PutBlob" and data["blobType"] == "BlockBlob"
    assert data["eTag"].strip('"') == info.etag
    assert (data["contentLength"], data["contentType"]) == (100, "image/tiff")
    assert data["url"] == store.url("inbox", "new/scene.tif")
    assert len(data["sequencer"]) == 32
