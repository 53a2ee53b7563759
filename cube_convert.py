"""Slice groups (``plan_slices``: bounded work for one activity each) and their COGs
(``convert_slices``: lossless, staged and validated before they are published)."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS

from cube_describe import CUBE_GDAL_CONFIG, open_dataset, zarr_arrays
from cube_errors import SliceTooLarge, TooManySlices, UnreadableCube
from cube_grids import to_output
from cube_models import CubeFacts, CubeSlice, CubeVariable, SliceGroup, SliceGroupResult, SliceOutput, SliceTask
import geo_ops
from geo_ops import GDAL_ERRORS, PathLike


def slice_name(variable: CubeVariable, index: Mapping[str, int]) -> str:
    """The file name of a slice's COG: the variable and its position along each dimension."""
    parts = [variable.name.replace("/", "_")] + [f"{d}{index[d]:05d}" for d in variable.dims if d in index]
    return "_".join(parts) + ".tif"


def plan_slices(facts: CubeFacts, output_prefix: str, *, max_slices: int, max_pixels_per_task: int,
                max_slices_per_task: int) -> list[SliceGroup]:
    """Slice groups: consecutive time steps (every variable and level of a step in the same
    group, so one group writes whole steps), each holding at most ``max_slices_per_task``
    slices and ``max_pixels_per_task`` pixels (at least one step). Refuses a cube of more than
    ``max_slices`` slices (``TooManySlices``) and a slice over the pixel budget (``SliceTooLarge``)."""
    total = facts.slice_count
    if total > max_slices:
        raise TooManySlices(facts.path, f"{total:,} slices ({len(facts.variables)} variables) is over "
                            f"the limit of {max_slices:,} per file (RMH_MAX_CUBE_SLICES)")
    for v in facts.variables:
        if v.grid.width * v.grid.height > max_pixels_per_task:
            raise SliceTooLarge(facts.path, f"{v.name}: a {v.grid.width} x {v.grid.height} slice is over "
                                f"the budget of {max_pixels_per_task:,} pixels per task")
    time_dim = facts.time_dimension
    by_step: dict[int | None, list[tuple[CubeVariable, CubeSlice]]] = {}
    for v in facts.variables:
        for s in v.slices:
            by_step.setdefault(s.index.get(time_dim.name) if time_dim and time_dim.name in v.dims else None, []).append((v, s))
    groups: list[list[tuple[int | None, list]]] = [[]]
    count = pixels = 0
    for step in sorted(by_step, key=lambda k: (k is not None, k or 0)):
        members = by_step[step]
        size = sum(v.grid.width * v.grid.height for v, _ in members)
        if groups[-1] and (count + len(members) > max_slices_per_task or pixels + size > max_pixels_per_task):
            groups.append([])
            count = pixels = 0
        groups[-1].append((step, members))
        count, pixels = count + len(members), pixels + size
    return [_slice_group(i, facts, output_prefix, steps) for i, steps in enumerate(groups) if steps]


def _slice_group(index: int, facts: CubeFacts, prefix: str, steps: list) -> SliceGroup:
    variables: dict[str, CubeVariable] = {}
    tasks = []
    for _, members in steps:
        for v, s in members:
            variables.setdefault(v.name, v.model_copy(update={"slices": []})).slices.append(s)
            tasks.append(SliceTask(variable=v.name, slice=s,
                                   output_path=f"{prefix.rstrip('/')}/{v.name.replace('/', '_')}/{slice_name(v, s.index)}"))
    return SliceGroup(index=index, source=facts.path, format=facts.format, steps=[s for s, _ in steps],
                      variables=list(variables.values()), tasks=tasks)


# ----------------------------------------------------------------------------------------------
# convert_slices: one group's COGs


def convert_slices(group: SliceGroup, *, profile: str = "deflate", blocksize: int = 512,
                   threads: int | str = 1, overview_resampling: str = "nearest",
                   tmp_dir: PathLike | None = None, gdal_config: Mapping[str, Any] | None = None,
                   skip_existing: Callable[[str], bool] | None = None) -> SliceGroupResult:
    """Write each slice of ``group`` as a COG at its ``output_path`` (local or ``/vsiaz/``).

    Only lossless profiles: the COG holds the source's stored values, with the variable's
    scale, offset, nodata, unit and CF attributes on its band and its position as dataset tags.
    Each COG is staged, strictly validated, then published; a slice that fails raises and
    leaves nothing at its path (the group's earlier COGs stay: they are whole and current).
    ``skip_existing(path)`` lets a retry keep the COGs an earlier attempt published.
    """
    if profile not in geo_ops.LOSSLESS_PROFILES:
        raise geo_ops.InvalidOption(profile, f"cubes are converted with lossless profiles only "
                                    f"({', '.join(sorted(geo_ops.LOSSLESS_PROFILES))})")
    started = time.perf_counter()
    config = geo_ops.env_options(gdal_config, **CUBE_GDAL_CONFIG)
    options = geo_ops.cog_options(profile, blocksize=blocksize, overview_resampling=overview_resampling,
                                  threads=threads)
    variables = {v.name: v for v in group.variables}
    outputs = []
    with rasterio.Env(**config), _slice_reader(group) as read:
        for task in group.tasks:
            variable = variables[task.variable]
            if skip_existing is not None and skip_existing(task.output_path):
                outputs.append(SliceOutput(variable=task.variable, index=task.slice.index, path=task.output_path,
                                           size_bytes=None, cog_valid=True))
                continue
            data = to_output(variable.grid, read(variable, task.slice))
            outputs.append(_write_slice(group, variable, task, data, options, config, tmp_dir))
    return SliceGroupResult(index=group.index, outputs=outputs, elapsed_s=time.perf_counter() - started)


@contextlib.contextmanager
def _slice_reader(group: SliceGroup) -> Iterator[Callable[[CubeVariable, CubeSlice], np.ndarray]]:
    """A function reading one slice's stored values; datasets opened once per group."""
    opened: dict[str, Any] = {}
    try:
        if group.format == "zarr":
            arrays, _ = zarr_arrays(group.source)

            def read(variable: CubeVariable, s: CubeSlice) -> np.ndarray:
                key = tuple(s.index[d] for d in variable.dims)
                try:
                    return np.asarray(arrays[variable.name][key + (slice(None), slice(None))])
                except Exception as err:
                    raise UnreadableCube(group.source, f"{variable.name} {s.index}: {type(err).__name__}: {err}") from err
        else:
            def read(variable: CubeVariable, s: CubeSlice) -> np.ndarray:
                name = variable.subdataset or str(Path(group.source).resolve())
                if name not in opened:
                    opened[name] = open_dataset(group.source, name, group.format)
                try:
                    return opened[name].read(s.band)
                except GDAL_ERRORS as err:
                    raise UnreadableCube(group.source, f"{variable.name} band {s.band}: "
                                         f"{geo_ops.gdal_reason(err)}") from err
        yield read
    finally:
        for ds in opened.values():
            ds.close()


def _position_tags(group: SliceGroup, variable: CubeVariable, s: CubeSlice) -> dict[str, str]:
    return {f"DIM_{dim}_INDEX": str(i) for dim, i in s.index.items()}


def _write_slice(group: SliceGroup, variable: CubeVariable, task: SliceTask, data: np.ndarray,
                 options: Mapping[str, str], config: Mapping[str, Any], tmp_dir: PathLike | None) -> SliceOutput:
    grid = variable.grid
    nodata = None if variable.nodata is None else float(variable.nodata)
    with geo_ops.staged_output(task.output_path, tmp_dir) as tmp:
        try:
            with rasterio.open("/vsimem/cube-slice", "w", driver="MEM", width=grid.width, height=grid.height,
                               count=1, dtype=data.dtype, crs=CRS.from_wkt(grid.crs_wkt),
                               transform=Affine(*grid.transform), nodata=nodata) as mem:
                mem.write(data, 1)
                mem.scales, mem.offsets = (variable.scale,), (variable.offset,)
                if variable.unit:
                    mem.units = (variable.unit,)
                mem.descriptions = (variable.name,)
                mem.update_tags(1, **variable.tags)
                mem.update_tags(**_position_tags(group, variable, task.slice), CUBE_VARIABLE=variable.name)
                # Overviews as to_cog writes any shape: no level that is no reduction across.
                rasterio.shutil.copy(mem, tmp, driver="COG",
                                     **geo_ops.shaped_cog_options(options, grid.width, grid.height))
        except GDAL_ERRORS as err:
            raise geo_ops.read_error(group.source, f"{variable.name} {task.slice.index}", err) from err
        geo_ops.verify_cog(tmp, config)
        size = os.path.getsize(tmp)
    return SliceOutput(variable=variable.name, index=task.slice.index, path=task.output_path,
                       size_bytes=size, cog_valid=True)
