"""Activities of a catalog's lifecycle: unpublish (its plan as chunk blobs of output groups, one
group removed, the collections it touched settled) and publish / revoke (drafts.py)."""
from __future__ import annotations

import azure.durable_functions as df

import drafts
import output_names
import plan_chunks
import unpublish
from activity_frame import Item, activity
from clients import blob_store, catalog, settings
from models import PLAN_NAMES_SHOWN, SettleCollectionsTask, TaskOutcome, UnpublishPlan, UnpublishPlanRequest, VisibilityTask

bp = df.Blueprint()


@activity(bp, UnpublishPlanRequest)
def plan_unpublish(plan_request: UnpublishPlanRequest) -> UnpublishPlan:
    """The output groups of an unpublish, written as chunk blobs (none for a dry run), with counts
    and the first names of the items and blobs it removes."""
    request, config, store = plan_request.request, settings(), blob_store()
    selection = unpublish.Selection(container=request.container, collection=request.collection,
                                    items=request.items, blobs=request.blobs, prefix=request.prefix,
                                    entire_collection=request.entire_collection)
    outputs = [config.output_container, *([request.output_container] if request.output_container else [])]
    groups = unpublish.plan_groups(catalog(), store, selection, outputs)
    items = [f"{i.collection}/{i.id}" for g in groups for i in g.items]
    blobs = [b.path for g in groups for b in g.blobs]
    collections = sorted({i.collection for g in groups for i in g.items} | (
        {request.collection} if request.entire_collection else set()))
    plan = UnpublishPlan(dry_run=request.dry_run, groups=len(groups),
                         counts={"groups": len(groups), "items": len(items), "blobs": len(blobs)},
                         items=items[:PLAN_NAMES_SHOWN], blobs=blobs[:PLAN_NAMES_SHOWN], collections=collections,
                         truncated=max(len(items), len(blobs)) > PLAN_NAMES_SHOWN)
    if not request.dry_run and groups:
        plan.chunks = plan_chunks.write_chunks(store, config.system_container, plan_request.plan_id,
                                               request.chunk_size or output_names.CHUNK_SIZE, groups, kind="unpublish")
    return plan


@activity(bp, unpublish.OutputGroup, item=lambda group: Item(group.name))
def remove_outputs(group: unpublish.OutputGroup) -> TaskOutcome:
    """One output group: its blobs, then its items. A blob that cannot be deleted fails the group,
    naming it; its items stay, so a rerun plans the group again."""
    removed = unpublish.remove_group(catalog(), blob_store(), group)
    status = "done" if removed.items or removed.blobs else "skipped"  # already gone: a rerun
    return TaskOutcome(name=group.name, status=status, output=f"{removed.items} items, {removed.blobs} blobs")


@activity(bp, SettleCollectionsTask)
def settle_collections(task: SettleCollectionsTask) -> dict:
    """After an unpublish: the collection removed entirely (when asked, and empty), the searches
    registered for each collection it emptied, the extent of the others recomputed."""
    cat, report = catalog(), {"removed": [], "emptied": [], "searches_removed": 0, "kept": []}
    for collection in task.collections:
        if cat.get_collection(collection) is None:
            continue
        if cat.count_items(collection):
            cat.refresh_collection(collection)
            report["kept"].append(collection)
            continue
        report["searches_removed"] += cat.remove_searches(collection)
        if collection == task.remove:
            cat.delete_collection(collection)
            report["removed"].append(collection)
        else:
            cat.refresh_collection(collection)
            report["emptied"].append(collection)
    cat.finalize()
    return report


@activity(bp, VisibilityTask)
def set_visibility(task: VisibilityTask):
    """Publish a collection's drafts or revoke its items, in one catalog transaction, with the
    transition recorded."""
    transition = drafts.Transition(collection=task.collection, action=task.action, items=0, by=task.by,
                                   reason=task.reason, job=task.job)
    return catalog().set_visibility(task.action, task.collection, task.items, transition)
