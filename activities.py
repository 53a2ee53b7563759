"""The activities, gathered from their rooms: what ``function_app`` registers (``BLUEPRINTS``) and
what orchestrators call (``act.<name>``, the function objects, so a rename fails at import).

Each room is a blueprint of activities of one concern; every activity is a thin adapter written
on ``activity_frame.activity`` (its input model validated, its answer dumped, transient faults
ridden out within the retry budget, an item's error a failed outcome). Clients and working files
live in ``clients.py`` and ``work_files.py``.
"""
from __future__ import annotations

import conversion_activities
import cube_activities
import import_activities
import lifecycle_activities
import sync_activities
import tile_activities
from activity_frame import gdal_config, scrub  # noqa: F401
from catalog_items import item_id  # noqa: F401
from clients import BlobCatalogStore, blob_store, catalog, deliver_events, event_delivery_for, settings  # noqa: F401
from conversion_activities import (convert_blob, inspect_raster, options_digest,  # noqa: F401
                                   plan_conversion)
from cube_activities import catalog_cube, convert_cube_group, finish_cube, inspect_cube  # noqa: F401
from import_activities import plan_import, prepare_import_item, write_import_item  # noqa: F401
from lifecycle_activities import plan_unpublish, remove_outputs, set_visibility, settle_collections  # noqa: F401
from output_names import cog_name as cog_blob_name, thumbnail_name as thumbnail_blob_name  # noqa: F401
from sync_activities import (catalog_blob, catalog_health, describe_blob, finalize_catalog,  # noqa: F401
                             flush_items, forget_blob, plan_sync, prepare_collection, read_chunk,
                             register_mosaic, remove_items, say_hello, validate_blob, write_inventory)
from tile_activities import (build_tile_mosaic, catalog_tiles, convert_tile, discard_tiles,  # noqa: F401
                             plan_raster_tiles)
from work_files import _stale_removed, function_timeout, staging_dir, work_dir  # noqa: F401

#: The activities' blueprints, one per concern, in the order function_app registers them.
BLUEPRINTS = [sync_activities.bp, conversion_activities.bp, tile_activities.bp, import_activities.bp,
              lifecycle_activities.bp, cube_activities.bp]
