"""Coordinate reference systems: parsing text a client may send without touching a file or the
network, the facts of a CRS (EPSG code, AUTHORITY:CODE, WKT2, PROJJSON; cached per CRS), and
points and pixels of a grid (its edge among them) as longitude/latitude.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from raster_errors import InvalidOption


#: Longest CRS text accepted (a WKT2 with a long history fits in a few KB).
MAX_CRS_TEXT = 16 * 1024


_AUTHORITY_CODE = re.compile(r"^([A-Za-z][A-Za-z0-9_]{0,31}):([A-Za-z0-9_]{1,32})$")


_WKT_KEYWORDS = re.compile(
    r"^(PROJCS|GEOGCS|GEOCCS|COMPD_CS|PROJCRS|PROJECTEDCRS|GEOGCRS|GEOGRAPHICCRS|GEODCRS|"
    r"GEODETICCRS|BOUNDCRS|COMPOUNDCRS)\s*[\[(]", re.IGNORECASE)


#: PROJ string parameters that name files (init files, grids): never taken from a request.
_PROJ_FILE_PARAMS = frozenset({"init", "nadgrids", "geoidgrids", "hgridshift", "vgridshift",
                               "grids", "file", "catalog", "gridlist"})


def parse_crs(value: str | int | CRS) -> CRS:
    """A ``CRS`` from text a client may send, without touching a file or the network.

    Accepted: an EPSG code (``3857``, ``"EPSG:3857"``), ``AUTHORITY:CODE`` (``"ESRI:102100"``,
    ``"OGC:CRS84"``), WKT1/WKT2, PROJJSON and PROJ strings without file parameters. GDAL's
    ``SetFromUserInput`` (``CRS.from_user_input``) is never used: it reads files and fetches URLs.
    """
    if isinstance(value, CRS):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidOption(str(value), "a CRS must be text or an EPSG code")
    text = str(value).strip()
    if len(text) > MAX_CRS_TEXT:
        raise InvalidOption(text[:40] + "...", f"CRS text is {len(text)} characters; the limit is {MAX_CRS_TEXT}")
    try:
        crs = _crs_from_text(text)
    except (CRSError, pyproj.exceptions.CRSError, ValueError) as err:
        raise InvalidOption(text[:200], f"unusable CRS: {str(err).splitlines()[0][:300]}") from None
    if not (crs.is_projected or crs.is_geographic):
        raise InvalidOption(text[:200], "a target CRS must be projected or geographic")
    return crs


def _crs_from_text(text: str) -> CRS:
    if text.isdigit():
        return CRS.from_epsg(int(text))
    match = _AUTHORITY_CODE.match(text)
    if match:
        authority, code = match.group(1).upper(), match.group(2)
        return CRS.from_epsg(int(code)) if authority == "EPSG" and code.isdigit() else \
            CRS.from_authority(authority, code)
    if _WKT_KEYWORDS.match(text):
        return CRS.from_wkt(text)
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict) or "type" not in data:
            raise ValueError("PROJJSON must be a JSON object with a 'type'")
        return CRS.from_wkt(pyproj.CRS.from_json_dict(data).to_wkt())
    if text.startswith("+"):
        keys = {part.lstrip("+").split("=", 1)[0].lower() for part in text.split()}
        if keys & _PROJ_FILE_PARAMS:
            raise ValueError(f"PROJ parameters naming files are not accepted: {sorted(keys & _PROJ_FILE_PARAMS)}")
        return CRS.from_proj4(text)
    raise ValueError("not an EPSG code, AUTHORITY:CODE, WKT, PROJJSON or PROJ string "
                     "(file names and URLs are never read)")


@lru_cache(maxsize=256)
def crs_facts(wkt: str) -> tuple[int | None, str, dict[str, Any] | None]:
    """EPSG code (None when not an EPSG CRS), WKT2 and PROJJSON of a CRS, cached by its WKT."""
    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg(confidence_threshold=100)
    try:
        projjson = crs.to_dict(projjson=True)
    except CRSError:
        projjson = None
    return epsg, crs.to_wkt(version="WKT2_2019"), projjson


def crs_epsg(crs: CRS | None) -> int | None:
    """The EPSG code of ``crs`` when it is exactly an EPSG CRS, else None."""
    return crs_facts(crs.to_wkt())[0] if crs else None


def crs_compact_text(crs: CRS) -> str:
    """Compact, lossless text for a CRS: ``"EPSG:n"`` when it is exactly that, else WKT2."""
    epsg = crs_epsg(crs)
    return f"EPSG:{epsg}" if epsg else crs.to_wkt(version="WKT2_2019")


#: Semi-major axes (metres) of the Earth's ellipsoids and spheres, as PROJ tells the Earth from
#: other bodies; a CRS on any other ellipsoid is of another body of the solar system.
EARTH_SEMI_MAJOR = (6_300_000.0, 6_400_000.0)

#: Bodies of the solar system a planetary CRS names (in its datum, ellipsoid or name, e.g.
#: "D_MARS", "Mars (2015)", "EUROPA_localRadius"), with the solar-system extension's
#: ``ssys:target_class`` (the IVOA EPN-TAP target classes).
BODIES: dict[str, str] = {
    **dict.fromkeys(("Mercury", "Venus", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"), "planet"),
    **dict.fromkeys(("Ceres", "Pluto", "Eris", "Haumea", "Makemake"), "dwarf_planet"),
    **dict.fromkeys(("Moon", "Phobos", "Deimos", "Io", "Europa", "Ganymede", "Callisto", "Amalthea",
                     "Mimas", "Enceladus", "Tethys", "Dione", "Rhea", "Titan", "Hyperion", "Iapetus",
                     "Phoebe", "Miranda", "Ariel", "Umbriel", "Titania", "Oberon", "Triton", "Charon"),
                    "satellite"),
    **dict.fromkeys(("Vesta", "Eros", "Gaspra", "Ida", "Itokawa", "Lutetia", "Bennu", "Ryugu", "Psyche",
                     "Steins", "Mathilde"), "asteroid"),
    **dict.fromkeys(("Churyumov-Gerasimenko", "Tempel", "Wild", "Hartley"), "comet"),
}
_BODY_NAMES = {name.lower(): name for name in BODIES}
_LUNAR = {"lunar": "Moon", "luna": "Moon", "selene": "Moon"}


@lru_cache(maxsize=256)
def celestial_body(wkt: str) -> str | None:
    """The body of the solar system a CRS is on, None for the Earth (or a CRS on no ellipsoid):
    the name its datum, ellipsoid or own name gives ("Mars"), else the datum's name."""
    crs = pyproj.CRS.from_wkt(wkt)
    ellipsoid = crs.ellipsoid
    if ellipsoid is None or EARTH_SEMI_MAJOR[0] <= ellipsoid.semi_major_metre <= EARTH_SEMI_MAJOR[1]:
        return None
    datum = crs.datum.name if crs.datum is not None else ""
    for text in (datum, ellipsoid.name, crs.name):
        for word in re.split(r"[^A-Za-z-]+", text or ""):
            name = _BODY_NAMES.get(word.lower()) or _LUNAR.get(word.lower())
            if name:
                return name
    cleaned = re.sub(r"^D_", "", datum or ellipsoid.name or "").replace("_", " ").strip()
    return cleaned or "unknown body"


def body_class(body: str | None) -> str | None:
    """The solar-system extension's ``ssys:target_class`` of a body, when it is a known one."""
    return BODIES.get(body) if body else None


def _lon_first(crs: pyproj.CRS) -> pyproj.CRS:
    """``crs`` with its axes in the order a GeoTIFF's coordinates have (x = longitude or easting):
    PROJ's ``always_xy`` does not reorder the planetary CRSs here, so the order is made explicit."""
    axes = crs.axis_info
    if len(axes) < 2 or axes[0].direction.lower() not in ("north", "south"):
        return crs
    data = crs.to_json_dict()
    system = data.get("coordinate_system")
    if not system or len(system.get("axis", [])) != len(axes):
        return crs
    system["axis"] = [system["axis"][1], system["axis"][0], *system["axis"][2:]]
    return pyproj.CRS.from_json_dict(data)


def planetocentric_crs(crs: pyproj.CRS) -> pyproj.CRS:
    """Longitude (east) and planetocentric latitude on the datum of a CRS of another body: the
    lon/lat a footprint of that body is written in (on a sphere the same as its geographic
    CRS; on an ellipsoid the latitude measured at the body's centre, as the IAU's "ocentric"
    CRSs do), longitude first."""
    geodetic = crs.geodetic_crs or crs
    degree = 'ANGLEUNIT["degree",0.0174532925199433]'
    return pyproj.CRS.from_wkt(
        f'GEODCRS["{geodetic.datum.name} / planetocentric",{geodetic.datum.to_wkt("WKT2_2019")},'
        f'{geodetic.prime_meridian.to_wkt("WKT2_2019")},CS[spherical,2],'
        f'AXIS["planetocentric longitude (V)",east,ORDER[1],{degree}],'
        f'AXIS["planetocentric latitude (U)",north,ORDER[2],{degree}]]')


@lru_cache(maxsize=64)
def to_lonlat(wkt: str) -> pyproj.Transformer:
    """A cached transformer from the CRS ``wkt`` to longitude/latitude, x = lon: EPSG:4326 for a
    CRS of the Earth, the body's planetocentric lon/lat (``planetocentric_crs``) for a CRS of
    another body (Mars, the Moon, Europa...), between which PROJ has no transformation."""
    crs = pyproj.CRS.from_wkt(wkt)
    if celestial_body(wkt) is None:
        return pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return pyproj.Transformer.from_crs(_lon_first(crs), planetocentric_crs(crs))


@lru_cache(maxsize=64)
def body_geod(wkt: str) -> pyproj.Geod:
    """Geodesics on the ellipsoid distances are measured on: WGS 84 for the Earth, the body's
    own for a CRS of another body (a Mars pixel measured in Mars metres)."""
    ellipsoid = pyproj.CRS.from_wkt(wkt).ellipsoid
    if celestial_body(wkt) is None or ellipsoid is None:
        return pyproj.Geod(ellps="WGS84")
    return pyproj.Geod(a=ellipsoid.semi_major_metre, b=ellipsoid.semi_minor_metre)


def lonlat(wkt: str, xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points of the CRS ``wkt`` as lon/lat; points outside the projection's domain are inf."""
    lons, lats = to_lonlat(wkt).transform(np.asarray(xs, dtype="float64"),
                                           np.asarray(ys, dtype="float64"), errcheck=False)
    return np.asarray(lons, dtype="float64"), np.asarray(lats, dtype="float64")


def pixels_to_lonlat(wkt: str, transform: Any, cols: np.ndarray, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions as lon/lat, through an ``Affine`` geotransform or a pixel mapping of a
    raster placed by GCPs or RPCs (``georeferencing.PixelMapping``: ``forward(cols, rows)``)."""
    if not isinstance(transform, Affine):
        return lonlat(wkt, *transform.forward(cols, rows))
    a, b, c, d, e, f = transform[:6]
    return lonlat(wkt, a * cols + b * rows + c, d * cols + e * rows + f)


def crs_code(crs: CRS | None) -> str | None:
    """``AUTHORITY:CODE`` of a CRS when it has one (EPSG, ESRI, OGC...), else None."""
    authority = crs.to_authority() if crs is not None else None
    return f"{authority[0]}:{authority[1]}" if authority else None


def edge_pixels(width: int, height: int, per_edge: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates around the outer edge, clockwise from the top-left corner, closed."""
    steps = np.arange(per_edge) / per_edge
    cols = np.concatenate([width * steps, np.full(per_edge, width), width * (1 - steps),
                           np.zeros(per_edge), [0.0]])
    rows = np.concatenate([np.zeros(per_edge), height * steps, np.full(per_edge, height),
                           height * (1 - steps), [0.0]])
    return cols, rows
