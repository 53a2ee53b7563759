"""Adversarial files and names through cog_conversion and sync_container, on either backend: the
names of tests/names.py, rasters of degenerate shapes, the real-world rasters of
``../shared/rasters`` (a corrupt one, a photo without georeferencing), a file that is not a
raster, an empty one, a truncated TIFF, TIFFs whose CRS has no place on the Earth or whose
extent is out of range, a header declaring ten billion pixels, pixels 100,000 times longer than
wide. Every file ends done or failed with a condition named for what went wrong (the service's
own error classes, never a bare ``OSError``, ``TypeError``, ``ProjError``,
``UnicodeEncodeError``, ``CPLE_AppDefinedError``...), the rest of the job completes, and no reason
shows a server path."""
from __future__ import annotations

import builtins
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_bounds

from names import LONG_NAME, SCRIPT_NAMES, TRICKY_NAMES
from raster_factory import write_raster

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Shapes GDAL holds that the COG driver's automatic overviews did not (``Invalid Decimation 1``).
SHAPES = {"shapes/1x100000.tif": (1, 100_000), "shapes/100000x1.tif": (100_000, 1), "shapes/1x1.tif": (1, 1),
          "shapes/2x100000.tif": (2, 100_000), "shapes/3x7000.tif": (3, 7000)}
#: What each broken file must fail with, converted and cataloged in place (None: it succeeds).
EXPECTED = {
    "broken/not-a-raster.tif": ("UnsupportedFormat", "UnsupportedFormat"),
    "broken/empty.tif": ("EmptyFile", "EmptyFile"),
    "broken/truncated.tif": ("UnreadableRaster", "UnreadableRaster"),
    "broken/local-crs.tif": ("FootprintError", "FootprintError"),
    "broken/engineering-crs.tif": ("FootprintError", "FootprintError"),
    "broken/ten-billion-pixels.tif": ("RasterTooLarge", "RasterTooLarge"),
    "real/corrupt.tif": ("UnreadableRaster", "UnreadableRaster"),
    "real/float.tif": ("MissingCRS", "MissingCRS"),
    "real/389225main_sw_1965_1024.jpg": ("MissingCRS", "MissingCRS"),
}
#: Reprojected to EPSG:3857: what each must fail with.
REPROJECTED = {
    "broken/local-crs.tif": "CannotReproject",
    "broken/lonlat-out-of-range.tif": "CannotReproject",
    "broken/anisotropic.tif": "RasterTooLarge",
    "real/RGB.byte.tif": None,
}


def service_conditions() -> set[str]:
    """Every condition the service names: the error classes its faces and modules hold (each
    defined in one of the service's own modules: ``geo_ops`` re-exports ``raster_errors``',
    ``stac_ops`` ``stac_errors``'; ``cubes``' are raster conditions too), and what its
    orchestrators and validation reports name (a chunk or a tile that failed, a missing blob)."""
    import catalogs
    import cubes
    import geo_ops
    import pgstac_catalog
    import stac_ops
    import static_catalog
    import storage

    def ours(cls: type) -> bool:
        return Path(getattr(sys.modules.get(cls.__module__), "__file__", None) or "/").resolve().parent == REPO_ROOT

    names = {"ChunkFailed", "TileFailed", "BlobNotFound"}
    for module in (geo_ops, stac_ops, catalogs, pgstac_catalog, static_catalog, storage, cubes):
        names |= {n for n, v in vars(module).items()
                  if isinstance(v, type) and issubclass(v, Exception) and ours(v) and not n.startswith("_")}
    return names


def bare_exception_names() -> set[str]:
    """Exception classes that name no condition: Python's own and those of the libraries the
    service calls (GDAL's through rasterio, PROJ's, the Azure SDK's, psycopg's, pydantic's...)."""
    import azure.core.exceptions
    import jsonschema.exceptions
    import psycopg
    import psycopg.errors
    import pydantic
    import pyproj.exceptions
    import pystac.errors
    import rasterio._err
    import rasterio.errors
    import tenacity

    names = {"TaskFailed", "ActivityFailed", "Error", "Exception"}
    for module in (builtins, rasterio.errors, rasterio._err, pyproj.exceptions, azure.core.exceptions,
                   jsonschema.exceptions, psycopg, psycopg.errors, pydantic, pystac.errors, tenacity):
        names |= {n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, BaseException)}
    return names


def _tiff(path: Path, crs, bounds, width: int = 64, height: int = 64, **options) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=crs,
                       transform=from_bounds(*bounds, width, height), **options) as dst:
        if width * height <= 1_000_000:
            dst.write(np.full((1, height, width), 7, dtype="uint8"))
    return path


def files(tmp: Path, shared_rasters: Path) -> dict[str, Path | bytes]:
    """The adversarial files by blob name: a path to upload, or the bytes."""
    good = write_raster(tmp / "good.tif", width=64, height=64, count=1, crs="EPSG:32633")
    out: dict[str, Path | bytes] = {name: good for name in [*SCRIPT_NAMES.values(), LONG_NAME, *TRICKY_NAMES.values()]}
    for name, (width, height) in SHAPES.items():
        out[name] = write_raster(tmp / f"{width}x{height}.tif", width=width, height=height, count=1, crs="EPSG:32633",
                                 bounds=(500000, 4980000, 500000 + 10 * width, 4980000 + 10 * height))
    for path in sorted(shared_rasters.iterdir()):
        if path.suffix.lower() in (".tif", ".jpg"):
            out[f"real/{path.name}"] = path
    out["broken/not-a-raster.tif"] = b"this is a text file, not a raster\n" * 20
    out["broken/empty.tif"] = b""
    out["broken/truncated.tif"] = (shared_rasters / "RGB.byte.tif").read_bytes()[:4096]
    out["broken/local-crs.tif"] = _tiff(tmp / "local.tif", CRS.from_wkt('LOCAL_CS["bogus",UNIT["metre",1]]'),
                                        (0, 0, 100, 100))
    out["broken/engineering-crs.tif"] = _tiff(tmp / "eng.tif", CRS.from_wkt(
        'ENGCRS["bogus",EDATUM["x"],CS[Cartesian,2],AXIS["x",east],AXIS["y",north],LENGTHUNIT["metre",1]]'),
        (0, 0, 10, 10))
    out["broken/lonlat-out-of-range.tif"] = _tiff(tmp / "range.tif", "EPSG:4326", (1000, 500, 2000, 600))
    out["broken/ten-billion-pixels.tif"] = _tiff(tmp / "huge.tif", "EPSG:32633", (0, 0, 1e6, 1e6), width=100_000,
                                                 height=100_000, tiled=True, sparse_ok=True, compress="deflate")
    out["broken/anisotropic.tif"] = write_raster(tmp / "aniso.tif", width=1, height=100_000, count=1,
                                                 crs="EPSG:32633")  # 10 km x 0.1 m pixels
    return out


def upload(store, container: str, cases: dict[str, Path | bytes]) -> None:
    store.create_container(container)
    for name, content in cases.items():
        if isinstance(content, bytes):
            store.upload_bytes(container, name, content)
        else:
            store.upload_from_path(container, name, content)


def assert_named(outcomes: list[dict], *, where: str, server_paths: list[str]) -> None:
    """Each failure names a condition of the service, never a bare exception, and its reason
    shows no server path."""
    ours, bare = service_conditions(), bare_exception_names()
    for outcome in outcomes:
        if outcome.get("status") != "failed":
            continue
        error = outcome.get("error")
        assert error in ours and error not in bare, (where, outcome)
        for path in server_paths:
            assert path not in (outcome.get("reason") or ""), (where, path, outcome)


def check_adversarial(host, store, tmp: Path, shared_rasters: Path, *, container: str,
                      server_paths: list[str], extra: dict[str, str] | None = None) -> dict:
    """Upload the cases, convert them all (a prefix, so odd names come from the listing), reproject
    a few, catalog them in place; assert the outcomes. ``extra``: blob name -> the condition a
    backend-specific case must fail with in both jobs. Returns the jobs' outputs."""
    cases = files(tmp, shared_rasters)
    upload(store, container, cases)
    expected = {**{n: c for n, c in EXPECTED.items()}, **{n: (c, c) for n, c in (extra or {}).items()}}
    outputs = {}
    for job, body in {
        "convert": ("cog_conversion", {"container": container, "prefix": "", "output_container": f"{container}-out",
                                       "collection": f"{container}-cogs", "chunk_size": 20}),
        "sync": ("sync_container", {"container": container, "collection": f"{container}-sync"}),
    }.items():
        status = host.run(*body, timeout=900)
        assert status["runtimeStatus"] == "Completed", (job, status)
        output = status["output"]
        outputs[job] = output
        assert_named(output["failures"], where=job, server_paths=server_paths)
        code, tasks = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=5000")
        assert code == 200
        assert_named(tasks["tasks"], where=f"{job} tasks", server_paths=server_paths)
        failed = {f["name"]: f["error"] for f in output["failures"]}
        column = 0 if job == "convert" else 1
        for name, conditions in expected.items():
            assert failed.get(name) == conditions[column], (job, name, failed.get(name), conditions)
        for name in (*SHAPES, *SCRIPT_NAMES.values(), LONG_NAME, *TRICKY_NAMES.values()):
            assert name not in failed, (job, name, failed[name])
    reprojected = host.run("cog_conversion", {"container": container, "blobs": list(REPROJECTED),
                                              "target_crs": "EPSG:3857", "output_container": f"{container}-3857",
                                              "catalog": False}, timeout=900)
    assert reprojected["runtimeStatus"] == "Completed", reprojected
    assert_named(reprojected["output"]["failures"], where="reprojected", server_paths=server_paths)
    failed = {f["name"]: f["error"] for f in reprojected["output"]["failures"]}
    assert failed == {n: c for n, c in REPROJECTED.items() if c}, failed
    outputs["reprojected"] = reprojected["output"]
    return outputs


def write_control_named_file(storage_root: Path, container: str, tmp: Path) -> str:
    """A file whose name holds a control character, put in a local store's directory by hand
    (the store refuses such names): what a listing can still meet."""
    name = "ctl/a\x01b.tif"
    target = storage_root / container / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(write_raster(tmp / "ctl.tif", width=32, height=32, count=1, crs="EPSG:32633"), target)
    return name
