"""Which blob names the app takes for rasters: the one list that sync, prefix conversions, blob
events and the Event Grid subscription's suffix filter (azd_hooks.py) all read.

Standard library only, so the deployment hooks import it without loading rasterio.

A Zarr store is a prefix, not a file: ``era5.zarr/`` holds metadata documents and thousands of
chunk blobs. The blob that stands for the whole store in an event is its consolidated metadata at
the store's root: ``<store>.zarr/.zmetadata`` (Zarr v2; ``consolidate_metadata`` writes it after
every array, so its arrival means the store is complete) or ``<store>.zarr/zarr.json`` (Zarr v3's
root document: written when the store is created and again when its metadata is consolidated).
Only stores whose prefix ends in ``.zarr`` are recognised by their events; a store without
consolidated metadata, or named otherwise, is found by the scheduled sync.
"""
from __future__ import annotations

from pathlib import PurePosixPath

#: Suffixes (lower case, with the dot) of single-file rasters.
RASTER_SUFFIXES = frozenset({
    ".tif", ".tiff", ".gtif", ".geotiff", ".cog",  # GeoTIFF and COG
    ".jp2", ".img", ".jpg", ".jpeg", ".png", ".webp",  # JPEG 2000, ERDAS Imagine, images with world files
    ".hdf", ".grd", ".asc", ".dem",  # HDF4, grids (Surfer / GMT), ASCII grid, USGS DEM
    # Multidimensional files (CUBE_SUFFIXES): cataloged and converted per variable and step.
    ".nc", ".nc4", ".h5", ".hdf5", ".he5", ".grib", ".grib2", ".grb", ".grb2",
})
#: Suffixes of multidimensional files (NetCDF classic and NetCDF-4, HDF5, GRIB 1 and 2): the jobs
#: send them to the cube path (cubes.py), which judges the format by the bytes.
CUBE_SUFFIXES = frozenset({".nc", ".nc4", ".h5", ".hdf5", ".he5", ".grib", ".grib2", ".grb", ".grb2"})
#: What a Zarr store's prefix ends with.
ZARR_STORE_SUFFIX = ".zarr"
#: The blob at a store's root whose event stands for the store (see the module's docstring).
ZARR_STORE_MARKERS = (".zmetadata", "zarr.json")


def is_raster_name(name: str) -> bool:
    """A single-file raster by its suffix (any case)."""
    return PurePosixPath(name).suffix.lower() in RASTER_SUFFIXES


def is_cube_name(name: str) -> bool:
    """A multidimensional file by its suffix (any case)."""
    return PurePosixPath(name).suffix.lower() in CUBE_SUFFIXES


def is_zarr_store_name(name: str) -> bool:
    """A Zarr store's prefix as its events name it (``a/b.zarr``, any case)."""
    return name.lower().endswith(ZARR_STORE_SUFFIX) and not name.endswith("/")


def zarr_store_of(name: str) -> str | None:
    """The store prefix (``a/b.zarr``) when ``name`` is the marker blob at a Zarr store's root."""
    store, _, leaf = name.rpartition("/")
    if leaf in ZARR_STORE_MARKERS and store.lower().endswith(ZARR_STORE_SUFFIX):
        return store
    return None


def event_suffixes() -> list[str]:
    """The endings of the blob names whose events the app wants, for an Event Grid
    ``StringEndsWith`` filter on the subject (Event Grid compares case-insensitively, so each
    ending appears once, in lower case): every raster suffix and each Zarr store marker."""
    markers = [f"{ZARR_STORE_SUFFIX}/{marker}" for marker in ZARR_STORE_MARKERS]
    return sorted(RASTER_SUFFIXES) + markers
