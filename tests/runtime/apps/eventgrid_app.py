"""Event-driven ingest in miniature: an Event Grid function starts one orchestration per blob
version (the instance id derives from container, blob and ETag, so a redelivered event is one
job), whose activity "catalogs" the blob in a SQLite file (``CATALOG_DB``). Every delivery is
appended to ``EVENTS_LOG``."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
FAIL_NEXT: list[str] = []  # tests: blob names whose next delivery raises


def _catalog() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["CATALOG_DB"], timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS items(blob TEXT PRIMARY KEY, etag TEXT, writes INT)")
    return db


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def blob_events(event: func.EventGridEvent, client: df.DurableOrchestrationClient):
    data = event.get_json()
    blob = event.subject.split("/blobs/", 1)[1]
    container = event.subject.split("/containers/", 1)[1].split("/", 1)[0]
    with open(os.environ["EVENTS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"id": event.id, "type": event.event_type, "blob": blob,
                              "sequencer": data["sequencer"]}) + "\n")
        log.flush()
        os.fsync(log.fileno())
    if blob in FAIL_NEXT:
        FAIL_NEXT.remove(blob)
        raise RuntimeError(f"refusing {blob} once")
    version = data.get("eTag") or data["sequencer"]
    kind = "add" if event.event_type.endswith("BlobCreated") else "remove"
    digest = hashlib.sha1(f"{container}/{blob}/{version}".encode()).hexdigest()[:16]
    instance_id = f"{kind}-{digest}"
    existing = await client.get_status(instance_id)
    if existing:
        return
    try:
        await client.start_new("ingest", instance_id, {"blob": blob, "kind": kind,
                                                       "etag": data.get("eTag")})
    except Exception as err:  # noqa: BLE001 - a concurrent duplicate already started it
        if "already exists" not in str(err):
            raise


@app.orchestration_trigger(context_name="context")
def ingest(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("catalog_blob", context.get_input()))


@app.activity_trigger(input_name="job")
def catalog_blob(job: dict) -> str:
    with _catalog() as db:
        if job["kind"] == "add":
            db.execute("INSERT INTO items VALUES (?, ?, 1) ON CONFLICT(blob) DO UPDATE SET "
                       "etag = excluded.etag, writes = writes + 1", (job["blob"], job["etag"]))
        else:
            db.execute("DELETE FROM items WHERE blob = ?", (job["blob"],))
    return job["kind"]
