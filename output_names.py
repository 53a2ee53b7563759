"""Where the service writes a source blob's outputs, in the output container: one rule for the
writers (activities) and for unpublish, which finds them again.

``<container>/<path without .tif/.tiff>`` is a source's *stem*: its COG is ``<stem>.tif`` with
the thumbnail ``<stem>.thumbnail.png`` beside it; a tiled source's tiles are under
``<stem>/tiles/`` (each with its thumbnail) and its mosaic is ``<stem>/mosaic.vrt``. Every output
carries the blob metadata ``rmh_source`` (``<container>/<blob>`` of its source), ``rmh_source_etag``
and ``rmh_options``: what the service wrote says so, and nothing else is ever removed.
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from storage import MAX_BLOB_NAME, fit_component

#: Blob metadata naming an output's source (``<container>/<blob>``).
SOURCE_KEY = "rmh_source"
#: Every metadata key the service writes on its outputs starts with this.
PROVENANCE_PREFIX = "rmh_"


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


def mosaic_name(container: str, blob: str) -> str:
    """A tiled source's mosaic VRT, beside its tiles."""
    return f"{output_stem(container, blob)}/mosaic.vrt"


def source_ref(container: str, blob: str) -> str:
    """The ``rmh_source`` value of a source's outputs."""
    return f"{container}/{blob}"


def written_by_us(metadata: dict[str, str]) -> bool:
    """Whether blob metadata says the service wrote the blob."""
    return any(key.lower().startswith(PROVENANCE_PREFIX) for key in metadata)
