"""deploy.py first-run against real services, shaped like the Azure deployment.

- PostgreSQL that accepts TCP logins only with a password (scram-sha-256): the "Entra token" of
  the administrator and of the Function App's identity stand in for the passwords Azure Database
  for PostgreSQL checks. Creating the identity's role goes through Azure's pgaadauth extension,
  which does not exist outside Azure: for the main runs the role exists beforehand, as pgaadauth
  would leave it; the tests of the creation install a stand-in ``pgaadauth_create_principal_with_oid``
  in the server's ``postgres`` database only, which is where Azure has it.
- Azurite over HTTPS with bearer tokens, reached through an account URL with a credential: the
  identity path the Function App uses (no connection string, no key). For the minutes after
  provisioning when the deployer's new blob role is not in effect yet, a TLS proxy in front of
  Azurite answers the first requests with Azure's 403 (AuthorizationPermissionMismatch).
- A PostgreSQL whose host-based rules admit no TCP client: what Azure's firewall answers an address
  it does not let through.
"""
from __future__ import annotations

import datetime as dt
import http.client
import http.server
import io
import os
import secrets
import signal
import ssl
import threading

import psycopg
import pystac
import pytest

import pgstac_catalog
import deploy
from settings import load_settings

pytestmark = pytest.mark.services

ADMIN_TOKEN = f"entra-admin-token-{secrets.token_hex(8)}"
APP_ROLE = "func-rmh-test"
APP_TOKEN = f"entra-app-token-{secrets.token_hex(8)}"


class TokenSource:
    """Hands out one token and counts how often it was asked (once per connection)."""

    def __init__(self, token: str):
        self.token, self.calls = token, 0

    def __call__(self) -> str:
        self.calls += 1
        return self.token


@pytest.fixture(scope="module")
def entra_postgres():
    from services import PgStac

    server = PgStac(dbname=None, password=ADMIN_TOKEN).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(entra_postgres, azurite_oauth):
    """A provisioned-but-empty deployment: an empty database, the identity's role, no containers."""
    from services import EmulatorCredential
    from storage import AzureBlobStore

    entra_postgres.create_database("rmh", migrate=False)
    with psycopg.connect(entra_postgres.dsn_for("rmh"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{APP_ROLE}\" LOGIN PASSWORD '{APP_TOKEN}'")
    app_dsn = f"host=127.0.0.1 port={entra_postgres.port} dbname=rmh user={APP_ROLE} sslmode=disable"
    config = load_settings(storage_backend="azure", storage_account_url=azurite_oauth.account_url,
                           catalog_backend="pgstac", pgstac_dsn=app_dsn, pgstac_use_managed_identity=True,
                           input_container="landing", sync_containers=["landing", "archive"])
    store = AzureBlobStore(account_url=azurite_oauth.account_url, credential=EmulatorCredential(),
                           connection_verify=str(azurite_oauth.ca_path))
    return {"config": config, "store": store, "app_dsn": app_dsn}


def _first_run(deployment, token: str = ADMIN_TOKEN, app_role: str = APP_ROLE, **kwargs):
    provider = TokenSource(token)
    out = io.StringIO()
    report = deploy.first_run(deployment["config"], admin_user="postgres", app_role=app_role,
                              password_provider=provider, store=deployment["store"], out=out, **kwargs)
    return report, provider, out.getvalue()


@pytest.fixture(scope="module")
def runs(deployment):
    """first-run twice: the second finds everything in place."""
    return _first_run(deployment), _first_run(deployment)


def test_first_run_creates_containers_pgstac_role_and_collections(runs, deployment):
    (report, provider, out), _ = runs
    for container in ("landing", "cogs", "rmh-system", "archive"):
        assert report.outcome(f"container {container}") == "created"
        deployment["store"].list_page(container, page_size=1)  # exists now
    assert report.outcome("collection landing") == "created"
    assert report.outcome("collection archive") == "created"
    assert report.outcome(f"role {APP_ROLE}") == "exists, granted pgstac_ingest"
    assert provider.calls >= 2  # pypgstac migrate and the catalog connection each got the token
    assert "container landing: created" in out and ADMIN_TOKEN not in out
    with psycopg.connect(deployment["app_dsn"], password=APP_TOKEN) as conn:
        from pypgstac import __version__

        assert conn.execute("SELECT pgstac.get_version()").fetchone()[0] == __version__
        assert conn.execute("SELECT pg_has_role(%s, 'pgstac_ingest', 'member')", (APP_ROLE,)).fetchone()[0]


def test_second_run_changes_nothing(runs):
    _, (again, _, _) = runs
    outcomes = dict(again.steps)
    assert {k: v for k, v in outcomes.items() if k.startswith(("container", "collection"))} == {
        "container landing": "exists", "container cogs": "exists", "container rmh-system": "exists",
        "container archive": "exists", "collection landing": "exists", "collection archive": "exists"}
    assert outcomes[f"role {APP_ROLE}"] == "exists, granted pgstac_ingest"


def test_the_app_identity_can_write_the_catalog_after_first_run(runs, deployment):
    """What the Function App does with its own token: stage items, flush them, read them back."""
    pool = pgstac_catalog.connection_pool(deployment["app_dsn"], password_provider=lambda: APP_TOKEN, max_size=2)
    try:
        catalog = pgstac_catalog.PgStacCatalog(pool)
        assert catalog.health().ok
        item = pystac.Item("first-item", geometry={"type": "Polygon", "coordinates": [
            [[10, 50], [11, 50], [11, 51], [10, 51], [10, 50]]]}, bbox=[10, 50, 11, 51],
            datetime=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), properties={}, collection="landing")
        assert catalog.stage_items("deploy-test", [item], validate=False) == 1
        assert catalog.flush_staged("deploy-test").written == 1
        assert catalog.get_item("landing", "first-item") is not None
    finally:
        pool.close()


def test_a_wrong_token_is_refused(deployment, runs):
    with pytest.raises(deploy.DeployError) as err:
        _first_run(deployment, token="not-the-token")
    assert "password authentication failed" in str(err.value) and "not-the-token" not in str(err.value)


def test_a_missing_identity_role_is_named_not_invented(deployment, runs):
    with psycopg.connect(deployment["config"].pgstac_dsn.get_secret_value(), user="postgres",
                         password=ADMIN_TOKEN, autocommit=True) as conn:
        with pytest.raises(deploy.MissingRole, match="func-rmh-other.*pgaadauth"):
            deploy.grant_app_role(conn, "func-rmh-other", "00000000-0000-0000-0000-000000000001")
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'func-rmh-other'").fetchone() is None


def test_admin_dsn_keeps_server_and_database_and_swaps_the_user():
    dsn = deploy.admin_dsn("host=psql.example port=5432 dbname=pgstac user=func-rmh-x sslmode=require",
                           "me@contoso.com")
    assert psycopg.conninfo.conninfo_to_dict(dsn) == {
        "host": "psql.example", "port": "5432", "dbname": "pgstac", "user": "me@contoso.com",
        "sslmode": "require"}


def test_static_catalog_deployments_only_get_containers(tmp_path):
    from storage import LocalDirStore

    config = load_settings(storage_local_dir=str(tmp_path))
    report = deploy.first_run(config, store=LocalDirStore(tmp_path))
    assert report.outcome("container rasters") == "created"
    assert report.outcome("pgstac").startswith("skipped")


# ------------------------------------------------------------------ the app identity's role

STAND_IN_PGAADAUTH = """
CREATE FUNCTION pgaadauth_create_principal_with_oid(rolename text, objectid text, objecttype text,
                                                    isadmin boolean, ismfa boolean) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  IF objectid !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
    RAISE EXCEPTION 'Object ID % is not a valid GUID', objectid USING ERRCODE = '22023';
  END IF;
  IF objecttype NOT IN ('user', 'group', 'service') THEN
    RAISE EXCEPTION 'Unsupported principal type %', objecttype USING ERRCODE = '22023';
  END IF;
  EXECUTE format('CREATE ROLE %I LOGIN', rolename);
  RETURN format('Created role for "%s"', rolename);
END $$;
"""


@pytest.fixture
def pgaadauth(entra_postgres, deployment):
    """Azure's pgaadauth, stood in for in the ``postgres`` database only (as on Azure), for one test."""
    with psycopg.connect(entra_postgres.dsn_for(None), autocommit=True) as conn:
        conn.execute(STAND_IN_PGAADAUTH)
    yield
    with psycopg.connect(entra_postgres.dsn_for(None), autocommit=True) as conn:
        conn.execute("DROP FUNCTION pgaadauth_create_principal_with_oid(text, text, text, boolean, boolean)")


def _admin_conn(deployment):
    return psycopg.connect(deployment["config"].pgstac_dsn.get_secret_value(), user="postgres",
                           password=ADMIN_TOKEN, autocommit=True)


def test_the_identity_role_is_created_in_postgres_and_granted_in_the_catalog(deployment, runs, pgaadauth):
    """first-run with a role that does not exist yet: created through pgaadauth over a connection to
    the postgres database (the catalog's database has no pgaadauth), then granted in the catalog."""
    role, oid = "func-rmh-fresh", "7d4b9a52-1c3e-4f60-8a2b-5e9c0d1f2a3b"
    report, _, out = _first_run(deployment, app_role=role, app_object_id=oid)
    assert report.outcome(f"role {role}") == "created, granted pgstac_ingest"
    with _admin_conn(deployment) as conn:
        assert conn.execute("SELECT to_regproc('pgaadauth_create_principal_with_oid')").fetchone()[0] is None
        assert conn.execute("SELECT pg_has_role(%s, 'pgstac_ingest', 'member')", (role,)).fetchone()[0]
        assert deploy.grant_app_role(conn, role, oid) == "exists, granted pgstac_ingest"


def test_a_refused_principal_names_the_servers_reason(deployment, runs, pgaadauth):
    with _admin_conn(deployment) as conn:
        with pytest.raises(deploy.MissingRole) as err:
            deploy.grant_app_role(conn, "func-rmh-badid", "not-a-guid")
        message = str(err.value)
        assert "func-rmh-badid" in message and "not-a-guid" in message and "/postgres failed" in message
        assert "22023" in message and "Object ID not-a-guid is not a valid GUID" in message
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'func-rmh-badid'").fetchone() is None


def test_a_server_without_entra_authentication_is_named(deployment, runs):
    with _admin_conn(deployment) as conn:
        with pytest.raises(deploy.MissingRole, match="has no pgaadauth_create_principal_with_oid: Microsoft "
                                                     "Entra authentication is not enabled"):
            deploy.grant_app_role(conn, "func-rmh-noentra", "7d4b9a52-1c3e-4f60-8a2b-5e9c0d1f2a3b")


# ------------------------------------------------------------ right after provisioning: 403

AZURE_403 = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>'
             b"<Message>This request is not authorized to perform this operation using this permission.\n"
             b"RequestId:5f0e2c1a-b01e-0042-3c1d-8a1b2c000000\nTime:2026-12-07T08:00:00.0000000Z</Message></Error>")


class _DeniesThenForwards(http.server.BaseHTTPRequestHandler):
    """Azure Storage while a new role assignment propagates: 403 AuthorizationPermissionMismatch for
    the first ``denials`` requests, then every request goes through to Azurite."""

    protocol_version = "HTTP/1.1"

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.lock:
            deny = server.denials > 0
            server.denials -= deny
            server.denied += deny
        if deny:
            self.send_response(403, "This request is not authorized to perform this operation using this permission.")
            for name, value in (("Content-Type", "application/xml"), ("Content-Length", str(len(AZURE_403))),
                                ("x-ms-error-code", "AuthorizationPermissionMismatch"),
                                ("x-ms-request-id", "5f0e2c1a-b01e-0042-3c1d-8a1b2c000000")):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(AZURE_403)
            return
        upstream = http.client.HTTPSConnection("127.0.0.1", server.upstream_port, context=server.client_tls, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle

    def log_message(self, *args):
        pass


@pytest.fixture
def propagating_storage(azurite_oauth):
    """A storage endpoint that refuses the first ``denials`` requests with 403, then serves Azurite."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DeniesThenForwards)
    server.lock, server.denials, server.denied = threading.Lock(), 0, 0
    server.upstream_port = azurite_oauth.port
    server.client_tls = ssl.create_default_context(cafile=str(azurite_oauth.ca_path))
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(azurite_oauth.ca_path, azurite_oauth.workdir / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _storage_only(proxy, azurite_oauth, containers):
    from services import EmulatorCredential
    from storage import AzureBlobStore

    url = f"https://127.0.0.1:{proxy.server_address[1]}/devstoreaccount1"
    config = load_settings(storage_backend="azure", storage_account_url=url, input_container=containers[0],
                           sync_containers=containers[1:])
    store = AzureBlobStore(account_url=url, credential=EmulatorCredential(), connection_verify=str(azurite_oauth.ca_path))
    return config, store


def test_first_run_waits_out_a_blob_role_that_is_still_propagating(propagating_storage, azurite_oauth):
    propagating_storage.denials = 3
    config, store = _storage_only(propagating_storage, azurite_oauth, ["landing-403", "archive-403"])
    out, naps = io.StringIO(), []
    report = deploy.first_run(config, admin_user="me@contoso.com", store=store, out=out,
                              storage_wait_seconds=60, storage_retry_seconds=0.01, sleep=naps.append)
    assert propagating_storage.denied == 3 and len(naps) == 3
    assert report.outcome("container landing-403") == "created" and report.outcome("container archive-403") == "created"
    text = out.getvalue()
    assert text.count("still taking effect") == 3 and "AuthorizationPermissionMismatch" in text
    store.list_page("archive-403", page_size=1)  # exists now


def test_first_run_says_what_to_check_when_the_role_never_takes_effect(propagating_storage, azurite_oauth):
    propagating_storage.denials = 10**6
    config, store = _storage_only(propagating_storage, azurite_oauth, ["never-403"])
    with pytest.raises(deploy.StorageAccessNotGranted) as err:
        deploy.first_run(config, admin_user="me@contoso.com", store=store, out=io.StringIO(),
                         storage_wait_seconds=0.3, storage_retry_seconds=0.1)
    message = str(err.value)
    assert "still refuses me@contoso.com" in message and "Storage Blob Data Contributor" in message
    assert "azd hooks run postprovision" in message
    assert 2 <= propagating_storage.denied <= 6  # bounded


# ------------------------------------------------- PostgreSQL refusing this machine's address

def test_a_firewall_refusing_this_address_says_which_address_to_let_through(tmp_path, monkeypatch):
    from services import PgStac

    server = PgStac(dbname=None, password=ADMIN_TOKEN).start()
    try:
        hba = server.workdir / "data" / "pg_hba.conf"
        hba.write_text("local all all trust\n")  # no TCP client is let through, as Azure's firewall
        os.killpg(server.proc.pid, signal.SIGHUP)
        config = load_settings(storage_backend="local", storage_local_dir=str(tmp_path), catalog_backend="pgstac",
                               pgstac_dsn=f"host=127.0.0.1 port={server.port} dbname=postgres user=app sslmode=disable",
                               pgstac_use_managed_identity=True)
        monkeypatch.setenv("CLIENT_IP_ADDRESS", "51.140.99.99")
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while True:
            try:
                deploy.first_run(config, admin_user="postgres", password_provider=lambda: ADMIN_TOKEN)
            except deploy.PostgresUnreachable as err:
                message = str(err)
                break
            except deploy.DeployError:  # the reload has not happened yet
                assert dt.datetime.now() < deadline
        assert "refused this machine's address 127.0.0.1" in message and "which is 51.140.99.99" in message
        assert "azd env set CLIENT_IP_ADDRESS 127.0.0.1; azd provision" in message
    finally:
        server.stop()
