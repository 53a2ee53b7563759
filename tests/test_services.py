"""The real test services come up and answer: Azurite's blob API and pgSTAC with PostGIS."""
import psycopg
from azure.storage.blob import BlobServiceClient


def test_azurite_answers(azurite_connection_string):
    service = BlobServiceClient.from_connection_string(azurite_connection_string)
    container = service.create_container("services-check")
    container.upload_blob("hello.txt", b"hello")
    assert container.download_blob("hello.txt").readall() == b"hello"


def test_pgstac_is_migrated_with_postgis(pgstac_dsn):
    with psycopg.connect(pgstac_dsn) as conn:
        version = conn.execute("SELECT pgstac.get_version()").fetchone()[0]
        postgis = conn.execute("SELECT postgis_version()").fetchone()[0]
    assert version.startswith("0.")
    assert postgis.startswith("3.")
