"""STAC collections: a container's collection (default id, title and description per what it
holds), and its extent, summaries, ``item_assets`` and ``renders`` recomputed from its items
(``summarize_items`` / ``apply_summary``; pgSTAC aggregates in SQL into the same ``ItemSummary``).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

import pystac
from pydantic import BaseModel

from cube_stac import DATACUBE_EXT, collection_cube_fields, merge_item_fields
from stac_ops import (COG_MEDIA_TYPE, DEFAULT_LICENSE, PNG_MEDIA_TYPE, RENDER_EXT, as_utc, check_id,
                      resolve_collection_id)


class CollectionKind(str, Enum):
    """What a collection holds, which decides its default title, description and item assets."""

    rasters = "rasters"  # source files cataloged in place (sync_container, catalog_file)
    cogs = "cogs"  # Cloud Optimized GeoTIFFs converted from sources (cog_conversion)
    tiles = "tiles"  # COG tiles cut from one source (process_tiled_raster)


_THUMBNAIL = {"title": "Thumbnail", "type": PNG_MEDIA_TYPE, "roles": ["thumbnail"]}


_CONVERTED = {"data": {"title": "Cloud Optimized GeoTIFF", "type": COG_MEDIA_TYPE, "roles": ["data"]},
              "source": {"title": "Original file", "roles": ["source"]}, "thumbnail": _THUMBNAIL}


#: ``item_assets`` of a new collection, before it has items (then they come from the items).
DEFAULT_ITEM_ASSETS: dict[CollectionKind, dict[str, dict[str, Any]]] = {
    CollectionKind.rasters: {"data": {"title": "Raster file", "roles": ["data"]}},
    CollectionKind.cogs: _CONVERTED,
    CollectionKind.tiles: _CONVERTED,
}


def collection_text(kind: CollectionKind | str, collection_id: str, source: str,
                    target_crs: str | None = None) -> tuple[str, str]:
    """Default title and description of a collection: what it holds and where from. The title
    ends with the collection id, so no two collections share one."""
    kind = CollectionKind(kind)
    crs = "" if not target_crs else (f", reprojected to {target_crs}" if len(target_crs) <= 40 else ", reprojected")
    title, description = {
        CollectionKind.rasters: (f"Rasters in {source}",
                                 f"Rasters cataloged in place from {source}: one item per file, whose "
                                 "data asset is the file itself."),
        CollectionKind.cogs: (f"Cloud Optimized GeoTIFFs converted from {source}",
                              f"Cloud Optimized GeoTIFFs converted from the rasters of {source}{crs}: one "
                              "item per file, with the COG, the original file and a thumbnail."),
        CollectionKind.tiles: (f"COG tiles of {source}",
                               f"Cloud Optimized GeoTIFF tiles cut from {source}{crs}: one item per tile, "
                               "with the tile, the original file and a thumbnail."),
    }[kind]
    return f"{title} ({collection_id})", description


def build_collection(
    collection_id: str,
    *,
    description: str | None = None,
    title: str | None = None,
    license: str = DEFAULT_LICENSE,
    bbox: Sequence[float] | None = None,
    interval: Sequence[dt.datetime | None] | None = None,
    summaries: Mapping[str, Any] | None = None,
    keywords: Sequence[str] | None = None,
    providers: Sequence[Mapping[str, Any]] | None = None,
    item_assets: Mapping[str, Mapping[str, Any]] | None = None,
) -> pystac.Collection:
    """A collection; ``item_assets`` default to those of a collection of converted COGs."""
    check_id(collection_id)
    extent = pystac.Extent(
        pystac.SpatialExtent([list(bbox or [-180.0, -90.0, 180.0, 90.0])]),
        pystac.TemporalExtent([list(interval or [None, None])]),
    )
    return pystac.Collection(
        id=collection_id, description=description or f"Rasters cataloged in {collection_id}",
        title=title, license=license, extent=extent, keywords=list(keywords or []) or None,
        providers=[pystac.Provider.from_dict(dict(p)) for p in providers or []] or None,
        summaries=pystac.Summaries(dict(summaries or {})),
        extra_fields={"item_assets": json.loads(json.dumps(item_assets or _CONVERTED))},
    )


def collection_for_container(container: str, *, collection_id: str | None = None,
                             kind: CollectionKind | str = CollectionKind.rasters, source: str | None = None,
                             target_crs: str | None = None, **kwargs: Any) -> pystac.Collection:
    """The collection items of ``container`` go to (``collection_id`` overrides the derived id),
    titled and described after what it holds (``kind``) and where from (``source``, default the
    container) unless ``title`` / ``description`` say otherwise."""
    cid = resolve_collection_id(container, collection_id)
    kind = CollectionKind(kind)
    title, description = collection_text(kind, cid, source or container, target_crs)
    kwargs["title"] = kwargs.get("title") or title
    kwargs["description"] = kwargs.get("description") or description
    kwargs.setdefault("item_assets", DEFAULT_ITEM_ASSETS[kind])
    return build_collection(cid, **kwargs)


class AssetSummary(BaseModel):
    """Items that have asset ``key`` with this type, title and roles."""

    key: str
    type: str | None = None
    title: str | None = None
    roles: list[str] | None = None
    items: int


class RenderSummary(BaseModel):
    """Items whose render ``key`` is ``shape`` (the render without ``rescale``), and the widest
    rescale range per band over them."""

    key: str
    shape: dict[str, Any]
    items: int
    rescale: list[list[float]] | None = None


class ItemSummary(BaseModel):
    """What a collection's extent and summaries are computed from: aggregates over its items."""

    count: int = 0
    bbox: list[float] | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    proj_codes: list[str] = []
    data_types: list[str] = []
    assets: list[AssetSummary] = []
    renders: list[RenderSummary] = []
    cube: dict[str, Any] = {}  # the cube items' datacube fields merged (cube_stac.merge_item_fields)


def item_span(stac: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """An item dict's start and end (its datetime twice when it has no range)."""
    props = stac["properties"]
    start = parse_iso(props.get("start_datetime") or props.get("datetime"))
    return start, parse_iso(props.get("end_datetime") or props.get("datetime"))


def parse_iso(text: str | None) -> dt.datetime | None:
    return None if text is None else as_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def _west_south_east_north(stac: Mapping[str, Any]) -> list[float]:
    """The 2D bbox of an item; an antimeridian-crossing one widened to all longitudes."""
    bbox = stac["bbox"]
    west, south, east, north = bbox if len(bbox) == 4 else [bbox[0], bbox[1], bbox[3], bbox[4]]
    return [-180.0, south, 180.0, north] if west > east else [west, south, east, north]


def _render_summaries(items: Sequence[Mapping[str, Any]]) -> list[RenderSummary]:
    groups: dict[tuple[str, str], RenderSummary] = {}
    for item in items:
        for key, render in (item["properties"].get("renders") or {}).items():
            shape = {k: v for k, v in render.items() if k != "rescale"}
            group = groups.setdefault((key, json.dumps(shape, sort_keys=True)),
                                      RenderSummary(key=key, shape=shape, items=0))
            group.items += 1
            if render.get("rescale"):
                group.rescale = [[min(a[0], b[0]), max(a[1], b[1])] for a, b in
                                 zip(group.rescale or render["rescale"], render["rescale"])]
    return list(groups.values())


def summarize_items(items: Iterable[Mapping[str, Any]]) -> ItemSummary:
    """Aggregate item dicts: count, bbox union, time span, projection codes, band data types,
    assets (by key, type, title, roles) and renders."""
    items = list(items)
    if not items:
        return ItemSummary()
    boxes = [_west_south_east_north(item) for item in items]
    spans = [item_span(item) for item in items]
    assets: dict[tuple, int] = {}
    for item in items:
        for key, asset in item.get("assets", {}).items():
            shape = (key, asset.get("type"), asset.get("title"), tuple(asset.get("roles") or ()) or None)
            assets[shape] = assets.get(shape, 0) + 1
    types = {band.get("data_type") for item in items for asset in item.get("assets", {}).values()
             for band in asset.get("bands", [])}
    columns = list(zip(*boxes))
    return ItemSummary(
        count=len(items), bbox=[min(columns[0]), min(columns[1]), max(columns[2]), max(columns[3])],
        start=min(filter(None, (s for s, _ in spans)), default=None),
        end=max(filter(None, (e for _, e in spans)), default=None),
        proj_codes=sorted(filter(None, {item["properties"].get("proj:code") for item in items})),
        data_types=sorted(filter(None, types)),
        assets=[AssetSummary(key=k, type=t, title=ti, roles=list(r) if r else None, items=n)
                for (k, t, ti, r), n in sorted(assets.items(), key=lambda kv: kv[0][0])],
        renders=_render_summaries(items), cube=merge_item_fields(item["properties"] for item in items))


def summary_item_assets(summary: ItemSummary) -> dict[str, dict[str, Any]]:
    """``item_assets``: the asset keys every item has, with the fields they all agree on. Where
    fewer than two agree (the schema asks for two), a description says that the rest differ."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(a.key for a in summary.assets):
        rows = [a for a in summary.assets if a.key == key]
        if sum(a.items for a in rows) != summary.count:
            continue
        fields = {}
        for field in ("title", "type", "roles"):
            values = {json.dumps(getattr(a, field)) for a in rows}
            if len(values) == 1 and getattr(rows[0], field) is not None:
                fields[field] = getattr(rows[0], field)
        if len(fields) < 2:
            fields["description"] = f"Every item has a {key!r} asset; its title or type differs between items."
        out[key] = fields
    return out


def summary_renders(summary: ItemSummary) -> dict[str, dict[str, Any]]:
    """Collection ``renders``: each render every item has in one shape, rescaled over all of them."""
    out = {}
    for render in summary.renders:
        if render.items == summary.count and sum(r.key == render.key for r in summary.renders) == 1:
            out[render.key] = {**render.shape, **({"rescale": render.rescale} if render.rescale else {})}
    return out


def apply_summary(collection: pystac.Collection, summary: ItemSummary) -> pystac.Collection:
    """Set the collection's extent, summaries, ``item_assets`` and ``renders`` from its items'
    aggregates (in place). A collection without items keeps its ``item_assets``."""
    if summary.bbox is not None:
        collection.extent.spatial = pystac.SpatialExtent([summary.bbox])
    collection.extent.temporal = pystac.TemporalExtent([[summary.start, summary.end]])
    summaries = collection.summaries.to_dict()
    summaries.pop("proj:code", None)
    summaries.pop("data_type", None)
    if summary.proj_codes:
        summaries["proj:code"] = summary.proj_codes
    if summary.data_types:
        summaries["data_type"] = summary.data_types
    cube = collection_cube_fields(summary.cube, summary.bbox)
    summaries.pop("cube:variables", None)
    for key in ("cube:dimensions", "cube:variables"):
        collection.extra_fields.pop(key, None)
    if cube:  # a collection of cubes: their variables and dimensions (datacube extension)
        collection.extra_fields.update(cube)
        summaries["cube:variables"] = sorted(cube["cube:variables"])
    collection.summaries = pystac.Summaries(summaries)
    if summary.count:
        item_assets = summary_item_assets(summary)
        if item_assets:
            collection.extra_fields["item_assets"] = item_assets
        else:
            collection.extra_fields.pop("item_assets", None)
    renders = summary_renders(summary) if summary.count else {}
    extensions = [e for e in collection.stac_extensions if e not in (RENDER_EXT, DATACUBE_EXT)]
    if cube:
        extensions.append(DATACUBE_EXT)
    collection.extra_fields.pop("renders", None)
    if renders:
        collection.extra_fields["renders"] = renders
        extensions.append(RENDER_EXT)
    collection.stac_extensions = extensions
    return collection
