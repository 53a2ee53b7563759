"""Deployment tooling, run on a developer's machine (not deployed): the package that is uploaded
to the Function App, and the first-run steps after provisioning.

    python deploy.py package [--out dist/rmhgeoapi.zip | --dir dist/app]
    python deploy.py lock [--upgrade] [--prefer FILE]
    python deploy.py first-run --admin-user me@contoso.com --app-role func-rmh-abc --app-object-id <oid>

``package`` zips the repository root with ``.funcignore`` applied, as ``func azure functionapp
publish`` does; ``requirements.txt`` (and the lock it names) goes with it for the remote build. The
dashboard's npm libraries (``dashboard.VENDOR_FILES``, licences included) are copied from
``node_modules/`` into the zip's ``dashboard/vendor/``: they are installed, never committed.
``--dir`` writes the same files unpacked: azd's prepackage hook builds ``dist/app`` so, and azd
zips and deploys that directory (azure.yaml's ``dist``), not the repository root.

``lock`` writes ``requirements-lock.txt``: every package ``requirements.txt`` installs, transitive
ones included, pinned per Python (3.11, 3.12, 3.13), which requirements.txt names with ``-c`` so the
remote build installs exactly that.

``first-run`` reads the app's settings from the environment (``RMH_*``, as ``azd env get-values``
prints them) and makes a provisioned deployment usable, idempotently: it migrates pgSTAC with
``pypgstac migrate`` signed in with an Entra token, lets the Function App's identity write the
catalog (its role created through Azure's ``pgaadauth`` in the ``postgres`` database), creates the
default collections, and then the containers, waiting out the minutes a new blob role takes to
take effect. Running it again changes nothing that is already in place.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Sequence, TextIO

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_PACKAGE = REPO_ROOT / "dist" / "rmhgeoapi.zip"
#: The unpacked package azd deploys (azure.yaml: services.api.dist).
DEFAULT_PACKAGE_DIR = REPO_ROOT / "dist" / "app"
# Azure Database for PostgreSQL accepts Entra access tokens for this resource as passwords.
POSTGRES_TOKEN_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
# Every zip entry gets this timestamp, so the same tree gives the same bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class DeployError(Exception):
    """A deployment step could not be carried out; the message says what to fix."""


class MissingRole(DeployError):
    """The database role of the Function App's identity does not exist and cannot be created here."""


class StorageAccessNotGranted(DeployError):
    """The storage account still refuses the deployer after the wait for its role to take effect."""


class PostgresUnreachable(DeployError):
    """PostgreSQL cannot be reached from this machine, or its firewall refuses this machine's address."""


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
    files: list[str]  # every entry of the zip (or file of the directory), in order
    size: int  # bytes of the zip (of the files, for a directory)
    uncompressed: int
    vendored: dict[str, Path] = dataclasses.field(default_factory=dict)  # entry -> node_modules file

    def summary(self) -> str:
        if self.path.is_dir():
            return f"{self.path}: {len(self.files)} files, {self.uncompressed / 1024:.1f} KiB"
        return (f"{self.path}: {len(self.files)} files, {self.size / 1024:.1f} KiB zipped "
                f"({self.uncompressed / 1024:.1f} KiB unpacked)")


def package_sources(root: Path = REPO_ROOT) -> tuple[dict[str, Path], dict[str, Path]]:
    """What the package holds: entry -> source file (the tree's deployed files and the dashboard's
    npm files), and the npm part alone; DeployError when it would not be a Functions app."""
    files = deployed_files(root)
    if "function_app.py" not in files or "host.json" not in files or "requirements.txt" not in files:
        raise DeployError(f"{root} is not a Functions app: function_app.py, host.json and "
                          "requirements.txt must all be deployed (check .funcignore)")
    vendored = _vendored_files(root) if "dashboard/index.html" in files else {}
    clash = sorted(set(files) & set(vendored))
    if clash:
        raise DeployError(f"{', '.join(clash)} exist in the tree and would be copied from node_modules too")
    sources = {**{rel: root / rel for rel in files}, **vendored}
    return dict(sorted(sources.items())), vendored


def build_package(root: Path = REPO_ROOT, out: Path = DEFAULT_PACKAGE) -> PackageReport:
    """Zip what is deployed from ``root`` into ``out``; the same tree always gives the same bytes."""
    sources, vendored = package_sources(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    uncompressed = 0
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for rel, source in sources.items():
            data = source.read_bytes()
            uncompressed += len(data)
            info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    os.replace(tmp, out)
    return PackageReport(out, list(sources), out.stat().st_size, uncompressed, vendored)


def build_package_dir(root: Path = REPO_ROOT, out: Path = DEFAULT_PACKAGE_DIR) -> PackageReport:
    """The same files as ``build_package``, unpacked into the directory ``out`` (replaced whole):
    what azd deploys (azure.yaml's ``dist``), since azd zips a directory itself."""
    sources, vendored = package_sources(root)
    if out.exists() and any(out.iterdir()) and not {"function_app.py", "host.json"} <= {p.name for p in out.iterdir()}:
        raise DeployError(f"{out} exists and is not a package built here: give an empty or new directory")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, source in sources.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    total = sum(source.stat().st_size for source in sources.values())
    return PackageReport(out, list(sources), total, total, vendored)


def _vendored_files(root: Path) -> dict[str, Path]:
    """The dashboard's npm files (zip entry -> file in node_modules), or a DeployError."""
    import dashboard

    try:
        return dict(dashboard.packaged_vendor_files(root))
    except dashboard.DashboardFileNotFound as err:
        raise DeployError(str(err)) from None


# ----------------------------------------------------------------------------------------- lock

#: Every package the remote build installs, pinned per Python: requirements.txt names it with
#: ``-c requirements-lock.txt``, so pip (Oryx's remote build runs ``pip install -r requirements.txt``)
#: installs exactly these versions, transitive dependencies included.
LOCK_FILE = REPO_ROOT / "requirements-lock.txt"
LOCK_PYTHONS = ("3.11", "3.12", "3.13")
_LOCK_LINE = re.compile(r"^-c\s+requirements-lock\.txt\s*$", re.MULTILINE)


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_python(version: str) -> str:
    """An interpreter of ``version``: ``python<version>`` on PATH, or pyenv's; DeployError otherwise."""
    import glob

    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for candidate in [shutil.which(f"python{version}") or "",
                      *sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))]:
        if candidate and subprocess.run([candidate, "-c", f"import sys; assert '%d.%d' % sys.version_info[:2] == "
                                                      f"'{version}'"], capture_output=True).returncode == 0:
            return candidate
    raise DeployError(f"Python {version} is needed to resolve its pins: install it (e.g. pyenv install {version})")


def resolve(python: str, requirements: Path, constraints: Sequence[Path] = ()) -> dict[str, str]:
    """name -> version of everything pip installs for ``requirements`` with this interpreter on this
    platform (``pip install --dry-run --report``, nothing installed), wheels preferred as the remote
    build prefers them, from PyPI alone: this machine's pip configuration (indexes, constraints) is
    left out, since the remote build does not have it."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--prefer-binary",
                   "--disable-pip-version-check", "--quiet", "--report", str(report), "-r", str(requirements)]
        for path in constraints:
            command += ["-c", str(path)]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=pypi_only_env())
        if proc.returncode != 0:
            raise DeployError(f"pip could not resolve {requirements.name} with {python}: {proc.stderr.strip()[-1500:]}")
        installs = json.loads(report.read_text())["install"]
    return {canonical_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


def pypi_only_env() -> dict[str, str]:
    """This environment without pip's settings, and no pip configuration file read."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}


def read_lock(path: Path = LOCK_FILE) -> dict[str, dict[str, str]]:
    """Python version -> {name: version}, as pip reads the lock's environment markers."""
    from packaging.requirements import Requirement

    pins: dict[str, dict[str, str]] = {version: {} for version in LOCK_PYTHONS}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        version = str(requirement.specifier).removeprefix("==")
        for python in LOCK_PYTHONS:
            if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
                pins[python][canonical_name(requirement.name)] = version
    return pins


def write_lock(pins: dict[str, dict[str, str]], path: Path = LOCK_FILE) -> None:
    """One line per name and version, with the Pythons it is for when not all of them."""
    lines = []
    for name in sorted({n for versions in pins.values() for n in versions}):
        by_version: dict[str, list[str]] = {}
        for python in LOCK_PYTHONS:
            if name in pins[python]:
                by_version.setdefault(pins[python][name], []).append(python)
        for version, pythons in sorted(by_version.items(), key=lambda item: item[1]):
            marker = "" if len(pythons) == len(LOCK_PYTHONS) else " ; " + " or ".join(
                f'python_version == "{p}"' for p in pythons)
            lines.append(f"{name}=={version}{marker}")
    header = ("# Generated by `make lock` (python deploy.py lock): every package the app's requirements.txt\n"
              "# installs, transitive ones included, pinned per Python, as pip resolves them from PyPI on\n"
              "# Linux x86_64 (where the Flex Consumption remote build installs them). requirements.txt\n"
              "# names this file with `-c`: edit requirements.txt, then regenerate this file.\n"
              "# tests/test_lock.py checks that they agree.\n")
    path.write_text(header + "\n".join(lines) + "\n")


def _direct_names(text: str) -> set[str]:
    from packaging.requirements import Requirement

    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {canonical_name(Requirement(line).name) for line in lines if line and not line.startswith("-")}


def _preferred_pins(sources: Sequence[Path], direct: set[str]) -> str:
    """``name==version`` lines (markers kept) of the sources, leaving out what requirements.txt pins
    itself (its own pins decide, per Python)."""
    from packaging.requirements import Requirement

    kept = []
    for source in sources:
        for line in source.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-") and "==" in line \
                    and canonical_name(Requirement(line).name) not in direct:
                kept.append(line)
    return "\n".join(kept) + "\n"


def lock_requirements(requirements: Path = REPO_ROOT / "requirements.txt", out: Path = LOCK_FILE, *,
                      prefer: Sequence[Path] = (), upgrade: bool = False, report: TextIO | None = None) -> dict:
    """Resolve requirements.txt (without its lock) for every Python of LOCK_PYTHONS and write the
    lock. Versions already locked (and those of ``prefer``, e.g. `pip freeze` of a tested venv) are
    kept where they still resolve; ``upgrade`` takes the newest instead."""
    import tempfile

    text = requirements.read_text()
    if not _LOCK_LINE.search(text):
        raise DeployError(f"{requirements.name} does not name the lock: add the line `-c {out.name}`")
    with tempfile.TemporaryDirectory() as tmp:
        unlocked = Path(tmp) / "requirements.txt"
        unlocked.write_text(_LOCK_LINE.sub("", text))
        preferred = Path(tmp) / "preferred.txt"
        sources = [] if upgrade else [*(p for p in [out] if p.exists()), *prefer]
        preferred.write_text(_preferred_pins(sources, direct=_direct_names(text)))
        pins = {}
        for version in LOCK_PYTHONS:
            python = find_python(version)
            try:
                pins[version] = resolve(python, unlocked, [preferred])
            except DeployError:
                pins[version] = resolve(python, unlocked)  # a preferred pin no longer fits
            if report is not None:
                report.write(f"Python {version}: {len(pins[version])} packages\n")
    write_lock(pins, out)
    return pins


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


#: How long first-run waits for the deployer's new blob role to take effect, and how often it tries.
DEFAULT_STORAGE_WAIT_SECONDS = 600
STORAGE_RETRY_SECONDS = 15


def first_run(config, *, admin_user: str | None = None, app_role: str | None = None,
              app_object_id: str | None = None, password_provider: Callable[[], str] | None = None,
              store=None, out: TextIO | None = None, storage_wait_seconds: float = DEFAULT_STORAGE_WAIT_SECONDS,
              storage_retry_seconds: float = STORAGE_RETRY_SECONDS,
              sleep: Callable[[float], None] = time.sleep) -> FirstRunReport:
    """pgSTAC, the app's database role, the default collections, then the containers; idempotent.

    ``config`` is the app's ``Settings``. With pgSTAC, ``admin_user`` is the Entra administrator
    the steps sign in as (its token from ``password_provider``, by default ``DefaultAzureCredential``
    when ``RMH_PGSTAC_USE_MANAGED_IDENTITY`` is set); ``app_role`` / ``app_object_id`` name the
    Function App's managed identity, which gets a database role allowed to write the catalog.
    The containers come last: the deployer's blob role, assigned moments ago by provisioning, takes
    minutes to take effect, and until it does storage answers 403; that is waited out for up to
    ``storage_wait_seconds`` (saying so), then StorageAccessNotGranted says what to check.
    """
    from settings import CatalogBackend
    from storage import store_from_settings

    report = FirstRunReport()
    if config.catalog_backend is CatalogBackend.pgstac:
        _first_run_catalog(config, report, admin_user=admin_user, app_role=app_role, app_object_id=app_object_id,
                           password_provider=password_provider, out=out)
    else:
        report.add("pgstac", f"skipped (RMH_CATALOG_BACKEND={config.catalog_backend.value})", out)
    store = store if store is not None else store_from_settings(config)
    for container in _containers(config):
        outcome = _waiting_for_storage_access(
            lambda: _ensure_container(store, container), f"container {container}", admin_user, out=out,
            wait_seconds=storage_wait_seconds, retry_seconds=storage_retry_seconds, sleep=sleep)
        report.add(f"container {container}", outcome, out)
    return report


def _first_run_catalog(config, report: FirstRunReport, *, admin_user, app_role, app_object_id, password_provider,
                       out) -> None:
    if password_provider is None and config.pgstac_use_managed_identity:
        password_provider = entra_token_provider()
    dsn = admin_dsn(config.pgstac_dsn.get_secret_value(), admin_user)
    import catalogs
    import pgstac_catalog
    import stac_ops
    import stac_validation

    try:  # sign in first: a refused token fails here at once, not after pypgstac's retries
        conn = pgstac_catalog.connect(dsn, password_provider=password_provider, autocommit=True)
    except catalogs.CatalogUnavailable as err:
        raise _sign_in_failure(dsn, admin_user, err) from None
    with conn:
        report.add("pgstac migrate", migrate_pgstac(dsn, password_provider), out)
        if app_role:
            report.add(f"role {app_role}", grant_app_role(conn, app_role, app_object_id), out)
        catalog = pgstac_catalog.PgStacCatalog(conn, validator=stac_validation.StacValidator(config.stac_schema_dir))
        for container in _collection_containers(config):
            collection_id = stac_ops.default_collection_id(container)
            report.add(f"collection {collection_id}", _ensure_collection(catalog, container), out)


_NO_HBA_ENTRY = re.compile(r'no pg_hba\.conf entry for host "([^"]+)"')


def _sign_in_failure(dsn: str, admin_user: str | None, err: Exception) -> DeployError:
    """The sign-in failure, named: the server's firewall refusing this machine's address (Azure
    answers "no pg_hba.conf entry for host <the address it sees>"), the server out of reach, or
    the sign-in itself."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    host, port = params.get("host", "the server"), params.get("port", "5432")
    text = str(err)
    seen = _NO_HBA_ENTRY.search(text)
    if seen:
        given = os.environ.get("CLIENT_IP_ADDRESS") or "(not set)"
        return PostgresUnreachable(
            f"PostgreSQL at {host} refused this machine's address {seen.group(1)}: its firewall lets through "
            f"CLIENT_IP_ADDRESS only, which is {given}. Run: azd env set CLIENT_IP_ADDRESS {seen.group(1)}; "
            "azd provision (it adds the firewall rule and runs this step again)")
    if "timeout" in text.lower() or "could not connect" in text.lower() or "connection refused" in text.lower():
        return PostgresUnreachable(
            f"cannot reach PostgreSQL at {host}:{port} from this machine ({text.strip()[-300:]}): outbound TCP {port} "
            "may be blocked on this network (run from one that allows it, e.g. Azure Cloud Shell), or the server "
            "is still starting; then run `azd hooks run postprovision`")
    return DeployError(f"cannot sign in to PostgreSQL as {admin_user or 'the DSN user'}: {text}")


def _waiting_for_storage_access(step: Callable[[], str], what: str, principal: str | None, *, out: TextIO | None,
                                wait_seconds: float, retry_seconds: float, sleep: Callable[[float], None]) -> str:
    """``step()``, tried again while storage answers 403 (a role still propagating), up to the wait."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    from storage import StorageAccessDenied

    def say(state) -> None:
        if out is not None:
            out.write(f"{what}: storage refuses access ({state.outcome.exception()}): the blob role assigned at "
                      f"provisioning is still taking effect; trying again in {retry_seconds:.0f}s "
                      f"({state.seconds_since_start:.0f}s of at most {wait_seconds:.0f}s)\n")
            out.flush()

    retrying = Retrying(retry=retry_if_exception_type(StorageAccessDenied), wait=wait_fixed(retry_seconds),
                        stop=stop_after_delay(max(wait_seconds - retry_seconds, 0)), sleep=sleep,
                        before_sleep=say, reraise=True)
    try:
        return retrying(step)
    except StorageAccessDenied as err:
        raise StorageAccessNotGranted(
            f"{what}: the storage account still refuses {principal or 'the deployer'} after about "
            f"{wait_seconds:.0f}s ({err}). A role assigned at provisioning takes up to about 10 minutes to take "
            "effect; check that this principal holds Storage Blob Data Contributor on the account (docs/deploy.md, "
            "Keys and identities), then run `azd hooks run postprovision`") from None


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
    import stac_collections

    collection = stac_collections.collection_for_container(container)
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
    the managed identity (created when missing, see ``create_entra_principal``), member of
    ``pgstac_ingest``, allowed to create the sync staging table in ``public``. ``conn`` is the
    administrator's connection to the catalog's database."""
    from psycopg import sql

    outcome = "exists"
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        create_entra_principal(conn, role, object_id)
        outcome = "created"
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("GRANT pgstac_ingest TO {}").format(ident))
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(ident))
    return f"{outcome}, granted pgstac_ingest"


#: Azure's pgaadauth extension, which creates login roles for Entra principals. It lives in the
#: server's ``postgres`` database, where Microsoft's documentation runs it (not in other databases).
PGAADAUTH_FUNCTION = "pgaadauth_create_principal_with_oid"
PGAADAUTH_DATABASE = "postgres"


def create_entra_principal(conn, role: str, object_id: str | None) -> None:
    """Create the login role of an Entra service principal with ``pgaadauth_create_principal_with_oid``
    over a connection to the ``postgres`` database (same server, user and token as ``conn``); roles
    belong to the whole server, so the grants then happen in the catalog's database. Each way this
    can fail is a MissingRole naming its cause."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    if not object_id:
        raise MissingRole(f"database role {role!r} does not exist: pass the identity's object id "
                          "(--app-object-id) to create it")
    params = conn.info.get_parameters()
    where = f"{params.get('host', 'the server')}/{PGAADAUTH_DATABASE}"
    try:
        admin = psycopg.connect(make_conninfo(**{**params, "dbname": PGAADAUTH_DATABASE}),
                                password=conn.info.password, autocommit=True)
    except psycopg.OperationalError as err:
        raise MissingRole(f"database role {role!r} does not exist, and creating it needs a connection to "
                          f"{where} as {params.get('user')}, which failed: {str(err).strip()}") from None
    with admin:
        if admin.execute("SELECT count(*) FROM pg_proc WHERE proname = %s", (PGAADAUTH_FUNCTION,)).fetchone()[0] == 0:
            raise MissingRole(f"database role {role!r} does not exist, and {where} has no {PGAADAUTH_FUNCTION}: "
                              "Microsoft Entra authentication is not enabled on this server (authConfig "
                              "activeDirectoryAuth), so the app identity's role cannot be created")
        try:
            admin.execute(f"SELECT * FROM {PGAADAUTH_FUNCTION}(%s, %s, 'service', false, false)", (role, object_id))
        except psycopg.Error as err:
            diag = err.diag
            raise MissingRole(f"creating database role {role!r} for object id {object_id} with {PGAADAUTH_FUNCTION} "
                              f"on {where} failed: {diag.sqlstate or ''} {diag.message_primary or err}".strip()) from None
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        raise MissingRole(f"{PGAADAUTH_FUNCTION} on {where} returned, but no role {role!r} exists afterwards")


# ---------------------------------------------------------------------------------- command line

def cmd_package(args: argparse.Namespace, out: TextIO) -> int:
    report = build_package_dir(REPO_ROOT, Path(args.dir)) if args.dir else build_package(REPO_ROOT, Path(args.out))
    out.write(report.summary() + "\n")
    return 0


def cmd_lock(args: argparse.Namespace, out: TextIO) -> int:
    lock_requirements(prefer=[Path(p) for p in args.prefer], upgrade=args.upgrade, report=out)
    out.write(f"{LOCK_FILE.name} written\n")
    return 0


def cmd_first_run(args: argparse.Namespace, out: TextIO) -> int:
    import catalogs
    import faults
    import storage
    from settings import load_settings

    try:
        first_run(load_settings(), admin_user=args.admin_user, app_role=args.app_role,
                  app_object_id=args.app_object_id, out=out, storage_wait_seconds=args.storage_wait_seconds)
    except (storage.StorageError, catalogs.CatalogError, faults.Transient) as err:
        raise DeployError(f"{type(err).__name__}: {err}") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy.py", description="Package and set up rmhgeoapi on Azure.")
    sub = parser.add_subparsers(dest="command", required=True)
    package = sub.add_parser("package", help="zip the app as it is deployed (.funcignore applied)")
    package.add_argument("--out", default=str(DEFAULT_PACKAGE), help=f"zip path (default {DEFAULT_PACKAGE})")
    package.add_argument("--dir", help="write the same files unpacked into this directory instead (what azd "
                         f"deploys: {DEFAULT_PACKAGE_DIR.relative_to(REPO_ROOT)}, azure.yaml's dist)")
    package.set_defaults(handler=cmd_package)
    lock = sub.add_parser("lock", help="pin every package requirements.txt installs, per Python (requirements-lock.txt)")
    lock.add_argument("--upgrade", action="store_true", help="take the newest versions instead of keeping the locked ones")
    lock.add_argument("--prefer", action="append", default=[], metavar="FILE",
                      help="pins to keep where they fit (e.g. `pip freeze` of a tested venv); repeatable")
    lock.set_defaults(handler=cmd_lock)
    first = sub.add_parser("first-run", help="containers, pgSTAC, the app's role and default collections")
    first.add_argument("--admin-user", help="Entra administrator of the PostgreSQL server to sign in "
                       "as (default: the user of RMH_PGSTAC_DSN)")
    first.add_argument("--app-role", help="database role of the Function App's managed identity "
                       "(the user of RMH_PGSTAC_DSN; created when missing)")
    first.add_argument("--app-object-id", help="object (principal) id of that identity")
    first.add_argument("--storage-wait-seconds", type=float, default=float(os.environ.get(
        "STORAGE_ROLE_WAIT_SECONDS") or DEFAULT_STORAGE_WAIT_SECONDS),
        help="how long to wait for a new blob role to take effect while storage answers 403 (default "
             f"STORAGE_ROLE_WAIT_SECONDS or {DEFAULT_STORAGE_WAIT_SECONDS})")
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
