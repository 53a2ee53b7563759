"""Issue 23 §1 through the jobs, on the local-directory backend: rasters placed by GCPs or RPCs, of
Mars, complex SAR data and sources with odd overviews are converted and cataloged; and a file
reported failed leaves nothing behind, with a failure injected at every step after the
conversion (thumbnail, item, each upload, the catalog write; a tile, the mosaic, the tiles'
items)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rio_cogeo.cogeo import cog_validate

import raster_factory
from services import applied_local_env


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("any-raster")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "rasters",
           "RMH_OUTPUT_CONTAINER": "cogs", "RMH_MAX_PIXELS_PER_TASK": str(512 * 512)}
    yield from applied_local_env(env)


def mars(path):
    values = raster_factory.pattern(0, 200, 200, 200, 0, dtype="float32", seed=5)
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="float32",
                       crs="IAU_2015:49910", transform=from_bounds(-3e5, -3e5, 3e5, 3e5, 200, 200)) as dst:
        dst.write(values[np.newaxis])
    return path


def odd_overviews(path):
    raster_factory.write_raster(path, width=500, height=450)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([1], Resampling.nearest)
    return path


@pytest.fixture(scope="module")
def others(store, tmp_path_factory):
    """The input container's ``others/``: one raster of each class the corpus trial found."""
    tmp = tmp_path_factory.mktemp("others")
    files = {
        "gcps.tif": raster_factory.write_gcp_raster(tmp / "gcps.tif", grid=5),
        "rpcs.tif": raster_factory.write_rpc_raster(tmp / "rpcs.tif"),
        "mars.tif": mars(tmp / "mars.tif"),
        "slc.tif": raster_factory.write_complex(tmp / "slc.tif", dtype="complex_int16", width=300, height=200),
        "overviews.tif": odd_overviews(tmp / "overviews.tif"),
    }
    store.create_container("rasters")
    for name, path in files.items():
        store.upload_from_path("rasters", f"others/{name}", path)
    return files


def outputs(store, prefix):
    return sorted(b.name for b in store.iter_blobs("cogs", prefix)) if store.container_exists("cogs") else []


def items(catalog_dir: Path, collection: str) -> dict[str, dict]:
    """The static catalog's items of ``collection`` by id."""
    import json

    return {p.name.removesuffix(".json"): json.loads(p.read_text())
            for p in (catalog_dir / collection / "items").glob("*.json")}


def test_every_class_converts_and_catalogs(host, store, others, service_env):
    status = host.run("cog_conversion", {"prefix": "others/", "collection": "others", "resampling": "nearest"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["failed"] == 0, output["failures"]
    assert output["done"] == len(others), output
    for name in others:
        cog = store.gdal_read_path("cogs", f"rasters/others/{Path(name).stem}.tif").path
        ok, errors, warnings = cog_validate(cog, strict=True, quiet=True)
        assert ok, (name, errors, warnings)
    found = items(Path(service_env["RMH_STATIC_CATALOG_DIR"]), "others")
    props = {i.split("~")[-1]: item["properties"] for i, item in found.items()}
    assert len(props) == len(others)
    assert props["gcps.tif"]["rmh:gcp_transform"] == "polynomial-2"
    assert props["rpcs.tif"]["rmh:rpc_height"] == 500.0
    assert props["mars.tif"]["ssys:targets"] == ["Mars"]
    assert props["slc.tif"]["rmh:data_type"] == "cint16"
    synced = host.run("sync_container", {"container": "rasters", "collection": "others-in-place"})
    assert synced["output"]["failed"] == 0, synced["output"]["failures"]


@contextlib.contextmanager
def failing(target, name, condition, when=lambda *a, **k: True):
    """``target.name`` raising ``condition`` (a named one) when ``when(*args)`` holds."""
    original = getattr(target, name)

    def broken(*args, **kwargs):
        if when(*args, **kwargs):
            raise condition
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, name, broken)
        yield


def injected_steps():
    import catalogs
    import geo_ops
    import stac_ops
    import static_catalog
    import storage

    refused = storage.StorageRefused("injected: the store refuses this upload")
    return {
        "thumbnail": (geo_ops, "write_thumbnail", geo_ops.InvalidOption("x", "injected"), None),
        "item": (stac_ops, "item_from_raster", stac_ops.ItemValidationError("injected: invalid item"), None),
        "thumbnail-upload": (storage.LocalDirStore, "upload_from_path", refused,
                             lambda self, c, name, *a, **k: name.endswith(".png")),
        "cog-upload": (storage.LocalDirStore, "upload_from_path", refused,
                       lambda self, c, name, *a, **k: name.endswith(".tif")),
        "catalog-write": (static_catalog.StaticCatalog, "upsert_items",
                          catalogs.CollectionNotFound("injected: collection gone"), None),
    }


@pytest.mark.parametrize("step", ["thumbnail", "item", "thumbnail-upload", "cog-upload", "catalog-write"])
def test_a_file_failed_at_any_step_leaves_nothing_behind(host, store, service_env, tmp_path, step):
    name = f"fail/{step}.tif"
    store.create_container("rasters")
    store.upload_from_path("rasters", name, raster_factory.write_raster(tmp_path / "a.tif", width=300, height=200))
    target, attribute, condition, when = injected_steps()[step]
    with failing(target, attribute, condition, when or (lambda *a, **k: True)):
        status = host.run("cog_conversion", {"blobs": [name], "collection": f"fail-{step}", "rerun": True})
    output = status["output"]
    assert output["failed"] == 1 and output["failures"][0]["error"] == type(condition).__name__, output
    assert outputs(store, "rasters/fail/") == []
    assert items(Path(service_env["RMH_STATIC_CATALOG_DIR"]), f"fail-{step}") == {}


@pytest.mark.parametrize("step", ["tile", "mosaic", "tile-items"])
def test_a_tiled_file_failed_at_any_step_leaves_nothing_behind(host, store, service_env, tmp_path, step):
    """Tiled (over the per-task budget): a tile that fails, the mosaic or the tiles' items
    failing, and the tiles the others wrote, their thumbnails, items and mosaic are removed."""
    import geo_ops
    import static_catalog

    name = f"tiled/{step}.tif"
    store.create_container("rasters")
    store.upload_from_path("rasters", name, raster_factory.write_raster(tmp_path / "b.tif", width=900, height=700))
    injections = {
        "tile": (geo_ops, "process_tile", geo_ops.UnreadableRaster("x", "injected"),
                 lambda src, tile, *a, **k: tile.index == 2),
        "mosaic": (geo_ops, "build_mosaic", geo_ops.IncompatibleTiles("x", "injected"), None),
        "tile-items": (static_catalog.StaticCatalog, "upsert_items",
                       __import__("catalogs").CollectionNotFound("injected"), None),
    }
    target, attribute, condition, when = injections[step]
    with failing(target, attribute, condition, when or (lambda *a, **k: True)):
        status = host.run("cog_conversion", {"blobs": [name], "collection": f"tiled-{step}", "rerun": True},
                          timeout=300)
    output = status["output"]
    assert output["failed"] == 1, output
    assert outputs(store, "rasters/tiled/") == []
    assert items(Path(service_env["RMH_STATIC_CATALOG_DIR"]), f"tiled-{step}") == {}
