"""The STAC layer's errors: one base class, ``StacOpsError``, and a subclass per condition, raised
by item composition (``stac_ops``), validation (``stac_validation``) and collections
(``stac_collections``). Plain Python.
"""
from __future__ import annotations


class StacOpsError(Exception):
    """Base class of every error raised by the STAC layer (stac_ops, stac_validation, stac_collections)."""


class RasterOpenError(StacOpsError):
    """The raster could not be opened (missing, unreadable or not a raster)."""


class NotGeoreferenced(StacOpsError):
    """The raster has no CRS or no geotransform, so it has no place on the map."""


class RasterReadError(StacOpsError):
    """The raster's header opened but its pixels could not be read (corrupt data)."""


class FootprintError(StacOpsError):
    """No point of the raster's footprint could be transformed to EPSG:4326."""


class MissingDatetime(StacOpsError):
    """Neither the request, the file nor the blob gave the item a datetime."""


class InvalidItemId(StacOpsError):
    """An item or collection id is not URL- and file-name-safe."""


class SchemaUnavailable(StacOpsError):
    """A JSON schema needed for validation is not available offline."""


class ItemValidationError(StacOpsError):
    """An item does not validate against its schemas."""


class CollectionValidationError(StacOpsError):
    """A collection does not validate against its schemas."""
