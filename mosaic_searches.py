"""A collection as one map: the pgSTAC search per collection that titiler-pgstac serves as a
mosaic, registered when a job has written the collection's items.

titiler-pgstac reads a registered search from pgSTAC's ``searches`` table by its hash
(``search_hash(search, metadata)``, an md5 of both): the ``search`` selects the items (here the
collection, as titiler's own ``/collections/{id}`` routes select it) and the ``metadata``
(titiler-pgstac's ``model.Metadata``) says what the mosaic is: ``type: "mosaic"``, ``name``,
``bounds`` (WGS84), ``minzoom`` / ``maxzoom`` in WebMercatorQuad, the items' asset keys and
``defaults``, the collection's ``renders`` as render parameters (what titiler does with them on
the fly: ``title`` and ``tilematrixsets`` dropped, ``minmax_zoom`` split).

The registration is idempotent: the same collection with the same bounds, zooms and renders is
the same row (found, not inserted); when one of them changes the hash changes, so the new search
replaces the collection's earlier one (its metadata names the collection as ``rmh:collection``).
One search per collection, always the current one: its id is in the job's output and in the
collection (``rmh:mosaic_search``), and with a tiler base URL the collection's links carry the
mosaic's TileJSON, tiles and map viewer URLs.

The static catalog has no pgSTAC and so no searches: nothing is registered there, and the
registration says why (README "From a finished job to a map").

Never reads the environment: callers pass the catalog and the tiler URL.
"""
from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import morecantile
import psycopg
import pystac
from psycopg.types.json import Jsonb

from task_models import MosaicLinks, MosaicRegistration  # noqa: F401  (what registering answers)

logger = logging.getLogger(__name__)

#: The tile matrix set of the zooms in a search's metadata (titiler-pgstac's ``Metadata``).
TMS_ID = "WebMercatorQuad"
#: The metadata key naming the collection a search was registered for (ours, not titiler's).
COLLECTION_KEY = "rmh:collection"
#: The collection field holding its current search id.
SEARCH_FIELD = "rmh:mosaic_search"
#: Titles of the collection links this module writes (and replaces).
LINK_TITLES = {"tilejson": "Mosaic TileJSON (titiler-pgstac)", "xyz": "Mosaic tiles (titiler-pgstac)",
               "map": "Mosaic map viewer (titiler-pgstac)"}
#: Render fields titiler-pgstac does not take as tile parameters.
_NOT_PARAMETERS = ("title", "tilematrixsets", "minmax_zoom")
NO_SEARCHES = ("the static catalog has no pgSTAC, so no search is registered: a tiler reads its "
               "items one by one (README \"From a finished job to a map\")")

# Per item: its footprint's envelope in EPSG:3857 (clipped to the WebMercatorQuad's latitudes)
# over its ``proj:shape``: the resolution rio-tiler gives the item in the tile matrix set, and
# that of its coarsest overview (halved until its shorter side is 256 pixels or fewer). The
# finest resolution is the mosaic's maxzoom, the coarsest overview its minzoom.
_ZOOM_RESOLUTIONS = """
WITH e AS (
    SELECT ST_Transform(ST_ClipByBox2D(ST_Envelope(geometry),
                                       ST_MakeEnvelope(-180, -85.0511287798, 180, 85.0511287798, 4326)), 3857) AS g,
           (content->'properties'->'proj:shape'->>0)::float8 AS h,
           (content->'properties'->'proj:shape'->>1)::float8 AS w
    FROM pgstac.items
    WHERE collection = %s AND jsonb_typeof(content->'properties'->'proj:shape') = 'array'
), r AS (
    SELECT greatest((ST_XMax(g) - ST_XMin(g)) / w, (ST_YMax(g) - ST_YMin(g)) / h) AS res, least(w, h) AS side
    FROM e WHERE w > 0 AND h > 0 AND NOT ST_IsEmpty(g)
)
SELECT min(res), max(res * power(2, greatest(0, ceil(ln(side / 256.0) / ln(2))))) FROM r WHERE res > 0
"""


class MosaicError(Exception):
    """Base class of the errors of mosaic registration."""


class CollectionMissing(MosaicError):
    """The collection to register a mosaic for is not in the catalog."""


def search_body(collection_id: str) -> dict[str, Any]:
    """The search a collection's mosaic is: its items (titiler's ``PgSTACSearch`` as it dumps it)."""
    return {"collections": [collection_id], "filter-lang": "cql2-json"}


def render_parameters(render: dict[str, Any]) -> dict[str, Any]:
    """A STAC render as titiler-pgstac's tile parameters (as its ``/collections`` routes do)."""
    params = {k: v for k, v in render.items() if k not in _NOT_PARAMETERS}
    zooms = render.get("minmax_zoom")
    if isinstance(zooms, list) and len(zooms) == 2:
        params["minzoom"], params["maxzoom"] = zooms
    return params


def zoom_range(finest: float | None, coarsest: float | None) -> tuple[int | None, int | None]:
    """(minzoom, maxzoom) in WebMercatorQuad of the coarsest overview and finest pixel size in
    metres of EPSG:3857 (``TileMatrixSet.zoom_for_res``, as rio-tiler picks a COG's zooms)."""
    if not finest or not coarsest:
        return None, None
    tms = morecantile.tms.get(TMS_ID)
    return tms.zoom_for_res(coarsest), tms.zoom_for_res(finest)


def mosaic_metadata(collection: pystac.Collection, zooms: tuple[int | None, int | None]) -> dict[str, Any]:
    """The search metadata titiler-pgstac reads (``model.Metadata``), naming the collection."""
    bboxes = collection.extent.spatial.bboxes
    metadata: dict[str, Any] = {"type": "mosaic", "name": f"Mosaic of {collection.title or collection.id}",
                                COLLECTION_KEY: collection.id}
    if bboxes:
        metadata["bounds"] = list(bboxes[0])
    if zooms[0] is not None:
        metadata["minzoom"], metadata["maxzoom"] = min(zooms), max(zooms)
    item_assets = collection.extra_fields.get("item_assets")
    if isinstance(item_assets, dict) and item_assets:
        metadata["assets"] = sorted(item_assets)
    renders = collection.extra_fields.get("renders")
    if isinstance(renders, dict) and renders:
        metadata["defaults"] = {name: render_parameters(render) for name, render in renders.items()
                                if isinstance(render, dict)}
    return metadata


def default_render(metadata: dict[str, Any]) -> dict[str, Any]:
    """The render parameters a link draws with: ``defaults.default``, else the first, else the
    first listed asset (titiler-pgstac's tiles need ``assets``)."""
    defaults = metadata.get("defaults") or {}
    render = defaults.get("default") or next(iter(defaults.values()), None)
    if render:
        return {k: v for k, v in render.items() if k not in ("minzoom", "maxzoom")}
    return {"assets": (metadata.get("assets") or ["data"])[:1]}


def _query(params: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if key == "rescale":
            pairs += [(key, ",".join(str(v) for v in pair)) for pair in value]
        elif isinstance(value, list):
            pairs += [(key, str(v)) for v in value]
        elif isinstance(value, dict):
            pairs.append((key, json.dumps(value, separators=(",", ":"))))
        else:
            pairs.append((key, str(value)))
    return urllib.parse.urlencode(pairs, safe=",")


def tiler_links(tiler_url: str, search_id: str, metadata: dict[str, Any]) -> MosaicLinks:
    """titiler-pgstac's TileJSON, tile template and map viewer of a search, with the render."""
    base = f"{tiler_url.rstrip('/')}/searches/{search_id}"
    query = _query(default_render(metadata))
    return MosaicLinks(tilejson=f"{base}/{TMS_ID}/tilejson.json?{query}",
                       tiles=f"{base}/tiles/{TMS_ID}/{{z}}/{{x}}/{{y}}.png?{query}",
                       viewer=f"{base}/{TMS_ID}/map.html?{query}")


def collection_links(links: MosaicLinks) -> list[pystac.Link]:
    """The collection's links to its mosaic (web-map-links rels ``tilejson`` and ``xyz``)."""
    return [pystac.Link("tilejson", links.tilejson, media_type="application/json", title=LINK_TITLES["tilejson"]),
            pystac.Link("xyz", links.tiles, media_type="image/png", title=LINK_TITLES["xyz"]),
            pystac.Link("map", links.viewer, media_type="text/html", title=LINK_TITLES["map"])]


def with_mosaic(collection: pystac.Collection, search_id: str, links: MosaicLinks | None) -> bool:
    """Point the collection at its current search (in place); True when that changed it."""
    before = (collection.extra_fields.get(SEARCH_FIELD), [l.to_dict() for l in collection.links])
    collection.links = [l for l in collection.links if l.title not in LINK_TITLES.values()]
    if links is not None:
        collection.links += collection_links(links)
    collection.extra_fields[SEARCH_FIELD] = search_id
    return before != (search_id, [l.to_dict() for l in collection.links])


def register_search(conn: psycopg.Connection, collection_id: str, metadata: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """(search id, whether it was new, the collection's earlier searches removed) — through
    pgSTAC's ``search_query``, as titiler-pgstac's ``/searches/register`` writes it."""
    search = search_body(collection_id)
    found = conn.execute("SELECT hash FROM pgstac.searches WHERE hash = pgstac.search_hash(%s, %s)",
                         (Jsonb(search), Jsonb(metadata))).fetchone()
    if found is not None:
        search_id, new = found[0], False
    else:
        search_id = conn.execute("SELECT hash FROM pgstac.search_query(%s, false, %s)",
                                 (Jsonb(search), Jsonb(metadata))).fetchone()[0]
        new = True
    replaced = [row[0] for row in conn.execute(
        "DELETE FROM pgstac.searches WHERE metadata->>%s = %s AND hash <> %s RETURNING hash",
        (COLLECTION_KEY, collection_id, search_id)).fetchall()]
    return search_id, new, replaced


def item_resolutions(conn: psycopg.Connection, collection_id: str) -> tuple[float | None, float | None]:
    """(finest pixel size, coarsest overview's pixel size) of a collection's items, in metres of
    EPSG:3857."""
    row = conn.execute(_ZOOM_RESOLUTIONS, (collection_id,)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def register_collection_mosaic(catalog: Any, collection_id: str, *, tiler_url: str | None = None) -> MosaicRegistration:
    """Register (or find) the collection's mosaic search and point the collection at it.

    ``catalog`` is a ``pgstac_catalog.PgStacCatalog``; any other catalog (the static one) gets
    a registration with no search and the reason. Concurrent registrations of one collection are
    serialised by its writers' advisory lock."""
    if not hasattr(catalog, "run_in_transaction"):
        return MosaicRegistration(collection=collection_id, reason=NO_SEARCHES)
    collection = catalog.get_collection(collection_id)
    if collection is None:
        raise CollectionMissing(f"collection {collection_id!r} does not exist")

    def work(conn: psycopg.Connection) -> tuple[dict[str, Any], str, bool, list[str]]:
        catalog.lock_collection(conn, collection_id)
        zooms = zoom_range(*item_resolutions(conn, collection_id))
        metadata = mosaic_metadata(collection, zooms)
        return (metadata, *register_search(conn, collection_id, metadata))

    metadata, search_id, new, replaced = catalog.run_in_transaction(f"register mosaic of {collection_id}", work)
    links = tiler_links(tiler_url, search_id, metadata) if tiler_url else None
    if with_mosaic(collection, search_id, links):
        catalog.upsert_collection(collection)
    if new:
        logger.info("collection %s: mosaic search %s registered (replaced %d)", collection_id, search_id, len(replaced))
    return MosaicRegistration(collection=collection_id, search_id=search_id, registered=new, replaced=replaced,
                              minzoom=metadata.get("minzoom"), maxzoom=metadata.get("maxzoom"), links=links)
