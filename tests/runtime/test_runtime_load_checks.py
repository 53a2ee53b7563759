"""An app the Azure Functions Python worker refuses at load is refused by the embedded runtime at
start-up, naming the function and the condition, instead of being accepted and failing on every
call. One case per check of ``local_load_checks`` (the worker's loader and registry checks), plus
the apps the worker accepts: every test app and the service's own ``function_app``."""
from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func
import pytest

import local_runtime
from local_runtime import LocalRuntime

APPS = Path(__file__).resolve().parent / "apps"


def refusal(tmp_path: Path, app_or_ref) -> str:
    """The AppRefused message of a runtime over ``app_or_ref``; nothing is created on disk."""
    with pytest.raises(local_runtime.AppRefused) as refused:
        LocalRuntime(app_or_ref, db_path=tmp_path / "r.sqlite", port=0)
    assert not (tmp_path / "r.sqlite").exists()
    message = str(refused.value)
    assert message.startswith("the Python worker refuses this app at load, so Azure would not "
                              "start it: "), message
    return message


def app_with(decorate: Callable[[df.DFApp], None]) -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    decorate(app)
    return app


# -- one function per check (numbers as in local_load_checks) ------------------------------------
def _context_typed_dict(app: df.DFApp) -> None:  # 6, the example
    @app.activity_trigger(input_name="name")
    def greet(name: str, context: dict) -> str:
        return name


def _context_typed_optional(app: df.DFApp) -> None:  # 6
    @app.activity_trigger(input_name="name")
    def greet_maybe(name: str, context: typing.Optional[func.Context]) -> str:
        return name


def _orchestrator_context_name(app: df.DFApp) -> None:  # 6, via the SDK's wrapper
    @app.orchestration_trigger(context_name="ctx")
    def renamed(ctx: df.DurableOrchestrationContext):
        yield ctx.call_activity("x", 1)


def _entity_context_name(app: df.DFApp) -> None:  # 8, via the SDK's wrapper
    @app.entity_trigger(context_name="ent")
    def counter(ent: df.DurableEntityContext) -> None:
        ent.set_state(1)


def _unresolved_annotation(app: df.DFApp) -> None:  # 3
    @app.activity_trigger(input_name="job")
    def typed_later(job: "JobThatIsNotDefined") -> str:  # noqa: F821
        return ""


def _inout_binding(app: df.DFApp) -> None:  # 4
    from azure.functions.decorators.core import BindingDirection

    @app.activity_trigger(input_name="x")
    def both_ways(x: str) -> str:
        return x

    both_ways_builder = app._function_builders[-1]
    both_ways_builder._function.get_trigger()._direction = BindingDirection.INOUT


def _return_binding_in(app: df.DFApp) -> None:  # 5
    @app.generic_trigger(arg_name="msg", type="customTrigger")
    @app.generic_input_binding(arg_name="$return", type="custom")
    def returns_into_an_input(msg: str) -> str:
        return msg


def _extra_python_parameter(app: df.DFApp) -> None:  # 7
    @app.activity_trigger(input_name="name")
    def with_default(name: str, retries: int = 3) -> str:
        return name


def _star_kwargs(app: df.DFApp) -> None:  # 7
    @app.route(route="loose")
    def loose(req: func.HttpRequest, **kwargs) -> func.HttpResponse:
        return func.HttpResponse("")


def _binding_without_parameter(app: df.DFApp) -> None:  # 8
    @app.route(route="notes")
    @app.blob_input(arg_name="note", path="notes/a.txt", connection="AzureWebJobsStorage")
    def forgets_the_blob(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("")


def _bare_out(app: df.DFApp) -> None:  # 9
    @app.route(route="bare")
    @app.blob_output(arg_name="copy", path="out/a.txt", connection="AzureWebJobsStorage")
    def bare_out(req: func.HttpRequest, copy: func.Out) -> func.HttpResponse:
        return func.HttpResponse("")


def _optional_annotation(app: df.DFApp) -> None:  # 10
    @app.activity_trigger(input_name="name")
    def optional_name(name: typing.Optional[str]) -> str:
        return name or ""


def _out_binding_not_out(app: df.DFApp) -> None:  # 11
    @app.route(route="write")
    @app.blob_output(arg_name="target", path="out/a.txt", connection="AzureWebJobsStorage")
    def writes_str(req: func.HttpRequest, target: str) -> func.HttpResponse:
        return func.HttpResponse("")


def _in_binding_as_out(app: df.DFApp) -> None:  # 12
    @app.route(route="read")
    @app.blob_input(arg_name="source", path="in/a.txt", connection="AzureWebJobsStorage")
    def reads_into_out(req: func.HttpRequest, source: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse("")


def _blob_typed_dict(app: df.DFApp) -> None:  # 13
    @app.route(route="dict")
    @app.blob_input(arg_name="doc", path="in/a.json", connection="AzureWebJobsStorage")
    def blob_as_dict(req: func.HttpRequest, doc: dict) -> func.HttpResponse:
        return func.HttpResponse("")


def _blob_out_int(app: df.DFApp) -> None:  # 13
    @app.route(route="count")
    @app.blob_output(arg_name="count", path="out/n.txt", connection="AzureWebJobsStorage")
    def writes_int(req: func.HttpRequest, count: func.Out[int]) -> func.HttpResponse:
        return func.HttpResponse("")


def _timer_typed_dict(app: df.DFApp) -> None:  # 13
    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer")
    def tick(timer: dict) -> None:
        pass


def _blob_typed_list(app: df.DFApp) -> None:  # 13, the converter cannot check it
    @app.route(route="lines")
    @app.blob_input(arg_name="lines", path="in/a.txt", connection="AzureWebJobsStorage")
    def blob_as_lines(req: func.HttpRequest, lines: typing.List[str]) -> func.HttpResponse:
        return func.HttpResponse("")


def _http_returns_dict(app: df.DFApp) -> None:  # 14
    @app.route(route="json")
    def answers_dict(req: func.HttpRequest) -> dict:
        return {}


def _http_returns_optional(app: df.DFApp) -> None:  # 14
    @app.route(route="maybe")
    def answers_maybe(req: func.HttpRequest) -> typing.Optional[func.HttpResponse]:
        return None


def _http_returns_out(app: df.DFApp) -> None:  # 14
    @app.route(route="out")
    def answers_out(req: func.HttpRequest) -> func.Out[func.HttpResponse]:
        return None


CASES = [
    (_context_typed_dict, "greet", "parameter 'context' is bound to no binding", "not <class 'dict'>"),
    (_context_typed_optional, "greet_maybe", "parameter 'context' is bound to no binding",
     "must be annotated azure.functions.Context (or not at all), not typing.Optional"),
    (_orchestrator_context_name, "renamed", "parameter 'context' is bound to no binding",
     "declare context_name='context', not 'ctx'"),
    (_entity_context_name, "counter", "binding(s) ent name no parameter",
     "declare context_name='context', not 'ent'"),
    (_unresolved_annotation, "typed_later", "its annotations do not resolve",
     "JobThatIsNotDefined"),
    (_inout_binding, "both_ways", "binding 'x' has direction inout", "does not support"),
    (_return_binding_in, "returns_into_an_input", 'the "$return" binding must have direction out',
     ""),
    (_extra_python_parameter, "with_default", "parameter(s) retries are declared in Python",
     "by no binding"),
    (_star_kwargs, "loose", "parameter(s) kwargs are declared in Python", ""),
    (_binding_without_parameter, "forgets_the_blob", "binding(s) note name no parameter", ""),
    (_bare_out, "bare_out", "parameter 'copy' has an Out annotation without exactly one type",
     ""),
    (_optional_annotation, "optional_name", "parameter 'name' has an annotation that is not a type",
     "Optional[str]"),
    (_out_binding_not_out, "writes_str", "binding 'target' is an output",
     "must be annotated func.Out[...]"),
    (_in_binding_as_out, "reads_into_out", "binding 'source' is an input", "Out[str]"),
    (_blob_typed_dict, "blob_as_dict", "binding 'doc' of type blob does not take", "'dict'"),
    (_blob_out_int, "writes_int", "binding 'count' of type blob does not take", "'int'"),
    (_timer_typed_dict, "tick", "binding 'timer' of type timerTrigger does not take", "'dict'"),
    (_blob_typed_list, "blob_as_lines", "the blob binding cannot check the annotation",
     "List[str]"),
    (_http_returns_dict, "answers_dict", "its return annotation 'dict' does not match the http",
     ""),
    (_http_returns_optional, "answers_maybe", "its return annotation is not a type", "Optional"),
    (_http_returns_out, "answers_out", "its return annotation must not be azure.functions.Out",
     ""),
]


@pytest.mark.parametrize(("decorate", "function", "condition", "detail"), CASES,
                         ids=[case[0].__name__.strip("_") for case in CASES])
def test_an_app_the_worker_refuses_is_refused_at_start_up(
        tmp_path: Path, decorate, function: str, condition: str, detail: str) -> None:
    message = refusal(tmp_path, app_with(decorate))
    assert f"function {function!r}: {condition}" in message
    assert detail in message


def test_every_refused_function_is_named_and_a_second_runtime_is_refused_alike(
        tmp_path: Path) -> None:
    def two_bad(app: df.DFApp) -> None:
        _context_typed_dict(app)
        _http_returns_dict(app)

        @app.activity_trigger(input_name="name")
        def fine(name: str, context: func.Context) -> str:
            return name

    app = app_with(two_bad)
    first = refusal(tmp_path, app)
    assert "function 'greet'" in first and "function 'answers_dict'" in first
    assert "'fine'" not in first
    assert refusal(tmp_path, app) == first  # not "does not have a unique function name"


def test_the_sdks_own_get_functions_checks_are_refusals_too(tmp_path: Path) -> None:
    def duplicate(app: df.DFApp) -> None:
        @app.function_name("same")
        @app.activity_trigger(input_name="x")
        def one(x: str) -> str:
            return x

        @app.function_name("same")
        @app.activity_trigger(input_name="x")
        def two(x: str) -> str:
            return x

    assert "Function same does not have a unique function name" in refusal(
        tmp_path, app_with(duplicate))

    def no_trigger(app: df.DFApp) -> None:
        @app.function_name("lonely")
        @app.blob_input(arg_name="b", path="in/a.txt", connection="AzureWebJobsStorage")
        def lonely(b: str) -> str:
            return b

    assert "Function lonely does not have a trigger" in refusal(tmp_path, app_with(no_trigger))


def test_an_app_object_that_is_not_a_function_app_is_refused(tmp_path: Path) -> None:
    blueprint = df.Blueprint()

    @blueprint.activity_trigger(input_name="x")
    def echo(x: str) -> str:
        return x

    assert "Blueprint is not a function app" in refusal(tmp_path, blueprint)


APP_HEADER = ("import azure.durable_functions as df\nimport azure.functions as func\n")
ONE_ACTIVITY = ("@{app}.activity_trigger(input_name='x')\n"
                "def echo(x: str) -> str:\n    return x\n")


@pytest.mark.parametrize(("source", "condition"), [
    (APP_HEADER + "app = df.DFApp()\nother = df.DFApp()\n" + ONE_ACTIVITY.format(app="app"),
     "defines more than one function app at its top level (app, other)"),
    (APP_HEADER + "def make():\n    return df.DFApp()\napp_factory = make\n",
     "defines no FunctionApp/DFApp at its top level"),
])
def test_the_workers_loader_checks_on_the_apps_module(tmp_path: Path, source: str,
                                                      condition: str) -> None:
    module = tmp_path / f"loader_case_{abs(hash(source)) % 10**8}.py"
    module.write_text(source)
    attr = "app" if "app = df.DFApp()" in source else "app_factory"
    assert condition in refusal(tmp_path, f"{module}:{attr}")


@pytest.mark.parametrize("app_ref", sorted(
    [f"{path}:app" for path in APPS.glob("*_app.py")] + ["function_app:app"]))
def test_the_apps_the_worker_loads_are_accepted(app_ref: str) -> None:
    from local_functions import index_app, load_app

    index = index_app(load_app(app_ref))
    assert index.orchestrators or index.http or index.timers or index.event_grid
