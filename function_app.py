"""The Functions app: registers the blueprints, and answers the service's own routes (health, the
API's contract) and the change events' drain.

This module wires, it does not compute. The routes live by concern, each a blueprint: the job API
(``jobs_api``, over the jobs' read model ``job_reads``), the assets (``assets_api``: signed
access, footprints) and the dashboard (``dashboard_api``); every route stands on ``http_edge``
(errors mapped to status codes in one table, bounded request bodies). The Durable functions are
``orchestrators`` (the recipes), ``activities`` (their rooms' blueprints) and ``entities``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any, Awaitable, Callable

import azure.durable_functions as df
import azure.functions as func

import activities
import assets_api
import dashboard
import dashboard_api
import entities
import jobs_api
import openapi
import orchestrators
import storage
from assets_api import asset_href, asset_redirect, list_collections, list_footprints, sas_token  # noqa: F401
from clients import blob_store, catalog
from dashboard_api import dashboard_page, dashboard_static, get_lifecycle, preview_tile  # noqa: F401
from http_edge import (ERROR_STATUS, JOB_ID, MAX_BODY_BYTES, MAX_JSON_DEPTH, ApiError, api,  # noqa: F401
                       error_response, json_response, read_json_body)
from jobs_api import (blob_events, get_job, get_job_tasks, get_metrics, ingest_request,  # noqa: F401
                      list_jobs, retry_job, scheduled_sync, submit_job, terminate_job)
from settings import get_settings

logger = logging.getLogger(__name__)

get_settings()  # a bad or missing setting fails the app at start-up, naming the setting

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (orchestrators.bp, *activities.BLUEPRINTS, entities.bp, jobs_api.bp, assets_api.bp, dashboard_api.bp):
    app.register_functions(blueprint)


@app.timer_trigger(schedule="%RMH_EVENT_DRAIN_SCHEDULE%", arg_name="timer", run_on_startup=True)
async def deliver_events(timer: func.TimerRequest) -> None:
    """Deliver the change events still in the outbox (writers deliver theirs right after they
    commit; this catches up after an outage or a crash, and at start-up)."""
    report = await asyncio.to_thread(activities.deliver_events)
    if report.delivered or report.failed:
        logger.info("change events: %d delivered, %d waiting to be retried", report.delivered, report.failed)


# -- health ----------------------------------------------------------------------------------------

#: Seconds a storage and catalog probe's answer serves anonymous health checks: probes, however
#: many, cost storage and the catalog one cheap call each per interval.
HEALTH_REUSE_SECONDS = 5.0
#: Longest an anonymous health check waits for an answer before it says down (a catalog that does
#: not answer keeps its probe waiting for the pool's retries; the next check reuses that probe).
HEALTH_TIMEOUT_SECONDS = 10.0
_health_lock = threading.Lock()
#: The settings probed, their one-thread probe pool, when the last probe started and its answer.
_health_probe: tuple[object, concurrent.futures.ThreadPoolExecutor, float, concurrent.futures.Future] | None = None


def _backends_probe() -> concurrent.futures.Future:
    """The storage and catalog probe in flight, or its answer when under HEALTH_REUSE_SECONDS old,
    else a new one: one probe at a time, whatever the number of checks. An answer serves only
    the settings it probed (a host whose settings were rebuilt, as tests do, probes again)."""
    global _health_probe
    with _health_lock:
        now, current = time.monotonic(), get_settings()
        if _health_probe is not None and _health_probe[0] is not current:
            _health_probe[1].shutdown(wait=False)  # a probe of the old settings is not waited behind
            _health_probe = None
        if _health_probe is None or (_health_probe[3].done() and now - _health_probe[2] > HEALTH_REUSE_SECONDS):
            pool = (_health_probe[1] if _health_probe else
                    concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="rmh-health"))
            _health_probe = (current, pool, now, pool.submit(
                lambda: all(_check(probe)["ok"] for probe in (_storage_health, _catalog_reachable))))
        return _health_probe[3]


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
@api
async def health(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Up or down, and nothing else (anonymous: what a load balancer's probe needs): 200
    ``{"status": "up"}`` when storage, catalog and runtime answer a cheap call each within
    HEALTH_TIMEOUT_SECONDS, else 503 ``{"status": "down"}``. What each part said (backends,
    containers, catalog version and counts) is ``health/details``, behind the function key."""
    try:
        backends = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_backends_probe())),
                                          HEALTH_TIMEOUT_SECONDS)
        runtime = (await asyncio.wait_for(_runtime_check(client), HEALTH_TIMEOUT_SECONDS))["ok"]
    except asyncio.TimeoutError:
        backends = runtime = False
    up = backends and runtime
    return json_response({"status": "up" if up else "down"}, 200 if up else 503, headers={"Cache-Control": "no-store"})


@app.route(route="health/details", methods=["GET"])
@app.durable_client_input(client_name="client")
@api
async def health_details(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Storage, catalog and runtime reachability with what each said: backends, container names,
    the catalog's version and counts (function key; no secrets in the answer)."""
    checks = await _health_checks(client, {"storage": _storage_health, "catalog": _catalog_health})
    up = all(c["ok"] for c in checks.values())
    return json_response({"status": "up" if up else "down", "ok": up, **checks}, 200 if up else 503,
                 headers={"Cache-Control": "no-store"})


async def _health_checks(client: df.DurableOrchestrationClient,
                         probes: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each probe's answer (``ok`` and what it said), and the runtime's, each given at most
    HEALTH_TIMEOUT_SECONDS (a part that has not answered by then is down)."""
    async def bounded(name: str, check: Awaitable[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        try:
            return name, await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            return name, {"ok": False, "error": f"no answer within {HEALTH_TIMEOUT_SECONDS:g} s"}

    answers = await asyncio.gather(*(bounded(name, asyncio.to_thread(_check, probe)) for name, probe in probes.items()),
                                   bounded("runtime", _runtime_check(client)))
    return dict(answers)


async def _runtime_check(client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The runtime answers a status query of an instance id no job has (no instance is listed)."""
    try:
        await client.get_status("rmh-health-probe")
        return {"ok": True}
    except Exception as err:  # noqa: BLE001 - any failure here is the runtime being unreachable
        return {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}


def _check(probe) -> dict[str, Any]:
    try:
        return {"ok": True, **probe()}
    except Exception as err:  # noqa: BLE001 - health reports every failure instead of raising
        return {"ok": False, "error": storage.redact(f"{type(err).__name__}: {err}")[:300]}


def _storage_health() -> dict[str, Any]:
    config = get_settings()
    exists = blob_store().container_exists(config.input_container)  # not made yet: still up
    return {"backend": config.storage_backend.value, "input_container": config.input_container,
            "input_container_exists": exists, "output_container": config.output_container,
            "system_container": config.system_container}


def _catalog_reachable() -> dict[str, Any]:
    """The catalog answers a small query (its collection ids), without counting its items."""
    catalog().collection_ids()
    return {}


def _catalog_health() -> dict[str, Any]:
    health = catalog().health()
    if not health.ok:
        raise RuntimeError(health.detail or "catalog not healthy")
    return health.model_dump(mode="json")



# -- the API's contract --------------------------------------------------------------------------

@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3.1 document of this API, generated from its models (``openapi.py``)."""
    return json_response(openapi.document(), headers={"Cache-Control": "no-cache"})


@app.route(route="docs", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
async def api_docs(req: func.HttpRequest) -> func.HttpResponse:
    """The document as a page: Swagger UI from npm, served by the app (no CDN)."""
    return func.HttpResponse(dashboard.docs_page(), status_code=200, headers=dashboard.docs_headers())
