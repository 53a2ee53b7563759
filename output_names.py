"""Where the service writes a source blob's outputs, in the output container: one rule for the
writers (activities) and for unpublish, which finds them again.

``<container>/<path without .tif/.tiff>`` is a source's *stem*: its COG is ``<stem>.tif`` with
the thumbnail ``<stem>.thumbnail.png`` beside it; a tiled source's tiles are under
``<stem>/tiles/`` (each with its thumbnail) and its mosaic is ``<stem>/mosaic.vrt``. Every output
carries the blob metadata ``rmh_source`` (``<container>/<blob>`` of its source), ``rmh_source_etag``
and ``rmh_options``: what the service wrote says so, and nothing else is ever removed.
"""
from __future__ import annotations

from pathlib import PurePosixPath

#: Blob metadata naming an output's source (``<container>/<blob>``).
SOURCE_KEY = "rmh_source"
#: Every metadata key the service writes on its outputs starts with this.
PROVENANCE_PREFIX = "rmh_"


def output_stem(container: str, blob: str) -> str:
    """``<container>/<blob without .tif/.tiff>``: what a source's output names start with."""
    path = PurePosixPath(blob)
    stem = path.with_suffix("") if path.suffix.lower() in (".tif", ".tiff") else path
    return f"{container}/{stem}"


def cog_name(container: str, blob: str, suffix: str = ".tif") -> str:
    """The deterministic output name of a source blob (``suffix=""``: its stem, the tiles' folder)."""
    return f"{output_stem(container, blob)}{suffix}"


def thumbnail_name(cog: str) -> str:
    """Where a COG's thumbnail goes: beside it, ``<name without .tif>.thumbnail.png``."""
    return f"{cog.removesuffix('.tif')}.thumbnail.png"


def mosaic_name(container: str, blob: str) -> str:
    """A tiled source's mosaic VRT, beside its tiles."""
    return f"{output_stem(container, blob)}/mosaic.vrt"


def source_ref(container: str, blob: str) -> str:
    """The ``rmh_source`` value of a source's outputs."""
    return f"{container}/{blob}"


def written_by_us(metadata: dict[str, str]) -> bool:
    """Whether blob metadata says the service wrote the blob."""
    return any(key.lower().startswith(PROVENANCE_PREFIX) for key in metadata)
