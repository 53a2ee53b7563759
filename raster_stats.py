"""What a raster's pixels say, from a bounded read: a sample of whole blocks spread over the
grid, a decimated read served by the overviews, band statistics, and the share of valid pixels.
Never a full read of a large raster.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.windows import Window

from raster_env import GDAL_ERRORS, read_error
from raster_models import BandStatistics


#: Long side (pixels) of the decimated read band statistics come from (items, thumbnails).
STATISTICS_SIZE = 1024


#: Above this many pixels, a raster without overviews is not scanned for its valid fraction.
SCAN_LIMIT_PIXELS = 4096 * 4096


def valid_fraction(ds: DatasetReader, max_side: int = 512) -> float | None:
    """Share of valid (unmasked) pixels from a decimated mask read, served by overviews.

    None when the raster is larger than ``SCAN_LIMIT_PIXELS`` and has no overviews: a
    decimated read would then decode nearly every block.
    """
    if ds.width * ds.height > SCAN_LIMIT_PIXELS and not ds.overviews(1):
        return None
    scale = max(ds.width, ds.height) / max_side
    shape = (max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
    mask = ds.dataset_mask(out_shape=shape)
    return float(np.count_nonzero(mask)) / mask.size


def sample_windows(ds: DatasetReader, count: int) -> list[Window]:
    """Up to ``count`` whole blocks spread evenly over the block grid, corners included."""
    block_h, block_w = ds.block_shapes[0]
    rows, cols = math.ceil(ds.height / block_h), math.ceil(ds.width / block_w)
    side = max(1, int(math.sqrt(count)))
    n_rows, n_cols = min(side, rows), min(side, cols)
    picks = sorted({(r * (rows - 1) // max(1, n_rows - 1), c * (cols - 1) // max(1, n_cols - 1))
                    for r in range(n_rows) for c in range(n_cols)})
    return [Window(c * block_w, r * block_h, min(block_w, ds.width - c * block_w),
                   min(block_h, ds.height - r * block_h)) for r, c in picks]


def _mask_non_finite(data: np.ma.MaskedArray) -> np.ma.MaskedArray:
    if data.dtype.kind in "fc":
        data.mask = np.ma.getmaskarray(data) | ~np.isfinite(data.filled(0))
    return data


def read_decimated(ds: DatasetReader, *, max_size: int = 1024, sample_blocks: int = 64,
                   indexes: Sequence[int] | None = None,
                   pixels: np.ma.MaskedArray | None = None) -> np.ma.MaskedArray:
    """A masked read of the bands for statistics or a preview, never a full read of a large raster.

    With overviews (every COG) or when the raster is small: one read at most ``max_size`` pixels
    on the long side, which GDAL serves from the overviews. A large raster without overviews is
    sampled instead: up to ``sample_blocks`` whole blocks spread over it (shape ``(bands, 1, n)``).
    Nodata, NaN, alpha and internal masks are masked out. ``pixels``: every band at full
    resolution, already read masked (validation's whole read): the answer when the raster fits
    ``max_size``, with no read at all.
    """
    scale = max(1.0, max(ds.width, ds.height) / max_size)
    if (pixels is not None and scale == 1.0 and indexes is None
            and pixels.shape == (ds.count, ds.height, ds.width)):
        return _mask_non_finite(pixels)
    indexes = list(indexes or ds.indexes)
    try:
        if scale > 4 and not ds.overviews(1):
            parts = [ds.read(indexes, window=w, masked=True).reshape(len(indexes), 1, -1)
                     for w in sample_windows(ds, sample_blocks)]
            return _mask_non_finite(np.ma.concatenate(parts, axis=2))
        shape = (len(indexes), max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        return _mask_non_finite(ds.read(indexes, out_shape=shape, masked=True,
                                        resampling=Resampling.nearest))
    except GDAL_ERRORS as err:
        raise read_error(ds.name, "reading a decimated copy of the pixels failed", err) from err


def band_statistics(band: np.ma.MaskedArray) -> BandStatistics:
    """Minimum, maximum, mean, standard deviation and valid percentage of one masked band.

    Integers of up to 16 bits are counted into a histogram first (one pass over the pixels; the
    moments then come from at most 65,536 distinct values), others are summed in float64.
    Complex values (SAR) are described by their amplitude, ``|z|``."""
    valid = band.compressed()
    if valid.dtype.kind == "c":
        valid = np.abs(valid)
    if valid.size == 0:
        return BandStatistics(valid_percent=0.0)
    if valid.dtype.kind in "ui" and valid.dtype.itemsize <= 2:
        low = int(valid.min())
        counts = np.bincount((valid.astype(np.int32) - low) if low else valid)
        values = np.flatnonzero(counts)
        weights = counts[values].astype("float64")
        values = values.astype("float64") + low
        mean = float(np.dot(weights, values) / valid.size)
        stddev = math.sqrt(max(0.0, float(np.dot(weights, (values - mean) ** 2)) / valid.size))
        minimum, maximum = float(values[0]), float(values[-1])
    else:
        values = valid.astype("float64")
        minimum, maximum = float(values.min()), float(values.max())
        mean, stddev = float(values.mean()), float(values.std())
    return BandStatistics(minimum=minimum, maximum=maximum, mean=mean, stddev=stddev,
                          valid_percent=round(100.0 * valid.size / band.size, 4))
