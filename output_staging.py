"""Outputs written somewhere temporary, checked, then published in one step: a local destination
by ``os.replace``, a virtual one (``/vsiaz/``...) by one sequential upload. On failure nothing is
left at the destination.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

import rasterio
import rasterio.shutil

from raster_env import GDAL_ERRORS, PathLike, is_virtual
from raster_errors import OutputWriteError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def staged_output(dst: PathLike, tmp_dir: PathLike | None = None) -> Iterator[str]:
    """Yield a temporary path to write; on success move (or upload-copy) it to ``dst``.

    Local destinations are staged in a hidden sibling directory, then ``os.replace``d (atomic
    on one filesystem). Virtual destinations
    (``/vsiaz/``...) are written to a local temporary directory and copied in one sequential
    upload. On any failure temporary files are removed and ``dst`` is untouched.
    """
    dst = str(dst)
    if is_virtual(dst):
        parent = tmp_dir
    else:
        parent = os.path.dirname(os.path.abspath(dst))
        os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=".geo_ops_", dir=parent)
    staging = os.path.join(workdir, os.path.basename(dst) or "output.tif")
    try:
        yield staging
        publish(staging, dst)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def publish(local: str, dst: str) -> None:
    """Move or copy a finished local file to its destination.

    A VRT is re-serialised by GDAL's VRT driver at the destination (copying its "files" would
    upload every source tile again); anything else is copied byte for byte.
    """
    if not is_virtual(dst):
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        os.replace(local, dst)
        return
    try:
        if local.lower().endswith(".vrt"):
            rasterio.shutil.copy(local, dst, driver="VRT")
        else:
            rasterio.shutil.copyfiles(local, dst)
    except GDAL_ERRORS as err:
        _remove_partial(dst)
        raise OutputWriteError(dst, f"upload failed: {err}") from err


def _remove_partial(dst: str) -> None:
    try:
        rasterio.shutil.delete(dst)
    except GDAL_ERRORS as err:
        log.warning("could not remove partial output %s: %s", dst, err)
