"""What every blob store shares: Azure's rules for container and blob names (checked before any
call, so a bad name fails the same way on every backend), the storage errors, blob metadata as
HTTP headers carry it, GDAL paths, secrets kept out of logs, and the ``BlobStore`` interface.
The backends are ``dir_store`` (a local directory) and ``azure_store``; ``storage`` is their face.
"""
from __future__ import annotations

import abc
import base64
import contextlib
import datetime as dt
import hashlib
import logging
import mimetypes
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import quote

from pydantic import BaseModel

import iso_times
from faults import Transient

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BLOB_NAME = 1024
DEFAULT_PAGE_SIZE = 1000
_CONTAINER_CHARS = re.compile(r"^[a-z0-9-]+$")
_SECRET_PATTERNS = [
    (re.compile(r"(sig=)[^&\s\"']+", re.IGNORECASE), r"\1REDACTED"),
    (re.compile(r"(AccountKey=)[^;\s\"']+", re.IGNORECASE), r"\1REDACTED"),
    (re.compile(r"(SharedAccessSignature=)[^;\s\"']+", re.IGNORECASE), r"\1REDACTED"),
]


class StorageError(Exception):
    """Base class of storage errors."""


class InvalidContainerName(StorageError, ValueError):
    """A container name breaks Azure's naming rules."""


class InvalidBlobName(StorageError, ValueError):
    """A blob name breaks Azure's naming rules."""


class ContainerNotFound(StorageError):
    """The container does not exist."""


class BlobNotFound(StorageError):
    """The blob does not exist."""


class StorageUnavailable(Transient):
    """The storage service could not be reached or failed: a transient fault
    (``faults.Transient``), never a ``StorageError`` of the blob asked for."""

    def __init__(self, message: str, *, answer: str | None = None):
        super().__init__(message)
        self.answer = answer  # what storage answered (status and error code), None when it did not


class StorageRefused(StorageError):
    """Storage answers, but refuses this one request, the same way every time (a name the store
    cannot hold, a server error repeated for one argument while the container answers): the
    request's failure, not an outage; never retried as one."""


class GdalPathTooLong(StorageError):
    """A blob GDAL cannot address: its path passes GDAL's 2,048-byte file-name buffers."""


class StorageAccessDenied(StorageUnavailable):
    """The storage service refused the credential (HTTP 401/403): a role that is missing, or newly
    assigned and not yet in effect (assignments take minutes to propagate)."""


class SigningUnsupported(StorageError):
    """This store has no signed URLs (a local directory is served, not signed)."""


@dataclass(frozen=True)
class SignedAccess:
    """A read-only SAS query string (without ``?``) and when it stops working."""

    token: str
    expiry: dt.datetime

    def __repr__(self) -> str:  # never print the token
        return f"SignedAccess(expiry={self.expiry.isoformat()})"


class RedactSecrets(logging.Filter):
    """A logging filter that strips SAS signatures and account keys from records.

    GDAL reports HTTP errors with the full request URL, SAS included, through rasterio's logger;
    ``install_log_redaction`` puts this filter on the loggers that can carry such text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_REDACTED_LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._io", "rasterio", "azure")


def install_log_redaction() -> None:
    """Attach RedactSecrets to the loggers of GDAL (via rasterio) and the Azure SDK, once."""
    for name in _REDACTED_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())


def redact(text: str) -> str:
    """Remove SAS signatures and account keys from a message."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def check_container_name(name: str) -> str:
    """Return ``name`` if it is a valid Azure container name, else raise InvalidContainerName."""
    if not isinstance(name, str) or not 3 <= len(name) <= 63:
        raise InvalidContainerName(f"container name {name!r} must be 3 to 63 characters long")
    if not _CONTAINER_CHARS.match(name):
        raise InvalidContainerName(
            f"container name {name!r} may only contain lowercase letters, digits and '-'"
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise InvalidContainerName(
            f"container name {name!r} must start and end with a letter or digit"
        )
    if "--" in name:
        raise InvalidContainerName(f"container name {name!r} must not contain '--'")
    return name


def check_blob_name(name: str) -> str:
    """Return ``name`` if it is a valid blob name here, else raise InvalidBlobName.

    Azure's rules (1-1024 characters, no control characters) plus what keeps names portable to a
    local directory and safe in GDAL paths: no leading '/', no '.' or '..' segment, no empty segment.
    """
    if not isinstance(name, str) or not name:
        raise InvalidBlobName("blob name must not be empty")
    if len(name) > MAX_BLOB_NAME:
        raise InvalidBlobName(f"blob name is {len(name)} characters long; the limit is 1024")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidBlobName(f"blob name {name!r} contains a control character")
    if name.startswith("/"):
        raise InvalidBlobName(f"blob name {name!r} must not start with '/'")
    if "\\" in name:
        raise InvalidBlobName(f"blob name {name!r} must not contain '\\' (use '/')")
    segments = name.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise InvalidBlobName(f"blob name {name!r} must not contain a '.' or '..' segment")
    if any(seg == "" for seg in segments):
        raise InvalidBlobName(f"blob name {name!r} must not contain an empty segment ('//' or a trailing '/')")
    return name


#: Longest name component (bytes of UTF-8) a local file system holds: ext4, XFS, btrfs, APFS, NTFS.
MAX_COMPONENT_BYTES = 255


def component_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def fit_component(name: str, suffix: str = "", *, marker: str = "~") -> str:
    """``name + suffix`` as one path component of at most MAX_COMPONENT_BYTES: itself when it fits;
    else the longest prefix of ``name`` that leaves room, ``marker``, 32 hex of SHA-256 of ``name``
    and ``suffix``. Stable (the same name, the same component) and distinct names stay distinct:
    two shortened ones differ in their hashes, and a caller whose own names never hold
    ``marker`` never meets a shortened one (item ids never hold ``@``)."""
    if component_bytes(name + suffix) <= MAX_COMPONENT_BYTES:
        return name + suffix
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    room = MAX_COMPONENT_BYTES - component_bytes(marker + digest + suffix)
    head = name.encode("utf-8", "surrogatepass")[:max(room, 0)].decode("utf-8", "ignore")
    return f"{head}{marker}{digest}{suffix}"


#: How a metadata value that an HTTP header cannot carry as it is gets stored: an RFC 2047
#: encoded word, ``=?utf-8?b?<base64 of the UTF-8 text>?=``. Base64 rather than percent-encoding:
#: the value of a 1,024-character name in 4-byte characters stays under Azure's 8 KB metadata limit.
_ENCODED_WORD = re.compile(r"^=\?utf-8\?b\?([A-Za-z0-9+/]*={0,2})\?=$")


def encode_metadata_value(value: str) -> str:
    """A metadata value as stored: itself when it is printable ASCII without leading or trailing
    blanks (what a header carries unchanged, and what every value written before this encoding
    was), else its RFC 2047 encoded word. A plain value that looks like an encoded word is
    encoded too, so ``decode_metadata_value`` returns exactly what was written."""
    plain = value.isascii() and value.isprintable() and value == value.strip(" \t")
    if plain and not _ENCODED_WORD.match(value):
        return value
    return "=?utf-8?b?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def decode_metadata_value(value: str) -> str:
    """What ``encode_metadata_value`` was given; any other value (written by someone else, or
    before the encoding) as it is."""
    match = _ENCODED_WORD.match(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return value


def encode_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {key: encode_metadata_value(str(value)) for key, value in (metadata or {}).items()}


def decode_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {key: decode_metadata_value(value) for key, value in (metadata or {}).items()}


def normalize_etag(etag: str | None) -> str:
    """ETags without the quotes Azure adds in some responses and not in others."""
    return (etag or "").strip().removeprefix("W/").strip('"')


def guess_content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return "image/tiff"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class BlobInfo(BaseModel):
    """What a listing or a properties call says of one blob."""

    name: str
    size: int
    etag: str
    last_modified: dt.datetime
    content_type: str | None = None
    metadata: dict[str, str] = {}


class BlobPage(BaseModel):
    """One page of a listing; ``continuation`` is None on the last page."""

    blobs: list[BlobInfo]
    continuation: str | None = None


@dataclass(frozen=True)
class GdalPath:
    """A path GDAL can open, with the configuration options it needs (may hold secrets)."""

    path: str
    config: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the config: it can hold a SAS or a key
        return f"GdalPath(path={self.path!r}, config=<{len(self.config)} options>)"


#: Longest GDAL path (bytes of UTF-8) handed out: GDAL forms the names of side files (``.ovr``,
#: ``.aux.xml``, ``.msk``) in 2,048-byte buffers, and a longer path fails when it looks for
#: overviews ("Destination buffer too small"). Azure holds names of 1,024 characters: up to 4 KB.
GDAL_PATH_BYTES = 2000


def gdal_path(path: str, config: Mapping[str, str] | None = None) -> GdalPath:
    """A GdalPath, or GdalPathTooLong when GDAL could not address it."""
    size = len(path.encode("utf-8"))
    if size > GDAL_PATH_BYTES:
        raise GdalPathTooLong(f"{path.removeprefix('/vsiaz/')[:120]}...: its GDAL path is {size} bytes of "
                              f"UTF-8; GDAL addresses files of up to {GDAL_PATH_BYTES} (its file-name buffers "
                              "hold 2,048): give it a shorter name")
    return GdalPath(path, config or {})


class BlobStore(abc.ABC):
    """Blob containers: listing, transfer, properties and GDAL access.

    ``temp_dir`` is where transfers stage files (None: the system's temporary directory).
    """

    temp_dir: Path | None = None

    @abc.abstractmethod
    def create_container(self, container: str) -> None:
        """Create the container if it does not exist."""

    @abc.abstractmethod
    def container_exists(self, container: str) -> bool:
        """Whether the container exists (its blobs are not listed: a container whose listing
        storage refuses still answers this)."""

    @abc.abstractmethod
    def list_page(self, container: str, prefix: str = "", *, page_size: int = DEFAULT_PAGE_SIZE,
                  continuation: str | None = None) -> BlobPage:
        """One page of blobs whose names start with ``prefix``, in name order."""

    @abc.abstractmethod
    def get_properties(self, container: str, name: str) -> BlobInfo:
        """Size, ETag, last-modified, content type and metadata; BlobNotFound if absent."""

    @abc.abstractmethod
    def read_head(self, container: str, name: str, length: int = 512) -> bytes:
        """The blob's first ``length`` bytes (fewer for a shorter blob): what a format is judged by."""

    @abc.abstractmethod
    def download_to_path(self, container: str, name: str, path: Path) -> Path:
        """Write the blob's content to ``path`` (atomically) and return it."""

    @abc.abstractmethod
    def upload_from_path(self, container: str, name: str, path: Path, *,
                         content_type: str | None = None,
                         metadata: Mapping[str, str] | None = None) -> BlobInfo:
        """Upload ``path`` as the blob (replacing it) and return its new properties."""

    @abc.abstractmethod
    def delete(self, container: str, name: str) -> bool:
        """Delete the blob; False if it did not exist."""

    @abc.abstractmethod
    def url(self, container: str, name: str) -> str:
        """The blob's public address (no credentials): an https URL, or a local absolute path."""

    def public_href(self, container: str, name: str, base_url: str | None = None) -> str:
        """Where consumers read the blob: ``<base_url>/<container>/<blob>`` when a base URL is
        configured, else the store's own address (``url``)."""
        if base_url:
            return f"{base_url.rstrip('/')}/{check_container_name(container)}/{quote(check_blob_name(name))}"
        return self.url(container, name)

    def alternate_hrefs(self, container: str, name: str) -> dict[str, str]:
        """Other forms of the blob's address for consumers with their own access (e.g. ``vsiaz``
        for a tiler with a managed identity or a connection string); none for a local store."""
        return {}

    def read_sas(self, container: str, name: str | None = None, *,
                 ttl: dt.timedelta | None = None) -> SignedAccess:
        """A short-lived read-only SAS for a container (or one blob in it)."""
        raise SigningUnsupported(f"{type(self).__name__} has no signed URLs")

    @abc.abstractmethod
    def gdal_read_path(self, container: str, name: str) -> GdalPath:
        """A GDAL path and config to read the blob in place (read-only access)."""

    @abc.abstractmethod
    def gdal_write_path(self, container: str, name: str) -> GdalPath:
        """A GDAL path and config to write the blob in place."""

    def iter_blobs(self, container: str, prefix: str = "", *,
                   page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[BlobInfo]:
        """Every blob under ``prefix``, page by page."""
        continuation: str | None = None
        while True:
            page = self.list_page(container, prefix, page_size=page_size, continuation=continuation)
            yield from page.blobs
            continuation = page.continuation
            if continuation is None:
                return

    def exists(self, container: str, name: str) -> bool:
        try:
            self.get_properties(container, name)
        except BlobNotFound:
            return False
        return True

    @contextlib.contextmanager
    def downloaded(self, container: str, name: str) -> Iterator[Path]:
        """The blob in a temporary file, removed afterwards."""
        tmpdir = Path(tempfile.mkdtemp(prefix="rmh-blob-", dir=self._staging_dir()))
        try:
            yield self.download_to_path(container, name, tmpdir / fit_component(PurePosixPath(name).name))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def _staging_dir(self) -> Path | None:
        if self.temp_dir is not None:
            Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        return self.temp_dir

    def download_bytes(self, container: str, name: str) -> bytes:
        """The blob's content (for small blobs: JSON documents, plans)."""
        with self.downloaded(container, name) as path:
            return path.read_bytes()

    def upload_bytes(self, container: str, name: str, data: bytes, *,
                     content_type: str | None = None,
                     metadata: Mapping[str, str] | None = None) -> BlobInfo:
        with tempfile.TemporaryDirectory(prefix="rmh-up-", dir=self._staging_dir()) as tmpdir:
            path = Path(tmpdir) / "blob"
            path.write_bytes(data)
            return self.upload_from_path(container, name, path, content_type=content_type,
                                         metadata=metadata)


def _parse_iso(value) -> dt.datetime | None:
    return iso_times.iso_or_none(value)
