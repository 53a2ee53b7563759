"""Preview tiles benchmark: warm 256² tiles of the app's preview route against rio-tiler's own
``Reader.tile`` on the same COGs, in the same run.

    python benchmarks/bench_tiles.py [--tiles 16] [--repeats 5] [--workdir DIR]

Inputs (generated): the demo DEM (``make demo``'s 3,072 x 2,048 float32, UTM 33N) and 8-bit RGB
imagery rendered from it, converted to COGs by a real ``cog_conversion`` on the embedded runtime
(local storage, static catalog: the embedded defaults). For each raster, three zooms (its
maxzoom, maxzoom - 2 and maxzoom - 4 as rio-tiler gives them) and ``--tiles`` tiles inside it per
zoom, warmed once, then timed ``--repeats`` times, the two candidates interleaved tile by tile:

* ``ours``: the route's function (``function_app.preview_tile`` with an ``HttpRequest``): route
  parsing, the item looked up through the catalog (remembered for 30 s), the asset resolved to
  its blob, opened by the allow-listed drivers, the tile read, styled with the item's render and
  encoded as PNG;
* ``rio_tiler``: ``with Reader(cog) as r: r.tile(x, y, z)`` then the same rescale, colormap and
  PNG encoding (what a tiler does per request);
* ``http`` (reported, not in the ratio): the same route over HTTP through the embedded host.

Per raster and zoom: p50 / p95 in milliseconds of each and the ratio of the p50s (goal: ours
<= 1.2 x rio-tiler). The LAST stdout line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

GOAL = 1.2
KEY = "bench-tiles-key-0123456789"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def make_inputs(work: Path) -> dict[str, Path]:
    import cli
    import raster_factory

    dem = cli.write_sample_raster(work / "sample-dem.tif")
    rgb = raster_factory.write_imagery_from_terrain(dem, work / "imagery-rgb8.tif")
    return {"dem": dem, "rgb": rgb}


def configure(work: Path) -> None:
    os.environ.update({"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(work / "storage"),
                       "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(work / "catalog"),
                       "RMH_TEMP_DIR": str(work / "tmp")})
    for key in ("RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN", "RMH_ASSET_BASE_URL", "RMH_TILER_URL",
                "RMH_STATIC_CATALOG_CONTAINER"):
        os.environ.pop(key, None)


def convert(runtime_url: str, sources: dict[str, Path]) -> None:
    import activities

    store = activities.blob_store()
    store.create_container("rasters")
    for name, path in sources.items():
        store.upload_from_path("rasters", f"bench/{name}.tif", path)
    body = json.dumps({"blobs": [f"bench/{name}.tif" for name in sources], "collection": "bench-tiles"}).encode()
    request = urllib.request.Request(f"{runtime_url}/api/jobs/cog_conversion", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "x-functions-key": KEY})
    with urllib.request.urlopen(request, timeout=60) as answer:
        status_url = json.loads(answer.read())["statusQueryGetUri"]
    while True:
        with urllib.request.urlopen(status_url, timeout=60) as answer:
            status = json.loads(answer.read())
        if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            break
        time.sleep(0.2)
    output = status.get("output") or {}
    if status["runtimeStatus"] != "Completed" or output.get("done") != len(sources):
        raise SystemExit(f"conversion failed: {json.dumps(output)[:1000]}")


def tiles_of(cog: Path, zoom: int, count: int) -> list[tuple[int, int, int]]:
    """``count`` tiles at ``zoom`` around the raster's centre, all inside it."""
    import morecantile
    import rasterio
    import rasterio.warp

    tms = morecantile.tms.get("WebMercatorQuad")
    with rasterio.open(cog) as src:
        west, south, east, north = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    inside = [t for t in tms.tiles(west, south, east, north, [zoom])
              if all(a <= b for a, b in zip((west, south), tms.bounds(t)[:2])) and
              all(a >= b for a, b in zip((east, north), tms.bounds(t)[2:]))]
    centre = tms.tile((west + east) / 2, (south + north) / 2, zoom)
    inside.sort(key=lambda t: (t.x - centre.x) ** 2 + (t.y - centre.y) ** 2)
    return [(t.z, t.x, t.y) for t in inside[:count]] or [(centre.z, centre.x, centre.y)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rmh-bench-tiles-"))
    work.mkdir(parents=True, exist_ok=True)
    configure(work)

    import azure.functions as func
    from rio_tiler.colormap import cmap
    from rio_tiler.io import Reader

    import activities
    import function_app
    import stac_ops
    from local_runtime import LocalRuntime

    sources = make_inputs(work)
    handler = function_app.preview_tile._function.get_user_function()
    loop = asyncio.new_event_loop()
    report: dict = {"goal_ratio": GOAL, "tiles_per_zoom": args.tiles, "repeats": args.repeats, "rasters": {}}
    with LocalRuntime(function_app.app, db_path=work / "hub.sqlite", port=0, function_keys={"default": KEY}) as rt:
        convert(rt.base_url, sources)
        catalog = activities.catalog()
        for name in sources:
            item = catalog.get_item("bench-tiles", stac_ops.item_id_for_blob("rasters", f"bench/{name}.tif"))
            stac = item.to_dict(include_self_link=False, transform_hrefs=False)
            cog = work / "storage" / "cogs" / "rasters" / "bench" / f"{name}.tif"
            render = stac["properties"]["renders"]["default"]
            colormap = cmap.get(render["colormap_name"]) if render.get("colormap_name") else None
            with Reader(str(cog)) as reader:
                maxzoom = reader.maxzoom
            figures = {}
            for zoom in (maxzoom - 4, maxzoom - 2, maxzoom):
                tiles = tiles_of(cog, zoom, args.tiles)

                def ours(z, x, y):
                    request = func.HttpRequest("GET", f"http://localhost/api/previews/bench-tiles/{item.id}/data/{z}/{x}/{y}",
                                               body=b"", route_params={"collection": "bench-tiles", "item_id": item.id,
                                                                       "asset_key": "data", "z": str(z), "x": str(x),
                                                                       "y": str(y)})
                    response = loop.run_until_complete(handler(req=request))
                    assert response.status_code == 200, response.get_body()[:300]
                    return response.get_body()

                def reference(z, x, y):
                    with Reader(str(cog)) as reader:
                        image = reader.tile(x, y, z, tilesize=256)
                    if render.get("rescale"):
                        image.rescale(in_range=[tuple(r) for r in render["rescale"]])
                    return image.render(img_format="PNG", colormap=colormap)

                def over_http(z, x, y):
                    url = f"{rt.base_url}/api/previews/bench-tiles/{item.id}/data/{z}/{x}/{y}"
                    request = urllib.request.Request(url, headers={"x-functions-key": KEY})
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        return answer.read()

                for tile in tiles:  # warm: the item lookup, GDAL's block cache, the imports
                    same = ours(*tile) == reference(*tile)
                    over_http(*tile)
                times: dict[str, list[float]] = {"ours": [], "rio_tiler": [], "http": []}
                for _ in range(args.repeats):
                    for tile in tiles:
                        for label, call in (("ours", ours), ("rio_tiler", reference), ("http", over_http)):
                            started = time.perf_counter()
                            call(*tile)
                            times[label].append((time.perf_counter() - started) * 1000)
                row = {label: {"p50_ms": round(percentile(v, 50), 2), "p95_ms": round(percentile(v, 95), 2)}
                       for label, v in times.items()}
                row["ratio_p50"] = round(row["ours"]["p50_ms"] / row["rio_tiler"]["p50_ms"], 3)
                row["ratio_p95"] = round(row["ours"]["p95_ms"] / row["rio_tiler"]["p95_ms"], 3)
                row["tiles"] = len(tiles)
                row["same_png_as_reference"] = same
                figures[f"z{zoom}"] = row
                print(f"{name} z{zoom}: ours p50 {row['ours']['p50_ms']} ms p95 {row['ours']['p95_ms']} ms; "
                      f"rio-tiler p50 {row['rio_tiler']['p50_ms']} ms p95 {row['rio_tiler']['p95_ms']} ms; "
                      f"ratio {row['ratio_p50']} (p95 {row['ratio_p95']}); over HTTP p50 {row['http']['p50_ms']} ms",
                      flush=True)
            report["rasters"][name] = figures
    ratios = [row["ratio_p50"] for figures in report["rasters"].values() for row in figures.values()]
    report["ratio_p50_median"] = round(statistics.median(ratios), 3)
    report["ratio_p50_max"] = max(ratios)
    report["goal_met"] = report["ratio_p50_max"] <= GOAL
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
