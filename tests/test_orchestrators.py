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
