"""Opening untrusted rasters: judged by their leading bytes, opened by an allow-list of
self-contained drivers only (no VRT, no format that can name other files or URLs); never reads a
pixel.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from warnings import catch_warnings, simplefilter

from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader

from raster_env import GDAL_ERRORS, PathLike, gdal_reason, is_transient_reason, is_virtual
from raster_errors import EmptyFile, GeoOpsError, RasterNotFound, SourceUnavailable, UnreadableRaster, UnsupportedFormat


#: Drivers allowed to open inputs: self-contained, single-file formats.
ALLOWED_DRIVERS = frozenset({"GTiff", "COG", "JP2OpenJPEG", "PNG", "JPEG", "WEBP"})


#: Formats refused because they can reference other files or URLs.
REFERENCING_DRIVERS = frozenset({
    "VRT", "GTI", "WMS", "WMTS", "STACIT", "STACTA", "DAAS", "EEDAI", "netCDF", "HDF4", "HDF5",
    "MRF", "ESRIC", "PLMosaic", "OGCAPI", "Zarr", "GPKG", "MBTiles", "Rasterlite", "PDS4", "VICAR",
})


#: Leading bytes of the allowed formats, and the GDAL driver each one means.
MAGIC = {
    b"II*\x00": "GTiff", b"MM\x00*": "GTiff", b"II+\x00": "GTiff", b"MM\x00+": "GTiff",
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"\x00\x00\x00\x0cjP  ": "JP2OpenJPEG",
    b"\xffO\xffQ": "JP2OpenJPEG", b"RIFF": "WEBP",
}


def _describe_bytes(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised signature {head[:8].hex()}"
    if text.lstrip().startswith("<"):
        return "an XML document"
    return "text" if text.isprintable() or "\n" in text else f"unrecognised signature {head[:8].hex()}"


def sniff_bytes(path: PathLike, head: bytes) -> str:
    """The allowed driver for a file's leading bytes; refuses empty files, text, XML and VRTs."""
    if not head:
        raise EmptyFile(path, "file is empty (0 bytes)")
    if b"<VRTDataset" in head:
        raise UnsupportedFormat(path, "is a GDAL VRT, which can reference other files or URLs")
    for magic, driver in MAGIC.items():
        if head.startswith(magic):
            return driver
    raise UnsupportedFormat(path, f"not a raster file: content is {_describe_bytes(head)}")


def _sniff_local(path: PathLike) -> str:
    """The driver for a local file from its first bytes; refuses missing, empty, text, XML."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise RasterNotFound(path, "no such file") from err
    if stat.S_ISDIR(st.st_mode):
        raise UnsupportedFormat(path, "is a directory, not a raster file")
    with open(path, "rb") as handle:
        return sniff_bytes(path, handle.read(512))


def sniff_driver(path: PathLike, head: bytes | None = None) -> str:
    """The allowed GDAL driver for ``path`` judged by its first bytes, before GDAL opens it.

    A local file is read directly; for a virtual path the caller passes the leading bytes it
    fetched (``head``). Never asks GDAL to identify the file: identification is a full open with
    every driver, and the VRT driver would open the files and URLs a VRT names.
    """
    if not is_virtual(path):
        return _sniff_local(path)
    if head is None:
        raise UnsupportedFormat(path, "cannot judge a remote file without its leading bytes")
    return sniff_bytes(path, head)


def open_raster(path: PathLike, driver: str | None = None) -> DatasetReader:
    """Open ``path`` with exactly one (allowed) driver, or with the allow-list when None."""
    if driver is None:
        return open_allowed(path)
    if driver not in ALLOWED_DRIVERS:
        raise UnsupportedFormat(path, f"{driver} format is not on the allow-list")
    try:
        with catch_warnings():  # reported as MissingCRS / DegenerateTransform instead
            simplefilter("ignore", NotGeoreferencedWarning)
            return DatasetReader(str(path), driver=driver)  # rasterio.open minus its overhead
    except GDAL_ERRORS as err:
        raise _open_error(path, driver, err) from err


def _open_error(path: PathLike, driver: str, err: BaseException) -> GeoOpsError:
    reason = gdal_reason(err)
    if is_transient_reason(reason):
        return SourceUnavailable(path, reason)
    return UnreadableRaster(path, f"cannot open with {driver}: {reason}")


def open_allowed(path: PathLike, head: Callable[[], bytes] | None = None) -> DatasetReader:
    """Open ``path`` with an allowed driver only: no other driver ever sees its bytes.

    A local file is sniffed by its first bytes and opened with that driver. A virtual path is
    opened in one request with the allow-list as GDAL's candidate drivers; only when that fails
    are its leading bytes fetched (``head``, from the storage the caller knows) to say why: a
    VRT, a format off the list, an empty file, or a readable format that is damaged.
    """
    if not is_virtual(path):
        return open_raster(path, sniff_driver(path))
    try:
        with catch_warnings():
            simplefilter("ignore", NotGeoreferencedWarning)
            return DatasetReader(str(path), driver=sorted(ALLOWED_DRIVERS))
    except GDAL_ERRORS as err:
        reason = gdal_reason(err)
        if is_transient_reason(reason):
            raise SourceUnavailable(path, reason) from err
        if head is not None:
            driver = sniff_driver(path, head())  # raises the specific refusal of the format
            raise UnreadableRaster(path, f"cannot open with {driver}: {reason}") from err
        if "No such file" in reason or "does not exist" in reason or "404" in reason:
            raise RasterNotFound(path, reason) from err
        raise UnsupportedFormat(path, f"not recognised by the allowed drivers "
                                      f"({', '.join(sorted(ALLOWED_DRIVERS))}): {reason}") from err
