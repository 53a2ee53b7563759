"""The README's main job on embedded defaults (local-directory storage, static STAC catalog,
embedded runtime): the demo converts, tiles and syncs a generated raster and a real one, and what
it prints points at valid COGs, a mosaic and a static STAC catalog."""
from __future__ import annotations

import io

import pystac
import rasterio
from rio_cogeo.cogeo import cog_validate

import cli


def test_demo_on_embedded_defaults(tmp_path, monkeypatch, shared_rasters, validator):
    from settings import get_settings

    for key in ("RMH_STORAGE_BACKEND", "RMH_CATALOG_BACKEND", "RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("RMH_STATIC_CATALOG_DIR", str(tmp_path / "catalog"))
    get_settings.cache_clear()
    out = io.StringIO()
    try:
        code = cli.main(["demo", "--state", str(tmp_path / "state"), str(shared_rasters / "RGB.byte.tif")], out=out)
        first = out.getvalue()
        assert code == 0, first
        assert "cog_conversion: 2 done" in first and "process_tiled_raster: 12 done" in first
        broken = tmp_path / "broken.tif"
        broken.write_bytes(b"II*\x00 not a raster")
        # a file that fails: the demo finishes the rest and exits 1, as `run` does
        out = io.StringIO()
        code = cli.main(["demo", "--state", str(tmp_path / "state"), str(shared_rasters / "RGB.byte.tif"),
                         str(broken)], out=out)
    finally:
        get_settings.cache_clear()
    text = "\n".join(line for line in out.getvalue().splitlines() if not line.startswith("["))
    assert code == 1, text
    assert "\ncog_conversion: 1 done, 1 skipped, 1 failed" in text, text  # the DEM's COG is current
    assert "failed demo/broken.tif: " in text
    cogs = sorted((tmp_path / "storage" / "cogs").rglob("*.tif"))
    assert len(cogs) == 2 + 12
    for path in cogs:
        assert cog_validate(str(path), strict=True)[0], path
    mosaic = tmp_path / "storage" / "cogs" / "rasters" / "demo" / "sample-dem" / "mosaic.vrt"
    assert str(mosaic) in text
    assert text.rstrip().splitlines()[-1].strip().startswith(f"dashboard:     {cli.DEFAULT_URL}/api/dashboard"), text[-400:]
    with rasterio.open(mosaic) as vrt:
        assert vrt.crs.to_epsg() == 3857 and vrt.read(1, window=((0, 10), (0, 10))).shape == (10, 10)
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog" / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert {c.id for c in catalog.get_children()} == {"demo", "demo-tiles", "demo-sync"}
    assert len(items) == 2 + 12 + 2
    for item in items:
        validator.validate_item(item.to_dict())
