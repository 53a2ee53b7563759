"""The adversarial pass on Azurite + pgSTAC (tests/adversarial.py): names in eight scripts and
names storage keeps but GDAL or our checks cannot take (a 1,000-character name of 2,600 bytes,
``a//b.tif``, a leading ``/``, written through the SDK), degenerate shapes, the
real-world rasters, broken files and CRSs: every failure named for its condition, never a bare
exception. And what one request can cost: a container holding a blob whose name has a control
character (Azurite then answers every listing of it with a 500) fails its jobs with
``StorageRefused`` in bounded time, where it used to be ridden out as an outage for minutes."""
from __future__ import annotations

import time

from adversarial import assert_named, check_adversarial

#: 1,000 characters, 2,600 bytes of UTF-8: Azure holds it, GDAL cannot address it.
TOO_WIDE = "/".join(("地図" * 100, "Ελλάδα" * 33 + "ab", "🌍" * 200, "é" * 200, "ñ" * 196 + ".tif"))
#: Names Azure holds and the service's name rules refuse (no empty segment, no leading '/'; a '\'
#: is stored as '/').
UNFIT = ["odd//double-slash.tif", "/leading-slash.tif"]


def _sdk_upload(store, container: str, name: str, data: bytes) -> None:
    """Upload through the Azure SDK itself, past the store's name checks."""
    store._client.get_blob_client(container, name).upload_blob(data, overwrite=True)


def test_every_adversarial_file_fails_with_a_named_condition(host, store, tmp_path, shared_rasters):
    store.create_container("adversarial")
    good = (shared_rasters / "shade.tif").read_bytes()
    for name in [TOO_WIDE, *UNFIT]:
        _sdk_upload(store, "adversarial", name, good)
    check_adversarial(host, store, tmp_path, shared_rasters, container="adversarial", server_paths=["/vsiaz/"],
                      extra={TOO_WIDE: "GdalPathTooLong", **{name: "InvalidBlobName" for name in UNFIT}})


def test_a_container_storage_cannot_list_is_refused_in_bounded_time(host, store, tmp_path, shared_rasters):
    store.create_container("unlistable")
    store.upload_from_path("unlistable", "fine.tif", shared_rasters / "shade.tif")
    _sdk_upload(store, "unlistable", "ctl/a\x01b.tif", b"x")
    started = time.monotonic()
    for operation, body in (("sync_container", {"container": "unlistable", "collection": "unlistable"}),
                            ("cog_conversion", {"container": "unlistable", "prefix": "",
                                                "output_container": "unlistable-out"})):
        status = host.run(operation, body, timeout=600)
        assert status["runtimeStatus"] == "Failed", (operation, status)
        assert "StorageRefused" in str(status["output"]), (operation, status["output"])
    took = time.monotonic() - started
    # The SDK's own retries of the first listing (about 80 s on Azurite), then one more call and
    # the request is refused; every retry after that (activity, orchestrator) is refused at once.
    assert took < 240, f"took {took:.0f}s"
    # A blob of the container named directly is still converted: only the listing is refused.
    status = host.run("cog_conversion", {"container": "unlistable", "blobs": ["fine.tif"],
                                         "output_container": "unlistable-out", "catalog": False})
    assert status["runtimeStatus"] == "Completed" and status["output"]["done"] == 1, status["output"]
    assert_named(status["output"]["failures"], where="named blob", server_paths=["/vsiaz/"])
