"""The raster engine's errors: one base class, ``GeoOpsError``, and a subclass per condition.

Each carries the offending path and the reason. ``ERRORS_BY_CODE`` turns the code of a
validation finding (the class name) back into its class. Plain Python: nothing here loads GDAL.
"""
from __future__ import annotations

import os

from faults import Transient


class GeoOpsError(Exception):
    """Base class of the raster engine's errors; carries the offending path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class RasterNotFound(GeoOpsError):
    """The source does not exist or cannot be reached."""


class EmptyFile(GeoOpsError):
    """The file has zero bytes."""


class UnsupportedFormat(GeoOpsError):
    """The file is not a raster format on the allow-list (VRT, text, multi-file formats...)."""


class UnreadableRaster(GeoOpsError):
    """The raster cannot be opened, or its pixel blocks fail to decode."""


class MissingCRS(GeoOpsError):
    """The raster has no coordinate reference system."""


class DegenerateTransform(GeoOpsError):
    """The geotransform is missing (identity) or singular."""


class RasterTooLarge(GeoOpsError):
    """Pixel count, band count or estimated decompressed size exceeds the configured limits."""


class UnsupportedDtype(GeoOpsError):
    """A band's data type is not on the allowed list."""


class InvalidNodata(GeoOpsError):
    """The nodata value cannot be represented in the band's data type."""


class InvalidOption(GeoOpsError):
    """An argument (profile, resampling, tile size, CRS...) is not usable."""


class InvalidCog(GeoOpsError):
    """An output failed strict COG validation."""


class IncompatibleTiles(GeoOpsError):
    """Tiles given to a mosaic do not share CRS, resolution, bands or data type."""


class SourceUnavailable(Transient):
    """The source could not be reached (network or HTTP error): a transient fault, not the file's
    (``faults.Transient``, never a ``GeoOpsError``); carries the path and the reason as they do."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class OutputWriteError(GeoOpsError):
    """Writing or publishing an output failed; nothing was left at the destination."""


class CannotReproject(GeoOpsError):
    """No grid in the target CRS can be computed for the raster: its CRS has no transformation to
    the target (an engineering or local CRS), or none of its points fall in the target's domain."""


ERRORS_BY_CODE: dict[str, type[GeoOpsError] | type[SourceUnavailable]] = {
    cls.__name__: cls for cls in (
        RasterNotFound, EmptyFile, UnsupportedFormat, UnreadableRaster, MissingCRS,
        DegenerateTransform, RasterTooLarge, UnsupportedDtype, InvalidNodata, InvalidOption,
        InvalidCog, IncompatibleTiles, SourceUnavailable, OutputWriteError, CannotReproject)
}
