"""``GET /api/jobs/{id}/tasks`` lists every file of a job, including those the orchestrator
failed itself (a named blob that does not exist), and never a row without a name."""
from __future__ import annotations

from raster_factory import write_raster


def test_tasks_list_every_file_with_its_name_and_the_orchestrators_failures(host, store, tmp_path):
    store.create_container("tasked")
    for name in ("a.tif", "b.tif"):
        store.upload_from_path("tasked", name, write_raster(tmp_path / name, width=64, height=64,
                                                            count=1, crs="EPSG:32633"))
    status = host.run("cog_conversion", {"container": "tasked", "blobs": ["a.tif", "b.tif", "gone.tif"],
                                         "output_container": "tasked-out", "catalog": False})
    assert status["output"]["failed"] == 1 and status["output"]["done"] == 2, status["output"]
    code, body = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=100")
    assert code == 200, body
    assert all(task["name"] for task in body["tasks"]), [t for t in body["tasks"] if not t["name"]]
    by_name: dict[str, list[dict]] = {}
    for task in body["tasks"]:
        by_name.setdefault(task["name"], []).append(task)
    assert set(by_name) == {"a.tif", "b.tif", "gone.tif"}, by_name
    gone = by_name["gone.tif"]
    assert [t["status"] for t in gone] == ["failed"] and gone[0]["error"] == "BlobNotFound", gone
    assert "gone.tif" in gone[0]["reason"]
    code, failed = host.get(f"/api/jobs/{status['instanceId']}/tasks?status=failed")
    assert [t["name"] for t in failed["tasks"]] == ["gone.tif"] and failed["total"] == 1


def test_task_names_come_from_the_result_when_the_history_event_has_no_input():
    from job_reads import job_tasks

    history = [  # the extension's status format: a completion without the scheduled input
        {"EventType": "TaskCompleted", "FunctionName": "inspect_raster", "Timestamp": "2026-01-01T00:00:01Z",
         "ScheduledTime": "2026-01-01T00:00:00Z", "Result": '{"name": "in/a.tif", "pixels": 4096}'},
        {"EventType": "TaskCompleted", "FunctionName": "describe_blob", "Timestamp": "2026-01-01T00:00:01Z",
         "Input": '{"container": "c", "blob": "in/b.tif"}',
         "Result": '{"found": false, "reason": "c/in/b.tif does not exist"}'},
        {"EventType": "TaskCompleted", "FunctionName": "describe_blob", "Timestamp": "2026-01-01T00:00:01Z",
         "Input": '{"container": "c", "blob": "in/a.tif"}', "Result": '{"found": true, "file": {"name": "in/a.tif"}}'},
    ]
    tasks = job_tasks([history])
    assert [(t.name, t.activity, t.status, t.error) for t in tasks] == [
        ("in/a.tif", "inspect_raster", "done", None), ("in/b.tif", "describe_blob", "failed", "BlobNotFound")]
    assert tasks[0].seconds == 1.0
