"""Rasters placed on the globe without a geotransform: by ground control points (GCPs) or by
rational polynomial coefficients (RPCs), warped as ``gdalwarp`` warps them.

* **GCPs**: a polynomial fitted to the points, of the order gdalwarp chooses by their count
  (GDAL's ``GDALCreateGCPTransformer``: order 1 below 6 GCPs, order 2 from 6 on; order 3 only
  when asked, GDAL finds it unstable), or of order 1-3 on request, or a thin-plate spline through
  every point (``gdalwarp -tps``). The output is in the GCPs' CRS unless another is asked for.
* **RPCs**: the sensor model at one height, the RPCs' own ``HEIGHT_OFF`` (GDAL's default), or
  heights from a DEM when one is configured (``RPC_DEM``). The output is in EPSG:4326 (RPCs
  map to WGS 84 longitude/latitude) unless another CRS is asked for.

What was used is written into the output as tags (``RMH_GEOREFERENCING``, ``RMH_GCP_COUNT``,
``RMH_GCP_TRANSFORM``, ``RMH_RPC_HEIGHT``, ``RMH_RPC_DEM``), so the item of the output can say
it. The warp is GDAL's (``rasterio.warp.reproject`` from the dataset, which hands GDAL's
transformer the dataset's own GCPs or RPCs, chunked within ``warp_mem_limit``): rasterio's
``WarpedVRT`` cannot be used here, since onto a given grid it builds its transformer from the
source's geotransform alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.io import DatasetReader
from rasterio.transform import GCPTransformer, RPCTransformer
from rasterio.warp import calculate_default_transform, reproject

from raster_errors import InvalidOption

Georeferencing = Literal["geotransform", "gcps", "rpcs"]
#: How GCPs are turned into a transformation: ``polynomial`` (the order gdalwarp chooses by the
#: count), ``polynomial-1`` .. ``polynomial-3``, or ``tps`` (thin-plate spline).
GCP_TRANSFORMS = ("polynomial", "polynomial-1", "polynomial-2", "polynomial-3", "tps")
GcpTransform = Literal["polynomial", "polynomial-1", "polynomial-2", "polynomial-3", "tps"]

#: Tags an output keeps of how its source was placed on the globe.
TAG_GEOREFERENCING = "RMH_GEOREFERENCING"
TAG_GCP_COUNT = "RMH_GCP_COUNT"
TAG_GCP_TRANSFORM = "RMH_GCP_TRANSFORM"
TAG_RPC_HEIGHT = "RMH_RPC_HEIGHT"
TAG_RPC_DEM = "RMH_RPC_DEM"


def georeferencing(ds: DatasetReader) -> Georeferencing | None:
    """How ``ds`` is placed on the globe: a CRS and a geotransform, GCPs with a CRS, RPCs, or
    not at all (None; GCPs without a CRS place nothing)."""
    if ds.crs is not None and not ds.transform.is_identity:
        return "geotransform"
    gcps, gcp_crs = ds.gcps
    if gcps and gcp_crs is not None:
        return "gcps"
    if ds.rpcs is not None:
        return "rpcs"
    return "geotransform" if ds.crs is not None else None


def is_sensor_placed(ds: DatasetReader) -> bool:
    """Placed by GCPs or RPCs rather than a geotransform: converting it means warping it."""
    return georeferencing(ds) in ("gcps", "rpcs")


def polynomial_order(count: int) -> int:
    """The polynomial order gdalwarp fits to ``count`` GCPs when none is asked for (GDAL's
    ``GDALCreateGCPTransformer`` with order 0): 1 below 6 points, else 2."""
    return 1 if count < 6 else 2


def resolved_gcp_transform(count: int, gcp_transform: str = "polynomial") -> str:
    """``gcp_transform`` with the automatic order made explicit (``polynomial-2``), checked
    against the points there are (order n needs (n + 1)(n + 2) / 2 of them)."""
    if gcp_transform not in GCP_TRANSFORMS:
        raise InvalidOption(gcp_transform, f"unknown GCP transform (known: {', '.join(GCP_TRANSFORMS)})")
    if gcp_transform == "tps":
        if count < 3:
            raise InvalidOption(gcp_transform, f"a thin-plate spline needs at least 3 GCPs, not {count}")
        return "tps"
    order = polynomial_order(count) if gcp_transform == "polynomial" else int(gcp_transform[-1])
    needed = (order + 1) * (order + 2) // 2
    if count < needed:
        raise InvalidOption(gcp_transform, f"a polynomial of order {order} needs at least {needed} GCPs, "
                                           f"the raster has {count}")
    return f"polynomial-{order}"


def rpc_height(ds: DatasetReader) -> float:
    """The height the RPC model is evaluated at without a DEM: the RPCs' ``HEIGHT_OFF``."""
    return float(ds.rpcs.height_off)


def source_crs(ds: DatasetReader) -> CRS:
    """The CRS a GCP or RPC raster's pixels are placed in: the GCPs', or EPSG:4326 for RPCs."""
    return ds.gcps[1] if georeferencing(ds) == "gcps" else CRS.from_epsg(4326)


def transformer_options(ds: DatasetReader, gcp_transform: str = "polynomial",
                        rpc_dem: str | None = None) -> dict[str, str]:
    """GDAL's transformer options for a GCP or RPC raster (``METHOD`` and its parameters)."""
    if georeferencing(ds) == "gcps":
        method = resolved_gcp_transform(len(ds.gcps[0]), gcp_transform)
        if method == "tps":
            return {"METHOD": "GCP_TPS"}
        return {"METHOD": "GCP_POLYNOMIAL", "MAX_GCP_ORDER": method[-1]}
    if rpc_dem:
        return {"METHOD": "RPC", "RPC_DEM": rpc_dem}
    return {"METHOD": "RPC", "RPC_HEIGHT": repr(rpc_height(ds))}


def provenance_tags(ds: DatasetReader, gcp_transform: str = "polynomial", rpc_dem: str | None = None
                    ) -> dict[str, str]:
    """Tags saying how an output warped from ``ds`` was placed: what the item of the output tells."""
    kind = georeferencing(ds)
    if kind == "gcps":
        count = len(ds.gcps[0])
        return {TAG_GEOREFERENCING: "gcps", TAG_GCP_COUNT: str(count),
                TAG_GCP_TRANSFORM: resolved_gcp_transform(count, gcp_transform)}
    if kind == "rpcs":
        return {TAG_GEOREFERENCING: "rpcs", **({TAG_RPC_DEM: dem_name(rpc_dem)} if rpc_dem else
                                               {TAG_RPC_HEIGHT: repr(rpc_height(ds))})}
    return {}


def dem_name(rpc_dem: str) -> str:
    """What an item says of a configured DEM: its file name (never a path with credentials)."""
    return rpc_dem.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def warp_grid(ds: DatasetReader, dst_crs: CRS, resolution: float | tuple[float, float] | None = None,
              options: Mapping[str, str] | None = None) -> tuple[Affine, int, int]:
    """The output grid of warping a GCP or RPC raster into ``dst_crs``, as gdalwarp suggests it
    (``GDALSuggestedWarpOutput2`` with the same transformer); a requested resolution keeps the
    suggested top-left corner and rounds the size to the nearest pixel, as gdalwarp does."""
    options = dict(options or transformer_options(ds))
    kind = georeferencing(ds)
    geo = {"gcps": ds.gcps[0]} if kind == "gcps" else {"rpcs": ds.rpcs}
    transform, width, height = calculate_default_transform(source_crs(ds), dst_crs, ds.width, ds.height,
                                                           **geo, **options)
    if resolution is None:
        return transform, width, height
    xres, yres = (resolution, resolution) if isinstance(resolution, (int, float)) else resolution
    width = max(1, int(width * transform.a / xres + 0.5))
    height = max(1, int(height * -transform.e / yres + 0.5))
    return Affine(xres, 0, transform.c, 0, -yres, transform.f), width, height


def warp_into(ds: DatasetReader, destination: Any, *, dst_crs: CRS, dst_transform: Affine,
              resampling: Resampling, nodata: float | None, alpha: int, options: Mapping[str, str],
              warp_mem_limit_mb: int, threads: int | str) -> None:
    """Warp every band of ``ds`` by its GCPs or RPCs into ``destination`` (an open dataset's
    bands, ``rasterio.band(dst, indexes)``, or an array); ``alpha`` is the destination's alpha
    band (0: none, nodata marks what the source does not cover)."""
    num_threads = (os.cpu_count() or 1) if str(threads).upper() == "ALL_CPUS" else int(threads)
    src_alpha = next((i for i, c in enumerate(ds.colorinterp, start=1) if c == ColorInterp.alpha), 0)
    indexes = [i for i in ds.indexes if i != src_alpha]
    reproject(rasterio.band(ds, indexes), destination, src_nodata=nodata, dst_nodata=nodata, dst_crs=dst_crs,
              dst_transform=dst_transform, resampling=resampling, dst_alpha=alpha, src_alpha=src_alpha,
              init_dest_nodata=True, warp_mem_limit=warp_mem_limit_mb, num_threads=num_threads,
              **dict(options))


class PixelMapping:
    """Pixel positions (column, row; corners at whole numbers) of a GCP or RPC raster to
    coordinates of its ``crs`` and back, by GDAL's transformer: what a footprint of the raster
    as it lies (cataloged in place, not warped) is drawn from."""

    def __init__(self, ds: DatasetReader, rpc_dem: str | None = None) -> None:
        self.kind = georeferencing(ds)
        self.crs = source_crs(ds)
        if self.kind == "gcps":
            self._transformer = GCPTransformer(ds.gcps[0])
            self.method = resolved_gcp_transform(len(ds.gcps[0]))
        else:
            self._transformer = (RPCTransformer(ds.rpcs, RPC_DEM=rpc_dem) if rpc_dem
                                 else RPCTransformer(ds.rpcs, RPC_HEIGHT=rpc_height(ds)))
            self.method = "rpc"

    def forward(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.atleast_1d(np.asarray(cols, dtype="float64")), np.atleast_1d(np.asarray(rows, dtype="float64"))
        xs, ys = self._transformer.xy(rows, cols, offset="ul")
        return np.asarray(xs, dtype="float64"), np.asarray(ys, dtype="float64")

    def inverse(self, x: float, y: float) -> tuple[float, float]:
        row, col = self._transformer.rowcol([x], [y], op=lambda v: v)
        return float(np.asarray(col).ravel()[0]), float(np.asarray(row).ravel()[0])

    def close(self) -> None:
        self._transformer.close()
