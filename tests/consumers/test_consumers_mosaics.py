"""A collection is a map on arrival: a ``sync_container`` registers the collection's pgSTAC search,
and the real titiler-pgstac renders it from the URLs in the job's output.

Four float32 rasters (a DEM-like surface with nodata) meet at their edges in a 2 × 2 grid; the app
(embedded runtime, local storage, pgSTAC) syncs them with ``RMH_TILER_URL`` pointing at the
titiler-pgstac of the module. The TileJSON from the job's output gives a tile where all four meet,
and its pixels are rio-tiler's own mosaic of the four sources with the collection's render
(rescale, colormap). A second sync finds the same search: still one per collection.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_bounds

from consumers import artifacts_root, lonlat_centre, opaque_fraction, tile_of
import stac_ops
from dashboard_checks import wait_for_job
from local_runtime import LocalRuntime

pytestmark = pytest.mark.services

CONTAINER, COLLECTION = "mosaic-grid", "mosaic-grid"
#: 2 × 2 rasters of 256² pixels at 20 m in UTM 33N, meeting at (505120, 4985120).
ORIGIN, SIZE, RES = (500000.0, 4980000.0), 256, 20.0
NODATA = -9999.0


def _grid_rasters(folder) -> dict[str, str]:
    """The four sources: one smooth surface across the grid (so seams would show), nodata in the
    corner of the south-west one where the four meet."""
    paths = {}
    span = SIZE * RES
    for row in range(2):
        for col in range(2):
            west, south = ORIGIN[0] + col * span, ORIGIN[1] + row * span
            ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype("float32")
            gx, gy = xs + col * SIZE, (SIZE - 1 - ys) + row * SIZE
            data = (120.0 + 0.8 * gx + 0.5 * gy + 25.0 * np.sin(gx / 23.0) * np.cos(gy / 31.0)).astype("float32")
            if (row, col) == (0, 0):  # by the point where the four meet
                data[:40, -40:] = NODATA
            path = folder / f"r{row}c{col}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="float32",
                               crs="EPSG:32633", transform=from_bounds(west, south, west + span, south + span, SIZE, SIZE),
                               nodata=NODATA, tiled=True, blockxsize=256, blockysize=256) as dst:
                dst.write(data, 1)
            paths[f"grid/r{row}c{col}.tif"] = str(path)
    return paths


@pytest.fixture(scope="module")
def synced(pgstac_dsn, titiler, tmp_path_factory):
    """Two syncs of the grid through the job API (the second with ``rerun``): their outputs."""
    storage = tmp_path_factory.mktemp("storage")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(storage),
           "RMH_CATALOG_BACKEND": "pgstac", "RMH_PGSTAC_DSN": pgstac_dsn, "RMH_TILER_URL": titiler.url}
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
            store.create_container(CONTAINER)
            sources = _grid_rasters(tmp_path_factory.mktemp("inputs"))
            for name, path in sources.items():
                store.upload_from_path(CONTAINER, name, Path(path))
            outputs = []
            with LocalRuntime(function_app.app, db_path=tmp_path_factory.mktemp("hub") / "hub.sqlite", port=0) as rt:
                for rerun in (False, True):
                    code, started = http("POST", f"{rt.base_url}/api/jobs/sync_container",
                                         {"container": CONTAINER, "collection": COLLECTION, "rerun": rerun})
                    assert code == 202, (code, started)
                    status = wait_for_job(started["statusQueryGetUri"])
                    assert status["runtimeStatus"] == "Completed", status
                    outputs.append(status["output"])
            collection = activities.catalog().get_collection(COLLECTION)
        finally:
            get_settings.cache_clear()
    stored = {name: storage / CONTAINER / name for name in sources}
    return {"outputs": outputs, "sources": stored, "collection": collection}


def test_a_sync_registers_one_search_per_collection_and_a_second_sync_finds_it(synced, pgstac_dsn, titiler):
    first, second = synced["outputs"]
    assert first["done"] == 4 and second["skipped"] == 4, (first, second)
    mosaic, again = first["detail"]["catalog"]["mosaic"], second["detail"]["catalog"]["mosaic"]
    assert mosaic["registered"] and mosaic["search_id"], mosaic
    assert again["search_id"] == mosaic["search_id"] and not again["registered"] and not again["replaced"], again
    with psycopg.connect(pgstac_dsn) as conn:
        rows = conn.execute("SELECT hash, search, metadata FROM pgstac.searches "
                            "WHERE search->'collections' = %s::jsonb", (json.dumps([COLLECTION]),)).fetchall()
    assert [r[0] for r in rows] == [mosaic["search_id"]], rows
    search, metadata = rows[0][1], rows[0][2]
    assert search == {"collections": [COLLECTION], "filter-lang": "cql2-json"}
    collection = synced["collection"]
    assert metadata["type"] == "mosaic" and COLLECTION in metadata["name"] and metadata["assets"] == ["data"]
    assert metadata["bounds"] == collection.extent.spatial.bboxes[0]
    render = collection.extra_fields["renders"]["default"]
    assert metadata["defaults"]["default"] == {k: v for k, v in render.items() if k != "title"}, metadata
    # The zooms are rio-tiler's for the sources (Reader.minzoom / maxzoom in WebMercatorQuad).
    from rio_tiler.io import Reader

    zooms = []
    for path in synced["sources"].values():
        with Reader(str(path)) as reader:
            zooms.append((reader.minzoom, reader.maxzoom))
    assert (metadata["minzoom"], metadata["maxzoom"]) == (min(z[0] for z in zooms), max(z[1] for z in zooms)), zooms
    # titiler-pgstac reads the search as registered.
    info = titiler.get_json(f"/searches/{mosaic['search_id']}/info")
    assert info["search"]["metadata"]["type"] == "mosaic" and info["search"]["metadata"]["defaults"], info
    # The collection points at its search, and at the tiler's URLs of it.
    assert collection.extra_fields["rmh:mosaic_search"] == mosaic["search_id"]
    links = {link.rel: link.target for link in collection.links if isinstance(link.target, str)}
    assert links["tilejson"] == mosaic["links"]["tilejson"] and links["xyz"] == mosaic["links"]["tiles"]
    assert links["map"] == mosaic["links"]["viewer"] and links["tilejson"].startswith(titiler.url)


def test_the_tilejson_of_the_output_renders_where_the_items_meet_as_rio_tiler_reads_the_sources(synced, titiler):
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader
    from rio_tiler.mosaic import mosaic_reader

    mosaic = synced["outputs"][0]["detail"]["catalog"]["mosaic"]
    code, body, _ = titiler.get(mosaic["links"]["tilejson"].removeprefix(titiler.url))
    assert code == 200, body[:300]
    tilejson = json.loads(body)
    assert (tilejson["minzoom"], tilejson["maxzoom"]) == (mosaic["minzoom"], mosaic["maxzoom"]), tilejson
    # The point where the four rasters meet, one zoom below the finest: a tile over all four.
    zoom = mosaic["maxzoom"] - 1
    meet = ORIGIN[0] + SIZE * RES, ORIGIN[1] + SIZE * RES
    lon, lat = lonlat_centre("EPSG:32633", (meet[0], meet[1], meet[0], meet[1]))
    x, y = tile_of(lon, lat, zoom)
    url = tilejson["tiles"][0].replace("{z}", str(zoom)).replace("{x}", str(x)).replace("{y}", str(y))
    code, png, headers = titiler.get(url.removeprefix(titiler.url))
    assert code == 200 and headers.get("content-type") == "image/png", png[:300]
    out = artifacts_root() / "consumers" / "mosaic-at-ingest"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"titiler-{zoom}-{x}-{y}.png").write_bytes(png)
    served = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    # The items the tiler used for that tile, in its order (all four meet there).
    code, body, _ = titiler.get(f"/searches/{mosaic['search_id']}/tiles/WebMercatorQuad/{zoom}/{x}/{y}/assets")
    used = [entry["id"] for entry in json.loads(body)]
    assert len(used) == 4, used
    by_id = {stac_ops.item_id_for_blob(CONTAINER, name): str(path) for name, path in synced["sources"].items()}
    paths = [by_id[item_id] for item_id in used]

    def tile(path, tx, ty, tz, **kwargs):
        with Reader(path) as reader:
            return reader.tile(tx, ty, tz, **kwargs)

    # At the TileJSON's tile size (titiler-pgstac's tilejson serves 512² tiles).
    image, _ = mosaic_reader(paths, tile, x, y, zoom, tilesize=served.shape[0])
    render = synced["collection"].extra_fields["renders"]["default"]
    image.rescale(in_range=[tuple(r) for r in render["rescale"]])
    expected = np.asarray(Image.open(io.BytesIO(image.render(img_format="PNG", colormap=cmap.get(render["colormap_name"]))))
                          .convert("RGBA"))
    Image.fromarray(expected).save(out / f"rio-tiler-{zoom}-{x}-{y}.png")
    assert 0.2 < opaque_fraction(served) < 1.0, "the nodata corner and the outside transparent, the rest drawn"
    assert tilejson["tiles"][0].startswith(titiler.url), tilejson
    assert np.array_equal(served, expected), np.abs(served.astype(int) - expected.astype(int)).max()
    assert len(np.unique(served[served[..., 3] > 0][:, :3], axis=0)) > 50, "a stretched, coloured surface"
