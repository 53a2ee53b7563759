"""What a cube file is and what it could reference, judged before any library that follows
references sees it: the format from its bytes (or a store's markers), HDF5 links and layouts,
Zarr metadata, and the names handed to GDAL."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cube_errors import UnreadableCube, UnsafeName, UnsafeReference
import geo_ops
from geo_ops import PathLike

#: Formats judged by their leading bytes (a Zarr store is a directory).
NETCDF_CLASSIC_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: HDF5 may sit behind a user block of 512 × 2^n bytes.
HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)
GRIB_MAGIC = b"GRIB"
ZARR_MARKERS = (".zgroup", ".zarray", ".zmetadata", "zarr.json")
#: A name read from a file (variable, array, dimension) that can be handed to GDAL or become a
#: path segment: letters, digits, ``_ . -`` and ``/`` between group names; nothing GDAL's
#: subdataset syntax (``NETCDF:"file":var``) or a path could read as more than a name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
MAX_NAME = 256


def sniff_cube(path: PathLike) -> str:
    """``netcdf``, ``hdf5``, ``grib`` or ``zarr`` from the bytes (or a store's markers)."""
    path = Path(path)
    if path.is_dir():
        if any((path / marker).is_file() for marker in ZARR_MARKERS):
            return "zarr"
        raise geo_ops.UnsupportedFormat(path, "a directory that is not a Zarr store")
    with open(path, "rb") as handle:
        head = handle.read(max(HDF5_OFFSETS) + len(HDF5_MAGIC))
    if not head:
        raise geo_ops.EmptyFile(path, "file is empty (0 bytes)")
    if head.startswith(NETCDF_CLASSIC_MAGIC):
        return "netcdf"
    if any(head[o:o + len(HDF5_MAGIC)] == HDF5_MAGIC for o in HDF5_OFFSETS):
        return "hdf5"
    if head.startswith(GRIB_MAGIC):
        return "grib"
    raise geo_ops.UnsupportedFormat(path, "not a NetCDF, HDF5, GRIB or Zarr file")


def check_hdf5(path: PathLike) -> bool:
    """Refuse an HDF5 (or NetCDF-4) file that names other files: external links, virtual
    datasets, external raw storage. Links are listed without being followed, and a dataset's
    layout is read from its creation properties before anything reads its data. True when the
    file is NetCDF-4 (netCDF-c's ``_NCProperties`` on the root group)."""
    import h5py

    problems: list[str] = []
    try:
        with h5py.File(path, "r") as handle:
            netcdf4 = "_NCProperties" in handle.attrs
            def visit(name: str, link: Any) -> None:
                if isinstance(link, h5py.ExternalLink):
                    problems.append(f"external link {name!r} to {link.filename!r}")
                elif isinstance(link, h5py.HardLink):
                    problems.extend(_hdf5_object_problems(handle, name))
            handle.visititems_links(visit)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise UnreadableCube(path, f"cannot read the HDF5 structure: {err}") from err
    if problems:
        raise UnsafeReference(path, "names other files: " + "; ".join(problems[:5]))
    return netcdf4


def _hdf5_object_problems(handle: Any, name: str) -> list[str]:
    import h5py

    info = h5py.h5o.get_info(handle.id, name.encode(), lapl=None)
    if info.type != h5py.h5o.TYPE_DATASET:
        return []
    dataset = h5py.h5o.open(handle.id, name.encode())
    dcpl = dataset.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        return [f"virtual dataset {name!r}"]
    if dcpl.get_external_count() > 0:
        return [f"dataset {name!r} stored in external files"]
    return []


def check_zarr_store(root: PathLike) -> None:
    """Refuse a Zarr store whose metadata could reach outside it: consolidated metadata keys
    with ``..``, absolute or backslash paths, v3 storage transformers (which redirect chunk
    keys), chunk key separators other than ``.`` and ``/``, any symbolic link, and metadata
    that is not JSON. (zarr-python then opens the arrays the directory holds, never the
    consolidated listing: ``use_consolidated=False``.)"""
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise UnsafeReference(root, f"{path.relative_to(root)} is a symbolic link")
        if path.name not in ZARR_MARKERS + (".zattrs",):
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UnreadableCube(root, f"{path.relative_to(root)} is not JSON: {err}") from err
        _check_zarr_meta(root, path.relative_to(root).as_posix(), meta)


def _check_zarr_meta(root: Path, where: str, meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    if meta.get("storage_transformers"):
        raise UnsafeReference(root, f"{where}: storage transformers can redirect chunk keys")
    for key in ("metadata",):  # v2 .zmetadata: {"metadata": {"a/.zarray": {...}}}
        if isinstance(meta.get(key), dict):
            for member, inner in meta[key].items():
                _check_key(root, where, member)
                _check_zarr_meta(root, f"{where}:{member}", inner)
    consolidated = meta.get("consolidated_metadata")  # v3 zarr.json
    if isinstance(consolidated, dict) and isinstance(consolidated.get("metadata"), dict):
        for member, inner in consolidated["metadata"].items():
            _check_key(root, where, member)
            _check_zarr_meta(root, f"{where}:{member}", inner)
    separator = meta.get("dimension_separator")  # v2 chunk keys: "0.0" or "0/0"
    encoding = meta.get("chunk_key_encoding")  # v3
    if isinstance(encoding, dict):
        separator = (encoding.get("configuration") or {}).get("separator", separator)
    if separator is not None and separator not in (".", "/"):
        raise UnsafeReference(root, f"{where}: chunk key separator {separator!r} is not '.' or '/'")


def _check_key(root: Path, where: str, key: str) -> None:
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or ":" in key or any(p in ("..", ".") for p in parts):
        raise UnsafeReference(root, f"{where}: key {key!r} points outside the store")


def check_name(path: PathLike, name: str) -> str:
    """A variable or array name, refused unless it is a plain name (``SAFE_NAME``)."""
    if len(name) > MAX_NAME or not SAFE_NAME.match(name) or ".." in name.split("/"):
        raise UnsafeName(path, f"name {name[:80]!r} is not a plain variable name")
    return name
