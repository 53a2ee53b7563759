"""The cube engine's errors: ``CubeError`` and a subclass per condition. Each is a per-file
failure with a named condition; they subclass ``geo_ops.GeoOpsError``, so the activities' handling
reports them by class name as it does every raster condition."""
from __future__ import annotations

import geo_ops
from geo_ops import GeoOpsError


class CubeError(GeoOpsError):
    """Base class of the cube engine's errors; carries the offending path and the reason."""


class UnsafeReference(CubeError):
    """The file or store names another file, a URL or a place outside itself (HDF5 external
    links, virtual datasets, external storage; Zarr keys outside the store)."""


class UnsafeName(CubeError):
    """A name the file holds cannot be used safely (it could be read as GDAL syntax or a path)."""


class SourceTooLarge(CubeError):
    """The source is larger than the worker-local staging limit."""


class TooManySlices(CubeError):
    """The cube holds more 2-D slices than one file may produce."""


class SliceTooLarge(CubeError):
    """One 2-D slice holds more pixels than one activity's budget."""


class NoGriddedVariable(CubeError):
    """No variable of the file lies on a georeferenced 2-D grid."""


class CurvilinearGrid(CubeError):
    """The variables lie on a curvilinear grid (2-D latitude/longitude), which is not converted."""


class IrregularGrid(CubeError):
    """The spatial coordinates are not evenly spaced, so no geotransform describes them."""


class UndecodableTime(CubeError):
    """A time coordinate's CF units or calendar cannot be decoded."""


class UnreadableCube(CubeError):
    """The file is in a cube format but its structure or pixels cannot be read."""


class LossyOption(CubeError):
    """The conversion options would change a cube's values (a lossy profile, a LERC error
    bound, a reprojection): cubes are converted with their stored values unchanged."""


class SourceChanged(CubeError):
    """The source (a file, or a Zarr store's blobs) changed between its listing and its
    conversion; the change's own event or the next sync converts the new version."""


ERRORS_BY_CODE: dict[str, type[GeoOpsError]] = {
    **geo_ops.ERRORS_BY_CODE,
    **{cls.__name__: cls for cls in (
        CubeError, UnsafeReference, UnsafeName, SourceTooLarge, TooManySlices, SliceTooLarge,
        NoGriddedVariable, CurvilinearGrid, IrregularGrid, UndecodableTime, UnreadableCube, LossyOption,
        SourceChanged)},
}
