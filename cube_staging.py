"""Staging: a cube source copied to a worker-local cache keyed by its ETag, bounded in size
(slice-group activities on one host read one copy); a Zarr store's roots among listed names."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cube_checks import ZARR_MARKERS
from cube_errors import SourceTooLarge, UnreadableCube, UnsafeReference
from geo_ops import PathLike


def source_key(container: str, name: str, etag: str) -> str:
    """The cache key of a source version (container, blob or store prefix, ETag)."""
    return hashlib.sha256(f"{container}\n{name}\n{etag}".encode()).hexdigest()[:32]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_size(path: PathLike, size: int | None, max_bytes: int) -> None:
    if size is not None and size > max_bytes:
        raise SourceTooLarge(path, f"{size:,} bytes is over the staging limit of {max_bytes:,} "
                             "bytes (RMH_MAX_CUBE_BYTES)")


def stage_file(cache_dir: PathLike, key: str, *, size: int | None, max_bytes: int,
               download: Callable[[Path], Any]) -> Path:
    """The source as a local file ``<cache_dir>/rmh-cube-<key>/source``, downloaded once per
    host (``download(path)`` writes it; concurrent callers wait on a lock and reuse it).

    ``size`` (the listed blob size) is checked before the download and the file's real size
    after it. Each use touches the directory, so the worker's stale-staging sweep (entries
    untouched for the function timeout) only removes copies no activity is using.
    """
    _check_size(key, size, max_bytes)
    directory = Path(cache_dir) / f"rmh-cube-{key}"
    final = directory / "source"
    with _locked(directory):
        if not final.is_file():
            partial = directory / ".partial"
            partial.unlink(missing_ok=True)
            download(partial)
            try:
                _check_size(key, partial.stat().st_size, max_bytes)
            except SourceTooLarge:
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, final)
        os.utime(directory)
    return final


def check_member_name(store: str, name: str) -> str:
    """A blob name relative to a Zarr store's prefix, refused when it could land outside it."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeReference(store, f"store member {name!r} is not a plain relative key")
    return name


def stage_store(cache_dir: PathLike, key: str, members: Sequence[tuple[str, int | None]], *,
                max_bytes: int, download: Callable[[str, Path], Any]) -> Path:
    """A Zarr store (a prefix of many blobs) as a local directory, downloaded once per host.

    ``members`` are (name relative to the store's prefix, size); ``download(name, path)`` writes
    one. Names that could leave the directory are refused before anything is written.
    """
    names = [check_member_name(key, name) for name, _ in members]
    _check_stageable(key, names)
    _check_size(key, sum(size or 0 for _, size in members), max_bytes)
    directory = Path(cache_dir) / f"rmh-cube-{key}"
    root = directory / "store"
    with _locked(directory):
        if not (directory / ".complete").is_file():
            partial = directory / ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            total = 0
            for name in names:
                target = partial.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                download(name, target)
                total += target.stat().st_size
                if total > max_bytes:
                    shutil.rmtree(partial, ignore_errors=True)
                    _check_size(key, total, max_bytes)
            os.replace(partial, root)
            (directory / ".complete").touch()
        os.utime(directory)
    return root


def _check_stageable(key: str, names: Sequence[str]) -> None:
    """Refuse member names a local directory cannot hold as they are: a blob that is also a
    folder of other blobs (blob storage allows both), a name segment over 255 bytes."""
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    both = sorted(set(names) & folders)
    if both:
        raise UnreadableCube(key, f"store member {both[0][:200]!r} is both a blob and a folder of blobs")
    long = next((n for n in names if any(len(p.encode()) > 255 for p in n.split("/"))), None)
    if long is not None:
        raise UnreadableCube(key, f"store member {long[:200]!r} has a name segment over 255 bytes")


def zarr_store_roots(names: Sequence[str]) -> list[str]:
    """The prefixes of listed blob names that are Zarr store roots (each a dataset of its own):
    a prefix holding ``.zgroup``, ``.zmetadata``, ``.zarray`` or ``zarr.json``, outermost only."""
    candidates = set()
    for name in names:
        head, _, leaf = name.rpartition("/")
        if leaf in ZARR_MARKERS:
            candidates.add(head)
    roots: list[str] = []
    for prefix in sorted(candidates, key=len):
        if not any(prefix == r or prefix.startswith(r + "/") or r == "" for r in roots):
            roots.append(prefix)
    return sorted(roots)
