"""Command line for rmhgeoapi jobs.

    python cli.py submit cog_conversion container=rasters prefix=in/ --watch
    python cli.py status cog_conversion-1a2b3c4d5e6f
    python cli.py run hello_world count=5            # in-process, on the embedded runtime
    python cli.py demo [my.tif ...]                  # the README's main job, on embedded defaults

``submit`` and ``status`` talk to a running host: the embedded runtime (``make serve``, the default
URL) or an Azure Function App (``--url https://<app>.azurewebsites.net --key <function key>``, or
``RMH_API_URL`` / ``RMH_FUNCTION_KEY``). Parameters are ``key=value`` pairs; a value that parses as
JSON is sent as JSON (``count=5``, ``blobs='["a.tif"]'``), anything else as a string.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from raster_names import RASTER_SUFFIXES

DEFAULT_URL = "http://127.0.0.1:7071"
TERMINAL_STATES = {"Completed", "Failed", "Terminated", "Canceled"}
#: Activities each worker process of the embedded host runs at once (`make bench-sync --threads`).
PROCESS_THREADS = 2


class CliError(Exception):
    """A request the CLI could not make or the host refused; the message says why."""


def _field_types(operation: str | None) -> dict[str, set[str]]:
    """JSON types each request field of ``operation`` accepts (from its request model)."""
    from models import OPERATIONS

    model = OPERATIONS.get(operation or "")
    if model is None:
        return {}
    types: dict[str, set[str]] = {}
    for name, prop in model.model_json_schema().get("properties", {}).items():
        found = {option.get("type") for option in prop.get("anyOf", [prop])} - {None}
        types[name] = found or {"string"}
    return types


def parse_params(pairs: Sequence[str], operation: str | None = None) -> dict[str, Any]:
    """``key=value`` pairs as a request body, typed by the operation's fields when it is known:
    a text field keeps the text as given (``prefix=2024`` stays ``"2024"``), a list field takes a
    JSON list or a comma-separated list (``blobs=a.tif,b.tif``), anything else is parsed as JSON
    when it parses (``count=5``, ``catalog=false``) and sent as text otherwise."""
    types = _field_types(operation)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"parameter {pair!r} is not key=value "
                           f"(for example blobs='[\"a.tif\"]' or blobs=a.tif,b.tif)")
        accepts = types.get(key, set())
        if accepts == {"string"}:
            params[key] = value
            continue
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if "array" in accepts and not isinstance(parsed, list):
            parsed = [part.strip() for part in value.split(",") if part.strip()]
        elif "string" in accepts and not isinstance(parsed, (str, type(None))) and \
                not ({"integer", "number", "boolean"} & accepts):
            parsed = value
        params[key] = parsed
    return params


def operations_help() -> str:
    """The operations and their request fields, for ``--help``."""
    from models import OPERATIONS

    lines = ["operations (POST /api/jobs/<operation>; fields as key=value):"]
    for operation, model in OPERATIONS.items():
        summary = " ".join((model.__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"  {operation}: {summary}")
        schema = model.model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
            kind = "|".join("|".join(map(str, o["enum"])) if "enum" in o else o.get("type", "string")
                            for o in options) or "string"
            default = model.model_fields[name].default
            note = "required" if name in schema.get("required", []) else \
                "optional" if default is None else f"default {json.dumps(default, default=str)}"
            lines.append(f"      {name}: {kind} ({note})")
    lines += [
        "",
        "values: a text field takes the text as given (prefix=2024/); a list field takes JSON or a",
        "comma list (blobs='[\"a.tif\",\"b.tif\"]' or blobs=a.tif,b.tif); numbers and booleans",
        "as JSON (count=5, catalog=false). Unknown fields are refused by the host with a 400.",
    ]
    return "\n".join(lines)


class JobClient:
    """The job API over HTTP, with the function key sent as ``x-functions-key``."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method: str, path_or_url: str, body: Any = None) -> tuple[int, Any]:
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.key:
            req.add_header("x-functions-key", self.key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, _json_or_text(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json_or_text(err.read())
        except urllib.error.URLError as err:
            raise CliError(f"cannot reach {self.base_url}: {err.reason}") from None

    def submit(self, operation: str, params: dict[str, Any]) -> tuple[int, Any]:
        return self.request("POST", f"/api/jobs/{operation}", params)

    def status(self, instance_id: str) -> dict[str, Any]:
        code, body = self.request("GET", f"/api/jobs/{instance_id}")
        if code != 200:
            raise CliError(_error_text(code, body))
        return body

    def watch(self, instance_id: str, out: TextIO, interval: float = 1.0,
              timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job ends, drawing a progress line; returns the final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            status = self.status(instance_id)
            line = progress_line(status)
            if out.isatty():
                out.write(f"\r{line}\033[K")
            elif line != last:
                out.write(line + "\n")
            out.flush()
            last = line
            if status.get("runtimeStatus") in TERMINAL_STATES:
                if out.isatty():
                    out.write("\n")
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"job {instance_id} still {status.get('runtimeStatus')} after {timeout:.0f}s")
            time.sleep(interval)


def progress_line(status: dict[str, Any], width: int = 30) -> str:
    """``[#######.......] 47.0% 470/1000 failed 3 ETA 12:34:56 converting (Running)``"""
    progress = status.get("customStatus") or {}
    state = status.get("runtimeStatus")
    if not isinstance(progress, dict) or "total" not in progress:
        return f"{status.get('instanceId')}: {state}"
    percent = float(progress.get("percent") or 0.0)
    filled = int(width * percent / 100)
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {percent:5.1f}%",
             f"{progress.get('done', 0)}/{progress.get('total', 0)}"]
    if progress.get("failed"):
        parts.append(f"failed {progress['failed']}")
    if progress.get("eta") and state not in TERMINAL_STATES:
        parts.append(f"ETA {str(progress['eta'])[11:19]}")
    parts.append(f"{progress.get('stage', '')} ({state})")
    return " ".join(parts)


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def _error_text(code: int, body: Any) -> str:
    if isinstance(body, dict):
        problems = body.get("problems") or []
        lines = [f"HTTP {code}: {body.get('error', body)}"]
        lines += [f"  {p['field']}: {p['problem']}" for p in problems]
        if body.get("known_operations"):
            lines.append("  known operations: " + ", ".join(body["known_operations"]))
        return "\n".join(lines)
    return f"HTTP {code}: {body}"


def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    client = JobClient(args.url, args.key)
    params = parse_params(args.params, args.operation)
    if args.rerun:
        params["rerun"] = True
    code, body = client.submit(args.operation, params)
    if code == 200:
        out.write(f"{body.get('instanceId')} already finished; pass --rerun to run it again\n")
        out.write(json.dumps(body.get("output"), indent=2) + "\n")
        return 0
    if code not in (202, 409):
        raise CliError(_error_text(code, body))
    instance_id = body["id"]
    out.write(f"{'running already' if code == 409 else 'started'}: {instance_id}\n"
              f"status: {body['statusQueryGetUri']}\n")
    if not args.watch:
        return 0
    return _finish(client.watch(instance_id, out), out, params)


def _finish(status: dict[str, Any], out: TextIO, params: dict[str, Any] | None = None) -> int:
    out.write(f"{status.get('instanceId')}: {status.get('runtimeStatus')}\n")
    out.write(json.dumps(status.get("output"), indent=2, default=str) + "\n")
    notice = nothing_matched(params or {}, status.get("output"))
    if notice:
        out.write(notice + "\n")
    return exit_code(status)


def exit_code(status: dict[str, Any]) -> int:
    """0 when the job completed with every file done or skipped; 1 otherwise (failed, terminated,
    or completed with some files failed)."""
    output = status.get("output")
    partly = isinstance(output, dict) and output.get("completed_with_errors")
    return 0 if status.get("runtimeStatus") == "Completed" and not partly else 1


def nothing_matched(params: dict[str, Any], output: Any) -> str | None:
    """A sentence when a job over a prefix found no raster there (it succeeds, doing nothing)."""
    if not isinstance(output, dict) or output.get("total") or "prefix" not in params:
        return None
    plan = (output.get("detail") or {}).get("plan") or {}
    counts = plan.get("counts") or {}
    if any(counts.get(kind) for kind in ("added", "changed", "removed", "unchanged")):
        return None
    ignored = counts.get("ignored") or len((output.get("detail") or {}).get("ignored") or [])
    where = f"container {params['container']!r}" if params.get("container") else "the input container"
    return (f"nothing matched: no raster under prefix {params['prefix']!r} in {where}"
            + (f" ({ignored} other files ignored)" if ignored else "")
            + f"; rasters are files named {', '.join(sorted(RASTER_SUFFIXES))} and Zarr stores (*.zarr/)")


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    status = JobClient(args.url, args.key).status(args.instance_id)
    out.write(json.dumps(status, indent=2, default=str) + "\n")
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Run one job in-process on the embedded runtime and watch it to the end."""
    with embedded_host(args.state) as base_url:
        client = JobClient(base_url)
        params = parse_params(args.params, args.operation)
        params["rerun"] = True
        code, body = client.submit(args.operation, params)
        if code not in (202, 409):
            raise CliError(_error_text(code, body))
        return _finish(client.watch(body["id"], out, interval=0.25), out, params)


def local_mounts(config) -> dict[str, Path]:
    """What the embedded host serves under ``/files`` like blob storage: the local store and the
    static catalog, mirrored below their common parent so the catalog's relative asset hrefs
    resolve over HTTP as on disk (``.local/catalog`` → ``/files/catalog``)."""
    from local_files import mirrored_mounts
    from settings import CatalogBackend, StorageBackend

    directories = {}
    if config.storage_backend is StorageBackend.local:
        directories["storage"] = config.storage_local_dir
    if config.catalog_backend is CatalogBackend.static and not config.static_catalog_container:
        directories["catalog"] = config.static_catalog_dir
    for directory in directories.values():
        Path(directory).mkdir(parents=True, exist_ok=True)
    return mirrored_mounts(directories)


def embedded_runtime(state: str, *, port: int = 0, run_timers: bool = False, **options):
    """The app on the embedded runtime as ``make serve``, ``run`` and ``demo`` share it: the
    settings' task hub in ``<state>/durable.sqlite``, the local directories under ``/files``.

    Activities run in worker processes: raster and catalog work holds the GIL for much of its
    time, and processes doubled sync throughput over threads here (benchmarks/bench_sync.py);
    each runs two at once (``PROCESS_THREADS``), so one file's wait for storage or the database
    does not leave its core idle."""
    from local_runtime import LocalRuntime
    from settings import get_settings

    config = get_settings()
    Path(state).mkdir(parents=True, exist_ok=True)
    schedule = {"RMH_SYNC_SCHEDULE": config.sync_schedule,  # the settings' defaults when unset
                "RMH_EVENT_DRAIN_SCHEDULE": config.event_drain_schedule}
    return LocalRuntime("function_app:app", db_path=Path(state) / "durable.sqlite", port=port,
                        task_hub=config.task_hub_name, run_timers=run_timers, activity_pool="process",
                        activity_threads=PROCESS_THREADS,
                        files=local_mounts(config), settings={**schedule, **options.pop("settings", {})},
                        **options)


@contextlib.contextmanager
def embedded_host(state: str) -> Iterator[str]:
    """The app on the embedded runtime on a free loopback port, for one command."""
    with embedded_runtime(state) as runtime:
        yield runtime.base_url


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """The app over HTTP until interrupted, with its timers (``make serve``)."""
    import logging
    import signal
    import threading

    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from local_runtime import PortUnavailable
    from settings import get_settings

    watched = [] if args.no_events else (args.watch or get_settings().watched_containers)
    runtime = embedded_runtime(args.state, port=args.port, run_timers=True,
                               event_grid_containers=watched)
    try:
        runtime.start()
    except PortUnavailable as err:  # one line, not the bind's traceback
        raise CliError(f"{err}; stop what holds it or pass another --port") from None
    try:
        out.write(f"listening on {runtime.base_url}\n")
        if watched:
            out.write(f"  blob events of {', '.join(watched)} are ingested as they happen\n")
        for prefix, directory in runtime.files.items():
            out.write(f"  {runtime.base_url}{prefix}/  serves {directory}\n")
        out.flush()
        stop.wait()
    finally:
        runtime.stop()
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Generate a sample raster (plus the files given), then convert, tile and sync them."""
    from settings import get_settings

    config = get_settings()
    store = _demo_store(config)
    names = _demo_inputs(store, config.input_container, args.files, out)
    with embedded_host(args.state) as base_url:
        client = JobClient(base_url)
        jobs = [
            ("cog_conversion", {"blobs": names, "collection": "demo"}),
            ("process_tiled_raster", {"blob": names[0], "tile_size": 1024, "target_crs": "EPSG:3857",
                                      "collection": "demo-tiles"}),
            ("sync_container", {"collection": "demo-sync"}),
        ]
        outputs, worst = {}, 0
        for operation, params in jobs:
            out.write(f"\n== {operation}\n")
            code, body = client.submit(operation, {**params, "rerun": True})
            if code not in (202, 409):
                raise CliError(_error_text(code, body))
            status = client.watch(body["id"], out, interval=0.25)
            if status.get("runtimeStatus") != "Completed":
                return _finish(status, out)
            outputs[operation] = status["output"]
            _summary(operation, status["output"], out)
            worst = max(worst, exit_code(status))  # like `run`: non-zero when files failed
    _where(config, outputs, out)
    return worst


def _demo_store(config):
    from storage import store_from_settings

    store = store_from_settings(config)
    store.create_container(config.input_container)
    return store


def _demo_inputs(store, container: str, files: list[str], out: TextIO) -> list[str]:
    """The sample raster, generated once, and the user's files, uploaded to the input container."""
    import tempfile

    names = ["demo/sample-dem.tif"]
    if not store.exists(container, names[0]):
        with tempfile.TemporaryDirectory(prefix="rmh-demo-") as tmp:
            path = write_sample_raster(Path(tmp) / "sample-dem.tif")
            store.upload_from_path(container, names[0], path)
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise CliError(f"{file}: no such file")
        store.upload_from_path(container, f"demo/{path.name}", path)
        names.append(f"demo/{path.name}")
    out.write(f"inputs in container {container!r}: {', '.join(names)}\n")
    return names


def write_sample_raster(path: Path, width: int = 3072, height: int = 2048) -> Path:
    """A synthetic terrain model (float32 metres, UTM 33N, nodata outside a lake-free island):
    fractal noise over a ridge, so compression, overviews and reprojection behave as on a DEM."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(20261129)
    elevation = np.zeros((height, width), dtype="float32")
    for octave in range(7):
        cells = 2 ** (octave + 2)
        coarse = rng.standard_normal((cells + 1, cells + 1)).astype("float32")
        rows = np.linspace(0, cells, height)[:, None]
        cols = np.linspace(0, cells, width)[None, :]
        r0, c0 = rows.astype(int).clip(0, cells - 1), cols.astype(int).clip(0, cells - 1)
        fr, fc = rows - r0, cols - c0
        layer = (coarse[r0, c0] * (1 - fr) * (1 - fc) + coarse[r0 + 1, c0] * fr * (1 - fc)
                 + coarse[r0, c0 + 1] * (1 - fr) * fc + coarse[r0 + 1, c0 + 1] * fr * fc)
        elevation += layer * (800.0 / 2 ** octave)
    yy, xx = np.mgrid[0:height, 0:width]
    ridge = 1200.0 * np.exp(-(((xx - width * 0.55) / (width * 0.25)) ** 2 + ((yy - height * 0.5) / (height * 0.35)) ** 2))
    elevation = elevation + ridge + 300.0
    elevation[elevation < 0] = -9999.0
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 5200000, 30, 30), nodata=-9999.0,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(elevation, 1)
        dst.update_tags(TIFFTAG_DATETIME="2026:06:01 12:00:00")
    return path


def _summary(operation: str, output: dict[str, Any], out: TextIO) -> None:
    out.write(f"{operation}: {output.get('done', 0)} done, {output.get('skipped', 0)} skipped, "
              f"{output.get('failed', 0)} failed in {output.get('seconds') or 0:.1f}s\n")
    for failure in output.get("failures", [])[:10]:
        out.write(f"  failed {failure['name']}: {failure.get('reason')}\n")


def _where(config, outputs: dict[str, Any], out: TextIO) -> None:
    root = Path(config.storage_local_dir).resolve()
    mosaic = outputs.get("process_tiled_raster", {}).get("detail", {}).get("mosaic", {}).get("path")
    catalog = outputs.get("sync_container", {}).get("detail", {}).get("catalog", {}).get("catalog")
    out.write("\nwhere to look:\n")
    out.write(f"  COGs:          {root / config.output_container}\n")
    if mosaic:
        out.write(f"  mosaic (VRT):  {root / mosaic}\n")
    out.write(f"  STAC catalog:  {catalog or Path(config.static_catalog_dir).resolve() / 'catalog.json'}\n")
    out.write(f"  dashboard:     {DEFAULT_URL}/api/dashboard  (after `make serve`: these jobs, their tasks, "
              "metrics and a map of the catalog)\n")


def build_parser() -> argparse.ArgumentParser:
    epilog = operations_help()
    parser = argparse.ArgumentParser(prog="cli.py", description="Submit and watch rmhgeoapi jobs.",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("RMH_API_URL", DEFAULT_URL),
                        help=f"host base URL (default {DEFAULT_URL}, or RMH_API_URL)")
    parser.add_argument("--key", default=os.environ.get("RMH_FUNCTION_KEY"),
                        help="function key (or RMH_FUNCTION_KEY)")
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="start a job on a running host", epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("operation")
    submit.add_argument("params", nargs="*", help="key=value request fields")
    submit.add_argument("--watch", action="store_true", help="show progress until the job ends")
    submit.add_argument("--rerun", action="store_true", help="run again even if it finished")
    submit.set_defaults(handler=cmd_submit)
    status = sub.add_parser("status", help="show a job's status")
    status.add_argument("instance_id")
    status.set_defaults(handler=cmd_status)
    run = sub.add_parser("run", help="run a job in-process on the embedded runtime", epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("operation")
    run.add_argument("params", nargs="*", help="key=value request fields")
    run.add_argument("--state", default=".local", help="directory of the embedded task hub")
    run.set_defaults(handler=cmd_run)
    serve = sub.add_parser("serve", help="serve the app on the embedded runtime until interrupted")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--state", default=".local", help="directory of the embedded task hub")
    serve.add_argument("--watch", action="append", default=[], metavar="CONTAINER",
                       help="deliver this container's blob events to the app (Event Grid emulation; "
                            "default: RMH_EVENT_CONTAINERS, else the input container)")
    serve.add_argument("--no-events", action="store_true", help="deliver no blob events")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(handler=cmd_serve)
    demo = sub.add_parser("demo", help="convert, tile and sync a sample raster (and FILES) locally")
    demo.add_argument("files", nargs="*", help="more rasters to include")
    demo.add_argument("--state", default=".local", help="directory of the embedded task hub")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    from settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, out)
    except (CliError, SettingsError) as err:  # a bad setting is one line naming it, not a traceback
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
