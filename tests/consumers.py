"""The catalog's consumers, run for real on 127.0.0.1 against what our jobs wrote.

- ``StacApi`` / ``TiTiler``: stac-fastapi-pgstac and titiler-pgstac from ``.venv-consumers``
  (``requirements-consumers.txt``), started with uvicorn on a free port against a pgSTAC DSN, with
  exactly the environment given (nothing of the test process leaks into it) and a fresh working
  directory (both read a ``.env`` from theirs).
- ``StaticSite``: a small HTTP server for a directory (Range, ETag, CORS, HEAD), for STAC Browser's
  built files and for static catalogs or COGs served over HTTP. It records every request.
- ``stac_browser_dist``: STAC Browser (npm, ``tests/consumers/stac-browser``) built once into a cache
  outside the clone, keyed on its lock file and build recipe; ``StacBrowser`` serves it with a
  runtime ``config.js`` naming the catalog.
- ``Browser``: Debian's Chromium, headless, driven by playwright-core (``browser_driver.mjs``);
  requests to anything but loopback are refused and recorded.
- ``read_png`` and the pixel helpers: assertions on screenshots and tiles; ``tile_of`` /
  ``lonlat_centre``: which Web Mercator tile to ask a tiler for.
- ``consumer_python``: run a snippet in the consumers' venv (pystac-client, pystac);
  ``planetary_computer_token`` / ``planetary_computer_sign``: the planetary-computer SDK's own
  token exchange and signing, pointed at a token API by ``PC_SDK_SAS_URL``.

``python tests/consumers.py build-stac-browser`` builds STAC Browser (``make consumers`` does).
"""
from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import http.server
import io
import json
import math
import mimetypes
import os
import posixpath
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from services import _tail, _terminate, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
CONSUMERS_VENV = Path(os.environ.get("RMH_CONSUMERS_VENV") or REPO_ROOT / ".venv-consumers")
CONSUMER_PYTHON = CONSUMERS_VENV / "bin" / "python"
CHROMIUM = Path(os.environ.get("RMH_CHROMIUM") or "/usr/bin/chromium")
BROWSER_DRIVER = REPO_ROOT / "tests" / "consumers" / "browser_driver.mjs"
PLAYWRIGHT_CORE = REPO_ROOT / "node_modules" / "playwright-core"
STAC_BROWSER_PROJECT = REPO_ROOT / "tests" / "consumers" / "stac-browser"
STAC_BROWSER_PACKAGE = "@radiantearth/stac-browser"
#: Bump when the build steps below change: it is part of the cache key.
STAC_BROWSER_RECIPE = "runtime-config-hash-history-v1"
STAC_BROWSER_BUILD_ARGS = ("--noSourceMaps", "--historyMode=hash", "--pathPrefix=./")
RUNTIME_CONFIG_COMMENT = '<!-- <script defer="defer" src="/config.js"></script> -->'
RUNTIME_CONFIG_SCRIPT = '<script defer="defer" src="./config.js"></script>'


def cache_root() -> Path:
    """Where built consumers are cached across clones: ``RMH_CONSUMERS_CACHE`` or ~/.cache/rmhgeoapi."""
    explicit = os.environ.get("RMH_CONSUMERS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rmhgeoapi"


def artifacts_root() -> Path:
    """Where tests keep screenshots and tiles: ``RMH_TEST_ARTIFACTS`` or ``.local/artifacts``."""
    return Path(os.environ.get("RMH_TEST_ARTIFACTS") or REPO_ROOT / ".local" / "artifacts")


class ConsumerError(RuntimeError):
    """A consumer could not be set up or run; the message says what to do or carries its log tail."""


class ConsumerMissing(ConsumerError):
    """A consumer is not installed (``make consumers`` installs them)."""


class ConsumerStartError(ConsumerError):
    """A consumer process did not come up."""


class BrowserCommandError(ConsumerError):
    """The browser driver answered a command with an error."""


def _base_env() -> dict[str, str]:
    """The minimum a process needs to run, without the test process's own settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes, Mapping[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": "*/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers or {})


# --------------------------------------------------------------------------------------------
# stac-fastapi-pgstac and titiler-pgstac


def dsn_parts(dsn: str) -> dict[str, str]:
    """host, port, user, password, dbname of a libpq DSN (URL or key=value form)."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    return {"host": str(info.get("host", "127.0.0.1")), "port": str(info.get("port", "5432")),
            "user": str(info.get("user", "postgres")), "password": str(info.get("password", "")),
            "dbname": str(info.get("dbname", "postgres"))}


def stac_fastapi_db_env(dsn: str) -> dict[str, str]:
    """What stac-fastapi-pgstac 7.2 reads to reach pgSTAC (``PostgresSettings``: PGUSER, PGPASSWORD,
    PGHOST, PGPORT, PGDATABASE, all required; PGPASSWORD may be empty with trust auth)."""
    p = dsn_parts(dsn)
    return {"PGHOST": p["host"], "PGPORT": p["port"], "PGUSER": p["user"], "PGPASSWORD": p["password"],
            "PGDATABASE": p["dbname"]}


def titiler_db_env(dsn: str) -> dict[str, str]:
    """What titiler-pgstac 3.2 reads to reach pgSTAC: ``DATABASE_URL`` (its ``PostgresSettings``
    builds one from PG* otherwise, and then needs PGPASSWORD)."""
    p = dsn_parts(dsn)
    auth = urllib.parse.quote(p["user"]) + (":" + urllib.parse.quote(p["password"]) if p["password"] else "")
    return {"DATABASE_URL": f"postgresql://{auth}@{p['host']}:{p['port']}/{p['dbname']}"}


@dataclass
class ConsumerServer:
    """A consumer web app from ``.venv-consumers`` under uvicorn on 127.0.0.1."""

    name: str
    app: str
    env: dict[str, str]
    health_path: str = "/"
    factory: bool = False
    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="consumer-")))
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def start(self, timeout: float = 90.0) -> "ConsumerServer":
        if not CONSUMER_PYTHON.exists():
            raise ConsumerMissing(f"{CONSUMER_PYTHON} missing: run `make consumers`")
        self.port = self.port or free_port()
        args = [str(CONSUMER_PYTHON), "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "warning", "--no-access-log"]
        if self.factory:
            args.append("--factory")
        self.proc = subprocess.Popen(args, cwd=self.workdir, env={**_base_env(), **self.env},
                                     stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConsumerStartError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body, _ = _http_get(self.url + self.health_path)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        self.stop()
        raise ConsumerStartError(f"{self.name} not healthy after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, bytes, Mapping[str, str]]:
        """GET a path (or absolute URL) of this server: status, body, headers."""
        return _http_get(path if "://" in path else self.url + path, timeout=timeout)

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        status, body, _ = self.get(path, timeout)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body[:500]!r}\n{self.log_tail(10)}")
        return json.loads(body)

    def post_json(self, path: str, payload: Any, timeout: float = 60.0) -> tuple[int, Any]:
        data = json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            body = err.read()
            with contextlib.suppress(ValueError):
                return err.code, json.loads(body)
            return err.code, body.decode(errors="replace")

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def StacApi(dsn: str, env: Mapping[str, str] | None = None) -> ConsumerServer:
    """stac-fastapi-pgstac (every extension enabled, as with ENABLED_EXTENSIONS unset), read-only."""
    return ConsumerServer(name="stac-fastapi-pgstac", app="stac_fastapi.pgstac.app:create_app", factory=True,
                          health_path="/_mgmt/ping", env={**stac_fastapi_db_env(dsn), **(env or {})})


#: GDAL settings a titiler user sets for COGs behind HTTP or blob storage (titiler's own advice):
#: no directory listing on open, merged range requests, a block cache for the header.
TITILER_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": "5000000",
}


def titiler_azure_env(connection_string: str, *, alternate_key: str | None = None) -> dict[str, str]:
    """What titiler needs to read ``/vsiaz/`` hrefs (GDAL reads ``AZURE_STORAGE_CONNECTION_STRING``;
    with a managed identity instead: ``AZURE_STORAGE_ACCOUNT`` and nothing else), and which
    alternate href rio-tiler picks over ``href`` (``RIO_TILER_STAC_ALTERNATE_KEY``)."""
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string}
    if alternate_key:
        env["RIO_TILER_STAC_ALTERNATE_KEY"] = alternate_key
    return env


def TiTiler(dsn: str, env: Mapping[str, str] | None = None) -> ConsumerServer:
    """titiler-pgstac with ``env`` on top of the database URL: the GDAL / Azure / rio-tiler settings a
    user would set (e.g. ``AZURE_STORAGE_CONNECTION_STRING``, ``RIO_TILER_STAC_ALTERNATE_KEY``)."""
    return ConsumerServer(name="titiler-pgstac", app="titiler.pgstac.main:app", health_path="/healthz",
                          env={**titiler_db_env(dsn), **(env or {})})


def consumer_python(code: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0) -> Any:
    """Run ``code`` with the consumers' Python (pystac-client, planetary-computer, pystac) and return
    the JSON it prints last. ``args`` arrive as ``sys.argv[1:]``; ``env`` is all the environment
    the snippet sees beyond PATH/HOME."""
    if not CONSUMER_PYTHON.exists():
        raise ConsumerMissing(f"{CONSUMER_PYTHON} missing: run `make consumers`")
    with tempfile.TemporaryDirectory(prefix="consumer-py-") as cwd:
        # HOME too is fresh: no ~/.planetarycomputer/settings.env or other user config leaks in
        done = subprocess.run([str(CONSUMER_PYTHON), "-c", code, *args], cwd=cwd,
                              env={**_base_env(), "HOME": cwd, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ConsumerError(f"consumer snippet failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise ConsumerError(f"consumer snippet printed nothing:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


_PC_TOKEN = """
import json, sys
from planetary_computer.sas import get_token
token = get_token(sys.argv[1], sys.argv[2], retry_total=0)
again = get_token(sys.argv[1], sys.argv[2], retry_total=0)
print(json.dumps({"token": token.token, "expiry": token.expiry.isoformat(), "ttl": token.ttl(),
                  "cached": again is token, "signed": token.sign(sys.argv[3]).href}))
"""

_PC_SIGN = """
import json, sys
import planetary_computer
print(json.dumps(planetary_computer.sign(json.loads(sys.argv[1]))))
"""


def planetary_computer_env(sas_url: str, subscription_key: str | None = None) -> dict[str, str]:
    """What a planetary-computer SDK user sets to sign against another token API."""
    env = {"PC_SDK_SAS_URL": sas_url}
    if subscription_key is not None:
        env["PC_SDK_SUBSCRIPTION_KEY"] = subscription_key
    return env


def planetary_computer_token(sas_url: str, account: str, container: str, *, subscription_key: str | None = None,
                             href: str = "https://account.blob.core.windows.net/container/blob.tif") -> dict:
    """The SDK's own ``get_token(account, container)`` (GET ``{sas_url}/{account}/{container}``,
    its answer parsed by its ``SASToken`` model): token, expiry, ttl, whether a second call was
    served from its cache, and ``href`` signed with it."""
    return consumer_python(_PC_TOKEN, account, container, href,
                           env=planetary_computer_env(sas_url, subscription_key))


def planetary_computer_sign(stac: Mapping[str, Any], sas_url: str, *, subscription_key: str | None = None) -> dict:
    """``planetary_computer.sign`` of a STAC item / collection / item collection (as JSON)."""
    return consumer_python(_PC_SIGN, json.dumps(stac), env=planetary_computer_env(sas_url, subscription_key))


# --------------------------------------------------------------------------------------------
# A static HTTP site: Range, ETag, CORS, as blob storage serves files


@dataclass
class SiteRequest:
    method: str
    path: str
    status: int
    range: str | None
    origin: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class CorsPolicy:
    """What a data host answers cross-origin requests with (None: no CORS headers at all)."""

    allow_origin: str = "*"
    allow_headers: str = "Range, If-None-Match, If-Modified-Since, Content-Type, Authorization"
    expose_headers: str = "Content-Range, Content-Length, Accept-Ranges, ETag, Last-Modified"
    allow_methods: str = "GET, HEAD, OPTIONS"


class _SiteHandler(http.server.BaseHTTPRequestHandler):
    server: "_SiteServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _record(self, status: int) -> None:
        self.server.site.requests.append(SiteRequest(self.command, self.path, status, self.headers.get("Range"),
                                                     self.headers.get("Origin"), dict(self.headers.items())))

    def _cors_headers(self) -> None:
        cors = self.server.site.cors
        if cors is None or not self.headers.get("Origin"):
            return
        self.send_header("Access-Control-Allow-Origin", cors.allow_origin)
        if cors.expose_headers:
            self.send_header("Access-Control-Expose-Headers", cors.expose_headers)

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        cors = self.server.site.cors
        self.send_response(204 if cors else 405)
        if cors:
            self._cors_headers()
            self.send_header("Access-Control-Allow-Methods", cors.allow_methods)
            self.send_header("Access-Control-Allow-Headers", cors.allow_headers)
            self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._record(204 if cors else 405)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _error(self, status: int, head: bool) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self._cors_headers()
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._record(status)

    def _serve(self, head: bool) -> None:
        site = self.server.site
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        found = site.resolve(path)
        if found is None:
            self._error(404, head)
            return
        data, content_type, etag, mtime = found
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self._cors_headers()
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._record(304)
            return
        status, start, end = 200, 0, len(data) - 1
        wanted = self.headers.get("Range")
        if wanted and site.ranges:
            parsed = _parse_range(wanted, len(data))
            if parsed == "unsatisfiable":
                self.send_response(416)
                self._cors_headers()
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(416)
                return
            if parsed is not None:
                status, (start, end) = 206, parsed
        body = data[start:end + 1]
        self.send_response(status)
        self._cors_headers()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        if site.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._record(status)


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as (start, end) inclusive; None to ignore it (several ranges, or not
    bytes: answered with the whole file, as RFC 9110 allows); "unsatisfiable" past the end."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            return (max(size - length, 0), size - 1) if length > 0 else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


class _SiteServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: "StaticSite"):
        self.site = site
        super().__init__(("127.0.0.1", site.port), _SiteHandler)


_MEDIA_TYPES = {".json": "application/json", ".geojson": "application/geo+json", ".tif": "image/tiff",
                ".tiff": "image/tiff", ".vrt": "application/xml", ".js": "text/javascript",
                ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
                ".html": "text/html; charset=utf-8", ".webp": "image/webp"}


@dataclass
class StaticSite:
    """Files of ``root`` (plus in-memory ``files`` by URL path, which win) over HTTP on 127.0.0.1.

    ``cors``: answer cross-origin requests (None: send no CORS header, as a host without CORS
    rules does). ``ranges``: honour single byte ranges with 206 (False: always the whole file).
    ``requests`` records method, path, status, Range and Origin of every request.
    """

    root: Path | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    cors: CorsPolicy | None = field(default_factory=CorsPolicy)
    ranges: bool = True
    port: int = 0
    requests: list[SiteRequest] = field(default_factory=list)
    _server: _SiteServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resolve(self, path: str) -> tuple[bytes, str, str, float] | None:
        if path in self.files:
            data = self.files[path]
            return data, _media_type(path), '"' + hashlib.sha1(data).hexdigest()[:16] + '"', time.time()
        if self.root is None:
            return None
        relative = posixpath.normpath(path).lstrip("/")
        if relative.startswith(".."):
            return None
        candidate = (self.root / relative) if relative not in ("", ".") else self.root
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if not candidate.is_file():
            return None
        stat = candidate.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        return candidate.read_bytes(), _media_type(candidate.name), etag, stat.st_mtime

    def start(self) -> "StaticSite":
        self._server = _SiteServer(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"static-site-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "StaticSite":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _media_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


# --------------------------------------------------------------------------------------------
# STAC Browser: built once per version and recipe, served with a runtime config.js


def stac_browser_version() -> str:
    package = json.loads((STAC_BROWSER_PROJECT / "package.json").read_text())
    return package["devDependencies"][STAC_BROWSER_PACKAGE]


def stac_browser_key() -> str:
    """The cache key: the lock file, the package file and the build recipe."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((STAC_BROWSER_PROJECT / name).read_bytes())
    digest.update(json.dumps([STAC_BROWSER_RECIPE, STAC_BROWSER_BUILD_ARGS]).encode())
    return f"stac-browser-{stac_browser_version()}-{digest.hexdigest()[:12]}"


def stac_browser_dist() -> Path:
    return cache_root() / stac_browser_key() / "dist"


def build_stac_browser(log=sys.stderr) -> Path:
    """Build STAC Browser into the cache unless this key is there already; returns ``dist``.

    ``npm ci`` from the committed lock (``ol-stac`` overridden to 1.1.0, the one it builds with),
    the package copied out of ``node_modules`` into a build tree, its runtime ``config.js`` hook
    enabled, ``vue-cli-service build`` with hash history and relative paths; the finished ``dist``
    is moved into place in one rename and the build tree removed.
    """
    dist = stac_browser_dist()
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise ConsumerMissing("npm not found: `make system-deps` installs Node.js and npm")
    dist.parent.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{stac_browser_key()}.build-", dir=dist.parent.parent))
    started = time.monotonic()
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(STAC_BROWSER_PROJECT / name, work / name)
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work, log=log)
        source = work / "src-tree"
        shutil.copytree(work / "node_modules" / STAC_BROWSER_PACKAGE, source, symlinks=True)
        (source / "node_modules").symlink_to(work / "node_modules")
        index = source / "public" / "index.html"
        html = index.read_text()
        if RUNTIME_CONFIG_COMMENT not in html:
            raise ConsumerError(f"{index}: the runtime config.js hook of STAC Browser is not where it was")
        index.write_text(html.replace(RUNTIME_CONFIG_COMMENT, RUNTIME_CONFIG_SCRIPT))
        built = work / "dist"
        _run([str(work / "node_modules" / ".bin" / "vue-cli-service"), "build", "--dest", str(built),
              *STAC_BROWSER_BUILD_ARGS], cwd=source, log=log, env={"NODE_ENV": "production"})
        if not (built / "index.html").is_file():
            raise ConsumerError(f"STAC Browser build left no index.html in {built}")
        dist.parent.mkdir(parents=True, exist_ok=True)
        built.rename(dist)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"STAC Browser {stac_browser_version()} built in {time.monotonic() - started:.0f}s: {dist}", file=log)
    return dist


def _run(args: Sequence[str], *, cwd: Path, log, env: Mapping[str, str] | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConsumerError(f"{' '.join(args[:2])} failed ({done.returncode}) in {cwd}:\n"
                            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


@dataclass
class StacBrowser:
    """STAC Browser's built files on a ``StaticSite``, with ``config`` (its options, e.g.
    ``catalogUrl``) served as the runtime ``config.js``."""

    config: dict[str, Any]
    site: StaticSite | None = None

    @property
    def url(self) -> str:
        return self.site.url + "/"

    @property
    def catalog_url(self) -> str:
        return self.config["catalogUrl"]

    def start(self) -> "StacBrowser":
        dist = build_stac_browser()
        script = "window.STAC_BROWSER_CONFIG = " + json.dumps(self.config) + ";\n"
        self.site = StaticSite(root=dist, files={"/config.js": script.encode()}).start()
        return self

    def stop(self) -> None:
        if self.site is not None:
            self.site.stop()

    def route(self, stac_url: str | None = None) -> str:
        """The browser URL showing the STAC object at ``stac_url`` (default: the catalog).

        Beneath the catalog's folder the route is the relative path (``#/collections/x``),
        elsewhere ``#/external/http:/host:port/path``, as STAC Browser's ``toBrowserPath`` does.
        """
        if not stac_url or stac_url == self.catalog_url:
            return self.url + "#/"
        base = self.catalog_url.rsplit("/", 1)[0] + "/"
        if stac_url.startswith(base):
            return self.url + "#/" + stac_url[len(base):]
        parts = urllib.parse.urlsplit(stac_url)
        scheme = "" if parts.scheme == "https" else parts.scheme + ":/"
        query = f"?{parts.query}" if parts.query else ""
        return f"{self.url}#/external/{scheme}{parts.netloc}{parts.path}{query}"


# --------------------------------------------------------------------------------------------
# Headless Chromium through playwright-core


CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Browser:
    """One headless Chromium for the session, driven by ``browser_driver.mjs`` over JSON lines.

    Every page gets its own browser context (Playwright gives each launch a fresh, temporary
    ``--user-data-dir``), requests leaving loopback are aborted and listed in ``blocked``.
    """

    def __init__(self, *, log_dir: Path | None = None, timeout: float = 60.0):
        self.timeout = timeout
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="browser-"))) / "browser-driver.log"
        self.proc: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._next_id = 0
        self.version = ""

    def start(self) -> "Browser":
        node = shutil.which("node")
        if node is None:
            raise ConsumerMissing("node not found: `make system-deps` installs Node.js")
        if not PLAYWRIGHT_CORE.is_dir():
            raise ConsumerMissing(f"{PLAYWRIGHT_CORE} missing: run `npm ci` (make setup does)")
        if not CHROMIUM.exists():
            raise ConsumerMissing(f"{CHROMIUM} missing: `make consumers` installs Debian's chromium")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**_base_env(), "RMH_CHROMIUM": str(CHROMIUM), "RMH_CHROMIUM_ARGS": json.dumps(CHROMIUM_ARGS)}
        self.proc = subprocess.Popen([node, str(BROWSER_DRIVER)], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log_path.open("wb"), text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read_replies, daemon=True, name="browser-driver-reader").start()
        self.version = self.command("version")["version"]
        return self

    def _read_replies(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._replies.put(json.loads(line))
        self._replies.put(None)

    def command(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            self.proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + (timeout or self.timeout) + 10
            while True:
                remaining = deadline - time.monotonic()
                try:
                    reply = self._replies.get(timeout=max(remaining, 0.01))
                except queue.Empty:
                    raise BrowserCommandError(f"browser driver: no answer to {cmd} in time:\n{_tail(self.log_path)}")
                if reply is None:
                    raise BrowserCommandError(f"browser driver exited:\n{_tail(self.log_path)}")
                if reply.get("id") == request_id:
                    break
        if not reply.get("ok"):
            raise BrowserCommandError(f"{cmd}: {reply.get('error')}")
        return reply

    @contextlib.contextmanager
    def page(self, url: str, *, width: int = 1280, height: int = 900, wait: Sequence[dict] = (),
             timeout: float | None = None) -> Iterator["Page"]:
        """A page open at ``url``; ``wait`` conditions as in ``Page.wait``. Closed on exit."""
        reply = self.command("open", url=url, viewport=[width, height], timeout=timeout)
        page = Page(self, reply["page"])
        try:
            if wait:
                page.wait(*wait, timeout=timeout)
            yield page
        finally:
            with contextlib.suppress(BrowserCommandError):
                self.command("close", page=page.id)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(json.dumps({"id": 0, "cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _terminate(self.proc)
        self.proc = None


@dataclass
class Page:
    """An open page of ``Browser``."""

    browser: Browser
    id: int

    def wait(self, *conditions: dict, timeout: float | None = None) -> None:
        """Wait until every condition holds: ``{"text": s}`` (visible text contains s),
        ``{"selector": css}`` (a visible element), ``{"js": expression}`` (truthy),
        ``{"idle": True}`` (no network for 500 ms), ``{"ms": n}`` (a pause).

        On a timeout the error carries what the page logged and requested, and a screenshot
        of the page as it was is written beside the driver's log."""
        ms = int((timeout or self.browser.timeout) * 1000)
        try:
            self.browser.command("wait", page=self.id, conditions=list(conditions), timeout_ms=ms, timeout=timeout)
        except BrowserCommandError as err:
            raise BrowserCommandError(f"{err}\nwaiting for {conditions}\n{self._post_mortem()}") from None

    def _post_mortem(self) -> str:
        shot = self.browser.log_path.parent / f"timeout-page-{self.id}.png"
        lines = []
        with contextlib.suppress(BrowserCommandError):
            self.browser.command("screenshot", page=self.id, path=str(shot), selector=None)
            lines.append(f"screenshot: {shot}")
        with contextlib.suppress(BrowserCommandError):
            log = self.log()
            lines.append("console: " + json.dumps(log["console"][-15:], indent=1))
            lines.append("page errors: " + json.dumps(log["errors"][-5:], indent=1))
            lines.append("failed: " + json.dumps(log["failed"][-15:], indent=1))
            lines.append("not 2xx: " + json.dumps([r for r in log["requests"] if not 200 <= r[1] < 400][-15:]))
            lines.append("blocked: " + json.dumps(log["blocked"][-10:]))
        with contextlib.suppress(BrowserCommandError):
            lines.append("text: " + self.text()[:1500])
        return "\n".join(lines)

    def screenshot(self, path: Path, *, selector: str | None = None) -> np.ndarray:
        """PNG of the viewport (or of the element ``selector``) written to ``path``; returns RGBA."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.browser.command("screenshot", page=self.id, path=str(path), selector=selector)
        return read_png(path)

    def screenshot_until(self, path: Path, predicate, *, selector: str | None = None, timeout: float = 30.0,
                         interval: float = 0.5) -> np.ndarray:
        """Screenshots until ``predicate(rgba)`` holds (the last one is kept at ``path``); the
        last image is returned either way, so the caller's assertion shows what was drawn."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.screenshot(path, selector=selector)
            if predicate(image) or time.monotonic() > deadline:
                return image
            time.sleep(interval)

    def evaluate(self, expression: str) -> Any:
        return self.browser.command("eval", page=self.id, expression=expression)["value"]

    def click(self, selector: str | None = None, *, at: tuple[float, float] | None = None) -> None:
        """Click the first element matching ``selector`` (as a user would: scrolled into view,
        waited for), or the viewport point ``at`` (CSS pixels)."""
        self._pointer("click", selector, at)

    def hover(self, selector: str | None = None, *, at: tuple[float, float] | None = None) -> None:
        """Move the mouse over the first element matching ``selector``, or to the point ``at``."""
        self._pointer("hover", selector, at)

    def _pointer(self, action: str, selector: str | None, at: tuple[float, float] | None) -> None:
        x, y = at if at is not None else (None, None)
        self.browser.command("pointer", page=self.id, action=action, selector=selector, x=x, y=y)

    def text(self, selector: str = "body") -> str:
        return self.browser.command("text", page=self.id, selector=selector)["text"]

    def box(self, selector: str) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) in CSS pixels of the first visible element matching ``selector``."""
        found = self.browser.command("box", page=self.id, selector=selector)["box"]
        return None if found is None else tuple(int(round(found[k])) for k in ("x", "y", "width", "height"))

    def log(self) -> dict[str, list]:
        """What the page did: ``console`` messages, ``errors`` (uncaught), ``requests``
        (url, status), ``failed`` (url, reason) and ``blocked`` (non-loopback URLs refused)."""
        reply = self.browser.command("log", page=self.id)
        return {k: reply[k] for k in ("console", "errors", "requests", "failed", "blocked")}


# --------------------------------------------------------------------------------------------
# Pixels


def tile_of(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """The WebMercatorQuad tile (x, y) holding lon/lat at ``zoom``."""
    n = 2 ** zoom
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


def lonlat_centre(crs: str, bounds: Sequence[float]) -> tuple[float, float]:
    """lon/lat of the middle of ``bounds`` (left, bottom, right, top) in ``crs``."""
    import rasterio.warp

    (lon,), (lat,) = rasterio.warp.transform(crs, "EPSG:4326", [(bounds[0] + bounds[2]) / 2],
                                             [(bounds[1] + bounds[3]) / 2])
    return lon, lat


def read_png(source: Path | bytes) -> np.ndarray:
    """An image (PNG, JPEG, WebP) as an RGBA uint8 array (height, width, 4)."""
    from PIL import Image

    raw = source.read_bytes() if isinstance(source, Path) else source
    with Image.open(io.BytesIO(raw)) as image:
        return np.asarray(image.convert("RGBA"))


def crop(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The (x, y, width, height) part of ``image``, clipped to it (all of it for None)."""
    if box is None:
        return image
    x, y, w, h = box
    return image[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)]


def background_colour(image: np.ndarray) -> tuple[int, int, int]:
    """The most common RGB colour of the image's one-pixel border."""
    edge = np.concatenate([image[0, :, :3], image[-1, :, :3], image[:, 0, :3], image[:, -1, :3]])
    (colour, _), = Counter(map(tuple, edge.tolist())).most_common(1)
    return tuple(int(c) for c in colour)


def non_background_fraction(image: np.ndarray, box: tuple[int, int, int, int] | None = None, *,
                            background: tuple[int, int, int] | None = None, tolerance: int = 12) -> float:
    """Share of pixels in ``box`` that differ from ``background`` (default: the region's own border
    colour) by more than ``tolerance`` in any channel; transparent pixels count as background."""
    region = crop(image, box)
    if region.size == 0:
        return 0.0
    bg = np.array(background if background is not None else background_colour(region), dtype=np.int16)
    differs = (np.abs(region[..., :3].astype(np.int16) - bg) > tolerance).any(axis=-1)
    differs &= region[..., 3] > 0
    return float(differs.mean())


def colour_fraction(image: np.ndarray, colour: tuple[int, int, int], box: tuple[int, int, int, int] | None = None,
                    *, tolerance: int = 24) -> float:
    """Share of the (opaque) pixels of ``box`` within ``tolerance`` of ``colour`` in every channel."""
    region = crop(image, box)
    if region.size == 0:
        return 0.0
    near = (np.abs(region[..., :3].astype(np.int16) - np.array(colour, dtype=np.int16)) <= tolerance).all(axis=-1)
    return float((near & (region[..., 3] > 0)).mean())


def opaque_fraction(image: np.ndarray) -> float:
    """Share of pixels that are not fully transparent."""
    return float((image[..., 3] > 0).mean())


def dominant_colours(image: np.ndarray, box: tuple[int, int, int, int] | None = None, *, count: int = 5,
                     step: int = 32, opaque_only: bool = True) -> list[tuple[tuple[int, int, int], float]]:
    """The ``count`` most common colours of ``box``, each channel quantised to ``step``, with the
    share of the region's (opaque) pixels each covers."""
    region = crop(image, box).reshape(-1, 4)
    if opaque_only:
        region = region[region[:, 3] > 0]
    if len(region) == 0:
        return []
    quantised = (region[:, :3] // step) * step + step // 2
    colours, counts = np.unique(quantised, axis=0, return_counts=True)
    order = np.argsort(-counts)[:count]
    return [(tuple(int(c) for c in colours[i]), float(counts[i] / len(region))) for i in order]


def distinct_colours(image: np.ndarray, *, step: int = 16) -> int:
    """How many quantised colours the opaque pixels use (a flat image has one)."""
    region = image.reshape(-1, 4)
    region = region[region[:, 3] > 0]
    if len(region) == 0:
        return 0
    return int(len(np.unique(region[:, :3] // step, axis=0)))


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build-stac-browser", help="build STAC Browser into the cache (no-op when cached)")
    sub.add_parser("stac-browser-dist", help="print where the STAC Browser build is (or would be)")
    args = parser.parse_args(argv)
    if args.command == "build-stac-browser":
        print(build_stac_browser())
    else:
        print(stac_browser_dist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
