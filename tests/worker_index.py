"""Index a Functions app directory as the Azure Functions Python worker does at start-up, and
print what it found as JSON. Run with the interpreter of the environment under test:

    python -I tests/worker_index.py APP_DIR [--index-only]

- Python <= 3.12: the worker imports ``function_app`` from the app directory, calls
  ``app.get_functions()`` once and sends every function's raw bindings to the host; that is done
  here with the installed ``azure-functions``.
- Python >= 3.13: the worker is a proxy around the ``azure-functions-runtime`` library, which does
  the indexing. Its own request handlers run here (``worker_init_request`` indexes the app,
  ``functions_metadata_request`` answers with the functions' metadata), so its loader and its
  registry's parameter and binding checks are the ones Azure runs. The proxy's compiled protobuf
  messages are not on PyPI (they ship with the platform's worker): the messages below carry
  exactly the fields the runtime sets, refuse others, and use the protocol's enum values.

Prints ``{"loader", "functions": {name: {"trigger", "bindings"}}, "outside", "missing"}``:
``outside`` lists imported modules loaded from neither the app directory nor the environment,
``missing`` the modules the app's files import that this environment cannot find.
"""
from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace


class _Message:
    FIELDS: tuple[str, ...] = ()

    def __init__(self, **fields):
        unknown = sorted(set(fields) - set(self.FIELDS))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(unknown)}")
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))


def _message(name: str, fields: str, **constants) -> type:
    return type(name, (_Message,), {"FIELDS": tuple(fields.split()), **constants})


PROTOS = SimpleNamespace(
    BindingInfo=_message("BindingInfo", "type data_type direction",
                         **{"in": 0}, out=1, inout=2, undefined=0, string=1, binary=2, stream=3),
    RpcFunctionMetadata=_message(
        "RpcFunctionMetadata", "name function_id managed_dependency_enabled directory script_file "
        "entry_point is_proxy language bindings raw_bindings retry_options properties"),
    RpcRetryOptions=_message("RpcRetryOptions",
                             "max_retry_count retry_strategy delay_interval minimum_interval maximum_interval"),
    StatusResult=_message("StatusResult", "status result exception logs", Failure=0, Success=1, Cancelled=2),
    RpcException=_message("RpcException", "message stack_trace source is_user_exception"),
    WorkerMetadata=_message("WorkerMetadata",
                            "runtime_name runtime_version worker_version worker_bitness custom_properties"),
    WorkerInitResponse=_message("WorkerInitResponse", "capabilities worker_metadata result worker_version"),
    FunctionMetadataResponse=_message("FunctionMetadataResponse",
                                      "use_default_metadata_indexing function_metadata_results result"),
)


def index_with_sdk(app_dir: Path) -> tuple[str, dict[str, list[str]]]:
    """The monolithic worker's indexing (Python <= 3.12): ``app.get_functions()``."""
    import azure.functions as func

    import function_app

    registers = [v for v in vars(function_app).values() if isinstance(v, func.FunctionRegister)]
    if len(registers) != 1:
        raise SystemExit(f"function_app defines {len(registers)} function apps, the worker needs one")
    functions = registers[0].get_functions()
    return f"azure-functions {func.__version__} get_functions", {
        fn.get_function_name(): list(fn.get_raw_bindings()) for fn in functions}


def index_with_runtime(app_dir: Path) -> tuple[str, dict[str, list[str]]]:
    """The 3.13+ worker's indexing: azure-functions-runtime's own init and metadata handlers."""
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.version import VERSION

    init = SimpleNamespace(function_app_directory=str(app_dir), capabilities={}, host_version="4",
                           worker_directory=str(app_dir))
    request = SimpleNamespace(request=SimpleNamespace(worker_init_request=init),
                              properties={"protos": PROTOS, "host": "127.0.0.1"})
    response = asyncio.run(handle_event.worker_init_request(request))
    if response.result.status != PROTOS.StatusResult.Success:
        raise SystemExit(f"worker init failed: {response.result.exception.message}\n"
                         f"{response.result.exception.stack_trace}")
    metadata = asyncio.run(handle_event.functions_metadata_request(None))
    if metadata.result.status != PROTOS.StatusResult.Success or metadata.use_default_metadata_indexing:
        raise SystemExit("the runtime did not index the app itself")
    found = {}
    for fn in metadata.function_metadata_results:
        if fn.properties.get("worker_indexed") != "True" or fn.script_file is None:
            raise SystemExit(f"{fn.name}: not worker-indexed ({fn.properties})")
        found[fn.name] = list(fn.raw_bindings)
    return f"azure-functions-runtime {VERSION} worker_init_request", found


def imported_names(app_dir: Path) -> set[str]:
    """Every absolute module name imported anywhere (also inside functions) by the app's files."""
    names = set()
    for path in app_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def _missing(names: set[str]) -> list[str]:
    missing = []
    for name in sorted(names):
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


def _outside(app_dir: Path) -> list[str]:
    roots = [app_dir.resolve(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()]
    outside = []
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and name != "__main__" and not any(Path(file).resolve().is_relative_to(root) for root in roots):
            outside.append(f"{name} ({file})")
    return outside


def main(app_dir: Path, check_imports: bool = True) -> dict:
    sys.path.insert(0, str(app_dir))  # the worker puts the app directory first
    has_runtime = importlib.util.find_spec("azure_functions_runtime") is not None
    loader, raw = (index_with_runtime if has_runtime else index_with_sdk)(app_dir)
    functions = {}
    for name, bindings in sorted(raw.items()):
        parsed = [json.loads(b) for b in bindings]
        trigger = next((b["type"] for b in parsed if b["type"].endswith("Trigger")), None)
        functions[name] = {"trigger": trigger, "bindings": parsed}
    return {"loader": loader, "python": sys.version.split()[0], "functions": functions,
            "outside": _outside(app_dir),
            "missing": _missing(imported_names(app_dir)) if check_imports else None}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]).resolve(), check_imports="--index-only" not in sys.argv)))
