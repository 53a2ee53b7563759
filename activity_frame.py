"""The frame every activity runs in, written once: its payload validated as its input model, its
answer dumped to JSON, a transient fault ridden out within the retry budget and then raised, and
(for a per-item activity) an item's error turned into a failed outcome, timed.

An expected per-item failure (a bad file) is an answer, not an exception, because ``task_all``
fails fast on the first raised error; a transient fault (``faults.Transient``: storage or the
catalog unreachable, a network fault while reading) is never an item's failure: it is retried
here in place for up to RMH_OUTAGE_SECONDS, then raised so the orchestrator's attempts apply
(README "Faults"). The two are different kinds of error, so no ``except`` order decides which
is which.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import tenacity
from pydantic import BaseModel

import catalogs
import geo_ops
import stac_ops
import unpublish
from clients import blob_store, settings
from faults import Transient
from models import ConvertTask, TaskOutcome
from storage import BlobNotFound, BlobStore, GdalPathTooLong, InvalidBlobName, LocalDirStore, StorageRefused
from work_files import work_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: Conditions that describe the item, not the service: a per-item failure, never retried.
ITEM_ERRORS: tuple[type[Exception], ...] = (geo_ops.GeoOpsError, stac_ops.StacOpsError, catalogs.CatalogError,
                                            BlobNotFound, InvalidBlobName, StorageRefused, GdalPathTooLong,
                                            unpublish.UnpublishError)


@dataclass(frozen=True)
class Item:
    """What a per-item activity works on, as its failure names it: ``name`` (the outcome's), and
    ``where`` it is (``container/blob``; default ``name``), which the reason starts with."""

    name: str
    where: str | None = None


def activity(bp, model: type[M] | None = None, *, item: Callable[[M], Item] | None = None,
             errors: tuple[type[Exception], ...] = ITEM_ERRORS,
             failure: Callable[[M, Exception, TaskOutcome], BaseModel] | None = None,
             rides_out: bool = True):
    """Register the decorated function as an activity of blueprint ``bp``, under its own name.

    The function takes the payload validated as ``model`` (the raw payload without one) and
    returns its answer (a model is dumped to JSON). A transient fault is retried in place within
    the retry budget (``rides_out``), then raised. With ``item``, the activity is a per-item
    task: an error of ``errors`` becomes a failed ``TaskOutcome`` (error: the condition's class
    name; reason: where, and what a user can act on), answered as ``failure(task, err, outcome)``
    when the answer is another model, and an answer with ``seconds`` gets the task's time.
    """

    def register(function: Callable[[Any], Any]):
        name = function.__name__

        def run(payload: dict) -> Any:
            started = time.monotonic()
            task = model.model_validate(payload) if model is not None else payload
            try:
                answer = ride_out(name, function, task) if rides_out else function(task)
            except errors as err:
                if item is None:
                    raise
                outcome = failed(item(task), err, started)
                answer = failure(task, err, outcome) if failure is not None else outcome
            else:
                if item is not None and "seconds" in getattr(type(answer), "model_fields", {}):
                    answer.seconds = round(time.monotonic() - started, 4)
            return answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer

        # The Functions worker binds ``payload`` by the signature: keep run's own, take the name.
        run.__name__ = run.__qualname__ = name
        run.__doc__, run.__module__ = function.__doc__, function.__module__
        run.implementation = function  # type: ignore[attr-defined]
        return bp.activity_trigger(input_name="payload")(run)

    return register


def ride_out(name: str, step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``step(*args, **kwargs)``, run again on a transient fault with exponential backoff and jitter (the
    retry budget: 1 s doubling to 15 s, for up to RMH_OUTAGE_SECONDS), then the fault goes on.
    Also for a step after one that must not be judged again (a conversion's catalog write after
    its COG write: rerunning the whole activity would find its own COG current and call the
    file skipped). Activities are idempotent, so a rerun redoes at most the step that failed."""
    budget = settings().retry_budget
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient),
        wait=tenacity.wait_exponential_jitter(initial=budget.first_wait, max=budget.max_wait),
        stop=tenacity.stop_after_delay(budget.outage_seconds),
        before_sleep=_log_retry(name), reraise=True)
    return retrying(step, *args, **kwargs)


def _log_retry(name: str) -> Callable[[tenacity.RetryCallState], None]:
    def log(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        logger.warning("%s: transient %s, attempt %d, retrying in %.1fs: %s", name,
                       type(err).__name__, state.attempt_number, state.upcoming_sleep, scrub(str(err))[:300])
    return log


def failed(item: Item, err: Exception, started: float) -> TaskOutcome:
    """The outcome of a per-item failure, named after the condition; the reason names the item
    where it is (``container/blob``), never a server path."""
    reason = scrub(err.reason if isinstance(err, geo_ops.GeoOpsError) else str(err))
    where = item.where or item.name
    if where not in reason:
        reason = f"{where}: {reason}"
    logger.info("task %s failed: %s", where, reason)
    return TaskOutcome(name=item.name, status="failed", error=type(err).__name__, reason=reason,
                       seconds=round(time.monotonic() - started, 4))


def source_file(task: ConvertTask) -> Item:
    """The item of a per-file task: its source blob."""
    return Item(task.file.name, f"{task.container}/{task.file.name}")


def judged(store: BlobStore, container: str, name: str, attempt: Callable[[], T]) -> T:
    """``attempt()``, confirmed before a remote file is judged bad: an outage can look like a
    missing or damaged file to GDAL, so after a per-item error storage is asked for the blob (an
    outage then is a transient fault; BlobNotFound: the blob vanished) and, with storage
    answering, the attempt runs once more. A failure then is the file's. This tells a fault
    from a bad file; it is not a retry of a fault (those are the budget's). Local files are
    judged at once: the disk does not blink."""
    try:
        return attempt()
    except ITEM_ERRORS as err:
        if isinstance(store, LocalDirStore) or isinstance(err, BlobNotFound):
            raise
        store.get_properties(container, name)
        logger.info("%s/%s: %s; storage answers, trying once more", container, name, type(err).__name__)
    return attempt()


def gdal_config(extra: dict[str, str] | None = None) -> dict[str, Any]:
    """GDAL options for one operation: the settings' (settings.GDAL_DEFAULTS, the retry budget's
    request retries, RMH_GDAL_OPTIONS), then the blob's access options, normalised by geo_ops
    (GDAL_CACHEMAX in bytes, as rasterio wants it). GDAL's own temporary files go to the work
    directory too."""
    return geo_ops.env_options({"CPL_TMPDIR": str(work_dir()), **settings().gdal_config, **(extra or {})})


def scrub(text: str) -> str:
    """A message with server paths replaced: a local store's files and GDAL's /vsiaz/ paths become
    ``container/blob``, the work directory ``<temp>``."""
    store = blob_store()
    if isinstance(store, LocalDirStore):
        text = text.replace(f"{store.root}/", "")
    text = text.replace(str(settings().work_dir), "<temp>")
    return re.sub(r"/vsiaz/", "", text)


def limits() -> geo_ops.RasterLimits:
    config = settings()
    return geo_ops.RasterLimits(max_pixels=config.max_raster_pixels, max_bands=config.max_raster_bands)


@contextlib.contextmanager
def validated_source(store: BlobStore, task: ConvertTask):
    """``(GDAL access, validation report, open dataset)`` of a task's source, or the GeoOpsError
    that blocks it. What the listing already shows (an empty blob) is refused before GDAL touches
    the file; the dataset stays open so reading the item does not fetch the header again. Only
    the allowed drivers see the file; when they refuse it, its first bytes say why."""
    if task.file.size == 0:
        raise geo_ops.EmptyFile(f"{task.container}/{task.file.name}", "file is empty (0 bytes)")
    gdal = store.gdal_read_path(task.container, task.file.name)
    head = functools.partial(store.read_head, task.container, task.file.name)
    with geo_ops.validated(gdal.path, limits=limits(), gdal_config=gdal_config(gdal.config),
                           head=head) as (report, ds):
        report.raise_for_errors()
        yield gdal, report, ds
