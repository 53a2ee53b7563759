"""Where the service writes what it writes, and the metadata that says it did: one rule for the
writers (activities) and for unpublish, which finds a source's outputs again.

``<container>/<path without .tif/.tiff>`` is a source's *stem*: its COG is ``<stem>.tif`` with
the thumbnail ``<stem>.thumbnail.png`` beside it; a tiled source's tiles are under
``<stem>/tiles/`` (each with its thumbnail) and its mosaic is ``<stem>/mosaic.vrt``. Every output
carries the blob metadata ``rmh_source`` (``<container>/<blob>`` of its source), ``rmh_source_etag``
and ``rmh_options``: what the service wrote says so, and nothing else is ever removed.

The service's own state goes to the system container: inventories (``inventories/``), the chunk
blobs of job plans (``plans/<plan id>/``, ``imports/<plan id>/``) and copies of fetched assets
(``imports/remote/``).
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from storage import MAX_BLOB_NAME, fit_component

#: Blob metadata naming an output's source (``<container>/<blob>``).
SOURCE_KEY = "rmh_source"
#: Blob metadata: the ETag of the source an output was made from, and the digest of the options.
SOURCE_ETAG_KEY = "rmh_source_etag"
OPTIONS_KEY = "rmh_options"
#: Blob metadata of a fetched asset's copy: the SHA-256 of its bytes.
SHA256_KEY = "rmh_sha256"
#: Every metadata key the service writes on its outputs starts with this.
PROVENANCE_PREFIX = "rmh_"
#: Items (sync, conversion), groups (unpublish) per chunk blob of a plan unless a request says
#: otherwise: a chunk replays O(its size) per episode, so 100 keeps replays small (``make
#: bench-sync`` measures 100 / 500 / 1,000); RMH_SYNC_CHUNK_SIZE for the timer's syncs.
CHUNK_SIZE = 100


#: Characters an output name leaves for what follows its stem: ``/tiles/tile_r0000_c0000`` and
#: ``.thumbnail.png`` (a tile's thumbnail), ``/mosaic.vrt``.
OUTPUT_TAIL = 40
#: Most bytes of UTF-8 in an output name: with its container, or a local storage directory,
#: its GDAL path stays within storage.GDAL_PATH_BYTES.
OUTPUT_NAME_BYTES = 1400


def output_stem(container: str, blob: str) -> str:
    """``<container>/<blob without .tif/.tiff>``: what a source's output names start with. Every
    output name made from it fits a blob name (1,024 characters) and a GDAL path
    (OUTPUT_NAME_BYTES): a longer stem keeps its head and a hash of the whole, so the same source
    always gives the same stem, and distinct sources distinct stems."""
    path = PurePosixPath(blob)
    stem = f"{container}/{path.with_suffix('') if path.suffix.lower() in ('.tif', '.tiff') else path}"
    if len(stem) + OUTPUT_TAIL > MAX_BLOB_NAME or len(stem.encode("utf-8")) + OUTPUT_TAIL > OUTPUT_NAME_BYTES:
        digest = hashlib.sha256(stem.encode("utf-8")).hexdigest()[:32]
        head = stem[:MAX_BLOB_NAME - OUTPUT_TAIL - len(digest) - 1].encode("utf-8")
        stem = f"{head[:OUTPUT_NAME_BYTES - OUTPUT_TAIL - len(digest) - 1].decode('utf-8', 'ignore')}~{digest}"
    return stem


def cog_name(container: str, blob: str, suffix: str = ".tif") -> str:
    """The deterministic output name of a source blob (``suffix=""``: its stem, the tiles' folder),
    its last segment within 255 bytes (``storage.fit_component``)."""
    parent, _, last = output_stem(container, blob).rpartition("/")
    return f"{parent}/{fit_component(last, suffix)}"


def thumbnail_name(cog: str) -> str:
    """Where a COG's thumbnail goes: beside it, ``<name without .tif>.thumbnail.png`` (its last
    segment within 255 bytes, as ``cog_name`` keeps it)."""
    parent, _, last = cog.removesuffix(".tif").rpartition("/")
    return f"{parent + '/' if parent else ''}{fit_component(last, '.thumbnail.png')}"


def tiled_folder(container: str, blob: str) -> str:
    """The folder a tiled conversion writes (its tiles under ``tiles/``, its ``mosaic.vrt``): the
    stem with its last segment fitted as ``cog_name`` fits it."""
    return cog_name(container, blob, suffix="")


def tiled_mosaic_name(container: str, blob: str) -> str:
    """The mosaic VRT a tiled conversion writes, in its folder beside ``tiles/``."""
    return f"{tiled_folder(container, blob)}/mosaic.vrt"


def provenance(source: str, source_etag: str, options: str | None = None) -> dict[str, str]:
    """The metadata of an output: its source (``container/blob``), the source's ETag and the digest
    of the options it was made with (what ``is_current`` compares)."""
    return {SOURCE_KEY: source, SOURCE_ETAG_KEY: source_etag or "",
            **({OPTIONS_KEY: options} if options is not None else {})}


def is_current(metadata: dict[str, str], source_etag: str, options: str) -> bool:
    """Whether an output's metadata says it was made from this source ETag with these options."""
    return metadata.get(SOURCE_ETAG_KEY) == source_etag and metadata.get(OPTIONS_KEY) == options


def inventory_name(container: str, prefix_digest: str) -> str:
    """A container's inventory (``list_container``), in the system container."""
    return f"inventories/{container}/{prefix_digest}.json"


def plan_chunk_name(plan_id: str, index: int, kind: str = "chunk", folder: str = "plans") -> str:
    """Chunk ``index`` of a plan, in the system container: ``plans/<plan id>/chunk-00000.json``
    (``unpublish-00000.json`` for unpublish's groups; ``imports/<plan id>/`` for an import)."""
    return f"{folder}/{plan_id}/{kind}-{index:05d}.json"


def fetched_asset_name(key_digest: str, leaf: str) -> str:
    """The copy of an asset an import fetched from an allow-listed host, in the system container."""
    return f"imports/remote/{key_digest}/{leaf}"


def source_ref(container: str, blob: str) -> str:
    """The ``rmh_source`` value of a source's outputs."""
    return f"{container}/{blob}"


def written_by_us(metadata: dict[str, str]) -> bool:
    """Whether blob metadata says the service wrote the blob."""
    return any(key.lower().startswith(PROVENANCE_PREFIX) for key in metadata)


def digest(text: str, length: int = 16) -> str:
    """A short SHA-256 of ``text``, the hex that names an output after what it was made of."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]
