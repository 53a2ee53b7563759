"""What titiler-pgstac needs to read a COG in a private blob container (Azurite), by href form and
by the environment its user sets: the ``titiler_env`` parameter of the harness at work.

The items are built by ``stac_ops.item_from_raster`` and written by ``PgStacCatalog``; today's
code writes the plain blob URL, so the signed href and the ``/vsiaz/`` alternate (what #11 adds)
are set here by hand."""
from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

import pgstac_catalog
import stac_collections
import stac_ops
from consumers import TITILER_ENV, opaque_fraction, read_png, titiler_azure_env
from raster_factory import write_raster

pytestmark = pytest.mark.services

COLLECTION = "azure-access"
BLOB = "rasters/rgb.tif"


@pytest.fixture(scope="module")
def blob_items(pgstac_dsn, azurite_connection_string, tmp_path_factory):
    """One raster in a private Azurite container and three items for it: the plain blob URL,
    the URL with a read-only container SAS, the plain URL with a ``/vsiaz/`` alternate."""
    service = BlobServiceClient.from_connection_string(azurite_connection_string)
    container = service.get_container_client("consumer-cogs")
    if not container.exists():
        container.create_container()  # private: no public access level
    raster = write_raster(tmp_path_factory.mktemp("azure") / "rgb.tif", width=512, height=512, count=3,
                          crs="EPSG:32633", bounds=(500000.0, 4980000.0, 505120.0, 4985120.0))
    blob = container.get_blob_client(BLOB)
    blob.upload_blob(raster.read_bytes(), overwrite=True)
    sas = generate_container_sas(service.account_name, "consumer-cogs", account_key=service.credential.account_key,
                                 permission=ContainerSasPermissions(read=True),
                                 expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    hrefs = {"plain": blob.url, "sas": f"{blob.url}?{sas}", "alternate": blob.url}
    when = dt.datetime(2025, 5, 1, tzinfo=dt.timezone.utc)
    items = []
    for name, href in hrefs.items():
        item = stac_ops.item_from_raster(raster, container="rasters", blob_name=f"{name}.tif", collection_id=COLLECTION,
                                         data_href=href, datetime_override=when)
        if name == "alternate":
            item.assets["data"].extra_fields["alternate"] = {"vsiaz": {"href": f"/vsiaz/consumer-cogs/{BLOB}"}}
        items.append(item)
    with psycopg.connect(pgstac_dsn, autocommit=True) as conn:
        catalog = pgstac_catalog.PgStacCatalog(conn)
        catalog.upsert_collection(stac_collections.collection_for_container("rasters", collection_id=COLLECTION))
        catalog.upsert_items(items)
    return {name: item.id for name, item in zip(hrefs, items)}


# (titiler environment, item) -> does the tile render? A private blob answers GDAL 403 (titiler 500).
CASES = {
    "gdal-only/plain-url": ("gdal", "plain", 500),
    "gdal-only/sas-url": ("gdal", "sas", 200),
    "connection-string/plain-url": ("connection-string", "plain", 500),
    "alternate-key/vsiaz-alternate": ("alternate-key", "alternate", 200),
}


@pytest.mark.parametrize("case", list(CASES))
def test_titiler_reads_a_private_blob_only_signed_or_through_vsiaz(case, blob_items, consumer_servers, pgstac_dsn,
                                                                    azurite_connection_string):
    env_name, item_name, expected = CASES[case]
    env = {"gdal": TITILER_ENV,
           "connection-string": {**TITILER_ENV, **titiler_azure_env(azurite_connection_string)},
           "alternate-key": {**TITILER_ENV, **titiler_azure_env(azurite_connection_string, alternate_key="vsiaz")},
           }[env_name]
    titiler = consumer_servers.titiler(pgstac_dsn, env)
    try:
        status, body, _ = titiler.get(f"/collections/{COLLECTION}/items/{blob_items[item_name]}"
                                      "/tiles/WebMercatorQuad/14/8876/5893.png?assets=data")
    finally:
        titiler.cleanup()
    assert status == expected, body[:300]
    if expected == 200:
        assert opaque_fraction(read_png(body)) == 1.0
    else:
        assert b"403" in body
