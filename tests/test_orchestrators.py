"""Orchestrators replayed through the SDK with extension-shaped history."""
import json


import orchestrators
from replay import History


def handle_of(function_builder):
    return function_builder._function.get_user_function()


def activity_calls(state):
    return [a for a in state["actions"][0] if a["actionType"] in (0, 1)] if state["actions"] else []


def test_hello_world_fans_out_one_activity_per_greeting():
    state = History("hello_world", {"name": "Ada", "count": 3}).run(handle_of(orchestrators.hello_world))
    assert not state["isDone"]
    calls = state["actions"][0][0]["compoundActions"]
    assert [c["functionName"] for c in calls] == ["say_hello"] * 3
    assert [json.loads(c["input"]) for c in calls] == [{"name": "Ada", "index": i} for i in range(3)]


def test_hello_world_fans_in_results_in_order():
    history = History("hello_world", {"name": "Ada", "count": 3})
    for seq in range(3):
        history.scheduled(seq, "say_hello")
    history.next_episode()
    for seq in (2, 0, 1):  # completions arrive out of order, in one episode
        history.completed(seq, f"Hello Ada #{seq + 1}")
    state = history.run(handle_of(orchestrators.hello_world))
    assert state["isDone"]
    assert state["output"] == {"greetings": ["Hello Ada #1", "Hello Ada #2", "Hello Ada #3"]}


def test_hello_world_fails_when_a_greeting_fails():
    history = History("hello_world", {"count": 2})
    history.scheduled(0, "say_hello").scheduled(1, "say_hello").next_episode()
    history.failed(1, "Activity function 'say_hello' failed: ValueError: boom")
    state = history.run(handle_of(orchestrators.hello_world))
    assert "boom" in state["error"]  # the host ends the instance Failed once the gate opens


def test_hello_world_rejects_a_bad_input():
    state = History("hello_world", {"count": 0}).run(handle_of(orchestrators.hello_world))
    assert "count" in state["error"]


# -- a fan-out settled with its progress live (orchestrators.settle, report_live) ---------------

def _fan_out():
    """An orchestrator of 12 tile-like tasks settled at once, its progress published as live."""
    import azure.durable_functions as df
    from models import JobResult

    def body(context):
        tasks = [context.call_activity("convert_tile", i) for i in range(12)]
        orchestrators.report(context, "tiling", JobResult(operation="t", started=context.current_utc_datetime), 12,
                             live=True)
        results = yield from orchestrators.settle(context, tasks)
        return ["failed" if isinstance(r, Exception) else r["status"] for r in results]

    return df.Orchestrator.create(body)


def test_settle_schedules_every_task_at_once_and_publishes_live_progress():
    state = History("fan", None).run(_fan_out())
    (all_of,) = state["actions"][0]
    assert all_of["actionType"] == 12 and len(all_of["compoundActions"]) == 12  # one task_all (WhenAll)
    assert state["customStatus"]["live"] is True
    assert (state["customStatus"]["total"], state["customStatus"]["done"]) == (12, 0)


def test_settle_waits_for_every_task_when_one_fails_and_keeps_its_place():
    history = History("fan", None)
    for seq in range(12):
        history.scheduled(seq, "convert_tile")
    history.next_episode()
    history.failed(4, "Activity function 'convert_tile' failed: StorageUnavailable: down")
    state = history.run(_fan_out())  # task_all failed fast: settle waits for the other eleven
    assert not state["isDone"]
    history.next_episode()
    for seq in (*range(4), *range(5, 12)):
        history.completed(seq, {"name": f"tile {seq}", "status": "done"})
    state = history.run(_fan_out())
    assert state["isDone"] and state["output"] == ["done"] * 4 + ["failed"] + ["done"] * 7


def test_history_progress_counts_finished_files_and_tiles_only():
    from job_reads import history_progress

    events = [
        {"EventType": "TaskCompleted", "FunctionName": "catalog_blob", "Result": {"name": "a.tif", "status": "done"}},
        {"EventType": "TaskCompleted", "FunctionName": "catalog_blob", "Result": '{"name": "b.tif", "status": "skipped"}'},
        {"EventType": "TaskCompleted", "FunctionName": "convert_tile", "Result": {"name": "t", "status": "failed"}},
        {"EventType": "TaskCompleted", "FunctionName": "inspect_raster", "Result": {"name": "c.tif"}},  # a step
        {"EventType": "TaskFailed", "FunctionName": "convert_blob", "Reason": "down"},  # retried
        {"EventType": "TaskScheduled", "Name": "convert_blob"},
        {"EventType": "SubOrchestrationInstanceCompleted", "FunctionName": "process_tiled_raster",
         "Result": {"operation": "process_tiled_raster", "total": 9, "failed": 1}},
        {"EventType": "SubOrchestrationInstanceCompleted", "FunctionName": "process_tiled_raster",
         "Result": {"operation": "process_tiled_raster", "total": 9, "failed": 0}},
    ]
    assert history_progress(events) == (3, 2)


def test_combined_progress_adds_what_the_job_has_not_counted_and_never_passes_the_total():
    import datetime as dt
    from models import Progress

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    job = Progress.at("cataloging", total=300, done=100, failed=2, started=start,
                      now=start + dt.timedelta(seconds=10)).model_dump(mode="json")
    now = start + dt.timedelta(seconds=20)
    combined = Progress.combined(job, [(40, 1), (9, 0)], now)
    assert (combined["done"], combined["failed"], combined["percent"]) == (149, 3, 50.7)
    assert combined["eta"] is not None and "live" not in combined
    assert Progress.combined(job, [(400, 0)], now)["done"] == 300
    assert Progress.combined({"message": "not progress"}, [(1, 0)], now) == {"message": "not progress"}


# -- chunks run a few at a time (orchestrators.gather) -----------------------------------------

def _chunked(in_flight):
    """A job frame over 10 chunk sub-orchestrations, at most ``in_flight`` at once."""
    import functools

    import azure.durable_functions as df
    from models import JobResult

    def body(context):
        starts = [functools.partial(context.call_sub_orchestrator, "catalog_chunk", {"n": i}, f"job:chunk-{i:05d}")
                  for i in range(10)]
        result = JobResult(operation="sync_container", started=context.current_utc_datetime)
        result = yield from orchestrators.gather(context, starts, result, stage="cataloging", total=10,
                                                 names=[[f"f{i}.tif"] for i in range(10)], in_flight=in_flight)
        return result.model_dump(mode="json")

    return df.Orchestrator.create(body)


def test_gather_starts_at_most_in_flight_chunks_and_the_next_as_one_finishes():
    history = History("sync", None)
    state = history.run(_chunked(3))
    (any_of,) = state["actions"][0]
    assert [a["instanceId"] for a in any_of["compoundActions"]] == [f"job:chunk-{i:05d}" for i in range(3)]
    for seq in range(3):
        history.events.append(history._event(7, seq, Name="catalog_chunk", InstanceId=f"job:chunk-{seq:05d}"))
    history.next_episode()
    history.events.append(history._event(8, TaskScheduledId=1, Result='{"operation": "catalog_chunk", "total": 1, "done": 1}'))
    state = history.run(_chunked(3))
    assert not state["isDone"] and state["customStatus"]["done"] == 1
    assert state["customStatus"]["chunks"] == [0, 2, 3]  # running and not merged: what readers look up
    started = [a.get("instanceId") for group in state["actions"] for a in group
               for a in (a.get("compoundActions") or [a])]
    assert "job:chunk-00003" in started and "job:chunk-00004" not in started


def test_gather_counts_a_failed_chunk_as_its_files_failed_and_goes_on():
    history = History("sync", None)
    for seq in range(10):
        history.events.append(history._event(7, seq, Name="catalog_chunk", InstanceId=f"job:chunk-{seq:05d}"))
    history.next_episode()
    history.events.append(history._event(9, TaskScheduledId=2, Reason="chunk exploded", Details=""))
    for seq in (0, 1, *range(3, 10)):
        history.events.append(history._event(8, TaskScheduledId=seq, Result='{"operation": "catalog_chunk", "total": 1, "done": 1}'))
    state = history.run(_chunked(10))
    assert state["isDone"], state
    assert (state["output"]["done"], state["output"]["failed"]) == (9, 1)
    assert state["output"]["failures"][0]["name"] == "f2.tif" and state["output"]["failures"][0]["error"] == "ChunkFailed"


# -- sync_container: the gone sources' outputs unpublished, at most UNPUBLISH_NAMES per request ---

def _flat(actions):
    """Every action of a state, compound ones' inside (``call`` awaits its task in a task_all)."""
    for action in (a for group in actions for a in group) if actions and isinstance(actions[0], list) else actions:
        yield action
        yield from _flat(action.get("compoundActions") or [])


def test_a_sync_with_more_gone_sources_than_one_unpublish_names_runs_one_unpublish_per_batch():
    """10,001 sources gone: an unpublish of 10,000 then one of 1 (one request names at most
    UNPUBLISH_NAMES), their removed items summed. On the old code the job failed: its one
    UnpublishRequest of 10,001 blobs was refused inside the orchestrator (a ValidationError)."""
    from models import UNPUBLISH_NAMES

    gone = [f"b{i:05d}.tif" for i in range(UNPUBLISH_NAMES + 1)]
    plan = {"collection": "box", "mode": "incremental", "dry_run": False, "counts": {}, "added": [], "changed": [],
            "removed": [], "unchanged": [], "ignored": [], "removed_sources": gone}
    handle = handle_of(orchestrators.sync_container)
    history = History("sync_container", {"container": "box"})  # task 0: the metrics signal
    history.scheduled(1, "plan_sync").next_episode().completed(1, plan)
    unpublished = []
    for seq, items in ((2, 7), (3, 1)):
        state = history.run(handle)
        assert not state.get("error"), state.get("error")
        call = [a for a in _flat(state["actions"]) if a["actionType"] in (2, 3)][-1]
        unpublished.append(call)
        history.events.append(history._event(7, seq, Name="unpublish", InstanceId=call["instanceId"]))
        history.next_episode()
        history.events.append(history._event(8, TaskScheduledId=seq, Result=json.dumps(
            {"operation": "unpublish", "total": items, "done": items, "detail": {"removed": {"items": items}}})))
    assert [c["instanceId"] for c in unpublished] == ["test-instance:unpublish-00000", "test-instance:unpublish-00001"]
    assert [json.loads(c["input"])["blobs"] for c in unpublished] == [gone[:UNPUBLISH_NAMES], gone[UNPUBLISH_NAMES:]]
    for seq, name, answer in ((4, "finalize_catalog", {"collection": "box", "catalog": "static"}),
                              (5, "register_mosaic", {"collection": "box"})):
        state = history.run(handle)
        assert not state.get("error"), state.get("error")
        assert [a["functionName"] for a in _flat(state["actions"]) if a["actionType"] in (0, 1)][-1] == name
        history.scheduled(seq, name).next_episode().completed(seq, answer)
    state = history.run(handle)
    assert state["isDone"], state.get("error")
    assert state["output"]["detail"]["removed"] == 8
