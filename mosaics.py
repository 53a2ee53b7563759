"""Mosaics: one VRT over tile COGs that share CRS, resolution, bands and data type, openable as
one dataset, with its grid and footprint.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from grid_footprint import footprint
from output_staging import staged_output
from raster_crs import crs_epsg
from raster_env import PathLike, gdal_env, is_virtual
from raster_errors import IncompatibleTiles, InvalidOption
from raster_models import MosaicResult
from raster_open import open_raster
from vrt_documents import BandMeta, band_xml, has_dataset_mask, vrt_xml, band_meta


def build_mosaic(
    tile_paths: Sequence[PathLike],
    dst_vrt: PathLike,
    *,
    relative_paths: Sequence[str] | None = None,
    gdal_config: Mapping[str, str] | None = None,
) -> MosaicResult:
    """Write a VRT over tile COGs that share CRS, resolution, bands and dtype.

    The tiles are read from ``tile_paths``. The VRT names them by those paths (absolute, or the
    virtual paths given), so it opens from anywhere the tiles can; or, with ``relative_paths``
    (one per tile), by their paths relative to the VRT's own directory, so it opens wherever the
    folder of VRT and tiles is mounted. Returns the mosaic grid and its footprint in EPSG:4326.
    """
    if not tile_paths:
        raise InvalidOption(str(dst_vrt), "no tiles to mosaic")
    if relative_paths is not None and len(relative_paths) != len(tile_paths):
        raise InvalidOption(str(dst_vrt), f"{len(relative_paths)} relative paths for {len(tile_paths)} tiles")
    with gdal_env(gdal_config):
        tiles = [_tile_facts(p) for p in tile_paths]
        grid = _mosaic_grid(tiles)
        with staged_output(dst_vrt) as tmp:
            Path(tmp).write_text(_mosaic_xml(tiles, grid, relative_paths), encoding="utf-8")
        geometry, bbox = footprint(grid.crs, grid.transform, grid.width, grid.height)
    first = tiles[0]
    return MosaicResult(path=str(dst_vrt), tile_count=len(tiles), width=grid.width,
                        height=grid.height, count=first.count, dtype=first.dtypes[0],
                        epsg=crs_epsg(grid.crs), crs_wkt=grid.crs.to_wkt(),
                        transform=list(grid.transform)[:6], bounds=list(grid.bounds),
                        bbox=bbox, footprint=geometry)


@dataclass(frozen=True)
class _TileFacts:
    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    colorinterp: tuple[ColorInterp, ...]
    mask: bool
    tags: tuple[tuple[str, str], ...] = ()
    bands: tuple[BandMeta, ...] = ()


@dataclass(frozen=True)
class _MosaicGrid:
    crs: CRS
    transform: Affine
    width: int
    height: int
    bounds: tuple[float, float, float, float]


def _tile_facts(path: PathLike) -> _TileFacts:
    name = str(path) if is_virtual(path) else os.path.abspath(path)
    with open_raster(name) as ds:
        if ds.transform.b or ds.transform.d:
            raise IncompatibleTiles(name, "rotated tiles cannot be mosaicked")
        return _TileFacts(name, ds.crs, ds.transform, ds.width, ds.height, ds.count,
                          tuple(ds.dtypes), ds.nodata, tuple(ds.colorinterp),
                          has_dataset_mask(ds), tuple(ds.tags().items()), band_meta(ds))


def _mosaic_grid(tiles: list[_TileFacts]) -> _MosaicGrid:
    first = tiles[0]
    xres, yres = first.transform.a, first.transform.e
    for t in tiles[1:]:
        same = (t.crs == first.crs and t.count == first.count and t.dtypes == first.dtypes
                and math.isclose(t.transform.a, xres, rel_tol=1e-9)
                and math.isclose(t.transform.e, yres, rel_tol=1e-9))
        if not same:
            raise IncompatibleTiles(t.path, f"differs from {first.path} in CRS, resolution, "
                                    "band count or data type")
    left = min(t.transform.c for t in tiles)
    top = max(t.transform.f for t in tiles)
    right = max(t.transform.c + t.width * xres for t in tiles)
    bottom = min(t.transform.f + t.height * yres for t in tiles)
    return _MosaicGrid(first.crs, Affine(xres, 0, left, 0, yres, top),
                       round((right - left) / xres), round((bottom - top) / yres),
                       (left, bottom, right, top))


def _mosaic_xml(tiles: list[_TileFacts], grid: _MosaicGrid, relative_paths: Sequence[str] | None) -> str:
    inverse = ~grid.transform
    names = list(relative_paths) if relative_paths is not None else [t.path for t in tiles]
    placed = []
    for name, t in zip(names, tiles):
        col, row = inverse @ (t.transform.c, t.transform.f)
        placed.append((name, Window(0, 0, t.width, t.height),
                       Window(round(col), round(row), t.width, t.height)))
    first, relative = tiles[0], relative_paths is not None
    bands = [band_xml(b, first.dtypes[b - 1], first.nodata, first.colorinterp[b - 1],
                      [(name, b, sw, dw) for name, sw, dw in placed], first.bands[b - 1], relative=relative)
             for b in range(1, first.count + 1)]
    mask = None
    if first.mask:
        mask = band_xml(1, "uint8", None, ColorInterp.undefined,
                        [(name, "mask,1", sw, dw) for name, sw, dw in placed], relative=relative)
    return vrt_xml(grid.width, grid.height, grid.crs, grid.transform, bands, mask, dict(first.tags))
