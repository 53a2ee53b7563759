"""The job starter's request handling: 404 for an unknown operation, 400 listing each problem.

The durable client binding handed to the function points at a closed port, so a request that got
as far as starting an orchestration would fail loudly: these answers provably start nothing.
"""
import asyncio
import json

import typing

import azure.functions as func
import pytest

import function_app
import geo_ops
import models

CLOSED = "http://127.0.0.1:9"
BINDING = json.dumps({
    "taskHubName": "rmhgeoapi",
    "creationUrls": {"createNewInstancePostUri": f"{CLOSED}/runtime/webhooks/durabletask/orchestrators/{{functionName}}[/{{instanceId}}]",
                     "createAndWaitOnNewInstancePostUri": f"{CLOSED}/runtime/webhooks/durabletask/orchestrators/{{functionName}}[/{{instanceId}}]?timeout={{timeoutInSeconds}}"},
    "managementUrls": {"id": "INSTANCEID",
                       "statusQueryGetUri": f"{CLOSED}/runtime/webhooks/durabletask/instances/INSTANCEID"},
    "baseUrl": f"{CLOSED}/runtime/webhooks/durabletask",
    "requiredQueryStringParameters": "",
    "rpcBaseUrl": f"{CLOSED}/durabletask/",
})


def submit(operation: str, body: bytes | str) -> func.HttpResponse:
    request = func.HttpRequest("POST", f"http://localhost/api/jobs/{operation}",
                               body=body.encode() if isinstance(body, str) else body,
                               route_params={"operation": operation})
    handler = function_app.submit_job._function.get_user_function()
    return asyncio.run(handler(req=request, client=BINDING))


def test_unknown_operation_is_404_naming_the_known_ones():
    response = submit("make_coffee", "{}")
    assert response.status_code == 404
    body = json.loads(response.get_body())
    assert "make_coffee" in body["error"]
    assert "hello_world" in body["known_operations"]


@pytest.mark.parametrize(
    "body, fields",
    [
        ('{"count": 0}', ["count"]),
        ('{"count": "many", "name": ""}', ["count", "name"]),
        ('{"count": 2, "colour": "blue"}', ["colour"]),
        ('{"rerun": "yes"}', ["rerun"]),
    ],
)
def test_invalid_body_is_400_listing_each_problem(body, fields):
    response = submit("hello_world", body)
    assert response.status_code == 400
    problems = json.loads(response.get_body())["problems"]
    assert sorted(p["field"] for p in problems) == sorted(fields)
    assert all(p["problem"] for p in problems)


def test_extra_field_says_to_remove_it():
    problems = json.loads(submit("hello_world", '{"colour": 1}').get_body())["problems"]
    assert problems == [{"field": "colour", "problem": "unknown field; remove it"}]


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", b"\xff\xfe"])
def test_malformed_body_is_400(body):
    response = submit("hello_world", body)
    assert response.status_code == 400
    assert "JSON" in json.loads(response.get_body())["error"]


@pytest.mark.parametrize(
    "options, field, says",
    [
        ({"profile": "gif"}, "profile", "deflate"),
        ({"profile": "raw"}, "profile", "none"),
        ({"profile": "deflate", "max_z_error": 0.1}, "max_z_error", "only to the lerc"),
        ({"max_z_error": 0.5}, "max_z_error", "only to the lerc"),
        ({"profile": "lerc", "max_z_error": -1}, "max_z_error", "greater than or equal to 0"),
        ({"profile": "lerc", "max_z_error": "a lot"}, "max_z_error", "number"),
        ({"profile": "lerc", "max_z_error": float("nan")}, "max_z_error", "finite"),
        ({"profile": "lerc_deflate", "max_z_error": float("inf")}, "max_z_error", "finite"),
    ],
)
def test_bad_compression_options_are_400_naming_the_problem(options, field, says):
    for operation, selection in (("cog_conversion", {"prefix": "in/"}),
                                 ("process_tiled_raster", {"blob": "in/a.tif"})):
        response = submit(operation, json.dumps({**selection, **options}))
        assert response.status_code == 400, (operation, options)
        problems = json.loads(response.get_body())["problems"]
        assert [p["field"] for p in problems] == [field], problems
        assert says in problems[0]["problem"], problems


def test_compression_options_reach_the_conversion_tasks():
    request = models.CogConversionRequest(prefix="in/", profile="lerc", max_z_error=0.01,
                                          target_crs="EPSG:3857", gcp_transform="tps")
    options = request.cog_options()
    assert options.model_dump() == {"profile": "lerc", "max_z_error": 0.01,
                                    "target_crs": "EPSG:3857", "resampling": "bilinear", "gcp_transform": "tps"}
    assert set(typing.get_args(models.CogProfile)) == set(geo_ops.COG_PROFILES)
