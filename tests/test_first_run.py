"""deploy.py first-run against real services, shaped like the Azure deployment.

- PostgreSQL that accepts TCP logins only with a password (scram-sha-256): the "Entra token" of
  the administrator and of the Function App's identity stand in for the passwords Azure Database
  for PostgreSQL checks. Creating the identity's role goes through Azure's pgaadauth extension,
  which does not exist outside Azure: here the role exists beforehand, as pgaadauth would leave it.
- Azurite over HTTPS with bearer tokens, reached through an account URL with a credential: the
  identity path the Function App uses (no connection string, no key).
"""
from __future__ import annotations

import datetime as dt
import io
import secrets

import psycopg
import pystac
import pytest

import pgstac_catalog
import deploy
import stac_ops
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


def _first_run(deployment, token: str = ADMIN_TOKEN, **kwargs):
    provider = TokenSource(token)
    out = io.StringIO()
    report = deploy.first_run(deployment["config"], admin_user="postgres", app_role=APP_ROLE,
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
