"""The corpus trial (issue 23): other people's rasters through cog_conversion and sync_container on
the local backend. Runs only when ``RMH_CORPUS_DIR`` names a directory of rasters (public test
fixtures of raster projects, kept outside the repository and never committed); writes a per-file
report to ``RMH_CORPUS_REPORT`` (JSON) when set.

The goal it checks: no raw exception as a failure's condition, every refusal one of the
refusals by design the README lists, no output or item left by a file reported failed, every
COG strictly valid and pixel-identical to its source where nothing was warped, every item's bbox
within half a pixel of its data's positions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from raster_names import is_raster_name
from services import applied_local_env

CORPUS = os.environ.get("RMH_CORPUS_DIR")
pytestmark = pytest.mark.skipif(not CORPUS or not Path(CORPUS).is_dir(), reason="RMH_CORPUS_DIR not set")

#: Refusals by design (README "Refusals by design"): a file that is not a georeferenced raster
#: GDAL reads safely.
BY_DESIGN = {"MissingCRS", "DegenerateTransform", "EmptyFile", "UnsupportedFormat", "UnreadableRaster",
             "NotGeoreferenced", "RasterTooLarge",
             # multidimensional inputs (README "Multidimensional inputs")
             "NoGriddedVariable", "CurvilinearGrid", "IrregularGrid", "UndecodableTime", "UnsafeReference",
             "UnsafeName", "UnreadableCube", "SourceTooLarge", "TooManySlices", "SliceTooLarge"}


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "corpus", "RMH_OUTPUT_CONTAINER": "cogs"}
    yield from applied_local_env(env)


@pytest.fixture(scope="module")
def corpus(store, service_env):
    """Every raster-named file of the corpus, as blobs of the container ``corpus``."""
    root = Path(CORPUS)
    names = {}
    store.create_container("corpus")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_raster_name(p.name)):
        name = path.relative_to(root).as_posix()
        store.upload_from_path("corpus", name, path)
        names[name] = path
    return names


def lonlat_positions(ds):
    """Lon/lat of pixel corners (every edge pixel, and an interior lattice), by the transformer
    the footprint uses (EPSG:4326, or the body's planetocentric lon/lat), and for each half the
    distance to its neighbouring corners (half a pixel there: near a geostationary limb one
    pixel spans degrees)."""
    from raster_crs import pixels_to_lonlat

    wkt = ds.crs.to_wkt()
    step = max(1, max(ds.width, ds.height) // 400)
    cols = np.unique(np.concatenate([np.arange(0, ds.width + 1, step), [ds.width]])).astype(float)
    rows = np.unique(np.concatenate([np.arange(0, ds.height + 1, step), [ds.height]])).astype(float)
    edge_c, edge_r = np.arange(ds.width + 1, dtype=float), np.arange(ds.height + 1, dtype=float)
    grid_c, grid_r = np.meshgrid(cols, rows)
    c = np.concatenate([grid_c.ravel(), edge_c, edge_c, np.zeros_like(edge_r), np.full_like(edge_r, ds.width)])
    r = np.concatenate([grid_r.ravel(), np.zeros_like(edge_c), np.full_like(edge_c, ds.height), edge_r, edge_r])
    lons, lats = pixels_to_lonlat(wkt, ds.transform, c, r)
    half = np.zeros_like(lons)
    for dc, dr in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nl, nt = pixels_to_lonlat(wkt, ds.transform, c + dc, r + dr)
        d = np.hypot((nl - lons + 180.0) % 360.0 - 180.0, nt - lats)
        half = np.maximum(half, np.where(np.isfinite(d), 0.5 * d, 0.0))
    ok = np.isfinite(lons) & np.isfinite(lats)
    return (lons[ok] + 180.0) % 360.0 - 180.0, lats[ok], half[ok]


def bbox_error(path) -> float | None:
    """Degrees by which the item bbox of ``path`` misses a mapped pixel corner by more than half
    a pixel there (0 when none), or None when it has no footprint."""
    import geo_ops

    header = geo_ops.read_header(path)
    if header.bbox is None:
        return None
    with rasterio.open(path) as ds:
        lons, lats, half = lonlat_positions(ds)
    west, south, east, north = header.bbox
    if west <= east:
        dlon = np.maximum(west - lons, lons - east)
    else:
        dlon = np.where((lons >= west) | (lons <= east), -1.0, np.minimum(west - lons, lons - east))
    miss = np.maximum.reduce([dlon, south - lats, lats - north, np.zeros_like(lats)])
    return float(max(0.0, (miss - half).max()))


def test_the_corpus(host, store, corpus, service_env):
    report: dict[str, dict] = {name: {} for name in corpus}
    converted = host.run("cog_conversion", {"prefix": "", "collection": "corpus-cogs"}, timeout=1800)["output"]
    synced = host.run("sync_container", {"container": "corpus", "collection": "corpus-synced"}, timeout=1800)["output"]
    for key, output in (("conversion", converted), ("sync", synced)):
        for failure in output["failures"]:
            report.setdefault(failure["name"], {})[key] = {"error": failure["error"], "reason": failure["reason"]}
    catalog = Path(service_env["RMH_STATIC_CATALOG_DIR"])
    cog_items = {p.name for p in (catalog / "corpus-cogs" / "items").glob("*.json")}
    sync_items = {p.name for p in (catalog / "corpus-synced" / "items").glob("*.json")}
    outputs = {b.name for b in store.iter_blobs("cogs")} if store.container_exists("cogs") else set()
    import activities
    import cube_jobs
    import stac_ops

    for name, source in corpus.items():
        entry = report[name]
        cog = activities.cog_blob_name("corpus", name)
        item = stac_ops.item_id_for_blob("corpus", name) + ".json"
        # a raster's outputs: its COG, thumbnail and tiles; a cube's: everything under <container>/<name>/
        folder = cube_jobs.output_prefix("corpus", name) + "/" if cube_jobs.form_of_name(name) == "cube" \
            else cog[:-4] + "/"
        mine = sorted(o for o in outputs if o == cog or o.startswith(folder) or o == activities.thumbnail_blob_name(cog))
        entry.setdefault("conversion", "converted" if mine else "missing")
        entry.setdefault("sync", "cataloged" if item in sync_items else "missing")
        failed_conversion = isinstance(entry["conversion"], dict)
        entry["orphans"] = mine if failed_conversion else []
        if failed_conversion:
            entry["orphans"] += [f"item {i}" for i in cog_items if i == item or i.startswith(item[:-5] + "~")]
        if cog in outputs:
            path = store.gdal_read_path("cogs", cog).path
            ok, errors, warnings = cog_validate(path, strict=True, quiet=True)
            entry["cog_valid"] = ok or (not errors and all("overviews" in w for w in warnings))
            with rasterio.open(path) as out, rasterio.open(source) as src:
                warped = "RMH_GEOREFERENCING" in out.tags() or out.crs != src.crs or out.transform != src.transform
                entry["warped"] = warped
                if not warped:
                    entry["pixel_identical"] = bool(out.shape == src.shape and out.count >= src.count and
                                                    np.array_equal(out.read(list(range(1, src.count + 1))), src.read(),
                                                                   equal_nan=np.dtype(src.dtypes[0]).kind == "f"))
            entry["bbox_error_deg"] = bbox_error(path)
    if os.environ.get("RMH_CORPUS_REPORT"):
        Path(os.environ["RMH_CORPUS_REPORT"]).write_text(json.dumps(report, indent=1, sort_keys=True))
    raw = {n: e for n, e in report.items() for k in ("conversion", "sync")
           if isinstance(e.get(k), dict) and e[k]["error"] not in BY_DESIGN}
    assert raw == {}, raw
    assert {n: e["orphans"] for n, e in report.items() if e.get("orphans")} == {}
    assert [n for n, e in report.items() if e.get("cog_valid") is False] == []
    assert [n for n, e in report.items() if e.get("pixel_identical") is False] == []
    assert {n: e["bbox_error_deg"] for n, e in report.items() if (e.get("bbox_error_deg") or 0) > 1e-6} == {}
