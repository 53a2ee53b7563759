"""Deployment tooling, run on a developer's machine (not deployed): the package that is uploaded
to the Function App, and the first-run steps after provisioning.

    python deploy.py package [--out dist/rmhgeoapi.zip]
    python deploy.py first-run --admin-user me@contoso.com --app-role func-rmh-abc --app-object-id <oid>

``package`` zips the repository root with ``.funcignore`` applied, as ``func azure functionapp
publish`` and ``azd deploy`` do; ``requirements.txt`` goes with it for the remote build. The
dashboard's npm libraries (``dashboard.VENDOR_FILES``, licences included) are copied from
``node_modules/`` into the zip's ``dashboard/vendor/``: they are installed, never committed.

``first-run`` reads the app's settings from the environment (``RMH_*``, as ``azd env get-values``
prints them) and makes a provisioned deployment usable, idempotently: it creates the containers,
migrates pgSTAC with ``pypgstac migrate`` signed in with an Entra token, lets the Function App's
identity write the catalog, and creates the default collections. Running it again changes
nothing that is already in place.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Sequence, TextIO

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_PACKAGE = REPO_ROOT / "dist" / "rmhgeoapi.zip"
# Azure Database for PostgreSQL accepts Entra access tokens for this resource as passwords.
POSTGRES_TOKEN_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
# Every zip entry gets this timestamp, so the same tree gives the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class DeployError(Exception):
    """A deployment step could not be carried out; the message says what to fix."""


class MissingRole(DeployError):
    """The database role of the Function App's identity does not exist and cannot be created here."""


# ------------------------------------------------------------------------------------- package

def ignore_spec(root: Path):
    """The ``.funcignore`` of ``root`` as a gitignore matcher (the syntax Core Tools reads)."""
    import pathspec

    path = root / ".funcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return pathspec.GitIgnoreSpec.from_lines(lines)


def deployed_files(root: Path) -> list[str]:
    """Paths (POSIX, relative to ``root``) of the files the deployment uploads, sorted.

    Regular files only: symbolic links are not followed, so nothing outside the tree is packed."""
    spec = ignore_spec(root)
    found = []
    for current, dirs, files in os.walk(root):
        rel_dir = Path(current).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        dirs[:] = sorted(d for d in dirs if not os.path.islink(Path(current) / d)
                         and not spec.match_file(f"{prefix}{d}/"))
        for name in files:
            rel = f"{prefix}{name}"
            if not os.path.islink(Path(current) / name) and not spec.match_file(rel):
                found.append(rel)
    return sorted(found)


@dataclasses.dataclass(frozen=True)
class PackageReport:
    path: Path
    files: list[str]  # every entry of the zip, in order
    size: int  # bytes of the zip
    uncompressed: int
    vendored: dict[str, Path] = dataclasses.field(default_factory=dict)  # zip entry -> node_modules file

    def summary(self) -> str:
        return (f"{self.path}: {len(self.files)} files, {self.size / 1024:.1f} KiB zipped "
                f"({self.uncompressed / 1024:.1f} KiB unpacked)")


def build_package(root: Path = REPO_ROOT, out: Path = DEFAULT_PACKAGE) -> PackageReport:
    """Zip what is deployed from ``root`` into ``out``; the same tree always gives the same bytes."""
    files = deployed_files(root)
    if "function_app.py" not in files or "host.json" not in files or "requirements.txt" not in files:
        raise DeployError(f"{root} is not a Functions app: function_app.py, host.json and "
                          "requirements.txt must all be deployed (check .funcignore)")
    vendored = _vendored_files(root) if "dashboard/index.html" in files else {}
    clash = sorted(set(files) & set(vendored))
    if clash:
        raise DeployError(f"{', '.join(clash)} exist in the tree and would be copied from node_modules too")
    sources = {**{rel: root / rel for rel in files}, **vendored}
    files = sorted(sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    uncompressed = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for rel in files:
            data = sources[rel].read_bytes()
            uncompressed += len(data)
            info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    os.replace(tmp, out)
    return PackageReport(out, files, out.stat().st_size, uncompressed, vendored)


def _vendored_files(root: Path) -> dict[str, Path]:
    """The dashboard's npm files (zip entry -> file in node_modules), or a DeployError."""
    import dashboard

    try:
        return dict(dashboard.packaged_vendor_files(root))
    except dashboard.DashboardFileNotFound as err:
        raise DeployError(str(err)) from None


# ----------------------------------------------------------------------------------- first run

@dataclasses.dataclass
class FirstRunReport:
    """What each step found and did: ``(step, outcome)`` in order."""

    steps: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def add(self, step: str, outcome: str, out: TextIO | None = None) -> None:
        self.steps.append((step, outcome))
        if out is not None:
            out.write(f"{step}: {outcome}\n")

    def outcome(self, step: str) -> str:
        return next(o for s, o in self.steps if s == step)


def entra_token_provider(credential=None) -> Callable[[], str]:
    """An Entra access token for Azure Database for PostgreSQL, fetched per connection
    (``DefaultAzureCredential``: the ``az login`` user on a workstation)."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return lambda: credential.get_token(POSTGRES_TOKEN_SCOPE).token


def first_run(config, *, admin_user: str | None = None, app_role: str | None = None,
              app_object_id: str | None = None, password_provider: Callable[[], str] | None = None,
              store=None, out: TextIO | None = None) -> FirstRunReport:
    """Containers, pgSTAC, the app's database role and the default collections; idempotent.

    ``config`` is the app's ``Settings``. With pgSTAC, ``admin_user`` is the Entra administrator
    the steps sign in as (its token from ``password_provider``, by default ``DefaultAzureCredential``
    when ``RMH_PGSTAC_USE_MANAGED_IDENTITY`` is set); ``app_role`` / ``app_object_id`` name the
    Function App's managed identity, which gets a database role allowed to write the catalog.
    """
    from settings import CatalogBackend
    from storage import store_from_settings

    report = FirstRunReport()
    store = store if store is not None else store_from_settings(config)
    for container in _containers(config):
        report.add(f"container {container}", _ensure_container(store, container), out)
    if config.catalog_backend is not CatalogBackend.pgstac:
        report.add("pgstac", f"skipped (RMH_CATALOG_BACKEND={config.catalog_backend.value})", out)
        return report
    if password_provider is None and config.pgstac_use_managed_identity:
        password_provider = entra_token_provider()
    dsn = admin_dsn(config.pgstac_dsn.get_secret_value(), admin_user)
    import catalogs
    import stac_ops

    try:  # sign in first: a refused token fails here at once, not after pypgstac's retries
        conn = catalogs.connect(dsn, password_provider=password_provider, autocommit=True)
    except catalogs.CatalogUnavailable as err:
        raise DeployError(f"cannot sign in to PostgreSQL as {admin_user or 'the DSN user'}: {err}") from None
    with conn:
        report.add("pgstac migrate", migrate_pgstac(dsn, password_provider), out)
        if app_role:
            report.add(f"role {app_role}", grant_app_role(conn, app_role, app_object_id), out)
        catalog = catalogs.PgStacCatalog(conn, validator=stac_ops.StacValidator(config.stac_schema_dir))
        for container in _collection_containers(config):
            collection_id = stac_ops.default_collection_id(container)
            report.add(f"collection {collection_id}", _ensure_collection(catalog, container), out)
    return report


def _containers(config) -> list[str]:
    names = [config.input_container, config.output_container, config.system_container,
             *config.sync_containers]
    if config.static_catalog_container:
        names.append(config.static_catalog_container)
    return list(dict.fromkeys(names))


def _collection_containers(config) -> list[str]:
    """Containers whose default collection jobs write to: the input container and every synced one."""
    return list(dict.fromkeys([config.input_container, *config.sync_containers]))


def _ensure_container(store, container: str) -> str:
    if store.container_exists(container):
        return "exists"
    store.create_container(container)
    return "created"


def _ensure_collection(catalog, container: str) -> str:
    import stac_ops

    collection = stac_ops.collection_for_container(container)
    if catalog.get_collection(collection.id) is not None:
        return "exists"
    catalog.upsert_collection(collection)
    return "created"


def admin_dsn(app_dsn: str, admin_user: str | None) -> str:
    """The app's DSN (server, database, TLS) with the administrator as the user."""
    if not admin_user:
        return app_dsn
    from psycopg.conninfo import make_conninfo

    return make_conninfo(app_dsn, user=admin_user)


def migrate_pgstac(dsn: str, password_provider: Callable[[], str] | None = None) -> str:
    """``pypgstac migrate`` against ``dsn`` (the token as the password); returns its last line."""
    env = {**os.environ}
    if password_provider is not None:
        env["PGPASSWORD"] = password_provider()
    pypgstac = Path(sys.executable).parent / "pypgstac"
    command = [str(pypgstac)] if pypgstac.exists() else [sys.executable, "-m", "pypgstac.pypgstac"]
    proc = subprocess.run([*command, "migrate", "--dsn", dsn], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        from storage import redact

        raise DeployError(f"pypgstac migrate failed: {redact(proc.stderr.strip())[-1500:]}")
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else "migrated"


def grant_app_role(conn, role: str, object_id: str | None = None) -> str:
    """Let ``role`` (the Function App's identity) read and write the catalog: a login role for
    the managed identity (created through Azure's ``pgaadauth`` when missing), member of
    ``pgstac_ingest``, allowed to create the sync staging table in ``public``."""
    from psycopg import sql

    outcome = "exists"
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        if conn.execute("SELECT to_regproc('pgaadauth_create_principal_with_oid')").fetchone()[0] is None:
            raise MissingRole(f"database role {role!r} does not exist and this server has no "
                              "pgaadauth_create_principal_with_oid (Entra authentication is off?)")
        if not object_id:
            raise MissingRole(f"database role {role!r} does not exist: pass the identity's object id "
                              "(--app-object-id) to create it")
        conn.execute("SELECT pgaadauth_create_principal_with_oid(%s, %s, 'service', false, false)",
                     (role, object_id))
        outcome = "created"
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT pgstac_ingest TO {}").format(ident))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident))
    return f"{outcome}, granted pgstac_ingest"


# ---------------------------------------------------------------------------------- command line

def cmd_package(args: argparse.Namespace, out: TextIO) -> int:
    report = build_package(REPO_ROOT, Path(args.out))
    out.write(report.summary() + "\n")
    return 0


def cmd_first_run(args: argparse.Namespace, out: TextIO) -> int:
    from settings import load_settings

    first_run(load_settings(), admin_user=args.admin_user, app_role=args.app_role,
              app_object_id=args.app_object_id, out=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy.py", description="Package and set up rmhgeoapi on Azure.")
    sub = parser.add_subparsers(dest="command", required=True)
    package = sub.add_parser("package", help="zip the app as it is deployed (.funcignore applied)")
    package.add_argument("--out", default=str(DEFAULT_PACKAGE), help=f"zip path (default {DEFAULT_PACKAGE})")
    package.set_defaults(handler=cmd_package)
    first = sub.add_parser("first-run", help="containers, pgSTAC, the app's role and default collections")
    first.add_argument("--admin-user", help="Entra administrator of the PostgreSQL server to sign in "
                       "as (default: the user of RMH_PGSTAC_DSN)")
    first.add_argument("--app-role", help="database role of the Function App's managed identity "
                       "(the user of RMH_PGSTAC_DSN; created when missing)")
    first.add_argument("--app-object-id", help="object (principal) id of that identity")
    first.set_defaults(handler=cmd_first_run)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, out)
    except DeployError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
