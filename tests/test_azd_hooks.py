"""The azd hooks (infra/hooks/*.sh and azd_hooks.py), run as azd runs them: the shell script with
the environment azd gives it, ``az`` and ``azd`` replaced by stubs first on PATH (tests/cli_stubs.py)
that record each call and answer with the shapes Microsoft documents, since Azure is out of reach.
Everything else is real: the Pythons (pyenv's 3.10-3.13 where installed), a web server answering
the public-address question, TCP ports that are open or closed.

- Python: the hooks use whichever of 3.11-3.13 is installed, and say what to install otherwise,
  before anything runs.
- preprovision: every problem at once, each with its fix (tools, CLIENT_IP_ADDRESS, TCP 5432, the
  region's Flex Consumption Python with a fallback, the scale-out bound).
- postdeploy: waits (bounded) for blob_events to be indexed and fails loudly when it never is; the
  subscriptions' filters take every name the app takes for a raster, within Event Grid's limits.
"""
from __future__ import annotations

import glob
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import azd_hooks
import raster_names
from cli_stubs import Answer, CliStubs

REPO_ROOT = Path(__file__).resolve().parents[1]
HOOKS = REPO_ROOT / "infra" / "hooks"
SUBSCRIPTION = "3f2c9c4e-7b1d-4a4e-9a53-0c1e5d6f7a80"
RG = "rg-rmh-dev"
APP = "func-rmh-abc123"
SITE_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Web/sites/{APP}"
FUNCTION_ID = f"{SITE_ID}/functions/blob_events"
ACCOUNT = "strmhabc123"
ACCOUNT_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
TOPIC = "evgt-rmh-abc123"
PUBLIC_IP = "51.140.10.20"


def _run_hook(name: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", str(HOOKS / name)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


def _tools_dir(tmp_path: Path, *names: str) -> str:
    """A PATH directory with only the named real commands (so what else is on this machine's PATH
    does not leak into the test)."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for name in ("dirname", *names):
        found = shutil.which(name)
        assert found, f"{name} is needed by this test"
        (tools / name).symlink_to(found)
    return str(tools)


def _interpreter(version: str) -> str | None:
    """A real interpreter of ``version`` (pyenv's, or one on PATH that runs)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for candidate in sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}")) + [
            shutil.which(f"python{version}") or ""]:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def _needs(version: str) -> str:
    exe = _interpreter(version)
    if exe is None:
        pytest.skip(f"no Python {version} on this machine")
    return exe


# ------------------------------------------------------------------------------------- Python

def _hook_python(path: str, **env: str) -> subprocess.CompletedProcess:
    script = f'. "{HOOKS / "python.sh"}"; hook_python; echo "$HOOK_PYTHON"'
    return subprocess.run(["/bin/sh", "-c", script], env={"PATH": path, **env}, capture_output=True, text=True)


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_the_hooks_use_any_installed_python_from_3_11_to_3_13(tmp_path, version):
    exe = _needs(version)
    only = tmp_path / "bin"
    only.mkdir()
    (only / f"python{version}").symlink_to(exe)
    proc = _hook_python(str(only))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(only / f"python{version}")


def test_a_plain_python3_of_a_supported_version_is_used(tmp_path):
    only = tmp_path / "bin"
    only.mkdir()
    (only / "python3").symlink_to(sys.executable)  # this test's Python: 3.11-3.13
    proc = _hook_python(str(only))
    assert proc.returncode == 0 and proc.stdout.strip() == str(only / "python3"), proc.stderr


def test_without_a_supported_python_the_hooks_say_what_to_install_before_anything_runs(tmp_path):
    old = _needs("3.10")
    stubs = CliStubs(tmp_path)
    stubs.answer("az", [], Answer.ok())
    (stubs.bin / "python3").symlink_to(old)
    (stubs.bin / "python3.10").symlink_to(old)
    proc = _run_hook("preprovision.sh", stubs.env(_tools_dir(tmp_path)))
    assert proc.returncode == 1
    assert "need Python 3.11, 3.12 or 3.13" in proc.stderr and "python3 (3.10)" in proc.stderr
    assert "DEPLOY_PYTHON" in proc.stderr and "apt install python3.11" in proc.stderr
    assert stubs.calls() == []  # nothing ran


def test_deploy_python_names_the_one_to_use_and_only_that_one(tmp_path):
    old = _needs("3.10")
    only = tmp_path / "bin"
    only.mkdir()
    (only / "python3.11").symlink_to(sys.executable)
    proc = _hook_python(str(only), DEPLOY_PYTHON=old)
    assert proc.returncode == 1 and f"DEPLOY_PYTHON={old}" in proc.stderr
    proc = _hook_python(str(only), DEPLOY_PYTHON=sys.executable)
    assert proc.returncode == 0 and proc.stdout.strip() == sys.executable


def test_a_venv_of_an_unsupported_python_is_named_with_the_fix(tmp_path):
    old = _needs("3.10")
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").symlink_to(old)
    script = f'. "{HOOKS / "python.sh"}"; hook_venv'
    proc = subprocess.run(["/bin/sh", "-c", script], cwd=project, capture_output=True, text=True,
                          env={"PATH": _tools_dir(tmp_path, "make"), "DEPLOY_PYTHON": sys.executable})
    assert proc.returncode == 1
    assert ".venv runs Python 3.10" in proc.stderr and "rm -rf .venv" in proc.stderr


# ---------------------------------------------------------------------------------- preflight

class _PublicAddress(http.server.BaseHTTPRequestHandler):
    """What api.ipify.org answers: the caller's public address as plain text."""

    def do_GET(self):
        body = PUBLIC_IP.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def public_ip_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PublicAddress)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def open_port():
    """A TCP port that accepts connections (the stand-in for an open outbound 5432)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once the socket is closed


def _runtime(version: str, default: bool = False, lowest: int = 40, highest: int = 1000) -> dict:
    """One entry of `az functionapp list-flexconsumption-runtimes --runtime python -o json`."""
    return {"name": "python", "version": version, "isDefault": default, "endOfLifeDate": "2028-10-30T00:00:00Z",
            "sku": {"skuCode": "FC1",
                    "instanceMemoryMB": [{"size": 512, "isDefault": False}, {"size": 2048, "isDefault": True},
                                         {"size": 4096, "isDefault": False}],
                    "maximumInstanceCount": {"lowestMaximumInstanceCount": lowest,
                                             "highestMaximumInstanceCount": highest, "defaultValue": 100},
                    "functionAppConfigProperties": {"runtime": {"name": "python", "version": version}}}}


@pytest.fixture
def preflight(tmp_path, public_ip_url, open_port):
    """Runs preprovision.sh with stub az/azd, the real make and npm, and an environment as azd gives it."""
    stubs = CliStubs(tmp_path)
    stubs.answer("azd", ["env", "set"], Answer.ok())
    tools = _tools_dir(tmp_path, "make", "npm")

    def run(runtimes=None, path_tail=tools, **env):
        stubs.answer("az", ["functionapp", "list-flexconsumption-runtimes"],
                     Answer.json(runtimes if runtimes is not None else [_runtime("3.13"), _runtime("3.12", True),
                                                                        _runtime("3.11", True)]))
        values = {"DEPLOY_PYTHON": sys.executable, "AZURE_LOCATION": "swedencentral", "PUBLIC_IP_URL": public_ip_url,
                  "POSTGRES_PORT_PROBE": open_port, "AZURE_PRINCIPAL_NAME": "me@contoso.com",
                  "CLIENT_IP_ADDRESS": PUBLIC_IP, **env}
        values = {k: v for k, v in values.items() if v is not None}
        return _run_hook("preprovision.sh", stubs.env(path_tail, **values))

    run.stubs = stubs
    run.tools = tools
    return run


def test_preflight_passes_a_ready_machine_and_region(preflight):
    proc = preflight()
    assert proc.returncode == 0, proc.stderr
    assert f"CLIENT_IP_ADDRESS {PUBLIC_IP} matches" in proc.stdout
    assert "outbound TCP" in proc.stdout and "Python 3.12 is offered" in proc.stdout
    assert ["functionapp", "list-flexconsumption-runtimes", "--location", "swedencentral", "--runtime", "python",
            "-o", "json"] in preflight.stubs.calls("az")
    assert preflight.stubs.calls("azd") == []


def test_preflight_records_the_deployer_and_its_address_on_a_first_run(preflight):
    preflight.stubs.answer("az", ["ad", "signed-in-user", "show"], Answer.ok("me@contoso.com"))
    proc = preflight(AZURE_PRINCIPAL_NAME=None, CLIENT_IP_ADDRESS=None)
    assert proc.returncode == 0, proc.stderr
    assert preflight.stubs.calls("azd") == [
        ["env", "set", "AZURE_PRINCIPAL_NAME", "me@contoso.com"], ["env", "set", "AZURE_PRINCIPAL_TYPE", "User"],
        ["env", "set", "CLIENT_IP_ADDRESS", PUBLIC_IP]]
    assert f"CLIENT_IP_ADDRESS set to {PUBLIC_IP}" in proc.stdout


def test_preflight_lists_every_problem_at_once_with_its_fix(preflight):
    preflight.stubs.answer("az", ["ad", "signed-in-user", "show"], Answer.error("Please run 'az login' to setup account."))
    proc = preflight(AZURE_PRINCIPAL_NAME=None, CLIENT_IP_ADDRESS="51.140.99.99", POSTGRES_PORT_PROBE=_closed_port(),
                     PYTHON_VERSION="3.13", runtimes=[_runtime("3.12", True), _runtime("3.11", True)])
    assert proc.returncode == 1
    err = proc.stderr
    assert "4 thing(s) to fix before provisioning" in err
    assert "az login" in err and "AZURE_PRINCIPAL_TYPE ServicePrincipal" in err
    assert f"CLIENT_IP_ADDRESS is 51.140.99.99 but this machine reaches the internet as {PUBLIC_IP}" in err
    assert f"azd env set CLIENT_IP_ADDRESS {PUBLIC_IP}" in err
    assert "outbound TCP" in err and "blocked" in err and "Azure Cloud Shell" in err
    assert "PYTHON_VERSION=3.13 is not offered by Flex Consumption in swedencentral (offered: 3.11, 3.12)" in err
    assert "azd env set PYTHON_VERSION 3.12" in err
    assert preflight.stubs.calls("azd") == []  # nothing was changed


def test_preflight_falls_back_to_an_offered_python_when_the_default_is_not(preflight):
    proc = preflight(runtimes=[_runtime("3.13"), _runtime("3.11", True), _runtime("3.10", True)])
    assert proc.returncode == 0, proc.stderr
    assert ["env", "set", "PYTHON_VERSION", "3.11"] in preflight.stubs.calls("azd")
    assert "Python 3.12 is not offered by Flex Consumption in swedencentral" in proc.stdout
    assert "deploying Python 3.11 instead" in proc.stdout


def test_preflight_stops_in_a_region_without_flex_consumption_python(preflight):
    proc = preflight(runtimes=[])
    assert proc.returncode == 1 and "offers no Python in swedencentral" in proc.stderr
    assert "az functionapp list-flexconsumption-locations" in proc.stderr


def test_preflight_checks_the_scale_out_bound_against_the_region(preflight):
    assert preflight(MAXIMUM_INSTANCE_COUNT="2000").returncode == 1
    proc = preflight(MAXIMUM_INSTANCE_COUNT="20", runtimes=[_runtime("3.12", True, lowest=40, highest=500)])
    assert proc.returncode == 1
    assert "MAXIMUM_INSTANCE_COUNT=20: Flex Consumption in swedencentral accepts 40 to 500" in proc.stderr
    assert preflight(MAXIMUM_INSTANCE_COUNT="100").returncode == 0


@pytest.mark.parametrize("given, message", [
    ("10.1.2.3", "is a private address"),
    ("my-laptop", "is not an IPv4 address"),
])
def test_preflight_refuses_a_client_address_postgresql_would_never_see(preflight, given, message):
    proc = preflight(CLIENT_IP_ADDRESS=given)
    assert proc.returncode == 1 and message in proc.stderr and "azd env set CLIENT_IP_ADDRESS" in proc.stderr


def test_preflight_accepts_another_route_when_told(preflight):
    assert preflight(CLIENT_IP_ADDRESS="51.140.99.99", CLIENT_IP_CHECK="off").returncode == 0


def test_preflight_names_missing_tools(preflight, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dirname").symlink_to(shutil.which("dirname"))
    proc = preflight(path_tail=str(bare))
    assert proc.returncode == 1
    assert "`make` is not on PATH" in proc.stderr and "`npm` is not on PATH" in proc.stderr


# ------------------------------------------------------------------------------- blob events

def _advanced_filters(argv: list[str]) -> list[tuple[str, str, list[str]]]:
    filters, i = [], 0
    while i < len(argv):
        if argv[i] == "--advanced-filter":
            j = i + 3
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            filters.append((argv[i + 1], argv[i + 2], argv[i + 3:j]))
            i = j
        else:
            i += 1
    return filters


def _delivers(subject: str, filters) -> bool:
    """Event Grid's advanced filtering: every filter must match; a filter matches when any of its
    values does; string comparisons ignore case."""
    ops = {"StringBeginsWith": str.startswith, "StringEndsWith": str.endswith}
    return all(any(ops[op](subject.lower(), value.lower()) for value in values) for _, op, values in filters)


@pytest.fixture
def postdeploy(tmp_path):
    stubs = CliStubs(tmp_path)
    stubs.answer("az", ["functionapp", "show"], Answer.ok(SITE_ID))
    stubs.answer("az", ["storage", "account", "show"], Answer.ok(ACCOUNT_ID))
    stubs.answer("az", ["eventgrid", "system-topic", "event-subscription", "create"],
                 Answer.json({"name": "blobevents", "provisioningState": "Succeeded",
                              "type": "Microsoft.EventGrid/systemTopics/eventSubscriptions"}))
    stubs.answer("az", ["eventgrid", "system-topic", "event-subscription", "delete"], Answer.ok())

    def run(found_after: int | None, existing=("blobevents",), containers="rasters", wait="30", lookup=None, **env):
        """``found_after``: the function is listed from that look on (None: never)."""
        missing = Answer.not_found(f"Microsoft.Web/sites/{APP}/functions/blob_events", RG)
        answers = lookup or ([missing] if found_after is None else [missing] * found_after + [Answer.ok(FUNCTION_ID)])
        stubs.answer("az", ["resource", "show"], *answers)
        stubs.answer("az", ["eventgrid", "system-topic", "event-subscription", "list"], Answer.json(list(existing)))
        values = {"DEPLOY_PYTHON": sys.executable, "AZURE_RESOURCE_GROUP": RG, "AZURE_FUNCTION_APP_NAME": APP,
                  "AZURE_EVENTGRID_SYSTEM_TOPIC": TOPIC, "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
                  "AZURE_EVENTGRID_DEADLETTER_CONTAINER": "eventgrid-deadletter", "RMH_EVENT_CONTAINERS": containers,
                  "BLOB_EVENTS_WAIT_SECONDS": wait, "BLOB_EVENTS_POLL_SECONDS": "0.2", **env}
        return _run_hook("postdeploy.sh", stubs.env(**values))

    run.stubs = stubs
    return run


def _creates(stubs: CliStubs) -> list[list[str]]:
    return [c for c in stubs.calls("az") if c[:4] == ["eventgrid", "system-topic", "event-subscription", "create"]]


def test_postdeploy_waits_until_the_app_has_indexed_blob_events(postdeploy):
    proc = postdeploy(found_after=3)
    assert proc.returncode == 0, proc.stderr
    calls = postdeploy.stubs.calls("az")
    looks = [i for i, c in enumerate(calls) if c[:2] == ["resource", "show"]]
    assert len(looks) == 4 and calls[looks[0]][:3] == ["resource", "show", "--ids"] and FUNCTION_ID in calls[looks[0]]
    first_create = calls.index(_creates(postdeploy.stubs)[0])
    assert first_create > looks[-1]  # subscribed only once the function was there
    assert proc.stdout.count("waiting for") == 3 and "blob_events is indexed" in proc.stdout
    create = _creates(postdeploy.stubs)[0]
    assert create[create.index("--endpoint-type") + 1] == "azurefunction"
    assert create[create.index("--endpoint") + 1] == FUNCTION_ID
    assert create[create.index("--deadletter-identity-endpoint") + 1] == \
        f"{ACCOUNT_ID}/blobServices/default/containers/eventgrid-deadletter"


def test_postdeploy_fails_loudly_when_blob_events_never_appears(postdeploy):
    proc = postdeploy(found_after=None, wait="1")
    assert proc.returncode != 0
    assert f"{APP} has not indexed blob_events after" in proc.stderr
    assert "azd hooks run postdeploy" in proc.stderr and "BLOB_EVENTS_WAIT_SECONDS" in proc.stderr
    assert _creates(postdeploy.stubs) == []
    looks = [c for c in postdeploy.stubs.calls("az") if c[:2] == ["resource", "show"]]
    assert 3 <= len(looks) <= 8  # bounded: about wait / poll looks, then it stops


def test_postdeploy_stops_at_once_on_an_error_that_is_not_a_missing_function(postdeploy):
    proc = postdeploy(found_after=None, lookup=[Answer.error(
        "(AuthorizationFailed) The client 'me@contoso.com' does not have authorization to perform action "
        "'Microsoft.Web/sites/functions/read'")])
    assert proc.returncode != 0 and "AuthorizationFailed" in proc.stderr
    assert len([c for c in postdeploy.stubs.calls("az") if c[:2] == ["resource", "show"]]) == 1


SAMPLE_BLOBS = [
    "scene.tif", "a/b/SCENE.TIFF", "dem.gtif", "ortho.GeoTIFF", "mosaic.cog", "s2/T33.jp2", "photo.JPG",
    "hfa/lc.img", "era5/t2m.nc", "era5/t2m.nc4", "icesat.h5", "smap.HDF5", "omi.he5", "gfs/f000.grib2",
    "gfs/f000.GRB2", "ecmwf.grib", "ecmwf.grb", "stores/era5.zarr/.zmetadata", "stores/era5.zarr/zarr.json",
    "stores/era5.zarr/t2m/zarr.json", "stores/era5.zarr/t2m/0.0.0", "stores/era5.zarr/.zgroup",
    "notes.txt", "readme", "scene.tif.aux.xml", "cogs-index.json",
]


@pytest.mark.parametrize("containers", ["rasters", "rasters,landing,archive",
                                        ",".join(f"sync{i:02d}" for i in range(30))])
def test_the_subscriptions_deliver_exactly_the_blobs_the_app_takes_for_rasters(postdeploy, containers):
    """For each watched container and sample name: delivered by exactly one subscription iff the
    app takes it for a raster (or it is a Zarr store's marker); never a blob of another container;
    every subscription within Event Grid's 25 filter values."""
    proc = postdeploy(found_after=0, containers=containers)
    assert proc.returncode == 0, proc.stderr
    subscriptions = [_advanced_filters(c) for c in _creates(postdeploy.stubs)]
    for filters in subscriptions:
        assert sum(len(values) for _, _, values in filters) <= azd_hooks.EVENT_GRID_MAX_FILTER_VALUES
        assert [(key, op) for key, op, _ in filters] == [("subject", "StringBeginsWith"), ("subject", "StringEndsWith")]
        assert all(v == v.lower() for v in filters[1][2])
    for container in [*containers.split(","), "cogs"]:
        for blob in SAMPLE_BLOBS:
            subject = f"/blobServices/default/containers/{container}/blobs/{blob}"
            wanted = container != "cogs" and (raster_names.is_raster_name(blob) or bool(raster_names.zarr_store_of(blob)))
            delivered = sum(_delivers(subject, filters) for filters in subscriptions)
            assert delivered == (1 if wanted else 0), (subject, delivered)


def test_the_filter_takes_the_formats_the_app_accepts(postdeploy):
    postdeploy(found_after=0)
    endings = {v for c in _creates(postdeploy.stubs) for v in _advanced_filters(c)[1][2]}
    assert endings == {s.lower() for s in raster_names.event_suffixes()}
    assert {".jp2", ".jpg", ".img", ".gtif", ".geotiff", ".cog", ".nc", ".nc4", ".h5", ".hdf5", ".he5", ".grib",
            ".grib2", ".grb", ".grb2", ".zarr/.zmetadata", ".zarr/zarr.json"} <= endings
    assert ".TIF" not in endings  # Event Grid ignores case: one value per ending


def test_postdeploy_removes_subscriptions_a_smaller_plan_no_longer_needs(postdeploy):
    proc = postdeploy(found_after=0, existing=("blobevents", "blobevents-2", "blobevents-3", "audit"))
    assert proc.returncode == 0, proc.stderr
    names = [c[c.index("-n") + 1] for c in _creates(postdeploy.stubs)]
    assert names == ["blobevents", "blobevents-2"]
    deletes = [c for c in postdeploy.stubs.calls("az") if c[:4] == ["eventgrid", "system-topic", "event-subscription", "delete"]]
    assert [d[d.index("-n") + 1] for d in deletes] == ["blobevents-3"]  # never a subscription not ours


def test_the_plan_uses_the_fewest_subscriptions():
    suffixes = raster_names.event_suffixes()
    assert len(azd_hooks.event_subscriptions(["rasters"])) == -(-len(suffixes) // 24)
    many = azd_hooks.event_subscriptions([f"c{i}" for i in range(40)])
    pairs = {(p, s) for sub in many for p in sub.prefixes for s in sub.suffixes}
    assert len(pairs) == 40 * len(suffixes)
    assert all(len(sub.prefixes) + len(sub.suffixes) <= 25 for sub in many)
