"""The adversarial pass of test_jobs_adversarial.py on the local directory + static catalog: a
file whose name holds a control character (written by hand: the store refuses such names) fails
as ``InvalidBlobName``; a blob and a prefix sharing a name (Azure holds both, a directory cannot)
fail the second output written as ``StorageRefused``, never as a raw ``NotADirectoryError``."""
from __future__ import annotations

from pathlib import Path

import pytest

from adversarial import check_adversarial, write_control_named_file
from services import applied_local_env


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial-local")
    env = {"RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(root / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(root / "catalog"),
           "RMH_TEMP_DIR": str(root / "work"), "RMH_INPUT_CONTAINER": "adversarial"}
    yield from applied_local_env(env)


def test_every_adversarial_file_fails_with_a_named_condition(host, store, tmp_path, shared_rasters, service_env):
    root = Path(service_env["RMH_STORAGE_LOCAL_DIR"])
    control = write_control_named_file(root, "adversarial", tmp_path)
    good = shared_rasters / "shade.tif"
    store.create_container("adversarial")
    store.upload_from_path("adversarial", "clash/a.jp2", good)           # its COG: clash/a.jp2.tif
    store.upload_from_path("adversarial", "clash/a.jp2.tif/b.tif", good)  # its COG: under clash/a.jp2.tif/
    outputs = check_adversarial(host, store, tmp_path, shared_rasters, container="adversarial",
                                server_paths=[str(root.resolve()), service_env["RMH_TEMP_DIR"]],
                                extra={control: "InvalidBlobName"})
    clash = {f["name"]: f["error"] for f in outputs["convert"]["failures"] if f["name"].startswith("clash/")}
    assert list(clash.values()) == ["StorageRefused"], clash  # whichever was written second
