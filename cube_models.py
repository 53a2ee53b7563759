"""The cube engine's models: plain JSON across the Durable boundary (pydantic only)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from geo_ops import Issue, Nodata


class CubeDimension(BaseModel):
    """A non-spatial dimension: its raw coordinate values, and for time their decoded instants."""

    name: str
    kind: Literal["temporal", "other"]
    size: int
    values: list[float | str] = Field(default_factory=list)
    unit: str | None = None
    calendar: str | None = None
    datetimes: list[str] | None = None  # RFC 3339, one per value (temporal only)
    bounds: list[list[str]] | None = None  # [start, end] per value when the file has CF bounds


class CubeGrid(BaseModel):
    """The output grid of a variable (north-up, longitudes wrapped) and how a slice reaches it."""

    crs_wkt: str
    epsg: int | None
    transform: list[float]
    width: int
    height: int
    flip_rows: bool = False  # the source rows run south to north
    roll_columns: int = 0  # np.roll shift that puts the western-most column first
    wrapped: bool = False  # longitudes moved from 0–360 to −180–180


class CubeSlice(BaseModel):
    """One 2-D slice: its position along each non-spatial dimension, and where it is read."""

    index: dict[str, int] = Field(default_factory=dict)
    band: int | None = None  # GDAL band (netCDF, HDF5, GRIB)


class CubeVariable(BaseModel):
    """A gridded variable: CF metadata, its grid and its slices."""

    name: str
    dims: list[str]  # non-spatial dimensions, outermost first
    dtype: str
    nodata: Nodata = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    long_name: str | None = None
    standard_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    grid: CubeGrid
    subdataset: str | None = None  # the GDAL name opened (built here from a checked name)
    slices: list[CubeSlice] = Field(default_factory=list)


class CubeFacts(BaseModel):
    """What ``open_cube`` found: the variables converted, the dimensions, what was left out."""

    path: str
    format: Literal["netcdf", "hdf5", "grib", "zarr"]
    variables: list[CubeVariable]
    dimensions: dict[str, CubeDimension]
    attrs: dict[str, str] = Field(default_factory=dict)
    skipped: list[Issue] = Field(default_factory=list)  # variables not converted, and why
    warnings: list[Issue] = Field(default_factory=list)

    @property
    def slice_count(self) -> int:
        return sum(len(v.slices) for v in self.variables)

    @property
    def time_dimension(self) -> CubeDimension | None:
        return next((d for d in self.dimensions.values() if d.kind == "temporal"), None)


class SliceTask(BaseModel):
    """One slice of a group: the variable it belongs to and its COG's path."""

    variable: str
    slice: CubeSlice
    output_path: str


class SliceGroup(BaseModel):
    """A self-contained unit of work (one activity): the source, the variables it touches, and
    the slices of a run of time steps."""

    index: int
    source: str
    format: str
    steps: list[int | None]  # time indices covered (None: the cube has no time dimension)
    variables: list[CubeVariable]  # with only this group's slices
    tasks: list[SliceTask]


class SliceOutput(BaseModel):
    """A COG written for one slice."""

    variable: str
    index: dict[str, int]
    path: str
    size_bytes: int | None
    cog_valid: bool


class SliceGroupResult(BaseModel):
    """What ``convert_slices`` wrote for one group."""

    index: int
    outputs: list[SliceOutput]
    elapsed_s: float
