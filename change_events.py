"""What subscribers are told when the catalog changes: one CloudEvents 1.0 event per item created,
updated, deleted, published or revoked (structured JSON, the form Event Grid custom topics and
webhooks take).

An event is built where the change is written, in the catalog's own transaction (``outbox.py``
keeps it until ``event_delivery.py`` has delivered it), so its ``id`` is fixed once and a
re-delivery carries the same id: subscribers deduplicate by it. ``data`` holds what a subscriber
needs without reading the catalog back: the collection, the item id, its bbox, its datetime (or
start/end) and the href of each asset.

Plain Python: never reads the environment; the catalog passes the event ``source`` in.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION = "1.0"
#: Event types are ``org.rmhgeoapi.item.<change>``.
TYPE_PREFIX = "org.rmhgeoapi.item."
#: The CloudEvents ``source`` unless the settings name another (RMH_EVENT_SOURCE).
DEFAULT_SOURCE = "/rmhgeoapi"
#: The media type of a batch of structured CloudEvents (Event Grid's and the CloudEvents HTTP binding's).
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json; charset=utf-8"


class ItemChange(str, Enum):
    """What happened to an item, as subscribers are told it."""

    created = "created"
    updated = "updated"
    deleted = "deleted"
    published = "published"
    revoked = "revoked"

    @property
    def event_type(self) -> str:
        return f"{TYPE_PREFIX}{self.value}"


class CloudEvent(BaseModel):
    """One event as it is delivered (CloudEvents 1.0, structured mode). ``sequence`` (the
    CloudEvents sequence extension) is the outbox's order of the event, set when it is claimed
    for delivery: a subscriber can order two events of one item by it."""

    model_config = ConfigDict(extra="allow")

    specversion: str = SPEC_VERSION
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str
    time: dt.datetime
    datacontenttype: str = "application/json"
    data: dict[str, Any]
    sequence: str | None = None


def subject(collection: str, item_id: str) -> str:
    """The event's subject: ``collections/{collection}/items/{id}`` (an Event Grid subscription
    filters on it with ``subjectBeginsWith``)."""
    return f"collections/{collection}/items/{item_id}"


def item_data(stac: Mapping[str, Any]) -> dict[str, Any]:
    """What the event says of the item: collection, id, bbox, datetime (or start/end) and the href
    of each asset."""
    props = stac.get("properties") or {}
    data: dict[str, Any] = {"collection": stac.get("collection"), "id": stac.get("id"),
                            "bbox": stac.get("bbox"), "datetime": props.get("datetime")}
    for key in ("start_datetime", "end_datetime"):
        if props.get(key):
            data[key] = props[key]
    data["assets"] = {key: asset.get("href") for key, asset in (stac.get("assets") or {}).items()
                      if isinstance(asset, Mapping) and asset.get("href")}
    return data


def item_event(change: ItemChange, stac: Mapping[str, Any], *, source: str = DEFAULT_SOURCE,
               when: dt.datetime | None = None) -> dict[str, Any]:
    """One event (JSON-ready dict) of ``change`` to the item ``stac``, with a new id."""
    event = CloudEvent(id=str(uuid.uuid4()), source=source, type=ItemChange(change).event_type,
                       subject=subject(str(stac.get("collection")), str(stac.get("id"))),
                       time=when or dt.datetime.now(dt.timezone.utc), data=item_data(stac))
    return event.model_dump(mode="json", exclude_none=True)


def change_of(event: Mapping[str, Any]) -> ItemChange:
    """The change an event announces (from its type)."""
    return ItemChange(str(event.get("type", "")).removeprefix(TYPE_PREFIX))
