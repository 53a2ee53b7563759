"""Azure Blob Storage (or Azurite) as a blob store, through azure-storage-blob: GDAL reads
``/vsiaz/`` with the connection string or a short-lived user delegation SAS; a request storage
refuses every time is told from an outage."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cachetools

from storage_base import (BlobInfo, BlobNotFound, BlobPage, BlobStore, ContainerNotFound, DEFAULT_PAGE_SIZE, GdalPath,
                          SignedAccess, StorageAccessDenied, StorageRefused, StorageUnavailable, T, _parse_iso,
                          check_blob_name, check_container_name, decode_metadata, encode_metadata, gdal_path,
                          guess_content_type, install_log_redaction, normalize_etag, redact)

logger = logging.getLogger(__name__)


#: HTTP statuses by which storage says the request itself is wrong (bad name, metadata too large,
#: bad query): the same request gets the same answer, so it is refused at once, never ridden out
#: as an outage. 408 (timeout), 429 (throttled), 403 (a role still propagating) and 409 (a
#: container being deleted) can pass, and stay StorageUnavailable.
REFUSING_STATUS = frozenset({400, 405, 411, 413, 414, 431})
#: How long a request storage refused is refused at once when asked again (see ``_call``).
REFUSAL_MEMORY_SECONDS = 600.0
REFUSALS_KEPT = 1024


class AzureBlobStore(BlobStore):
    """Azure Blob Storage through azure-storage-blob.

    With a connection string (Azurite, or an account key) GDAL gets the connection string as
    ``AZURE_STORAGE_CONNECTION_STRING``. With an account URL the service uses
    ``DefaultAzureCredential`` (managed identity) and GDAL gets a connection string naming the
    blob endpoint and a short-lived, single-blob **user delegation SAS**: read-only for reads,
    create/write for writes. ``gdal_config`` is added to every GDAL path's configuration and
    ``client_options`` go to ``BlobServiceClient`` (both e.g. for a private CA bundle).
    """

    def __init__(self, *, connection_string: str | None = None, account_url: str | None = None,
                 credential=None, sas_ttl: dt.timedelta = dt.timedelta(hours=1),
                 gdal_config: Mapping[str, str] | None = None, temp_dir: Path | str | None = None,
                 **client_options):
        from azure.storage.blob import BlobServiceClient

        if bool(connection_string) == bool(account_url):
            raise ValueError("give exactly one of connection_string or account_url")
        self._connection_string = connection_string
        self._sas_ttl = sas_ttl
        self.temp_dir = Path(temp_dir) if temp_dir else None
        self._gdal_config = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", **(gdal_config or {})}
        install_log_redaction()
        if connection_string:
            self._client = BlobServiceClient.from_connection_string(connection_string, **client_options)
        else:
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._client = BlobServiceClient(account_url, credential=credential, **client_options)
        self._delegation_key = None
        # Refusals remembered for REFUSAL_MEMORY_SECONDS, at most REFUSALS_KEPT (the oldest make room).
        self._refusals: cachetools.TTLCache = cachetools.TTLCache(maxsize=REFUSALS_KEPT, ttl=REFUSAL_MEMORY_SECONDS,
                                                                   timer=time.monotonic)
        self._refusals_lock = threading.Lock()

    @property
    def account_name(self) -> str:
        return self._client.account_name

    def _blob(self, container: str, name: str):
        return self._client.get_blob_client(check_container_name(container), check_blob_name(name))

    @contextlib.contextmanager
    def _translate(self, container: str, name: str | None = None) -> Iterator[None]:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        try:
            yield
        except ResourceNotFoundError as err:
            code = getattr(err, "error_code", None) or ""
            if "Container" in str(code) or name is None:
                raise ContainerNotFound(f"container {container!r} does not exist") from None
            raise BlobNotFound(f"blob {container}/{name} does not exist") from None
        except AzureError as err:
            where = f"{container}/{name}" if name else container
            if getattr(err, "status_code", None) in (401, 403):
                code = getattr(err, "error_code", None) or f"HTTP {err.status_code}"
                raise StorageAccessDenied(f"blob storage refused access to {where}: {code}",
                                          answer=f"{err.status_code} {code}") from None
            message = f"blob storage failed on {where}: {type(err).__name__}: {redact(str(err))[:300]}"
            status = getattr(err, "status_code", None) if isinstance(err, HttpResponseError) else None
            if status in REFUSING_STATUS:
                raise StorageRefused(message) from None
            answer = f"{status} {getattr(err, 'error_code', None) or ''}".strip() if status else None
            raise StorageUnavailable(message, answer=answer) from None

    def _call(self, container: str, name: str | None, request: str, call: Callable[..., T]) -> T:
        """``call()`` with storage's errors translated; ``request`` names what is asked (the
        operation and its argument). A server error (5xx) is an outage, unless it is this
        request's own: when storage answers a probe of the container, the call is made once more
        without the SDK's retries, and the same answer again makes it StorageRefused, remembered
        for REFUSAL_MEMORY_SECONDS, so the request's retries (an activity's, an orchestrator's)
        are refused at once instead of riding out RMH_OUTAGE_SECONDS each."""
        key = (container, request)
        with self._refusals_lock:
            remembered = self._refusals.get(key)
        if remembered is not None:
            raise StorageRefused(remembered)
        try:
            with self._translate(container, name):
                return call()
        except StorageUnavailable as first:
            if not (first.answer or "").startswith("5") or not self._container_answers(container):
                raise
            try:
                with self._translate(container, name):
                    return call(retry_total=0)
            except StorageUnavailable as again:
                if again.answer != first.answer:
                    raise
                message = (f"storage answers {first.answer} to this request every time while it answers "
                           f"for container {container!r}: the request, not an outage ({first})")
                self._remember_refusal(key, message)
                raise StorageRefused(message) from None

    def _container_answers(self, container: str) -> bool:
        """Whether storage answers a small question about the container (once, no SDK retries)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._client.get_container_client(container).get_container_properties(retry_total=0)
        except ResourceNotFoundError:
            return True
        except AzureError:
            return False
        return True

    def _remember_refusal(self, key: tuple[str, str], message: str) -> None:
        """Keep a refusal for REFUSAL_MEMORY_SECONDS (at most REFUSALS_KEPT: the oldest make room)."""
        with self._refusals_lock:
            self._refusals[key] = message

    def create_container(self, container):
        from azure.core.exceptions import ResourceExistsError

        with self._translate(container), contextlib.suppress(ResourceExistsError):
            self._client.create_container(check_container_name(container))

    def container_exists(self, container):
        client = self._client.get_container_client(check_container_name(container))
        try:
            self._call(container, None, "container properties", client.get_container_properties)
        except ContainerNotFound:
            return False
        return True

    def list_page(self, container, prefix="", *, page_size=DEFAULT_PAGE_SIZE, continuation=None):
        client = self._client.get_container_client(check_container_name(container))

        def page(**options) -> BlobPage:
            pages = client.list_blobs(name_starts_with=prefix or None, results_per_page=page_size,
                                      **options).by_page(continuation)
            blobs = [self._to_info(props) for props in next(pages)]
            return BlobPage(blobs=blobs, continuation=pages.continuation_token or None)

        return self._call(container, None, f"list {prefix!r} from {continuation!r}", page)

    @staticmethod
    def _to_info(props) -> BlobInfo:
        settings = props.content_settings
        return BlobInfo(
            name=props.name, size=props.size, etag=normalize_etag(props.etag),
            last_modified=props.last_modified,
            content_type=settings.content_type if settings else None,
            metadata=decode_metadata(props.metadata),
        )

    @staticmethod
    def _uploaded(name: str, size: int, answer: Mapping[str, Any], settings, metadata) -> BlobInfo:
        """The uploaded blob's info from the upload's own answer (its ETag and time), not from
        one more properties request."""
        return BlobInfo(name=name, size=size, etag=normalize_etag(answer["etag"]),
                        last_modified=answer["last_modified"], content_type=settings.content_type,
                        metadata=dict(metadata or {}))

    def get_properties(self, container, name):
        blob = self._blob(container, name)
        props = self._call(container, name, f"properties of {name!r}", blob.get_blob_properties)
        props.name = name
        return self._to_info(props)

    def download_to_path(self, container, name, path):
        blob = self._blob(container, name)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rmh-tmp-", dir=path.parent)
        os.close(fd)

        def download(**options) -> None:
            with open(tmp, "wb") as handle:
                blob.download_blob(max_concurrency=4, **options).readinto(handle)

        try:
            self._call(container, name, f"download {name!r}", download)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def download_bytes(self, container, name):
        blob = self._blob(container, name)
        return self._call(container, name, f"download {name!r}", lambda **options: blob.download_blob(**options).readall())

    def read_head(self, container, name, length=512):
        from azure.core.exceptions import HttpResponseError

        blob = self._blob(container, name)

        def head(**options) -> bytes:
            try:
                return blob.download_blob(offset=0, length=length, **options).readall()
            except HttpResponseError as err:
                if err.status_code == 416:  # a range of an empty blob: there are no bytes
                    return b""
                raise

        return self._call(container, name, f"head of {name!r}", head)

    def upload_bytes(self, container, name, data, *, content_type=None, metadata=None):
        from azure.storage.blob import ContentSettings

        blob = self._blob(container, name)
        settings = ContentSettings(content_type=content_type or guess_content_type(name))
        stored = encode_metadata(metadata)
        answer = self._call(container, name, f"upload {name!r}", lambda **options: blob.upload_blob(
            data, overwrite=True, content_settings=settings, metadata=stored, **options))
        return self._uploaded(name, len(data), answer, settings, metadata)

    def upload_from_path(self, container, name, path, *, content_type=None, metadata=None):
        from azure.storage.blob import ContentSettings

        blob = self._blob(container, name)
        settings = ContentSettings(content_type=content_type or guess_content_type(name))
        stored = encode_metadata(metadata)

        def upload(**options) -> dict[str, Any]:
            with open(path, "rb") as handle:
                return blob.upload_blob(handle, overwrite=True, content_settings=settings, metadata=stored,
                                        max_concurrency=4, **options)

        answer = self._call(container, name, f"upload {name!r}", upload)
        return self._uploaded(name, os.path.getsize(path), answer, settings, metadata)

    def delete(self, container, name):
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(container, name)
        try:
            with self._translate(container, name):
                blob.delete_blob()
        except (BlobNotFound, ContainerNotFound):
            return False
        except ResourceNotFoundError:
            return False
        return True

    def url(self, container, name):
        # As BlobClient.url formats it, without building a client (twice per cataloged file).
        base = self._client.primary_endpoint.split("?", 1)[0].rstrip("/")
        return f"{base}/{quote(check_container_name(container))}/{quote(check_blob_name(name), safe='~/')}"

    def url_prefix(self) -> str:
        """What every blob URL of this account starts with (``https://<account>.blob.../``)."""
        return self._client.url.split("?", 1)[0].rstrip("/") + "/"

    def alternate_hrefs(self, container, name):
        return {"vsiaz": f"/vsiaz/{check_container_name(container)}/{check_blob_name(name)}"}

    def read_sas(self, container, name=None, *, ttl=None):
        """Read-only (no list, no write) SAS for the container, or for one blob when ``name`` is
        given: signed with a user delegation key under managed identity, with the account key
        when the store was built from a connection string (Azurite, key-based accounts)."""
        from azure.storage.blob import (BlobSasPermissions, ContainerSasPermissions,
                                        generate_blob_sas, generate_container_sas)

        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        expiry = now + (ttl or self._sas_ttl)
        signing: dict = ({"account_key": self._client.credential.account_key} if self._connection_string
                         else {"user_delegation_key": self._user_delegation_key(now)})
        common = {"account_name": self.account_name, "container_name": check_container_name(container),
                  "start": now - dt.timedelta(minutes=5), "expiry": expiry, **signing}
        with self._translate(container, name):
            if name is None:
                token = generate_container_sas(permission=ContainerSasPermissions(read=True), **common)
            else:
                token = generate_blob_sas(blob_name=check_blob_name(name),
                                          permission=BlobSasPermissions(read=True), **common)
        return SignedAccess(token=token, expiry=expiry)

    def gdal_read_path(self, container, name):
        return self._gdal_path(container, name, write=False)

    def gdal_write_path(self, container, name):
        return self._gdal_path(container, name, write=True)

    def _gdal_path(self, container: str, name: str, *, write: bool) -> GdalPath:
        path = gdal_path(f"/vsiaz/{check_container_name(container)}/{check_blob_name(name)}").path
        # GDAL keeps what it read of /vsiaz/ files across opens in a process-wide cache; a blob
        # rewritten since (same name, new ETag) would be read stale, so reads are not cached.
        config = {"CPL_VSIL_CURL_NON_CACHED": f"/vsiaz/{container}/", **self._gdal_config}
        if write:
            config["CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE"] = "YES"
        if self._connection_string:
            config["AZURE_STORAGE_CONNECTION_STRING"] = self._connection_string
        else:
            sas = self.user_delegation_sas(container, name, write=write)
            endpoint = self._client.primary_endpoint.rstrip("/")
            config["AZURE_STORAGE_CONNECTION_STRING"] = (
                f"BlobEndpoint={endpoint};SharedAccessSignature={sas}"
            )
        return GdalPath(path, config)

    def user_delegation_sas(self, container: str, name: str, *, write: bool = False) -> str:
        """A SAS for one blob, signed with a user delegation key: read-only unless ``write``."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = dt.datetime.now(dt.timezone.utc)
        key = self._user_delegation_key(now)
        permission = BlobSasPermissions(read=True, create=write, write=write)
        with self._translate(container, name):
            return generate_blob_sas(
                account_name=self.account_name, container_name=container, blob_name=name,
                user_delegation_key=key, permission=permission,
                start=now - dt.timedelta(minutes=5), expiry=now + self._sas_ttl,
            )

    def _user_delegation_key(self, now: dt.datetime):
        key = self._delegation_key
        expiry = _parse_iso(key.signed_expiry) if key is not None else None
        if expiry is None or expiry - now < self._sas_ttl + dt.timedelta(minutes=10):
            with self._translate("(account)"):
                key = self._client.get_user_delegation_key(
                    key_start_time=now - dt.timedelta(minutes=5),
                    key_expiry_time=now + self._sas_ttl + dt.timedelta(hours=1),
                )
            self._delegation_key = key
        return key
