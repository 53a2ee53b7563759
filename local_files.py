"""Local directories over HTTP, the way Blob storage serves blobs: the embedded host's ``/files/...``
mounts, so tilers and browsers read local COGs and the static catalog from a URL.

GET and HEAD with byte ranges (206 and ``Content-Range``), ``ETag`` / ``Last-Modified`` with
conditional requests (aiohttp's ``FileResponse``), and CORS for any origin (browser-based readers such
as STAC Browser fetch COGs with ``Range`` from another origin). Hidden entries (a local store's
``.meta`` sidecars, in-flight ``.rmh-tmp-*`` files) are never served, nor anything outside a mount.
With function keys configured, a mount needs a key like a function-level route.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

FILES_PREFIX = "/files"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, If-None-Match, If-Modified-Since, Content-Type",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified",
    "Access-Control-Max-Age": "3600",
}


def mirrored_mounts(directories: Mapping[str, str | os.PathLike[str]]) -> dict[str, Path]:
    """URL prefixes for directories that mirror their layout on disk below their common parent, so
    a relative href between two of them (catalog item → storage blob) resolves the same over HTTP:
    ``.local/catalog`` and ``.local/storage`` become ``/files/catalog`` and ``/files/storage``."""
    paths = {name: Path(d).resolve() for name, d in directories.items()}
    if not paths:
        return {}
    common = Path(os.path.commonpath([str(p) for p in paths.values()]))
    mounts = {}
    for name, path in paths.items():
        relative = path.relative_to(common).as_posix()
        mounts[f"{FILES_PREFIX}/{relative}" if relative != "." else f"{FILES_PREFIX}/{name}"] = path
    return mounts


def add_mounts(app: web.Application, mounts: Mapping[str, str | os.PathLike[str]],
               allowed: Callable[[web.Request], bool]) -> None:
    """GET/HEAD/OPTIONS routes serving each ``prefix → directory`` of ``mounts``."""
    for prefix, directory in mounts.items():
        root = Path(directory).resolve()
        handler = _file_handler(root, allowed)
        path = prefix.rstrip("/") + "/{path:.*}"
        app.router.add_route("GET", path, handler)
        app.router.add_route("HEAD", path, handler)
        app.router.add_route("OPTIONS", path, _preflight)


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


def _file_handler(root: Path, allowed: Callable[[web.Request], bool]) -> Any:
    async def serve(request: web.Request) -> web.StreamResponse:
        if not allowed(request):
            return _refusal(401, "this host needs a function key (x-functions-key or ?code=)")
        target = _resolve(root, request.match_info.get("path", ""))
        if target is None:
            return _refusal(404, f"no file {request.path[:300]}")
        return web.FileResponse(target, headers={**CORS_HEADERS, "Accept-Ranges": "bytes"})
    return serve


def _resolve(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None: no hidden segment, no escape from the
    root (symlinks included), only regular files."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        return None
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if root not in resolved.parents or not resolved.is_file():
        return None
    return resolved


def _refusal(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=CORS_HEADERS)
