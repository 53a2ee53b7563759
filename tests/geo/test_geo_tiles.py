"""plan_tiles / process_tile / build_mosaic: exact coverage, pixel-identical mosaics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rio_cogeo.cogeo import cog_validate

import geo_ops


def coverage(plan: geo_ops.TilePlan) -> np.ndarray:
    counts = np.zeros((plan.height, plan.width), dtype="uint8")
    for tile in plan.tiles:
        w = tile.window
        counts[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    return counts


def run_tiles(src, plan) -> list[geo_ops.TileResult]:
    results = [geo_ops.process_tile(src, tile) for tile in plan.tiles]
    for result in results:
        ok, errors, warnings = cog_validate(result.path, strict=True, quiet=True)
        assert ok, errors + warnings
    return results


def test_plan_covers_exactly_once_and_is_deterministic(make_raster, tmp_path):
    src = make_raster(width=1000, height=700)
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "t"), tile_size=256)
    assert (plan.rows, plan.cols, len(plan.tiles)) == (3, 4, 12)
    assert np.all(coverage(plan) == 1)
    assert [t.index for t in plan.tiles] == list(range(12))
    assert plan.tiles[-1].window.model_dump() == {"col_off": 750, "row_off": 467,
                                                  "width": 250, "height": 233}
    again = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "t"), tile_size=256)
    assert again == plan
    assert len({t.output_path for t in plan.tiles}) == 12
    json.dumps(plan.model_dump(mode="json"))


def test_tiles_are_balanced_without_slivers(make_raster, tmp_path):
    """The demo's case: a width just over a multiple of the tile size gives equal tiles, not a
    sliver (3,100 px at 1,024 was three 1,024-px tiles and a 28-px one)."""
    src = make_raster(width=3100, height=2049)
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "t"), tile_size=1024)
    widths = {t.window.width for t in plan.tiles}
    heights = {t.window.height for t in plan.tiles}
    assert (plan.rows, plan.cols) == (3, 4)
    assert max(widths) - min(widths) <= 1 and max(heights) - min(heights) <= 1, (widths, heights)
    assert max(widths) <= 1024 and max(heights) <= 1024 and min(widths) >= 700
    assert np.all(coverage(plan) == 1)


def test_tile_size_from_budget(make_raster, tmp_path):
    src = make_raster(width=3000, height=2000)
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path), max_pixels=1100 * 1100)
    assert plan.tile_size == 1024
    assert all(t.window.width * t.window.height <= 1100 * 1100 for t in plan.tiles)
    assert np.all(coverage(plan) == 1)
    with pytest.raises(geo_ops.InvalidOption, match="below one"):
        geo_ops.plan_tiles(src, output_prefix=str(tmp_path), max_pixels=100)


def test_plan_in_target_crs_uses_the_warp_grid(shared_rasters, tmp_path):
    src = shared_rasters / "RGB.byte.tif"
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path), tile_size=300,
                              dst_crs="EPSG:3857")
    whole = geo_ops.to_cog(src, tmp_path / "whole.tif", dst_crs="EPSG:3857")
    assert plan.warped and plan.epsg == 3857
    assert (plan.width, plan.height) == (whole.width, whole.height)
    assert np.all(coverage(plan) == 1)
    left, top = plan.transform[2], plan.transform[5]
    assert (left, top) == pytest.approx((whole.bounds[0], whole.bounds[3]))


@pytest.mark.parametrize("variant_kwargs", [
    dict(count=3, nodata=0, crs="EPSG:32633"),
    dict(count=1, dtype="float32", nodata=float("nan"), tiled=False),
    dict(count=3, alpha=True, crs="EPSG:3857"),
    dict(count=2, dtype="int16", nodata=-9999, compress="deflate", blocksize=128),
], ids=["rgb-nodata", "float-nan-striped", "rgb-alpha", "int16-deflate"])
def test_mosaic_of_tiles_equals_source(make_raster, tmp_path, variant_kwargs):
    src = make_raster(width=1100, height=900, **variant_kwargs)
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=512)
    results = run_tiles(src, plan)
    mosaic = geo_ops.build_mosaic([r.path for r in results], tmp_path / "mosaic.vrt")
    assert mosaic.tile_count == len(plan.tiles) == 6
    with rasterio.open(mosaic.path) as vrt, rasterio.open(src) as ref:
        assert (vrt.width, vrt.height, vrt.transform, vrt.crs) == (
            ref.width, ref.height, ref.transform, ref.crs)
        np.testing.assert_array_equal(vrt.read(), ref.read())
        np.testing.assert_array_equal(vrt.dataset_mask(), ref.dataset_mask())
        assert str(vrt.nodata) == str(ref.nodata)
    json.dumps(mosaic.model_dump(mode="json"))


def test_real_raster_tiles_mosaic(shared_rasters, tmp_path):
    src = shared_rasters / "RGB.byte.tif"
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=128)
    results = run_tiles(src, plan)
    assert sum(r.is_empty for r in results) >= 1  # the nodata corners of the Landsat scene
    mosaic = geo_ops.build_mosaic([r.path for r in results], tmp_path / "m.vrt")
    assert mosaic.epsg == 32618 and mosaic.bbox[0] == pytest.approx(-78.96, abs=0.01)
    with rasterio.open(mosaic.path) as vrt, rasterio.open(src) as ref:
        np.testing.assert_array_equal(vrt.read(), ref.read())
        np.testing.assert_array_equal(vrt.read_masks(), ref.read_masks())


def test_internal_mask_survives_tiling(shared_rasters, tmp_path):
    src = shared_rasters / "goes.tif"  # JPEG with an internal (per-dataset) mask
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=256)
    results = run_tiles(src, plan)
    mosaic = geo_ops.build_mosaic([r.path for r in results], tmp_path / "m.vrt")
    assert mosaic.epsg is None
    with rasterio.open(mosaic.path) as vrt, rasterio.open(src) as ref:
        np.testing.assert_array_equal(vrt.dataset_mask(), ref.dataset_mask())


def test_warped_tiles_form_the_warp_grid(shared_rasters, tmp_path):
    src = shared_rasters / "RGB.byte.tif"
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=256,
                              dst_crs="EPSG:3857")
    results = run_tiles(src, plan)
    mosaic = geo_ops.build_mosaic([r.path for r in results], tmp_path / "m.vrt")
    whole = geo_ops.to_cog(src, tmp_path / "whole.tif", dst_crs="EPSG:3857")
    with rasterio.open(mosaic.path) as vrt, rasterio.open(whole.path) as ref:
        assert (vrt.width, vrt.height) == (ref.width, ref.height)
        assert vrt.transform.almost_equals(ref.transform)
        agree = (vrt.read() == ref.read()).mean()
    assert agree > 0.95  # nearest neighbour; only chunk-edge approximation differs


def test_mosaic_rejects_incompatible_tiles(make_raster, tmp_path):
    a = make_raster(crs="EPSG:4326")
    b = make_raster(crs="EPSG:3857")
    with pytest.raises(geo_ops.IncompatibleTiles, match="differs"):
        geo_ops.build_mosaic([a, b], tmp_path / "bad.vrt")
    with pytest.raises(geo_ops.InvalidOption):
        geo_ops.build_mosaic([], tmp_path / "none.vrt")


def test_mosaic_paths_are_absolute(make_raster, tmp_path, monkeypatch):
    src = make_raster(width=600, height=300)
    monkeypatch.chdir(tmp_path)
    plan = geo_ops.plan_tiles(src, output_prefix="rel_tiles", tile_size=512)
    results = run_tiles(src, plan)
    mosaic = geo_ops.build_mosaic([r.path for r in results], "rel.vrt")
    text = (tmp_path / "rel.vrt").read_text()
    assert str(tmp_path / "rel_tiles") in text
    with rasterio.open(tmp_path / mosaic.path) as vrt:
        assert vrt.width == 600


def test_mosaic_with_relative_paths_moves_with_its_tiles(make_raster, tmp_path):
    """Tiles named relative to the VRT, in a folder whose name holds XML's special characters:
    the VRT still opens, with the same pixels, once the folder is moved."""
    src = make_raster(width=1100, height=600)
    folder = tmp_path / "R&D <draft>"
    plan = geo_ops.plan_tiles(src, output_prefix=str(folder / "tiles"), tile_size=512)
    results = run_tiles(src, plan)
    relative = [f"tiles/{Path(r.path).name}" for r in results]
    geo_ops.build_mosaic([r.path for r in results], folder / "mosaic.vrt", relative_paths=relative)
    assert str(tmp_path) not in (folder / "mosaic.vrt").read_text()
    moved = folder.rename(tmp_path / "moved")
    with rasterio.open(moved / "mosaic.vrt") as vrt, rasterio.open(src) as ref:
        np.testing.assert_array_equal(vrt.read(), ref.read())


def test_tile_is_a_self_contained_small_payload(shared_rasters, tmp_path):
    plan = geo_ops.plan_tiles(shared_rasters / "goes.tif", output_prefix=str(tmp_path),
                              tile_size=256, dst_crs="EPSG:3857", resampling="bilinear")
    payload = plan.tiles[0].model_dump(mode="json")
    assert payload["dst_crs"] == "EPSG:3857" and payload["resampling"] == "bilinear"
    assert len(json.dumps(payload)) < 1024
    tile = geo_ops.Tile.model_validate(json.loads(json.dumps(payload)))
    result = geo_ops.process_tile(shared_rasters / "goes.tif", tile)
    assert result.path == tile.output_path and result.width == tile.window.width


def test_tile_size_from_byte_budget(make_raster, tmp_path):
    src = make_raster(width=3000, height=3000, count=4, dtype="float32")
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path), max_tile_bytes=16 * 2**20)
    assert plan.tile_size == 1024  # 16 MiB / 16 bytes per pixel = 1024 x 1024
    assert np.all(coverage(plan) == 1)


def test_mosaic_to_virtual_destination_does_not_copy_tiles(shared_rasters, tmp_path):
    src = shared_rasters / "shade.tif"
    plan = geo_ops.plan_tiles(src, output_prefix=str(tmp_path / "tiles"), tile_size=512)
    results = run_tiles(src, plan)
    dst = f"/vsimem/mosaic_{tmp_path.name}/m.vrt"
    geo_ops.build_mosaic([r.path for r in results], dst)
    try:
        with rasterio.open(dst) as vrt, rasterio.open(src) as ref:
            np.testing.assert_array_equal(vrt.read(), ref.read())
            assert sorted(vrt.files[1:]) == sorted(r.path for r in results)
        assert not rasterio.shutil.exists(f"/vsimem/mosaic_{tmp_path.name}/tile_r0000_c0000.tif")
    finally:
        rasterio.shutil.delete(dst, driver="VRT")
