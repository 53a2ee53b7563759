"""Embedded Durable runtime: blob input and output bindings, as the Functions host serves them.

The host does the binding I/O, not the function: before an invocation it resolves each blob
binding's path (binding expressions from the trigger's data), reads the input blobs from the
runtime's blob store, and after it writes what the function set on its ``func.Out`` outputs. So
a function running in a worker process receives bytes and hands bytes back, as the Python worker
does over gRPC.

The blob store is ``storage.BlobStore`` (``LocalDirStore`` or ``AzureBlobStore``): the one
handed to ``LocalRuntime(blob_store=...)``, else the app's own
(``storage.store_from_settings(settings.get_settings())``). A binding's ``connection`` names an
app setting on Azure; on one machine every blob binding uses that one store.

Binding expressions: ``{name}`` and dotted ``{data.blob}`` paths into the trigger's binding data
(case-insensitive), ``{rand-guid}`` and ``{DateTime}``. Binding data by trigger: activity
``instanceId``, the input parameter's name and ``data`` (the input); HTTP route parameters, query
parameters and the top-level properties of a JSON object body; Event Grid the event's fields
(``subject``, ``data``, ...).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from azure.functions.blob import BlobConverter
from azure.functions.meta import Datum
import azure.functions as func

from local_functions import BlobBinding, Bindings

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


class BindingError(Exception):
    """A binding's path cannot be resolved, or its blob cannot be read or written."""


class OutValue(func.Out):
    """The ``func.Out`` the worker hands a function for an output binding."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def default_blob_store() -> Any:
    """The app's own blob store: its settings (``RMH_STORAGE_*``) through ``storage.py``."""
    import settings
    import storage

    return storage.store_from_settings(settings.get_settings())


def _lookup(data: Mapping[str, Any], expression: str) -> Any:
    value: Any = data
    for part in expression.split("."):
        if not isinstance(value, Mapping):
            return None
        folded = {str(k).lower(): v for k, v in value.items()}
        value = folded.get(part.strip().lower())
        if value is None:
            return None
    return value


def resolve_path(path: str, data: Mapping[str, Any]) -> tuple[str, str]:
    """'container/name' with its binding expressions filled in from ``data``."""

    def fill(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression.lower() == "rand-guid":
            return str(uuid.uuid4())
        if expression.lower() == "datetime":
            return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
        value = _lookup(data, expression)
        if value is None or isinstance(value, (dict, list)):
            raise BindingError(f"binding expression {{{expression}}} in {path!r} has no value "
                               "in the trigger's data")
        return str(value)

    resolved = _EXPRESSION.sub(fill, path)
    container, _, name = resolved.partition("/")
    if not container or not name:
        raise BindingError(f"blob binding path {path!r} resolved to {resolved!r}, which is not "
                           "'container/blob name'")
    return container, name


def read_inputs(store: Any, bindings: Bindings, data: Mapping[str, Any]
                ) -> dict[str, bytes | None]:
    """Each input binding's blob content (None for a missing blob, as the host passes null)."""
    from storage import BlobNotFound, ContainerNotFound

    contents: dict[str, bytes | None] = {}
    for binding in bindings.inputs:
        container, name = resolve_path(binding.path, data)
        try:
            contents[binding.name] = store.download_bytes(container, name)
        except (BlobNotFound, ContainerNotFound):
            contents[binding.name] = None
    return contents


def input_value(binding: BlobBinding, content: bytes | None) -> Any:
    """What the function's parameter receives for a blob input (``InputStream``, str, bytes)."""
    if content is None:
        return None
    if binding.shape == "str":
        return content.decode("utf-8")
    if binding.shape == "bytes":
        return content
    return BlobConverter.decode(Datum(content, "bytes"), trigger_metadata=None)


def binding_kwargs(bindings: Bindings, contents: Mapping[str, bytes | None]
                   ) -> tuple[dict[str, Any], dict[str, OutValue]]:
    """The blob parameters of one invocation: input values, and fresh ``func.Out`` outputs."""
    kwargs: dict[str, Any] = {b.name: input_value(b, contents.get(b.name))
                              for b in bindings.inputs}
    outs = {b.name: OutValue() for b in bindings.outputs}
    kwargs.update(outs)
    return kwargs, outs


def output_payloads(outs: Mapping[str, OutValue]) -> dict[str, bytes]:
    """What each output was set to, as bytes (unset outputs write nothing)."""
    payloads: dict[str, bytes] = {}
    for name, out in outs.items():
        value = out.get()
        if value is None:
            continue
        try:
            datum = BlobConverter.encode(value, expected_type=None)
        except NotImplementedError:
            raise BindingError(f"blob output {name!r} was set to a {type(value).__name__}; "
                               "set str, bytes or a file-like object") from None
        payloads[name] = datum.value.encode("utf-8") if datum.type == "string" else datum.value
    return payloads


def write_outputs(store: Any, bindings: Bindings, data: Mapping[str, Any],
                  payloads: Mapping[str, bytes]) -> None:
    """Write the outputs a function set (creating their containers, as the host does)."""
    for binding in bindings.outputs:
        if binding.name not in payloads:
            continue
        container, name = resolve_path(binding.path, data)
        store.create_container(container)
        store.upload_bytes(container, name, payloads[binding.name])


@dataclass(frozen=True)
class BlobIO:
    """The store and trigger data of one invocation (host side)."""

    store: Any
    data: Mapping[str, Any]

    def read(self, bindings: Bindings) -> dict[str, bytes | None]:
        if not bindings.inputs:
            return {}
        self._require_store()
        return read_inputs(self.store, bindings, self.data)

    def write(self, bindings: Bindings, payloads: Mapping[str, bytes]) -> None:
        if payloads:
            self._require_store()
            write_outputs(self.store, bindings, self.data, payloads)

    def _require_store(self) -> None:
        if self.store is None:
            raise BindingError("blob bindings need a blob store (LocalRuntime(blob_store=...))")
