"""Local working files: one directory (RMH_TEMP_DIR) holds every staging directory, stale ones
(left by a killed worker) are removed when a worker starts, and files a local store writes get
the umask's mode."""
from __future__ import annotations

import datetime as dt
import os
import stat
import time

import pytest

import activities
import storage
from settings import get_settings


@pytest.fixture
def work_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RMH_TEMP_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
    get_settings.cache_clear()
    activities._stale_removed.clear()
    yield tmp_path / "work"
    get_settings.cache_clear()
    activities._stale_removed.clear()


def test_stale_staging_is_removed_when_a_worker_starts(work_root):
    work_root.mkdir()
    old = time.time() - activities.function_timeout().total_seconds() - 60
    stale_dir, stale_file = work_root / "rmh-cog-killed", work_root / "rmh-tile-killed.tif"
    stale_dir.mkdir()
    (stale_dir / "out.tif").write_bytes(b"half a cog")
    stale_file.write_bytes(b"x")
    fresh, foreign = work_root / "rmh-cog-running", work_root / "someone-else"
    fresh.mkdir()
    foreign.mkdir()
    for path in (stale_dir, stale_file, foreign):
        os.utime(path, (old, old))
    assert activities.work_dir() == work_root
    assert not stale_dir.exists() and not stale_file.exists()
    assert fresh.exists() and foreign.exists()
    with activities.staging_dir("cog") as tmp:
        assert os.path.dirname(tmp) == str(work_root) and os.path.basename(tmp).startswith("rmh-cog-")
    assert activities.gdal_config()["CPL_TMPDIR"] == str(work_root)


def test_function_timeout_comes_from_host_json():
    assert activities.function_timeout() == dt.timedelta(minutes=30)


def test_local_store_files_have_the_umask_mode(work_root, tmp_path):
    store = storage.LocalDirStore(tmp_path / "storage", temp_dir=work_root)
    store.create_container("modes")
    info = store.upload_bytes("modes", "a/b.json", b"{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "storage" / "modes" / "a" / "b.json").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask, oct(mode)
    assert info.size == 2
    assert store.read_head("modes", "a/b.json", 1) == b"{"
