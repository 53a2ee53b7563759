"""Compression profiles through the job API: LERC's error bound on the single-file and the tiled
path, and a lossy bound refused per file for integer data."""
from __future__ import annotations

import numpy as np
import rasterio
from rio_cogeo.cogeo import cog_validate

from raster_factory import write_raster


def open_blob(store, container, name):
    gdal = store.gdal_read_path(container, name)
    env = rasterio.Env(**gdal.config)
    env.__enter__()
    return env, rasterio.open(gdal.path)


def test_conversions_take_the_lerc_error_bound(host, store, tmp_path):
    write_raster(tmp_path / "dem.tif", width=700, height=600, dtype="float32", nodata=-9999.0,
                 crs="EPSG:32633")
    write_raster(tmp_path / "counts.tif", width=300, height=300, dtype="int16", nodata=-1,
                 crs="EPSG:32633")
    store.create_container("rasters")  # whichever module runs first in this Azurite
    for name in ("dem.tif", "counts.tif"):
        store.upload_from_path("rasters", f"lerc/{name}", tmp_path / name)
    status = host.run("cog_conversion", {"prefix": "lerc/", "output_container": "lerc",
                                         "profile": "lerc", "max_z_error": 0.5, "catalog": False})
    output = status["output"]
    assert (output["done"], output["failed"]) == (1, 1), output
    failure = output["failures"][0]
    assert failure["name"] == "lerc/counts.tif" and failure["error"] == "InvalidOption"
    assert "floating-point data, not int16" in failure["reason"], failure
    env, cog = open_blob(store, "lerc", "rasters/lerc/dem.tif")
    with env, cog, rasterio.open(tmp_path / "dem.tif") as src:
        assert cog_validate(cog.name, strict=True)[0]
        ref, valid = src.read(1), src.dataset_mask() > 0
        data = cog.read(1)
        assert np.array_equal(cog.dataset_mask() > 0, valid)
        ulp = float(np.spacing(np.abs(ref[valid]).max()))  # LERC's bound holds before rounding
        assert 0 < np.abs(data[valid] - ref[valid]).max() <= 0.5 + ulp
    tiled = host.run("process_tiled_raster", {"blob": "lerc/dem.tif", "tile_size": 256,
                                              "output_container": "lerc-tiles", "catalog": False,
                                              "profile": "lerc_deflate", "max_z_error": 0.25})
    assert tiled["output"]["done"] == tiled["output"]["detail"]["tiles"]["count"] > 1, tiled
    env, mosaic = open_blob(store, "lerc-tiles", "rasters/lerc/dem/mosaic.vrt")
    with env, mosaic:
        assert 0 < np.abs(mosaic.read(1)[valid] - ref[valid]).max() <= 0.25 + ulp
