"""A third-party-style app whose blob bindings name storage accounts by app setting, and which
reads what a binding wrote back through the Azure SDK with the same setting, as an app on Azure
does: ``AzureWebJobsStorage`` (a connection string) and ``ArchiveStorage`` (identity-based:
``ArchiveStorage__blobServiceUri``)."""

from __future__ import annotations

import os

import azure.durable_functions as df
import azure.functions as func
from azure.storage.blob import BlobServiceClient

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="reports/{name}", methods=["PUT"])
@app.blob_output(arg_name="report", path="reports/{name}.txt", connection="AzureWebJobsStorage")
def put_report(req: func.HttpRequest, report: func.Out[str]) -> func.HttpResponse:
    report.set(req.get_body().decode())
    return func.HttpResponse("stored", status_code=201)


@app.route(route="reports/{name}/via-sdk", methods=["GET"])
def read_report_via_sdk(req: func.HttpRequest) -> func.HttpResponse:
    client = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    blob = client.get_blob_client("reports", f"{req.route_params['name']}.txt")
    if not blob.exists():
        return func.HttpResponse("no such report in the AzureWebJobsStorage account",
                                 status_code=404)
    return func.HttpResponse(blob.download_blob().readall(), mimetype="text/plain")


@app.orchestration_trigger(context_name="context")
def archive(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("archive_report", context.get_input()))


@app.activity_trigger(input_name="name")
@app.blob_input(arg_name="report", path="reports/{name}.txt", connection="AzureWebJobsStorage")
@app.blob_output(arg_name="archived", path="archive/{name}.txt", connection="ArchiveStorage")
def archive_report(name: str, report: str, archived: func.Out[str]) -> int:
    archived.set(f"archived: {report}")
    return len(report)
