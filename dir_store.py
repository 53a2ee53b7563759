"""A local directory as blob containers (the embedded default), and the one home of atomic local
writes (a temporary file, then a rename; the file mode the umask gives) that the static catalog's
directory store writes with too."""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storage_base import (BlobInfo, BlobNotFound, BlobPage, BlobStore, ContainerNotFound, DEFAULT_PAGE_SIZE, InvalidBlobName,
                          MAX_COMPONENT_BYTES, StorageRefused, StorageUnavailable, check_blob_name, check_container_name,
                          component_bytes, decode_metadata, encode_metadata, gdal_path, guess_content_type)

logger = logging.getLogger(__name__)


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
        atomic_copy(src, path)
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
            atomic_write_text(meta_path, json.dumps(meta))
            atomic_copy(Path(path), dst)
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


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` whole or not at all (a temporary file beside it, then a rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(dst: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dst`` whole or not at all: a reader sees the old or the new text.
    The temporary name is short: ``dst``'s own name may already fill a file-name component."""
    fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=dst.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
