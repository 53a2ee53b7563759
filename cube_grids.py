"""Time and grids of cubes: CF time coordinates decoded (cftime) as RFC 3339 instants, and
source grids normalised to north-up rows with longitudes in −180..180 where the grid allows it."""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from cube_errors import IrregularGrid, UndecodableTime
from cube_models import CubeGrid
import geo_ops
from geo_ops import PathLike

#: Spacing of 1-D coordinates may vary by this fraction of a step and still be a regular grid.
REGULAR_TOLERANCE = 1e-3


def decode_times(path: PathLike, values: Sequence[float], units: str, calendar: str | None
                 ) -> list[str]:
    """CF time values (``<unit> since <epoch>``) as RFC 3339 UTC strings.

    Every CF calendar is decoded by cftime; dates a real calendar lacks (30 February of a
    ``360_day`` calendar) take the last real day of their month, and the calendar is kept in
    the cube's dimension (``calendar``) so nothing is hidden.
    """
    import cftime

    try:
        dates = cftime.num2date(np.asarray(values, dtype="float64"), units,
                                calendar=(calendar or "standard").lower(),
                                only_use_cftime_datetimes=True)
    except (ValueError, TypeError, OverflowError) as err:
        raise UndecodableTime(path, f"time units {units!r} calendar {calendar!r}: {err}") from err
    return [_rfc3339(path, d) for d in np.atleast_1d(dates)]


def _rfc3339(path: PathLike, date: Any) -> str:
    if not 1 <= date.year <= 9999:
        raise UndecodableTime(path, f"year {date.year} is outside what STAC datetimes carry")
    last = (dt.date(date.year + (date.month == 12), date.month % 12 + 1, 1) - dt.timedelta(days=1)).day \
        if date.year < 9999 or date.month < 12 else 31
    real = dt.datetime(date.year, date.month, min(date.day, last), date.hour, date.minute,
                       date.second, tzinfo=dt.timezone.utc)
    return real.isoformat().replace("+00:00", "Z")


def is_time_units(units: str | None) -> bool:
    return bool(units) and " since " in units.lower()


# ----------------------------------------------------------------------------------------------
# Grids: north-up, longitudes in −180..180 where the grid allows it


def normalize_grid(path: PathLike, crs: CRS, transform: Affine, width: int, height: int) -> CubeGrid:
    """The output grid of a source grid: rows flipped to run north to south, and for a
    geographic grid, longitudes moved into −180..180 (a whole-world grid is rolled so its
    western-most column comes first; a grid east of 180° is shifted by 360°; a regional grid
    across the antimeridian keeps its longitudes past 180°)."""
    if transform.b != 0 or transform.d != 0:
        raise IrregularGrid(path, "the grid is rotated; only north-up grids are converted")
    flip = transform.e > 0
    if flip:
        transform = Affine(transform.a, 0, transform.c, 0, -transform.e, transform.f + transform.e * height)
    roll, wrapped = 0, False
    if crs.is_geographic and transform.a > 0:
        transform, roll, wrapped = _wrap_longitudes(transform, width)
    return CubeGrid(crs_wkt=crs.to_wkt(), epsg=geo_ops.crs_epsg(crs), transform=list(transform)[:6],
                    width=width, height=height, flip_rows=flip, roll_columns=roll, wrapped=wrapped)


def _wrap_longitudes(t: Affine, width: int) -> tuple[Affine, int, bool]:
    west, dx = t.c, t.a
    east = west + dx * width
    if -180 - dx / 2 <= west and east <= 180 + dx / 2:
        return t, 0, False
    if abs(dx * width - 360) <= dx / 2:  # the whole world: roll the western-most column first
        edges = (west + dx * np.arange(width) + 180 + dx / 2) % 360 - 180 - dx / 2
        start = int(np.argmin(edges))
        return Affine(dx, 0, float(edges[start]), 0, t.e, t.f), -start, True
    shift = -360.0 * math.floor((west + 180 + dx / 2) / 360)
    return Affine(dx, 0, west + shift, 0, t.e, t.f), 0, shift != 0


def to_output(grid: CubeGrid, data: np.ndarray) -> np.ndarray:
    """A source slice on the output grid: rows flipped and columns rolled as planned."""
    if grid.flip_rows:
        data = data[::-1, :]
    if grid.roll_columns:
        data = np.roll(data, grid.roll_columns, axis=1)
    return np.ascontiguousarray(data)


def grid_from_coordinates(path: PathLike, x: np.ndarray, y: np.ndarray, crs: CRS) -> CubeGrid:
    """The grid of 1-D cell-centre coordinates (evenly spaced, else ``IrregularGrid``)."""
    for name, values in (("x", x), ("y", y)):
        if values.size < 2:
            raise IrregularGrid(path, f"the {name} coordinate has {values.size} value(s)")
        steps = np.diff(values.astype("float64"))
        if steps[0] == 0 or not np.allclose(steps, steps[0], rtol=0, atol=abs(steps[0]) * REGULAR_TOLERANCE):
            raise IrregularGrid(path, f"the {name} coordinate is not evenly spaced "
                                f"(steps {steps.min():g} to {steps.max():g})")
    dx = (float(x[-1]) - float(x[0])) / (x.size - 1)
    dy = (float(y[-1]) - float(y[0])) / (y.size - 1)
    if dx < 0:
        raise IrregularGrid(path, "the x coordinate decreases (east to west)")
    transform = Affine(dx, 0, float(x[0]) - dx / 2, 0, dy, float(y[0]) - dy / 2)
    return normalize_grid(path, crs, transform, int(x.size), int(y.size))
