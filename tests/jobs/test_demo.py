"""The README's main job on embedded defaults (local-directory storage, static STAC catalog,
embedded runtime): the demo converts, tiles and syncs a generated raster and a real one, and what
it prints points at valid COGs, a mosaic and a static STAC catalog whose items and collections say
truthfully what they hold, and which can be moved with its storage directory."""
from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import urllib.parse
import warnings
from pathlib import Path

import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

import cli
import stac_ops

SAMPLE_TIME = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)  # cli.write_sample_raster's tag


def run_demo(work: Path, *files: Path) -> tuple[int, str]:
    """``cli.py demo`` on embedded defaults in ``work``, with ``files`` added: exit code, printout."""
    from settings import get_settings

    with pytest.MonkeyPatch.context() as env:
        for key in ("RMH_STORAGE_BACKEND", "RMH_CATALOG_BACKEND", "RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN",
                    "RMH_ASSET_BASE_URL"):
            env.delenv(key, raising=False)
        env.setenv("RMH_STORAGE_LOCAL_DIR", str(work / "storage"))
        env.setenv("RMH_STATIC_CATALOG_DIR", str(work / "catalog"))
        get_settings.cache_clear()
        out = io.StringIO()
        try:
            code = cli.main(["demo", "--state", str(work / "state"), *map(str, files)], out=out)
        finally:
            get_settings.cache_clear()
    return code, out.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, shared_rasters):
    """One ``cli.py demo`` run on embedded defaults: its printout and its working directory."""
    work = tmp_path_factory.mktemp("demo")
    code, text = run_demo(work, shared_rasters / "RGB.byte.tif")
    return {"code": code, "text": text, "dir": work}


def _items(catalog_dir: Path) -> dict[str, list[pystac.Item]]:
    catalog = pystac.Catalog.from_file(str(catalog_dir / "catalog.json"))
    return {c.id: sorted(c.get_items(), key=lambda i: i.id) for c in catalog.get_children()}


def test_demo_on_embedded_defaults(demo, validator):
    tmp_path, text = demo["dir"], demo["text"]
    assert demo["code"] == 0, text
    assert "cog_conversion: 2 done" in text and "process_tiled_raster: 12 done" in text
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


def test_tile_items_keep_the_source_datetime(demo):
    items = _items(demo["dir"] / "catalog")
    tiles = items["demo-tiles"]
    assert len(tiles) == 12
    assert {item.datetime for item in tiles} == {SAMPLE_TIME}  # warped tiles, not the time they were written
    assert {item.properties[stac_ops.DATETIME_SOURCE] for item in tiles} == {"file-metadata"}
    converted = next(i for i in items["demo"] if i.properties[stac_ops.SOURCE_BLOB] == "demo/sample-dem.tif")
    assert converted.datetime == SAMPLE_TIME


def test_collections_say_what_they_hold_and_their_item_assets_match_the_items(demo):
    catalog = pystac.Catalog.from_file(str(demo["dir"] / "catalog" / "catalog.json"))
    collections = {c.id: c for c in catalog.get_children()}
    titles = {c.title for c in collections.values()}
    assert len(titles) == 3 and "rasters" not in titles, titles
    assert len({c.description for c in collections.values()}) == 3
    assert "Cloud Optimized GeoTIFFs converted" in collections["demo"].title
    assert "tiles of rasters/demo/sample-dem.tif" in collections["demo-tiles"].title
    assert "in place" in collections["demo-sync"].description
    for cid, collection in collections.items():
        items = list(collection.get_items())
        item_assets = collection.extra_fields["item_assets"]
        assert set(item_assets) == set.intersection(*(set(i.assets) for i in items)), cid
        for key, declared in item_assets.items():
            for item in items:
                asset = item.assets[key].to_dict()
                assert all(asset.get(f) == declared[f] for f in ("type", "title", "roles") if f in declared), (cid, key)
    assert set(collections["demo-sync"].extra_fields["item_assets"]) == {"data"}  # sync items have no source
    assert "cloud-optimized" not in json.dumps(collections["demo-sync"].extra_fields["item_assets"])
    assert set(collections["demo-tiles"].extra_fields["item_assets"]) == {"data", "source", "thumbnail"}


def test_assets_say_what_the_files_are(demo):
    for cid, items in _items(demo["dir"] / "catalog").items():
        for item in items:
            assert item.properties.get("title"), item.id
            data = item.assets["data"]
            is_cog = cog_validate(data.get_absolute_href(), quiet=True)[0]
            assert (data.media_type == stac_ops.COG_MEDIA_TYPE) is is_cog, (item.id, data.media_type)
            assert data.roles == ["data"] and (data.title == "Cloud Optimized GeoTIFF") is is_cog
            if cid == "demo-sync":
                assert set(item.assets) == {"data"} and not is_cog  # the demo's sources are plain GeoTIFFs
                continue
            thumbnail = item.assets["thumbnail"]
            assert thumbnail.roles == ["thumbnail"] and thumbnail.media_type == "image/png"
            with warnings.catch_warnings(), rasterio.open(thumbnail.get_absolute_href()) as png:
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                assert png.driver == "PNG" and max(png.width, png.height) <= 256 and png.count in (2, 4)
                alpha = png.read(png.count)
            assert alpha.any(), item.id  # something is drawn
            assert item.assets["source"].roles == ["source"]


def test_single_band_items_render_with_rescale_and_a_colormap(demo):
    items = _items(demo["dir"] / "catalog")
    dem = next(i for i in items["demo"] if i.properties[stac_ops.SOURCE_BLOB] == "demo/sample-dem.tif")
    render = dem.properties["renders"]["default"]
    band = dem.assets["data"].extra_fields["raster:bands"][0]["statistics"]
    assert render["assets"] == ["data"] and render["colormap_name"] == stac_ops.SINGLE_BAND_COLORMAP
    assert render["rescale"] == [[band["minimum"], band["maximum"]]]
    rgb = next(i for i in items["demo"] if i.properties[stac_ops.SOURCE_BLOB] == "demo/RGB.byte.tif")
    assert rgb.properties["renders"]["default"] == {"assets": ["data"], "title": "True colour"}


def test_the_static_catalog_moves_with_its_storage(demo, tmp_path, validator):
    """Copied elsewhere (and the original gone), every link and asset href still resolves and every
    item and collection still validates: the catalog is self-contained."""
    moved = tmp_path / "elsewhere" / "deeper"
    for part in ("storage", "catalog"):
        shutil.copytree(demo["dir"] / part, moved / part)
    original = demo["dir"].with_name(demo["dir"].name + "-away")
    demo["dir"].rename(original)
    try:
        catalog = pystac.Catalog.from_file(str(moved / "catalog" / "catalog.json"))
        count = 0
        for collection in catalog.get_children():
            validator.validate_collection(collection.to_dict(include_self_link=False, transform_hrefs=False))
            for item in collection.get_items():
                validator.validate_item(item.to_dict())
                for key, asset in item.assets.items():
                    assert not Path(asset.href).is_absolute() and "://" not in asset.href, (item.id, asset.href)
                    path = Path(urllib.parse.unquote(asset.get_absolute_href()))
                    assert path.is_file() and moved in path.parents, (item.id, key, path)
                    count += 1
        assert count == 2 * 3 + 12 * 3 + 2
    finally:
        original.rename(demo["dir"])


def test_with_a_base_url_every_asset_href_is_served_by_the_embedded_host(tmp_path, shared_rasters):
    """``RMH_ASSET_BASE_URL`` pointing at the embedded host's ``/files/storage`` mount: every asset
    href is an absolute URL under it, and the host answers a range request on it with the file's
    bytes (what a tiler or a browser reading a COG does)."""
    import urllib.request

    import azure.durable_functions as df

    from local_files import mirrored_mounts
    from local_runtime import LocalRuntime
    from settings import get_settings

    (tmp_path / "storage").mkdir()
    mounts = mirrored_mounts({"storage": tmp_path / "storage"})
    with LocalRuntime(df.DFApp(), db_path=tmp_path / "files.sqlite", port=0, files=mounts) as host, \
            pytest.MonkeyPatch.context() as env:
        base = f"{host.base_url}/files/storage"
        for key in ("RMH_STORAGE_BACKEND", "RMH_CATALOG_BACKEND", "RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN"):
            env.delenv(key, raising=False)
        env.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
        env.setenv("RMH_STATIC_CATALOG_DIR", str(tmp_path / "catalog"))
        env.setenv("RMH_ASSET_BASE_URL", base)
        get_settings.cache_clear()
        out = io.StringIO()
        try:
            code = cli.main(["demo", "--state", str(tmp_path / "state")], out=out)
        finally:
            get_settings.cache_clear()
        assert code == 0, out.getvalue()
        hrefs = [asset.href for items in _items(tmp_path / "catalog").values() for item in items
                 for asset in item.assets.values()]
        assert len(hrefs) == 1 * 3 + 12 * 3 + 1 and all(h.startswith(base + "/") for h in hrefs), hrefs[:3]
        for href in hrefs:
            local = tmp_path / "storage" / urllib.parse.unquote(href[len(base) + 1:])
            request = urllib.request.Request(href, headers={"Range": "bytes=0-99"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 206 and answer.read() == local.read_bytes()[:100], href


def test_demo_exits_1_when_a_file_fails_and_finishes_the_rest(demo, shared_rasters):
    """Last in this module: it runs the demo again in the same working directory."""
    broken = demo["dir"] / "broken.tif"
    broken.write_bytes(b"II*\x00 not a raster")
    code, printed = run_demo(demo["dir"], shared_rasters / "RGB.byte.tif", broken)
    text = "\n".join(line for line in printed.splitlines() if not line.startswith("["))
    assert code == 1, text  # as `run` does when files fail
    assert "\ncog_conversion: 1 done, 1 skipped, 1 failed" in text, text  # the DEM's COG is current
    assert "failed demo/broken.tif: " in text
