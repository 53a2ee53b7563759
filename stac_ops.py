"""STAC items and collections for rasters, written to pgSTAC or to a static catalog.

Four parts, in the order data flows through them:

* **Items from rasters** (``item_from_raster``): small ``get_*`` helpers read one raster's header
  (and a decimated read for statistics) and one composer builds a STAC 1.1 item with the
  projection v2.0.0, raster v2.0.0, file v2.1.0 and (for RGB bands) eo v2.0.0 extensions.
* **Offline validation** (``StacValidator``): core schemas bundled in pystac plus extension schemas
  from a local directory (``<extension>/<version>/schema.json``); never the network. Without a
  directory (the deployed app) it degrades to the core schema only.
* **Collections and sync**: ``build_collection`` / ``collection_for_container`` (default collection
  per container, overridable), extents and summaries recomputed from the items
  (``Catalog.refresh_collection``), ``plan_sync`` for incremental sync by source ETag.
* **Catalog backends** behind one ``Catalog`` protocol: ``PgStacCatalog`` (psycopg, pgSTAC SQL) and
  ``StaticCatalog`` (pystac JSON files behind a small ``CatalogStore`` I/O seam).

Item properties of our own (prefix ``rmh:``, no schema):

* ``rmh:source_etag``: ETag of the source blob, compared by incremental sync (``list_item_etags``).
* ``rmh:source_container`` / ``rmh:source_blob``: where the source blob lives.
* ``rmh:datetime_source``: which rule chose ``datetime``: ``file-metadata``,
  ``blob-last-modified`` or ``request``.
* ``rmh:has_data``: ``false`` when every pixel is nodata (statistics then hold only
  ``valid_percent: 0``).

Datetime order (``get_datetime``): the file's own metadata (``TIFFTAG_DATETIME``, or
``ACQUISITIONDATETIME`` of GDAL's IMAGERY domain; a TIFF datetime has no zone and is read as
UTC), else the source blob's last-modified time, else the request's ``datetime_override``;
with none of them ``MissingDatetime`` is raised.

This module never reads the environment and never imports ``azure.*``; callers pass connections,
pools, schema directories and stores in.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson
import psycopg
import pystac
import tenacity
import rasterio
import rasterio.errors
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from pypgstac.hydration import dehydrate
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

logger = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"
PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v2.0.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"

SOURCE_ETAG = "rmh:source_etag"
SOURCE_CONTAINER = "rmh:source_container"
SOURCE_BLOB = "rmh:source_blob"
DATETIME_SOURCE = "rmh:datetime_source"
HAS_DATA = "rmh:has_data"

MAX_ID_LENGTH = 256
DEFAULT_BATCH_SIZE = 1000
DEFAULT_LICENSE = "other"
ITEM_ASSETS = {
    "data": {"title": "Cloud Optimized GeoTIFF", "type": COG_MEDIA_TYPE, "roles": ["data"]},
    "source": {"title": "Original file", "roles": ["source"]},
}


# --------------------------------------------------------------------------------------- errors


class StacOpsError(Exception):
    """Base class of every error raised by stac_ops."""


class RasterOpenError(StacOpsError):
    """The raster could not be opened (missing, unreadable or not a raster)."""


class NotGeoreferenced(StacOpsError):
    """The raster has no CRS or no geotransform, so it has no place on the map."""


class RasterReadError(StacOpsError):
    """The raster's header opened but its pixels could not be read (corrupt data)."""


class FootprintError(StacOpsError):
    """No point of the raster's footprint could be transformed to EPSG:4326."""


class MissingDatetime(StacOpsError):
    """Neither the file, the blob nor the request gave the item a datetime."""


class InvalidItemId(StacOpsError):
    """An item or collection id is not URL- and file-name-safe."""


class SchemaUnavailable(StacOpsError):
    """A JSON schema needed for validation is not available offline."""


class ItemValidationError(StacOpsError):
    """An item does not validate against its schemas."""


class CollectionValidationError(StacOpsError):
    """A collection does not validate against its schemas."""


class CollectionNotFound(StacOpsError):
    """The collection does not exist in the catalog."""


class CatalogUnavailable(StacOpsError):
    """The catalog's database or store cannot be reached (after bounded retries)."""


class PgStacVersionMismatch(StacOpsError):
    """The database's pgSTAC version is not the one pypgstac's storage format is written for."""


class CatalogQueryError(StacOpsError):
    """The catalog database rejected a statement for a reason that retrying will not fix."""


# ----------------------------------------------------------------------------------- models


class SourceBlob(BaseModel):
    """The source blob an item describes, as listed by storage (crosses the Durable boundary)."""

    container: str
    blob_name: str
    href: str | None = None
    etag: str | None = None
    last_modified: dt.datetime | None = None
    size: int | None = None


class UpsertResult(BaseModel):
    """Outcome of ``upsert_items``: ``written`` were new or changed, ``unchanged`` were identical."""

    collection_ids: list[str]
    requested: int
    written: int
    unchanged: int


class CatalogHealth(BaseModel):
    """What ``health()`` reports: reachability, backend version and counts."""

    backend: str
    ok: bool
    version: str | None = None
    collections: int = 0
    items: int = 0
    detail: str | None = None


class PartitionTrunc(str, Enum):
    """pgSTAC partitioning of a collection's items by datetime."""

    year = "year"
    month = "month"


# -------------------------------------------------------------------------------------- ids

_ID_SAFE = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")
_BLOB_LOSSLESS = re.compile(r"^[A-Za-z0-9._/-]+$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")


def _short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def item_id_for_blob(container: str, blob_name: str) -> str:
    """A deterministic, URL-safe item id for a blob, stable across runs and at most 256 chars.

    ``container~dir~file.tif`` when the name maps losslessly ('/' becomes '~'; Azure container
    names never hold '~'); otherwise a readable slug plus ``-`` and a 10-hex SHA-256 of
    ``container/blob_name``, so distinct blobs never share an id.
    """
    if not container or not blob_name:
        raise InvalidItemId(f"container {container!r} and blob name {blob_name!r} are required")
    candidate = f"{container}~{blob_name.replace('/', '~')}"
    lossless = (_BLOB_LOSSLESS.match(blob_name) and "//" not in blob_name and _ID_SAFE.match(container)
                and not blob_name.startswith("/") and not blob_name.endswith("/"))
    if lossless and len(candidate) <= MAX_ID_LENGTH and _ID_SAFE.match(candidate):
        return candidate
    digest = _short_hash(f"{container}/{blob_name}")
    ascii_name = unicodedata.normalize("NFKD", candidate).encode("ascii", "ignore").decode("ascii")
    slug = _ID_UNSAFE.sub("-", ascii_name).strip("-.~") or "item"
    return f"{slug[: MAX_ID_LENGTH - len(digest) - 1]}-{digest}"


def default_collection_id(container: str) -> str:
    """The default collection of a container: the container name, made URL-safe."""
    slug = _SLUG_UNSAFE.sub("-", container.strip().lower()).strip("-.")
    if not slug:
        raise InvalidItemId(f"container name {container!r} gives no collection id")
    if slug != container:
        slug = f"{slug[:40]}-{_short_hash(container, 8)}"
    return slug


def resolve_collection_id(container: str, override: str | None = None) -> str:
    """The collection an item of ``container`` goes to: ``override`` when given, else the default."""
    if override is None:
        return default_collection_id(container)
    check_id(override)
    return override


def check_id(value: str) -> str:
    """Return ``value`` if it is a safe item/collection id, else raise ``InvalidItemId``."""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _ID_SAFE.match(value):
        raise InvalidItemId(f"id {value!r} must match [A-Za-z0-9._~-] (not starting with '.')")
    return value


# ---------------------------------------------------------------------------- raster helpers


@contextlib.contextmanager
def _open_raster(raster: str | os.PathLike | rasterio.io.DatasetReader) -> Iterator[Any]:
    """Yield an open dataset: the one given, or one opened (and closed) here."""
    if isinstance(raster, rasterio.io.DatasetReaderBase):
        yield raster
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dataset = rasterio.open(raster)
    except rasterio.errors.RasterioError as err:
        raise RasterOpenError(f"cannot open raster {os.fspath(raster)!r}: {err}") from err
    with dataset:
        yield dataset


def check_georeferenced(dataset: Any) -> None:
    """Raise ``NotGeoreferenced`` unless the dataset has a CRS and a real geotransform."""
    if dataset.crs is None or dataset.transform.is_identity:
        raise NotGeoreferenced(
            f"raster {dataset.name!r} has no CRS or geotransform (crs={dataset.crs}, "
            f"transform identity={dataset.transform.is_identity})"
        )


def _edge_pixels(width: int, height: int, per_edge: int) -> tuple[list[float], list[float]]:
    """Pixel coordinates around the raster's outer edge, clockwise from the top-left corner."""
    steps = [i / per_edge for i in range(per_edge)]
    cols = [width * s for s in steps] + [width] * per_edge
    rows = [0.0] * per_edge + [height * s for s in steps]
    cols += [width * (1 - s) for s in steps] + [0.0] * per_edge
    rows += [height] * per_edge + [height * (1 - s) for s in steps]
    return cols + [0.0], rows + [0.0]


_TRANSFORM_ERRORS = (rasterio.errors.RasterioError, CPLE_BaseError)


def _transform_points(src: Any, dst: Any, xs: list[float], ys: list[float]) -> tuple[list, list]:
    """Transform points; points outside the projection's domain come back as inf."""
    with rasterio.Env(OGR_ENABLE_PARTIAL_REPROJECTION="YES"):
        try:
            out_x, out_y = warp_transform(src, dst, xs, ys)
            return list(out_x), list(out_y)
        except _TRANSFORM_ERRORS:
            pass
        out_x, out_y = [], []
        for x, y in zip(xs, ys):
            try:
                (px,), (py,) = warp_transform(src, dst, [x], [y])
            except _TRANSFORM_ERRORS:
                px = py = math.inf
            out_x.append(px), out_y.append(py)
    return out_x, out_y


def _to_lonlat(dataset: Any, cols: Sequence[float], rows: Sequence[float]) -> tuple[list, list]:
    a, b, c, d, e, f = dataset.transform[:6]
    col, row = np.asarray(cols, dtype="float64"), np.asarray(rows, dtype="float64")
    xs, ys = a * col + b * row + c, d * col + e * row + f
    return _transform_points(dataset.crs, "EPSG:4326", xs.tolist(), ys.tolist())


def _contains_pole(dataset: Any) -> int:
    """+1 / -1 when the north / south pole lies inside a projected raster, else 0.

    (In a geographic CRS a pole is a line, and the transformed edge ring is already exact.)
    """
    for sign in (1, -1):
        xs, ys = _transform_points("EPSG:4326", dataset.crs, [0.0], [90.0 * sign])
        if not (math.isfinite(xs[0]) and math.isfinite(ys[0])):
            continue
        col, row = ~dataset.transform @ (xs[0], ys[0])
        if -1e-6 <= col <= dataset.width + 1e-6 and -1e-6 <= row <= dataset.height + 1e-6:
            return sign
    return 0


def _unwrap(lons: Sequence[float]) -> list[float]:
    """Longitudes made continuous (no jump over 180 degrees between neighbours)."""
    out = [lons[0]]
    for lon in lons[1:]:
        lon += 360.0 * round((out[-1] - lon) / 360.0)
        out.append(lon)
    return out


def _clip_ring(ring: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a closed ring to ``lo <= lon <= hi``."""
    for edge, keep in ((lo, lambda x: x >= lo), (hi, lambda x: x <= hi)):
        out: list[tuple[float, float]] = []
        for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
            if keep(x2):
                if not keep(x1):
                    out.append((edge, y1 + (y2 - y1) * (edge - x1) / (x2 - x1)))
                out.append((x2, y2))
            elif keep(x1):
                out.append((edge, y1 + (y2 - y1) * (edge - x1) / (x2 - x1)))
        ring = out
        if not ring:
            return []
    return ring


def _simplify(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Douglas-Peucker: drop vertices closer than ``tolerance`` degrees to the simplified line."""
    if len(points) < 3:
        return points
    (x1, y1), (x2, y2) = points[0], points[-1]
    length = math.hypot(x2 - x1, y2 - y1)
    distances = [abs((x2 - x1) * (y1 - y) - (x1 - x) * (y2 - y1)) / length if length else math.hypot(x - x1, y - y1)
                 for x, y in points[1:-1]]
    index = max(range(len(distances)), key=distances.__getitem__)
    if distances[index] <= tolerance:
        return [points[0], points[-1]]
    left = _simplify(points[: index + 2], tolerance)
    return left[:-1] + _simplify(points[index + 1:], tolerance)


def _drop_collinear(pts: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Drop ring vertices (cyclic) lying within ``tolerance`` of the line through their neighbours."""
    out = list(pts)
    i = 0
    while len(out) > 3 and i < len(out):
        (x0, y0), (x, y), (x1, y1) = out[i - 1], out[i], out[(i + 1) % len(out)]
        length = math.hypot(x1 - x0, y1 - y0)
        if length and abs((x1 - x0) * (y0 - y) - (x0 - x) * (y1 - y0)) / length <= tolerance:
            out.pop(i)
        else:
            i += 1
    return out


def _ccw_polygon(ring: list[tuple[float, float]], tolerance: float = 1e-6) -> list[list[float]]:
    """A closed GeoJSON exterior ring, counter-clockwise (RFC 7946), rounded to 1e-9 degrees and
    simplified to ``tolerance`` degrees (straight densified edges collapse to their corners)."""
    pts = [(round(x, 9), round(y, 9)) for x, y in ring]
    pts = [p for i, p in enumerate(pts) if i == 0 or p != pts[i - 1]]
    if pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) > 4:
        half = len(pts) // 2
        pts = _simplify(pts[: half + 1], tolerance)[:-1] + _simplify(pts[half:] + pts[:1], tolerance)[:-1]
        pts = _drop_collinear(pts, tolerance)
    area = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]))
    if area < 0:
        pts.reverse()
    return [list(p) for p in pts + pts[:1]]


def _box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [(west, south), (east, south), (east, north), (west, north)]
    return {"type": "Polygon", "coordinates": [_ccw_polygon(ring)]}


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Monotone-chain convex hull (counter-clockwise)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        hull: list[tuple[float, float]] = []
        for p in seq:
            while len(hull) >= 2 and (
                (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])
            ) <= 0:
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return half(pts) + half(pts[::-1])


def _clamp_bbox(west: float, south: float, east: float, north: float) -> list[float]:
    def lon(v: float) -> float:
        return round(min(180.0, max(-180.0, v)), 9)

    def lat(v: float) -> float:
        return round(min(90.0, max(-90.0, v)), 9)

    return [lon(west), lat(south), lon(east), lat(north)]


def _ring_footprint(lons: list[float], lats: list[float], tolerance: float) -> tuple[dict[str, Any], list[float]]:
    """Geometry and bbox of a transformed edge ring, split at the antimeridian when it crosses;
    vertices within ``tolerance`` degrees of a straight line are dropped."""
    ulons = _unwrap(lons)
    south, north = min(lats), max(lats)
    if max(ulons) - min(ulons) >= 360.0 - 1e-9:
        return _box(-180.0, south, 180.0, north), _clamp_bbox(-180.0, south, 180.0, north)
    shift = -360.0 * math.floor((min(ulons) + 180.0) / 360.0)
    ring = [(x + shift, y) for x, y in zip(ulons, lats)]
    west, east = min(ulons) + shift, max(ulons) + shift
    if east <= 180.0:
        return {"type": "Polygon", "coordinates": [_ccw_polygon(ring, tolerance)]}, _clamp_bbox(west, south, east, north)
    clipped = [[(x - offset, y) for x, y in _clip_ring(ring, lo, lo + 360.0)]
               for lo, offset in ((-180.0, 0.0), (180.0, 360.0))]
    parts = [_ccw_polygon(part, tolerance) for part in clipped if len(set(part)) >= 3]
    geometry = {"type": "MultiPolygon", "coordinates": [[p] for p in parts]}
    return geometry, _clamp_bbox(west, south, east - 360.0, north)


def _half_pixel_degrees(dataset: Any, lons: list[float], lats: list[float]) -> float:
    """Half a pixel in degrees (roughly): how far the simplified footprint may stray."""
    span_lat = (max(lats) - min(lats)) / dataset.height
    span_lon = (max(_unwrap(lons)) - min(_unwrap(lons))) / dataset.width
    return max(1e-9, 0.5 * min(span_lat, span_lon))


def get_footprint(dataset: Any, *, densify: int = 21) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry and bbox in EPSG:4326 of the raster's extent (its data footprint).

    Edges are densified before reprojection; a footprint that crosses the antimeridian becomes a
    MultiPolygon with ``bbox[0] > bbox[2]``; one that holds a pole reaches +/-90 over all
    longitudes. When the edges leave the projection's valid area (a geostationary full disk), the
    convex hull of a grid of sample points that do transform is used instead.
    """
    check_georeferenced(dataset)
    pole = 0 if dataset.crs.is_geographic else _contains_pole(dataset)
    cols, rows = _edge_pixels(dataset.width, dataset.height, densify)
    lons, lats = _to_lonlat(dataset, cols, rows)
    finite = [(x, y) for x, y in zip(lons, lats) if math.isfinite(x) and math.isfinite(y)]
    if pole:
        south, north = (min(y for _, y in finite), 90.0) if pole > 0 else (-90.0, max(y for _, y in finite))
        return _box(-180.0, south, 180.0, north), _clamp_bbox(-180.0, south, 180.0, north)
    if len(finite) == len(lons):
        return _ring_footprint(lons, lats, _half_pixel_degrees(dataset, lons, lats))
    return _sampled_footprint(dataset, densify)


def _sampled_footprint(dataset: Any, densify: int) -> tuple[dict[str, Any], list[float]]:
    n = densify * 2
    grid = [(dataset.width * i / n, dataset.height * j / n) for i in range(n + 1) for j in range(n + 1)]
    lons, lats = _to_lonlat(dataset, [c for c, _ in grid], [r for _, r in grid])
    points = [(x, y) for x, y in zip(lons, lats) if math.isfinite(x) and math.isfinite(y)]
    if len(points) < 3:
        raise FootprintError(f"raster {dataset.name!r}: footprint does not transform to EPSG:4326")
    west, east = min(x for x, _ in points), max(x for x, _ in points)
    south, north = min(y for _, y in points), max(y for _, y in points)
    if east - west > 180.0:
        return _box(-180.0, south, 180.0, north), _clamp_bbox(-180.0, south, 180.0, north)
    hull = _convex_hull(points)
    return {"type": "Polygon", "coordinates": [_ccw_polygon(hull)]}, _clamp_bbox(west, south, east, north)


def get_projection_info(dataset: Any) -> dict[str, Any]:
    """Projection extension v2.0.0 fields: code (or null plus WKT2), shape, transform, bbox."""
    crs = dataset.crs
    authority = crs.to_authority()
    info: dict[str, Any] = {"proj:code": f"{authority[0]}:{authority[1]}" if authority else None}
    if authority is None:
        info["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    t = dataset.transform
    corners = [t @ (c, r) for c, r in ((0, 0), (dataset.width, 0), (dataset.width, dataset.height), (0, dataset.height))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    info["proj:bbox"] = [min(xs), min(ys), max(xs), max(ys)]
    info["proj:shape"] = [dataset.height, dataset.width]
    info["proj:transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    return info


_DATA_TYPES = {
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "complex_int16": "cint16", "complex64": "cfloat32", "complex128": "cfloat64",
}
_COMMON_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


def _nodata_value(nodata: float | None) -> float | str | None:
    if nodata is None:
        return None
    if math.isnan(nodata):
        return "nan"
    if math.isinf(nodata):
        return "inf" if nodata > 0 else "-inf"
    return int(nodata) if float(nodata).is_integer() else float(nodata)


def _mask_non_finite(data: np.ma.MaskedArray) -> np.ma.MaskedArray:
    if data.dtype.kind in "fc":
        data.mask = np.ma.getmaskarray(data) | ~np.isfinite(data.filled(0))
    return data


def _sample_windows(dataset: Any, count: int) -> list[Window]:
    """Up to ``count`` whole blocks spread evenly over the raster's block grid."""
    block_h, block_w = dataset.block_shapes[0]
    rows, cols = math.ceil(dataset.height / block_h), math.ceil(dataset.width / block_w)
    side = max(1, int(math.sqrt(count)))
    picks = sorted({(r * (rows - 1) // max(1, side - 1), c * (cols - 1) // max(1, side - 1))
                    for r in range(min(side, rows)) for c in range(min(side, cols))})
    return [Window(c * block_w, r * block_h, min(block_w, dataset.width - c * block_w),
                   min(block_h, dataset.height - r * block_h)) for r, c in picks]


def read_decimated(dataset: Any, *, max_size: int = 1024, sample_blocks: int = 64) -> np.ma.MaskedArray:
    """A masked read of all bands for statistics, never a full read of a large raster.

    With overviews (every COG) or when the raster is small: one read at most ``max_size`` pixels
    on the long side, which GDAL serves from the overviews. A large raster without overviews is
    sampled instead: up to ``sample_blocks`` whole blocks spread over it (shape ``(bands, 1, n)``).
    Nodata, NaN, alpha and internal masks are masked out.
    """
    scale = max(1.0, max(dataset.width, dataset.height) / max_size)
    try:
        if scale > 4 and not dataset.overviews(1):
            parts = [dataset.read(window=w, masked=True).reshape(dataset.count, 1, -1)
                     for w in _sample_windows(dataset, sample_blocks)]
            return _mask_non_finite(np.ma.concatenate(parts, axis=2))
        shape = (dataset.count, max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
        return _mask_non_finite(dataset.read(out_shape=shape, masked=True, resampling=Resampling.nearest))
    except rasterio.errors.RasterioError as err:
        raise RasterReadError(f"cannot read pixels of {dataset.name!r}: {err}") from err


def get_statistics(band: np.ma.MaskedArray) -> dict[str, float]:
    """STAC 1.1 statistics of one band: min, max, mean, stddev, valid_percent (``{valid_percent: 0}``
    when every sample is masked)."""
    total = band.size
    valid = band.compressed()
    if valid.size == 0:
        return {"valid_percent": 0.0}
    values = valid.astype("float64")
    return {
        "minimum": float(values.min()),
        "maximum": float(values.max()),
        "mean": float(values.mean()),
        "stddev": float(values.std()),
        "valid_percent": round(100.0 * valid.size / total, 4),
    }


def get_bands(dataset: Any, *, max_size: int = 1024) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the data asset with raster v2.0.0 (and eo v2.0.0) fields."""
    data = read_decimated(dataset, max_size=max_size)
    t = dataset.transform
    resolution = math.sqrt(abs(t.a * t.e - t.b * t.d))
    bands = []
    for index in range(dataset.count):
        band: dict[str, Any] = {"name": f"b{index + 1}"}
        interp = dataset.colorinterp[index]
        description = dataset.descriptions[index]
        if description or interp not in (ColorInterp.undefined, ColorInterp.gray):
            band["description"] = description or interp.name
        band["data_type"] = _DATA_TYPES.get(dataset.dtypes[index], "other")
        nodata = _nodata_value(dataset.nodatavals[index])
        if nodata is not None:
            band["nodata"] = nodata
        band["statistics"] = get_statistics(data[index])
        if dataset.units[index]:
            band["unit"] = dataset.units[index]
        band["raster:spatial_resolution"] = resolution
        band["raster:scale"] = float(dataset.scales[index])
        band["raster:offset"] = float(dataset.offsets[index])
        if interp in _COMMON_NAMES:
            band["eo:common_name"] = _COMMON_NAMES[interp]
        bands.append(band)
    return bands


_TIFF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def _parse_file_datetime(text: str) -> dt.datetime | None:
    match = _TIFF_DATETIME.match(text.strip())
    try:
        if match:
            return dt.datetime(*map(int, match.groups()), tzinfo=dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def get_datetime(
    dataset: Any, *, last_modified: dt.datetime | None = None, override: dt.datetime | None = None
) -> tuple[dt.datetime, str]:
    """The item datetime and which rule chose it: file metadata, blob last-modified, request."""
    candidates = [dataset.tags().get("TIFFTAG_DATETIME"), dataset.tags(ns="IMAGERY").get("ACQUISITIONDATETIME")]
    for text in filter(None, candidates):
        parsed = _parse_file_datetime(text)
        if parsed is not None:
            return parsed, "file-metadata"
        logger.warning("raster %s: unparseable datetime tag %r ignored", dataset.name, text)
    if last_modified is not None:
        return _utc(last_modified), "blob-last-modified"
    if override is not None:
        return _utc(override), "request"
    raise MissingDatetime(f"raster {dataset.name!r}: no datetime in file, blob or request")


def get_cog_header_size(dataset: Any) -> int | None:
    """``file:header_size`` of a COG: the offset of its first tile (all IFDs precede it).

    None when GDAL does not report a COG layout or no block offset is available.
    """
    if dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG":
        return None
    offsets = []
    for level in [None, *range(len(dataset.overviews(1)))]:
        try:
            value = dataset.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=level)
        except rasterio.errors.RasterioError:
            value = None
        if value:
            offsets.append(int(value))
    return min(offsets) if offsets else None


def _local_size(path: str) -> int | None:
    if path.startswith("/vsi") or "://" in path:
        return None
    with contextlib.suppress(OSError):
        return os.path.getsize(path)
    return None


def get_data_asset(dataset: Any, *, href: str, size: int | None, max_size: int) -> pystac.Asset:
    """The ``data`` asset (the COG) with bands and file info."""
    fields: dict[str, Any] = {"bands": get_bands(dataset, max_size=max_size)}
    size = size if size is not None else _local_size(dataset.name)
    if size is not None:
        fields["file:size"] = size
    header_size = get_cog_header_size(dataset)
    if header_size is not None:
        fields["file:header_size"] = header_size
    media_type = COG_MEDIA_TYPE if header_size is not None else GEOTIFF_MEDIA_TYPE
    if dataset.driver != "GTiff":
        media_type = None
    return pystac.Asset(href=href, title="Cloud Optimized GeoTIFF", media_type=media_type,
                        roles=["data"], extra_fields=fields)


def _source_media_type(href: str) -> str | None:
    suffix = Path(href.split("?", 1)[0]).suffix.lower()
    return {".tif": GEOTIFF_MEDIA_TYPE, ".tiff": GEOTIFF_MEDIA_TYPE, ".jp2": "image/jp2",
            ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(suffix)


def get_source_asset(source: SourceBlob) -> pystac.Asset | None:
    """The ``source`` asset (the original blob), or None when its href is unknown."""
    if not source.href:
        return None
    fields = {"file:size": source.size} if source.size is not None else {}
    return pystac.Asset(href=source.href, title="Original file", media_type=_source_media_type(source.href),
                        roles=["source"], extra_fields=fields)


def item_from_raster(
    raster: str | os.PathLike | Any,
    *,
    container: str,
    blob_name: str,
    collection_id: str | None = None,
    source_href: str | None = None,
    source_etag: str | None = None,
    source_last_modified: dt.datetime | None = None,
    source_size: int | None = None,
    data_href: str | None = None,
    data_size: int | None = None,
    datetime_override: dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    max_stats_size: int = 1024,
    gdal_config: Mapping[str, Any] | None = None,
    validator: StacValidator | None = None,
) -> pystac.Item:
    """A STAC item for one raster (normally the COG made from a source blob).

    ``raster`` is a local path, a GDAL virtual path (``/vsiaz/...``) or an open dataset.
    ``container``/``blob_name`` name the *source* blob and fix the item id; ``data_href`` is the
    public href of the raster (default: the path read); ``source_href`` the original's href
    (a ``source`` asset is added when it differs from ``data_href``). Only the header and a
    decimated read (overviews, at most ``max_stats_size`` px on the long side) are read. With a
    ``validator`` the item is validated before it is returned (``ItemValidationError``).
    """
    source = SourceBlob(container=container, blob_name=blob_name, href=source_href, etag=source_etag,
                        last_modified=source_last_modified, size=source_size)
    with rasterio.Env(**(gdal_config or {})), _open_raster(raster) as dataset:
        geometry, bbox = get_footprint(dataset)
        when, when_source = get_datetime(dataset, last_modified=source_last_modified, override=datetime_override)
        props: dict[str, Any] = {**get_projection_info(dataset), DATETIME_SOURCE: when_source,
                                 SOURCE_CONTAINER: container, SOURCE_BLOB: blob_name}
        if source_etag is not None:
            props[SOURCE_ETAG] = source_etag
        href = data_href or os.fspath(dataset.name)
        data = get_data_asset(dataset, href=href, size=data_size, max_size=max_stats_size)
    bands = data.extra_fields["bands"]
    props[HAS_DATA] = any(b["statistics"].get("valid_percent", 0) > 0 for b in bands)
    props.update(properties or {})
    extensions = [PROJECTION_EXT, RASTER_EXT, FILE_EXT]
    if any("eo:common_name" in b for b in bands):
        extensions.append(EO_EXT)
    item = pystac.Item(id=item_id_for_blob(container, blob_name), geometry=geometry, bbox=bbox,
                       datetime=when, properties=props, stac_extensions=extensions,
                       collection=collection_id or default_collection_id(container))
    item.add_link(pystac.Link(rel="collection", target="../collection.json", media_type="application/json"))
    item.add_asset("data", data)
    source_asset = get_source_asset(source)
    if source_asset is not None and source_asset.href != href:
        item.add_asset("source", source_asset)
    if validator is not None:
        validator.validate_item(item)
    return item


def item_from_source(
    raster: str | os.PathLike | Any, source: SourceBlob | Mapping[str, Any], **kwargs: Any
) -> pystac.Item:
    """``item_from_raster`` with the source blob given as a ``SourceBlob`` (or its JSON dict)."""
    blob = SourceBlob.model_validate(source)
    return item_from_raster(raster, container=blob.container, blob_name=blob.blob_name, source_href=blob.href,
                            source_etag=blob.etag, source_last_modified=blob.last_modified,
                            source_size=blob.size, **kwargs)


class SyncPlan(BaseModel):
    """What an incremental sync of a container has to do, by item id (crosses the Durable boundary)."""

    to_add: list[SourceBlob] = []
    to_update: list[SourceBlob] = []
    to_delete: list[str] = []
    unchanged: list[str] = []


def plan_sync(blobs: Iterable[SourceBlob | Mapping[str, Any]], catalog_etags: Mapping[str, str | None]) -> SyncPlan:
    """Compare listed blobs with ``Catalog.list_item_etags``: new, changed (ETag differs or
    unknown), unchanged, and items whose blob is gone. ETags are compared as given (quotes kept)."""
    plan = SyncPlan()
    seen = set()
    for blob in map(SourceBlob.model_validate, blobs):
        item_id = item_id_for_blob(blob.container, blob.blob_name)
        seen.add(item_id)
        if item_id not in catalog_etags:
            plan.to_add.append(blob)
        elif blob.etag is None or catalog_etags[item_id] != blob.etag:
            plan.to_update.append(blob)
        else:
            plan.unchanged.append(item_id)
    plan.to_delete = sorted(set(catalog_etags) - seen)
    return plan


# ------------------------------------------------------------------------------- validation

CORE_SCHEMAS = {
    "Feature": f"https://schemas.stacspec.org/v{STAC_VERSION}/item-spec/json-schema/item.json",
    "Collection": f"https://schemas.stacspec.org/v{STAC_VERSION}/collection-spec/json-schema/collection.json",
    "Catalog": f"https://schemas.stacspec.org/v{STAC_VERSION}/catalog-spec/json-schema/catalog.json",
}


def load_extension_schemas(schema_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Extension schemas of ``<schema_dir>/<extension>/<version>/schema.json`` by their URL."""
    root = Path(schema_dir)
    if not root.is_dir():
        raise SchemaUnavailable(f"schema directory {os.fspath(schema_dir)!r} does not exist")
    schemas = {}
    for path in sorted(root.glob("*/v*/schema.json")):
        ext, version = path.parent.parent.name, path.parent.name
        schemas[f"https://stac-extensions.github.io/{ext}/{version}/schema.json"] = json.loads(path.read_text())
    return schemas


class StacValidator:
    """Offline JSON-schema validation of STAC items, collections and catalogs.

    Core schemas come from pystac's bundled copies; extension schemas from ``schema_dir``. Any
    other ``$ref`` raises ``SchemaUnavailable`` instead of going to the network. Without a
    ``schema_dir`` (the deployed app ships none) only the core schema is checked and extension
    URLs are reported back as skipped. Thread-safe; compiled validators are cached.

    ``jsonschema`` (the reference, as in pystac) decides. When ``fastjsonschema`` is installed it
    runs first as an accelerator (about 10x faster): a document it accepts is valid; one it
    rejects goes to ``jsonschema`` for the verdict and the messages. References that are not
    available offline compile to a schema that always fails, so the fast path can only send a
    document on to ``jsonschema``, never wave it through.
    """

    def __init__(self, schema_dir: str | os.PathLike | None = None, *, use_fast_path: bool = True) -> None:
        from pystac.validation.local_validator import get_local_schema_cache

        self.use_fast_path = use_fast_path
        self.schema_dir = Path(schema_dir) if schema_dir is not None else None
        self._schemas = get_local_schema_cache()
        if self.schema_dir is not None:
            self._schemas.update(load_extension_schemas(self.schema_dir))
        self._validators: dict[str, Any] = {}
        self._fast: dict[str, Callable[[Any], Any] | None] = {}

    def _fast_validator(self, uri: str) -> Callable[[Any], Any] | None:
        """A fastjsonschema function for ``uri`` (None without fastjsonschema or the schema)."""
        if uri not in self._fast:
            try:
                import fastjsonschema
            except ImportError:
                fastjsonschema = None
            schema = self._schemas.get(uri.rstrip("#"))
            if fastjsonschema is None or schema is None:
                self._fast[uri] = None
            else:
                def offline(ref: str) -> dict[str, Any]:
                    return self._schemas.get(ref.split("#")[0], {"not": {}})

                handlers = {"https": offline, "http": offline}
                self._fast[uri] = fastjsonschema.compile(schema, handlers=handlers, use_default=False)
        return self._fast[uri]

    def _fast_accepts(self, uris: list[str], stac: Mapping[str, Any]) -> bool:
        checks = [self._fast_validator(uri) for uri in uris]
        if any(check is None for check in checks):
            return False
        from fastjsonschema import JsonSchemaException

        try:
            for check in checks:
                check(stac)
        except JsonSchemaException:
            return False
        return True

    @cached_property
    def _registry(self) -> Any:
        from referencing import Registry, Resource
        from referencing.exceptions import NoSuchResource

        def retrieve(uri: str) -> Any:
            raise NoSuchResource(ref=uri)

        return Registry(retrieve=retrieve).with_resources(
            (uri, Resource.from_contents(schema)) for uri, schema in self._schemas.items()
        )

    def _validator(self, uri: str) -> Any:
        if uri not in self._validators:
            import jsonschema

            schema = self._schemas.get(uri.rstrip("#"))
            if schema is None:
                raise SchemaUnavailable(f"schema {uri!r} is not available offline")
            self._validators[uri] = jsonschema.Draft7Validator(schema, registry=self._registry)
        return self._validators[uri]

    def schema_uris(self, stac: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The schema URLs ``stac`` is checked against, and the extension URLs skipped."""
        kind = stac.get("type")
        if kind not in CORE_SCHEMAS or stac.get("stac_version") != STAC_VERSION:
            raise SchemaUnavailable(f"no offline schema for type {kind!r} version {stac.get('stac_version')!r}")
        uris, skipped = [CORE_SCHEMAS[kind]], []
        for ext in stac.get("stac_extensions", []):
            (uris if ext in self._schemas or self.schema_dir is not None else skipped).append(ext)
        return uris, skipped

    def errors(self, stac: Mapping[str, Any]) -> list[str]:
        """Validation messages for ``stac`` (empty when valid)."""
        from referencing.exceptions import Unresolvable

        uris, skipped = self.schema_uris(stac)
        if skipped:
            logger.debug("no schema directory: skipped extension schemas %s", skipped)
        if self.use_fast_path and self._fast_accepts(uris, stac):
            return []
        messages = []
        for uri in uris:
            try:
                found = list(self._validator(uri).iter_errors(stac))
            except Unresolvable as err:
                raise SchemaUnavailable(f"schema reference {err} needed by {uri} is not available offline") from err
            messages += [f"{uri}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]
        return messages

    def validate_item(self, item: pystac.Item | Mapping[str, Any]) -> None:
        """Raise ``ItemValidationError`` unless the item validates."""
        stac = item.to_dict(include_self_link=False, transform_hrefs=False) if isinstance(item, pystac.Item) else item
        messages = self.errors(stac)
        if messages:
            raise ItemValidationError(f"item {stac.get('id')!r} is invalid: " + "; ".join(messages[:5]))

    def validate_collection(self, collection: pystac.Collection | Mapping[str, Any]) -> None:
        """Raise ``CollectionValidationError`` unless the collection validates."""
        stac = collection.to_dict(include_self_link=False, transform_hrefs=False) if isinstance(
            collection, pystac.Collection) else collection
        messages = self.errors(stac)
        if messages:
            raise CollectionValidationError(f"collection {stac.get('id')!r} is invalid: " + "; ".join(messages[:5]))


# ------------------------------------------------------------------------------ collections


def build_collection(
    collection_id: str,
    *,
    description: str | None = None,
    title: str | None = None,
    license: str = DEFAULT_LICENSE,
    bbox: Sequence[float] | None = None,
    interval: Sequence[dt.datetime | None] | None = None,
    summaries: Mapping[str, Any] | None = None,
    keywords: Sequence[str] | None = None,
    providers: Sequence[Mapping[str, Any]] | None = None,
) -> pystac.Collection:
    """A collection with our fixed ``item_assets`` (the ``data`` COG and the ``source`` original)."""
    check_id(collection_id)
    extent = pystac.Extent(
        pystac.SpatialExtent([list(bbox or [-180.0, -90.0, 180.0, 90.0])]),
        pystac.TemporalExtent([list(interval or [None, None])]),
    )
    collection = pystac.Collection(
        id=collection_id, description=description or f"Rasters cataloged from {collection_id}",
        title=title, license=license, extent=extent, keywords=list(keywords or []) or None,
        providers=[pystac.Provider.from_dict(dict(p)) for p in providers or []] or None,
        summaries=pystac.Summaries(dict(summaries or {})),
        extra_fields={"item_assets": json.loads(json.dumps(ITEM_ASSETS))},
    )
    return collection


def collection_for_container(container: str, *, collection_id: str | None = None, **kwargs: Any) -> pystac.Collection:
    """The default collection of a container (``collection_id`` overrides the derived id)."""
    cid = resolve_collection_id(container, collection_id)
    kwargs.setdefault("description", f"Rasters cataloged from blob container {container!r}")
    kwargs.setdefault("title", container)
    return build_collection(cid, **kwargs)


class ItemSummary(BaseModel):
    """What a collection's extent and summaries are computed from: aggregates over its items."""

    count: int = 0
    bbox: list[float] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    proj_codes: list[str] = []
    data_types: list[str] = []


def _item_span(stac: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    props = stac["properties"]
    start = _parse_iso(props.get("start_datetime") or props.get("datetime"))
    return start, _parse_iso(props.get("end_datetime") or props.get("datetime"))


def _west_south_east_north(stac: Mapping[str, Any]) -> list[float]:
    """The 2D bbox of an item; an antimeridian-crossing one widened to all longitudes."""
    bbox = stac["bbox"]
    west, south, east, north = bbox if len(bbox) == 4 else [bbox[0], bbox[1], bbox[3], bbox[4]]
    return [-180.0, south, 180.0, north] if west > east else [west, south, east, north]


def summarize_items(items: Iterable[Mapping[str, Any]]) -> ItemSummary:
    """Aggregate item dicts: count, bbox union, time span, projection codes, band data types."""
    boxes, starts, ends, codes, types = [], [], [], set(), set()
    for item in items:
        boxes.append(_west_south_east_north(item))
        start, end = _item_span(item)
        starts.append(start)
        ends.append(end)
        codes.add(item["properties"].get("proj:code"))
        for asset in item.get("assets", {}).values():
            types.update(band.get("data_type") for band in asset.get("bands", []))
    if not boxes:
        return ItemSummary()
    columns = list(zip(*boxes))
    return ItemSummary(
        count=len(boxes), bbox=[min(columns[0]), min(columns[1]), max(columns[2]), max(columns[3])],
        start=min(filter(None, starts), default=None), end=max(filter(None, ends), default=None),
        proj_codes=sorted(filter(None, codes)), data_types=sorted(filter(None, types)),
    )


def _parse_iso(text: str | None) -> dt.datetime | None:
    return None if text is None else _utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def apply_summary(collection: pystac.Collection, summary: ItemSummary) -> pystac.Collection:
    """Set the collection's extent and summaries from its items' aggregates (in place)."""
    if summary.bbox is not None:
        collection.extent.spatial = pystac.SpatialExtent([summary.bbox])
    collection.extent.temporal = pystac.TemporalExtent([[summary.start, summary.end]])
    summaries = collection.summaries.to_dict()
    summaries.pop("proj:code", None)
    summaries.pop("data_type", None)
    if summary.proj_codes:
        summaries["proj:code"] = summary.proj_codes
    if summary.data_types:
        summaries["data_type"] = summary.data_types
    collection.summaries = pystac.Summaries(summaries)
    return collection


# --------------------------------------------------------------------------- catalog protocol


@runtime_checkable
class Catalog(Protocol):
    """What every catalog backend offers (pgSTAC and the static catalog)."""

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None: ...
    def get_collection(self, collection_id: str) -> pystac.Collection | None: ...
    def refresh_collection(self, collection_id: str) -> pystac.Collection: ...
    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult: ...
    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int: ...
    def flush_staged(self, stage_id: str) -> UpsertResult: ...
    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None: ...
    def delete_item(self, collection_id: str, item_id: str) -> bool: ...
    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int: ...
    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None,
               datetime: str | None = None, limit: int = 100) -> list[pystac.Item]: ...
    def list_item_etags(self, collection_id: str) -> dict[str, str | None]: ...
    def health(self) -> CatalogHealth: ...
    def finalize(self) -> None: ...


def _item_dict(item: pystac.Item | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(item, pystac.Item):
        return item.to_dict(include_self_link=False, transform_hrefs=False)
    return dict(item)


def _prepare_items(items: Iterable[pystac.Item | Mapping[str, Any]], validator: StacValidator | None) -> dict[str, dict[str, dict]]:
    """Item dicts grouped by collection, de-duplicated by id (last wins), validated, ids checked."""
    grouped: dict[str, dict[str, dict]] = {}
    for item in items:
        stac = _item_dict(item)
        check_id(stac.get("id", ""))
        collection_id = stac.get("collection")
        if not collection_id:
            raise ItemValidationError(f"item {stac.get('id')!r} names no collection")
        if validator is not None:
            validator.validate_item(stac)
        grouped.setdefault(collection_id, {})[stac["id"]] = stac
    return grouped


def parse_datetime_interval(value: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """A STAC API ``datetime`` parameter (instant or ``start/end`` with ``..`` open ends)."""
    if not value:
        return None, None
    parts = value.split("/")
    if len(parts) == 1:
        instant = _parse_iso(parts[0])
        return instant, instant
    start, end = (None if p in ("", "..") else _parse_iso(p) for p in parts[:2])
    return start, end


# ----------------------------------------------------------------------------------- pgSTAC

TRANSIENT_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_LOCK_NAMESPACE = 0x524D48  # "RMH": advisory-lock class for collection writers

_STAGE_DDL = """
CREATE TABLE IF NOT EXISTS public.rmh_staged_items (
    stage_id text NOT NULL, collection text NOT NULL, item_id text NOT NULL, content jsonb NOT NULL,
    staged_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stage_id, collection, item_id)
)
"""
_STAGE_PUT = """
INSERT INTO public.rmh_staged_items (stage_id, collection, item_id, content) VALUES (%s, %s, %s, %s)
ON CONFLICT (stage_id, collection, item_id) DO UPDATE SET content = EXCLUDED.content, staged_at = now()
"""
_STAGE_TAKE = """
DELETE FROM public.rmh_staged_items WHERE stage_id = %s RETURNING collection, content
"""
# Stages of runs that never flushed (a chunk that failed beyond its retries) expire after a week.
_STAGE_EXPIRE = "DELETE FROM public.rmh_staged_items WHERE staged_at < now() - interval '7 days'"
_STAGE_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS rmh_items_in (
    id text NOT NULL, collection text NOT NULL, datetime timestamptz NOT NULL,
    end_datetime timestamptz NOT NULL, geojson text NOT NULL, content jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
_CHECK_PARTITIONS = """
SELECT pgstac.check_partition(%(collection)s, tstzrange(min(datetime), max(datetime), '[]'),
                              tstzrange(min(end_datetime), max(end_datetime), '[]'))
FROM rmh_items_in
GROUP BY CASE WHEN %(trunc)s::text IS NULL THEN NULL
              ELSE date_trunc(coalesce(%(trunc)s::text, 'year'), datetime, 'UTC') END
ORDER BY 1
"""
# Rows whose stored copy differs (content, datetime or geometry) are deleted first, locked in id
# order: a changed datetime may route the new copy to another partition, where ON CONFLICT on
# the partition's unique id index would not see the old one.
_DELETE_CHANGED = """
WITH changed AS (
    SELECT o.id FROM rmh_items_in s
    JOIN pgstac.items o ON o.collection = s.collection AND o.id = s.id
    WHERE o.collection = %(collection)s
      AND ((o.datetime, o.end_datetime, o.content) IS DISTINCT FROM (s.datetime, s.end_datetime, s.content)
           OR NOT ST_OrderingEquals(o.geometry, ST_GeomFromGeoJSON(s.geojson)))
    ORDER BY o.id
    FOR UPDATE OF o
)
DELETE FROM pgstac.items i USING changed c WHERE i.collection = %(collection)s AND i.id = c.id
"""
_INSERT = """
INSERT INTO pgstac.items (id, geometry, collection, datetime, end_datetime, content)
SELECT id, ST_GeomFromGeoJSON(geojson), collection, datetime, end_datetime, content FROM rmh_items_in
ON CONFLICT DO NOTHING
"""
_COLLECTION_META = """
SELECT b.base_item, c.key, c.partition_trunc, b.base_item_id
FROM pgstac.collections c, pgstac.current_base_item(c.id) b
WHERE c.id = %s
FOR SHARE OF c
"""


def connect(
    dsn: str, *, password_provider: Callable[[], str] | None = None, autocommit: bool = False, **kwargs: Any
) -> psycopg.Connection:
    """Open a psycopg connection; ``password_provider`` supplies the password per connection
    (an Azure AD access token for Azure Database for PostgreSQL, fetched by the caller)."""
    if password_provider is not None:
        kwargs["password"] = password_provider()
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as err:
        raise CatalogUnavailable(f"cannot connect to PostgreSQL: {err}") from err


def connection_pool(
    dsn: str, *, password_provider: Callable[[], str] | None = None, min_size: int = 1,
    max_size: int = 4, **pool_kwargs: Any
) -> ConnectionPool:
    """A psycopg pool; with ``password_provider`` every new connection gets a fresh token."""
    kwargs: Any = (lambda: {"password": password_provider()}) if password_provider else None
    return ConnectionPool(dsn, kwargs=kwargs, min_size=min_size, max_size=max_size, open=True, **pool_kwargs)


class _LostConnection(Exception):
    """A pooled connection broke mid-transaction (the pool replaces it): worth a retry."""


def _is_lost_connection(err: psycopg.Error, conn: psycopg.Connection | None) -> bool:
    return isinstance(err, psycopg.OperationalError) and (conn is None or conn.broken or conn.closed)


def _lock_key(collection_id: str) -> int:
    """A stable signed 32-bit key for the collection's advisory lock."""
    return int.from_bytes(hashlib.sha256(collection_id.encode("utf-8")).digest()[:4], "big", signed=True)


def _dehydrated_row(stac: dict[str, Any], base_item: dict[str, Any], base_item_id: int | None) -> tuple:
    """One staged row in pgSTAC's storage form (the same dehydration as ``pypgstac load``)."""
    props = stac.get("properties", {})
    start = props.get("start_datetime") if props.get("end_datetime") else None
    start = start or props.get("datetime")
    end = props.get("end_datetime") or start
    if start is None:
        raise ItemValidationError(f"item {stac.get('id')!r} has no datetime")
    if stac.get("geometry") is None:
        raise ItemValidationError(f"item {stac.get('id')!r} has no geometry")
    content = dehydrate(base_item, stac)
    for key in ("id", "collection", "geometry", "pgstac:base_item"):
        content.pop(key, None)
    if base_item_id is not None:
        content["pgstac:base_item"] = base_item_id
    return (stac["id"], stac["collection"], start, end, orjson.dumps(stac["geometry"]).decode(),
            orjson.dumps(content).decode())


class PgStacCatalog:
    """The pgSTAC backend: batched upserts that never duplicate, search through pgSTAC's ``search()``.

    Takes a psycopg ``Connection`` or a ``ConnectionPool`` (never opens one from the environment).
    Writers of one collection are serialised by a transaction-scoped advisory lock, so concurrent
    activities cannot both insert the same id into different datetime partitions. Deadlocks and
    serialization failures are retried (bounded); a lost connection is retried only with a pool.
    Give concurrent writers (threads) a pool or a catalog each: one connection runs one
    transaction at a time.
    """

    def __init__(self, source: psycopg.Connection | ConnectionPool, *, validator: StacValidator | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, retries: int = 3, retry_delay: float = 0.05) -> None:
        self._source = source
        self.validator = validator
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delay = retry_delay
        self._version_checked = False
        self._stage_ready = False

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if isinstance(self._source, ConnectionPool):
            with self._source.connection() as conn:
                yield conn
        else:
            yield self._source

    def _run(self, what: str, work: Callable[[psycopg.Connection], Any], *, pipeline: bool = False) -> Any:
        """Run ``work(conn)`` in one transaction, retrying named transient errors (deadlock,
        serialization failure, a pooled connection lost) a bounded number of times with
        exponential backoff and jitter. Anything else that reaches the database fails at once:
        unreachable → CatalogUnavailable (the activity rides that out), bad query → CatalogQueryError."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((*TRANSIENT_ERRORS, _LostConnection)),
            wait=tenacity.wait_exponential_jitter(multiplier=self.retry_delay, max=2.0),
            stop=tenacity.stop_after_attempt(self.retries + 1), reraise=True,
            before_sleep=lambda state: logger.warning(
                "%s: transient %s, retry %d", what, type(state.outcome.exception()).__name__,
                state.attempt_number))
        try:
            return retrying(self._transaction, work, pipeline)
        except (*TRANSIENT_ERRORS, _LostConnection) as err:
            cause = err.__cause__ if isinstance(err, _LostConnection) else err
            raise CatalogUnavailable(f"{what}: still failing after {self.retries} retries: {cause}") from err
        except psycopg.OperationalError as err:
            raise CatalogUnavailable(f"{what}: database unavailable: {err}") from err
        except psycopg.Error as err:
            raise CatalogQueryError(f"{what}: {type(err).__name__}: {str(err).splitlines()[0]}") from err

    def _transaction(self, work: Callable[[psycopg.Connection], Any], pipeline: bool = False) -> Any:
        """``work`` in one transaction; with ``pipeline`` its statements go out without waiting
        for each answer (one round trip for a write that reads nothing back; no COPY in it)."""
        conn = None
        try:
            with self._connection() as conn, (conn.pipeline() if pipeline else contextlib.nullcontext()), \
                    conn.transaction():
                conn.execute("SELECT set_config('search_path', 'pgstac,public', true)")
                return work(conn)
        except TRANSIENT_ERRORS:
            raise
        except psycopg.OperationalError as err:
            if isinstance(self._source, ConnectionPool) and _is_lost_connection(err, conn):
                raise _LostConnection() from err
            raise

    # collections

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None:
        """Create or replace the collection; ``partition_trunc`` sets month/year partitioning."""
        stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
        check_id(stac["id"])
        if self.validator is not None:
            self.validator.validate_collection(stac)
        trunc = PartitionTrunc(partition_trunc).value if partition_trunc else None

        def work(conn: psycopg.Connection) -> None:
            conn.execute("SELECT pgstac.upsert_collection(%s)", (Jsonb(stac),))
            conn.execute("UPDATE pgstac.collections SET partition_trunc = %s WHERE id = %s "
                         "AND partition_trunc IS DISTINCT FROM %s", (trunc, stac["id"], trunc))

        self._run(f"upsert collection {stac['id']}", work)

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        row = self._run(f"get collection {collection_id}", lambda conn: conn.execute(
            "SELECT content FROM pgstac.collections WHERE id = %s", (collection_id,)).fetchone())
        return None if row is None else pystac.Collection.from_dict(row[0], migrate=False)

    def refresh_collection(self, collection_id: str) -> pystac.Collection:
        """Recompute the collection's extent and summaries from its items and store it."""
        collection = self.get_collection(collection_id)
        if collection is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist")
        summary = self._run(f"summarize {collection_id}", lambda conn: self._summarize(conn, collection_id))
        apply_summary(collection, summary)
        self.upsert_collection(collection)
        return collection

    @staticmethod
    def _summarize(conn: psycopg.Connection, collection_id: str) -> ItemSummary:
        row = conn.execute(
            "SELECT count(*), ST_XMin(ST_Extent(geometry)), ST_YMin(ST_Extent(geometry)), "
            "ST_XMax(ST_Extent(geometry)), ST_YMax(ST_Extent(geometry)), min(datetime), max(end_datetime), "
            "array_remove(array_agg(DISTINCT content->'properties'->>'proj:code'), NULL) "
            "FROM pgstac.items WHERE collection = %s", (collection_id,)).fetchone()
        types = conn.execute(
            "SELECT DISTINCT b->>'data_type' FROM pgstac.items i, jsonb_each(i.content->'assets') a, "
            "jsonb_array_elements(CASE WHEN jsonb_typeof(a.value->'bands') = 'array' THEN a.value->'bands' "
            "ELSE '[]'::jsonb END) b WHERE i.collection = %s AND b ? 'data_type'", (collection_id,)).fetchall()
        bbox = list(row[1:5]) if row[0] else None
        return ItemSummary(count=row[0], bbox=bbox, start=row[5], end=row[6], proj_codes=sorted(row[7] or []),
                           data_types=sorted(t for (t,) in types))

    # items

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult:
        """Insert new items, replace changed ones (even across partitions), skip identical ones.

        Items are validated with the catalog's validator unless ``validate=False`` (for items that
        ``item_from_raster(..., validator=...)`` already validated where they were built).
        """
        grouped = _prepare_items(items, self.validator if validate else None)
        self._check_version()
        requested = written = 0
        for collection_id, by_id in grouped.items():
            batch = list(by_id.values())
            for start in range(0, len(batch), self.batch_size):
                chunk = batch[start:start + self.batch_size]
                written += self._run(f"upsert {len(chunk)} items into {collection_id}",
                                     lambda conn, c=chunk, cid=collection_id: self._write_batch(conn, cid, c))
                requested += len(chunk)
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    # staging: per-file activities park items, the chunk writes them in one batch

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int:
        """Park validated items durably under ``stage_id``; ``flush_staged(stage_id)`` writes them.

        A fan-out of one activity per file then costs pgSTAC one batched write per chunk instead
        of one per file; a staged item survives any crash until its flush commits.
        """
        grouped = _prepare_items(items, self.validator if validate else None)
        rows = [(stage_id, cid, iid, Jsonb(stac)) for cid, by_id in grouped.items() for iid, stac in by_id.items()]

        def work(conn: psycopg.Connection) -> int:
            self._ensure_stage(conn)
            with conn.cursor() as cur:
                cur.executemany(_STAGE_PUT, rows)
            return len(rows)

        staged = self._run(f"stage {len(rows)} items", work, pipeline=True)
        self._stage_ready = True  # only once a transaction that created the table committed
        return staged

    def flush_staged(self, stage_id: str) -> UpsertResult:
        """Write the items staged under ``stage_id`` and drop them from the stage, atomically
        (a retried flush after a failure writes them again; after a success it finds nothing)."""
        self._check_version()

        def work(conn: psycopg.Connection) -> UpsertResult:
            self._ensure_stage(conn)
            rows = conn.execute(_STAGE_TAKE, (stage_id,)).fetchall()
            grouped: dict[str, list[dict]] = {}
            for collection_id, content in rows:
                grouped.setdefault(collection_id, []).append(content)
            written = 0
            for collection_id in sorted(grouped):  # lock collections in one order: no deadlock
                batch = grouped[collection_id]
                for start in range(0, len(batch), self.batch_size):
                    written += self._write_batch(conn, collection_id, batch[start:start + self.batch_size])
            conn.execute(_STAGE_EXPIRE)
            return UpsertResult(collection_ids=sorted(grouped), requested=len(rows), written=written,
                                unchanged=len(rows) - written)

        result = self._run(f"flush staged items of {stage_id}", work)
        self._stage_ready = True
        return result

    def _ensure_stage(self, conn: psycopg.Connection) -> None:
        if not self._stage_ready:
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_NAMESPACE,))  # one creator
            conn.execute(_STAGE_DDL)

    def _check_version(self) -> None:
        """Items are dehydrated in Python with pypgstac's code: refuse a pgSTAC of another minor."""
        if self._version_checked:
            return
        from pypgstac import __version__ as pypgstac_version

        version = self._run("pgstac version", lambda conn: conn.execute("SELECT pgstac.get_version()").fetchone()[0])
        if version != "unreleased" and version.split(".")[:2] != pypgstac_version.split(".")[:2]:
            raise PgStacVersionMismatch(f"database pgSTAC {version} does not match pypgstac {pypgstac_version}")
        self._version_checked = True

    def _write_batch(self, conn: psycopg.Connection, collection_id: str, batch: list[dict]) -> int:
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _lock_key(collection_id)))
        meta = conn.execute(_COLLECTION_META, (collection_id,)).fetchone()
        if meta is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist; upsert it first")
        base_item, _key, trunc, base_item_id = meta
        rows = [_dehydrated_row(stac, base_item, base_item_id) for stac in batch]
        conn.execute(_STAGE_TABLE)
        conn.execute("TRUNCATE rmh_items_in")
        with conn.cursor() as cur:
            with cur.copy("COPY rmh_items_in (id, collection, datetime, end_datetime, geojson, content) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            params = {"collection": collection_id, "trunc": trunc}
            cur.execute(_CHECK_PARTITIONS, params)
            cur.execute(_DELETE_CHANGED, params)
            cur.execute(_INSERT)
            inserted = cur.rowcount
        logger.debug("collection %s: %d of %d items written", collection_id, inserted, len(rows))
        return inserted

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        row = self._run(f"get item {item_id}", lambda conn: conn.execute(
            "SELECT pgstac.get_item(%s, %s)", (item_id, collection_id)).fetchone())
        return None if row is None or row[0] is None else pystac.Item.from_dict(row[0], migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.delete_items(collection_id, [item_id]) == 1

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        ids = list(item_ids)
        return self._run(f"delete {len(ids)} items from {collection_id}", lambda conn: conn.execute(
            "DELETE FROM pgstac.items WHERE collection = %s AND id = ANY(%s)", (collection_id, ids)).rowcount)

    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None, datetime: str | None = None,
               limit: int = 100) -> list[pystac.Item]:
        """Items of one collection by bbox and STAC datetime (instant or interval), via ``pgstac.search``."""
        body: dict[str, Any] = {"collections": [collection_id], "limit": limit}
        if bbox is not None:
            body["bbox"] = list(bbox)
        if datetime is not None:
            body["datetime"] = datetime
        result = self._run(f"search {collection_id}", lambda conn: conn.execute(
            "SELECT pgstac.search(%s)", (Jsonb(body),)).fetchone()[0])
        return [pystac.Item.from_dict(f, migrate=False) for f in result.get("features", [])]

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        """Item id -> ``rmh:source_etag`` for every item of the collection (incremental sync)."""
        rows = self._run(f"list etags of {collection_id}", lambda conn: conn.execute(
            "SELECT id, content->'properties'->>%s FROM pgstac.items WHERE collection = %s",
            (SOURCE_ETAG, collection_id)).fetchall())
        return dict(rows)

    def health(self) -> CatalogHealth:
        """pgSTAC version and counts; ``ok=False`` with the reason when unreachable."""
        def work(conn: psycopg.Connection) -> CatalogHealth:
            version = conn.execute("SELECT pgstac.get_version()").fetchone()[0]
            collections = conn.execute("SELECT count(*) FROM pgstac.collections").fetchone()[0]
            items = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()[0]
            return CatalogHealth(backend="pgstac", ok=True, version=version, collections=collections, items=items)

        try:
            return self._run("health", work)
        except (CatalogUnavailable, psycopg.Error) as err:
            return CatalogHealth(backend="pgstac", ok=False, detail=str(err).splitlines()[0])

    def finalize(self) -> None:
        """Nothing to do: pgSTAC serves links and extents itself (``refresh_collection`` for extents)."""


# ------------------------------------------------------------------------------ static catalog


class CatalogStore(Protocol):
    """The static catalog's file I/O seam (local directory here; blob container later).

    Keys are relative POSIX paths. ``write_text`` must be atomic: a reader sees the old or the new
    text, never a part.
    """

    def read_text(self, key: str) -> str | None: ...
    def write_text(self, key: str, text: str) -> None: ...
    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]: ...
    def delete(self, key: str) -> bool: ...


class LocalDirectoryStore:
    """``CatalogStore`` on a local directory: atomic writes by temp file + ``os.replace``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise InvalidItemId(f"store key {key!r} leaves the catalog directory")
        return self.root / key

    def read_text(self, key: str) -> str | None:
        try:
            return self._path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, key: str, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def list_keys(self, prefix: str, *, max_depth: int | None = None) -> Iterator[str]:
        """Keys of the ``.json`` files under ``prefix``, sorted; ``max_depth`` counts key segments."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):
            rel = Path(directory).relative_to(self.root)
            depth = len(rel.parts) + 1
            if max_depth is not None and depth >= max_depth:
                subdirs.clear()
            if max_depth is not None and depth > max_depth:
                continue
            subdirs.sort()
            for name in sorted(files):
                if name.endswith(".json") and not name.startswith("."):
                    yield (rel / name).as_posix()

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False


def _item_matches(stac: Mapping[str, Any], bbox: Sequence[float] | None,
                  start: dt.datetime | None, end: dt.datetime | None) -> bool:
    if bbox is not None:
        west, south, east, north = stac["bbox"][:4]
        b_west, b_south, b_east, b_north = bbox[:4]
        lon_ranges = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
        q_ranges = [(b_west, b_east)] if b_west <= b_east else [(b_west, 180.0), (-180.0, b_east)]
        lon_hit = any(a <= d and c <= b for a, b in lon_ranges for c, d in q_ranges)
        if not lon_hit or south > b_north or north < b_south:
            return False
    item_start, item_end = _item_span(stac)
    return not ((end is not None and item_start > end) or (start is not None and item_end < start))


class StaticCatalog:
    """A self-contained static STAC catalog (pystac-readable) behind a ``CatalogStore``.

    Layout: ``catalog.json``, ``<collection>/collection.json``, ``<collection>/items/<id>.json``.
    Item writes are per-file and atomic, so many threads and processes may write at once; an
    item file already carries its relative ``root``/``parent``/``collection`` links. ``finalize()``
    (run once, after the writers) regenerates every ``collection.json`` (item links, extent,
    summaries) and ``catalog.json`` (child links).
    """

    def __init__(self, store: CatalogStore | str | os.PathLike, *, catalog_id: str = "rmhgeoapi",
                 description: str = "Rasters cataloged by rmhgeoapi", title: str | None = None,
                 validator: StacValidator | None = None) -> None:
        self.store = LocalDirectoryStore(store) if isinstance(store, (str, os.PathLike)) else store
        self.catalog_id, self.description, self.title = catalog_id, description, title
        self.validator = validator

    @staticmethod
    def _collection_key(collection_id: str) -> str:
        return f"{check_id(collection_id)}/collection.json"

    @staticmethod
    def _item_key(collection_id: str, item_id: str) -> str:
        return f"{check_id(collection_id)}/items/{check_id(item_id)}.json"

    def _read(self, key: str) -> dict[str, Any] | None:
        text = self.store.read_text(key)
        return None if text is None else orjson.loads(text)

    def _write(self, key: str, stac: Mapping[str, Any]) -> None:
        self.store.write_text(key, orjson.dumps(stac, option=orjson.OPT_INDENT_2).decode())

    # collections

    def upsert_collection(self, collection: pystac.Collection, *, partition_trunc: PartitionTrunc | str | None = None) -> None:
        """Write ``collection.json`` (item links are added by ``finalize``); partitioning is ignored."""
        stac = collection.to_dict(include_self_link=False, transform_hrefs=False)
        if self.validator is not None:
            self.validator.validate_collection(stac)
        stac["links"] = [link for link in stac.get("links", []) if link.get("rel") not in ("root", "parent", "item", "self")]
        stac["links"] += [{"rel": "root", "href": "../catalog.json", "type": "application/json"},
                          {"rel": "parent", "href": "../catalog.json", "type": "application/json"}]
        previous = self._read(self._collection_key(stac["id"]))
        if previous is not None:
            stac["links"] += [link for link in previous.get("links", []) if link.get("rel") == "item"]
        self._write(self._collection_key(stac["id"]), stac)

    def get_collection(self, collection_id: str) -> pystac.Collection | None:
        stac = self._read(self._collection_key(collection_id))
        return None if stac is None else pystac.Collection.from_dict(stac, migrate=False)

    def _require_collection(self, collection_id: str) -> dict[str, Any]:
        stac = self._read(self._collection_key(collection_id))
        if stac is None:
            raise CollectionNotFound(f"collection {collection_id!r} does not exist; upsert it first")
        return stac

    def _iter_items(self, collection_id: str) -> Iterator[dict[str, Any]]:
        for key in self.store.list_keys(f"{check_id(collection_id)}/items"):
            stac = self._read(key)
            if stac is not None:
                yield stac

    def refresh_collection(self, collection_id: str) -> pystac.Collection:
        """Rewrite ``collection.json`` with item links, extent and summaries from its items."""
        stac = self._require_collection(collection_id)
        items = sorted(self._iter_items(collection_id), key=lambda s: s["id"])
        collection = pystac.Collection.from_dict(stac, migrate=False)
        apply_summary(collection, summarize_items(items))
        out = collection.to_dict(include_self_link=False, transform_hrefs=False)
        out["links"] = [link for link in stac.get("links", []) if link.get("rel") != "item"]
        out["links"] += [{"rel": "item", "href": f"./items/{s['id']}.json", "type": "application/geo+json"}
                         for s in items]
        if self.validator is not None:
            self.validator.validate_collection(out)
        self._write(self._collection_key(collection_id), out)
        return pystac.Collection.from_dict(out, migrate=False)

    # items

    def upsert_items(self, items: Iterable[pystac.Item | Mapping[str, Any]], *, validate: bool = True) -> UpsertResult:
        """Write each item atomically to its own file; identical files are not rewritten."""
        grouped = _prepare_items(items, self.validator if validate else None)
        requested = written = 0
        for collection_id, by_id in grouped.items():
            self._require_collection(collection_id)
            for item_id, stac in by_id.items():
                stac = {**stac, "links": [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "../collection.json", "type": "application/json"},
                ] + [link for link in stac.get("links", []) if link.get("rel") not in ("root", "parent", "collection", "self")]}
                key = self._item_key(collection_id, item_id)
                requested += 1
                if self._read(key) != stac:
                    self._write(key, stac)
                    written += 1
        return UpsertResult(collection_ids=sorted(grouped), requested=requested, written=written,
                            unchanged=requested - written)

    def stage_items(self, stage_id: str, items: Iterable[pystac.Item | Mapping[str, Any]], *,
                    validate: bool = True) -> int:
        """A static catalog writes each item to its own file already: staging is writing."""
        return self.upsert_items(items, validate=validate).requested

    def flush_staged(self, stage_id: str) -> UpsertResult:
        """Nothing is ever staged here (see ``stage_items``)."""
        return UpsertResult(collection_ids=[], requested=0, written=0, unchanged=0)

    def get_item(self, collection_id: str, item_id: str) -> pystac.Item | None:
        stac = self._read(self._item_key(collection_id, item_id))
        return None if stac is None else pystac.Item.from_dict(stac, migrate=False)

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        return self.store.delete(self._item_key(collection_id, item_id))

    def delete_items(self, collection_id: str, item_ids: Iterable[str]) -> int:
        return sum(self.delete_item(collection_id, item_id) for item_id in item_ids)

    def search(self, collection_id: str, *, bbox: Sequence[float] | None = None, datetime: str | None = None,
               limit: int = 100) -> list[pystac.Item]:
        """Items of one collection by bbox and datetime, newest first (pgSTAC's default order)."""
        start, end = parse_datetime_interval(datetime)
        hits = [s for s in self._iter_items(collection_id) if _item_matches(s, bbox, start, end)]
        hits.sort(key=lambda s: (_item_span(s)[0], s["id"]), reverse=True)
        return [pystac.Item.from_dict(s, migrate=False) for s in hits[:limit]]

    def list_item_etags(self, collection_id: str) -> dict[str, str | None]:
        return {s["id"]: s["properties"].get(SOURCE_ETAG) for s in self._iter_items(collection_id)}

    def _collection_ids(self) -> list[str]:
        return sorted(key.split("/")[0] for key in self.store.list_keys("", max_depth=2)
                      if key.endswith("/collection.json"))

    def health(self) -> CatalogHealth:
        try:
            collections = self._collection_ids()
            items = sum(1 for cid in collections for key in self.store.list_keys(f"{cid}/items"))
        except OSError as err:
            return CatalogHealth(backend="static", ok=False, detail=str(err))
        return CatalogHealth(backend="static", ok=True, version=STAC_VERSION, collections=len(collections), items=items)

    def finalize(self) -> None:
        """Regenerate every ``collection.json`` and ``catalog.json`` from what is stored."""
        collections = self._collection_ids()
        for collection_id in collections:
            self.refresh_collection(collection_id)
        catalog = pystac.Catalog(id=self.catalog_id, description=self.description, title=self.title)
        stac = catalog.to_dict(include_self_link=False, transform_hrefs=False)
        stac["links"] = [{"rel": "root", "href": "./catalog.json", "type": "application/json"}] + [
            {"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"} for cid in collections]
        if self.validator is not None:
            messages = self.validator.errors(stac)
            if messages:
                raise CollectionValidationError(f"catalog {self.catalog_id!r} is invalid: {messages[0]}")
        self._write("catalog.json", stac)
