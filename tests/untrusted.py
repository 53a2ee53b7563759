"""Witnesses for the untrusted-input tests: a loopback server that counts every connection, and an
inotify watch that counts every open of a sentinel file. A test asserts both stay at zero."""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from pathlib import Path

IN_OPEN = 0x00000020
IN_ACCESS = 0x00000001
_EVENT = struct.Struct("iIII")


class CountingServer:
    """A TCP listener on 127.0.0.1 that counts connections (answers each with an HTTP 404)."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "secret.tif") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._sock.close()


class OpenWatch:
    """Counts opens and reads of one file, by any process, through Linux inotify."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self._fd, str(self.path).encode(), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {self.path}")
        self.events = 0

    def count(self) -> int:
        """Events seen so far (opens and reads)."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self.events
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                self.events += 1
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self._fd)


def hostile_vrt(source: str) -> bytes:
    """A warped VRT (to be uploaded under a .tif name) over ``source``: GDAL's VRT driver opens a
    warped VRT's source as soon as the VRT itself is opened, so any driver-level look at these
    bytes by GDAL reaches ``source`` (a local file, or ``/vsicurl/`` + a URL)."""
    return ('<VRTDataset rasterXSize="8" rasterYSize="8" subClass="VRTWarpedDataset">'
            '<SRS>EPSG:4326</SRS><GeoTransform>0, 1, 0, 8, 0, -1</GeoTransform>'
            '<VRTRasterBand dataType="Byte" band="1" subClass="VRTWarpedRasterBand"/>'
            f'<GDALWarpOptions><SourceDataset relativeToVRT="0">{source}</SourceDataset>'
            '</GDALWarpOptions></VRTDataset>').encode()


def check_hostile_inputs(host, store, tmp_path: Path) -> dict:
    """Upload a VRT named ``evil.tif`` (sources: a sentinel file and a loopback URL) beside a good
    raster, run every operation that reads a blob over it, and submit target CRSs naming the
    sentinel and the URL. Returns what a test asserts on: the witnesses' counts and the answers."""
    from raster_factory import write_raster

    sentinel = write_raster(tmp_path / "sentinel.tif", width=8, height=8, count=1, crs="EPSG:4326")
    good = write_raster(tmp_path / "good.tif", width=64, height=64, count=1, crs="EPSG:32633")
    server, watch = CountingServer(), OpenWatch(sentinel)
    try:
        store.create_container("hostile")
        store.upload_bytes("hostile", "evil.tif", hostile_vrt(str(sentinel)))
        store.upload_bytes("hostile", "evil-url.tif", hostile_vrt("/vsicurl/" + server.url()))
        store.upload_from_path("hostile", "good.tif", good)
        answers = {
            "sync": host.run("sync_container", {"container": "hostile", "collection": "hostile"}),
            "convert": host.run("cog_conversion", {"container": "hostile",
                                                   "blobs": ["evil.tif", "evil-url.tif", "good.tif"],
                                                   "output_container": "hostile-out", "catalog": False}),
            "catalog": host.run("catalog_file", {"container": "hostile", "blob": "evil.tif", "collection": "hostile"}),
            "validate": host.run("validate_raster", {"container": "hostile", "blob": "evil.tif"}),
            "tiled": host.run("process_tiled_raster", {"container": "hostile", "blob": "evil.tif",
                                                       "output_container": "hostile-out", "catalog": False}),
            "crs": [host.submit("cog_conversion", {"container": "hostile", "blobs": ["good.tif"],
                                                   "output_container": "hostile-out", "target_crs": crs})
                    for crs in (str(sentinel), server.url(), f"file://{sentinel}", f"@{sentinel}",
                                f"+init={sentinel}:4326", "x" * 20000)],
        }
        return {"opens": watch.count(), "connections": server.connections, **answers}
    finally:
        watch.close()
        server.close()


def assert_nothing_reached(seen: dict) -> None:
    assert seen["opens"] == 0, "the sentinel file named by the VRT was opened"
    assert seen["connections"] == 0, "the URL named by the VRT or the CRS was fetched"
    for job in ("sync", "convert", "catalog", "validate"):
        output = seen[job]["output"]
        assert seen[job]["runtimeStatus"] == "Completed", (job, seen[job])
        refused = {f["name"]: f for f in output["failures"]}
        for name in ("evil.tif", "evil-url.tif") if job in ("sync", "convert") else ("evil.tif",):
            failure = refused[name]
            assert failure["error"] == "UnsupportedFormat", (job, failure)
            assert f"hostile/{name}" in failure["reason"] and "is a GDAL VRT" in failure["reason"], failure
            assert "/vsiaz/" not in failure["reason"] and "/storage/" not in failure["reason"], failure
    assert seen["sync"]["output"]["done"] == 1 and seen["convert"]["output"]["done"] == 1
    tiled = seen["tiled"]
    assert tiled["runtimeStatus"] in ("Completed", "Failed"), tiled
    for code, body in seen["crs"]:
        assert code == 400, (code, body)
        assert [p["field"] for p in body["problems"]] == ["target_crs"], body
