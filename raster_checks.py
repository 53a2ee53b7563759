"""Validation checks of a raster, each returning ``(errors, warnings)`` lists of ``Issue``: the
header against the limits (a decompression-bomb guard), data types, georeferencing, nodata; a
sample of blocks decoded; the COG layout. ``raster_validate`` composes them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from affine import Affine
from pydantic import BaseModel, Field
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.io import DatasetReader
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from georeferencing import georeferencing, resolved_gcp_transform, rpc_height
from raster_crs import crs_compact_text
from raster_env import GDAL_ERRORS, PathLike, component_dtype, nodata_json, numpy_dtype, read_error
from raster_errors import (DegenerateTransform, GeoOpsError, InvalidNodata, MissingCRS, RasterTooLarge,
                           SourceUnavailable, UnreadableRaster, UnsupportedDtype)
from raster_models import Issue, RasterLimits
from raster_stats import STATISTICS_SIZE, sample_windows


Findings = tuple[list[Issue], list[Issue]]


def issue(cls: type[GeoOpsError] | str, message: str) -> Issue:
    return Issue(code=cls if isinstance(cls, str) else cls.__name__, message=message)


def check_georeferencing(ds: DatasetReader) -> Findings:
    """CRS present, transform usable; rotation and south-up layouts are warnings. A raster placed
    by GCPs (with their CRS) or by RPCs, without a geotransform, is georeferenced too: a warning
    says it is warped when converted (``georeferencing``)."""
    errors, warnings = [], []
    t = ds.transform
    placed = georeferencing(ds)
    if placed == "gcps":
        count, crs = len(ds.gcps[0]), ds.gcps[1]
        if count < 3:
            errors.append(issue(DegenerateTransform, f"only {count} GCPs: placing a raster by GCPs takes at least 3"))
        else:
            warnings.append(issue("GcpGeoreferenced", f"placed by {count} GCPs in {crs_compact_text(crs)[:80]}: "
                                  f"converted by warping ({resolved_gcp_transform(count)} unless asked otherwise)"))
        return errors, warnings
    if placed == "rpcs":
        warnings.append(issue("RpcGeoreferenced", "placed by RPCs: converted by warping with the RPC model at "
                              f"{rpc_height(ds):g} m (the RPCs' HEIGHT_OFF) unless a DEM is configured"))
        return errors, warnings
    if ds.crs is None:
        how = " (GCPs without a coordinate reference system)" if ds.gcps[0] else ""
        errors.append(issue(MissingCRS, f"no coordinate reference system{how}"))
    if t == Affine.identity() and ds.crs is None:
        errors.append(issue(DegenerateTransform, "no geotransform (identity pixel grid)"))
    elif not all(math.isfinite(v) for v in t[:6]) or abs(t.determinant) < 1e-30:
        errors.append(issue(DegenerateTransform, f"singular geotransform {tuple(t[:6])}"))
    else:
        if t.b != 0 or t.d != 0:
            warnings.append(issue("RotatedTransform", f"geotransform has rotation terms "
                                   f"(b={t.b:g}, d={t.d:g}); outputs are resampled north-up "
                                   "only when reprojected"))
        if t.e > 0:
            warnings.append(issue("SouthUp", f"positive row pixel size ({t.e:g}): south-up"))
    return errors, warnings


def decompressed_bytes(ds: DatasetReader) -> int:
    """Bytes the full-resolution pixels take once decompressed, from the header alone."""
    itemsize = sum(numpy_dtype(dt).itemsize for dt in ds.dtypes)
    return ds.width * ds.height * itemsize


def check_size(ds: DatasetReader, limits: RasterLimits, file_bytes: int | None) -> Findings:
    """Pixel count, band count and decompressed size against ``limits`` (decompression-bomb guard)."""
    errors, warnings = [], []
    pixels, size = ds.width * ds.height, decompressed_bytes(ds)
    if pixels > limits.max_pixels:
        errors.append(issue(RasterTooLarge, f"{ds.width} x {ds.height} = {pixels} pixels "
                             f"exceeds the limit of {limits.max_pixels}"))
    if ds.count > limits.max_bands:
        errors.append(issue(RasterTooLarge, f"{ds.count} bands exceeds the limit of "
                             f"{limits.max_bands}"))
    if size > limits.max_decompressed_bytes:
        errors.append(issue(RasterTooLarge, f"decompresses to {size} bytes, over the limit of "
                             f"{limits.max_decompressed_bytes}"))
    block_h, block_w = ds.block_shapes[0]
    block = block_h * block_w * (size // max(ds.width * ds.height, 1))
    if block > limits.max_block_bytes:
        errors.append(issue(RasterTooLarge, f"one {block_w} x {block_h} block decompresses to "
                             f"{block} bytes, over the limit of {limits.max_block_bytes}"))
    if file_bytes and size / file_bytes > limits.warn_compression_ratio:
        warnings.append(issue("HighCompressionRatio", f"{file_bytes} bytes on disk expand to "
                               f"{size} bytes ({size / file_bytes:.0f}x)"))
    return errors, warnings


def check_dtypes(ds: DatasetReader, limits: RasterLimits) -> Findings:
    """Every band's data type on the allowed list."""
    bad = sorted({dt for dt in ds.dtypes if dt not in limits.allowed_dtypes})
    if bad:
        return [issue(UnsupportedDtype, f"data type(s) {', '.join(bad)} not allowed "
                       f"(allowed: {', '.join(limits.allowed_dtypes)})")], []
    return [], []


def nodata_problem(value: float, dtype: str) -> str | None:
    """Why ``value`` cannot be a nodata of ``dtype``, or None when it can (for complex data, of
    the real part's type: GDAL's nodata of a complex band is its real part)."""
    dt = component_dtype(dtype)
    if dt.kind == "f":
        finite_max = np.finfo(dt).max
        if math.isfinite(value) and abs(value) > finite_max:
            return f"nodata {value!r} is outside the {dtype} range"
        return None
    if not math.isfinite(value):
        return f"nodata {value!r} is not representable in integer type {dtype}"
    info = np.iinfo(dt)
    if value != int(value) or not info.min <= value <= info.max:
        return f"nodata {value!r} is outside the {dtype} range [{info.min}, {info.max}]"
    return None


def check_nodata(ds: DatasetReader) -> Findings:
    """Nodata representable in each band's dtype (NaN included); mixed nodata/alpha flagged."""
    errors, warnings = [], []
    values = ds.nodatavals
    for bidx, (value, dtype) in enumerate(zip(values, ds.dtypes), start=1):
        problem = None if value is None else nodata_problem(value, dtype)
        if problem:
            errors.append(issue(InvalidNodata, f"band {bidx}: {problem}"))
    keys = {str(nodata_json(v)) for v in values}
    if len(keys) > 1:
        warnings.append(issue("MixedNodata", f"bands declare different nodata values {sorted(keys)}"))
    if values[0] is not None and ColorInterp.alpha in ds.colorinterp:
        warnings.append(issue("NodataAndAlpha", "both a nodata value and an alpha band; "
                               "the alpha band wins for masking"))
    return errors, warnings


class BlockSample(BaseModel):
    """What decoding a sample of blocks found; ``whole``: the sample was every block, and then
    ``data`` holds those pixels (masked as ``ds.read(masked=True)``) when the raster is no larger
    than ``STATISTICS_SIZE`` on its long side: its statistics come from them, not a second read."""

    blocks: int = 0
    pixels: int = 0
    valid_pixels: int = 0
    whole: bool = False
    errors: list[Issue] = Field(default_factory=list)
    warnings: list[Issue] = Field(default_factory=list)
    data: Any = Field(default=None, exclude=True, repr=False)


def all_valid(ds: DatasetReader) -> bool:
    """No band has nodata, a mask or alpha: every pixel is valid (from the header alone)."""
    return all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


WHOLE_READ_BYTES = 64 * 2**20
"""A raster whose sampled blocks are all its blocks is decoded in one read up to this size."""


def check_blocks(ds: DatasetReader, limit: int) -> BlockSample:
    """Decode a sample of blocks of every band: a file can open and then fail on read.

    A raster of at most ``limit`` blocks (and ``WHOLE_READ_BYTES``) is decoded in one read; if
    that read fails, block by block, so the error names the block. The mask is read only when
    the header says some pixel can be invalid (nodata, a mask or alpha). A whole read of a raster
    within ``STATISTICS_SIZE`` keeps its pixels (``BlockSample.data``) for its statistics."""
    windows = sample_windows(ds, limit)
    block_h, block_w = ds.block_shapes[0]
    size = ds.count * ds.width * ds.height * max(numpy_dtype(t).itemsize for t in ds.dtypes)
    if (len(windows) == math.ceil(ds.height / block_h) * math.ceil(ds.width / block_w)
            and size <= WHOLE_READ_BYTES):
        sample = _decode(ds, [Window(0, 0, ds.width, ds.height)], whole=True,
                         keep=max(ds.width, ds.height) <= STATISTICS_SIZE)
        if not sample.errors:
            sample.blocks = len(windows)
            return sample
    return _decode(ds, windows, whole=False)


def _decode(ds: DatasetReader, windows: list[Window], whole: bool, keep: bool = False) -> BlockSample:
    sample = BlockSample(whole=whole)
    every_pixel = all_valid(ds)
    for window in windows:
        try:
            data = ds.read(window=window, masked=keep)
            valid = (data[0].size if every_pixel
                     else int(np.count_nonzero(ds.dataset_mask(window=window))))
        except GDAL_ERRORS as err:
            where = ("the raster" if whole
                     else f"block at row {int(window.row_off)}, col {int(window.col_off)}")
            problem = read_error(ds.name, f"reading {where} failed", err)
            if isinstance(problem, SourceUnavailable):
                raise problem from err
            sample.errors.append(issue(UnreadableRaster, problem.reason))
            return sample
        sample.blocks += 1
        sample.pixels += data[0].size
        sample.valid_pixels += valid
        if data.dtype.kind in "fc" and not sample.warnings and np.isnan(np.ma.getdata(data)).any():
            if not all(v is not None and math.isnan(v) for v in ds.nodatavals):
                sample.warnings.append(issue("UndeclaredNaN", "float pixels contain NaN but "
                                              "the nodata value is not NaN; NaN pixels are not "
                                              "masked"))
        if keep:
            sample.data = data
    return sample


def check_cog_layout(path: PathLike, driver: str, config: Mapping[str, str]) -> tuple[bool, list[str], list[str]]:
    """rio-cogeo's COG validator (errors and warnings); non-TIFF formats are simply not COGs."""
    if driver not in ("GTiff", "COG"):
        return False, [f"{driver} is not a GeoTIFF"], []
    return cog_validate(str(path), strict=False, config=dict(config), quiet=True)
