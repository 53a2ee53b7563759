"""Embedded Durable runtime: blob input and output bindings, as the Functions host serves them.

The host does the binding I/O, not the function: before an invocation it resolves each blob
binding's path (binding expressions from the trigger's data), reads the input blobs, and after it
writes what the function set on its ``func.Out`` outputs. So a function running in a worker
process receives bytes and hands bytes back, as the Python worker does over gRPC.

**Which account.** A binding's ``connection`` names it, resolved from the app settings as the
host's storage extension resolves it (``BlobConnections``, once, at start-up): the setting
``AzureWebJobs<name>`` if there is one, else ``<name>`` (no connection means ``Storage``, so
``AzureWebJobsStorage``; ``%NAME%`` first reads the connection name from setting ``NAME``).

- A setting with a value is a connection string; ``UseDevelopmentStorage=true`` is Azurite's
  defaults (``http://127.0.0.1:10000/devstoreaccount1``, the host of
  ``DevelopmentStorageProxyUri`` when given).
- Otherwise its properties (``<name>__<property>``) make an identity-based connection: the
  endpoint from ``blobServiceUri``, else ``accountName``
  (``https://<account>.blob.core.windows.net``), else ``serviceUri``; the token credential is
  ``LocalRuntime(credential=...)`` when given, else built as the host builds it: ``credential``
  ``managedidentity`` (with ``clientId`` or ``managedIdentityResourceId``), ``workloadidentity``,
  ``tenantId`` + ``clientId`` + ``clientSecret``, else ``DefaultAzureCredential``
  (``clientId`` as its managed identity).
- No such setting: ``MissingConnection`` at start-up, naming the function, the binding and the
  settings looked for (the host reports such a function in error and does not run it).

Setting names match case-insensitively and ``__`` or ``:`` separates a connection from its
properties, as in the host's configuration; the runtime's app settings (``LocalRuntime(
settings=...)``; ``serve``: local.settings.json ``Values``) come first, then the environment.

Binding expressions: ``{name}`` and dotted ``{data.blob}`` paths into the trigger's binding data
(case-insensitive), ``{rand-guid}`` and ``{DateTime}``. Binding data by trigger: activity
``instanceId``, the input parameter's name and ``data`` (the input); HTTP route parameters, query
parameters and the top-level properties of a JSON object body; Event Grid the event's fields
(``subject``, ``data``, ...).

``default_blob_store`` is the app's own store (its ``RMH_STORAGE_*`` settings), which the Event
Grid emulation watches unless ``LocalRuntime(blob_store=...)`` names another; bindings never use
it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import urlsplit

from azure.functions.blob import BlobConverter
from azure.functions.meta import Datum
import azure.functions as func

from local_functions import BlobBinding, Bindings

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


class BindingError(Exception):
    """A binding's path cannot be resolved, or its blob cannot be read or written."""


class MissingConnection(BindingError):
    """A blob binding's connection names no app setting (neither a connection string nor the
    properties of an identity-based connection)."""


class InvalidConnection(BindingError):
    """A blob binding's connection setting exists but describes no storage account."""


WEBJOBS_PREFIX = "AzureWebJobs"
DEFAULT_CONNECTION = "Storage"
PUBLIC_BLOB_SUFFIX = "blob.core.windows.net"
# Azurite's well-known development account (public, documented by Microsoft).
DEVELOPMENT_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                   "KBHBeksoGMGw==")
DEVELOPMENT_BLOB_PORT = 10000


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


class AppSettings:
    """App settings as the host's configuration sees them: names case-insensitive, ``__`` or ``:``
    between a section and its properties; ``settings`` over the environment."""

    def __init__(self, settings: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = {}
        for source in (os.environ if environ is None else environ, settings or {}):
            for key, value in source.items():
                self._values[key.replace(":", "__").lower()] = str(value)

    def value(self, name: str) -> str | None:
        """The setting's value, None when unset or empty."""
        return self._values.get(name.lower()) or None

    def section(self, name: str) -> dict[str, str]:
        """The non-empty properties ``name__<property>``, by lower-cased property name."""
        prefix = name.lower() + "__"
        return {key[len(prefix):]: value for key, value in self._values.items()
                if key.startswith(prefix) and value}


@dataclass(frozen=True)
class Connection:
    """Where one connection leads: a connection string, or an endpoint with identity settings.
    ``setting`` is the name it was found under (never the secret)."""

    setting: str
    connection_string: str | None = None
    account_url: str | None = None
    identity: Mapping[str, str] = field(default_factory=dict)


def connection_name(connection: str, settings: AppSettings) -> str:
    """The connection name a binding means: ``Storage`` for none, ``%NAME%`` read from NAME."""
    name = (connection or "").strip() or DEFAULT_CONNECTION
    match = re.fullmatch(r"%([^%]+)%", name)
    if match:
        named = settings.value(match.group(1))
        if not named:
            raise MissingConnection(f"connection {name}: app setting {match.group(1)!r} "
                                    "(which names the connection) is not set")
        name = named.strip()
    return name


def resolve_connection(connection: str, settings: AppSettings) -> Connection:
    """The account ``connection`` names, as the host's storage extension resolves it."""
    name = connection_name(connection, settings)
    for setting in (WEBJOBS_PREFIX + name, name):
        value = settings.value(setting)
        if value:
            return Connection(setting, connection_string=development_storage(value))
        properties = settings.section(setting)
        if properties:
            account = properties.get("accountname")
            url = (properties.get("blobserviceuri")
                   or (f"https://{account}.{PUBLIC_BLOB_SUFFIX}" if account else None)
                   or properties.get("serviceuri"))
            if not url:
                raise InvalidConnection(
                    f"connection {setting!r} has properties ({', '.join(sorted(properties))}) "
                    f"but no endpoint: set {setting}__blobServiceUri, {setting}__serviceUri or "
                    f"{setting}__accountName, or {setting} to a connection string")
            return Connection(setting, account_url=url.rstrip("/"), identity=properties)
    also = "" if name.startswith(WEBJOBS_PREFIX) else f" ({WEBJOBS_PREFIX + name} is read first)"
    raise MissingConnection(
        f"storage account connection {name!r} is not defined: set the app setting {name} to a "
        f"connection string (UseDevelopmentStorage=true for Azurite), or {name}__blobServiceUri, "
        f"{name}__serviceUri or {name}__accountName for an identity-based connection{also}")


def development_storage(connection_string: str) -> str:
    """``UseDevelopmentStorage=true[;DevelopmentStorageProxyUri=...]`` as Azurite's connection
    string, as the .NET storage SDK expands it; any other connection string unchanged."""
    parts = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    options = {key.strip().lower(): value.strip() for key, value in parts.items()}
    if options.get("usedevelopmentstorage", "").lower() != "true":
        return connection_string
    proxy = urlsplit(options.get("developmentstorageproxyuri") or "http://127.0.0.1")
    scheme, host = proxy.scheme or "http", proxy.hostname or "127.0.0.1"
    endpoint = f"{scheme}://{host}:{DEVELOPMENT_BLOB_PORT}/{DEVELOPMENT_ACCOUNT}"
    return (f"DefaultEndpointsProtocol={scheme};AccountName={DEVELOPMENT_ACCOUNT};"
            f"AccountKey={DEVELOPMENT_KEY};BlobEndpoint={endpoint};")


def identity_credential(connection: Connection) -> Any:
    """The token credential the host builds from a connection's identity properties."""
    from azure import identity

    props = connection.identity
    kind = props.get("credential", "").lower()
    client_id, tenant_id = props.get("clientid"), props.get("tenantid")
    resource_id = props.get("managedidentityresourceid")
    if kind == "managedidentity":
        if client_id and resource_id:
            raise InvalidConnection(f"connection {connection.setting!r}: give clientId or "
                                    "managedIdentityResourceId, not both")
        if resource_id:
            return identity.ManagedIdentityCredential(identity_config={"resource_id": resource_id})
        return identity.ManagedIdentityCredential(client_id=client_id)
    if kind == "workloadidentity":
        try:
            return identity.WorkloadIdentityCredential(
                tenant_id=tenant_id, client_id=client_id,
                token_file_path=props.get("tokenfilepath"))
        except ValueError as err:
            raise InvalidConnection(f"connection {connection.setting!r}: workload identity needs "
                                    f"tenantId, clientId and tokenFilePath ({err})") from None
    if tenant_id and client_id and props.get("clientsecret"):
        return identity.ClientSecretCredential(tenant_id, client_id, props["clientsecret"])
    if tenant_id and client_id and props.get("clientcertificate"):
        raise InvalidConnection(f"connection {connection.setting!r}: clientCertificate names a "
                                "certificate store thumbprint, which only a Windows host has")
    return identity.DefaultAzureCredential(managed_identity_client_id=client_id)


class BlobConnections:
    """The storage account of each blob binding, resolved from the app settings once (``check``,
    at start-up) and then one ``storage.AzureBlobStore`` per connection name.

    ``credential``: the token credential of identity-based connections (default: what each
    connection's settings say, as the host builds it)."""

    def __init__(self, settings: Mapping[str, str] | None = None, credential: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = AppSettings(settings, environ)
        self.credential = credential
        self._stores: dict[str, Any] = {}

    def check(self, bindings: Iterable[tuple[str, BlobBinding]]) -> None:
        """Open the account of every (function name, binding); MissingConnection /
        InvalidConnection (the first kind met) naming each function and binding that cannot be
        served, grouped by what is wrong with their connection."""
        failed: dict[str, tuple[type[BindingError], list[str]]] = {}
        for function, binding in bindings:
            try:
                self.store(binding.connection)
            except BindingError as err:
                kind, users = failed.setdefault(str(err), (type(err), []))
                users.append(f"function {function!r} (blob binding {binding.name!r})")
        if failed:
            kind = next(iter(failed.values()))[0]
            raise kind("; ".join(f"{', '.join(users)}: {problem}"
                                 for problem, (_, users) in failed.items()))

    def store(self, connection: str) -> Any:
        """The blob store of ``connection`` (opened on first use)."""
        store = self._stores.get(connection)
        if store is None:
            store = self._stores[connection] = self._open(resolve_connection(connection,
                                                                              self.settings))
        return store

    def _open(self, connection: Connection) -> Any:
        from storage import AzureBlobStore

        if connection.connection_string:
            try:
                return AzureBlobStore(connection_string=connection.connection_string)
            except ValueError as err:
                raise InvalidConnection(f"app setting {connection.setting!r} is not a storage "
                                        f"connection string ({err})") from None
        credential = self.credential or identity_credential(connection)
        try:
            return AzureBlobStore(account_url=connection.account_url, credential=credential)
        except ValueError as err:
            raise InvalidConnection(f"connection {connection.setting!r}: endpoint "
                                    f"{connection.account_url!r} is not usable ({err})") from None


def read_inputs(connections: BlobConnections, bindings: Bindings, data: Mapping[str, Any]
                ) -> dict[str, bytes | None]:
    """Each input binding's blob content (None for a missing blob, as the host passes null)."""
    from storage import BlobNotFound, ContainerNotFound

    contents: dict[str, bytes | None] = {}
    for binding in bindings.inputs:
        container, name = resolve_path(binding.path, data)
        try:
            contents[binding.name] = connections.store(binding.connection).download_bytes(
                container, name)
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


def write_outputs(connections: BlobConnections, bindings: Bindings, data: Mapping[str, Any],
                  payloads: Mapping[str, bytes]) -> None:
    """Write the outputs a function set (creating their containers, as the host does)."""
    for binding in bindings.outputs:
        if binding.name not in payloads:
            continue
        container, name = resolve_path(binding.path, data)
        store = connections.store(binding.connection)
        store.create_container(container)
        store.upload_bytes(container, name, payloads[binding.name])


@dataclass(frozen=True)
class BlobIO:
    """The storage connections and trigger data of one invocation (host side)."""

    connections: BlobConnections | None
    data: Mapping[str, Any]

    def read(self, bindings: Bindings) -> dict[str, bytes | None]:
        if not bindings.inputs:
            return {}
        return read_inputs(self._connections(), bindings, self.data)

    def write(self, bindings: Bindings, payloads: Mapping[str, bytes]) -> None:
        if payloads:
            write_outputs(self._connections(), bindings, self.data, payloads)

    def _connections(self) -> BlobConnections:
        if self.connections is None:
            raise BindingError("blob bindings need the runtime's storage connections")
        return self.connections
