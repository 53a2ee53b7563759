"""The dashboard's routes (a blueprint): the page (function key, like the data routes it calls),
its static files (anonymous: the same code for everyone, no data), preview tiles of the catalog's
rasters for its map, and the catalog's lifecycle (drafts and transitions). The footprints and
asset URLs it reads are the assets routes' (``assets_api``)."""
from __future__ import annotations

import asyncio
import urllib.parse

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

import dashboard
import previews
import stac_ops
from activity_frame import gdal_config
from clients import blob_store, catalog
from http_edge import ApiError, api, json_response, number_param
from models import problems_of
from settings import get_settings

bp = df.Blueprint()


@bp.route(route="dashboard", methods=["GET"])
@api
async def dashboard_page(req: func.HttpRequest) -> func.HttpResponse:
    """The dashboard: jobs, a job's tasks, metrics and a map of the catalog (HTML)."""
    base = get_settings().asset_base_url
    origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(base)) if base else None
    return func.HttpResponse(dashboard.page(), status_code=200,
                             headers=dashboard.page_headers((origin,) if origin else ()))


@bp.route(route="dashboard/static/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def dashboard_static(req: func.HttpRequest) -> func.HttpResponse:
    """The dashboard's script, style sheet and npm libraries (with their licences)."""
    content, headers = dashboard.static_file(req.route_params.get("path") or "")
    return func.HttpResponse(content, status_code=200, headers=headers)


@bp.route(route="previews/{collection}/{item_id}/{asset_key}/{z}/{x}/{y}", methods=["GET"])
@api
async def preview_tile(req: func.HttpRequest) -> func.HttpResponse:
    """A 256² PNG tile (WebMercatorQuad ``z/x/y``) of an item's raster asset, drawn with rio-tiler
    in the item's render (nodata transparent), read through the jobs' storage access."""
    try:
        address = previews.TileAddress(collection=req.route_params.get("collection", ""),
                                       item=req.route_params.get("item_id", ""),
                                       asset=req.route_params.get("asset_key", ""),
                                       z=req.route_params.get("z", ""), x=req.route_params.get("x", ""),
                                       y=req.route_params.get("y", ""))
        stac_ops.check_id(address.collection), stac_ops.check_id(address.item)
    except ValidationError as err:
        raise ApiError(400, "invalid tile", problems=problems_of(err.errors())) from None
    except stac_ops.StacOpsError as err:
        raise ApiError(400, str(err)) from None
    png = await asyncio.to_thread(previews.tile_png, catalog(), blob_store(), get_settings(), address, gdal_config())
    return func.HttpResponse(png, status_code=200, headers={
        "Content-Type": "image/png", "Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})


@bp.route(route="lifecycle", methods=["GET"])
@api
async def get_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    """The drafts (collections with items waiting for ``publish``) and the transitions (draft,
    publish, revoke: when, by whom, why), newest first; ``collection`` and ``limit`` narrow it."""
    collection = req.params.get("collection")
    if collection is not None:
        try:
            stac_ops.check_id(collection)
        except stac_ops.StacOpsError as err:
            raise ApiError(400, str(err)) from None
    limit = number_param(req, "limit", 100, 1, 1000)
    state = await asyncio.to_thread(catalog().lifecycle, collection, limit)
    return json_response(state.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
