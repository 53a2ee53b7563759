"""The footprint of a pixel grid in longitude/latitude: a GeoJSON geometry and a bbox that handle
the antimeridian, the poles and grids whose edge leaves the globe (a geostationary disk).
(``footprints.py`` is something else: the catalog's items as GeoJSON for the dashboard's map.)
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import antimeridian
import numpy as np
import pyproj
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import MultiPolygon, Polygon

from raster_crs import edge_pixels, pixels_to_lonlat, to_lonlat


@lru_cache(maxsize=256)
def maps_to_lonlat(wkt: str) -> bool:
    """Whether PROJ has a transformation from the CRS ``wkt`` to longitude/latitude (of the Earth,
    or of the body a planetary CRS is on): not for an engineering or local CRS (``LOCAL_CS``,
    ``ENGCRS``), which has no place on any globe, so a grid in it has no footprint (and no grid
    in another CRS)."""
    try:
        to_lonlat(wkt)
    except pyproj.exceptions.ProjError:
        return False
    return True


def _contains_pole(wkt: str, transform: Affine, width: int, height: int) -> int:
    """+1 / -1 when the north / south pole lies inside a projected grid, else 0."""
    for sign in (1, -1):
        x, y = to_lonlat(wkt).transform(0.0, 90.0 * sign, direction=pyproj.enums.TransformDirection.INVERSE,
                                         errcheck=False)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        col, row = (~transform @ (x, y)) if isinstance(transform, Affine) else transform.inverse(x, y)
        if -1e-6 <= col <= width + 1e-6 and -1e-6 <= row <= height + 1e-6:
            return sign
    return 0


def _box(west: float, south: float, east: float, north: float) -> tuple[dict[str, Any], list[float]]:
    """A lon/lat box as a GeoJSON polygon (counter-clockwise) and its bbox."""
    return _geojson(shapely.box(west, south, east, north)), _bbox(west, south, east, north)


def _bbox(west: float, south: float, east: float, north: float) -> list[float]:
    """``[west, south, east, north]`` clamped to the globe, to 1e-9 degrees."""
    return [round(min(180.0, max(-180.0, west)), 9), round(min(90.0, max(-90.0, south)), 9),
            round(min(180.0, max(-180.0, east)), 9), round(min(90.0, max(-90.0, north)), 9)]


def _geojson(geometry: Polygon | MultiPolygon) -> dict[str, Any]:
    """GeoJSON of a lon/lat geometry: exterior rings counter-clockwise (RFC 7946), coordinates
    to 1e-9 degrees, as lists (what JSON gives back, so a stored copy compares equal)."""
    geometry = shapely.transform(shapely.orient_polygons(geometry), lambda xy: np.round(xy, 9))
    if isinstance(geometry, Polygon):
        return {"type": "Polygon", "coordinates": _rings(geometry)}
    return {"type": "MultiPolygon", "coordinates": [_rings(part) for part in geometry.geoms]}


def _rings(polygon: Polygon) -> list[list[list[float]]]:
    return [np.asarray(ring.coords).tolist() for ring in (polygon.exterior, *polygon.interiors)]


def _lon_lat_footprint(polygon: Polygon, lons: np.ndarray, lats: np.ndarray) -> tuple[dict[str, Any], list[float]]:
    """Geometry and bbox of ``polygon``, whose longitudes are continuous (they may pass ±180
    but span less than 360 degrees), and of the points ``lons``/``lats`` it was made from (the
    bbox holds every point, not just the polygon's simplified vertices). Split at the antimeridian
    by the ``antimeridian`` package when it crosses: a MultiPolygon with ``west > east``."""
    shift = -360.0 * math.floor((float(lons.min()) + 180.0) / 360.0)
    west, east = float(lons.min()) + shift, float(lons.max()) + shift
    south, north = float(lats.min()), float(lats.max())
    polygon = shapely.affinity.translate(polygon, xoff=shift) if shift else polygon
    if east <= 180.0:
        return _geojson(polygon), _bbox(west, south, east, north)
    split = antimeridian.fix_polygon(polygon, fix_winding=True, great_circle=False)
    return _geojson(split), _bbox(west, south, east - 360.0, north)


def _ring_footprint(lons: np.ndarray, lats: np.ndarray, tolerance: float) -> tuple[dict[str, Any], list[float]]:
    """Footprint of a grid whose whole edge maps to the globe: its edge ring (longitudes made
    continuous), simplified to ``tolerance`` degrees (half a pixel), split at the antimeridian."""
    if lons.max() - lons.min() >= 360.0 - 1e-9:
        return _box(-180.0, float(lats.min()), 180.0, float(lats.max()))
    ring = Polygon(np.column_stack([lons, lats])).simplify(tolerance, preserve_topology=True)
    return _lon_lat_footprint(ring, lons, lats)


def _valid_outline(wkt: str, transform: Affine, width: int, height: int, lines: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of the outline of the part of a grid that maps to the globe (a geostationary
    disk): along ``lines`` + 1 rows and as many columns of pixel space, each position where the
    line goes on or off the globe, found by bisection to a quarter of a pixel on the side that
    maps, and every point of the grid's edge that maps. Bounded work: a few hundred points per
    bisection step, whatever the grid's size."""
    fixed, lows, highs, along_rows = _crossings(wkt, transform, width, height, lines)
    steps = max(1, math.ceil(math.log2(max(width, height) / lines / 0.25)))
    for _ in range(steps):
        middle = (lows + highs) / 2
        lon, lat = _on_lines(wkt, transform, middle, fixed, along_rows)
        maps = np.isfinite(lon) & np.isfinite(lat)
        lows, highs = np.where(maps, middle, lows), np.where(maps, highs, middle)
    lon, lat = _on_lines(wkt, transform, lows, fixed, along_rows)
    edge_lon, edge_lat = pixels_to_lonlat(wkt, transform, *edge_pixels(width, height, lines))
    lon, lat = np.concatenate([lon, edge_lon]), np.concatenate([lat, edge_lat])
    keep = np.isfinite(lon) & np.isfinite(lat)
    return lon[keep], lat[keep]


def _on_lines(wkt: str, transform: Affine, moving: np.ndarray, fixed: np.ndarray, along_rows: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of positions on sampled lines: ``moving`` along a row (col) or a column (row)."""
    return pixels_to_lonlat(wkt, transform, np.where(along_rows, moving, fixed), np.where(along_rows, fixed, moving))


def _crossings(wkt: str, transform: Affine, width: int, height: int, lines: int) -> tuple[np.ndarray, ...]:
    """Where the sampled rows and columns of a grid go on or off the globe: per step between two
    samples of a line, the line's fixed coordinate, the moving coordinate at the sample that maps
    (``lows``) and at the one that does not (``highs``), and whether the line is a row."""
    fractions = np.linspace(0.0, 1.0, lines + 1)
    cols, rows = np.meshgrid(fractions * width, fractions * height)
    lon, lat = pixels_to_lonlat(wkt, transform, cols.ravel(), rows.ravel())
    maps = (np.isfinite(lon) & np.isfinite(lat)).reshape(cols.shape)
    parts = []
    for along_rows, grid_maps, moving, fixed in ((True, maps, cols, rows), (False, maps.T, rows.T, cols.T)):
        i, j = np.nonzero(grid_maps[:, :-1] != grid_maps[:, 1:])
        first = grid_maps[i, j]
        parts.append((fixed[i, j], np.where(first, moving[i, j], moving[i, j + 1]),
                      np.where(first, moving[i, j + 1], moving[i, j]), np.full(i.size, along_rows)))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _outline_footprint(wkt: str, transform: Affine, width: int, height: int, lines: int
                       ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """Footprint of a grid whose edge leaves the globe: the convex hull of its valid outline
    (``_valid_outline``), longitudes made continuous around the central meridian of the points."""
    lons, lats = _valid_outline(wkt, transform, width, height, lines)
    if lons.size < 3:
        return None, None
    centre = math.degrees(math.atan2(np.sin(np.radians(lons)).mean(), np.cos(np.radians(lons)).mean()))
    lons = centre + (lons - centre + 180.0) % 360.0 - 180.0
    if lons.max() - lons.min() >= 360.0 - 1e-9:
        return _box(-180.0, float(lats.min()), 180.0, float(lats.max()))
    hull = shapely.MultiPoint(np.column_stack([lons, lats])).convex_hull
    if not isinstance(hull, Polygon):
        return None, None
    return _lon_lat_footprint(hull, lons, lats)


def footprint(crs: CRS | None, transform: Any, width: int, height: int, *, densify: int = 21
              ) -> tuple[dict[str, Any], list[float]] | tuple[None, None]:
    """GeoJSON geometry and bbox ``[west, south, east, north]`` in EPSG:4326 of a pixel grid.

    The grid's outer edge is densified (``densify`` points per edge) in pixel space, so rotated
    grids are exact, and simplified to half a pixel. A footprint that crosses the antimeridian is
    a MultiPolygon with ``west > east``; one that holds a pole reaches +/-90 over all longitudes;
    when the edge leaves the projection's valid area (a geostationary full disk) it is the convex
    hull of the outline of the part that maps to the globe, found to a quarter of a pixel, so it
    holds every pixel that maps. ``transform`` is the grid's ``Affine``, or for a raster placed
    by GCPs or RPCs its ``georeferencing.PixelMapping`` (``crs`` then the mapping's). ``(None, None)`` without a CRS, for a CRS with no way to lon/lat
    (``maps_to_lonlat``), or when no part of the grid maps to the globe.
    """
    if crs is None:
        return None, None
    wkt = crs.to_wkt()
    if not maps_to_lonlat(wkt):
        return None, None
    pole = 0 if crs.is_geographic else _contains_pole(wkt, transform, width, height)
    lons, lats = pixels_to_lonlat(wkt, transform, *edge_pixels(width, height, densify))
    finite = np.isfinite(lons) & np.isfinite(lats)
    if pole:
        if not finite.all():
            lons, lats = _valid_outline(wkt, transform, width, height, 4 * densify)
        if lats.size == 0:
            return None, None
        south, north = (float(lats.min()), 90.0) if pole > 0 else (-90.0, float(lats.max()))
        return _box(-180.0, south, 180.0, north)
    if finite.all():
        lons = np.unwrap(lons, period=360.0)
        tolerance = max(1e-9, 0.5 * min((lats.max() - lats.min()) / height, (lons.max() - lons.min()) / width))
        return _ring_footprint(lons, lats, tolerance)
    return _outline_footprint(wkt, transform, width, height, 4 * densify)
