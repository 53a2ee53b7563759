"""The work of the jobs on multidimensional files and Zarr stores, which the activities of
``cube_activities.py`` adapt to the Durable boundary.

- Listing: which listed blobs are cube files and which prefixes are Zarr stores (a store is one
  source: its name the prefix, its ETag a digest of its blobs' names and ETags).
- Cataloging in place (``sync_container``, ``catalog_file``, events without conversion): the
  whole-file item, with the datacube fields and the source asset, no COG written.
- Converting (``cog_conversion``, converting events): ``inspect`` plans the slice groups and
  writes the plan as blobs; ``convert_group`` writes one group's COGs and its time steps' items;
  ``finish`` keeps the file's outputs (removing what an earlier version left that this one did
  not write) or, when a group failed, removes every output and item of the file, so a file
  reported failed leaves nothing behind.

Storage, the catalog, limits and GDAL options come in a ``Services``; nothing here reads the
settings or the environment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ContextManager

from pydantic import BaseModel

import cubes
import geo_ops
import stac_ops
from models import BlobRef, CogOptions, ConvertTask, FileRef, TaskOutcome
from raster_names import is_cube_name, is_raster_name, is_zarr_store_name
from storage import BlobInfo, BlobNotFound, BlobStore, ContainerNotFound

#: The blob beside a converted cube's outputs that says they are complete for a source ETag and
#: options (no variable directory can be named so: names start with a letter, digit or ``_``).
MARKER = ".rmh-cube.json"
#: An output of a cube relative to its prefix: ``<variable>/<slice>.tif`` and its thumbnail.
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*/[A-Za-z0-9_][A-Za-z0-9_.\-]*(\.tif|\.thumbnail\.png)$")


@dataclasses.dataclass(frozen=True)
class Services:
    """What a cube task works with: storage, the catalog, the worker's cache directory, the
    limits, GDAL options for an access configuration, public hrefs and item ids."""

    store: BlobStore
    catalog: Any
    cache_dir: Path
    staging_dir: Callable[[], ContextManager[str]]
    system_container: str
    max_bytes: int
    max_slices: int
    max_pixels_per_task: int
    slices_per_task: int
    gdal_config: Callable[[Mapping[str, str] | None], dict[str, Any]]
    hrefs: Callable[[str, str], tuple[str, dict[str, str]]]
    item_id: Callable[[str, str, str | None], str]


# -- models crossing the Durable boundary ---------------------------------------------------------

class CubeTask(BaseModel):
    """Input of ``inspect_cube``: the file's conversion task and where its plan goes."""

    task: ConvertTask
    plan_id: str


class CubeGroupRef(BaseModel):
    """One slice group of a plan, as the orchestrator fans it out."""

    index: int
    label: str
    slices: int


class CubePlan(BaseModel):
    """``inspect_cube``'s answer: the plan blob and its groups, or the file's outcome when it is
    not converted (refused by name, or current: skipped)."""

    outcome: TaskOutcome | None = None
    plan: BlobRef | None = None
    groups: list[CubeGroupRef] = []
    variables: list[str] = []
    slices: int = 0
    steps: int = 0
    skipped_variables: list[geo_ops.Issue] = []
    warnings: list[geo_ops.Issue] = []


class CubeGroupTask(BaseModel):
    """Input of ``convert_cube_group``: one group of a plan."""

    task: ConvertTask
    plan: BlobRef
    group: int
    label: str


class CubeFinishTask(BaseModel):
    """Input of ``finish_cube``: keep the file's outputs (every group written) or remove them."""

    task: ConvertTask
    plan: BlobRef
    keep: bool


class CubeFinished(BaseModel):
    kept: bool
    outputs: int
    items: int
    removed_outputs: int
    removed_items: int


# -- listing ------------------------------------------------------------------------------------

def form_of_name(name: str) -> str | None:
    """``cube`` (a multidimensional file's suffix), ``raster``, ``zarr`` (a store's prefix as
    events name it), or None."""
    if is_cube_name(name):
        return "cube"
    if is_raster_name(name):
        return "raster"
    return "zarr" if is_zarr_store_name(name) else None


def store_etag(members: Iterable[tuple[str, str]]) -> str:
    """A Zarr store's version: a digest of its blobs' (relative name, ETag) pairs."""
    digest = hashlib.sha256()
    for name, etag in sorted(members):
        digest.update(f"{name}\n{etag}\n".encode())
    return f"zarr-{digest.hexdigest()[:32]}"


def _store_ref(root: str, members: list[BlobInfo]) -> FileRef:
    start = len(root) + 1
    return FileRef(name=root, etag=store_etag((m.name[start:], m.etag) for m in members),
                   size=sum(m.size for m in members), last_modified=max(m.last_modified for m in members),
                   form="zarr")


def listed_sources(blobs: Iterable[BlobInfo]) -> tuple[list[FileRef], list[str]]:
    """The sources a listing holds, in name order: each raster and cube file, and each Zarr store
    (found by its marker blobs, one source for all its blobs); and the names that are none
    (a store at the container's root has no name of its own: its blobs are among them)."""
    blobs = list(blobs)
    roots = {r for r in cubes.zarr_store_roots([b.name for b in blobs]) if r}
    members: dict[str, list[BlobInfo]] = {r: [] for r in roots}
    sources, ignored = [], []
    for blob in blobs:
        parts = blob.name.split("/")
        root = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in roots), None)
        if root is not None:
            members[root].append(blob)
            continue
        form = "cube" if is_cube_name(blob.name) else "raster" if is_raster_name(blob.name) else None
        if form is None:
            ignored.append(blob.name)
        else:
            sources.append(FileRef(name=blob.name, etag=blob.etag, size=blob.size,
                                   last_modified=blob.last_modified, form=form))
    sources += [_store_ref(root, found) for root, found in members.items()]
    return sorted(sources, key=lambda f: f.name), ignored


def describe_store(store: BlobStore, container: str, name: str) -> FileRef | None:
    """The Zarr store at prefix ``name`` (a marker blob at its root), or None."""
    root = name.rstrip("/")
    try:
        found = list(store.iter_blobs(container, root + "/"))
    except ContainerNotFound:
        return None
    if not root or not any(b.name[len(root) + 1:] in cubes.ZARR_MARKERS for b in found):
        return None
    return _store_ref(root, found)


# -- staging ------------------------------------------------------------------------------------

def stage_source(store: BlobStore, container: str, file: FileRef, cache_dir: Path, max_bytes: int) -> Path:
    """The source as a local file (or directory, for a store) under ``cache_dir``, downloaded
    once per host and version; ``SourceChanged`` when it is no longer the listed version."""
    where = f"{container}/{file.name}"
    key = cubes.source_key(container, file.name, file.etag)
    if file.form == "zarr":
        prefix = f"{file.name}/"
        found = list(store.iter_blobs(container, prefix))
        current = store_etag((b.name[len(prefix):], b.etag) for b in found)
        if not found or current != file.etag:
            raise cubes.SourceChanged(where, "the store's blobs changed since it was listed")
        return cubes.stage_store(cache_dir, key, [(b.name[len(prefix):], b.size) for b in found],
                                 max_bytes=max_bytes,
                                 download=lambda name, path: store.download_to_path(container, prefix + name, path))
    props = store.get_properties(container, file.name)
    if file.etag and props.etag != file.etag:
        raise cubes.SourceChanged(where, "the file changed since it was listed")
    return cubes.stage_file(cache_dir, key, size=props.size, max_bytes=max_bytes,
                            download=lambda path: store.download_to_path(container, file.name, path))


def release(cache_dir: Path, container: str, file: FileRef) -> None:
    """Remove this host's copy of a source (other hosts' copies age out with the staging sweep)."""
    shutil.rmtree(cache_dir / f"rmh-cube-{cubes.source_key(container, file.name, file.etag)}", ignore_errors=True)


@contextlib.contextmanager
def named_as(local: Path, where: str) -> Iterator[None]:
    """Errors of the cube engine about the staged copy ``local`` name the source (``where``,
    ``container/blob``) instead: the staged path is the worker's, not the user's."""
    try:
        yield
    except geo_ops.GeoOpsError as err:
        for path in {str(local), str(local.resolve())}:
            err.reason = err.reason.replace(f"{path}/", "").replace(path, where)
        err.path = where
        raise


# -- ids, names, options ------------------------------------------------------------------------

def output_prefix(container: str, name: str) -> str:
    """Where a cube's COGs go in the output container: ``<container>/<file or store name>``."""
    return f"{container}/{name}"


def slice_item_id(cube_id: str, step: int | None) -> str:
    """The id of a time step's item: the file's item id and ``~t<step>`` (``~static`` without
    time), the file's id shortened with a digest when the whole would pass 256 characters."""
    suffix = "~static" if step is None else f"~t{step:05d}"
    if len(cube_id) + len(suffix) > stac_ops.MAX_ID_LENGTH:
        digest = hashlib.sha256(cube_id.encode()).hexdigest()[:10]
        cube_id = f"{cube_id[:stac_ops.MAX_ID_LENGTH - len(suffix) - 11]}-{digest}"
    return cube_id + suffix


def is_slice_item_of(cube_id: str, item_id: str) -> bool:
    base = slice_item_id(cube_id, None).removesuffix("~static")
    return re.fullmatch(re.escape(base) + r"~(t\d{5,}|static)", item_id) is not None


def check_options(where: str, options: CogOptions) -> None:
    """Refuse options that would change a cube's values (``LossyOption``)."""
    if options.profile not in geo_ops.LOSSLESS_PROFILES:
        raise cubes.LossyOption(where, f"profile {options.profile!r} is lossy; cubes are converted with "
                                f"lossless profiles only ({', '.join(sorted(geo_ops.LOSSLESS_PROFILES))})")
    if options.max_z_error:
        raise cubes.LossyOption(where, f"max_z_error {options.max_z_error} lets LERC change values; "
                                "cubes are converted losslessly (leave it unset)")
    if options.target_crs:
        raise cubes.LossyOption(where, "a reprojection resamples the values; cubes keep their grid "
                                "(convert them without target_crs)")


def _properties(container: str, file: FileRef, when_source: str, title: str) -> dict[str, Any]:
    return {stac_ops.SOURCE_CONTAINER: container, stac_ops.SOURCE_BLOB: file.name,
            stac_ops.SOURCE_ETAG: file.etag, stac_ops.DATETIME_SOURCE: when_source, "title": title}


# -- cataloging in place ------------------------------------------------------------------------

def catalog_in_place(services: Services, task: ConvertTask) -> dict[str, Any]:
    """The whole-file item of a cube cataloged where it lies: footprint, time range, the full
    datacube description and the source asset (nothing is written to storage). Staged in a
    directory of its own, removed afterwards: no later task of this job reads it again."""
    file, container = task.file, task.container
    with services.staging_dir() as tmp:
        local = stage_source(services.store, container, file, Path(tmp), services.max_bytes)
        with named_as(local, f"{container}/{file.name}"):
            facts = cubes.open_cube(local, gdal_config=services.gdal_config(None))
    href, alternates = services.hrefs(container, file.name)
    dated = facts.time_dimension is not None
    props = _properties(container, file, "request" if task.datetime else "file-metadata" if dated
                        else "blob-last-modified", file.name)
    item = cubes.cube_item(facts, item_id=services.item_id(container, file.name, None),
                           collection_id=task.collection, source_href=href, source_size=file.size,
                           fallback_datetime=file.last_modified, source_alternates=alternates, properties=props)
    if task.datetime:
        item["properties"]["datetime"] = stac_ops.as_utc(task.datetime).isoformat().replace("+00:00", "Z")
    return item


# -- converting: the plan -----------------------------------------------------------------------

def _plan_blob(plan_id: str, name: str) -> str:
    return f"plans/{plan_id}/{name}"


def _marker(services: Services, task: ConvertTask) -> dict[str, Any] | None:
    """The completion marker of the file's outputs, when it is current (same source ETag and
    options digest): its body; else None."""
    name = f"{output_prefix(task.container, task.file.name)}/{MARKER}"
    try:
        meta = services.store.get_properties(task.output_container, name).metadata
        if meta.get("rmh_source_etag") != task.file.etag or meta.get("rmh_options") != options_digest(task.options):
            return None
        return json.loads(services.store.download_bytes(task.output_container, name))
    except (BlobNotFound, ContainerNotFound, ValueError):
        return None


def options_digest(options: CogOptions) -> str:
    """The digest of the options a conversion's outputs carry (as the raster path's)."""
    return hashlib.sha256(json.dumps(options.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _is_current(services: Services, task: ConvertTask, name: str) -> bool:
    try:
        meta = services.store.get_properties(task.output_container, name).metadata
    except (BlobNotFound, ContainerNotFound):
        return False
    return meta.get("rmh_source_etag") == task.file.etag and meta.get("rmh_options") == options_digest(task.options)


def _items_present(services: Services, task: ConvertTask, ids: list[str]) -> bool:
    return not task.catalog or (bool(ids) and all(
        services.catalog.get_item(task.collection, i) is not None for i in {ids[0], ids[-1]}))


def inspect(services: Services, request: CubeTask) -> CubePlan:
    """Check the options, skip a file whose outputs are current, else stage and describe it and
    plan its slice groups, written as blobs in the system container (``plans/<plan id>/``: the
    facts, the outputs and item ids, and one blob per group) so no plan passes through history."""
    task, file = request.task, request.task.file
    check_options(f"{task.container}/{file.name}", task.options)
    done = _marker(services, task)
    if done is not None and _items_present(services, task, done.get("items", [])):
        return CubePlan(outcome=TaskOutcome(name=file.name, status="skipped", item_id=(done.get("items") or [None])[0],
                                            output=f"{task.output_container}/{output_prefix(task.container, file.name)}/"))
    local = stage_source(services.store, task.container, file, services.cache_dir, services.max_bytes)
    with named_as(local, f"{task.container}/{file.name}"):
        facts = cubes.open_cube(local, gdal_config=services.gdal_config(None))
        groups = cubes.plan_slices(facts, output_prefix(task.container, file.name), max_slices=services.max_slices,
                                   max_pixels_per_task=services.max_pixels_per_task,
                                   max_slices_per_task=services.slices_per_task)
    cube_id = services.item_id(task.container, file.name, task.output_container)
    steps = sorted({s for g in groups for s in g.steps}, key=lambda s: (s is not None, s or 0))
    plan = {"facts": _without_slices(facts).model_dump(mode="json"),
            "outputs": [t.output_path for g in groups for t in g.tasks],
            "items": [slice_item_id(cube_id, s) for s in steps]}
    store, system = services.store, services.system_container
    store.create_container(system)
    ref = BlobRef(container=system, blob=_plan_blob(request.plan_id, "cube.json"))
    for group in groups:
        store.upload_bytes(system, _plan_blob(request.plan_id, f"group-{group.index:05d}.json"),
                           group.model_dump_json().encode(), content_type="application/json")
    store.upload_bytes(system, ref.blob, json.dumps(plan).encode(), content_type="application/json")
    return CubePlan(plan=ref, groups=[CubeGroupRef(index=g.index, label=_label(file.name, g), slices=len(g.tasks))
                                      for g in groups],
                    variables=[v.name for v in facts.variables], slices=facts.slice_count, steps=len(steps),
                    skipped_variables=facts.skipped, warnings=facts.warnings)


def _without_slices(facts: cubes.CubeFacts) -> cubes.CubeFacts:
    """The facts a time step's item needs (dimensions, variables): without each slice's place."""
    return facts.model_copy(update={"variables": [v.model_copy(update={"slices": []}) for v in facts.variables]})


def _label(name: str, group: cubes.SliceGroup) -> str:
    steps = [s for s in group.steps if s is not None]
    if not steps:
        return f"{name} (no time)"
    return f"{name} step {steps[0]}" if len(steps) == 1 else f"{name} steps {steps[0]}-{steps[-1]}"


# -- converting: one slice group ----------------------------------------------------------------

def _read_json(store: BlobStore, ref: BlobRef, name: str | None = None) -> Any:
    blob = ref.blob if name is None else f"{ref.blob.rsplit('/', 1)[0]}/{name}"
    return json.loads(store.download_bytes(ref.container, blob))


def _relocated(group: cubes.SliceGroup, source: Path) -> cubes.SliceGroup:
    """The group read from this host's copy of the source (subdataset names carry its path)."""
    old, new = f'"{Path(group.source).resolve()}"', f'"{source.resolve()}"'
    variables = [v.model_copy(update={"subdataset": v.subdataset.replace(old, new) if v.subdataset else None})
                 for v in group.variables]
    return group.model_copy(update={"source": str(source), "variables": variables})


def convert_group(services: Services, request: CubeGroupTask) -> TaskOutcome:
    """One slice group: its COGs written (those current for this source ETag and options kept)
    and published with their source's ETag and options, a thumbnail per time step, then the
    items of its time steps upserted."""
    task, store = request.task, services.store
    plan = _read_json(store, request.plan)
    facts = cubes.CubeFacts.model_validate(plan["facts"])
    group = cubes.SliceGroup.model_validate(_read_json(store, request.plan, f"group-{request.group:05d}.json"))
    source = stage_source(store, task.container, task.file, services.cache_dir, services.max_bytes)
    metadata = {"rmh_source_etag": task.file.etag, "rmh_options": options_digest(task.options),
                "rmh_source": f"{task.container}/{task.file.name}"}
    with services.staging_dir() as tmp:
        local_of = {t.output_path: str(Path(tmp, "out", t.output_path)) for t in group.tasks}
        blob_of = {v: k for k, v in local_of.items()}
        local = _relocated(group, source).model_copy(update={"tasks": [
            t.model_copy(update={"output_path": local_of[t.output_path]}) for t in group.tasks]})
        with named_as(source, f"{task.container}/{task.file.name}"):
            written = cubes.convert_slices(local, profile=task.options.profile, tmp_dir=tmp,
                                           gdal_config=services.gdal_config(None),
                                           skip_existing=lambda path: _is_current(services, task, blob_of[path]))
        fresh = [o for o in written.outputs if o.size_bytes is not None]
        store.create_container(task.output_container)
        for out in fresh:
            store.upload_from_path(task.output_container, blob_of[out.path], Path(out.path),
                                   content_type=stac_ops.COG_MEDIA_TYPE, metadata=metadata)
        if task.catalog:
            _catalog_steps(services, request, facts, group, written.outputs, blob_of, metadata)
    status = "done" if fresh else "skipped"
    return TaskOutcome(name=request.label, status=status,
                       output=f"{task.output_container}/{output_prefix(task.container, task.file.name)}/",
                       item_id=slice_item_id(services.item_id(task.container, task.file.name, task.output_container),
                                             group.steps[0]))


def _catalog_steps(services: Services, request: CubeGroupTask, facts: cubes.CubeFacts, group: cubes.SliceGroup,
                   outputs: list[cubes.SliceOutput], blob_of: Mapping[str, str], metadata: dict[str, str]) -> None:
    """The items of the group's time steps, each with a thumbnail of its first slice."""
    task, store = request.task, services.store
    out = task.output_container
    remote = store.gdal_read_path(out, next(iter(blob_of.values())))
    config = services.gdal_config(remote.config)
    time_dim = facts.time_dimension
    href, alternates = services.hrefs(task.container, task.file.name)
    cube_id = services.item_id(task.container, task.file.name, task.output_container)
    items = []
    for step in group.steps:
        mine = [o for o in outputs if (o.index.get(time_dim.name) if time_dim else None) == step]
        read = [o if o.size_bytes is not None else o.model_copy(
            update={"path": store.gdal_read_path(out, blob_of[o.path]).path}) for o in mine]
        blob_by_read = {r.path: blob_of[o.path] for r, o in zip(read, mine)}
        thumbnail = _thumbnail(services, out, mine[0], blob_of[mine[0].path], metadata)
        when = "file-metadata" if time_dim is not None else "blob-last-modified"
        title = task.file.name if step is None else f"{task.file.name}, {facts.dimensions[time_dim.name].datetimes[step]}"
        items.append(cubes.slice_item(
            facts, step, read, item_id=slice_item_id(cube_id, step), collection_id=task.collection,
            source_href=href, source_size=task.file.size, source_alternates=alternates,
            href_for=lambda path: services.hrefs(out, blob_by_read[path])[0],
            alternates_for=lambda path: services.hrefs(out, blob_by_read[path])[1],
            thumbnail=thumbnail, fallback_datetime=task.file.last_modified, gdal_config=config,
            properties=_properties(task.container, task.file, when, title)))
    services.catalog.upsert_items(items, draft=task.draft)


def _thumbnail(services: Services, container: str, first: cubes.SliceOutput, cog: str,
               metadata: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """A PNG preview of a step's first slice beside its COG: written with a fresh COG, else the
    one an earlier run wrote (if any)."""
    name = f"{cog.removesuffix('.tif')}.thumbnail.png"
    if first.size_bytes is not None:
        png = Path(first.path).with_suffix(".thumbnail.png")
        geo_ops.write_thumbnail(first.path, png, gdal_config=services.gdal_config(None))
        services.store.upload_from_path(container, name, png, content_type=stac_ops.PNG_MEDIA_TYPE, metadata=metadata)
    elif not services.store.exists(container, name):
        return None
    return services.hrefs(container, name)


# -- converting: keep or remove, as one ---------------------------------------------------------

def _outputs_of(services: Services, container: str, prefix: str) -> list[str]:
    """The blobs under a cube's output prefix that have the shape of its outputs (and its marker)."""
    try:
        names = [b.name for b in services.store.iter_blobs(container, prefix + "/")]
    except ContainerNotFound:
        return []
    start = len(prefix) + 1
    return [n for n in names if n[start:] == MARKER or OUTPUT_NAME.match(n[start:])]


def _items_of(services: Services, collection: str | None, cube_id: str) -> list[str]:
    if not collection or services.catalog.get_collection(collection) is None:
        return []
    return sorted(i for i in services.catalog.list_item_etags(collection) if is_slice_item_of(cube_id, i))


def finish(services: Services, request: CubeFinishTask) -> CubeFinished:
    """Keep a converted file's outputs: remove the COGs, thumbnails and items an earlier version
    left that this one did not write, then write the completion marker. Or, when a group
    failed, remove every output and item of the file (an earlier version's too: they would mix
    two versions), so nothing of a failed file stays. Then drop this host's copy of the source."""
    task, store = request.task, services.store
    plan = _read_json(store, request.plan)
    prefix = output_prefix(task.container, task.file.name)
    cube_id = services.item_id(task.container, task.file.name, task.output_container)
    expected = set(plan["outputs"]) if request.keep else set()
    expected |= {f"{n.removesuffix('.tif')}.thumbnail.png" for n in expected}
    expected |= {f"{prefix}/{MARKER}"} if request.keep else set()  # rewritten below, not removed
    stale = [n for n in _outputs_of(services, task.output_container, prefix) if n not in expected]
    ids = set(plan["items"]) if request.keep else set()
    stale_items = [i for i in _items_of(services, task.collection, cube_id) if i not in ids]
    if stale_items:
        services.catalog.delete_items(task.collection, stale_items)
    for name in stale:
        store.delete(task.output_container, name)
    if request.keep:
        body = {"source": f"{task.container}/{task.file.name}", "items": plan["items"],
                "outputs": len(plan["outputs"]), "variables": [v["name"] for v in plan["facts"]["variables"]]}
        store.upload_bytes(task.output_container, f"{prefix}/{MARKER}", json.dumps(body).encode(),
                           content_type="application/json",
                           metadata={"rmh_source_etag": task.file.etag, "rmh_options": options_digest(task.options),
                                     "rmh_source": f"{task.container}/{task.file.name}"})
    release(services.cache_dir, task.container, task.file)
    return CubeFinished(kept=request.keep, outputs=len(plan["outputs"]) if request.keep else 0,
                        items=len(plan["items"]) if request.keep and task.catalog else 0,
                        removed_outputs=len(stale), removed_items=len(stale_items))
