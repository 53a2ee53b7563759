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


# -- progress of a fan-out awaited in groups (orchestrators.settle) ------------------------------

def _fan_out(every):
    """An orchestrator of 12 tile-like tasks settled in groups of ``every``, reporting progress."""
    import azure.durable_functions as df

    def body(context):
        tasks = [context.call_activity("convert_tile", i) for i in range(12)]
        results = yield from orchestrators.settle(context, tasks, every=every, progress=lambda n, bad: orchestrators.report_counts(
            context, "tiling", total=12, finished=n, failed=bad, started=context.current_utc_datetime))
        return ["failed" if isinstance(r, Exception) else r["status"] for r in results]

    return df.Orchestrator.create(body)


def test_settle_in_groups_schedules_every_task_at_once():
    state = History("fan", None).run(_fan_out(1))
    (any_of,) = state["actions"][0]
    assert any_of["actionType"] == 11 and len(any_of["compoundActions"]) == 12
    assert all(group["actionType"] == 12 for group in any_of["compoundActions"])


def test_settle_reports_progress_per_task_not_once_at_the_end():
    history = History("fan", None)
    for seq in range(12):
        history.scheduled(seq, "convert_tile")
    seen = []
    for seq in range(11):
        history.next_episode()
        if seq == 4:
            history.failed(seq, "Activity function 'convert_tile' failed: StorageUnavailable: down")
        else:
            history.completed(seq, {"name": f"tile {seq}", "status": "done"})
        state = history.run(_fan_out(1))
        assert not state["isDone"]
        seen.append((state["customStatus"]["done"], state["customStatus"]["failed"]))
    assert seen == [(1, 0), (2, 0), (3, 0), (4, 0), (4, 1)] + [(n, 1) for n in range(5, 11)]
    history.next_episode().completed(11, {"name": "tile 11", "status": "done"})
    state = history.run(_fan_out(1))
    assert state["isDone"] and state["output"] == ["done"] * 4 + ["failed"] + ["done"] * 7


def test_settle_in_groups_of_four_resumes_once_per_group():
    history = History("fan", None)
    for seq in range(12):
        history.scheduled(seq, "convert_tile")
    history.next_episode()
    for seq in (0, 1, 2):
        history.completed(seq, {"status": "done"})
    state = history.run(_fan_out(4))
    assert "customStatus" not in state or state["customStatus"] is None  # no group finished yet
    history.completed(3, {"status": "done"})
    state = history.run(_fan_out(4))
    assert state["customStatus"]["done"] == 4 and not state["isDone"]
