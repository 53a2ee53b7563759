"""STAC made elsewhere, for the import tests: rasters, and catalogs written by pystac.

A plain importable helper (no pytest). ``source_files`` writes the files a vendor ships: a
GeoTIFF that is not a COG (striped, no overviews), a COG, a PNG thumbnail and a JSON metadata
sidecar. ``static_catalog`` writes a pystac catalog > collection > items over them with
relative hrefs (``CatalogType.SELF_CONTAINED``); ``item_dicts`` builds items whose hrefs are
whatever the test gives (absolute blob URLs, ``/vsiaz/`` paths, hostile ones), for NDJSON
exports and ItemCollections.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pystac
import rasterio
import rasterio.errors
import rasterio.warp

from raster_factory import write_raster

GEOTIFF = "image/tiff; application=geotiff"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Where the vendor's scenes lie (UTM 33N), one per item, side by side.
SCENE_BOUNDS = [(500000.0 + 6000.0 * i, 4980000.0, 505120.0 + 6000.0 * i, 4985120.0) for i in range(4)]
SCENE_TIMES = [dt.datetime(2024, 5, 1 + i, 10, tzinfo=dt.timezone.utc) for i in range(4)]


def source_files(directory: Path, index: int = 0) -> dict[str, Path]:
    """The files of one scene: ``striped.tif`` (an RGB GeoTIFF that is not a COG), ``cog.tif``
    (a single-band COG), ``thumb.png`` and ``meta.json``."""
    import geo_ops

    directory.mkdir(parents=True, exist_ok=True)
    bounds = SCENE_BOUNDS[index]
    striped = write_raster(directory / "striped.tif", width=640, height=640, count=3, crs="EPSG:32633",
                           bounds=bounds, tiled=False, seed=index)
    plain = write_raster(directory / "dem-source.tif", width=640, height=640, dtype="uint16", crs="EPSG:32633",
                         bounds=bounds, seed=index + 10)
    cog = directory / "cog.tif"
    geo_ops.to_cog(plain, cog, profile="deflate")
    plain.unlink()
    thumb = directory / "thumb.png"
    with warnings.catch_warnings():  # a preview has no georeferencing, as a vendor's has none
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(thumb, "w", driver="PNG", width=32, height=32, count=3, dtype="uint8") as dst:
            dst.write(np.full((3, 32, 32), 120 + index, dtype="uint8"))
    (directory / "thumb.png.aux.xml").unlink(missing_ok=True)
    meta = directory / "meta.json"
    meta.write_text(json.dumps({"vendor": "elsewhere", "scene": index}))
    return {"data": striped, "elevation": cog, "thumbnail": thumb, "metadata": meta}


def lonlat_bounds(index: int) -> list[float]:
    return list(rasterio.warp.transform_bounds("EPSG:32633", "EPSG:4326", *SCENE_BOUNDS[index]))


def _geometry(bbox: list[float]) -> dict[str, Any]:
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


ASSET_FIELDS = {
    "data": {"type": GEOTIFF, "roles": ["data"], "title": "RGB scene"},
    "elevation": {"type": COG, "roles": ["data"], "title": "Elevation"},
    "thumbnail": {"type": "image/png", "roles": ["thumbnail"], "title": "Preview"},
    "metadata": {"type": "application/json", "roles": ["metadata"], "title": "Vendor metadata"},
}


def pystac_item(item_id: str, index: int, hrefs: Mapping[str, str], *, collection: str | None = None) -> pystac.Item:
    """A pystac item of scene ``index`` whose assets point at ``hrefs`` (key -> href)."""
    bbox = lonlat_bounds(index)
    item = pystac.Item(id=item_id, geometry=_geometry(bbox), bbox=bbox, datetime=SCENE_TIMES[index],
                       properties={"platform": "elsewhere-1"}, collection=collection)
    for key, href in hrefs.items():
        fields = ASSET_FIELDS[key]
        item.add_asset(key, pystac.Asset(href=href, media_type=fields["type"], roles=fields["roles"],
                                         title=fields["title"]))
    return item


def item_dicts(hrefs_by_item: Mapping[str, Mapping[str, str]], *, collection: str | None = None) -> list[dict]:
    """Items as JSON (as an NDJSON export or an ItemCollection carries them), scene by scene."""
    return [pystac_item(item_id, index % len(SCENE_BOUNDS), hrefs, collection=collection).to_dict(
        include_self_link=False, transform_hrefs=False) for index, (item_id, hrefs) in enumerate(hrefs_by_item.items())]


def static_catalog(root: Path, *, scenes: int = 2, collection_id: str = "vendor-scenes") -> Path:
    """A pystac catalog > collection > ``scenes`` items written self-contained under ``root``
    (every href relative; each item's files beside its JSON). Returns catalog.json's path."""
    catalog = pystac.Catalog(id="vendor", description="A vendor's scenes", title="Vendor")
    extent = pystac.Extent(pystac.SpatialExtent([lonlat_bounds(0)]),
                           pystac.TemporalExtent([[SCENE_TIMES[0], SCENE_TIMES[scenes - 1]]]))
    collection = pystac.Collection(id=collection_id, description="Scenes made elsewhere", extent=extent,
                                   license="CC-BY-4.0", title="Vendor scenes",
                                   providers=[pystac.Provider(name="Elsewhere Inc.", roles=["producer"])])
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    for index in range(scenes):
        item_id = f"scene-{index}"
        files = source_files(root / collection_id / item_id, index)
        item = pystac_item(item_id, index, {key: str(path) for key, path in files.items()})
        collection.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def upload_tree(store, container: str, local: Path, prefix: str) -> list[str]:
    """Every file under ``local`` as a blob under ``prefix`` (the names uploaded)."""
    store.create_container(container)
    names = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        name = f"{prefix}{path.relative_to(local).as_posix()}"
        store.upload_from_path(container, name, path)
        names.append(name)
    return names


def copy_files(files: Mapping[str, Path], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {key: Path(shutil.copy(path, directory / path.name)) for key, path in files.items()}
