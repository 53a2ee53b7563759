"""Where an href of STAC made elsewhere may lead, decided before anything is opened.

An href of an imported catalog, item or asset resolves to one of three places:

* a **blob** (``BlobLocation``): a relative href, resolved against the blob of the document that
  holds it and never above its container's root (``..`` that climbs out is
  ``HrefOutsideContainer``); or an absolute href naming a blob of this service's own storage: a
  blob URL of its account (or under ``RMH_ASSET_BASE_URL``) or a ``/vsiaz/<container>/<blob>``
  path. Blobs are read through ``storage.py`` only, never by handing the href to GDAL.
* a **URL** (``UrlLocation``) on a host the operator allow-listed (``RMH_IMPORT_ALLOWED_HOSTS``):
  ``host`` (default port of the scheme) or ``host:port``, exact, http(s) only.
* nowhere: a local path or ``file://`` (``LocalPathRefused``), another scheme or GDAL virtual
  path (``HrefSchemeRefused``), a host not on the list (``HostNotAllowed``), the system container
  (``ProtectedContainer``), or a name storage cannot hold (``InvalidHref``).

Standard library and storage's name rules only: nothing here reads, fetches or opens.
"""
from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from storage import StorageError, check_blob_name, check_container_name

#: The longest href looked at (a longer one is refused before it is parsed).
MAX_HREF = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_ENTRY = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*"
                         r"|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")
_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


class HrefError(Exception):
    """Base class of the refusals of an href; ``href`` is the href as written, ``where`` what
    held it (an asset, a link), when known."""

    def __init__(self, href: str, reason: str, *, where: str = ""):
        super().__init__(f"{where + ': ' if where else ''}href {href[:300]!r} {reason}")
        self.href, self.reason, self.where = href, reason, where

    def at(self, where: str) -> "HrefError":
        """The same refusal, saying what held the href (``asset 'B04'``)."""
        return type(self)(self.href, self.reason, where=where)


class HrefOutsideContainer(HrefError):
    """A relative href climbs above its container's root with ``..``."""


class LocalPathRefused(HrefError):
    """A local file path or a ``file://`` URL: never opened for an import."""


class HostNotAllowed(HrefError):
    """An http(s) URL on a host that is not in RMH_IMPORT_ALLOWED_HOSTS (and not this service's storage)."""


class HrefSchemeRefused(HrefError):
    """A scheme other than http(s), or a GDAL virtual path other than ``/vsiaz/``."""


class ProtectedContainer(HrefError):
    """An href into a container an import may not read (the system container)."""


class InvalidHref(HrefError):
    """An href that names nothing storage can hold (empty, too long, a bad container or blob name, credentials in a URL)."""


@dataclass(frozen=True)
class BlobLocation:
    """A blob of this service's storage."""

    container: str
    name: str

    def __str__(self) -> str:
        return f"{self.container}/{self.name}"


@dataclass(frozen=True)
class UrlLocation:
    """A URL on an allow-listed host."""

    url: str

    def __str__(self) -> str:
        return self.url


Location = Union[BlobLocation, UrlLocation]


def location_from_text(text: str) -> Location:
    """A location written by ``str()``: an http(s) URL, or ``container/blob`` (a container name
    holds no ':', so the two never mix)."""
    if re.match(r"^https?://", text, re.IGNORECASE):
        return UrlLocation(text)
    container, _, name = text.partition("/")
    return BlobLocation(container, name)


def host_entry(entry: str) -> str:
    """An allow-list entry, normalised (lower case), or ValueError saying what an entry is."""
    value = entry.strip().lower()
    match = _HOST_ENTRY.match(value)
    if not match or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
        raise ValueError(f"{entry!r} is not a host name or host:port (no scheme, path or wildcard)")
    return value


@dataclass(frozen=True)
class HrefPolicy:
    """What an import may read: blobs of this storage (``own_prefixes``: the URL prefixes that
    name ``<container>/<blob>`` of it), URLs on ``allowed_hosts`` (``host`` or ``host:port``
    entries), never a container of ``protected_containers``."""

    own_prefixes: tuple[str, ...] = ()
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    protected_containers: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, *, own_prefixes: Iterable[str] = (), allowed_hosts: Iterable[str] = (),
           protected_containers: Iterable[str] = ()) -> "HrefPolicy":
        prefixes = tuple(p if p.endswith("/") else p + "/" for p in own_prefixes if p)
        return cls(prefixes, frozenset(host_entry(h) for h in allowed_hosts), frozenset(protected_containers))

    def resolve(self, href: str, base: Location) -> Location:
        """Where ``href``, written in the document at ``base``, leads; or the HrefError that refuses it."""
        if not isinstance(href, str) or not href.strip():
            raise InvalidHref(str(href), "is empty")
        if len(href) > MAX_HREF:
            raise InvalidHref(href, f"is {len(href)} characters long; the limit is {MAX_HREF}")
        if _WINDOWS_PATH.match(href):
            raise LocalPathRefused(href, "is a local path; imports never open local files")
        if href.startswith("/vsi"):
            if not href.startswith("/vsiaz/"):
                raise HrefSchemeRefused(href, "is a GDAL virtual path; of those only vsiaz paths into this storage are read")
            return self._blob(href, href[len("/vsiaz/"):])
        scheme = urllib.parse.urlsplit(href).scheme.lower()
        if not scheme and isinstance(base, UrlLocation):  # a reference within a fetched document
            return self.absolute(urllib.parse.urljoin(base.url, href))
        if href.startswith("/"):
            raise LocalPathRefused(href, "is a local path; imports never open local files")
        if not scheme:
            return self._relative(href, base)
        return self.absolute(href)

    def absolute(self, url: str) -> Location:
        """Where an absolute URL leads: a blob of this storage, or an allow-listed URL."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            raise LocalPathRefused(url, "is a file:// URL; imports never open local files")
        if scheme not in _DEFAULT_PORTS:
            raise HrefSchemeRefused(url, f"has the scheme {scheme!r}; only http(s) hrefs are read")
        if parts.username is not None or parts.password is not None:
            raise InvalidHref(url, "carries credentials; name the host in the allow-list instead")
        for prefix in self.own_prefixes:
            if url.lower().startswith(prefix.lower()):
                return self._blob(url, urllib.parse.unquote(urllib.parse.urlsplit(url[len(prefix):]).path))
        if not self.url_allowed(url):
            raise HostNotAllowed(url, f"is on host {parts.netloc!r}, which is not in RMH_IMPORT_ALLOWED_HOSTS")
        return UrlLocation(urllib.parse.urldefrag(url).url)

    def url_allowed(self, url: str) -> bool:
        """True for an http(s) URL on an allow-listed host (the default port for a bare host name)."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or parts.username is not None or not parts.hostname:
            return False
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            return False
        host = parts.hostname.lower()
        shown = f"[{host}]" if ":" in host else host
        return (f"{shown}:{port}" in self.allowed_hosts
                or (port == _DEFAULT_PORTS[scheme] and shown in self.allowed_hosts))

    def _relative(self, href: str, base: BlobLocation) -> BlobLocation:
        path = urllib.parse.unquote(urllib.parse.urlsplit(href).path)
        if not path:
            raise InvalidHref(href, "names no file")
        segments: list[str] = []
        for segment in posixpath.dirname(base.name).split("/") + path.split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                if not segments:
                    raise HrefOutsideContainer(href, f"(from {base}) climbs above the root of container "
                                                     f"{base.container!r}")
                segments.pop()
            else:
                segments.append(segment)
        return self._checked(href, BlobLocation(base.container, "/".join(segments)))

    def _blob(self, href: str, path: str) -> BlobLocation:
        container, _, name = path.partition("/")
        return self._checked(href, BlobLocation(container, name))

    def _checked(self, href: str, location: BlobLocation) -> BlobLocation:
        try:
            check_container_name(location.container)
            check_blob_name(location.name)
        except StorageError as err:
            raise InvalidHref(href, f"names no blob this storage can hold: {err}") from None
        if location.container in self.protected_containers:
            raise ProtectedContainer(href, f"names container {location.container!r}, which imports may not read")
        return location
