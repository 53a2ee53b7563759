"""Fixtures of the STAC tests: a synthetic raster factory and both catalog backends (the offline
schemas and the validator come from tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import rasterio
from rasterio.transform import from_bounds

import pgstac_catalog
import static_catalog
import stac_ops

@pytest.fixture
def make_raster(tmp_path):
    """Factory: write a small GeoTIFF from bounds (numpy + ``from_bounds``) and return its path."""
    counter = iter(range(10_000))

    def factory(
        *, bounds=(500000.0, 4000000.0, 510000.0, 4010000.0), crs="EPSG:32618", width=64, height=64,
        count=1, dtype="uint8", nodata=None, data=None, tags=None, name=None, **profile: Any,
    ) -> Path:
        path = tmp_path / (name or f"synthetic-{next(counter)}.tif")
        if data is None:
            ramp = np.arange(width * height, dtype="float64").reshape(height, width) % 200 + 1
            data = np.stack([ramp + band for band in range(count)]).astype(dtype)
        transform = from_bounds(*bounds, width, height)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                           crs=crs, transform=transform, nodata=nodata, **profile) as dst:
            dst.write(data)
            if tags:
                dst.update_tags(**tags)
        return path

    return factory


@pytest.fixture(scope="module")
def pg_pool(pgstac_dsn):
    pool = pgstac_catalog.connection_pool(pgstac_dsn, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=["pgstac", "static"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def catalog(backend, request, tmp_path, validator):
    """A ``Catalog`` of either backend (pgSTAC on the module's fresh database, or a static dir)."""
    if backend == "pgstac":
        return pgstac_catalog.PgStacCatalog(request.getfixturevalue("pg_pool"), validator=validator)
    return static_catalog.StaticCatalog(tmp_path / "catalog", validator=validator)


@pytest.fixture
def collection_id(request) -> str:
    """A collection id unique to the test (the pgSTAC database is shared by a module)."""
    name = request.node.name.lower()
    return "c-" + "".join(ch if ch.isalnum() else "-" for ch in name)[-60:].strip("-")


@pytest.fixture
def item_copies(backend, request, tmp_path):
    """Count stored copies of an item: rows in pgstac.items (SQL, past any API) or item files."""

    def count(collection_id: str, item_id: str) -> int:
        if backend == "pgstac":
            with psycopg.connect(request.getfixturevalue("pgstac_dsn")) as conn:
                return conn.execute("SELECT count(*) FROM pgstac.items WHERE collection = %s AND id = %s",
                                    (collection_id, item_id)).fetchone()[0]
        return len(list((tmp_path / "catalog").rglob(f"{item_id}.json")))

    return count
