"""``python local_runtime.py serve`` as a user runs it: ``--files`` mounts served over real HTTP with
the protections of the ``/files`` serving (ranges, ETags, CORS, nothing hidden or outside), and a
port that is taken is one line naming it, not a traceback."""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_runtime_files import fetch

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"


def serve_command(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "local_runtime.py"), "serve", "--app",
            f"{APPS / 'crash_app.py'}:app", "--db", str(tmp_path / "serve.sqlite"), *extra]


def run_serve(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """A serve that is expected to refuse and exit (cwd without host.json: no stray settings)."""
    return subprocess.run(serve_command(tmp_path, *extra), cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[str, bytes, Path]]:
    """``serve --files /files/storage=DIR`` running on a free port; yields (base URL, blob, DIR)."""
    storage = tmp_path / "store"
    (storage / "cogs" / "a").mkdir(parents=True)
    (storage / ".meta").mkdir()
    blob = bytes(range(256)) * 64
    (storage / "cogs" / "a" / "x.tif").write_bytes(blob)
    (storage / ".meta" / "x.tif.json").write_text("{}")
    (tmp_path / "outside.txt").write_text("SENTINEL-OUTSIDE")
    process = subprocess.Popen(
        serve_command(tmp_path, "--port", "0", "--files", f"/files/storage={storage}"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()  # drained always: the host never blocks on the pipe
    try:
        base = next_line(lines, "listening on ").split()[-1]
        mount_line = next_line(lines, f"  {base}/files/", timeout=10)
        assert mount_line.split() == [f"{base}/files/storage/", "serves", str(storage)], mount_line
        yield base, blob, storage
    finally:
        process.terminate()
        process.wait(timeout=30)


def next_line(lines: queue.Queue, start: str, timeout: float = 60.0) -> str:
    """The first line of the host's output starting with ``start`` (AssertionError after
    ``timeout`` seconds, with what it printed)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.startswith(start):
            return line
        seen.append(line)
    raise AssertionError(f"no line starting {start!r} from serve: {''.join(seen)[-3000:]}")


def test_serve_files_option_serves_the_directory_like_blob_storage(mounted) -> None:
    base, blob, _ = mounted
    url = f"{base}/files/storage/cogs/a/x.tif"
    code, body, headers = fetch(url)
    assert (code, body) == (200, blob)
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Accept-Ranges"] == "bytes"
    code, body, headers = fetch(url, headers={"Range": "bytes=1000-1999"})
    assert (code, body) == (206, blob[1000:2000])
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(blob)}"
    code, body, _ = fetch(url, headers={"If-None-Match": headers["ETag"]})
    assert (code, body) == (304, b"")
    code, _, headers = fetch(url, method="OPTIONS")
    assert code == 204 and "Range" in headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("path", [".meta/x.tif.json", "%2e%2e/outside.txt", "..%2Foutside.txt",
                                  "cogs/../../outside.txt", "cogs/a", "nothing.tif", "cogs/a/x.tif%00"])
def test_serve_files_option_keeps_hidden_and_outside_files_out(mounted, path: str) -> None:
    base, _, _ = mounted
    code, body, _ = fetch(f"{base}/files/storage/{path}")
    assert code == 404 and b"SENTINEL" not in body and b"{}" != body


@pytest.mark.parametrize(("option", "message"), [
    ("/files/storage", "expected PREFIX=DIR"),
    ("/api=.", "must be /files or lie below it"),
    ("/files/../api=.", "must be /files or lie below it"),
    ("/files/x=does-not-exist", "is not a directory"),
])
def test_serve_refuses_a_bad_files_option_in_one_line(tmp_path: Path, option: str,
                                                       message: str) -> None:
    result = run_serve(tmp_path, "--port", "0", "--files", option)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "listening on" not in result.stdout


@pytest.mark.parametrize("option", ["--port", "--rpc-port"])
def test_serve_on_a_port_in_use_is_one_line_naming_it(tmp_path: Path, option: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        other = "--rpc-port" if option == "--port" else "--port"
        result = run_serve(tmp_path, option, str(port), other, "0", "--log-level", "ERROR")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"local_runtime.py serve: port {port} on 127.0.0.1 is already in use; "
                     f"stop what holds it or pass another {option}"], result.stderr
    assert "listening on" not in result.stdout
