"""The assets routes (a blueprint): signed access to what the catalog holds (a container's SAS
shaped like Planetary Computer's token API, an item's asset as a redirect or as JSON) and the
catalog's footprints and collection ids the dashboard's map draws. Errors map to statuses in
``http_edge``."""
from __future__ import annotations

import asyncio
import hmac
import urllib.parse

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

import footprints
import stac_ops
import storage
from clients import blob_store, catalog
from http_edge import JOB_ID, ApiError, api, json_response
from models import problems_of
from settings import get_settings

bp = df.Blueprint()

SAS_KEY_HEADERS = ("Ocp-Apim-Subscription-Key", "x-rmh-token-key")


def _check_token_key(req: func.HttpRequest) -> None:
    """The token route's own key check (401 otherwise): the planetary-computer SDK sends its key
    as ``Ocp-Apim-Subscription-Key``, a header the Functions host does not check, so the route is
    anonymous at the host and compares that header, in constant time, with RMH_SAS_TOKEN_KEYS."""
    keys = [k.get_secret_value().encode() for k in get_settings().sas_token_keys]
    if not keys:
        raise ApiError(401, "the token API has no keys configured (set RMH_SAS_TOKEN_KEYS)")
    presented = next((req.headers.get(h) for h in SAS_KEY_HEADERS if req.headers.get(h)), None)
    if presented is None or not any(hmac.compare_digest(presented.encode(), k) for k in keys):
        raise ApiError(401, "a valid key is required in the Ocp-Apim-Subscription-Key header")


def _signing_store() -> storage.AzureBlobStore:
    store = blob_store()
    if not isinstance(store, storage.AzureBlobStore):
        raise ApiError(404, "assets on local storage are not signed; the embedded host serves them "
                            "under /files (see RMH_ASSET_BASE_URL)")
    return store


def _readable_container(name: str) -> str:
    try:
        container = storage.check_container_name(name)
    except storage.InvalidContainerName as err:
        raise ApiError(400, str(err)) from None
    if container == get_settings().system_container:
        raise ApiError(403, f"container {container!r} holds the service's own state, not assets")
    return container


@bp.route(route="sas/v1/token/{account}/{container}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def sas_token(req: func.HttpRequest) -> func.HttpResponse:
    """A short-lived, read-only, container-scoped SAS, shaped like Planetary Computer's token API
    (``{"msft:expiry": ..., "token": ...}``), so ``planetary_computer.sign`` works with
    ``PC_SDK_SAS_URL=https://<app>/api/sas/v1/token``. The token is never logged."""
    _check_token_key(req)
    store = _signing_store()
    if req.route_params.get("account") != store.account_name:
        raise ApiError(404, f"unknown storage account {req.route_params.get('account', '')[:64]!r}")
    container = _readable_container(req.route_params.get("container", ""))
    if not await asyncio.to_thread(store.container_exists, container):
        raise ApiError(404, f"container {container!r} does not exist")
    access = await asyncio.to_thread(store.read_sas, container)
    return json_response({"msft:expiry": access.expiry.strftime("%Y-%m-%dT%H:%M:%SZ"), "token": access.token},
                         headers={"Cache-Control": "no-store"})


@bp.route(route="items/{collection}/{item_id}/assets/{asset_key}", methods=["GET"])
@api
async def asset_redirect(req: func.HttpRequest) -> func.HttpResponse:
    """302 to a signed, short-lived URL of one asset of a cataloged item (function key)."""
    location = await _asset_location(req)
    return func.HttpResponse(status_code=302, headers={"Location": location, "Cache-Control": "no-store"})


async def _asset_location(req: func.HttpRequest) -> str:
    """The signed (or public) URL of the asset the route parameters name."""
    collection, item_id = req.route_params.get("collection", ""), req.route_params.get("item_id", "")
    key = req.route_params.get("asset_key", "")
    try:
        stac_ops.check_id(collection), stac_ops.check_id(item_id)
    except stac_ops.StacOpsError as err:
        raise ApiError(400, str(err)) from None
    if not JOB_ID.match(key):
        raise ApiError(400, f"invalid asset key {key[:64]!r}")
    item = await asyncio.to_thread(catalog().get_item, collection, item_id)
    if item is None:
        raise ApiError(404, f"no item {item_id!r} in collection {collection!r}")
    asset = item.assets.get(key)
    if asset is None:
        raise ApiError(404, f"item {item_id!r} has no asset {key!r}", assets=sorted(item.assets))
    return await asyncio.to_thread(_signed_location, asset.href)


def _signed_location(href: str) -> str:
    """An asset's href with a read SAS when it is a blob of our account; an href under the
    configured public base URL as it is."""
    config = get_settings()
    if config.asset_base_url and href.startswith(config.asset_base_url + "/"):
        return href
    store = _signing_store()
    prefix = store.url_prefix()
    if not href.startswith(prefix):
        raise ApiError(409, "the asset is not a blob of this service's storage account")
    container, _, blob = urllib.parse.unquote(href[len(prefix):]).partition("/")
    access = store.read_sas(_readable_container(container), blob)
    return f"{href}?{access.token}"


# -- the catalog as the dashboard's map reads it: footprints, collections, asset URLs as JSON (a
# browser's fetch cannot read a cross-origin redirect's Location) ---------------------------------

@bp.route(route="footprints", methods=["GET"])
@api
async def list_footprints(req: func.HttpRequest) -> func.HttpResponse:
    """A page of the catalog's items as GeoJSON (``collection``, ``bbox``, ``limit``, ``token``),
    each asset with how a browser opens it; ``next`` is the following page's token."""
    try:
        query = footprints.FootprintQuery.from_params(req.params)
    except ValidationError as err:
        raise ApiError(400, "invalid query", problems=problems_of(err.errors())) from None
    links = footprints.AssetLinks(get_settings(), blob_store())
    page = await asyncio.to_thread(footprints.footprint_page, catalog(), links, query)
    return json_response(page, headers={"Cache-Control": "no-store"})


@bp.route(route="collections", methods=["GET"])
@api
async def list_collections(req: func.HttpRequest) -> func.HttpResponse:
    """The catalog's collection ids (the map's collection filter)."""
    ids = await asyncio.to_thread(catalog().collection_ids)
    return json_response({"collections": ids})


@bp.route(route="items/{collection}/{item_id}/assets/{asset_key}/href", methods=["GET"])
@api
async def asset_href(req: func.HttpRequest) -> func.HttpResponse:
    """``{"href": ...}``: the signed, short-lived URL the asset route redirects to."""
    return json_response({"href": await _asset_location(req)}, headers={"Cache-Control": "no-store"})
