"""Multidimensional rasters: NetCDF (classic and NetCDF-4), HDF5, GRIB2 and Zarr stores.

A cube becomes one Cloud Optimized GeoTIFF per variable and per 2-D slice (each time step times
each position along the other non-spatial dimensions), holding the source's stored values
unchanged (lossless profiles only; CF ``scale_factor``/``add_offset`` travel as the band's scale
and offset, ``_FillValue`` as its nodata), and is described in STAC with the datacube extension.

The verbs, in the order the activities call them:

- ``stage_file`` / ``stage_store``: the source copied to a worker-local cache keyed by its ETag,
  bounded in size (several slice-group activities on one host read one copy). The local name is
  ours, never the blob's, so no name reaches GDAL as syntax.
- ``open_cube``: the format judged by its bytes, the references it could follow refused
  (``check_hdf5`` and ``check_zarr_store``), then the cube described (``CubeFacts``).
- ``plan_slices``: slice groups, each a bounded unit of work for one activity.
- ``convert_slices``: one group's COGs, staged and validated before they are published.
- ``cube_dimensions`` / ``cube_variables`` / ``slice_item`` / ``cube_item`` /
  ``collection_fields``: the STAC.

Engines: GDAL (rasterio) reads NetCDF, HDF5 and GRIB2 from the local copy (its netCDF driver
georeferences CF grids, its GRIB driver GRIB's own grids); zarr-python reads Zarr v2 and v3
(GDAL 3.10 in the rasterio wheel knows the v3 draft's codec names only). h5py inspects HDF5
link structure before any library that would follow a link opens the file. Like ``geo_ops``,
nothing here reads the environment or knows about Azure: callers pass paths, limits and
download callables.

This module is the cube engine's public face: its verbs and models, each defined in a room of
its own.

================= =============================================================================
room              its one job
================= =============================================================================
``cube_errors``   the errors: ``CubeError`` and a subclass per condition
``cube_models``   the models that cross the Durable boundary (facts, grids, slices, groups)
``cube_checks``   the format from the bytes; HDF5 links, Zarr metadata and names checked
``cube_staging``  the worker-local copy keyed by ETag; Zarr store roots among listed names
``cube_grids``    CF time decoded; grids north-up with longitudes in −180..180
``cube_describe`` ``open_cube``: GDAL (NetCDF, HDF5, GRIB) and zarr-python (Zarr) describe a cube
``cube_convert``  ``plan_slices`` (slice groups) and ``convert_slices`` (one group's COGs)
``cube_stac``     datacube STAC: items of a step and of a file, the source asset, collections
================= =============================================================================
"""
from __future__ import annotations

from cube_checks import (GRIB_MAGIC, HDF5_MAGIC, HDF5_OFFSETS, MAX_NAME, NETCDF_CLASSIC_MAGIC,  # noqa: F401
                         SAFE_NAME, ZARR_MARKERS, check_hdf5, check_name, check_zarr_store, sniff_cube)
from cube_convert import convert_slices, plan_slices, slice_name  # noqa: F401
from cube_describe import CUBE_DRIVERS, CUBE_GDAL_CONFIG, describe_gdal, describe_zarr, open_cube  # noqa: F401
from cube_errors import (ERRORS_BY_CODE, CubeError, CurvilinearGrid, IrregularGrid, LossyOption,  # noqa: F401
                         NoGriddedVariable, SourceChanged, SliceTooLarge, SourceTooLarge, TooManySlices, UndecodableTime,
                         UnreadableCube, UnsafeName, UnsafeReference)
from cube_grids import (REGULAR_TOLERANCE, decode_times, grid_from_coordinates, is_time_units,  # noqa: F401
                        normalize_grid, to_output)
from cube_models import (CubeDimension, CubeFacts, CubeGrid, CubeSlice, CubeVariable, SliceGroup,  # noqa: F401
                         SliceGroupResult, SliceOutput, SliceTask)
from cube_stac import (DATACUBE_EXT, FORMAT_TITLES, MEDIA_TYPES, collection_fields, cube_dimensions,  # noqa: F401
                       cube_item, cube_variables, slice_item, source_asset, step_times)
from cube_staging import check_member_name, source_key, stage_file, stage_store, zarr_store_roots  # noqa: F401
