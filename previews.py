"""Preview tiles of cataloged rasters for the dashboard's map (``GET /api/previews/...``), drawn
with rio-tiler.

A tile is addressed by collection, item and asset key and resolved through the catalog: the
item's asset href must name a blob of this service's storage (``asset_locations``), which is read
through the same access as the jobs (``BlobStore.gdal_read_path``: a local file, or ``/vsiaz/``
with the store's credentials) and opened by the allow-listed drivers only
(``raster_open.open_allowed``). No request names a file or a URL.

Each tile is styled with the item's render for that asset (``properties.renders``: band
indexes, ``rescale``, ``colormap_name``), else from the asset's band statistics (one band of
other than bytes stretched over its range and coloured; three bands as RGB), nodata and masks
transparent. An item with several raster assets (time steps) previews each by its key.

A tile is bounded work: before reading, the source pixels it would read are estimated from the
overview GDAL will pick for it and the blocks around the window (``read_cost``); above
``MAX_TILE_READ`` the tile is refused (``TileTooCostly``: zoom in, or convert the raster to a
COG, whose overviews keep every zoom cheap). Item lookups are remembered for ``ITEM_TTL``
seconds, as titiler-pgstac caches its lookups.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import morecantile
import rasterio.warp
from pydantic import BaseModel, Field
from rasterio.io import DatasetReader

import asset_locations
import raster_env
import raster_errors
import raster_open
import stac_ops
import storage
from settings import Settings

TILE_SIZE = 256
#: Most source pixels one tile may read (the blocks of the chosen overview around its window):
#: 16 blocks of 512², or 64 times the tile's own pixels.
MAX_TILE_READ = 4 * 1024 * 1024
#: Seconds an item looked up for a tile is remembered (a rewritten item is seen after this).
ITEM_TTL = 30.0
ITEMS_KEPT = 1024
MAX_ZOOM = 24
TMS = morecantile.tms.get("WebMercatorQuad")
#: Asset media types a preview can draw (GeoTIFF and COG, JPEG 2000); an asset without a type
#: is drawn when its role is ``data``.
RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2")
#: STAC data types of complex bands: cataloged, but not drawn (rio-tiler reads real values only).
COMPLEX_DATA_TYPES = frozenset({"cint16", "cint32", "cfloat32", "cfloat64"})


class PreviewError(Exception):
    """Base class of the errors of preview tiles."""


class ItemNotFound(PreviewError):
    """The catalog has no such item."""


class NotPreviewable(PreviewError):
    """The item has no such asset, or the asset is not a raster a preview draws."""


class InvalidTile(PreviewError):
    """z/x/y outside the WebMercatorQuad tile matrix set."""


class TileOutside(PreviewError):
    """The tile does not cover the asset."""


class TileTooCostly(PreviewError):
    """The tile would read more source pixels than ``MAX_TILE_READ`` (no overview for its zoom)."""


class AssetUnreadable(PreviewError):
    """The asset's file cannot be opened or read as a raster by the allowed drivers."""


class PreviewStyle(BaseModel):
    """How a tile is drawn: band indexes, a linear stretch per band, a colormap name."""

    indexes: list[int] | None = None
    rescale: list[list[float]] | None = None
    colormap_name: str | None = None


class PreviewAsset(BaseModel):
    key: str
    title: str | None = None
    style: PreviewStyle


class PreviewInfo(BaseModel):
    """What the dashboard needs to draw an item: its bbox and its previewable assets (the first
    is drawn by default; several are time steps or variables to choose from)."""

    collection: str
    item: str
    bbox: list[float] | None = None
    assets: list[PreviewAsset]


class TileAddress(BaseModel):
    """A tile as the route names it."""

    collection: str = Field(min_length=1, max_length=256)
    item: str = Field(min_length=1, max_length=256)
    asset: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,256}$")
    z: int = Field(ge=0, le=MAX_ZOOM)
    x: int = Field(ge=0)
    y: int = Field(ge=0)


# -- which assets, drawn how ---------------------------------------------------------------------

def is_previewable(key: str, asset: Mapping[str, Any]) -> bool:
    """A raster asset a tile can draw: a GeoTIFF / COG / JPEG 2000, or untyped with role data;
    not one of complex data (SAR: ``cint16``, ``cfloat32``...), which tilers do not read."""
    media = str(asset.get("type") or "").split(";")[0].strip().lower()
    roles = asset.get("roles") or []
    if "thumbnail" in roles or "overview" in roles or key == "thumbnail":
        return False
    bands = asset.get("raster:bands") or asset.get("bands") or []
    if any(str(b.get("data_type", "")) in COMPLEX_DATA_TYPES for b in bands if isinstance(b, Mapping)):
        return False
    if media:
        return media in RASTER_TYPES and ("data" in roles or not roles)
    return "data" in roles


def body_of(item: Mapping[str, Any]) -> str | None:
    """The body of the solar system other than the Earth an item is on (the solar-system
    extension's ``ssys:targets``), None for the Earth."""
    targets = (item.get("properties") or {}).get("ssys:targets") or []
    others = [t for t in targets if isinstance(t, str) and t.lower() != "earth"]
    return ", ".join(others) or None


def previewable_keys(item: Mapping[str, Any]) -> list[str]:
    """The item's previewable assets, ``data`` first, then in the item's order; none for an item
    of another body (the preview tiles are the Earth's WebMercatorQuad)."""
    if body_of(item):
        return []
    keys = [k for k, a in (item.get("assets") or {}).items() if isinstance(a, Mapping) and is_previewable(k, a)]
    return sorted(keys, key=lambda k: k != "data")


def _band_rescale(band: Mapping[str, Any]) -> list[float] | None:
    stats = band.get("statistics") or {}
    low, high = stats.get("minimum"), stats.get("maximum")
    if low is None or high is None:
        return None
    return [float(low), float(high) if high > low else float(low) + 1.0]


def _statistics_style(asset: Mapping[str, Any]) -> PreviewStyle:
    """A style from the asset's bands: RGB as it is (stretched unless bytes), one band of other
    data stretched and coloured, else the first band."""
    bands = asset.get("bands") or asset.get("raster:bands") or []
    shown = [b for b in bands if b.get("eo:common_name") not in ("alpha",)]
    if len(shown) >= 3:
        rescales = [_band_rescale(b) for b in shown[:3]]
        bytes_ = all(b.get("data_type") == "uint8" for b in shown[:3])
        return PreviewStyle(indexes=[1, 2, 3], rescale=None if bytes_ or None in rescales else rescales)
    if len(shown) == 1 and shown[0].get("data_type") not in (None, "uint8"):
        rescale = _band_rescale(shown[0])
        if rescale is not None:
            return PreviewStyle(indexes=[1], rescale=[rescale], colormap_name=stac_ops.SINGLE_BAND_COLORMAP)
    return PreviewStyle(indexes=[1])


def style_for(item: Mapping[str, Any], key: str) -> PreviewStyle:
    """The item's render that draws ``key`` alone (its ``rescale`` and ``colormap_name``), else
    one from the asset's band statistics."""
    renders = (item.get("properties") or {}).get("renders") or {}
    for render in renders.values():
        if isinstance(render, Mapping) and render.get("assets") == [key]:
            indexes = render.get("bidx") or render.get("indexes")
            return PreviewStyle(indexes=list(indexes) if isinstance(indexes, list) else None,
                                rescale=render.get("rescale"), colormap_name=render.get("colormap_name"))
    return _statistics_style((item.get("assets") or {}).get(key) or {})


def preview_info(item: Mapping[str, Any]) -> PreviewInfo:
    bbox = item.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 6:
        bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
    assets = [PreviewAsset(key=k, title=(item["assets"][k].get("title")), style=style_for(item, k))
              for k in previewable_keys(item)]
    return PreviewInfo(collection=item.get("collection") or "", item=item.get("id") or "", bbox=bbox, assets=assets)


# -- the catalog's items, remembered briefly -------------------------------------------------------

_ITEMS: "OrderedDict[tuple[int, str, str], tuple[float, dict]]" = OrderedDict()
_ITEMS_LOCK = threading.Lock()


def item_of(catalog: Any, collection: str, item_id: str) -> dict[str, Any]:
    """The item as a dict, from the catalog or from the last ``ITEM_TTL`` seconds."""
    key, now = (id(catalog), collection, item_id), time.monotonic()
    with _ITEMS_LOCK:
        cached = _ITEMS.get(key)
        if cached is not None and now - cached[0] < ITEM_TTL:
            return cached[1]
    try:
        stac_ops.check_id(collection), stac_ops.check_id(item_id)
    except stac_ops.StacOpsError as err:
        raise ItemNotFound(str(err)) from None
    found = catalog.get_item(collection, item_id)
    if found is None:
        raise ItemNotFound(f"no item {item_id!r} in collection {collection!r}")
    item = found.to_dict(include_self_link=False, transform_hrefs=False)
    with _ITEMS_LOCK:
        _ITEMS[key] = (now, item)
        _ITEMS.move_to_end(key)
        while len(_ITEMS) > ITEMS_KEPT:
            _ITEMS.popitem(last=False)
    return item


# -- a tile --------------------------------------------------------------------------------------

def check_tile(z: int, x: int, y: int) -> None:
    if not (0 <= z <= MAX_ZOOM and 0 <= x < 2 ** z and 0 <= y < 2 ** z):
        raise InvalidTile(f"tile {z}/{x}/{y} is not in WebMercatorQuad (zoom 0-{MAX_ZOOM}, x and y below 2^zoom)")


def read_cost(dataset: DatasetReader, z: int, x: int, y: int) -> int:
    """Source pixels a tile reads: its window in the dataset's grid, at the overview GDAL picks
    for its resolution (the coarsest that is not coarser than the tile's), widened to blocks."""
    bounds = TMS.xy_bounds(morecantile.Tile(x, y, z))
    try:
        left, bottom, right, top = rasterio.warp.transform_bounds(TMS.rasterio_crs, dataset.crs, *bounds, densify_pts=21)
    except Exception as err:  # noqa: BLE001 - a tile the dataset's CRS cannot represent covers none of it
        raise TileOutside(f"tile {z}/{x}/{y} does not map into the raster's CRS: {err}") from None
    d_left, d_bottom, d_right, d_top = dataset.bounds
    width, height = min(right, d_right) - max(left, d_left), min(top, d_top) - max(bottom, d_bottom)
    if width <= 0 or height <= 0 or not math.isfinite(width * height):
        raise TileOutside(f"tile {z}/{x}/{y} is outside the raster")
    res_x, res_y = abs(dataset.res[0]), abs(dataset.res[1])
    cols, rows = width / res_x, height / res_y
    out = TILE_SIZE * max(width / (right - left), height / (top - bottom))
    decimation = max(cols, rows) / max(out, 1.0)
    factor = max([1, *[f for f in dataset.overviews(1) if f <= decimation]])
    block_h, block_w = dataset.block_shapes[0]
    level_w, level_h = math.ceil(dataset.width / factor), math.ceil(dataset.height / factor)
    read_w = min(level_w, (math.ceil(cols / factor / block_w) + 1) * block_w)
    read_h = min(level_h, (math.ceil(rows / factor / block_h) + 1) * block_h)
    return read_w * read_h


def render_tile(dataset: DatasetReader, z: int, x: int, y: int, style: PreviewStyle) -> bytes:
    """The PNG of one 256² tile of an open dataset in ``style``: stretched, coloured, nodata and
    masked pixels transparent."""
    from rio_tiler.colormap import cmap
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    cost = read_cost(dataset, z, x, y)
    if cost > MAX_TILE_READ:
        raise TileTooCostly(f"tile {z}/{x}/{y} would read {cost:,} source pixels (limit {MAX_TILE_READ:,}): "
                            "zoom in, or convert the raster to a COG (its overviews serve every zoom)")
    with Reader(dataset.name, dataset=dataset) as reader:
        try:
            image = reader.tile(x, y, z, tilesize=TILE_SIZE, indexes=style.indexes)
        except TileOutsideBounds:
            raise TileOutside(f"tile {z}/{x}/{y} is outside the raster") from None
        colormap = cmap.get(style.colormap_name) if style.colormap_name else reader.colormap
    if style.rescale:
        image.rescale(in_range=[tuple(r) for r in style.rescale])
    return image.render(img_format="PNG", colormap=colormap)


def tile_png(catalog: Any, store: storage.BlobStore, config: Settings, address: TileAddress,
             gdal_config: Mapping[str, Any]) -> bytes:
    """The PNG of a tile of an item's asset, resolved through the catalog and read through the
    store; ``gdal_config`` is the GDAL configuration the jobs run under."""
    check_tile(address.z, address.x, address.y)
    item = item_of(catalog, address.collection, address.item)
    asset = (item.get("assets") or {}).get(address.asset)
    if asset is None or not is_previewable(address.asset, asset):
        raise NotPreviewable(f"item {address.item!r} has no raster asset {address.asset!r} to preview "
                             f"(previewable: {', '.join(previewable_keys(item)) or 'none'})")
    container, blob = asset_locations.asset_blob(str(asset.get("href") or ""), collection=address.collection,
                                                 config=config, store=store)
    source = store.gdal_read_path(container, blob)
    style = style_for(item, address.asset)
    try:
        with raster_env.gdal_env({**gdal_config, **source.config}):
            with raster_open.open_allowed(source.path, head=lambda: store.read_head(container, blob)) as dataset:
                return render_tile(dataset, address.z, address.x, address.y, style)
    except raster_errors.SourceUnavailable as err:
        raise raster_errors.SourceUnavailable(f"{container}/{blob}", err.reason) from None
    except raster_errors.GeoOpsError as err:
        raise AssetUnreadable(f"{container}/{blob}: {err.reason}") from None
    except raster_env.GDAL_ERRORS as err:
        reason = raster_env.gdal_reason(err)
        if raster_env.is_transient_reason(reason):
            raise raster_errors.SourceUnavailable(f"{container}/{blob}", reason) from err
        raise AssetUnreadable(f"{container}/{blob}: {reason}") from None
