"""The job starter's request handling: 404 for an unknown operation, 400 listing each problem.

The durable client binding handed to the function points at a closed port, so a request that got
as far as starting an orchestration would fail loudly: these answers provably start nothing.
"""
import asyncio
import json

import azure.functions as func
import pytest

import function_app

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
