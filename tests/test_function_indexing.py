"""What the Functions Python worker does at start-up: import function_app, call app.get_functions()
and serialise every function's bindings. Run in a fresh interpreter, as the worker does, because
get_functions() may be called only once per app object."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

INDEX_SCRIPT = """
import json, function_app
out = {}
for fn in function_app.app.get_functions():
    trigger = fn.get_trigger()
    out[fn.get_function_name()] = {
        "trigger": trigger.type,
        "bindings": [json.loads(b) for b in fn.get_raw_bindings()],
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def indexed():
    proc = subprocess.run([sys.executable, "-c", INDEX_SCRIPT], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _binding(functions, name, btype):
    return next(b for b in functions[name]["bindings"] if b["type"] == btype)


ORCHESTRATORS = ["hello_world", "list_container", "sync_container", "catalog_chunk", "catalog_file",
                 "validate_raster", "database_health", "cog_conversion", "convert_chunk", "process_tiled_raster",
                 "ingest_blob", "import_stac", "import_chunk", "unpublish", "unpublish_chunk", "publish",
                 "revoke", "convert_cube", "chunk_segment"]
ACTIVITIES = ["say_hello", "write_inventory", "plan_sync", "read_chunk", "catalog_blob", "prepare_collection",
              "flush_items", "remove_items", "finalize_catalog", "validate_blob", "describe_blob", "plan_conversion",
              "inspect_raster", "convert_blob", "plan_raster_tiles", "convert_tile", "build_tile_mosaic",
              "catalog_tiles", "discard_tiles", "catalog_health", "forget_blob", "register_mosaic", "plan_import",
              "prepare_import_item", "write_import_item", "plan_unpublish", "remove_outputs", "settle_collections",
              "set_visibility", "catalog_cube", "inspect_cube", "convert_cube_group", "finish_cube"]
ROUTES = {  # function: (route, methods, auth level)
    "submit_job": ("jobs/{operation}", ["POST"], "FUNCTION"),
    "get_job": ("jobs/{instance_id}", ["GET"], "FUNCTION"),
    "get_job_tasks": ("jobs/{instance_id}/tasks", ["GET"], "FUNCTION"),
    "list_jobs": ("jobs", ["GET"], "FUNCTION"),
    "retry_job": ("jobs/{instance_id}/retry", ["POST"], "FUNCTION"),
    "terminate_job": ("jobs/{instance_id}/terminate", ["POST"], "FUNCTION"),
    "get_metrics": ("metrics", ["GET"], "FUNCTION"),
    "health": ("health", ["GET"], "ANONYMOUS"),
    "health_details": ("health/details", ["GET"], "FUNCTION"),
}
# HTTP functions without the durable client binding.
PLAIN_ROUTES = {
    "sas_token": ("sas/v1/token/{account}/{container}", ["GET"], "ANONYMOUS"),
    "asset_redirect": ("items/{collection}/{item_id}/assets/{asset_key}", ["GET"], "FUNCTION"),
    "asset_href": ("items/{collection}/{item_id}/assets/{asset_key}/href", ["GET"], "FUNCTION"),
    "dashboard_page": ("dashboard", ["GET"], "FUNCTION"),
    "dashboard_static": ("dashboard/static/{*path}", ["GET"], "ANONYMOUS"),
    "list_footprints": ("footprints", ["GET"], "FUNCTION"),
    "list_collections": ("collections", ["GET"], "FUNCTION"),
    "preview_tile": ("previews/{collection}/{item_id}/{asset_key}/{z}/{x}/{y}", ["GET"], "FUNCTION"),
    "openapi_document": ("openapi.json", ["GET"], "ANONYMOUS"),
    "api_docs": ("docs", ["GET"], "ANONYMOUS"),
    "get_lifecycle": ("lifecycle", ["GET"], "FUNCTION"),
}


def test_every_function_is_indexed_with_its_trigger(indexed):
    expected = {**{name: "orchestrationTrigger" for name in ORCHESTRATORS},
                **{name: "activityTrigger" for name in ACTIVITIES},
                **{name: "httpTrigger" for name in {**ROUTES, **PLAIN_ROUTES}},
                "job_metrics": "entityTrigger", "scheduled_sync": "timerTrigger", "deliver_events": "timerTrigger",
                "blob_events": "eventGridTrigger"}
    assert {name: f["trigger"] for name, f in indexed.items()} == expected


def test_http_routes_methods_auth_and_client_binding(indexed):
    for name, (route, methods, auth) in ROUTES.items():
        trigger = _binding(indexed, name, "httpTrigger")
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth), name
        client = _binding(indexed, name, "durableClient")
        assert client["direction"] == "IN" and client["name"] == "client"
        assert _binding(indexed, name, "http")["direction"] == "OUT"
    for name, (route, methods, auth) in PLAIN_ROUTES.items():
        trigger = _binding(indexed, name, "httpTrigger")
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, methods, auth), name


def test_blob_events_start_jobs_through_the_durable_client(indexed):
    assert _binding(indexed, "blob_events", "eventGridTrigger")["name"] == "event"
    assert _binding(indexed, "blob_events", "durableClient")["direction"] == "IN"


def test_timer_resolves_its_schedule_from_a_setting(indexed):
    timer = _binding(indexed, "scheduled_sync", "timerTrigger")
    assert timer["schedule"] == "%RMH_SYNC_SCHEDULE%" and timer.get("runOnStartup") is False
    assert _binding(indexed, "scheduled_sync", "durableClient")["direction"] == "IN"
    drain = _binding(indexed, "deliver_events", "timerTrigger")
    assert drain["schedule"] == "%RMH_EVENT_DRAIN_SCHEDULE%" and drain.get("runOnStartup") is True


def test_durable_triggers_bind_their_parameters(indexed):
    assert _binding(indexed, "hello_world", "orchestrationTrigger")["name"] == "context"
    assert _binding(indexed, "say_hello", "activityTrigger")["name"] == "payload"
    assert _binding(indexed, "job_metrics", "entityTrigger")["name"] == "context"


def test_every_activity_and_entity_binds_its_parameter(indexed):
    for name in ACTIVITIES:
        assert _binding(indexed, name, "activityTrigger")["name"] == "payload", name
    for name in ORCHESTRATORS:
        assert _binding(indexed, name, "orchestrationTrigger")["name"] == "context", name
