"""Thumbnails: a small PNG preview of a raster from one decimated read (RGB(A) for colour imagery,
grey or the band's palette otherwise, nodata transparent), never a full read.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from warnings import catch_warnings, simplefilter

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import DatasetReader, MemoryFile

from output_staging import staged_output
from raster_env import PathLike, gdal_env
from raster_errors import InvalidOption
from raster_facts import has_colormap
from raster_models import ThumbnailResult
from raster_open import open_raster
from raster_stats import STATISTICS_SIZE, band_statistics, read_decimated


def preview_bands(colorinterp: Sequence[str]) -> list[int]:
    """The bands (1-based) a picture shows, from the bands' colour interpretation names: red,
    green and blue when they are named, else the first band that is not alpha."""
    rgb = [colorinterp.index(c) + 1 if c in colorinterp else None for c in ("red", "green", "blue")]
    if all(rgb):
        return rgb
    return [next((i for i, c in enumerate(colorinterp, start=1) if c != "alpha"), 1)]


def write_thumbnail(
    src: PathLike | DatasetReader,
    dst: PathLike,
    *,
    max_size: int = 256,
    rescale: Sequence[tuple[float, float]] | None = None,
    gdal_config: Mapping[str, str] | None = None,
) -> ThumbnailResult:
    """A PNG of at most ``max_size`` pixels on the long side: RGB(A) for colour imagery, grey
    (or the band's palette) otherwise, nodata and masked pixels transparent.

    Pixels come from one decimated read that GDAL serves from the overviews; a raster larger
    than (4 x ``max_size``)² pixels without overviews is refused rather than read in full.
    Non-byte data (and byte data with ``rescale``) is stretched linearly from ``rescale``, one
    ``(min, max)`` per shown band, by default the bands' statistics as an item states them
    (``read_header(statistics=True)``: a decimated read of ``STATISTICS_SIZE`` pixels).
    """
    if isinstance(src, DatasetReader):
        with gdal_env(gdal_config):
            return _thumbnail(src, str(dst), max_size, rescale)
    with gdal_env(gdal_config), open_raster(src) as ds:
        return _thumbnail(ds, str(dst), max_size, rescale)


def _thumbnail(ds: DatasetReader, dst: str, max_size: int,
               rescale: Sequence[tuple[float, float]] | None) -> ThumbnailResult:
    if ds.width * ds.height > (4 * max_size) ** 2 and not ds.overviews(1):  # a 1 x 100,000 strip reads cheaply
        raise InvalidOption(ds.name, "has no overviews: a thumbnail would read every pixel")
    indexes = [1] if has_colormap(ds) else preview_bands([c.name for c in ds.colorinterp])
    if rescale is None and not has_colormap(ds) and ds.dtypes[indexes[0] - 1] != "uint8":
        stats = [band_statistics(b) for b in read_decimated(ds, max_size=STATISTICS_SIZE, indexes=indexes)]
        rescale = None if any(s.minimum is None for s in stats) else [(s.minimum, s.maximum) for s in stats]
    data = read_decimated(ds, max_size=max_size, indexes=indexes)
    if data.dtype.kind == "c":  # complex (SAR): the amplitude, as the statistics describe it
        data = np.ma.abs(data)
    alpha = np.where(np.ma.getmaskarray(data).all(axis=0), 0, 255).astype("uint8")  # as GDAL's dataset mask
    if has_colormap(ds):
        palette = np.zeros((256, 4), dtype="uint8")
        for value, colour in ds.colormap(1).items():
            palette[value] = colour
        pixels = palette[data[0].filled(0).astype("uint8")].transpose(2, 0, 1)
        image = np.concatenate([pixels[:3], np.minimum(pixels[3:], alpha[None])])
    else:
        image = np.concatenate([_stretch(data, ds.dtypes[indexes[0] - 1], rescale), alpha[None]])
    with catch_warnings(), MemoryFile() as mem, staged_output(dst) as tmp:
        simplefilter("ignore", NotGeoreferencedWarning)  # a picture: no map coordinates
        preview = mem.open(driver="GTiff", width=image.shape[2], height=image.shape[1],
                           count=image.shape[0], dtype="uint8")
        preview.write(image)
        preview.colorinterp = ([ColorInterp.gray, ColorInterp.alpha] if image.shape[0] == 2 else
                               [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
        rasterio.shutil.copy(preview, tmp, driver="PNG", ZLEVEL="9")
        preview.close()
        size = os.path.getsize(tmp)
    return ThumbnailResult(path=dst, width=image.shape[2], height=image.shape[1],
                           bands="grey" if image.shape[0] == 2 else "rgb", size_bytes=size)


def _stretch(data: np.ma.MaskedArray, dtype: str, rescale: Sequence[tuple[float, float]] | None) -> np.ndarray:
    """Bands scaled to 0..255: byte data as it is unless ``rescale`` is given; other data from
    ``rescale`` or (all nodata) left at 0."""
    if dtype == "uint8" and rescale is None:
        return data.filled(0).astype("uint8")
    out = np.zeros(data.shape, dtype="uint8")
    for i, band in enumerate(data):
        if rescale is None:
            continue
        low, high = rescale[i]
        span = (high - low) or 1.0
        scaled = (band.filled(low).astype("float64") - low) * (255.0 / span)
        out[i] = np.clip(np.round(scaled), 0, 255).astype("uint8")
    return out
