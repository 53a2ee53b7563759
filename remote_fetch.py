"""Fetching from the hosts an operator allow-listed, and from nowhere else.

``fetch`` reads one http(s) URL whose host the caller's ``allowed`` predicate accepts (for
imports: ``href_policy.HrefPolicy.url_allowed`` over RMH_IMPORT_ALLOWED_HOSTS). A redirect is
followed only to a URL the same predicate accepts; the body is bounded (``max_bytes``, judged
from Content-Length first and counted while reading); a fault of the host (connection refused,
timeout, a 5xx) is retried a few times with backoff and then named. What is fetched is untrusted
bytes: callers treat it as any uploaded file (rasters are opened by the allow-listed drivers
only).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import tenacity

#: Seconds a connection or a read may stall before the attempt counts as failed.
TIMEOUT_SECONDS = 60.0
_CHUNK = 1024 * 1024


class RemoteFetchError(Exception):
    """Base class of the failures of a fetch; the message names the URL."""


class RemoteRefused(RemoteFetchError):
    """The URL, or a redirect, leads to a host the allow-list does not name (nothing was sent there)."""


class RemoteNotFound(RemoteFetchError):
    """The host answered 404 or 410."""


class RemoteRejected(RemoteFetchError):
    """The host answered another 4xx (forbidden, unauthorised, bad request)."""


class RemoteTooLarge(RemoteFetchError):
    """The body is larger than the limit (by its Content-Length, or while it was read)."""


class RemoteUnavailable(RemoteFetchError):
    """The host could not be reached, timed out or answered 5xx, after retries."""


@dataclass(frozen=True)
class Fetched:
    """What a fetch wrote: the final URL (after allowed redirects), size, SHA-256, ETag, type."""

    url: str
    size: int
    sha256: str
    etag: str | None
    content_type: str | None


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the allow-list accepts; refuses before connecting otherwise."""

    def __init__(self, allowed: Callable[[str], bool]):
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        if not self.allowed(newurl):
            raise RemoteRefused(f"{req.full_url[:300]} redirects to {newurl[:300]}, "
                                "whose host is not in the allow-list")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, sink: IO[bytes], *, allowed: Callable[[str], bool], max_bytes: int,
          timeout: float = TIMEOUT_SECONDS, attempts: int = 3) -> Fetched:
    """GET ``url`` into ``sink`` (truncated and rewritten on a retry). Raises ``RemoteRefused``
    before any connection when ``allowed(url)`` is false."""
    if not allowed(url):
        raise RemoteRefused(f"{url[:300]}: host is not in the allow-list")
    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(RemoteUnavailable),
                                 wait=tenacity.wait_exponential_jitter(initial=0.5, max=5),
                                 stop=tenacity.stop_after_attempt(attempts), reraise=True)
    return retrying(_attempt, url, sink, allowed, max_bytes, timeout)


def fetch_bytes(url: str, *, allowed: Callable[[str], bool], max_bytes: int,
                timeout: float = TIMEOUT_SECONDS) -> bytes:
    """A small document (JSON) from an allow-listed URL, in memory."""
    with tempfile.SpooledTemporaryFile(max_size=8 * _CHUNK) as sink:
        fetch(url, sink, allowed=allowed, max_bytes=max_bytes, timeout=timeout)
        sink.seek(0)
        return sink.read()


def fetch_to_path(url: str, path: Path, *, allowed: Callable[[str], bool], max_bytes: int,
                  timeout: float = TIMEOUT_SECONDS) -> Fetched:
    """A file from an allow-listed URL at ``path`` (written whole, or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rmh-fetch-", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as sink:
            fetched = fetch(url, sink, allowed=allowed, max_bytes=max_bytes, timeout=timeout)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return fetched


def _attempt(url: str, sink: IO[bytes], allowed: Callable[[str], bool], max_bytes: int,
             timeout: float) -> Fetched:
    sink.seek(0)
    sink.truncate()
    opener = urllib.request.build_opener(_GuardedRedirects(allowed))
    request = urllib.request.Request(url, headers={"User-Agent": "rmhgeoapi-import", "Accept": "*/*"})
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise RemoteTooLarge(f"{url[:300]}: {declared} bytes; the limit is {max_bytes}")
            digest, size = hashlib.sha256(), 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise RemoteTooLarge(f"{url[:300]}: more than {max_bytes} bytes")
                digest.update(chunk)
                sink.write(chunk)
            return Fetched(url=response.geturl(), size=size, sha256=digest.hexdigest(),
                           etag=response.headers.get("ETag"), content_type=response.headers.get("Content-Type"))
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            raise RemoteNotFound(f"{url[:300]}: HTTP {err.code}") from None
        if err.code >= 500 or err.code == 429:
            raise RemoteUnavailable(f"{url[:300]}: HTTP {err.code}") from None
        raise RemoteRejected(f"{url[:300]}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if isinstance(err, urllib.error.URLError) and isinstance(err.reason, RemoteRefused):
            raise err.reason from None
        reason = getattr(err, "reason", None) or err
        raise RemoteUnavailable(f"{url[:300]}: {type(reason).__name__}: {str(reason)[:200]}") from None
