"""The dashboard page (``GET /api/dashboard``) and its static files (``/api/dashboard/static/...``).

Our own files are ``dashboard/index.html``, ``dashboard.js`` and ``dashboard.css``. The front-end
libraries come from npm (pinned in ``package.json``): in a checkout after ``npm ci`` they are read
from ``node_modules/``; in the deployed package ``deploy.py package`` has copied ``VENDOR_FILES``
(licences included) to ``dashboard/vendor/``. Only the files listed here are ever served.

The page is the same for everyone and holds no data and no key: on Azure it is opened with the
function key as ``?code=``, and its script moves the key into the tab's session storage, removes it
from the address bar and sends it as ``x-functions-key`` on every API call.
"""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent
PAGE_DIR = ROOT / "dashboard"
#: Where the package carries the npm files (``deploy.py package`` writes them into the zip).
VENDOR_DIR = PAGE_DIR / "vendor"
#: Where a checkout has them (``npm ci``).
NODE_MODULES = ROOT / "node_modules"
PAGE = "index.html"
#: The API's documentation page (``GET /api/docs``): Swagger UI over ``/api/openapi.json``.
DOCS_PAGE = "api-docs.html"
OWN_FILES = ("dashboard.js", "dashboard.css", "api-docs.js")
#: The npm files the page uses, as paths inside node_modules (and inside ``dashboard/vendor/``).
VENDOR_FILES = (
    "leaflet/dist/leaflet.js",
    "leaflet/dist/leaflet.css",
    "leaflet/dist/images/layers.png",
    "leaflet/dist/images/layers-2x.png",
    "leaflet/dist/images/marker-icon.png",
    "leaflet/dist/images/marker-icon-2x.png",
    "leaflet/dist/images/marker-shadow.png",
    "leaflet/LICENSE",
    "leaflet/package.json",
    "topojson-client/dist/topojson-client.min.js",
    "topojson-client/LICENSE",
    "topojson-client/package.json",
    "world-atlas/countries-110m.json",
    "world-atlas/LICENSE",
    "world-atlas/package.json",
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-dist/LICENSE",
    "swagger-ui-dist/NOTICE",
    "swagger-ui-dist/package.json",
)
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".json": "application/json", ".png": "image/png", "LICENSE": "text/plain; charset=utf-8",
               "NOTICE": "text/plain; charset=utf-8"}


class DashboardError(Exception):
    """Base class of the dashboard's errors."""


class DashboardFileNotFound(DashboardError):
    """A static file the dashboard does not have (or that the setup has not installed)."""


def page_headers(extra_image_origins: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers of the page: never cached, never framed, no referrer (so no URL of it reaches a
    blob host or an asset link), scripts, styles and API calls from this origin only."""
    images = " ".join(("'self'", "data:", "blob:", "https:", "http://127.0.0.1:*", "http://localhost:*",
                       *extra_image_origins))
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": (f"default-src 'self'; img-src {images}; script-src 'self'; "
                                    "style-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                    "base-uri 'none'; form-action 'none'"),
    }


def page() -> bytes:
    return (PAGE_DIR / PAGE).read_bytes()


def docs_page() -> bytes:
    return (PAGE_DIR / DOCS_PAGE).read_bytes()


def docs_headers() -> dict[str, str]:
    """Headers of the API's page: the dashboard's, with inline style attributes allowed (Swagger
    UI sets them) and images from data: URLs (its icons); scripts from this origin only."""
    headers = page_headers()
    headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    return headers


def vendor_source(path: str, root: Path = ROOT) -> Path:
    """Where a vendor file is read from: the package's copy, else node_modules."""
    packaged = root / "dashboard" / "vendor" / path
    return packaged if packaged.is_file() else root / "node_modules" / path


def static_file(path: str) -> tuple[bytes, dict[str, str]]:
    """The content and headers of ``/api/dashboard/static/<path>``: our own files, or
    ``vendor/<one of VENDOR_FILES>``; anything else is DashboardFileNotFound."""
    if path in OWN_FILES:
        source, cache = PAGE_DIR / path, "no-cache"
    elif path.startswith("vendor/") and path.removeprefix("vendor/") in VENDOR_FILES:
        source, cache = vendor_source(path.removeprefix("vendor/")), "public, max-age=86400"
    else:
        raise DashboardFileNotFound(f"the dashboard has no file {path[:200]!r}")
    try:
        content = source.read_bytes()
    except FileNotFoundError:
        raise DashboardFileNotFound(f"{path} is not installed (run `npm ci`, or `make setup`)") from None
    return content, {"Content-Type": _media_type(source.name), "Cache-Control": cache,
                     "X-Content-Type-Options": "nosniff"}


def _media_type(name: str) -> str:
    suffix = Path(name).suffix
    return MEDIA_TYPES.get(suffix) or MEDIA_TYPES.get(name) or mimetypes.guess_type(name)[0] \
        or "application/octet-stream"


def packaged_vendor_files(root: Path = ROOT) -> Mapping[str, Path]:
    """For ``deploy.py package``: zip path → source file of every vendor file (from node_modules)."""
    missing = [p for p in VENDOR_FILES if not (root / "node_modules" / p).is_file()]
    if missing:
        raise DashboardFileNotFound(f"node_modules lacks {', '.join(missing)}: run `npm ci` (make setup)")
    return {f"dashboard/vendor/{p}": root / "node_modules" / p for p in VENDOR_FILES}
