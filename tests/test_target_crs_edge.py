"""The target CRS is parsed once, at the HTTP edge, into the canonical text that travels to the
orchestrators and workers (``EPSG:<code>``, else WKT2): nothing downstream parses what a client
wrote, and a CRS PROJ cannot read is a 400 naming the field (#28 §5)."""
from __future__ import annotations

import pytest
from pyproj import CRS

import jobs_api
from http_edge import ApiError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    from settings import get_settings

    for key in list(os.environ):
        if key.startswith("RMH_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def parsed(target_crs: str, operation: str = "cog_conversion"):
    body = {"prefix": "in/", "target_crs": target_crs} if operation == "cog_conversion" else \
        {"blob": "in/a.tif", "target_crs": target_crs}
    request, _ = jobs_api.parse_job_request(operation, __import__("json").dumps(body).encode())
    return request


@pytest.mark.parametrize("given", ["EPSG:3857", "epsg:3857", " EPSG:3857 ", CRS.from_epsg(3857).to_wkt(),
                                   CRS.from_epsg(3857).to_json()])
@pytest.mark.parametrize("operation", ["cog_conversion", "process_tiled_raster"])
def test_a_crs_by_any_spelling_travels_as_its_canonical_text(given, operation):
    request = parsed(given, operation)
    assert request.target_crs == "EPSG:3857"
    assert request.cog_options().target_crs == "EPSG:3857"


def test_a_crs_without_a_code_travels_as_wkt2():
    request = parsed("+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m +no_defs")
    assert request.target_crs.startswith(("PROJCRS[", "BOUNDCRS[")) and CRS.from_wkt(request.target_crs).is_projected


@pytest.mark.parametrize("given", ["EPSG:99999999", "not a crs", "/etc/passwd"])
def test_a_crs_proj_cannot_read_is_a_400_naming_the_field(given):
    with pytest.raises(ApiError) as info:
        parsed(given)
    assert info.value.status == 400
    assert [p["field"] for p in info.value.details["problems"]] == ["target_crs"]
