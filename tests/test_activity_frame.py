"""The frame every activity runs in (#28 §2): a transient fault is a kind of its own, not an
item's failure whatever the except order; the per-item failure block is written once; functions
are named by their function objects, so a rename cannot silently empty /tasks or progress."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import azure.durable_functions as df
import pytest

import activity_frame
import catalogs
import faults
import raster_errors
import storage
from activity_frame import ITEM_ERRORS, Item, activity
from models import BlobRef, TaskOutcome
from settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
TRANSIENT = [storage.StorageUnavailable, storage.StorageAccessDenied, raster_errors.SourceUnavailable,
             catalogs.CatalogUnavailable]


@pytest.fixture
def local_app(tmp_path, monkeypatch):
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("RMH_STATIC_CATALOG_DIR", str(tmp_path / "catalog"))
    monkeypatch.setenv("RMH_TEMP_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("RMH_OUTAGE_SECONDS", "0")  # no riding out: the first fault goes on
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.mark.parametrize("fault", TRANSIENT, ids=lambda cls: cls.__name__)
def test_a_transient_fault_is_its_own_kind_and_no_items_error(fault):
    assert issubclass(fault, faults.Transient)
    assert not issubclass(fault, ITEM_ERRORS), [base.__name__ for base in ITEM_ERRORS if issubclass(fault, base)]


def registered(function) -> callable:
    """The function the worker calls for an activity registered on a throwaway blueprint."""
    return function._function.get_user_function()


def test_an_items_error_is_a_failed_outcome_named_for_its_condition(local_app):
    bp = df.Blueprint()

    @activity(bp, BlobRef, item=lambda ref: Item(ref.blob, f"{ref.container}/{ref.blob}"))
    def look_at(ref: BlobRef) -> TaskOutcome:
        raise raster_errors.UnreadableRaster(f"{local_app}/storage/c/{ref.blob}", "not a raster at all")

    answer = registered(look_at)({"container": "c", "blob": "in/a.tif"})
    assert answer["status"] == "failed" and answer["name"] == "in/a.tif"
    assert answer["error"] == "UnreadableRaster"
    assert answer["reason"].startswith("c/in/a.tif") and "not a raster at all" in answer["reason"]
    assert str(local_app) not in answer["reason"]  # never a server path
    assert answer["seconds"] >= 0


def test_a_transient_fault_is_raised_never_a_failed_item(local_app):
    bp = df.Blueprint()
    calls = []

    @activity(bp, BlobRef, item=lambda ref: Item(ref.blob))
    def read_it(ref: BlobRef) -> TaskOutcome:
        calls.append(ref.blob)
        raise storage.StorageUnavailable("storage went away")

    with pytest.raises(storage.StorageUnavailable):
        registered(read_it)({"container": "c", "blob": "a.tif"})
    assert calls == ["a.tif"]  # RMH_OUTAGE_SECONDS=0: ridden out for no time, then raised


def test_an_answer_is_dumped_and_timed_and_the_name_is_the_functions(local_app):
    bp = df.Blueprint()

    @activity(bp, BlobRef, item=lambda ref: Item(ref.blob))
    def fine(ref: BlobRef) -> TaskOutcome:
        return TaskOutcome(name=ref.blob, status="done")

    answer = registered(fine)({"container": "c", "blob": "a.tif"})
    assert answer["status"] == "done" and isinstance(answer["seconds"], float)
    assert fine._function.get_function_name() == "fine"
    assert json.dumps(answer)  # plain JSON across the Durable boundary


TASK_NAMES_SCRIPT = """
import json, function_app, job_reads
registered = {f.get_function_name() for f in function_app.app.get_functions()}
names = job_reads.TASK_NAMES
used = set(names.progress_activities) | set(names.progress_orchestrations) | set(names.item_activities) | {names.describe}
print(json.dumps({"registered": sorted(registered), "used": sorted(used)}))
"""


def test_the_tasks_and_progress_tables_name_registered_functions():
    """/tasks and live progress read histories by function name: every name they look for is a
    function the app registers (they are taken from the function objects, so a rename moves them)."""
    done = subprocess.run([sys.executable, "-c", TASK_NAMES_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["used"] and set(found["used"]) <= set(found["registered"]), set(found["used"]) - set(found["registered"])
    assert {"catalog_blob", "convert_blob", "convert_tile", "process_tiled_raster", "convert_cube"} <= set(found["used"])


def test_the_retry_budget_is_one_settings_group(local_app, monkeypatch):
    monkeypatch.setenv("RMH_OUTAGE_SECONDS", "42")
    get_settings.cache_clear()
    budget = get_settings().retry_budget
    assert budget.outage_seconds == 42 and budget.task_attempts == faults.BUDGET.task_attempts
    assert get_settings().gdal_config["GDAL_HTTP_MAX_RETRY"] == str(budget.gdal_request_retries)
    assert activity_frame.gdal_config()["GDAL_HTTP_MAX_RETRY"] == str(budget.gdal_request_retries)
