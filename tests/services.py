"""Real test services on 127.0.0.1: Azurite (blob) and a throwaway PostgreSQL + PostGIS + pgSTAC.

Both are started in a temporary directory on free ports and stopped (with their data removed) by
``stop()``. The fixtures in ``tests/conftest.py`` use them unless ``AZURITE_CONNECTION_STRING`` /
``PGSTAC_DSN`` point at services that already run.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class ServiceStartError(RuntimeError):
    """A test service did not come up; the message carries its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(f"exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceStartError(f"port {port} not open after {timeout:.0f}s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Azurite:
    """Azurite's blob service on 127.0.0.1, data in a temporary ``--location``.

    With ``oauth=True`` it serves HTTPS with a throwaway self-signed certificate (``ca_path``) and
    accepts bearer tokens (``--oauth basic``), which is what user delegation keys need. With
    ``access_log=True`` it logs one line per request, which ``request_counts()`` tallies.
    """

    port: int = 0
    oauth: bool = False
    access_log: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="azurite-")))
    proc: subprocess.Popen | None = None

    @property
    def account_url(self) -> str:
        scheme = "https" if self.oauth else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def ca_path(self) -> Path:
        return self.workdir / "cert.pem"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def pause(self) -> None:
        """Stop the emulator and keep its data: an outage. ``resume()`` ends it."""
        _terminate(self.proc)

    def resume(self) -> "Azurite":
        """Serve again on the same port from the same data (ends a ``pause()``)."""
        return self.start()

    def start(self) -> "Azurite":
        if not AZURITE_BIN.exists():
            raise ServiceStartError(f"{AZURITE_BIN} missing: run `npm ci` (make test does)")
        self.port = self.port or free_port()
        log = self.workdir / "azurite.log"
        args = [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--location", str(self.workdir / "data"), "--skipApiVersionCheck",
                "--disableTelemetry", "--loose"]
        if not self.access_log:
            args.append("--silent")
        if self.oauth:
            _self_signed_certificate(self.ca_path, self.workdir / "key.pem")
            args += ["--oauth", "basic", "--cert", str(self.ca_path), "--key", str(self.workdir / "key.pem")]
        self.proc = subprocess.Popen(
            args,
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_for_port(self.port, self.proc, log)
        return self

    def request_counts(self) -> dict[str, int]:
        """Requests served so far, by HTTP method (needs ``access_log=True``)."""
        counts: dict[str, int] = {}
        log = self.workdir / "azurite.log"
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            match = _ACCESS_LINE.search(line)
            if match:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        return counts

    def stop(self) -> None:
        _terminate(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


_ACCESS_LINE = re.compile(r'"(GET|PUT|HEAD|DELETE|POST|OPTIONS) /')


@dataclass
class PgStac:
    """A throwaway PostgreSQL 15 cluster with PostGIS and pgSTAC migrated by ``pypgstac migrate``.

    With ``password`` TCP connections need it (scram-sha-256), as Azure Database for PostgreSQL
    needs an Entra token; ``dbname=None`` starts the server without creating a database.
    """

    port: int = 0
    dbname: str | None = "pgstac"
    password: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgstac-")))
    proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str | None) -> str:
        secret = f":{self.password}" if self.password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{dbname or 'postgres'}"

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def start(self) -> "PgStac":
        self.port = self.port or free_port()
        datadir, log = self.workdir / "data", self.workdir / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        auth = ["--auth=trust"]
        if self.password:
            pwfile = self.workdir / "pwfile"
            pwfile.write_text(self.password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        subprocess.run(
            self._as_postgres(str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres",
                              *auth, "--encoding=UTF8", "--no-sync"),
            check=True, capture_output=True,
        )
        self._serve()
        if self.dbname:
            self.create_database(self.dbname)
        return self

    def pause(self) -> None:
        """Stop the server (fast shutdown: open connections break) and keep its data: an outage."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # fast shutdown; SIGTERM would wait for clients
            self.proc.wait(timeout=30)

    def resume(self) -> "PgStac":
        """Serve the same cluster on the same port again (ends a ``pause()``)."""
        self._serve()
        return self

    def _serve(self) -> None:
        datadir, log = self.workdir / "data", self.workdir / "postgres.log"
        self.proc = subprocess.Popen(
            self._as_postgres(str(PG_BIN / "postgres"), "-D", str(datadir), "-h", "127.0.0.1",
                              "-p", str(self.port), "-k", str(self.workdir), "-c", "fsync=off",
                              "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                              "-c", "max_connections=200"),
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_for_port(self.port, self.proc, log)
        self._wait_ready(log)

    def _wait_ready(self, log: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise ServiceStartError(f"PostgreSQL not ready:\n{_tail(log)}")
            time.sleep(0.1)

    def create_database(self, name: str, *, migrate: bool = True) -> str:
        """Create a database (with pgSTAC migrated into it unless ``migrate`` is false) and
        return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn_for(None), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dsn = self.dsn_for(name)
        if not migrate:
            return dsn
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "pypgstac"), "migrate", "--dsn", dsn],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ServiceStartError(f"pypgstac migrate failed:\n{proc.stderr[-2000:]}")
        return dsn

    def stop(self) -> None:
        _terminate(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _self_signed_certificate(cert_path: Path, key_path: Path) -> None:
    """A throwaway certificate for 127.0.0.1, valid for a day (cryptography comes with azure-identity)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))


class EmulatorCredential:
    """An azure-core TokenCredential for Azurite's ``--oauth basic``: an unsigned JWT whose audience,
    issuer and lifetime Azurite checks. It stands in for Azure AD, which cannot be reached here."""

    tenant = "ab1f708d-50f6-404c-a006-d71b2ac7a606"
    object_id = "5f2a1b7e-0c4d-4e8a-9b3f-2d6c7a8e9f01"

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        def b64(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        now = int(time.time())
        claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{self.tenant}/",
                  "iat": now, "nbf": now, "exp": now + 3600, "oid": self.object_id, "tid": self.tenant}
        return AccessToken(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.unsigned", now + 3600)


def _terminate(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def applied_local_env(env: dict[str, str]):
    """Generator for a module's ``service_env`` override on the local-directory backend: ``env``
    set, the Azure/pgSTAC settings removed, the settings cache cleared around it."""
    import pytest

    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN", "RMH_STAC_SCHEMA_DIR"):
            patch.delenv(key, raising=False)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()
