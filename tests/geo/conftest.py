"""Fixtures of the raster engine tests: a synthetic-raster factory over ``tests/raster_factory``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for _path in (TESTS_DIR, TESTS_DIR.parent):  # raster_factory.py, and geo_ops.py at the root
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import raster_factory  # noqa: E402

#: dtype x nodata x bands x CRS variants every op is run over.
VARIANTS = {
    "uint8-rgb-nodata0-utm": dict(dtype="uint8", count=3, nodata=0, crs="EPSG:32633"),
    "uint8-rgb-alpha-3857": dict(dtype="uint8", count=3, alpha=True, crs="EPSG:3857"),
    "uint16-4band-4326": dict(dtype="uint16", count=4, nodata=None, crs="EPSG:4326"),
    "int16-dem-nodata": dict(dtype="int16", count=1, nodata=-9999, crs="EPSG:32633"),
    "float32-nan-custom-crs": dict(dtype="float32", count=1, nodata=float("nan"),
                                   crs=raster_factory.CUSTOM_CRS),
    "float64-striped-deflate": dict(dtype="float64", count=2, nodata=-1e30, crs="EPSG:4326",
                                    tiled=False, compress="deflate"),
    "int32-lzw-3857": dict(dtype="int32", count=1, nodata=-2147483648, crs="EPSG:3857",
                           compress="lzw"),
}


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster(name="x.tif", **write_raster_kwargs)`` writes into ``tmp_path``."""
    counter = iter(range(10**6))

    def _make(name: str | None = None, **kwargs: Any) -> Path:
        name = name or f"synthetic_{next(counter)}.tif"
        return raster_factory.write_raster(tmp_path / name, **kwargs)

    return _make


@pytest.fixture(params=sorted(VARIANTS), ids=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> dict[str, Any]:
    """One entry of ``VARIANTS`` (keyword arguments for the factory)."""
    return dict(VARIANTS[request.param])
