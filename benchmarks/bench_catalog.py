"""Benchmark of the STAC catalog path: item building from COG headers, and writing 5,000 items to
pgSTAC through ``pgstac_catalog.PgStacCatalog`` vs ``pypgstac load items --method upsert`` (same items,
same run, each into a fresh collection), and vs pypgstac's ``Loader`` in this process (plain, and
with our validation in front of ``delsert``: the evaluated alternative to our own writer).

    python benchmarks/bench_catalog.py [--items 5000] [--cogs 200] [--runs 3]

Starts a throwaway PostgreSQL + PostGIS + pgSTAC (``tests/services.py``) unless ``PGSTAC_DSN`` is
set, and stops it at the end. Human-readable lines go to stderr; the LAST stdout line is one JSON
object with the figures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
import rasterio
from rasterio.transform import from_bounds
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

import pgstac_catalog  # noqa: E402
import stac_collections  # noqa: E402
import stac_ops  # noqa: E402
import stac_validation  # noqa: E402

log = logging.getLogger("bench_catalog")
CRSES = ["EPSG:32618", "EPSG:3857", "EPSG:4326", "EPSG:32633"]


def make_cogs(directory: Path, count: int) -> list[Path]:
    """``count`` small COGs (256x256, 3 bands, uint8, nodata 0) in varied CRSes and places."""
    rng = np.random.default_rng(42)
    paths = []
    for n in range(count):
        crs = CRSES[n % len(CRSES)]
        if crs == "EPSG:4326":
            west, south, size = -170.0 + n % 300, -60.0 + n % 100, 0.5
        elif crs == "EPSG:3857":
            west, south, size = -1.5e7 + 1e5 * n, 1e6, 2e4
        else:
            west, south, size = 300000.0 + 1000 * n, 4000000.0, 7680.0
        src = directory / f"src-{n}.tif"
        data = rng.integers(1, 255, size=(3, 256, 256), dtype="uint8")
        with rasterio.open(src, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs=crs,
                           nodata=0, transform=from_bounds(west, south, west + size, south + size, 256, 256)) as dst:
            dst.write(data)
        cog = directory / f"cog-{n}.tif"
        cog_translate(src, cog, cog_profiles.get("deflate"), overview_level=2, quiet=True)
        src.unlink()
        paths.append(cog)
    return paths


def build_items(cogs: list[Path], total: int, collection_id: str) -> tuple[list[dict], float]:
    """``total`` items built with ``item_from_raster`` from the COGs (cycled, one blob name each)."""
    base = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
    items = []
    start = time.perf_counter()
    for n in range(total):
        cog = cogs[n % len(cogs)]
        item = stac_ops.item_from_raster(
            cog, container="bench", blob_name=f"incoming/{n:06d}/{cog.name}", collection_id=collection_id,
            source_href=f"https://account.blob.core.windows.net/bench/incoming/{n:06d}/{cog.name}",
            data_href=f"https://account.blob.core.windows.net/cogs/{n:06d}/{cog.name}",
            source_etag=f'"0x8D{n:012X}"', source_last_modified=base + dt.timedelta(hours=2 * n),
        )
        items.append(item.to_dict(include_self_link=False, transform_hrefs=False))
    return items, time.perf_counter() - start


def with_collection(items: list[dict], collection_id: str) -> list[dict]:
    return [{**item, "collection": collection_id} for item in items]


def fresh_collection(dsn: str, collection_id: str) -> None:
    with psycopg.connect(dsn) as conn:
        catalog = pgstac_catalog.PgStacCatalog(conn)
        catalog.upsert_collection(stac_collections.build_collection(collection_id), partition_trunc="month")


def count_items(dsn: str, collection_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s", (collection_id,)).fetchone()[0]


def time_ours(dsn: str, items: list[dict], *, validator: stac_validation.StacValidator | None = None) -> float:
    with psycopg.connect(dsn) as conn:
        catalog = pgstac_catalog.PgStacCatalog(conn, validator=validator)
        start = time.perf_counter()
        result = catalog.upsert_items(items)
        elapsed = time.perf_counter() - start
    assert result.written == len(items), result
    return elapsed


def time_pypgstac_cli(dsn: str, items: list[dict], workdir: Path) -> float:
    ndjson = workdir / "items.ndjson"
    ndjson.write_text("".join(json.dumps(item) + "\n" for item in items))
    pypgstac = Path(sys.executable).parent / "pypgstac"
    start = time.perf_counter()
    subprocess.run([str(pypgstac), "load", "items", str(ndjson), "--dsn", dsn, "--method", "upsert"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def time_pypgstac_inprocess(dsn: str, items: list[dict], *, validator: stac_validation.StacValidator | None = None,
                            method: str = "upsert") -> float:
    """pypgstac's ``Loader`` in this process; with a ``validator``, each item validated first (what
    our validated writes would cost through the loader, with ``delsert``: the one method that
    leaves one copy when an item's datetime moves to another partition)."""
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db)
        start = time.perf_counter()
        for item in items if validator is not None else ():
            validator.validate_item(item)
        loader.load_items(iter(items), insert_mode=Methods(method))
        return time.perf_counter() - start


def measure_writes(dsn: str, items: list[dict], validator: stac_validation.StacValidator, workdir: Path,
                   collections: dict[str, str]) -> tuple[dict[str, float], float]:
    """Items/s of each write path, each into its own fresh collection; then an unchanged re-run."""
    figures: dict[str, float] = {}
    for name, collection_id in collections.items():
        fresh_collection(dsn, collection_id)
        batch = with_collection(items, collection_id)
        if name == "ours":
            seconds = time_ours(dsn, batch)
        elif name == "ours_validated":
            seconds = time_ours(dsn, batch, validator=validator)
        elif name == "pypgstac_cli":
            seconds = time_pypgstac_cli(dsn, batch, workdir)
        elif name == "loader_validated":
            seconds = time_pypgstac_inprocess(dsn, batch, validator=validator, method="delsert")
        else:
            seconds = time_pypgstac_inprocess(dsn, batch)
        assert count_items(dsn, collection_id) == len(items), name
        figures[name] = len(items) / seconds
        log.info("%-20s %6d items in %.2fs = %8.0f items/s", name, len(items), seconds, figures[name])

    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        rerun = pgstac_catalog.PgStacCatalog(conn).upsert_items(with_collection(items, collections["ours"]))
        rerun_rate = len(items) / (time.perf_counter() - start)
    assert rerun.unchanged == len(items)
    return figures, rerun_rate


def drop_collections(dsn: str, collection_ids: list[str]) -> None:
    with psycopg.connect(dsn) as conn:
        for collection_id in collection_ids:
            conn.execute("DELETE FROM pgstac.collections WHERE id = %s", (collection_id,))


def run(dsn: str, args: argparse.Namespace, workdir: Path) -> dict:
    cogs = make_cogs(workdir, args.cogs)
    log.info("made %d COGs", len(cogs))
    run_id = f"bench-{os.getpid()}"
    items, build_s = build_items(cogs, args.items, f"{run_id}-ours")
    log.info("built %d items in %.2fs (%.0f items/s)", len(items), build_s, len(items) / build_s)
    validator = stac_validation.StacValidator()  # core schemas and the extension schemas the app ships
    start = time.perf_counter()
    for item in items[:500]:
        validator.validate_item(item)
    validate_rate = 500 / (time.perf_counter() - start)

    names = ["ours", "pypgstac_cli", "pypgstac_inprocess", "ours_validated", "loader_validated"]
    runs, rates = [], []
    for repeat in range(getattr(args, "runs", 1)):  # each run into fresh collections; medians
        collections = {n: f"{run_id}-{repeat}-{n}" for n in names}
        try:
            rates.append(measure_writes(dsn, items, validator, workdir, collections))
        finally:
            drop_collections(dsn, list(collections.values()))
        runs.append(rates[-1][0])
    figures = {n: statistics.median(r[n] for r in runs) for n in names}
    rerun_rate = statistics.median(rate for _, rate in rates)
    validated = statistics.median(r["ours_validated"] / r["pypgstac_cli"] for r in runs)
    loader_validated = statistics.median(r["loader_validated"] / r["pypgstac_cli"] for r in runs)
    ratio = figures["ours"] / figures["pypgstac_cli"]
    return {
        "items": len(items),
        "cogs": len(cogs),
        "build_items_per_s": round(len(items) / build_s, 1),
        "validate_items_per_s": round(validate_rate, 1),
        "validation_schemas": "core+shipped extensions",
        "batch_size": pgstac_catalog.DEFAULT_BATCH_SIZE,
        "write_ours_items_per_s": round(figures["ours"], 1),
        "write_pypgstac_cli_items_per_s": round(figures["pypgstac_cli"], 1),
        "write_pypgstac_inprocess_items_per_s": round(figures["pypgstac_inprocess"], 1),
        "write_ours_validated_items_per_s": round(figures["ours_validated"], 1),
        "rerun_unchanged_items_per_s": round(rerun_rate, 1),
        "ratio_ours_vs_pypgstac_cli": round(ratio, 3),
        "ratio_ours_vs_pypgstac_inprocess": round(figures["ours"] / figures["pypgstac_inprocess"], 3),
        "runs": len(runs),
        "ratio_validated_vs_pypgstac_cli": round(validated, 3),  # median of the runs' ratios
        # The evaluated alternative: our validated writes through pypgstac's Loader (delsert).
        "write_loader_validated_items_per_s": round(figures["loader_validated"], 1),
        "ratio_loader_validated_vs_pypgstac_cli": round(loader_validated, 3),
        "validated_target_ratio": 1.0,
        "validated_target_met": validated >= 1.0,
        "target_ratio": 0.8,
        "target_met": ratio >= 0.8,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--cogs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="repeats (medians reported)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    server = None
    if os.environ.get("PGSTAC_DSN"):
        dsn = os.environ["PGSTAC_DSN"]
    else:
        from services import PgStac

        server = PgStac().start()
        dsn = server.create_database(f"bench_{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
            figures = run(dsn, args, Path(tmp))
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
