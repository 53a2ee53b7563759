"""Telling subscribers what changed: draining the catalog's outbox (``outbox.py``) to an Event Grid
custom topic (on Azure: the ``azure-eventgrid`` SDK with the app's managed identity) and/or to
webhook URLs the operator configured (on one machine), in batches, at least once.

A batch is deleted from the outbox only after the target accepted it; a batch that fails stays,
offered again after a growing delay (2 s doubling to 10 minutes), so an outage delays events and
loses none. A crash between the target's acceptance and the delete delivers that batch again with
the same event ids, which subscribers deduplicate. Targets never come from a request: only from
the settings (``RMH_EVENT_GRID_ENDPOINT``, ``RMH_EVENT_WEBHOOKS``).

Who drains: every catalog write that added events asks for one batch right after it commits
(``Delivery.deliver_soon``: skipped for a while after a failure, so an outage does not slow the
writers), and the ``deliver_events`` timer drains whatever is left (``Delivery.deliver_all``).

Never reads the environment; the activities build senders from the settings.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from change_events import BATCH_MEDIA_TYPE
from outbox import Outbox, retry_delay

logger = logging.getLogger(__name__)

#: Events per delivery (Event Grid takes up to 1 MB per request; ours are ~1 KB each).
BATCH_SIZE = 100
#: How long a writer's delivery attempts pause after one failed (the timer keeps trying).
PAUSE_AFTER_FAILURE = 30.0
#: Seconds a webhook or Event Grid request may take.
REQUEST_TIMEOUT = 15.0


class DeliveryError(Exception):
    """Base class of the errors of delivering events."""


class DeliveryRefused(DeliveryError):
    """The target answered the batch with an error status."""


class DeliveryUnreachable(DeliveryError):
    """The target could not be reached (connection, TLS, or its credential could not be had)."""


class Sender(Protocol):
    """Where a batch of events goes."""

    def send(self, events: list[dict[str, Any]]) -> None: ...


def _where(url: str) -> str:
    """A URL as it may be logged: scheme, host and path, never its query (a webhook's token)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class EventGridSender:
    """An Event Grid custom topic, through ``azure.eventgrid.EventGridPublisherClient``: the
    events go as CloudEvents 1.0 (``application/cloudevents-batch+json``), signed with a token of
    ``credential`` (default: ``DefaultAzureCredential``, the app's managed identity on Azure; the
    identity needs the topic's "EventGrid Data Sender" role)."""

    def __init__(self, endpoint: str, credential: Any = None):
        from azure.eventgrid import EventGridPublisherClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self.endpoint = endpoint
        self._client = EventGridPublisherClient(endpoint, credential)

    def send(self, events: list[dict[str, Any]]) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            self._client.send(events, connection_timeout=REQUEST_TIMEOUT, read_timeout=REQUEST_TIMEOUT)
        except HttpResponseError as err:
            raise DeliveryRefused(f"Event Grid topic {_where(self.endpoint)} answered {err.status_code}: "
                                  f"{str(err).splitlines()[0][:300]}") from None
        except AzureError as err:
            raise DeliveryUnreachable(f"Event Grid topic {_where(self.endpoint)} unreachable: "
                                      f"{type(err).__name__}: {str(err).splitlines()[0][:300]}") from None


class WebhookSender:
    """Webhook URLs: each batch is POSTed to each URL as a JSON array of structured CloudEvents
    (``application/cloudevents-batch+json``, the CloudEvents HTTP binding's batched mode); any
    2xx is an acceptance."""

    def __init__(self, urls: Sequence[str]):
        self.urls = list(urls)

    def send(self, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events).encode()
        for url in self.urls:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": BATCH_MEDIA_TYPE})
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                    response.read()
            except urllib.error.HTTPError as err:
                raise DeliveryRefused(f"webhook {_where(url)} answered {err.code}") from None
            except (urllib.error.URLError, OSError) as err:
                raise DeliveryUnreachable(f"webhook {_where(url)} unreachable: {err}") from None


class Senders:
    """Several targets: a batch is delivered when every one took it (a failure sends it to all
    again later: at least once to each)."""

    def __init__(self, senders: Sequence[Sender]):
        self.senders = list(senders)

    def send(self, events: list[dict[str, Any]]) -> None:
        for sender in self.senders:
            sender.send(events)


class DrainReport(BaseModel):
    """What one drain did: events delivered, events whose batch failed (retried later), why."""

    delivered: int = 0
    failed: int = 0
    batches: int = 0
    errors: list[str] = []


def drain(outbox: Outbox, sender: Sender, *, batch_size: int = BATCH_SIZE, max_batches: int = 1000,
          seconds: float | None = None) -> DrainReport:
    """Deliver due events batch by batch until none is left, a batch fails, ``max_batches`` were
    sent or ``seconds`` passed."""
    report = DrainReport()
    started = time.monotonic()
    for _ in range(max_batches):
        with outbox.batch(batch_size) as batch:
            if not batch.events:
                break
            report.batches += 1
            try:
                sender.send(batch.events)
            except DeliveryError as err:
                batch.failed(str(err), retry_delay(batch.attempts + 1))
                report.failed += len(batch.events)
                report.errors.append(str(err))
                logger.warning("%d change events not delivered, retried later: %s", len(batch.events), err)
                break
            batch.sent()
            report.delivered += len(batch.events)
        if seconds is not None and time.monotonic() - started > seconds:
            break
    return report


class Delivery:
    """A catalog's outbox and its senders, with the pause after a failure that keeps writers from
    waiting on a target that is down."""

    def __init__(self, outbox: Outbox, sender: Sender):
        self.outbox, self.sender = outbox, sender
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def deliver_soon(self) -> DrainReport:
        """One batch right after a write, unless a failure paused delivery from writers."""
        if time.monotonic() < self._paused_until:
            return DrainReport()
        return self._drained(max_batches=1)

    def deliver_all(self, seconds: float = 60.0) -> DrainReport:
        """What is due, for up to ``seconds`` (the timer)."""
        return self._drained(max_batches=1_000_000, seconds=seconds)

    def _drained(self, **limits: Any) -> DrainReport:
        report = drain(self.outbox, self.sender, **limits)
        if report.failed:
            with self._lock:
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        return report
