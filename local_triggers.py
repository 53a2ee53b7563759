"""Embedded Durable runtime: triggers other than HTTP and the Durable ones.

**Timer triggers** fire on their six-field NCRONTAB schedules (``%SETTING%`` resolved from the
app settings).

**Event Grid emulation.** On Azure, an Event Grid system-topic subscription delivers blob events
to the app's ``event_grid_trigger`` functions. Here the runtime watches the blob store in use
(``LocalDirStore`` directory or Azure/Azurite) for the configured containers: every
``poll_interval`` seconds (default 1) it lists each container and compares ETags with what it
saw last, and turns each difference into a ``Microsoft.Storage.BlobCreated`` (new or changed
blob) or ``Microsoft.Storage.BlobDeleted`` event in the Event Grid schema the Python worker
hands to ``func.EventGridEvent``. The first poll of a container records what is there without
events (a subscription created after the blobs existed sees none of them either).

Durability, at least once: the new listing state and the events are written to the SQLite task
hub in one transaction (``blob_watch``, ``event_outbox``); an event leaves the outbox only after
every Event Grid function returned for it. So a ``kill -9`` at any point loses no event: a
change not yet committed is found again by the next poll, a committed event is delivered after
the restart (again, with the same ``id``, if the kill came during its delivery). Events of one
blob are delivered in order; different blobs concurrently. A function that raises gets the event
again after a backoff (1, 2, 4 … 60 s), at most 30 attempts, then the event is dropped with an
error in the log (Event Grid would dead-letter it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.timer import TimerRequest

from local_activities import call_user_function
from local_bindings import BlobIO, binding_kwargs, output_payloads
from local_functions import (Bindings, CronSchedule, EventGridFunction, FunctionIndex,
                             TimerFunction, with_context)
from local_state import iso
from local_store import Store

logger = logging.getLogger(__name__)

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
ZERO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
MAX_ATTEMPTS = 30
CONCURRENT_DELIVERIES = 16
EVENT_NAMESPACE = uuid.UUID("6f1c8a52-3d1e-4b8a-9c7e-2f4a5b6c7d8e")


class TriggerHost:
    """Invokes timer and Event Grid functions with their bindings, as the worker would."""

    def __init__(self, index: FunctionIndex, *, connections: Any,
                 client_binding: Callable[[], str]) -> None:
        self.index = index
        self.connections = connections
        self.client_binding = client_binding

    async def invoke(self, fn: Any, name: str, trigger: tuple[str, Any], bindings: Bindings,
                     data: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        io = BlobIO(self.connections, data)
        contents = await loop.run_in_executor(None, io.read, bindings)
        blob_kwargs, outs = binding_kwargs(bindings, contents)
        kwargs: dict[str, Any] = {trigger[0]: trigger[1], **blob_kwargs}
        if bindings.client:
            kwargs[bindings.client] = self.client_binding()
        result = await call_user_function(fn, with_context(fn, name, kwargs))
        await loop.run_in_executor(None, io.write, bindings, output_payloads(outs))
        return result

    # -- timers ---------------------------------------------------------------------------------
    async def fire_timer(self, timer: TimerFunction, past_due: bool = False) -> Any:
        return await self.invoke(timer.fn, timer.name, (timer.param, TimerRequest(
            past_due=past_due)), timer.bindings, {})

    async def timer_loop(self, timer: TimerFunction, schedule: CronSchedule) -> None:
        if timer.run_on_startup:
            await self._timer_tick(timer)
        while True:
            now = datetime.now(timezone.utc)
            due = schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            await self._timer_tick(timer)

    async def _timer_tick(self, timer: TimerFunction) -> None:
        try:
            await self.fire_timer(timer)
        except Exception:  # noqa: BLE001 - a failing tick is logged, the schedule continues
            logger.exception("timer function %s failed", timer.name)

    # -- Event Grid -----------------------------------------------------------------------------
    async def deliver_event(self, function: EventGridFunction, event: dict[str, Any]) -> None:
        value = EventGridEventInConverter.decode(Datum(json.dumps(event), "json"),
                                                 trigger_metadata=None)
        await self.invoke(function.fn, function.name, (function.param, value),
                          function.bindings, event)


def blob_event(kind: str, container: str, name: str, *, etag: str, size: int | None,
               content_type: str | None, account: str, url: str, sequencer: int,
               when: datetime) -> dict[str, Any]:
    """A blob event in the Event Grid schema (``Microsoft.Storage.BlobCreated``/``Deleted``).

    ``id`` is derived from the change (blob, ETag, type), so a redelivery carries the same id."""
    created = kind == BLOB_CREATED
    data: dict[str, Any] = {
        "api": "PutBlob" if created else "DeleteBlob",
        "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
    }
    if created:
        data.update({"eTag": f'"{etag}"', "contentType": content_type or
                     "application/octet-stream", "contentLength": size})
    else:
        data["contentType"] = content_type or "application/octet-stream"
    data.update({"blobType": "BlockBlob", "url": url, "sequencer": f"{sequencer:032X}",
                 "storageDiagnostics": {"batchId": str(uuid.uuid4())}})
    return {
        "id": str(uuid.uuid5(EVENT_NAMESPACE, f"{kind}|{container}/{name}|{etag}")),
        "topic": f"/subscriptions/{ZERO_SUBSCRIPTION}/resourceGroups/local/providers/"
                 f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": kind, "eventTime": iso(when), "data": data,
        "dataVersion": "", "metadataVersion": "1",
    }


class BlobEventSource:
    """The Event Grid emulation: polls containers, writes events to the outbox, delivers them."""

    def __init__(self, hub: Store, blob_store: Any, containers: Sequence[str], *,
                 functions: Sequence[EventGridFunction], triggers: TriggerHost,
                 poll_interval: float = 1.0) -> None:
        self.hub = hub
        self.blob_store = blob_store
        self.containers = list(dict.fromkeys(containers))
        self.functions = list(functions)
        self.triggers = triggers
        self.poll_interval = poll_interval
        self.account = str(getattr(blob_store, "account_name", "local"))
        self.delivered = 0
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        logger.info("Event Grid emulation: watching %s every %.1fs for %s",
                    ", ".join(self.containers), self.poll_interval,
                    ", ".join(f.name for f in self.functions))
        while not self._stopping:
            started = time.monotonic()
            self._idle.clear()
            try:
                await self.deliver_due()
                await self.poll_once()
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - storage faults: log, try again next round
                logger.exception("Event Grid emulation round failed")
            finally:
                self._idle.set()
            await asyncio.sleep(max(0.05, self.poll_interval - (time.monotonic() - started)))

    async def stop(self, grace: float = 10.0) -> None:
        """Let the deliveries under way finish (up to ``grace`` seconds), start no more: a
        graceful stop delivers nothing twice, as the Functions host drains its executions."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            logger.warning("Event Grid emulation: deliveries still running after %.0fs; "
                           "they are delivered again after the restart", grace)

    async def poll_once(self) -> int:
        """List every container, record the changes and their events; returns the count."""
        loop = asyncio.get_running_loop()
        found = 0
        for container in self.containers:
            listing = await loop.run_in_executor(None, self._list, container)
            found += self._record(container, listing)
        return found

    def _list(self, container: str) -> dict[str, Any]:
        from storage import ContainerNotFound

        try:
            return {info.name: info for info in self.blob_store.iter_blobs(container)}
        except ContainerNotFound:
            return {}

    def _record(self, container: str, listing: dict[str, Any]) -> int:
        now = datetime.now(timezone.utc)
        with self.hub.transaction():
            if not self.hub.has_baseline(container):
                for info in listing.values():
                    self.hub.put_watched_blob(container, info.name, info.etag, info.size,
                                              info.content_type)
                self.hub.set_baseline(container, iso(now))
                return 0
            known = self.hub.watched_blobs(container)
            changes = 0
            for name in sorted(listing):
                info = listing[name]
                if name in known and known[name][0] == info.etag:
                    continue
                self._emit(BLOB_CREATED, container, name, info.etag, info.size,
                           info.content_type, now)
                self.hub.put_watched_blob(container, name, info.etag, info.size,
                                          info.content_type)
                changes += 1
            for name in sorted(set(known) - set(listing)):
                etag, _, content_type = known[name]
                self._emit(BLOB_DELETED, container, name, etag, None, content_type, now)
                self.hub.delete_watched_blob(container, name)
                changes += 1
        return changes

    def _emit(self, kind: str, container: str, name: str, etag: str, size: int | None,
              content_type: str | None, now: datetime) -> None:
        ev = blob_event(kind, container, name, etag=etag, size=size, content_type=content_type,
                        account=self.account, url=self.blob_store.url(container, name),
                        sequencer=self.hub.next_counter("event_grid_sequencer"), when=now)
        self.hub.add_outbox(ev["subject"], ev)

    async def deliver_due(self) -> None:
        while not self._stopping:
            due = self.hub.due_outbox(time.time(), CONCURRENT_DELIVERIES)
            if not due:
                return
            outcomes = await asyncio.gather(*(self._deliver(*row) for row in due))
            if not any(outcomes):
                return

    async def _deliver(self, row_id: int, attempts: int, event: dict[str, Any]) -> bool:
        try:
            for function in self.functions:
                await self.triggers.deliver_event(function, event)
        except Exception as err:  # noqa: BLE001 - the function failed: deliver again later
            if attempts + 1 >= MAX_ATTEMPTS:
                logger.error("Event Grid emulation: dropping event %s (%s) after %d attempts: "
                             "%s", event["id"], event["subject"], attempts + 1, err)
                self.hub.delete_outbox(row_id)
            else:
                delay = min(2 ** attempts, 60)
                logger.warning("Event Grid emulation: event %s (%s) failed (%s); again in %ds",
                               event["id"], event["subject"], err, delay)
                self.hub.retry_outbox(row_id, time.time() + delay)
            return False
        self.hub.delete_outbox(row_id)
        self.delivered += 1
        return True
