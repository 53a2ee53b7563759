"""A job's plan as chunk blobs in the system container, so a plan of any size reaches its chunk
sub-orchestrations without passing through history (``output_names.plan_chunk_name``)."""
from __future__ import annotations

import json
from typing import Sequence

from pydantic import BaseModel

from models import ChunkRef
from output_names import plan_chunk_name
from storage import BlobStore


def write_chunks(store: BlobStore, system: str, plan_id: str, size: int, records: Sequence[BaseModel], *,
                 kind: str = "chunk", folder: str = "plans") -> list[ChunkRef]:
    """``records`` as JSON chunk blobs of ``size`` each; their references, in order."""
    store.create_container(system)
    return [write_chunk(store, system, plan_chunk_name(plan_id, index // size, kind, folder),
                        records[index:index + size]) for index in range(0, len(records), size)]


def write_chunk(store: BlobStore, system: str, name: str, records: Sequence[BaseModel]) -> ChunkRef:
    body = json.dumps([r.model_dump(mode="json") for r in records]).encode()
    store.upload_bytes(system, name, body, content_type="application/json")
    return ChunkRef(container=system, blob=name, count=len(records))


def read_chunk(store: BlobStore, chunk: ChunkRef) -> list:
    """The records of one chunk blob, as JSON."""
    return json.loads(store.download_bytes(chunk.container, chunk.blob))
