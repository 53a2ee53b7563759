"""Validating a request loads neither GDAL nor PROJ: ``models`` (and the HTTP edge's request
models) import no raster module, so a 400 costs pydantic only (#28 §3)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("rasterio", "pyproj", "osgeo", "geo_ops", "rio_cogeo")


def loaded_by(module: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after importing ``module``."""
    script = f"import json, sys, {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_models_load_neither_gdal_nor_proj():
    assert loaded_by("models") == []


def test_request_models_validate_without_gdal_or_proj():
    assert loaded_by("request_models") == []
