"""The footprint of a pixel grid in longitude/latitude: a GeoJSON geometry and a bbox that handle
the antimeridian, the poles and grids whose edge leaves the globe (a geostationary disk).
(``footprints.py`` is something else: the catalog's items as GeoJSON for the dashboard's map.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from rasterio.crs import CRS

from raster_crs import pixels_to_lonlat, to_lonlat


def edge_pixels(width: int, height: int, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates around the outer edge, clockwise from the top-left corner, closed."""
    steps = np.arange(per_edge) / per_edge
    cols = np.concatenate([width * steps, np.full(per_edge, width), width * (1 - steps),
                           np.zeros(per_edge), [0.0]])
    rows = np.concatenate([np.zeros(per_edge), height * steps, np.full(per_edge, height),
                           height * (1 - steps), [0.0]])
    return cols, rows


def _contains_pole(wkt: str, transform: Affine, width: int, height: int) -> int:
    """+1 / -1 when the north / south pole lies inside a projected grid, else 0."""
    for sign in (1, -1):
        x, y = to_lonlat(wkt).transform(0.0, 90.0 * sign, direction=pyproj.enums.TransformDirection.INVERSE,
                                         errcheck=False)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        col, row = ~transform @ (x, y)
        if -1e-6 <= col <= width + 1e-6 and -1e-6 <= row <= height + 1e-6:
            return sign
    return 0


def _unwrap(lons: Sequence[float]) -> list[float]:
    """Longitudes made continuous (no jump over 180 degrees between neighbours)."""
    out = [float(lons[0])]
    for lon in lons[1:]:
        out.append(float(lon) + 360.0 * round((out[-1] - lon) / 360.0))
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
    distances = [abs((x2 - x1) * (y1 - y) - (x1 - x) * (y2 - y1)) / length if length
                 else math.hypot(x - x1, y - y1) for x, y in points[1:-1]]
    index = max(range(len(distances)), key=distances.__getitem__)
    if distances[index] <= tolerance:
        return [points[0], points[-1]]
    left = _simplify(points[: index + 2], tolerance)
    return left[:-1] + _simplify(points[index + 1:], tolerance)


def _drop_collinear(pts: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Drop ring vertices (cyclic) within ``tolerance`` of the line through their neighbours."""
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


def _ccw_ring(ring: list[tuple[float, float]], tolerance: float = 1e-6) -> list[list[float]]:
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


def _clamped_bbox(west: float, south: float, east: float, north: float) -> list[float]:
    return [round(min(180.0, max(-180.0, west)), 9), round(min(90.0, max(-90.0, south)), 9),
            round(min(180.0, max(-180.0, east)), 9), round(min(90.0, max(-90.0, north)), 9)]


def _box(west: float, south: float, east: float, north: float) -> tuple[dict[str, Any], list[float]]:
    ring = [(west, south), (east, south), (east, north), (west, north)]
    return {"type": "Polygon", "coordinates": [_ccw_ring(ring)]}, _clamped_bbox(west, south, east, north)


def _ring_footprint(lons: list[float], lats: list[float], tolerance: float
                    ) -> tuple[dict[str, Any], list[float]]:
    """Geometry and bbox of a lon/lat edge ring, split at the antimeridian when it crosses."""
    ulons = _unwrap(lons)
    south, north = min(lats), max(lats)
    if max(ulons) - min(ulons) >= 360.0 - 1e-9:
        return _box(-180.0, south, 180.0, north)
    shift = -360.0 * math.floor((min(ulons) + 180.0) / 360.0)
    ring = [(x + shift, y) for x, y in zip(ulons, lats)]
    west, east = min(ulons) + shift, max(ulons) + shift
    if east <= 180.0:
        return ({"type": "Polygon", "coordinates": [_ccw_ring(ring, tolerance)]},
                _clamped_bbox(west, south, east, north))
    clipped = [[(x - offset, y) for x, y in _clip_ring(ring, lo, lo + 360.0)]
               for lo, offset in ((-180.0, 0.0), (180.0, 360.0))]
    parts = [_ccw_ring(part, tolerance) for part in clipped if len(set(part)) >= 3]
    return ({"type": "MultiPolygon", "coordinates": [[p] for p in parts]},
            _clamped_bbox(west, south, east - 360.0, north))


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Monotone-chain convex hull (counter-clockwise)."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        hull: list[tuple[float, float]] = []
        for p in seq:
            while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                      - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) <= 0:
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return half(pts) + half(pts[::-1])


def _sampled_footprint(wkt: str, transform: Affine, width: int, height: int, densify: int
                       ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """Convex hull of a grid of sample points that map to the globe (a geostationary disk)."""
    n = densify * 2
    cols, rows = np.meshgrid(np.linspace(0, width, n + 1), np.linspace(0, height, n + 1))
    lons, lats = pixels_to_lonlat(wkt, transform, cols.ravel(), rows.ravel())
    ok = np.isfinite(lons) & np.isfinite(lats)
    if ok.sum() < 3:
        return None, None
    points = list(zip(lons[ok].tolist(), lats[ok].tolist()))
    west, east, south, north = lons[ok].min(), lons[ok].max(), lats[ok].min(), lats[ok].max()
    if east - west > 180.0:
        return _box(-180.0, south, 180.0, north)
    hull = _convex_hull(points)
    return {"type": "Polygon", "coordinates": [_ccw_ring(hull)]}, _clamped_bbox(west, south, east, north)


def footprint(crs: CRS | None, transform: Affine, width: int, height: int, *, densify: int = 21
              ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """GeoJSON geometry and bbox ``[west, south, east, north]`` in EPSG:4326 of a pixel grid.

    The grid's outer edge is densified (``densify`` points per edge) in pixel space, so rotated
    grids are exact, and simplified to half a pixel. A footprint that crosses the antimeridian is
    a MultiPolygon with ``west > east``; one that holds a pole reaches +/-90 over all longitudes;
    when the edge leaves the projection's valid area (a geostationary full disk) it is the convex
    hull of a grid of sample points that do map to the globe. ``(None, None)`` without a CRS or
    when no part of the grid maps to the globe.
    """
    if crs is None:
        return None, None
    wkt = crs.to_wkt()
    pole = 0 if crs.is_geographic else _contains_pole(wkt, transform, width, height)
    lons, lats = pixels_to_lonlat(wkt, transform, *edge_pixels(width, height, densify))
    finite = np.isfinite(lons) & np.isfinite(lats)
    if pole and finite.any():
        south, north = (float(lats[finite].min()), 90.0) if pole > 0 else (-90.0, float(lats[finite].max()))
        return _box(-180.0, south, 180.0, north)
    if finite.all():
        span_lat = (lats.max() - lats.min()) / height
        ulons = _unwrap(lons.tolist())
        tolerance = max(1e-9, 0.5 * min(span_lat, (max(ulons) - min(ulons)) / width))
        return _ring_footprint(lons.tolist(), lats.tolist(), tolerance)
    return _sampled_footprint(wkt, transform, width, height, densify)
