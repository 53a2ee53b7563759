"""Bindings beyond the trigger against real storage: blob bindings write to and read from the
account their ``connection`` names (Azurite by connection string, ``UseDevelopmentStorage=true``,
or an identity-based connection), never the runtime's own store, and the app reads the blob back
through the Azure SDK; a missing connection, like anything else the runtime cannot run, stops the
start-up naming the function."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest

import bindings_app
import connection_app
import local_runtime
from local_runtime import LocalRuntime
from web import call

CONTAINERS = ("inbox", "outbox", "notes", "events", "reports", "archive")


def emptied(blobs):
    for container in CONTAINERS:
        blobs.create_container(container)
        for blob in list(blobs.iter_blobs(container)):  # a shared Azurite keeps old blobs
            blobs.delete(container, blob.name)
    return blobs


@pytest.fixture
def account(azurite_connection_string):
    """The Azurite account ``AzureWebJobsStorage`` names in these tests, emptied."""
    from storage import AzureBlobStore

    return emptied(AzureBlobStore(connection_string=azurite_connection_string))


@pytest.fixture(params=["local", "azurite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A store the Event Grid emulation watches: a local directory or Azurite."""
    from storage import AzureBlobStore, LocalDirStore

    if request.param == "local":
        return emptied(LocalDirStore(tmp_path / "blobs"))
    return emptied(AzureBlobStore(connection_string=request.getfixturevalue(
        "azurite_connection_string")))


@pytest.fixture
def bound(account, azurite_connection_string, tmp_path: Path) -> Iterator[LocalRuntime]:
    with LocalRuntime(bindings_app.app, db_path=tmp_path / "b.sqlite", port=0,
                      settings={"AzureWebJobsStorage": azurite_connection_string}) as rt:
        yield rt


def test_activity_blob_input_and_output(bound: LocalRuntime, account) -> None:
    name = "greeting.txt"
    account.upload_bytes("inbox", name, b"hello blobs")
    status = bound.wait_for(bound.start_new("shout_file", {"name": name}), 20)
    assert status["output"] == {"found": True, "length": 11, "stream_name": None}
    assert account.download_bytes("outbox", f"{name}.loud") == b"HELLO BLOBS"
    missing = bound.wait_for(bound.start_new("shout_file", {"name": "absent.txt"}), 20)
    assert missing["output"] == {"found": False}
    assert not account.exists("outbox", "absent.txt.loud")


def test_blob_shapes_str_bytes_and_out_bytes(bound: LocalRuntime, account) -> None:
    account.upload_bytes("inbox", "raw.bin", b"abc\x00")
    status = bound.wait_for(bound.start_new("copy_bytes", "raw.bin"), 20)
    assert status["output"] == ["bytes", "str", 4]
    assert account.download_bytes("outbox", "raw.bin.copy") == b"\x00cba"


def test_unresolvable_binding_expression_fails_the_task(bound: LocalRuntime) -> None:
    status = bound.wait_for(bound.start_new("shout_file", {"other": 1}), 20)
    assert status["runtimeStatus"] == "Failed"
    assert "binding expression {data.name}" in status["output"]


def test_http_function_blob_input_and_output(bound: LocalRuntime, account) -> None:
    url = f"{bound.base_url}/api/notes/todo"
    assert call("GET", url).status == 404
    assert call("PUT", url, data=b"buy milk", headers={"Content-Type": "text/plain"}
                ).status == 201
    assert account.download_bytes("notes", "todo.txt") == b"buy milk"
    reply = call("GET", url)
    assert (reply.status, reply.text) == (200, "buy milk")


def test_bindings_use_the_account_their_connection_names_not_the_apps_own_store(
        account, azurite_connection_string, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own store is a local directory; ``AzureWebJobsStorage`` (in the environment,
    as app settings are on Azure) is Azurite. What the output binding writes is in Azurite, where
    the app's own SDK code finds it, and not in the local directory."""
    from settings import get_settings

    monkeypatch.setenv("RMH_STORAGE_BACKEND", "local")
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "app-blobs"))
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    get_settings.cache_clear()
    try:
        with LocalRuntime(connection_app.app, db_path=tmp_path / "c.sqlite", port=0,
                          settings={"ArchiveStorage": azurite_connection_string}) as rt:
            url = f"{rt.base_url}/api/reports/q3"
            assert call("GET", f"{url}/via-sdk").status == 404
            assert call("PUT", url, data=b"revenue up").status == 201
            reply = call("GET", f"{url}/via-sdk")
            assert (reply.status, reply.text) == (200, "revenue up")
            status = rt.wait_for(rt.start_new("archive", "q3"), 20)
            assert status["runtimeStatus"] == "Completed" and status["output"] == 10
        assert account.download_bytes("reports", "q3.txt") == b"revenue up"
        assert account.download_bytes("archive", "q3.txt") == b"archived: revenue up"
        assert not [p for p in (tmp_path / "app-blobs").rglob("*") if p.is_file()]
    finally:
        get_settings.cache_clear()


def test_an_identity_based_connection_reaches_its_account_with_a_token(
        account, azurite_connection_string, azurite_oauth, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``ArchiveStorage__blobServiceUri`` names a second account (Azurite over HTTPS, bearer
    tokens only): the binding writes there with the runtime's token credential."""
    from azure.storage.blob import BlobServiceClient
    from services import EmulatorCredential

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite_oauth.ca_path))
    settings = {"AzureWebJobsStorage": azurite_connection_string,
                "ARCHIVESTORAGE__BLOBSERVICEURI": azurite_oauth.account_url}  # names fold case
    account.upload_bytes("reports", "q4.txt", b"costs down")
    with LocalRuntime(connection_app.app, db_path=tmp_path / "i.sqlite", port=0,
                      settings=settings, credential=EmulatorCredential()) as rt:
        status = rt.wait_for(rt.start_new("archive", "q4"), 30)
    assert status["runtimeStatus"] == "Completed", status
    archive = BlobServiceClient(azurite_oauth.account_url, credential=EmulatorCredential(),
                                connection_verify=str(azurite_oauth.ca_path))
    try:
        blob = archive.get_blob_client("archive", "q4.txt")
        assert blob.download_blob().readall() == b"archived: costs down"
        assert not account.exists("archive", "q4.txt")
    finally:  # the HTTPS Azurite is the session's: tests/test_first_run.py expects it empty
        archive.delete_container("archive")


def test_use_development_storage_is_azurite_on_its_default_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``UseDevelopmentStorage=true`` means Azurite at 127.0.0.1:10000 (its default), as in
    every local.settings.json Core Tools writes; an Azurite is started there for the test."""
    from services import Azurite

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Azurite binds it
        try:
            probe.bind(("127.0.0.1", 10000))
        except OSError:
            pytest.skip("port 10000 is taken: cannot start Azurite on its default port")
    azurite = Azurite(port=10000).start()
    try:
        monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)  # for the app's SDK
        with LocalRuntime(connection_app.app, db_path=tmp_path / "d.sqlite", port=0,
                          settings={"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                                    "ArchiveStorage": "UseDevelopmentStorage=true"}) as rt:
            url = f"{rt.base_url}/api/reports/dev"
            assert call("PUT", url, data=b"emulated").status == 201
            reply = call("GET", f"{url}/via-sdk")
            assert (reply.status, reply.text) == (200, "emulated")
    finally:
        azurite.stop()


@pytest.mark.parametrize(("settings", "condition"), [
    ({}, "storage account connection 'AzureWebJobsStorage' is not defined: set the app setting "
         "AzureWebJobsStorage to a connection string"),
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
     "storage account connection 'ArchiveStorage' is not defined: set the app setting "
     "ArchiveStorage to a connection string (UseDevelopmentStorage=true for Azurite), or "
     "ArchiveStorage__blobServiceUri, ArchiveStorage__serviceUri or ArchiveStorage__accountName "
     "for an identity-based connection (AzureWebJobsArchiveStorage is read first)"),
    ({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "ArchiveStorage__credential":
      "managedidentity"}, "connection 'ArchiveStorage' has properties (credential) but no "
                          "endpoint"),
    ({"AzureWebJobsStorage": "AccountName=x;AccountKey;secret-ish"},
     "app setting 'AzureWebJobsStorage' is not a storage connection string"),
])
def test_a_connection_that_names_no_account_stops_the_start_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict, condition: str) -> None:
    for name in ("AzureWebJobsStorage", "ArchiveStorage", "AzureWebJobsArchiveStorage"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises((local_runtime.MissingConnection, local_runtime.InvalidConnection)) as err:
        LocalRuntime(connection_app.app, db_path=tmp_path / "m.sqlite", port=0, settings=settings)
    assert "function '" in str(err.value) and "blob binding '" in str(err.value)
    assert condition in str(err.value)
    assert "secret-ish" not in str(err.value)
    assert not (tmp_path / "m.sqlite").exists()


def test_serve_names_the_missing_connection_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if "storage" not in k.lower()}
    result = subprocess.run(
        [sys.executable, str(root / "local_runtime.py"), "serve", "--app",
         f"{Path(connection_app.__file__)}:app", "--db", str(tmp_path / "s.sqlite"), "--port", "0",
         "--log-level", "ERROR"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": str(root)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("local_runtime.py serve: "), result.stderr
    assert ("function 'archive_report' (blob binding 'report'), function 'put_report' (blob "
            "binding 'report'): storage account connection 'AzureWebJobsStorage' is not defined: "
            "set the app setting AzureWebJobsStorage to a connection string") in lines[0]
    assert ("function 'archive_report' (blob binding 'archived'): storage account connection "
            "'ArchiveStorage' is not defined") in lines[0]


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


def test_event_grid_trigger_receives_the_event_grid_schema(
        store, account, azurite_connection_string, tmp_path: Path) -> None:
    """The watched store (local or Azurite) sends the events; the function's output binding
    writes them to the AzureWebJobsStorage account."""
    import time

    with LocalRuntime(bindings_app.app, db_path=tmp_path / "e.sqlite", port=0,
                      blob_store=store, event_grid_containers=["inbox"],
                      event_grid_poll_interval=0.1,
                      settings={"AzureWebJobsStorage": azurite_connection_string}) as rt:
        deadline = time.time() + 5
        while not rt._call(rt.engine.store.has_baseline, "inbox") and time.time() < deadline:
            time.sleep(0.02)  # the first poll records the (empty) container, without events
        info = store.upload_bytes("inbox", "new/scene.tif", b"II*\x00" + b"0" * 96,
                                  content_type="image/tiff")
        records = []
        while time.time() < deadline and not records:
            records = [json.loads(account.download_bytes("events", b.name))
                       for b in account.list_page("events").blobs]
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


def test_connections_resolve_as_the_host_resolves_them() -> None:
    """The host's lookup order and forms, on the resolution alone (no account is contacted)."""
    from azure.identity import (ClientSecretCredential, DefaultAzureCredential,
                                ManagedIdentityCredential)

    from local_bindings import (DEVELOPMENT_KEY, AppSettings, InvalidConnection,
                                MissingConnection, identity_credential, resolve_connection)

    def resolve(connection: str, settings: dict, environ: dict | None = None):
        return resolve_connection(connection, AppSettings(settings, environ or {}))

    # AzureWebJobs<name> first, then <name>; no connection is "Storage"; names fold case
    both = {"AzureWebJobsFiles": "UseDevelopmentStorage=true", "Files": "AccountName=b;AccountKey=k"}
    assert resolve("Files", both).setting == "AzureWebJobsFiles"
    assert resolve("", {"azurewebjobsstorage": "AccountName=a;AccountKey=k"}).setting == \
        "AzureWebJobsStorage"
    assert resolve("%WHICH%", {"WHICH": "Files", "Files": "AccountName=b;AccountKey=k"}
                   ).setting == "Files"
    # the runtime's settings over the environment
    assert resolve("Files", {"Files": "AccountName=mine;AccountKey=k"},
                   {"Files": "AccountName=env;AccountKey=k"}).connection_string.startswith(
                       "AccountName=mine")
    dev = resolve("Files", {"Files": "UseDevelopmentStorage=true"}).connection_string
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;" in dev
    assert f"AccountKey={DEVELOPMENT_KEY};" in dev
    proxied = resolve("Files", {"Files": "UseDevelopmentStorage=true;DevelopmentStorageProxyUri="
                                         "http://storage.test"}).connection_string
    assert "BlobEndpoint=http://storage.test:10000/devstoreaccount1;" in proxied
    # identity-based: blobServiceUri, then accountName, then serviceUri; ':' or '__'
    assert resolve("Arch", {"Arch__serviceUri": "https://s.example/",
                            "Arch:blobServiceUri": "https://b.example/"}).account_url == \
        "https://b.example"
    assert resolve("Arch", {"Arch__accountName": "acct", "Arch__serviceUri": "https://s.example"}
                   ).account_url == "https://acct.blob.core.windows.net"
    assert resolve("Arch", {"Arch__serviceUri": "https://s.example"}).account_url == \
        "https://s.example"
    # credentials as the host builds them
    def credential(properties: dict):
        settings = {"Arch__accountName": "acct", **{f"Arch__{k}": v for k, v in properties.items()}}
        return identity_credential(resolve("Arch", settings))

    assert isinstance(credential({"credential": "managedidentity", "clientId": "c"}),
                      ManagedIdentityCredential)
    assert isinstance(credential({"tenantId": "t", "clientId": "c", "clientSecret": "s"}),
                      ClientSecretCredential)
    assert isinstance(credential({}), DefaultAzureCredential)
    for properties, problem in [
        ({"credential": "managedidentity", "clientId": "c", "managedIdentityResourceId": "r"},
         "give clientId or managedIdentityResourceId, not both"),
        ({"credential": "workloadidentity"}, "workload identity needs tenantId, clientId and "
                                             "tokenFilePath"),
        ({"tenantId": "t", "clientId": "c", "clientCertificate": "AB12"},
         "certificate store thumbprint"),
    ]:
        with pytest.raises(InvalidConnection, match=problem):
            credential(properties)
    with pytest.raises(MissingConnection, match="app setting 'WHICH'"):
        resolve("%WHICH%", {})
    with pytest.raises(MissingConnection, match="'Files' is not defined"):
        resolve("Files", {"Files": ""})  # an empty setting is no setting
