"""Unpublish on Azurite + pgSTAC: a tiled source's whole output goes and its source blob stays;
items by id and a whole collection, with the collection's registered searches; a source deleted
from a synced container, or announced by a deletion event, loses its tile items and outputs too."""
from __future__ import annotations

import orjson
import psycopg
import pytest

from unpublish_checks import (check_a_deletion_event_removes_a_tiled_sources_whole_output,
                              check_items_and_a_whole_collection, check_sync_removes_a_deleted_tiled_sources_whole_output,
                              check_tiled_source_unpublished)

pytestmark = pytest.mark.services


def test_a_tiled_source_is_unpublished_and_its_source_blob_stays(host, store, tmp_path):
    check_tiled_source_unpublished(host, store, tmp_path)


def test_items_by_id_then_the_whole_collection_with_its_searches(host, store, tmp_path, pgstac_dsn):
    searches = []

    def registered(collection: str) -> list[str]:
        with psycopg.connect(pgstac_dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")
            return [row[0] for row in conn.execute(
                "SELECT hash FROM searches WHERE search->'collections' ? %s", (collection,)).fetchall()]

    with psycopg.connect(pgstac_dsn, autocommit=True) as conn:  # as titiler-pgstac registers a mosaic
        conn.execute("SET search_path TO pgstac, public")
        conn.execute("SELECT search_query(%s, false, %s)", (orjson.dumps({"collections": ["unpub-whole"]}).decode(),
                                                           orjson.dumps({"rmh:collection": "unpub-whole"}).decode()))
    searches = registered("unpub-whole")
    assert len(searches) == 1
    collection = check_items_and_a_whole_collection(host, store, tmp_path)
    assert registered(collection) == []


def test_sync_removes_a_deleted_tiled_sources_whole_output(host, store, tmp_path):
    check_sync_removes_a_deleted_tiled_sources_whole_output(host, store, tmp_path)


def test_a_deletion_event_removes_a_tiled_sources_whole_output(host, store, tmp_path):
    check_a_deletion_event_removes_a_tiled_sources_whole_output(host, store, tmp_path)


def test_a_tiled_source_with_a_name_longer_than_a_path_component_leaves_nothing(host, store, tmp_path):
    """A source whose last name segment passes 255 bytes: its outputs' names are fitted
    (``output_names.cog_name``, ``tiled_folder``), and unpublish finds them by those names,
    the mosaic VRT included (it looked under the unfitted stem and left the mosaic behind)."""
    from unpublish_checks import OUTPUT, items_of, listing, rasters

    container, name = "unpub-long", "long/" + "ä" * 150 + ".tif"  # 300 bytes in its last segment
    store.create_container(container)
    store.upload_from_path(container, name, rasters(tmp_path)["src/big.tif"])
    tiled = host.run("process_tiled_raster", {"container": container, "blob": name, "tile_size": 512})
    assert tiled["output"]["done"] == 4, tiled["output"]
    written = listing(store, OUTPUT, f"{container}/long/")
    assert any(n.endswith("/mosaic.vrt") for n in written) and len(items_of(container, name)) == 4, written
    done = host.run("unpublish", {"container": container, "blobs": [name]})
    assert done["output"]["failed"] == 0, done["output"]
    assert listing(store, OUTPUT, f"{container}/long/") == {}
    assert items_of(container, name) == []
    assert list(listing(store, container)) == [name]  # the source stays
