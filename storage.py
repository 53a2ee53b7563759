"""Blob containers behind one interface: Azure Blob Storage, or a local directory (embedded default).

Both implementations check container and blob names against Azure's rules before any call, so a
bad name fails the same way everywhere, and both hand GDAL a path it can read without a download
(``/vsiaz/`` for Azure, the file itself for a local directory) plus the GDAL configuration needed.
Secrets (account keys, SAS signatures) never appear in logs or error messages.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Protocol

from azure_store import REFUSAL_MEMORY_SECONDS, REFUSALS_KEPT, REFUSING_STATUS, AzureBlobStore  # noqa: F401
from dir_store import LocalDirStore, atomic_copy, atomic_write_text, check_local_name, local_refusals  # noqa: F401
from storage_base import (BlobInfo, BlobNotFound, BlobPage, BlobStore, ContainerNotFound, DEFAULT_PAGE_SIZE,
                          GDAL_PATH_BYTES, GdalPath, GdalPathTooLong, InvalidBlobName, InvalidContainerName,
                          MAX_BLOB_NAME, MAX_COMPONENT_BYTES, RedactSecrets, SignedAccess, SigningUnsupported,
                          StorageAccessDenied, StorageError, StorageRefused, StorageUnavailable, _parse_iso,
                          check_blob_name, check_container_name, component_bytes, decode_metadata, decode_metadata_value,
                          encode_metadata, encode_metadata_value, fit_component, gdal_path, guess_content_type,
                          install_log_redaction, normalize_etag, redact)  # noqa: F401


class StoreSettings(Protocol):
    """What ``store_from_settings`` reads of ``settings.Settings``: named here, so that storage
    does not import settings (which imports storage's name checks)."""

    storage_backend: str  # settings.StorageBackend, a str enum: "local" or "azure"
    storage_local_dir: Path
    storage_connection_string: Any  # SecretStr | None
    storage_account_url: str | None
    sas_ttl_minutes: int
    work_dir: Path


def store_from_settings(settings: StoreSettings) -> BlobStore:
    """The blob store the settings describe."""
    if settings.storage_backend == "local":
        return LocalDirStore(settings.storage_local_dir, temp_dir=settings.work_dir)
    secret = settings.storage_connection_string
    return AzureBlobStore(
        connection_string=secret.get_secret_value() if secret else None,
        account_url=settings.storage_account_url,
        sas_ttl=dt.timedelta(minutes=settings.sas_ttl_minutes),
        temp_dir=settings.work_dir,
    )
