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
