"""The command line's own rough edges: typed key=value parameters, a --help that lists the
operations and their fields, one line (not a traceback) for a bad setting, a notice when a prefix
matches nothing, and the same exit code from ``run`` and ``demo`` when files fail."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli
from models import OPERATIONS

ROOT = Path(__file__).resolve().parent.parent


def test_parameters_are_typed_by_the_operations_fields():
    params = cli.parse_params(["blobs=x.tif", "prefix=2024", "catalog=false", "chunk_size=5",
                               "target_crs=3857", "collection=007"], "cog_conversion")
    assert params == {"blobs": ["x.tif"], "prefix": "2024", "catalog": False, "chunk_size": 5,
                      "target_crs": "3857", "collection": "007"}
    assert cli.parse_params(["blobs=a.tif, b.tif,"], "cog_conversion")["blobs"] == ["a.tif", "b.tif"]
    assert cli.parse_params(['blobs=["a,b.tif"]'], "cog_conversion")["blobs"] == ["a,b.tif"]
    assert cli.parse_params(["count=5", "name=7"], "hello_world") == {"count": 5, "name": "7"}
    # an operation the CLI does not know: JSON when it parses, text otherwise (the host decides)
    assert cli.parse_params(["a=1", "b=x"], "make_coffee") == {"a": 1, "b": "x"}
    with pytest.raises(cli.CliError, match="blobs=a.tif,b.tif"):
        cli.parse_params(["blobs"], "cog_conversion")


def test_help_lists_every_operation_its_fields_and_the_value_rule():
    for argv in (["--help"], ["run", "--help"], ["submit", "--help"]):
        done = subprocess.run([sys.executable, "cli.py", *argv], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        for operation, model in OPERATIONS.items():
            assert f"  {operation}: " in done.stdout, (argv, operation)
            for field in model.model_json_schema().get("properties", {}):  # what a client may send
                assert f"      {field}: " in done.stdout, (argv, operation, field)
        assert "requested_by" not in done.stdout  # set by the service, never by a client
        assert "blobs=a.tif,b.tif" in done.stdout and "key=value" in done.stdout


def test_a_bad_setting_is_one_line_naming_it(tmp_path):
    env = {**os.environ, "RMH_STORAGE_BACKEND": "nope"}
    for argv in (["demo", "--state", str(tmp_path)], ["run", "hello_world", "--state", str(tmp_path)]):
        done = subprocess.run([sys.executable, "cli.py", *argv], cwd=ROOT, capture_output=True, text=True, env=env)
        assert done.returncode == 2, done
        assert done.stderr.strip().splitlines() == [
            "error: invalid settings: RMH_STORAGE_BACKEND: Input should be 'local' or 'azure'"], done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_nothing_matched_names_the_prefix_and_container():
    empty = {"total": 0, "done": 0, "detail": {"ignored": ["a.txt"]}}
    assert cli.nothing_matched({"prefix": "x/", "container": "c"}, empty).startswith(
        "nothing matched: no raster under prefix 'x/' in container 'c' (1 other files ignored); rasters are "
        "files named .asc, .cog, .dem, ")
    unchanged = {"total": 0, "detail": {"plan": {"counts": {"unchanged": 3, "ignored": 0}}}}
    assert cli.nothing_matched({"prefix": "x/"}, unchanged) is None
    assert cli.nothing_matched({"prefix": "x/"}, {"total": 2}) is None
    assert cli.nothing_matched({}, empty) is None


def test_run_says_when_a_prefix_matches_nothing_and_exits_like_demo_on_failures(tmp_path, monkeypatch):
    from settings import get_settings

    for key in ("RMH_STORAGE_BACKEND", "RMH_CATALOG_BACKEND", "RMH_STORAGE_CONNECTION_STRING", "RMH_PGSTAC_DSN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RMH_STORAGE_LOCAL_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("RMH_STATIC_CATALOG_DIR", str(tmp_path / "catalog"))
    (tmp_path / "storage" / "rasters" / "in").mkdir(parents=True)
    (tmp_path / "storage" / "rasters" / "in" / "broken.tif").write_bytes(b"II*\x00 not a raster")
    get_settings.cache_clear()
    try:
        out = io.StringIO()
        assert cli.main(["run", "cog_conversion", "prefix=nothing/", "--state", str(tmp_path / "s")], out=out) == 0
        assert "nothing matched: no raster under prefix 'nothing/' in the input container; rasters are files named" in out.getvalue()
        out = io.StringIO()
        code = cli.main(["run", "cog_conversion", "prefix=in/", "--state", str(tmp_path / "s")], out=out)
        assert code == 1 and '"completed_with_errors": true' in out.getvalue(), out.getvalue()
        assert "nothing matched" not in out.getvalue()
    finally:
        get_settings.cache_clear()


def test_serve_on_a_port_in_use_is_one_line_naming_it(tmp_path):
    import socket

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RMH_")},
           "RMH_STORAGE_BACKEND": "local", "RMH_STORAGE_LOCAL_DIR": str(tmp_path / "storage"),
           "RMH_CATALOG_BACKEND": "static", "RMH_STATIC_CATALOG_DIR": str(tmp_path / "catalog"),
           "RMH_TEMP_DIR": str(tmp_path / "work")}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "cli.py", "serve", "--port", str(port), "--state", str(tmp_path / "s"),
                               "--no-events", "--log-level", "ERROR"],
                              cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; stop what holds it or pass another --port"], done.stderr
    assert "listening on" not in done.stdout
