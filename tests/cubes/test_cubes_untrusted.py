"""No file or URL is opened because a cube names it: HDF5 external links, virtual datasets and
external storage; NetCDF OPeNDAP URLs and ``#mode=`` suffixes; GDAL subdataset syntax and
``/vsicurl/`` in blob names or variable names; Zarr metadata pointing outside its store.

Each vector is proven as the VRT tests prove theirs: an inotify watch on a sentinel file and a
loopback server that counts connections both stay at zero. Where it matters, a control shows
that the witness does see the reference when GDAL is handed the file directly, so the test can
fail.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio

import cube_factory as cf
import cubes
from untrusted import CountingServer, OpenWatch


@pytest.fixture
def witnesses(tmp_path):
    """(sentinel HDF5 file, its open watch, the counting server)."""
    sentinel = tmp_path / "sentinel.h5"
    with h5py.File(sentinel, "w") as f:
        f.create_dataset("data", data=np.ones((3, 4, 8), "f4"), maxshape=(None, 4, 8))
    watch, server = OpenWatch(sentinel), CountingServer()
    yield sentinel, watch, server
    watch.close()
    server.close()


def naive_read(path: Path) -> None:
    """What a naive reader does: every dataset read by h5py through every link, and every
    subdataset opened and read by GDAL."""
    with h5py.File(path, "r") as f:
        for name in list(f):
            try:
                f[name][()]
            except (KeyError, OSError):
                pass
    gdal_reads_everything(path)


def gdal_reads_everything(path: Path) -> None:
    """Every subdataset opened and read by GDAL."""
    try:
        with rasterio.open(str(path)) as ds:
            for name in ds.subdatasets:
                with rasterio.open(name) as sub:
                    sub.read(1)
            if ds.count:
                ds.read(1)
    except rasterio.errors.RasterioError:
        pass


def external_link(path: Path, sentinel: Path) -> Path:
    cf.write_netcdf(path, steps=1)  # a real NetCDF-4 file ...
    with h5py.File(path, "a") as f:  # ... with one more link, to the sentinel
        f["sneaky"] = h5py.ExternalLink(str(sentinel), "/data")
    return path


def virtual_dataset(path: Path, sentinel: Path) -> Path:
    with h5py.File(path, "w") as f:
        layout = h5py.VirtualLayout(shape=(3, 4, 8), dtype="f4", maxshape=(None, 4, 8))
        source = h5py.VirtualSource(str(sentinel), "data", shape=(3, 4, 8), maxshape=(None, 4, 8))
        layout[:h5py.h5s.UNLIMITED] = source[:h5py.h5s.UNLIMITED]  # unlimited: resolved at open
        f.create_virtual_dataset("v", layout, fillvalue=0)
    return path


def external_storage(path: Path, sentinel: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("e", shape=(4, 8), dtype="f4", external=[(str(sentinel), 0, 4 * 8 * 4)])
    return path


@pytest.mark.parametrize("build,message", [
    (external_link, "external link 'sneaky'"),
    (virtual_dataset, "virtual dataset 'v'"),
    (external_storage, "stored in external files"),
], ids=["external-link", "virtual-dataset", "external-storage"])
def test_hdf5_references_are_refused_before_any_reader_follows_them(tmp_path, witnesses, build, message):
    sentinel, watch, _ = witnesses
    path = build(tmp_path / "hostile.h5", sentinel)
    watch.count()  # the build itself touched the sentinel
    opened_before = watch.events
    with pytest.raises(cubes.UnsafeReference, match=message):
        cubes.open_cube(path)
    assert watch.count() == opened_before, "the file the HDF5 file names was opened"
    naive_read(path)  # control: a reader that follows the reference is seen by the witness
    assert watch.count() > opened_before


def stage_as(tmp_path: Path, blob_name: str, content: bytes) -> Path:
    """A blob named ``blob_name`` staged as the activities will stage it."""
    key = cubes.source_key("rasters", blob_name, "0x8DC")
    return cubes.stage_file(tmp_path / "cache", key, size=len(content), max_bytes=10**8,
                            download=lambda path: path.write_bytes(content))


def test_urls_and_gdal_syntax_in_blob_names_never_reach_gdal(tmp_path, witnesses):
    sentinel, watch, server = witnesses
    good = cf.write_netcdf(tmp_path / "good.nc", steps=1).read_bytes()
    names = [
        server.url("data.nc") + "#mode=bytes",  # netCDF-c byte-range mode
        server.url("dods/data") + "#mode=dap4",  # OPeNDAP
        f"NETCDF:\"{sentinel}\":data",
        f"HDF5:\"{sentinel}\"://data",
        f"ZARR:\"/vsicurl/{server.url('store.zarr')}\"",
        f"/vsicurl/{server.url('x.nc')}",
        f"{sentinel}",
    ]
    for name in names:
        staged = stage_as(tmp_path, name, good)
        facts = cubes.open_cube(staged)
        assert [v.name for v in facts.variables] == ["tas"], name
        assert name not in str(staged) and "sentinel" not in str(staged)
    assert watch.count() == 0 and server.connections == 0
    gdal_reads_everything(Path(f"/vsicurl/{server.url('x.nc')}"))  # control: the witness counts
    assert server.connections > 0


def test_a_variable_named_like_gdal_syntax_is_refused_by_name(tmp_path, witnesses):
    import netCDF4

    sentinel, watch, server = witnesses
    path = cf.write_netcdf(tmp_path / "names.nc", steps=1)
    hostile = f'x":{server.port}'
    with netCDF4.Dataset(path, "a") as ds:
        v = ds.createVariable(hostile, "f4", ("time", "lat", "lon"))
        v[:] = 1.0
    facts = cubes.open_cube(path)
    assert [v.name for v in facts.variables] == ["tas"]
    assert [s.code for s in facts.skipped] == ["UnsafeName"] and hostile in facts.skipped[0].message
    assert watch.count() == 0 and server.connections == 0


def zarr_store(tmp_path: Path, name: str = "s.zarr", zarr_format: int = 2) -> Path:
    return cf.write_zarr(tmp_path / name, zarr_format=zarr_format)


def edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _escape_v2(root: Path, sentinel: Path):
    edit_json(root / ".zmetadata", lambda m: m["metadata"].update(
        {"../outside/.zarray": m["metadata"]["sst/.zarray"]}))


def _escape_v3(root: Path, sentinel: Path):
    edit_json(root / "zarr.json", lambda m: m["consolidated_metadata"]["metadata"].update(
        {"../../outside": m["consolidated_metadata"]["metadata"]["sst"]}))


def _transformer(root: Path, sentinel: Path):
    edit_json(root / "sst" / "zarr.json", lambda m: m.update(
        storage_transformers=[{"name": "redirect", "configuration": {"prefix": str(sentinel)}}]))


def _separator(root: Path, sentinel: Path):
    edit_json(root / "sst" / ".zarray", lambda m: m.update(dimension_separator="/../../"))


def _symlink(root: Path, sentinel: Path):
    target = root / "sst" / "0.0.0"
    target.unlink()
    os.symlink(sentinel, target)


@pytest.mark.parametrize("zarr_format,tamper,message", [
    (2, _escape_v2, "points outside the store"),
    (3, _escape_v3, "points outside the store"),
    (3, _transformer, "storage transformers"),
    (2, _separator, "chunk key separator"),
    (2, _symlink, "symbolic link"),
], ids=["v2-consolidated-key", "v3-consolidated-key", "v3-storage-transformer", "v2-separator", "symlink"])
def test_zarr_metadata_outside_the_store_is_refused(tmp_path, witnesses, zarr_format, tamper, message):
    sentinel, watch, server = witnesses
    root = zarr_store(tmp_path, zarr_format=zarr_format)
    tamper(root, sentinel)
    with pytest.raises(cubes.UnsafeReference, match=message):
        cubes.open_cube(root)
    assert watch.count() == 0 and server.connections == 0


def test_a_store_member_named_outside_the_prefix_is_never_written(tmp_path):
    for name in ("../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a//b", "./a"):
        with pytest.raises(cubes.UnsafeReference):
            cubes.stage_store(tmp_path / "cache", "k", [("ok/.zarray", 1), (name, 1)], max_bytes=10**6,
                              download=lambda n, p: p.write_bytes(b"{}"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "cache" / "rmh-cube-k" / "store").exists()
