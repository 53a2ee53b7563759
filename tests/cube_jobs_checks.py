"""The multidimensional inputs through the jobs, run by tests/jobs/test_jobs_cubes.py (Azurite +
pgSTAC) and test_jobs_cubes_local.py (local directory + static catalog): NetCDF-4, NetCDF
classic, HDF5, GRIB2 and Zarr v2 and v3 through ``sync_container``, ``cog_conversion`` and blob
events; hostile cubes refused by name while the rest completes; a file whose slice group fails
leaves nothing behind; deleting a file or store removes what it produced."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import rasterio

import activities
import cube_factory as cf
import cube_jobs
import stac_ops
from events import wait_until
from untrusted import CountingServer, OpenWatch

CONTAINER = "cubes"
EVENTS = "cube-events"  # watched, and converted (RMH_EVENT_CONVERT_CONTAINERS)
IN_PLACE = "cube-inplace"  # watched, cataloged in place
SLICES_PER_TASK = "2"  # RMH_CUBE_SLICES_PER_TASK of these modules: files of several groups

#: The good inputs: blob name (a store's prefix for Zarr) -> (time steps, slices).
GOOD = {"nc4/air.nc": (3, 6), "classic/air.nc": (2, 2), "hdf5/precip.h5": (2, 2), "grib/t2m.grib2": (2, 4),
        "zarr/sst-v2.zarr": (3, 3), "zarr/sst-v3.zarr": (3, 3)}


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The settings these modules add to their backend's."""
    return {"RMH_CUBE_SLICES_PER_TASK": SLICES_PER_TASK, "RMH_EVENT_CONTAINERS": f"{EVENTS},{IN_PLACE}",
            "RMH_EVENT_CONVERT_CONTAINERS": EVENTS, **(extra or {})}


def watching(store, tmp_path_factory):
    """Generator for a module's ``watching`` runtime: the app on the embedded runtime, its Event
    Grid emulation watching ``EVENTS``."""
    import function_app
    from local_runtime import LocalRuntime

    store.create_container(EVENTS)
    store.create_container(IN_PLACE)
    db = tmp_path_factory.mktemp("cubes-hub") / "hub.sqlite"
    with LocalRuntime(function_app.app, db_path=db, port=0, event_grid_containers=[EVENTS, IN_PLACE],
                      event_grid_poll_interval=0.5, blob_store=store) as runtime:
        yield runtime


def write_good(tmp: Path) -> dict[str, Path]:
    """A cube of each format (the names of ``GOOD``)."""
    grib = [dict(category=0, number=0, level=2, hour=0), dict(category=0, number=0, level=2, hour=6),
            dict(category=2, number=2, level=10, hour=0), dict(category=2, number=2, level=10, hour=6)]
    return {
        "nc4/air.nc": cf.write_netcdf(tmp / "air4.nc", steps=3, levels=(85000.0, 50000.0), bounds=True),
        "classic/air.nc": cf.write_netcdf(tmp / "air3.nc", fmt="NETCDF3_CLASSIC", steps=2, packed=False),
        "hdf5/precip.h5": cf.write_hdf5(tmp / "precip.h5"),
        "grib/t2m.grib2": cf.write_grib(tmp / "t2m.grib2", grib),
        "zarr/sst-v2.zarr": cf.write_zarr(tmp / "sst-v2.zarr", zarr_format=2),
        "zarr/sst-v3.zarr": cf.write_zarr(tmp / "sst-v3.zarr", zarr_format=3),
    }


def write_corrupt(tmp: Path) -> Path:
    """A NetCDF-4 of 4 steps whose third step's chunk is damaged: inspected fine, its group fails."""
    import h5py

    path = cf.write_netcdf(tmp / "broken.nc", steps=4, width=32, height=16, packed=False)
    with h5py.File(path, "r") as f:
        chunk = f["tas"].id.get_chunk_info(2)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\0" * chunk.size
    path.write_bytes(bytes(data))
    return path


def upload(store, container: str, name: str, path: Path) -> None:
    """A file as one blob; a store directory as one blob per file, its root markers last (as
    consolidating writers finish), so the marker's event sees the whole store."""
    store.create_container(container)
    if path.is_file():
        store.upload_from_path(container, name, path)
        return
    files = sorted((p for p in path.rglob("*") if p.is_file()),
                   key=lambda p: (p.parent == path and p.name in (".zmetadata", "zarr.json"), str(p)))
    for p in files:
        store.upload_from_path(container, f"{name}/{p.relative_to(path).as_posix()}", p)


def outputs_under(store, container: str, prefix: str) -> list[str]:
    from storage import ContainerNotFound

    try:
        return sorted(b.name for b in store.iter_blobs(container, prefix))
    except ContainerNotFound:
        return []


def read_blob_raster(store, container: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    gdal = store.gdal_read_path(container, name)
    with rasterio.Env(**gdal.config), rasterio.open(gdal.path) as ds:
        return ds.read(1), {"scale": ds.scales[0], "offset": ds.offsets[0], "nodata": ds.nodata,
                            "crs": ds.crs, "transform": ds.transform}


def items_of(collection: str) -> dict[str, Any]:
    cat = activities.catalog()
    return {i: cat.get_item(collection, i) for i in sorted(cat.list_item_etags(collection))}


def check_sync_catalogs_cubes_in_place(host, store, tmp: Path, validator) -> None:
    """One item per file and per store (not per blob), with the datacube fields and the source
    asset; hostile cubes refused by name; a second sync finds nothing to do."""
    for name, path in write_good(tmp).items():
        upload(store, CONTAINER, f"sync/{name}", path)
    status = host.run("sync_container", {"container": CONTAINER, "prefix": "sync/", "collection": "cube-sync"})
    output = status["output"]
    assert status["runtimeStatus"] == "Completed" and output["done"] == len(GOOD) and output["failed"] == 0, output
    items = items_of("cube-sync")
    assert sorted(items) == sorted(stac_ops.item_id_for_blob(CONTAINER, f"sync/{n}") for n in GOOD)
    for name, (steps, _) in GOOD.items():
        item = items[stac_ops.item_id_for_blob(CONTAINER, f"sync/{name}")].to_dict()
        validator.validate_item(item)
        props = item["properties"]
        assert list(item["assets"]) == ["source"] and props["rmh:source_blob"] == f"sync/{name}"
        assert "cube:dimensions" in props and props["cube:variables"], name
        times = [d for d in props["cube:dimensions"].values() if d["type"] == "temporal"]
        assert len(times[0]["values"]) == steps and props["start_datetime"] <= props["end_datetime"], name
    store_item = items[stac_ops.item_id_for_blob(CONTAINER, "sync/zarr/sst-v3.zarr")].to_dict()
    assert store_item["assets"]["source"]["type"] == "application/vnd+zarr"
    assert store_item["properties"]["rmh:source_etag"].startswith("zarr-")
    again = host.run("sync_container", {"container": CONTAINER, "prefix": "sync/", "collection": "cube-sync",
                                       "rerun": True})
    plan = again["output"]["detail"]["plan"]["counts"]
    assert plan["unchanged"] == len(GOOD) and plan["added"] == plan["changed"] == plan["removed"] == 0, plan


def check_conversion(host, store, tmp: Path, validator) -> dict[str, Any]:
    """Every format converted: one COG per variable and slice holding the stored values, an item
    per time step (datacube fields, COG assets, the source asset); hostile cubes (an external
    link, a variable named like an OPeNDAP URL) refused by name, a blob named like one converted
    without any request to it; a file whose group failed leaves no COG and no item; the
    collection summarises variables; a rerun skips every file."""
    good = write_good(tmp)
    for name, path in good.items():
        upload(store, CONTAINER, f"conv/{name}", path)
    sentinel = cf.write_netcdf(tmp / "sentinel.nc", steps=1)
    watch, server = OpenWatch(sentinel), CountingServer()
    try:
        upload(store, CONTAINER, "conv/hostile/link.nc", _external_link(tmp / "link.nc", sentinel))
        upload(store, CONTAINER, "conv/hostile/opendap.nc", _url_variable(tmp / "opendap.nc", server))
        url_name = f"conv/hostile/http:/127.0.0.1:{server.port}/dods#mode=dap4.nc"
        upload(store, CONTAINER, url_name, cf.write_netcdf(tmp / "plain.nc", steps=1))
        upload(store, CONTAINER, "conv/broken/broken.nc", write_corrupt(tmp))
        (tmp / "junk.grib2").write_bytes(b"GRIB" + bytes(200))  # GRIB by its bytes, and nothing more
        upload(store, CONTAINER, "conv/broken/junk.grib2", tmp / "junk.grib2")
        watch.count()
        opened = watch.events
        status = host.run("cog_conversion", {"container": CONTAINER, "prefix": "conv/", "collection": "cube-cogs"},
                          timeout=600)
        assert watch.count() == opened and server.connections == 0, "a cube's reference was followed"
    finally:
        watch.close()
        server.close()
    output = status["output"]
    failures = {f["name"]: f for f in output["failures"]}
    assert status["runtimeStatus"] == "Completed" and output["done"] == len(GOOD) + 1, output
    assert failures["conv/hostile/link.nc"]["error"] == "UnsafeReference", failures
    assert "external link" in failures["conv/hostile/link.nc"]["reason"]
    assert failures["conv/hostile/opendap.nc"]["error"] == "UnsafeName", failures
    assert failures["conv/broken/broken.nc"]["error"] == "UnreadableCube", failures
    assert "slice groups failed" in failures["conv/broken/broken.nc"]["reason"]
    junk = failures["conv/broken/junk.grib2"]  # GDAL's reason names the file: as the user knows it
    assert junk["error"] == "UnreadableCube" and f"'{CONTAINER}/conv/broken/junk.grib2'" in junk["reason"], junk
    assert len(failures) == 4 and all("/vsi" not in f["reason"] and "rmh-cube" not in f["reason"]
                                      and "<temp>" not in f["reason"] for f in failures.values()), failures
    for bad in ("hostile/link.nc", "hostile/opendap.nc", "broken/broken.nc", "broken/junk.grib2"):
        assert outputs_under(store, "cogs", f"{CONTAINER}/conv/{bad}/") == [], bad
    items = items_of("cube-cogs")
    for name, (steps, slices) in GOOD.items():
        prefix = f"{CONTAINER}/conv/{name}/"
        cogs = [n for n in outputs_under(store, "cogs", prefix) if n.endswith(".tif")]
        assert len(cogs) == slices, (name, cogs)
        mine = {i: it for i, it in items.items() if it.properties["rmh:source_blob"] == f"conv/{name}"}
        assert len(mine) == steps, (name, sorted(mine))
        hrefs = {a.href for it in mine.values() for k, a in it.assets.items()
                 if k not in ("source", "thumbnail")}
        assert len(hrefs) == slices and all(any(h.endswith(c) for h in hrefs) for c in cogs), name
        for item in mine.values():
            validator.validate_item(item.to_dict())
            assert item.assets["source"].media_type in ("application/netcdf", "application/x-hdf5",
                                                        "application/wmo-GRIB2", "application/vnd+zarr")
            assert "cube:dimensions" in item.properties and "thumbnail" in item.assets
    _check_stored_values(store, good["nc4/air.nc"])
    _check_preview(host, items[cube_jobs.slice_item_id(stac_ops.item_id_for_blob(CONTAINER, "conv/nc4/air.nc"), 1)])
    collection = activities.catalog().get_collection("cube-cogs").to_dict()
    assert {"tas", "precip", "sst"} <= set(collection["summaries"]["cube:variables"]), collection["summaries"]
    assert collection["cube:dimensions"]["time"]["type"] == "temporal"
    assert collection["extent"]["temporal"]["interval"][0][0] is not None
    return status


def check_rerun_skips(host, store) -> None:
    """A rerun finds every converted file current (its completion marker) without staging it;
    the refused ones are refused again."""
    before = {n: store.get_properties("cogs", n).etag for n in outputs_under(store, "cogs", f"{CONTAINER}/conv/")}
    rerun = host.run("cog_conversion", {"container": CONTAINER, "prefix": "conv/", "collection": "cube-cogs",
                                        "rerun": True}, timeout=600)
    output = rerun["output"]
    assert output["skipped"] == len(GOOD) + 1 and output["failed"] == 4, output
    after = {n: store.get_properties("cogs", n).etag for n in outputs_under(store, "cogs", f"{CONTAINER}/conv/")}
    assert after == before


def _check_stored_values(store, source: Path) -> None:
    """The COGs of the NetCDF-4 hold its stored values, with its scale, offset and fill."""
    stored = cf.stored_values(source, "tas")
    for step in range(3):
        for level in range(2):
            name = f"{CONTAINER}/conv/nc4/air.nc/tas/tas_time{step:05d}_plev{level:05d}.tif"
            values, band = read_blob_raster(store, "cogs", name)
            np.testing.assert_array_equal(values, stored[step, level])
            assert (band["scale"], band["offset"], band["nodata"]) == (0.01, 273.15, cf.FILL_INT16)


def _check_preview(host, item) -> None:
    """The dashboard's map offers a step item's variables and levels (its chooser's keys) and
    draws each from the app's preview tiles."""
    import previews
    from consumers import opaque_fraction, read_png

    stac = item.to_dict(include_self_link=False, transform_hrefs=False)
    keys = previews.previewable_keys(stac)
    assert keys == ["tas:plev0", "tas:plev1"], keys
    for key in keys:
        code, body, headers = _get_bytes(f"{host.url}/api/previews/cube-cogs/{item.id}/{key}/0/0/0")
        assert code == 200 and headers.get("Content-Type") == "image/png", body[:300]
        assert opaque_fraction(read_png(body)) > 0.4


def _get_bytes(url: str) -> tuple[int, bytes, dict[str, str]]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _external_link(path: Path, sentinel: Path) -> Path:
    import h5py

    cf.write_netcdf(path, steps=1)
    with h5py.File(path, "a") as f:
        f["sneaky"] = h5py.ExternalLink(str(sentinel), "/tas")
    return path


def _url_variable(path: Path, server: CountingServer) -> Path:
    """A NetCDF whose one variable is named like an OPeNDAP URL with a ``#mode=`` suffix."""
    cf.write_netcdf(path, steps=1, variables=())
    with netCDF4.Dataset(path, "a") as ds:
        ds.createVariable(f"http:__127.0.0.1:{server.port}_dods#mode=dap4", "f4", ("time", "lat", "lon"))[:] = 1.0
    return path


def check_new_version_replaces_the_old(host, store, tmp: Path) -> None:
    """A file overwritten with fewer time steps: converted again (its marker is stale), and what
    the old version wrote beyond the new one (COGs, thumbnails, step items) is removed; what
    stays is the new version's."""
    name = "conv/nc4/air.nc"
    upload(store, CONTAINER, name, cf.write_netcdf(tmp / "air-v2.nc", steps=1, levels=(85000.0, 50000.0)))
    etag = store.get_properties(CONTAINER, name).etag
    status = host.run("cog_conversion", {"container": CONTAINER, "blobs": [name], "collection": "cube-cogs"})
    assert status["output"]["done"] == 1, status["output"]
    cube_id = stac_ops.item_id_for_blob(CONTAINER, name)
    steps = {i: it for i, it in items_of("cube-cogs").items() if cube_jobs.is_slice_item_of(cube_id, i)}
    assert list(steps) == [cube_jobs.slice_item_id(cube_id, 0)], sorted(steps)
    assert next(iter(steps.values())).properties["rmh:source_etag"] == etag
    left = outputs_under(store, "cogs", f"{CONTAINER}/{name}/")
    assert [n.rsplit("/", 1)[1] for n in left] == [cube_jobs.MARKER, "tas_time00000_plev00000.thumbnail.png",
                                                   "tas_time00000_plev00000.tif", "tas_time00000_plev00001.tif"], left
    assert all(store.get_properties("cogs", n).metadata["rmh_source_etag"] == etag for n in left), left
    code, cube = host.get(f"/api/jobs/{status['instanceId']}:chunk-00000:cube-00000")
    assert code == 200, cube
    finished = cube["output"]["detail"]["finished"]  # as it reports: 4 COGs, 2 thumbnails, 2 items
    assert (finished["kept"], finished["outputs"], finished["items"]) == (True, 2, 1), finished
    assert (finished["removed_outputs"], finished["removed_items"]) == (6, 2), finished


def check_progress_and_tasks(host, status: dict) -> None:
    """The job's tasks list each cube's plan and slice groups by name, like tiles; a cube's
    sub-orchestration counts its groups as a tiled raster counts its tiles."""
    code, body = host.get(f"/api/jobs/{status['instanceId']}/tasks?top=5000")
    assert code == 200, body
    tasks = body["tasks"]
    groups = [t for t in tasks if t["activity"] == "convert_cube_group"]
    assert {t["name"] for t in groups} >= {f"conv/nc4/air.nc step {s}" for s in range(3)} | {
        "conv/zarr/sst-v2.zarr steps 0-1", "conv/zarr/sst-v2.zarr step 2"}, groups
    assert any(t["activity"] == "inspect_cube" and t["name"] == "conv/nc4/air.nc" for t in tasks)
    progress, count = {}, len(GOOD) + 5  # the good files, 2 hostile, 1 named like a URL, 2 broken
    for index in range(count + 1):  # every file of the one chunk is a cube: a sub-orchestration each
        code, cube = host.get(f"/api/jobs/{status['instanceId']}:chunk-00000:cube-{index:05d}")
        if index == count:
            assert code == 404, cube  # and no more
            break
        assert code == 200 and cube["operation"] == "convert_cube" and cube["runtimeStatus"] == "Completed", cube
        output = cube["output"]
        name = (output["detail"]["output"].removeprefix(f"cogs/{CONTAINER}/").rstrip("/")
                if "output" in output["detail"] else output["failures"][0]["name"])
        progress[name] = {k: cube["customStatus"][k] for k in ("stage", "total", "done", "failed")}
    assert len(progress) == count and {f"conv/{n}" for n in GOOD} | {
        "conv/hostile/link.nc", "conv/hostile/opendap.nc", "conv/broken/broken.nc",
        "conv/broken/junk.grib2"} <= set(progress), progress
    assert progress["conv/nc4/air.nc"] == {"stage": "converting", "total": 3, "done": 3, "failed": 0}, progress
    assert progress["conv/zarr/sst-v2.zarr"] == {"stage": "converting", "total": 2, "done": 2, "failed": 0}, progress
    assert progress["conv/broken/broken.nc"] == {"stage": "converting", "total": 2, "done": 1, "failed": 1}, progress
    failed = [t for t in groups if t["status"] == "failed"]
    assert failed and all(t["error"] == "UnreadableCube" and t["name"].startswith("conv/broken/broken.nc")
                          for t in failed), failed


def check_events(watching, store, tmp: Path) -> None:
    """Every format landing in a converting container becomes COGs and step items by its events
    alone (a store by its root marker's event), and in a watched container an item in place;
    deleting them removes what they produced."""
    good = write_good(tmp)
    for name, path in good.items():
        upload(store, EVENTS, f"drop/{name}", path)
    for name in ("nc4/air.nc", "zarr/sst-v2.zarr"):
        upload(store, IN_PLACE, f"drop/{name}", good[name])
    converted, in_place = stac_ops.resolve_collection_id(EVENTS), stac_ops.resolve_collection_id(IN_PLACE)
    ids = {cube_jobs.slice_item_id(stac_ops.item_id_for_blob(EVENTS, f"drop/{n}"), s)
           for n, (steps, _) in GOOD.items() for s in range(steps)}
    whole = {stac_ops.item_id_for_blob(IN_PLACE, f"drop/{n}") for n in ("nc4/air.nc", "zarr/sst-v2.zarr")}

    def ids_of(collection: str) -> set[str]:
        cat = activities.catalog()
        return set(cat.list_item_etags(collection)) if cat.get_collection(collection) is not None else set()

    wait_until(lambda: ids <= ids_of(converted) and whole <= ids_of(in_place), timeout=300,
               what="the event-ingested cubes' items")
    for name, (_, slices) in GOOD.items():
        cogs = [n for n in outputs_under(store, "cogs", f"{EVENTS}/drop/{name}/") if n.endswith(".tif")]
        assert len(cogs) == slices, (name, cogs)
    assert outputs_under(store, "cogs", f"{IN_PLACE}/") == []  # nothing written for in-place items
    item = activities.catalog().get_item(in_place, stac_ops.item_id_for_blob(IN_PLACE, "drop/zarr/sst-v2.zarr"))
    assert list(item.assets) == ["source"] and "cube:variables" in item.properties
    for container in (EVENTS, IN_PLACE):
        for listed in list(store.iter_blobs(container, "drop/")):
            store.delete(container, listed.name)

    wait_until(lambda: not ids & ids_of(converted) and not whole & ids_of(in_place), timeout=300,
               what="the deleted cubes' items removed")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and outputs_under(store, "cogs", f"{EVENTS}/drop/"):
        time.sleep(0.2)
    assert outputs_under(store, "cogs", f"{EVENTS}/drop/") == []
