"""Blob containers behind one interface: Azure Blob Storage, or a local directory (embedded default).

Both implementations check container and blob names against Azure's rules before any call, so a
bad name fails the same way everywhere, and both hand GDAL a path it can read without a download
(``/vsiaz/`` for Azure, the file itself for a local directory) plus the GDAL configuration needed.
Secrets (account keys, SAS signatures) never appear in logs or error messages.
"""
from __future__ import annotations

import abc
import base64
import contextlib
import datetime as dt
import errno
import hashlib
import itertools
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

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


class StorageUnavailable(StorageError):
    """The storage service could not be reached or failed; transient, worth a retry."""

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


def _sorted_files(directory: Path, path: str, prefix: str, after: str | None) -> Iterator[str]:
    """The names of the files below ``directory`` (``path``: its name, ``""`` or ending in ``/``)
    that start with ``prefix`` and sort after ``after``, in the order of the names, walked
    lazily: a page of a listing costs what it returns, not the whole tree (each page of a
    million-file container sorted every name of it). A directory sorts as its name and ``/``, so
    its files come where their names sort among its siblings' ("a-b" < "a/b" < "a0"); a
    subdirectory wholly before ``after`` or outside ``prefix`` is not entered."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    keyed = sorted(((entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name), entry)
                   for entry in entries if not entry.name.startswith(".rmh-tmp-"))
    for key, entry in keyed:
        name = path + key
        if not (name.startswith(prefix) or prefix.startswith(name)):
            continue
        if key.endswith("/"):
            if after is None or name > after or after.startswith(name):
                yield from _sorted_files(Path(entry.path), name, prefix, after)
        elif entry.is_file() and name.startswith(prefix) and (after is None or name > after):
            yield name


class LocalDirStore(BlobStore):
    """Containers as sub-directories of ``root``; metadata in a sidecar tree ``root/.meta``.

    Writes are atomic (temporary file, then rename), so a reader never sees half a blob. The ETag
    is derived from size and modification time, as a blob's changes whenever it is rewritten.
    """

    def __init__(self, root: Path | str, *, temp_dir: Path | str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_dir = Path(temp_dir) if temp_dir else None

    def _container_dir(self, container: str, *, must_exist: bool = True) -> Path:
        path = self.root / check_container_name(container)
        if must_exist and not path.is_dir():
            raise ContainerNotFound(f"container {container!r} does not exist")
        return path

    def _blob_path(self, container: str, name: str) -> Path:
        return self._container_dir(container) / check_local_name(check_blob_name(name))

    def _meta_path(self, container: str, name: str) -> Path:
        """The blob's metadata file: ``.meta/<container>/<name>.json``; when the last segment
        leaves no room for ``.json``, its SHA-256 with ``.long`` instead (a sidecar of another
        name always ends in ``.json``, so the two never meet)."""
        parent, _, last = name.rpartition("/")
        sidecar = last + ".json" if component_bytes(last + ".json") <= MAX_COMPONENT_BYTES else \
            hashlib.sha256(last.encode("utf-8")).hexdigest() + ".long"
        return self.root / ".meta" / container / parent / sidecar

    def create_container(self, container: str) -> None:
        self._container_dir(container, must_exist=False).mkdir(parents=True, exist_ok=True)

    def container_exists(self, container: str) -> bool:
        return self._container_dir(container, must_exist=False).is_dir()

    def list_page(self, container, prefix="", *, page_size=DEFAULT_PAGE_SIZE, continuation=None):
        base = self._container_dir(container)
        page = list(itertools.islice(_sorted_files(base, "", prefix, continuation), page_size + 1))
        more = len(page) > page_size
        page = page[:page_size]
        blobs = [self._info(container, base / n, n) for n in page]
        return BlobPage(blobs=blobs, continuation=page[-1] if more else None)

    def _info(self, container: str, path: Path, name: str) -> BlobInfo:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {container}/{name} does not exist") from None
        meta = self._read_meta(container, name)
        etag = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}".encode()).hexdigest()
        return BlobInfo(
            name=name, size=stat.st_size, etag=etag[:32],
            last_modified=dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.timezone.utc),
            content_type=meta.get("content_type") or guess_content_type(name),
            metadata=meta.get("metadata", {}),
        )

    def _read_meta(self, container: str, name: str) -> dict:
        try:
            meta = json.loads(self._meta_path(container, name).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return {}
        return {**meta, "metadata": decode_metadata(meta.get("metadata"))}

    def get_properties(self, container, name):
        path = self._blob_path(container, name)
        if not path.is_file():
            raise BlobNotFound(f"blob {container}/{name} does not exist")
        return self._info(container, path, name)

    def read_head(self, container, name, length=512):
        path = self._blob_path(container, name)
        try:
            with open(path, "rb") as handle:
                return handle.read(length)
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(f"blob {container}/{name} does not exist") from None

    def download_to_path(self, container, name, path):
        src = self._blob_path(container, name)
        if not src.is_file():
            raise BlobNotFound(f"blob {container}/{name} does not exist")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(src, path)
        return path

    def upload_from_path(self, container, name, path, *, content_type=None, metadata=None):
        dst = self._blob_path(container, name)
        meta = {"content_type": content_type or guess_content_type(name),
                "metadata": encode_metadata(metadata)}
        meta_path = self._meta_path(container, name)
        with local_refusals(container, name):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir():
                raise IsADirectoryError(errno.EISDIR, "a directory of other blobs has this name", str(dst))
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(meta_path, json.dumps(meta))
            _atomic_copy(Path(path), dst)
        return self._info(container, dst, name)

    def delete(self, container, name):
        path = self._blob_path(container, name)
        try:  # a parent that is a file (blob a.tif beside a.tif/b.tif on Azure): nothing to delete
            self._meta_path(container, name).unlink(missing_ok=True)
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def url(self, container, name):
        return str(self._blob_path(container, name))

    def gdal_read_path(self, container, name):
        return gdal_path(str(self._blob_path(container, name)))

    def gdal_write_path(self, container, name):
        path = self._blob_path(container, name)
        access = gdal_path(str(path))
        with local_refusals(container, name):
            path.parent.mkdir(parents=True, exist_ok=True)
        return access


def check_local_name(name: str) -> str:
    """``name`` if a local directory can hold it as a blob: each '/'-separated segment at most
    MAX_COMPONENT_BYTES of UTF-8 (Azure holds up to 1,024 characters in one segment; a file
    system does not), else InvalidBlobName saying which segment and by how much."""
    for index, segment in enumerate(name.split("/")):
        size = component_bytes(segment)
        if size > MAX_COMPONENT_BYTES:
            raise InvalidBlobName(
                f"blob name {name[:120]!r}{'...' if len(name) > 120 else ''}: segment {index + 1} is "
                f"{size} bytes of UTF-8; a local directory holds at most {MAX_COMPONENT_BYTES} per "
                "segment (Azure Blob Storage holds more)")
    return name


#: Errors of a local file system that are the moment's, not the request's: retried as outages.
_LOCAL_TRANSIENT = frozenset({errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.ENOMEM, errno.EDQUOT, errno.EBUSY})


@contextlib.contextmanager
def local_refusals(container: str, name: str) -> Iterator[None]:
    """A local file-system error as a storage condition: a full or failing disk is
    StorageUnavailable (retried), anything else (a file where a directory is needed, a directory
    where a file is, a name too long) is StorageRefused: the same request would fail again."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as err:
        what = err.strerror or type(err).__name__
        message = f"local storage cannot write {container}/{name}: {what}"
        if err.errno in _LOCAL_TRANSIENT:
            raise StorageUnavailable(message) from None
        if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            message += " (on Azure a blob and a prefix may share a name; a directory cannot)"
        raise StorageRefused(message) from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: Mode of the files a local store writes: what ``open()`` would give under the umask (mkstemp
#: alone gives 0600, which other readers of the directory, e.g. a tile server, cannot open).
_FILE_MODE = 0o666 & ~_umask()


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(dst: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=dst.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: HTTP statuses by which storage says the request itself is wrong (bad name, metadata too large,
#: bad query): the same request gets the same answer, so it is refused at once, never ridden out
#: as an outage. 408 (timeout), 429 (throttled), 403 (a role still propagating) and 409 (a
#: container being deleted) can pass, and stay StorageUnavailable.
REFUSING_STATUS = frozenset({400, 405, 411, 413, 414, 431})
#: How long a request storage refused is refused at once when asked again (see ``_call``).
REFUSAL_MEMORY_SECONDS = 600.0
REFUSALS_KEPT = 1024


class AzureBlobStore(BlobStore):
    """Azure Blob Storage through azure-storage-blob.

    With a connection string (Azurite, or an account key) GDAL gets the connection string as
    ``AZURE_STORAGE_CONNECTION_STRING``. With an account URL the service uses
    ``DefaultAzureCredential`` (managed identity) and GDAL gets a connection string naming the
    blob endpoint and a short-lived, single-blob **user delegation SAS**: read-only for reads,
    create/write for writes. ``gdal_config`` is added to every GDAL path's configuration and
    ``client_options`` go to ``BlobServiceClient`` (both e.g. for a private CA bundle).
    """

    def __init__(self, *, connection_string: str | None = None, account_url: str | None = None,
                 credential=None, sas_ttl: dt.timedelta = dt.timedelta(hours=1),
                 gdal_config: Mapping[str, str] | None = None, temp_dir: Path | str | None = None,
                 **client_options):
        from azure.storage.blob import BlobServiceClient

        if bool(connection_string) == bool(account_url):
            raise ValueError("give exactly one of connection_string or account_url")
        self._connection_string = connection_string
        self._sas_ttl = sas_ttl
        self.temp_dir = Path(temp_dir) if temp_dir else None
        self._gdal_config = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", **(gdal_config or {})}
        install_log_redaction()
        if connection_string:
            self._client = BlobServiceClient.from_connection_string(connection_string, **client_options)
        else:
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._client = BlobServiceClient(account_url, credential=credential, **client_options)
        self._delegation_key = None
        self._refusals: dict[tuple[str, str], tuple[float, str]] = {}
        self._refusals_lock = threading.Lock()

    @property
    def account_name(self) -> str:
        return self._client.account_name

    def _blob(self, container: str, name: str):
        return self._client.get_blob_client(check_container_name(container), check_blob_name(name))

    @contextlib.contextmanager
    def _translate(self, container: str, name: str | None = None) -> Iterator[None]:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            yield
        except ResourceNotFoundError as err:
            code = getattr(err, "error_code", None) or ""
            if "Container" in str(code) or name is None:
                raise ContainerNotFound(f"container {container!r} does not exist") from None
            raise BlobNotFound(f"blob {container}/{name} does not exist") from None
        except AzureError as err:
            where = f"{container}/{name}" if name else container
            if getattr(err, "status_code", None) in (401, 403):
                code = getattr(err, "error_code", None) or f"HTTP {err.status_code}"
                raise StorageAccessDenied(f"blob storage refused access to {where}: {code}",
                                          answer=f"{err.status_code} {code}") from None
            message = f"blob storage failed on {where}: {type(err).__name__}: {redact(str(err))[:300]}"
            status = getattr(err, "status_code", None) if isinstance(err, HttpResponseError) else None
            if status in REFUSING_STATUS:
                raise StorageRefused(message) from None
            answer = f"{status} {getattr(err, 'error_code', None) or ''}".strip() if status else None
            raise StorageUnavailable(message, answer=answer) from None

    def _call(self, container: str, name: str | None, request: str, call: Callable[..., T]) -> T:
        """``call()`` with storage's errors translated; ``request`` names what is asked (the
        operation and its argument). A server error (5xx) is an outage, unless it is this
        request's own: when storage answers a probe of the container, the call is made once more
        without the SDK's retries, and the same answer again makes it StorageRefused, remembered
        for REFUSAL_MEMORY_SECONDS, so the request's retries (an activity's, an orchestrator's)
        are refused at once instead of riding out RMH_OUTAGE_SECONDS each."""
        key = (container, request)
        remembered = self._refusals.get(key)
        if remembered is not None and remembered[0] > time.monotonic():
            raise StorageRefused(remembered[1])
        try:
            with self._translate(container, name):
                return call()
        except StorageUnavailable as first:
            if not (first.answer or "").startswith("5") or not self._container_answers(container):
                raise
            try:
                with self._translate(container, name):
                    return call(retry_total=0)
            except StorageUnavailable as again:
                if again.answer != first.answer:
                    raise
                message = (f"storage answers {first.answer} to this request every time while it answers "
                           f"for container {container!r}: the request, not an outage ({first})")
                self._remember_refusal(key, message)
                raise StorageRefused(message) from None

    def _container_answers(self, container: str) -> bool:
        """Whether storage answers a small question about the container (once, no SDK retries)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._client.get_container_client(container).get_container_properties(retry_total=0)
        except ResourceNotFoundError:
            return True
        except AzureError:
            return False
        return True

    def _remember_refusal(self, key: tuple[str, str], message: str) -> None:
        """Keep a refusal for REFUSAL_MEMORY_SECONDS; at most REFUSALS_KEPT (the expired, then
        the oldest, make room)."""
        with self._refusals_lock:
            now = time.monotonic()
            if len(self._refusals) >= REFUSALS_KEPT:
                self._refusals = {k: v for k, v in self._refusals.items() if v[0] > now}
            while len(self._refusals) >= REFUSALS_KEPT:
                self._refusals.pop(next(iter(self._refusals)))
            self._refusals[key] = (now + REFUSAL_MEMORY_SECONDS, message)

    def create_container(self, container):
        from azure.core.exceptions import ResourceExistsError

        with self._translate(container), contextlib.suppress(ResourceExistsError):
            self._client.create_container(check_container_name(container))

    def container_exists(self, container):
        client = self._client.get_container_client(check_container_name(container))
        try:
            self._call(container, None, "container properties", client.get_container_properties)
        except ContainerNotFound:
            return False
        return True

    def list_page(self, container, prefix="", *, page_size=DEFAULT_PAGE_SIZE, continuation=None):
        client = self._client.get_container_client(check_container_name(container))

        def page(**options) -> BlobPage:
            pages = client.list_blobs(name_starts_with=prefix or None, results_per_page=page_size,
                                      **options).by_page(continuation)
            blobs = [self._to_info(props) for props in next(pages)]
            return BlobPage(blobs=blobs, continuation=pages.continuation_token or None)

        return self._call(container, None, f"list {prefix!r} from {continuation!r}", page)

    @staticmethod
    def _to_info(props) -> BlobInfo:
        settings = props.content_settings
        return BlobInfo(
            name=props.name, size=props.size, etag=normalize_etag(props.etag),
            last_modified=props.last_modified,
            content_type=settings.content_type if settings else None,
            metadata=decode_metadata(props.metadata),
        )

    @staticmethod
    def _uploaded(name: str, size: int, answer: Mapping[str, Any], settings, metadata) -> BlobInfo:
        """The uploaded blob's info from the upload's own answer (its ETag and time), not from
        one more properties request."""
        return BlobInfo(name=name, size=size, etag=normalize_etag(answer["etag"]),
                        last_modified=answer["last_modified"], content_type=settings.content_type,
                        metadata=dict(metadata or {}))

    def get_properties(self, container, name):
        blob = self._blob(container, name)
        props = self._call(container, name, f"properties of {name!r}", blob.get_blob_properties)
        props.name = name
        return self._to_info(props)

    def download_to_path(self, container, name, path):
        blob = self._blob(container, name)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=path.parent)
        os.close(fd)

        def download(**options) -> None:
            with open(tmp, "wb") as handle:
                blob.download_blob(max_concurrency=4, **options).readinto(handle)

        try:
            self._call(container, name, f"download {name!r}", download)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def download_bytes(self, container, name):
        blob = self._blob(container, name)
        return self._call(container, name, f"download {name!r}", lambda **options: blob.download_blob(**options).readall())

    def read_head(self, container, name, length=512):
        from azure.core.exceptions import HttpResponseError

        blob = self._blob(container, name)

        def head(**options) -> bytes:
            try:
                return blob.download_blob(offset=0, length=length, **options).readall()
            except HttpResponseError as err:
                if err.status_code == 416:  # a range of an empty blob: there are no bytes
                    return b""
                raise

        return self._call(container, name, f"head of {name!r}", head)

    def upload_bytes(self, container, name, data, *, content_type=None, metadata=None):
        from azure.storage.blob import ContentSettings

        blob = self._blob(container, name)
        settings = ContentSettings(content_type=content_type or guess_content_type(name))
        stored = encode_metadata(metadata)
        answer = self._call(container, name, f"upload {name!r}", lambda **options: blob.upload_blob(
            data, overwrite=True, content_settings=settings, metadata=stored, **options))
        return self._uploaded(name, len(data), answer, settings, metadata)

    def upload_from_path(self, container, name, path, *, content_type=None, metadata=None):
        from azure.storage.blob import ContentSettings

        blob = self._blob(container, name)
        settings = ContentSettings(content_type=content_type or guess_content_type(name))
        stored = encode_metadata(metadata)

        def upload(**options) -> dict[str, Any]:
            with open(path, "rb") as handle:
                return blob.upload_blob(handle, overwrite=True, content_settings=settings, metadata=stored,
                                        max_concurrency=4, **options)

        answer = self._call(container, name, f"upload {name!r}", upload)
        return self._uploaded(name, os.path.getsize(path), answer, settings, metadata)

    def delete(self, container, name):
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(container, name)
        try:
            with self._translate(container, name):
                blob.delete_blob()
        except (BlobNotFound, ContainerNotFound):
            return False
        except ResourceNotFoundError:
            return False
        return True

    def url(self, container, name):
        # As BlobClient.url formats it, without building a client (twice per cataloged file).
        base = self._client.primary_endpoint.split("?", 1)[0].rstrip("/")
        return f"{base}/{quote(check_container_name(container))}/{quote(check_blob_name(name), safe='~/')}"

    def url_prefix(self) -> str:
        """What every blob URL of this account starts with (``https://<account>.blob.../``)."""
        return self._client.url.split("?", 1)[0].rstrip("/") + "/"

    def alternate_hrefs(self, container, name):
        return {"vsiaz": f"/vsiaz/{check_container_name(container)}/{check_blob_name(name)}"}

    def read_sas(self, container, name=None, *, ttl=None):
        """Read-only (no list, no write) SAS for the container, or for one blob when ``name`` is
        given: signed with a user delegation key under managed identity, with the account key
        when the store was built from a connection string (Azurite, key-based accounts)."""
        from azure.storage.blob import (BlobSasPermissions, ContainerSasPermissions,
                                        generate_blob_sas, generate_container_sas)

        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        expiry = now + (ttl or self._sas_ttl)
        signing: dict = ({"account_key": self._client.credential.account_key} if self._connection_string
                         else {"user_delegation_key": self._user_delegation_key(now)})
        common = {"account_name": self.account_name, "container_name": check_container_name(container),
                  "start": now - dt.timedelta(minutes=5), "expiry": expiry, **signing}
        with self._translate(container, name):
            if name is None:
                token = generate_container_sas(permission=ContainerSasPermissions(read=True), **common)
            else:
                token = generate_blob_sas(blob_name=check_blob_name(name),
                                          permission=BlobSasPermissions(read=True), **common)
        return SignedAccess(token=token, expiry=expiry)

    def gdal_read_path(self, container, name):
        return self._gdal_path(container, name, write=False)

    def gdal_write_path(self, container, name):
        return self._gdal_path(container, name, write=True)

    def _gdal_path(self, container: str, name: str, *, write: bool) -> GdalPath:
        path = gdal_path(f"/vsiaz/{check_container_name(container)}/{check_blob_name(name)}").path
        # GDAL keeps what it read of /vsiaz/ files across opens in a process-wide cache; a blob
        # rewritten since (same name, new ETag) would be read stale, so reads are not cached.
        config = {"CPL_VSIL_CURL_NON_CACHED": f"/vsiaz/{container}/", **self._gdal_config}
        if write:
            config["CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE"] = "YES"
        if self._connection_string:
            config["AZURE_STORAGE_CONNECTION_STRING"] = self._connection_string
        else:
            sas = self.user_delegation_sas(container, name, write=write)
            endpoint = self._client.primary_endpoint.rstrip("/")
            config["AZURE_STORAGE_CONNECTION_STRING"] = (
                f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"
            )
        return GdalPath(path, config)

    def user_delegation_sas(self, container: str, name: str, *, write: bool = False) -> str:
        """A SAS for one blob, signed with a user delegation key: read-only unless ``write``."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = dt.datetime.now(dt.timezone.utc)
        key = self._user_delegation_key(now)
        permission = BlobSasPermissions(read=True, create=write, write=write)
        with self._translate(container, name):
            return generate_blob_sas(
                account_name=self.account_name, container_name=container, blob_name=name,
                user_delegation_key=key, permission=permission,
                start=now - dt.timedelta(minutes=5), expiry=now + self._sas_ttl,
            )

    def _user_delegation_key(self, now: dt.datetime):
        key = self._delegation_key
        expiry = _parse_iso(key.signed_expiry) if key is not None else None
        if expiry is None or expiry - now < self._sas_ttl + dt.timedelta(minutes=10):
            with self._translate("(account)"):
                key = self._client.get_user_delegation_key(
                    key_start_time=now - dt.timedelta(minutes=5),
                    key_expiry_time=now + self._sas_ttl + dt.timedelta(hours=1),
                )
            self._delegation_key = key
        return key


def _parse_iso(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


class StoreSettings(Protocol):
    """What ``store_from_settings`` reads of ``settings.Settings``: named here, so that storage
    does not import settings (which imports storage's name checks)."""

    storage_backend: str  # settings.StorageBackend, a str enum: "local" or "azure"
    storage_local_dir: Path
    storage_connection_string: Any  # SecretStr | None
    storage_account_url: str | None
    sas_ttl_minutes: int
    work_dir: Path


def store_from_settings(settings: StoreSettings) -> BlobStore:
    """The blob store the settings describe."""
    if settings.storage_backend == "local":
        return LocalDirStore(settings.storage_local_dir, temp_dir=settings.work_dir)
    secret = settings.storage_connection_string
    return AzureBlobStore(
        connection_string=secret.get_secret_value() if secret else None,
        account_url=settings.storage_account_url,
        sas_ttl=dt.timedelta(minutes=settings.sas_ttl_minutes),
        temp_dir=settings.work_dir,
    )
