"""The consumers of multidimensional outputs, for real: a NetCDF-4 converted by the app
(``cog_conversion`` on the embedded runtime, local storage, pgSTAC) is a time step that the real
titiler-pgstac renders from the item's own render (a float variable stretched and coloured as a
DEM is), and the COGs that xarray (with rioxarray, "the consumer for cubes") opens decode, by CF,
to exactly what xarray decodes from the source file: values, fill, scale and offset, time.

xarray and rioxarray come from requirements-dev.txt (the app does not use them).
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import cube_factory as cf
import cube_jobs
import stac_ops
from consumers import opaque_fraction, read_png, tile_of
from dashboard_checks import wait_for_job
from local_runtime import LocalRuntime

pytestmark = pytest.mark.services

COLLECTION = "consumer-cubes"
STEPS = 3
#: A regional grid of 0.05° cells: 10–20° E, 40–50° N.
LON = 10.0 + 0.05 * (np.arange(200) + 0.5)
LAT = 50.0 - 0.05 * (np.arange(200) + 0.5)


@pytest.fixture(scope="module")
def converted(pgstac_dsn, tmp_path_factory):
    """Two NetCDF-4 files through ``cog_conversion`` over HTTP: ``air.nc`` (float32 with a fill
    value) and ``packed.nc`` (int16 with scale_factor / add_offset)."""
    storage = tmp_path_factory.mktemp("storage")
    inputs = tmp_path_factory.mktemp("inputs")
    sources = {"air.nc": cf.write_netcdf(inputs / "air.nc", steps=STEPS, lon=LON, lat=LAT, packed=False),
               "packed.nc": cf.write_netcdf(inputs / "packed.nc", steps=STEPS, lon=LON, lat=LAT, packed=True)}
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(storage),
           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": pgstac_dsn}
    from settings import get_settings

    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("RMH_ASSET_BASE_URL", raising=False)
        get_settings.cache_clear()
        try:
            import activities
            import function_app
            from http_client import http

            store = activities.blob_store()
            store.create_container("rasters")
            for name, path in sources.items():
                store.upload_from_path("rasters", f"cubes/{name}", path)
            with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite", port=0) as rt:
                code, started = http("POST", f"{rt.base_url}/api/jobs/cog_conversion",
                                     {"prefix": "cubes/", "collection": COLLECTION})
                assert code == 202, (code, started)
                status = wait_for_job(started["statusQueryGetUri"])
            assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 2, status
            cat = activities.catalog()
            items = {name: [cat.get_item(COLLECTION, cube_jobs.slice_item_id(
                stac_ops.item_id_for_blob("rasters", f"cubes/{name}"), step)) for step in range(STEPS)]
                for name in sources}
        finally:
            get_settings.cache_clear()
    return {"sources": sources, "items": items, "storage": storage}


def test_titiler_renders_a_time_step_from_its_render_stretched_and_coloured(titiler, converted, artifact_dir):
    """The step's item has a render per variable (rescale from the COG's statistics, viridis, as
    for a DEM); titiler-pgstac's render link, followed as it is, gives a coloured and stretched
    tile whose outside is transparent, and its point query is the source's value."""
    item = converted["items"]["air.nc"][1]
    base = f"/collections/{COLLECTION}/items/{item.id}"
    render = titiler.get_json(f"{base}/renders")["renders"]["tas"]
    assert render["params"]["colormap_name"] == "viridis" and render["params"]["rescale"], render
    assert render["params"]["assets"] == ["tas"]
    link = next(link["href"] for link in render["links"] if link["href"].split("?")[0].endswith("tilejson.json"))
    tilejson = titiler.get_json(urllib.parse.unquote(link).replace("{tileMatrixSetId}", "WebMercatorQuad"))
    zoom = max(tilejson["minzoom"], 5)
    x, y = tile_of(20.0, 45.0, zoom)  # on the grid's east edge: the grid and, east of it, nothing
    url = tilejson["tiles"][0].replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y))
    status, body, headers = titiler.get(url)
    assert status == 200 and headers["content-type"] == "image/png", body[:500]
    (artifact_dir / "cube-step-render.png").write_bytes(body)
    tile = read_png(body)
    assert 0.2 < opaque_fraction(tile) < 1.0, opaque_fraction(tile)
    shown = tile[..., :3][tile[..., 3] > 0].astype(int)
    assert np.abs(shown[:, 0] - shown[:, 2]).mean() > 20, "viridis colours, not grey"
    assert np.percentile(shown[:, 1], 95) - np.percentile(shown[:, 1], 5) > 60, "stretched over the data"
    row, col = 57, 123
    point = titiler.get_json(f"{base}/point/{LON[col]},{LAT[row]}?assets=tas")
    assert point["values"] == [float(cf.stored_values(converted["sources"]["air.nc"], "tas")[1, row, col])], point


@pytest.mark.parametrize("name", ["air.nc", "packed.nc"])
def test_xarray_decodes_the_cogs_to_the_source_variable_exactly(converted, name):
    """Each step's COG opened with rioxarray as stored (its CF attributes: scale_factor,
    add_offset, _FillValue from the band) and decoded with xarray's CF rules, stacked over the
    items' times, equals xarray's decoding of the source file: values, missing pixels, units,
    times, coordinates."""
    import rioxarray
    import xarray as xr

    items = converted["items"][name]
    paths = [Path(urllib.parse.unquote(item.assets["tas"].href)) for item in items]
    assert all(p.is_file() and str(converted["storage"]) in str(p) for p in paths), paths
    slices = [rioxarray.open_rasterio(p, mask_and_scale=False).squeeze("band", drop=True) for p in paths]
    times = np.array([np.datetime64(item.datetime.replace(tzinfo=None), "ns") for item in items])
    written = xr.decode_cf(xr.concat(slices, dim="time").assign_coords(time=times).to_dataset(name="tas"))["tas"]
    with xr.open_dataset(converted["sources"][name]) as ds:
        source = ds["tas"].load()
    # A float32 variable comes back as float64 (the band's scale 1 and offset 0 are CF attributes
    # to rioxarray, and xarray decodes them in float64): the same numbers, exactly.
    assert written.dtype == source.dtype or (source.dtype == "float32" and written.dtype == "float64"), written.dtype
    narrowed = written.values.astype(source.dtype)
    np.testing.assert_array_equal(narrowed.astype(written.dtype), written.values)  # nothing lost narrowing
    np.testing.assert_array_equal(narrowed, source.values)  # NaN where the source has its fill
    assert int(np.isnan(source.values).sum()) == STEPS
    np.testing.assert_array_equal(written["time"].values, source["time"].values)
    np.testing.assert_allclose(written["x"].values, source["lon"].values, rtol=0, atol=1e-9)
    np.testing.assert_allclose(written["y"].values, source["lat"].values, rtol=0, atol=1e-9)
    assert written.attrs["units"] == source.attrs["units"] == "K"
    assert os.path.basename(paths[1]) == "tas_time00001.tif"
