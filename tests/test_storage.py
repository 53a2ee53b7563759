"""The storage suite, run unchanged against both implementations: a local directory and Azurite."""
import datetime as dt
import re
import uuid

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds

from storage import (
    AzureBlobStore,
    BlobNotFound,
    ContainerNotFound,
    InvalidBlobName,
    InvalidContainerName,
    LocalDirStore,
    StorageUnavailable,
    check_blob_name,
    check_container_name,
    normalize_etag,
)


@pytest.fixture(params=["local", "azurite-key", "azurite-identity"])
def store(request, tmp_path):
    """Local directory; Azurite through a connection string (account key); Azurite through an
    account URL and a bearer-token credential, where GDAL gets user delegation SAS tokens."""
    if request.param == "local":
        return LocalDirStore(tmp_path / "blobs")
    if request.param == "azurite-key":
        return AzureBlobStore(connection_string=request.getfixturevalue("azurite_connection_string"))
    from services import EmulatorCredential

    azurite = request.getfixturevalue("azurite_oauth")
    return AzureBlobStore(account_url=azurite.account_url, credential=EmulatorCredential(),
                          connection_verify=str(azurite.ca_path),
                          gdal_config={"GDAL_CURL_CA_BUNDLE": str(azurite.ca_path)})


@pytest.fixture
def container(store):
    name = f"t-{uuid.uuid4().hex[:12]}"
    store.create_container(name)
    return name


def write_geotiff(path, width=64, height=48):
    data = np.arange(width * height, dtype="uint16").reshape(1, height, width)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1,
                       dtype="uint16", crs="EPSG:32618",
                       transform=from_bounds(500000, 4000000, 500640, 4000480, width, height)) as dst:
        dst.write(data)
    return data


def test_upload_properties_download_roundtrip(store, container, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 1000)
    info = store.upload_from_path(container, "dir/a.bin", src, content_type="application/x-test",
                                  metadata={"source_etag": "abc"})
    assert info.size == 1000 and info.name == "dir/a.bin"
    assert info.etag and '"' not in info.etag
    assert info.last_modified.tzinfo is not None
    props = store.get_properties(container, "dir/a.bin")
    assert props.etag == info.etag and props.last_modified == info.last_modified  # the upload's answer is exact
    assert props.size == info.size and props.metadata == info.metadata
    assert props.content_type == info.content_type == "application/x-test"
    assert props.metadata == {"source_etag": "abc"}
    out = store.download_to_path(container, "dir/a.bin", tmp_path / "out" / "a.bin")
    assert out.read_bytes() == b"x" * 1000
    again = store.upload_bytes(container, "dir/b.txt", b"hello", metadata={"k": "v"})
    props = store.get_properties(container, "dir/b.txt")
    assert (again.etag, again.last_modified, again.size, again.metadata) == (
        props.etag, props.last_modified, 5, {"k": "v"})
    assert again.content_type == props.content_type
    with store.downloaded(container, "dir/a.bin") as path:
        assert path.read_bytes() == b"x" * 1000
    assert not path.exists()


def test_etag_changes_when_blob_is_rewritten(store, container):
    first = store.upload_bytes(container, "a.txt", b"one")
    second = store.upload_bytes(container, "a.txt", b"two")
    assert first.etag != second.etag
    assert store.get_properties(container, "a.txt").etag == second.etag


def test_paged_listing_with_prefix(store, container):
    for i in range(7):
        store.upload_bytes(container, f"raw/{i:02d}.tif", b"t" * (i + 1))
    store.upload_bytes(container, "other/x.tif", b"x")
    first = store.list_page(container, "raw/", page_size=3)
    assert [b.name for b in first.blobs] == ["raw/00.tif", "raw/01.tif", "raw/02.tif"]
    assert first.continuation
    names = [b.name for b in store.iter_blobs(container, "raw/", page_size=3)]
    assert names == [f"raw/{i:02d}.tif" for i in range(7)]
    sizes = {b.name: b.size for b in store.iter_blobs(container)}
    assert sizes["raw/06.tif"] == 7 and "other/x.tif" in sizes
    assert all(b.content_type == "image/tiff" for b in first.blobs)


def test_paged_listing_is_in_name_order_across_folders_and_pages(store, container):
    """Names whose folders sort among files by the characters around ``/`` ("a-b" < "a/b" < "a0"),
    listed a page at a time from every point: the same order and names as one sorted listing
    (the local store walks its tree lazily instead of sorting it all for each page)."""
    names = ["a-b.tif", "a/b.tif", "a/b/c.tif", "a/b-c.tif", "a0.tif", "a.tif", "a/.x.tif", "b/z/y/x.tif",
             "b/z.tif", "b/z/a.tif", "B.tif", "a/a/a/a.tif"]
    for name in names:
        store.upload_bytes(container, name, b"x")
    expected = sorted(names)
    for size in (1, 2, 5, 100):
        assert [b.name for b in store.iter_blobs(container, page_size=size)] == expected, size
    for prefix in ("a", "a/", "a/b", "b/z/", "c"):
        assert [b.name for b in store.iter_blobs(container, prefix, page_size=2)] == \
            [n for n in expected if n.startswith(prefix)], prefix


def test_exists_and_delete(store, container):
    store.upload_bytes(container, "gone.txt", b"bye")
    assert store.exists(container, "gone.txt")
    assert store.delete(container, "gone.txt") is True
    assert not store.exists(container, "gone.txt")
    assert store.delete(container, "gone.txt") is False
    with pytest.raises(BlobNotFound, match="gone.txt"):
        store.get_properties(container, "gone.txt")


def test_missing_container(store):
    with pytest.raises(ContainerNotFound, match="no-such-container"):
        store.list_page("no-such-container")


def test_gdal_reads_in_place(store, container, tmp_path):
    data = write_geotiff(tmp_path / "r.tif")
    store.upload_from_path(container, "in/r.tif", tmp_path / "r.tif")
    gdal = store.gdal_read_path(container, "in/r.tif")
    with rasterio.Env(**gdal.config), rasterio.open(gdal.path) as src:
        assert src.crs.to_epsg() == 32618
        assert np.array_equal(src.read(), data)


def test_gdal_writes_in_place(store, container, tmp_path):
    gdal = store.gdal_write_path(container, "out/w.tif")
    data = np.full((1, 32, 32), 7, dtype="uint8")
    with rasterio.Env(**gdal.config):
        with rasterio.open(gdal.path, "w", driver="GTiff", width=32, height=32, count=1,
                           dtype="uint8") as dst:
            dst.write(data)
    assert store.get_properties(container, "out/w.tif").size > 0
    read = store.gdal_read_path(container, "out/w.tif")
    with rasterio.Env(**read.config), rasterio.open(read.path) as src:
        assert np.array_equal(src.read(), data)


BAD_CONTAINERS = [
    ("ab", "3 to 63"),
    ("a" * 64, "3 to 63"),
    ("Upper", "lowercase"),
    ("under_score", "lowercase"),
    ("-leading", "start and end"),
    ("trailing-", "start and end"),
    ("dou--ble", "'--'"),
    ("dot.ted", "lowercase"),
]
BAD_BLOBS = [
    ("", "empty"),
    ("/abs/path.tif", "start with '/'"),
    ("a/../b.tif", "'..'"),
    ("../escape.tif", "'..'"),
    ("a/./b.tif", "'.'"),
    ("x" * 1025, "1024"),
    ("bad\x00name.tif", "control character"),
    ("new\nline.tif", "control character"),
    ("a//b.tif", "empty segment"),
    ("dir/", "empty segment"),
    ("back\\slash.tif", "'\\\\'"),
]


@pytest.mark.parametrize("name, rule", BAD_CONTAINERS)
def test_bad_container_names_say_which_rule(name, rule):
    with pytest.raises(InvalidContainerName, match=rule):
        check_container_name(name)


@pytest.mark.parametrize("name, rule", BAD_BLOBS)
def test_bad_blob_names_say_which_rule(name, rule):
    with pytest.raises(InvalidBlobName, match=rule):
        check_blob_name(name)


def test_good_names_pass():
    assert check_container_name("abc") == "abc"
    assert check_container_name("a-1-b") == "a-1-b"
    assert check_blob_name("dir/sub dir/x.y.tif") == "dir/sub dir/x.y.tif"
    assert check_blob_name("x" * 1024)


@pytest.mark.parametrize("name", [n for n, _ in BAD_BLOBS[:4]])
def test_bad_names_fail_before_any_call(store, container, name):
    """Checked before the network: the same specific error from both stores, nothing written."""
    with pytest.raises(InvalidBlobName):
        store.upload_bytes(container, name, b"data")
    with pytest.raises(InvalidContainerName):
        store.upload_bytes("Bad_Container", "ok.tif", b"data")
    assert list(store.iter_blobs(container)) == []


def test_unreachable_service_is_transient_and_keeps_key_secret():
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    store = AzureBlobStore(connection_string=conn, retry_total=0)
    with pytest.raises(StorageUnavailable) as info:
        store.get_properties("abc", "x.tif")
    assert "c2VjcmV0a2V5" not in str(info.value)
    assert "abc/x.tif" in str(info.value)


def test_gdal_path_repr_hides_config(tmp_path):
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    path = AzureBlobStore(connection_string=conn).gdal_read_path("abc", "x.tif")
    assert path.path == "/vsiaz/abc/x.tif"
    assert "c2VjcmV0a2V5" not in repr(path)


@pytest.mark.parametrize("raw, expected", [('"0x8D"', "0x8D"), ("0x8D", "0x8D"), ('W/"abc"', "abc"), (None, "")])
def test_etags_are_normalised(raw, expected):
    assert normalize_etag(raw) == expected


def test_user_delegation_sas_is_read_only_and_single_blob(azurite_oauth, tmp_path, caplog):
    from urllib.parse import parse_qs

    from services import EmulatorCredential

    store = AzureBlobStore(account_url=azurite_oauth.account_url, credential=EmulatorCredential(),
                           connection_verify=str(azurite_oauth.ca_path),
                           gdal_config={"GDAL_CURL_CA_BUNDLE": str(azurite_oauth.ca_path)},
                           sas_ttl=dt.timedelta(minutes=15))
    store.create_container("sas-check")
    write_geotiff(tmp_path / "a.tif")
    store.upload_from_path("sas-check", "a.tif", tmp_path / "a.tif")
    store.upload_from_path("sas-check", "b.tif", tmp_path / "a.tif")
    sas = parse_qs(store.user_delegation_sas("sas-check", "a.tif"))
    assert sas["sp"] == ["r"] and sas["sr"] == ["b"] and "skoid" in sas
    expiry = dt.datetime.fromisoformat(sas["se"][0].replace("Z", "+00:00"))
    assert expiry - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(minutes=16)
    read = store.gdal_read_path("sas-check", "a.tif")
    with rasterio.Env(**read.config), rasterio.open(read.path) as src:
        assert src.width == 64
    with rasterio.Env(**read.config), pytest.raises(rasterio.errors.RasterioIOError, match="403"):
        rasterio.open("/vsiaz/sas-check/b.tif")
    config = {**read.config, "CPL_VSIL_USE_TEMP_FILE_FOR_RANDOM_WRITE": "YES"}
    from rasterio._err import CPLE_BaseError

    with rasterio.Env(**config), pytest.raises((rasterio.errors.RasterioIOError, CPLE_BaseError)):
        with rasterio.open(read.path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
            dst.write(np.zeros((1, 4, 4), dtype="uint8"))
    assert store.get_properties("sas-check", "a.tif").size == (tmp_path / "a.tif").stat().st_size
    # Let GDAL probe for sidecar files: each probe is a 403 that GDAL logs with the request URL.
    with rasterio.Env(**{**read.config, "GDAL_DISABLE_READDIR_ON_OPEN": "FALSE"}):
        rasterio.open(read.path).close()
    signatures = [m for r in caplog.records for m in re.findall(r"sig=([^&\s]+)", r.getMessage())]
    assert signatures and set(signatures) == {"REDACTED"}


def test_download_bytes_and_url(store, container):
    store.upload_bytes(container, "doc/a.json", b'{"a": 1}', content_type="application/json")
    assert store.download_bytes(container, "doc/a.json") == b'{"a": 1}'
    assert store.url(container, "doc/a.json").endswith(f"{container}/doc/a.json")
    assert "sig=" not in store.url(container, "doc/a.json")


def test_gdal_sees_a_rewritten_blob(store, container, tmp_path):
    """GDAL caches what it read of a remote file for the process; a blob rewritten under the same
    name must not be read stale (activities of a long-lived worker process read the same names)."""
    write_geotiff(tmp_path / "a.tif", width=64, height=48)
    store.upload_from_path(container, "same.tif", tmp_path / "a.tif")
    gdal = store.gdal_read_path(container, "same.tif")
    with rasterio.Env(**gdal.config), rasterio.open(gdal.path) as src:
        assert src.width == 64
    write_geotiff(tmp_path / "b.tif", width=40, height=30)
    store.upload_from_path(container, "same.tif", tmp_path / "b.tif")
    gdal = store.gdal_read_path(container, "same.tif")
    with rasterio.Env(**gdal.config), rasterio.open(gdal.path) as src:
        assert (src.width, src.height) == (40, 30)


NAMES_IN_SCRIPTS = ["données/café é.tif", "地図/東京.tif", "🌍/earth 👩‍🚀.tif", "خرائط/القاهرة.tif", "מפות/ירושלים.tif",
                    "मानचित्र/दिल्ली.tif", " leading and trailing blanks ", "=?utf-8?b?bG9vaw==?=", "100% done"]


def test_metadata_in_any_script_reads_back_exactly(store, container):
    """Metadata values go out as HTTP headers (ASCII only): what is not printable ASCII is stored as
    an RFC 2047 encoded word and decoded on read, so names in any script come back exactly; plain
    ASCII values (and every value written before) are stored as they are."""
    metadata = {f"k{i}": value for i, value in enumerate(NAMES_IN_SCRIPTS)} | {"plain": "rasters/a.tif"}
    for name in ("a.tif", "地図/東京.tif"):
        info = store.upload_bytes(container, name, b"x", metadata=metadata)
        assert info.metadata == metadata
        assert store.get_properties(container, name).metadata == metadata
    if isinstance(store, AzureBlobStore):
        raw = store._client.get_blob_client(container, "a.tif").get_blob_properties().metadata
        assert raw["plain"] == "rasters/a.tif" and raw["k1"].startswith("=?utf-8?b?") and raw["k1"].isascii()


def test_metadata_encoding_is_reversible_and_leaves_ascii_alone():
    from storage import decode_metadata_value, encode_metadata_value

    for value in [*NAMES_IN_SCRIPTS, "", "a", "x" * 5000, "🌍" * 1024, "tab\tinside", "=?utf-8?b?!!?="]:
        stored = encode_metadata_value(value)
        assert stored.isascii() and decode_metadata_value(stored) == value, value
    assert encode_metadata_value("rasters/dir/a b.tif") == "rasters/dir/a b.tif"
    assert len(encode_metadata_value("🌍" * 1024)) < 8000  # Azure's metadata limit is 8 KB
    assert decode_metadata_value("=?utf-8?b?not base64?=") == "=?utf-8?b?not base64?="


def test_a_local_directory_refuses_what_it_cannot_hold_by_name(tmp_path):
    """A blob and a prefix of the same name (Azure holds both, a directory cannot), a segment over
    255 bytes: named conditions, never a raw OSError; metadata of a name whose last segment leaves
    no room for ``.json`` is kept."""
    from storage import StorageRefused

    store = LocalDirStore(tmp_path / "blobs")
    store.create_container("c-local")
    store.upload_bytes("c-local", "a.tif", b"x")
    with pytest.raises(StorageRefused, match="a directory cannot"):
        store.upload_bytes("c-local", "a.tif/b.tif", b"x")
    store.upload_bytes("c-local", "d/e.tif", b"x")
    with pytest.raises(StorageRefused, match="a directory cannot"):
        store.upload_bytes("c-local", "d", b"x")
    with pytest.raises(InvalidBlobName, match="segment 2 is 300 bytes"):
        store.upload_bytes("c-local", "dir/" + "é" * 150, b"x")
    name = "dir/" + "y" * 250 + ".tif"  # 254 bytes: the file fits, "<name>.json" would not
    store.upload_bytes("c-local", name, b"x", metadata={"rmh_source": "c-local/" + name})
    assert store.get_properties("c-local", name).metadata == {"rmh_source": "c-local/" + name}
    assert [b.name for b in store.iter_blobs("c-local", "dir/")] == [name]
    assert store.container_exists("c-local") and not store.container_exists("c-never")


def test_a_server_error_repeated_for_one_request_is_refused_not_an_outage(azurite_connection_string):
    """Azurite answers a listing with a NUL in its prefix with a 500, every time, while it answers
    every other request: StorageRefused after one more call (not StorageUnavailable, which
    activities ride out for RMH_OUTAGE_SECONDS), and at once when asked again."""
    import time

    from storage import StorageRefused

    fast = {"retry_total": 1, "initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0}
    store = AzureBlobStore(connection_string=azurite_connection_string, **fast)
    store.create_container("refusals")
    store.upload_bytes("refusals", "a.tif", b"x")
    with pytest.raises(StorageRefused, match="500") as refused:
        store.list_page("refusals", "a\x00")
    assert "refusals" in str(refused.value)
    started = time.monotonic()
    with pytest.raises(StorageRefused):
        store.list_page("refusals", "a\x00")
    assert time.monotonic() - started < 0.05, "a refused request is refused at once when asked again"
    assert [b.name for b in store.list_page("refusals", "a").blobs] == ["a.tif"]  # other requests answer


def test_storage_that_does_not_answer_is_an_outage_not_a_refusal():
    """With Azurite stopped, the same calls are StorageUnavailable (transient: ridden out), never
    StorageRefused: a refusal needs storage to answer."""
    from services import Azurite
    from storage import StorageRefused

    azurite = Azurite().start()
    try:
        store = AzureBlobStore(connection_string=azurite.connection_string, retry_total=0)
        store.create_container("outage")
        azurite.pause()
        for call in (lambda: store.list_page("outage", "a\x00"), lambda: store.list_page("outage"),
                     lambda: store.get_properties("outage", "a.tif"), lambda: store.container_exists("outage")):
            with pytest.raises(StorageUnavailable) as info:
                call()
            assert not isinstance(info.value, StorageRefused)
    finally:
        azurite.stop()


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_a_path_gdal_cannot_address_is_named(backend, tmp_path):
    from storage import GDAL_PATH_BYTES, GdalPathTooLong

    name = "/".join(["地" * 80] * 9) + ".tif"  # 728 characters, 2,168 bytes: each segment 240 bytes
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=c2VjcmV0a2V5;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    store = LocalDirStore(tmp_path / "blobs") if backend == "local" else AzureBlobStore(connection_string=conn)
    if backend == "local":
        store.create_container("long")
    with pytest.raises(GdalPathTooLong, match=str(GDAL_PATH_BYTES)):
        store.gdal_read_path("long", name)
    assert store.gdal_read_path("long", name[-400:].lstrip("/")).path
