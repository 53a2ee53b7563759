"""Embedded Durable runtime: what the Azure Functions Python worker refuses when it loads an app.

On Azure the worker indexes the app before the first invocation (``loader.index_function_app`` and
``functions.Registry.add_indexed_function`` in azure-functions-worker; the same checks in
azure-functions-runtime for Python 3.13+), and a function it refuses takes the whole app down at
start-up. Without these checks the embedded runtime would accept such an app and fail on every call
(a ``context`` parameter typed ``dict`` gets an invocation context, or nothing). Each check here is
one condition of the worker, in its order, worded in our own terms:

Loader (the module named by ``'module:attr'``):
  1. no ``FunctionApp``/``DFApp`` (a ``FunctionRegister``) at the module's top level;
  2. more than one at its top level (the worker cannot tell which one is the app).
The SDK's ``app.get_functions()`` (run by ``local_functions.index_app``) adds its own: a function
without a trigger, two functions with one name.

Registry, per function, against ``function.get_user_function()`` (for orchestrators and entities
the Durable SDK's wrapper, whose one parameter is ``context``):
  3. annotations that do not resolve (``typing.get_type_hints`` raises);
  4. a binding with direction ``inout``;
  5. a ``$return`` binding whose direction is not ``out``;
  6. an unbound ``context`` parameter annotated with anything but ``azure.functions.Context``;
  7. Python parameters that no binding declares (``*args``/``**kwargs`` and defaults included);
  8. bindings that name no Python parameter;
  9. an ``Out`` annotation without exactly one type argument;
 10. an annotation that is not a type (``Optional[str]``, ``list[str]``, a string);
 11. an ``out`` binding whose annotation is not ``func.Out[...]``;
 12. an ``in`` binding annotated ``func.Out[...]``;
 13. an annotation the binding's converter does not accept (``str``/``bytes`` on a binding
     without implicit output are checked as the generic binding: ``str``, ``bytes``);
 14. with a ``$return`` binding: a return annotation that is ``Out``, is not a type, or that the
     return binding's converter does not accept (an HTTP function ``-> dict``).

The converters are azure-functions' own (``azure.functions.get_binding_registry()``); a binding
type it has no converter for is the worker's generic binding (input ``str``/``bytes``, output
``str``/``bytes``/``bytearray``; implicit output except ``durableClient``). Not covered: HTTP
streaming (``azurefunctions-extensions-http-fastapi``) and SDK-type bindings
(``azurefunctions-extensions-bindings-*``), which change the HTTP and blob checks and which the
embedded runtime does not run.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any

import azure.functions as func

RETURN = "$return"
DURABLE_WRAPPED = ("orchestrationTrigger", "entityTrigger")
_IN, _OUT, _INOUT = 0, 1, 2
_NOT_GENERIC_ORIGINS = (typing.Union, tuple, typing.ClassVar, collections.abc.Callable)
_GENERIC_ALIASES = (typing._GenericAlias, typing._SpecialGenericAlias)  # type: ignore[attr-defined]


class _Refusal(Exception):
    """One check failed (internal: carried to ``function_problem`` as its message)."""


def module_problems(module: types.ModuleType) -> list[str]:
    """Loader checks 1-2 on the app's module: exactly one FunctionRegister at its top level."""
    apps = [name for name in module.__dir__()
            if isinstance(getattr(module, name, None), func.FunctionRegister)]
    if not apps:
        return [f"module {module.__name__!r} defines no FunctionApp/DFApp at its top level; the "
                "worker indexes the one it finds there"]
    if len(apps) > 1:
        return [f"module {module.__name__!r} defines more than one function app at its top level "
                f"({', '.join(apps)}); the worker needs exactly one (register blueprints on it)"]
    return []


def function_problem(function: Any) -> str | None:
    """The first of checks 3-14 the function fails, as a sentence; None when the worker loads it."""
    try:
        _check_function(function)
    except _Refusal as refusal:
        trigger = function.get_trigger()
        if str(trigger.type) in DURABLE_WRAPPED and trigger.name != "context":
            return (f"{refusal} (the Durable SDK hands the worker a wrapper whose one parameter "
                    f"is named 'context': declare context_name='context', not {trigger.name!r})")
        return str(refusal)
    return None


def _check_function(function: Any) -> None:
    fn = function.get_user_function()
    try:
        params = dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError) as err:
        raise _Refusal(f"its signature cannot be read ({err})") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception as err:  # noqa: BLE001 - whatever the worker's get_type_hints raises refuses
        raise _Refusal(f"its annotations do not resolve ({type(err).__name__}: {err})") from None
    bound, return_type = _bound_parameters(function.get_bindings())
    _check_context(params, bound, hints)
    extra, missing = sorted(set(params) - set(bound)), sorted(set(bound) - set(params))
    if extra:
        raise _Refusal(f"parameter(s) {', '.join(extra)} are declared in Python but by no binding")
    if missing:
        raise _Refusal(f"binding(s) {', '.join(missing)} name no parameter of the Python function")
    for name in params:
        _check_parameter(name, bound[name], name in hints, hints.get(name))
    if return_type is not None and "return" in hints:
        _check_return(return_type, hints["return"])


def _direction(binding: Any) -> int:
    value = getattr(binding, "direction", _IN)
    value = getattr(value, "value", value)
    if isinstance(value, str):
        return {"in": _IN, "out": _OUT, "inout": _INOUT}.get(value.lower(), _IN)
    return int(value)


def _bound_parameters(bindings: list[Any]) -> tuple[dict[str, Any], str | None]:
    """Checks 4-5; the bindings by parameter name, and the type of the first ``$return``."""
    bound: dict[str, Any] = {}
    return_type: str | None = None
    for binding in bindings:
        direction = _direction(binding)
        if direction == _INOUT:
            raise _Refusal(f"binding {binding.name!r} has direction inout, which the worker "
                           "does not support")
        if binding.name == RETURN:
            if direction != _OUT:
                raise _Refusal('the "$return" binding must have direction out')
            return_type = return_type or str(binding.type)
        else:
            bound[binding.name] = binding
    return bound, return_type


def _check_context(params: dict[str, Any], bound: dict[str, Any], hints: dict[str, Any]) -> None:
    """Check 6. An unbound ``context`` parameter is the worker's to fill: it leaves ``params``."""
    if "context" not in params or "context" in bound:
        return
    params.pop("context")
    if "context" in hints:
        annotation = hints["context"]
        if not isinstance(annotation, type) or annotation.__name__ != "Context":
            raise _Refusal("parameter 'context' is bound to no binding, so the worker passes "
                           "the invocation context, and it must be annotated "
                           f"azure.functions.Context (or not at all), not {annotation!r}")


def _is_generic(annotation: Any) -> bool:
    """A generic type as the worker's typing_inspect sees one: a Generic subclass or a
    subscripted alias other than Union, Tuple, ClassVar and Callable."""
    if isinstance(annotation, type) and issubclass(
            annotation, typing.Generic):  # type: ignore[arg-type]
        return True
    return isinstance(annotation, _GENERIC_ALIASES) and \
        annotation.__origin__ not in _NOT_GENERIC_ORIGINS


def _origin(annotation: Any) -> Any:
    if isinstance(annotation, typing._GenericAlias):  # type: ignore[attr-defined]
        return annotation.__origin__ if annotation.__origin__ is not typing.ClassVar else None
    return typing.Generic if annotation is typing.Generic else None


def _is_out(annotation: Any) -> bool:
    def named_out(value: Any) -> bool:
        return isinstance(value, type) and value.__name__ == "Out"

    if _is_generic(annotation):
        origin = _origin(annotation)
        return named_out(origin) if origin is not None else named_out(annotation)
    return named_out(annotation)


def _check_parameter(name: str, binding: Any, annotated: bool, annotation: Any) -> None:
    """Checks 9-13 for one bound parameter."""
    is_out = annotated and _is_out(annotation)
    py_type = annotation
    if is_out:
        arguments = annotation.__args__ if isinstance(
            annotation, typing._GenericAlias) else ()  # type: ignore[attr-defined]
        if len(arguments) != 1:
            raise _Refusal(f"parameter {name!r} has an Out annotation without exactly one "
                           f"type argument ({annotation!r})")
        py_type = arguments[0]
    if annotated and not isinstance(py_type, type) and not _is_generic(py_type):
        raise _Refusal(f"parameter {name!r} has an annotation that is not a type ({annotation!r}; "
                       "the worker takes a class, e.g. str, dict, func.InputStream)")
    binding_out = _direction(binding) == _OUT
    if binding_out and annotated and not is_out:
        raise _Refusal(f"binding {name!r} is an output, so its parameter must be annotated "
                       f"func.Out[...], not {annotation!r}")
    if not binding_out and is_out:
        raise _Refusal(f"binding {name!r} is an input, but its parameter is annotated "
                       f"{annotation!r}")
    if not annotated:
        return
    binding_type = str(binding.type)
    if py_type in (str, bytes) and not _has_implicit_output(binding_type):
        binding_type = "generic"
    accepted = _accepts(binding_type, py_type, output=is_out)
    if not accepted:
        raise _Refusal(f"binding {name!r} of type {binding.type} does not take the Python "
                       f"annotation {getattr(py_type, '__name__', py_type)!r}")


def _check_return(return_type: str, annotation: Any) -> None:
    """Check 14: the return annotation of a function with a ``$return`` binding."""
    if _is_generic(annotation) and _origin(annotation) is not None \
            and getattr(_origin(annotation), "__name__", "") == "Out":
        raise _Refusal("its return annotation must not be azure.functions.Out")
    if not isinstance(annotation, type):
        raise _Refusal(f"its return annotation is not a type ({annotation!r})")
    if not _accepts(return_type, annotation, output=True):
        raise _Refusal(f"its return annotation {annotation.__name__!r} does not match the "
                       f"{return_type} output binding")


class _GenericBinding:
    """The worker's fallback for a binding type azure-functions has no converter for."""

    @staticmethod
    def check_input_type_annotation(pytype: type) -> bool:
        return issubclass(pytype, (str, bytes))

    @staticmethod
    def check_output_type_annotation(pytype: type) -> bool:
        return issubclass(pytype, (str, bytes, bytearray))


def _converter(binding_type: str) -> Any:
    return func.get_binding_registry().get(binding_type) or _GenericBinding


def _has_implicit_output(binding_type: str) -> bool:
    converter = _converter(binding_type)
    if converter is _GenericBinding:
        return binding_type != "durableClient"
    return bool(getattr(converter, "has_implicit_output", lambda: False)())


def _accepts(binding_type: str, py_type: Any, *, output: bool) -> bool:
    """The converter's verdict; an annotation it cannot even check (it raises) is refused too, as
    the exception stops the worker's load."""
    converter = _converter(binding_type)
    check = (converter.check_output_type_annotation if output
             else converter.check_input_type_annotation)
    try:
        return bool(check(py_type))
    except Exception as err:  # noqa: BLE001 - the worker's load fails on it, so ours does
        raise _Refusal(f"the {binding_type} binding cannot check the annotation {py_type!r} "
                       f"({type(err).__name__}: {err})") from None
