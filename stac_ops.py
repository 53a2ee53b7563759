"""STAC items for rasters: composed from geo_ops' raster facts, in the order data flows:

* **Items from rasters** (``item_from_raster``): ``geo_ops.read_header`` reads one raster's facts
  (header, and a decimated read for statistics) and small ``get_*`` helpers turn them into the
  pieces of a STAC 1.1 item: geometry, projection v2.0.0, bands twice (STAC 1.1 ``bands`` with
  the core fields, read by STAC Browser and titiler's item reader, and raster v1.1.0
  ``raster:bands``, read by titiler's mosaic reader and pystac), file v2.1.0, eo v2.0.0 (RGB
  bands), render v2.0.0 (``renders``: rescale and colormap a tiler can use),
  alternate-assets v1.2.0 (when an asset has alternate hrefs), a ``thumbnail`` asset.
* **Hrefs** (``relative_href``): the static catalog writes local paths inside the storage
  directory relative to each item file (a relocatable catalog); http(s) URLs (Azure blobs, or
  ``storage.BlobStore.public_href`` under a configured base URL) and GDAL virtual paths are left
  as they are.
* **Queryables** (``QUERYABLES``): the JSON-schema types of our item properties, for pgSTAC's
  queryables and the static catalog's ``queryables.json``.
* **Sync**: ``plan_sync`` for incremental sync by source ETag.

Offline validation is ``stac_validation`` (``StacValidator``); collections, their extents and
summaries are ``stac_collections``; the STAC layer's errors are ``stac_errors`` (reachable here
too, as ``stac_ops.<Error>``).

The catalog backends that store all this (pgSTAC, the static catalog) are behind ``catalogs.py``.

Item properties of our own (prefix ``rmh:``, described by ``QUERYABLES``):

* ``rmh:source_etag``: ETag of the source blob, compared by incremental sync.
* ``rmh:source_container`` / ``rmh:source_blob``: where the source blob lives.
* ``rmh:datetime_source``: which rule chose ``datetime``: ``file-metadata``,
  ``blob-last-modified`` or ``request``.
* ``rmh:has_data``: ``false`` when every pixel is nodata (statistics then hold only
  ``valid_percent: 0``).
* ``rmh:data_type`` / ``rmh:band_count``: the bands' data type (``other`` when they differ) and
  how many there are, copied from the data asset so a catalog can filter on them.
* ``rmh:imported_from`` / ``rmh:import_digest``: an item brought in by ``import_stac``: where it
  was read (``container/blob``, with the NDJSON line or ItemCollection feature) and the digest of
  what it was made from (``stac_import.import_digest``; a rerun skips it while that is unchanged).

Item ids (``item_id_for_blob``): ``<container>~<blob path, '/' as '~'>`` of the source blob; a
tile adds ``~<tile name>``; a conversion into an output container other than the configured one
adds ``~~<output container>`` (``~~`` never occurs in the other ids), so two conversions of one
source into two containers are two items.

Datetime order (``get_datetime``): the request's ``datetime_override`` (what the user gives
wins), else the file's own metadata (``geo_ops.file_datetime``), else the source blob's
last-modified time; with none of them ``MissingDatetime`` is raised.

This module never reads the environment and never imports ``azure.*``; callers pass schema
directories, hrefs and storage roots in.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from affine import Affine
from pydantic import BaseModel
from rasterio.io import DatasetReaderBase

import geo_ops
from iso_times import as_utc  # noqa: F401  (stac_collections and cubes read it here)
# The STAC layer's errors, also reachable here as stac_ops.<Error> (function_app's error table and
# the activities catch stac_ops.StacOpsError).
from stac_errors import (CollectionValidationError, FootprintError, InvalidItemId,  # noqa: F401
                         ItemValidationError, MissingDatetime, NotGeoreferenced, RasterOpenError,
                         RasterReadError, SchemaUnavailable, StacOpsError)
from stac_validation import STAC_VERSION, StacValidator  # noqa: F401  (STAC_VERSION: the version items are written in)

PROJECTION_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
#: raster v1.1.0, for ``raster:bands`` (v2.0.0 moves its fields into ``bands`` and forbids
#: ``raster:bands``, which titiler-pgstac's mosaic reader and pystac read).
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE_EXT = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
RENDER_EXT = "https://stac-extensions.github.io/render/v2.0.0/schema.json"
ALTERNATE_EXT = "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json"
#: The solar-system extension: ``ssys:targets`` / ``ssys:target_class`` of a raster of another body.
SSYS_EXT = "https://stac-extensions.github.io/ssys/v1.1.0/schema.json"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"
PNG_MEDIA_TYPE = "image/png"

SOURCE_ETAG = "rmh:source_etag"
SOURCE_CONTAINER = "rmh:source_container"
SOURCE_BLOB = "rmh:source_blob"
DATETIME_SOURCE = "rmh:datetime_source"
HAS_DATA = "rmh:has_data"
DATA_TYPE = "rmh:data_type"
BAND_COUNT = "rmh:band_count"
IMPORTED_FROM = "rmh:imported_from"  # import_stac: where the item was read (container/blob, line or feature)
IMPORT_DIGEST = "rmh:import_digest"  # import_stac: digest of the source item, asset versions and options
GEOREFERENCING = "rmh:georeferencing"

MAX_ID_LENGTH = 256
DEFAULT_LICENSE = "other"
#: What a single-band, non-byte render is coloured with (a perceptually uniform map any tiler knows).
SINGLE_BAND_COLORMAP = "viridis"


# ----------------------------------------------------------------------------------- models


class SourceBlob(BaseModel):
    """The source blob an item describes, as listed by storage (crosses the Durable boundary)."""

    container: str
    blob_name: str
    href: str | None = None
    etag: str | None = None
    last_modified: dt.datetime | None = None
    size: int | None = None


# -------------------------------------------------------------------------------------- ids

_ID_SAFE = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")
_BLOB_LOSSLESS = re.compile(r"^[A-Za-z0-9._/-]+$")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]+")


def _short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def item_id_for_blob(container: str, blob_name: str, *, output_container: str | None = None) -> str:
    """A deterministic, URL-safe item id for a blob, stable across runs and at most 256 chars.

    ``container~dir~file.tif`` when the name maps losslessly ('/' becomes '~'; Azure container
    names never hold '~'); otherwise a readable slug plus ``-`` and a 10-hex SHA-256 of
    ``container/blob_name``, so distinct blobs never share an id. ``output_container`` (a
    conversion written somewhere other than the configured output container) adds
    ``~~<output container>``: no lossless id holds ``~~`` (blob names with ``//`` are hashed) and
    hashed ids end in their hex digest, so the result never equals another blob's id.
    """
    if not container or not blob_name:
        raise InvalidItemId(f"container {container!r} and blob name {blob_name!r} are required")
    suffix = f"~~{check_id(output_container)}" if output_container else ""
    candidate = f"{container}~{blob_name.replace('/', '~')}"
    lossless = (_BLOB_LOSSLESS.match(blob_name) and "//" not in blob_name and _ID_SAFE.match(container)
                and not blob_name.startswith("/") and not blob_name.endswith("/"))
    if lossless and len(candidate) + len(suffix) <= MAX_ID_LENGTH and _ID_SAFE.match(candidate):
        return candidate + suffix
    digest = _short_hash(f"{container}/{blob_name}")
    ascii_name = unicodedata.normalize("NFKD", candidate).encode("ascii", "ignore").decode("ascii")
    slug = _ID_UNSAFE.sub("-", ascii_name).strip("-.~") or "item"
    return f"{slug[: MAX_ID_LENGTH - len(digest) - 1 - len(suffix)]}-{digest}{suffix}"


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


# ------------------------------------------------------------------------ items from raster facts

_DATA_TYPES = {
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "float32": "float32", "float64": "float64",
    "complex_int16": "cint16", "complex64": "cfloat32", "complex128": "cfloat64",
}
#: Complex data types (SAR): written and cataloged, statistics of the amplitude, no render.
_COMPLEX_TYPES = frozenset({"complex_int16", "complex64", "complex128"})
_COMMON_NAMES = {"red": "red", "green": "green", "blue": "blue"}
#: Media type and asset title of a data file, by GDAL driver (a GeoTIFF is a COG only when its
#: layout passes the COG rules: ``RasterHeader.is_cog``).
_FORMATS = {"GTiff": (GEOTIFF_MEDIA_TYPE, "GeoTIFF"), "JP2OpenJPEG": ("image/jp2", "JPEG 2000"),
            "PNG": (PNG_MEDIA_TYPE, "PNG image"), "JPEG": ("image/jpeg", "JPEG image"),
            "WEBP": ("image/webp", "WebP image")}


@contextlib.contextmanager
def _open_raster(raster: str | os.PathLike | DatasetReaderBase) -> Iterator[Any]:
    """Yield an open dataset: the one given, or one opened (allowed drivers only) and closed here."""
    if isinstance(raster, DatasetReaderBase):
        yield raster
        return
    try:
        dataset = geo_ops.open_raster(raster)
    except geo_ops.GeoOpsError as err:
        raise RasterOpenError(f"cannot open raster {os.fspath(raster)!r}: {err.reason}") from err
    with dataset:
        yield dataset


def read_facts(raster: str | os.PathLike | DatasetReaderBase, *, max_stats_size: int = geo_ops.STATISTICS_SIZE,
               gdal_config: Mapping[str, Any] | None = None, pixels: Any = None) -> geo_ops.RasterHeader:
    """geo_ops' facts of a raster with band statistics (a decimated read, at most
    ``max_stats_size`` pixels on the long side, or ``pixels`` already read: see
    ``geo_ops.read_header``); read failures become ``RasterReadError`` (a network fault stays
    ``geo_ops.SourceUnavailable``: transient, retried)."""
    with geo_ops.gdal_env(gdal_config), _open_raster(raster) as dataset:
        try:
            return geo_ops.read_header(dataset, statistics=True, max_stats_size=max_stats_size,
                                       gdal_config=gdal_config, pixels=pixels)
        except geo_ops.GeoOpsError as err:
            raise RasterReadError(f"cannot read pixels of {dataset.name!r}: {err.reason}") from err


def get_geometry(facts: geo_ops.RasterHeader) -> tuple[dict[str, Any], list[float]]:
    """The item's GeoJSON geometry and bbox (geo_ops' footprint: antimeridian and poles handled)."""
    if facts.crs_wkt2 is None or (Affine(*facts.transform).is_identity and facts.georeferencing == "geotransform"):
        raise NotGeoreferenced(f"raster {facts.path!r} has no CRS or geotransform "
                               f"(crs={facts.crs_code or facts.crs_wkt2}, transform={facts.transform})")
    if facts.footprint is None or facts.bbox is None:
        raise FootprintError(f"raster {facts.path!r}: footprint does not transform to EPSG:4326")
    return facts.footprint, facts.bbox


def get_projection(facts: geo_ops.RasterHeader) -> dict[str, Any]:
    """Projection extension v2.0.0 fields: code (or null plus WKT2), bbox, shape, transform. A
    raster placed by GCPs or RPCs (cataloged as it lies) has no transform: its code is the
    GCPs' CRS (EPSG:4326 for RPCs) and its bbox that of its edge there."""
    info: dict[str, Any] = {"proj:code": facts.crs_code}
    if facts.crs_code is None:
        info["proj:wkt2"] = facts.crs_wkt2
    if facts.georeferencing != "geotransform":
        info["proj:bbox"] = list(facts.bounds)
        info["proj:shape"] = [facts.height, facts.width]
        return info
    t = Affine(*facts.transform)
    corners = [t @ (c, r) for c, r in ((0, 0), (facts.width, 0), (facts.width, facts.height), (0, facts.height))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    info["proj:bbox"] = [min(xs), min(ys), max(xs), max(ys)]
    info["proj:shape"] = [facts.height, facts.width]
    info["proj:transform"] = list(facts.transform)
    return info


def _statistics(band: geo_ops.BandFacts) -> dict[str, float]:
    return band.statistics.model_dump(exclude_none=True) if band.statistics else {"valid_percent": 0.0}


def _resolution(facts: geo_ops.RasterHeader) -> float:
    """Pixel size in CRS units (square root of the pixel's area, so rotation does not matter)."""
    a, b, _, d, e, _ = facts.transform
    return math.sqrt(abs(a * e - b * d))


def get_bands(facts: geo_ops.RasterHeader) -> list[dict[str, Any]]:
    """STAC 1.1 ``bands`` of the data asset: the core band fields (data type, nodata, statistics,
    unit) and eo v2.0.0's common name. The raster fields go to ``raster:bands``
    (``get_raster_bands``): raster v2.0.0, whose fields would live here, forbids ``raster:bands``
    on the same asset, and the readers that need both (titiler's mosaic reader, pystac) read
    ``raster:bands``."""
    bands = []
    for band in facts.bands:
        out: dict[str, Any] = {"name": f"b{band.index}"}
        if band.description or band.colorinterp not in ("undefined", "gray"):
            out["description"] = band.description or band.colorinterp
        out["data_type"] = _DATA_TYPES.get(band.dtype, "other")
        if band.nodata is not None:
            out["nodata"] = band.nodata
        out["statistics"] = _statistics(band)
        if band.unit:
            out["unit"] = band.unit
        if band.colorinterp in _COMMON_NAMES:
            out["eo:common_name"] = _COMMON_NAMES[band.colorinterp]
        bands.append(out)
    return bands


def get_raster_bands(facts: geo_ops.RasterHeader) -> list[dict[str, Any]]:
    """Raster v1.1.0 ``raster:bands``: the band facts with scale, offset and spatial resolution
    (read by titiler-pgstac's mosaic reader, pystac's ``RasterExtension`` and STAC 1.0 tools)."""
    out = []
    for band in facts.bands:
        fields: dict[str, Any] = {"data_type": _DATA_TYPES.get(band.dtype, "other")}
        if band.nodata is not None:
            fields["nodata"] = band.nodata
        fields["statistics"] = _statistics(band)
        if band.unit:
            fields["unit"] = band.unit
        fields.update(scale=band.scale, offset=band.offset, spatial_resolution=_resolution(facts))
        out.append(fields)
    return out


def get_datetime(facts: geo_ops.RasterHeader, *, last_modified: dt.datetime | None = None,
                 override: dt.datetime | None = None) -> tuple[dt.datetime, str]:
    """The item datetime and which rule chose it: what the request gives, else the file's own
    metadata, else the blob's last-modified time (every blob has one, so it comes last)."""
    if override is not None:
        return as_utc(override), "request"
    if facts.datetime is not None:
        return facts.datetime, "file-metadata"
    if last_modified is not None:
        return as_utc(last_modified), "blob-last-modified"
    raise MissingDatetime(f"raster {facts.path!r}: no datetime in file, blob or request")


_utc = as_utc  # its name before stac_collections needed it (main's cubes.py calls stac_ops._utc)


def get_media_type(facts: geo_ops.RasterHeader) -> tuple[str | None, str]:
    """The data file's media type and a title saying what it is: "Cloud Optimized GeoTIFF" only
    for a GeoTIFF whose layout passes the COG rules."""
    if facts.driver in ("GTiff", "COG") and facts.is_cog:
        return COG_MEDIA_TYPE, "Cloud Optimized GeoTIFF"
    return _FORMATS.get(facts.driver, (None, f"{facts.driver} raster"))


def _alternate(alternates: Mapping[str, str] | None) -> dict[str, Any]:
    """The alternate-assets extension's ``alternate`` object: ``{name: {"href": href}}``."""
    return {"alternate": {name: {"href": href} for name, href in alternates.items()}} if alternates else {}


def get_data_asset(facts: geo_ops.RasterHeader, *, href: str, size: int | None = None,
                   alternates: Mapping[str, str] | None = None) -> pystac.Asset:
    """The ``data`` asset: the raster file itself, its type true to its layout, its bands."""
    media_type, title = get_media_type(facts)
    fields: dict[str, Any] = {"bands": get_bands(facts), "raster:bands": get_raster_bands(facts)}
    size = size if size is not None else facts.size_bytes
    if size is not None:
        fields["file:size"] = size
    if facts.is_cog and facts.header_bytes is not None:
        fields["file:header_size"] = facts.header_bytes
    fields.update(_alternate(alternates))
    return pystac.Asset(href=href, title=title, media_type=media_type, roles=["data"], extra_fields=fields)


def _source_media_type(href: str) -> str | None:
    suffix = Path(urllib.parse.urlsplit(href).path).suffix.lower()
    return {".tif": GEOTIFF_MEDIA_TYPE, ".tiff": GEOTIFF_MEDIA_TYPE, ".jp2": "image/jp2",
            ".png": PNG_MEDIA_TYPE, ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".webp": "image/webp"}.get(suffix)


def get_source_asset(source: SourceBlob, *, alternates: Mapping[str, str] | None = None) -> pystac.Asset | None:
    """The ``source`` asset (the original blob), or None when its href is unknown."""
    if not source.href:
        return None
    fields: dict[str, Any] = {"file:size": source.size} if source.size is not None else {}
    fields.update(_alternate(alternates))
    return pystac.Asset(href=source.href, title="Original file", media_type=_source_media_type(source.href),
                        roles=["source"], extra_fields=fields)


def get_thumbnail_asset(href: str, *, alternates: Mapping[str, str] | None = None) -> pystac.Asset:
    """The ``thumbnail`` asset: a small PNG preview (``geo_ops.write_thumbnail``)."""
    return pystac.Asset(href=href, title="Thumbnail", media_type=PNG_MEDIA_TYPE, roles=["thumbnail"],
                        extra_fields=_alternate(alternates))


def _rescale(band: geo_ops.BandFacts) -> list[float]:
    low, high = band.statistics.minimum, band.statistics.maximum
    return [low, high if high > low else low + 1.0]


def get_renders(facts: geo_ops.RasterHeader) -> dict[str, dict[str, Any]]:
    """Render extension ``renders``: how a tiler shows the ``data`` asset by default.

    A palette band as it is; red/green/blue bands (1, 2, 3, alpha aside) as true colour, byte
    data as it is and other data stretched band by band from the statistics; one band of byte
    data as grey, of other data stretched from its statistics and coloured with
    ``SINGLE_BAND_COLORMAP``. Nothing for other band layouts, complex data (tilers draw real
    values only) or when every pixel is nodata.
    """
    shown = [b for b in facts.bands if b.colorinterp != "alpha"]
    if not shown or any(b.statistics is None or b.statistics.minimum is None for b in shown):
        return {}
    if any(b.dtype in _COMPLEX_TYPES for b in shown):
        return {}  # tilers draw real values only: a complex band has no render
    render: dict[str, Any] = {"assets": ["data"]}
    if facts.has_colormap:
        render["title"] = "Palette"
    elif geo_ops.preview_bands(facts.colorinterp) == [b.index for b in shown] == [1, 2, 3]:
        render["title"] = "True colour"
        if any(b.dtype != "uint8" for b in shown):
            render["rescale"] = [_rescale(b) for b in shown]
    elif len(shown) == 1:
        render["title"] = "Greyscale" if shown[0].dtype == "uint8" else f"{shown[0].dtype} values"
        if shown[0].dtype != "uint8":
            render.update(rescale=[_rescale(shown[0])], colormap_name=SINGLE_BAND_COLORMAP)
    else:
        return {}
    return {"default": render}


def get_properties(facts: geo_ops.RasterHeader, source: SourceBlob) -> dict[str, Any]:
    """Properties from the facts and the source: projection, gsd, band facts, where it came from."""
    props: dict[str, Any] = get_projection(facts)
    if facts.gsd is not None:
        props["gsd"] = facts.gsd
    types = {_DATA_TYPES.get(t, "other") for t in facts.dtypes}
    props.update({SOURCE_CONTAINER: source.container, SOURCE_BLOB: source.blob_name,
                  DATA_TYPE: types.pop() if len(types) == 1 else "other", BAND_COUNT: facts.count,
                  HAS_DATA: any((b.statistics.valid_percent if b.statistics else 0) > 0 for b in facts.bands)})
    if source.etag is not None:
        props[SOURCE_ETAG] = source.etag
    props.update(get_solar_system(facts))
    props.update(get_placement(facts))
    return props


def get_placement(facts: geo_ops.RasterHeader) -> dict[str, Any]:
    """How the raster (or the source it was warped from) is placed when not by a geotransform:
    ``rmh:georeferencing`` (``gcps`` or ``rpcs``), and the GCP count and transformation
    (``polynomial-2``, ``tps``) or the height the RPC model was evaluated at (metres) or the DEM
    it took heights from. Nothing for a raster placed by its geotransform."""
    tags = facts.placement
    if not tags.get(geo_ops.TAG_GEOREFERENCING):
        return {}
    fields: dict[str, Any] = {GEOREFERENCING: tags[geo_ops.TAG_GEOREFERENCING]}
    if geo_ops.TAG_GCP_COUNT in tags:
        fields["rmh:gcp_count"] = int(tags[geo_ops.TAG_GCP_COUNT])
    if geo_ops.TAG_GCP_TRANSFORM in tags:
        fields["rmh:gcp_transform"] = tags[geo_ops.TAG_GCP_TRANSFORM]
    if geo_ops.TAG_RPC_HEIGHT in tags:
        fields["rmh:rpc_height"] = float(tags[geo_ops.TAG_RPC_HEIGHT])
    if geo_ops.TAG_RPC_DEM in tags:
        fields["rmh:rpc_dem"] = tags[geo_ops.TAG_RPC_DEM]
    return fields


def get_solar_system(facts: geo_ops.RasterHeader) -> dict[str, Any]:
    """Solar-system extension fields of a raster of another body (its CRS is on Mars, the Moon,
    Europa...): ``ssys:targets`` and, for a known body, ``ssys:target_class``. Its geometry and
    bbox are that body's planetocentric longitude/latitude, not the Earth's. Nothing for the Earth."""
    if facts.body is None:
        return {}
    fields: dict[str, Any] = {"ssys:targets": [facts.body]}
    if facts.body_class:
        fields["ssys:target_class"] = facts.body_class
    return fields


def get_extensions(assets: Mapping[str, pystac.Asset], renders: Mapping[str, Any],
                   properties: Mapping[str, Any] | None = None) -> list[str]:
    """The extension schemas an item with these assets, renders and properties declares."""
    fields = [set(asset.extra_fields) for asset in assets.values()]
    band_fields = {k for asset in assets.values() for band in asset.extra_fields.get("bands", []) for k in band}
    extensions = [PROJECTION_EXT]
    if any("raster:bands" in f for f in fields):
        extensions.append(RASTER_EXT)
    if any(k.startswith("file:") for f in fields for k in f):
        extensions.append(FILE_EXT)
    if "eo:common_name" in band_fields:
        extensions.append(EO_EXT)
    if renders:
        extensions.append(RENDER_EXT)
    if any("alternate" in f for f in fields):
        extensions.append(ALTERNATE_EXT)
    if properties and any(k.startswith("ssys:") for k in properties):
        extensions.append(SSYS_EXT)
    return extensions


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain_json(value: Any) -> Any:
    """``value`` with only JSON's own types: numpy scalars become Python numbers (a numpy float
    is a ``float`` subclass the standard library writes but orjson, the catalogs' writer, refuses),
    tuples and arrays lists; dict keys stay as they are."""
    if type(value) in _JSON_SCALARS:  # most of an item: exact types, numpy's subclasses excluded
        return value
    if isinstance(value, Mapping):
        return {key: plain_json(inner) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(inner) for inner in value]
    if isinstance(value, np.ndarray):
        return plain_json(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def item_from_raster(
    raster: str | os.PathLike | Any,
    *,
    container: str,
    blob_name: str,
    collection_id: str | None = None,
    item_id: str | None = None,
    title: str | None = None,
    source_href: str | None = None,
    source_etag: str | None = None,
    source_last_modified: dt.datetime | None = None,
    source_size: int | None = None,
    source_alternates: Mapping[str, str] | None = None,
    data_href: str | None = None,
    data_size: int | None = None,
    data_alternates: Mapping[str, str] | None = None,
    thumbnail_href: str | None = None,
    thumbnail_alternates: Mapping[str, str] | None = None,
    datetime_override: dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
    max_stats_size: int = geo_ops.STATISTICS_SIZE,
    gdal_config: Mapping[str, Any] | None = None,
    validator: StacValidator | None = None,
    pixels: Any = None,
) -> pystac.Item:
    """A STAC item for one raster (a source blob cataloged in place, or a COG made from one).

    ``raster`` is a local path, a GDAL virtual path (``/vsiaz/...``) or an open dataset; only its
    header and a decimated read (overviews, at most ``max_stats_size`` px on the long side) are
    read. ``container``/``blob_name`` name the *source* blob; the id is ``item_id`` or
    ``item_id_for_blob(container, blob_name)``, the title ``title`` or the blob name.

    Assets, each an href plus optional ``*_alternates`` (``{"vsiaz": "/vsiaz/c/b"}``, written
    as the alternate-assets extension's ``alternate`` object): ``data`` (``data_href``, default
    the path read), ``source`` (``source_href``, when it differs from the data's) and
    ``thumbnail`` (``thumbnail_href``, a PNG). Hrefs are written as given (the caller decides
    their public form). With a ``validator`` the item is validated before it is returned
    (``ItemValidationError``). ``pixels``: the raster's pixels already read whole by
    validation (``ValidationReport.pixels``), its statistics' source instead of a second read.
    """
    source = SourceBlob(container=container, blob_name=blob_name, href=source_href, etag=source_etag,
                        last_modified=source_last_modified, size=source_size)
    facts = read_facts(raster, max_stats_size=max_stats_size, gdal_config=gdal_config, pixels=pixels)
    geometry, bbox = get_geometry(facts)
    when, when_source = get_datetime(facts, last_modified=source_last_modified, override=datetime_override)
    props = {**get_properties(facts, source), DATETIME_SOURCE: when_source, "title": title or blob_name}
    assets = {"data": get_data_asset(facts, href=data_href or facts.path, size=data_size, alternates=data_alternates)}
    source_asset = get_source_asset(source, alternates=source_alternates)
    if source_asset is not None and source_asset.href != assets["data"].href:
        assets["source"] = source_asset
    if thumbnail_href:
        assets["thumbnail"] = get_thumbnail_asset(thumbnail_href, alternates=thumbnail_alternates)
    renders = get_renders(facts)
    if renders:
        props["renders"] = renders
    props.update(properties or {})
    for asset in assets.values():
        asset.extra_fields = plain_json(asset.extra_fields)
    item = pystac.Item(id=item_id or item_id_for_blob(container, blob_name), geometry=plain_json(geometry),
                       bbox=plain_json(bbox), datetime=when, properties=plain_json(props),
                       stac_extensions=get_extensions(assets, renders, props),
                       collection=collection_id or default_collection_id(container))
    item.add_link(pystac.Link(rel="collection", target="../collection.json", media_type="application/json"))
    for key, asset in assets.items():
        item.add_asset(key, asset)
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


# ----------------------------------------------------------------------------------- hrefs


def relative_href(href: str, *, storage_root: str | os.PathLike, relative_to: str | os.PathLike) -> str:
    """An href a static catalog can be moved with: an absolute local path inside ``storage_root``
    becomes a percent-encoded path relative to ``relative_to`` (the directory of the STAC file
    that holds it), so the catalog and the storage directory resolve wherever they are copied
    together. Anything else (http(s) URLs, GDAL virtual paths, paths outside the storage root,
    relative hrefs) is returned unchanged."""
    if "://" in href or href.startswith("/vsi") or not os.path.isabs(href):
        return href
    root, path = os.path.abspath(storage_root), os.path.abspath(href)
    if os.path.commonpath([root, path]) != root:
        return href
    return urllib.parse.quote(Path(os.path.relpath(path, os.path.abspath(relative_to))).as_posix())


def relative_hrefs(stac: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``relative_href`` applied to every asset href and alternate href of an item dict (in place)."""
    for asset in stac.get("assets", {}).values():
        asset["href"] = relative_href(asset["href"], **kwargs)
        for alternate in asset.get("alternate", {}).values():
            alternate["href"] = relative_href(alternate["href"], **kwargs)
    return stac




# ------------------------------------------------------------------------------ queryables

#: JSON-schema definitions of our item properties, for pgSTAC's queryables (numbers typed as
#: numbers, so CQL2 compares them as numbers) and the static catalog's ``queryables.json``.
QUERYABLES: dict[str, dict[str, Any]] = {
    "proj:code": {"title": "Projection code (AUTHORITY:CODE)", "type": "string"},
    "gsd": {"title": "Ground sample distance (metres)", "type": "number", "exclusiveMinimum": 0},
    SOURCE_CONTAINER: {"title": "Source blob container", "type": "string"},
    SOURCE_BLOB: {"title": "Source blob name", "type": "string"},
    SOURCE_ETAG: {"title": "Source blob ETag", "type": "string"},
    DATETIME_SOURCE: {"title": "Where the datetime came from", "type": "string",
                      "enum": ["file-metadata", "blob-last-modified", "request"]},
    HAS_DATA: {"title": "Has valid (not nodata) pixels", "type": "boolean"},
    DATA_TYPE: {"title": "Data type of the bands", "type": "string",
                "enum": sorted(set(_DATA_TYPES.values()) | {"other"})},
    BAND_COUNT: {"title": "Number of bands", "type": "integer", "minimum": 1},
    IMPORTED_FROM: {"title": "Imported from (STAC made elsewhere)", "type": "string"},
    GEOREFERENCING: {"title": "Placed by ground control points or RPCs (absent: a geotransform)",
                     "type": "string", "enum": ["gcps", "rpcs"]},
    "rmh:gcp_count": {"title": "Ground control points", "type": "integer", "minimum": 1},
    "rmh:gcp_transform": {"title": "Transformation fitted to the GCPs", "type": "string",
                          "enum": ["polynomial-1", "polynomial-2", "polynomial-3", "tps"]},
    "rmh:rpc_height": {"title": "Height the RPC model was evaluated at (metres)", "type": "number"},
    "rmh:rpc_dem": {"title": "DEM the RPC model took heights from", "type": "string"},
    "ssys:targets": {"title": "Bodies of the solar system other than the Earth (absent: the Earth)",
                     "type": "array", "items": {"type": "string"}},
}
#: The link relation of a queryables document (OGC API - Features - Part 3).
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"


def queryables_document(title: str) -> dict[str, Any]:
    """A queryables JSON schema: the core fields every catalog filters on, and ``QUERYABLES``."""
    core = {"id": {"title": "Item id", "type": "string"},
            "datetime": {"title": "Datetime", "type": "string", "format": "date-time"},
            "geometry": {"title": "Footprint", "$ref": "https://geojson.org/schema/Geometry.json"}}
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": "queryables.json",
            "type": "object", "title": title, "properties": {**core, **QUERYABLES},
            "additionalProperties": True}


# ------------------------------------------------------------------------------------- sync


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
