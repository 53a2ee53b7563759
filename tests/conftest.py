"""Shared fixtures: repository paths and the real-world rasters from ../shared/rasters."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_RASTERS = Path(os.environ.get("RMHGEOAPI_SHARED_RASTERS", REPO_ROOT.parent / "shared" / "rasters"))


@pytest.fixture(scope="session")
def shared_rasters() -> Path:
    """The directory of real-world test rasters (``../shared/rasters`` beside the clone).

    Users who cloned without ``../shared`` get a skip; in CI (``CI`` set) its absence is a failure.
    """
    if not SHARED_RASTERS.is_dir():
        message = f"real-world rasters not found at {SHARED_RASTERS} (set RMHGEOAPI_SHARED_RASTERS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_RASTERS
