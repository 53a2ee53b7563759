"""What the azd hooks run on the deployer's machine (not deployed; infra/hooks/*.sh call it).

    python azd_hooks.py preflight          # preprovision: everything a first `azd up` needs
    python azd_hooks.py subscribe-events   # postdeploy: blob events to the deployed blob_events

Standard library only, so both run before the repository's venv exists. The values come from the
environment azd gives its hooks (``azd env get-values``); ``az`` and ``azd`` are run as commands.

``preflight`` says everything that is missing at once, before provisioning starts: the tools the
later hooks use, the deploying principal's sign-in name, the address PostgreSQL lets through for
the first-run step (``CLIENT_IP_ADDRESS``), outbound TCP 5432 from this machine, the Python the
region's Flex Consumption offers, and the scale-out bound Flex accepts there.

``subscribe-events`` waits (bounded) until the deployed app has indexed ``blob_events``, then
creates or updates the Event Grid subscription(s) that deliver the watched containers' blob
events to it, filtered on the endings of the names the app takes for rasters
(``raster_names.event_suffixes``) within Event Grid's limit of 25 filter values per subscription.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO

import raster_names

REPO_ROOT = Path(__file__).resolve().parent
PARAMETERS_FILE = REPO_ROOT / "infra" / "main.parameters.json"
#: Pythons the app runs on (README: which to deploy), in the order a fallback prefers them.
SUPPORTED_PYTHONS = ("3.12", "3.11", "3.13")
#: Where the deployer's public address is asked for (plain text answer), unless PUBLIC_IP_URL says.
DEFAULT_PUBLIC_IP_URL = "https://api.ipify.org"
#: A host that accepts TCP on every port (an outbound-port tester), probed before the server exists.
DEFAULT_PORT_PROBE = "portquiz.net:5432"
POSTGRES_PORT = 5432
#: Event Grid: at most 25 filter values across all advanced filters of one subscription.
EVENT_GRID_MAX_FILTER_VALUES = 25
EVENT_SUBSCRIPTION_NAME = "blobevents"
EVENT_FUNCTION = "blob_events"
#: How long postdeploy waits for the deployed app to index blob_events, and how often it looks.
DEFAULT_EVENTS_WAIT_SECONDS = 600
DEFAULT_EVENTS_POLL_SECONDS = 15
#: az's exit code when an ARM resource does not exist.
AZ_RESOURCE_NOT_FOUND = 3


class HookError(Exception):
    """A hook step cannot go on; the message says what to do."""


class PreflightFailed(HookError):
    """Something a first deployment needs is missing; the message lists each with its fix."""


class AzFailed(HookError):
    """An ``az`` command failed for another reason than a missing resource."""


class FunctionNotIndexed(HookError):
    """The deployed app did not list blob_events within the wait."""


# ------------------------------------------------------------------------------------- commands

@dataclasses.dataclass(frozen=True)
class Answer:
    code: int
    stdout: str
    stderr: str


def run(command: Sequence[str]) -> Answer:
    proc = subprocess.run(list(command), capture_output=True, text=True)
    return Answer(proc.returncode, proc.stdout, proc.stderr)


def az(*args: str) -> Answer:
    return run(["az", *args])


def az_ok(*args: str) -> str:
    """stdout of a successful ``az`` command, else AzFailed with az's own message."""
    answer = az(*args)
    if answer.code != 0:
        raise AzFailed(f"`az {' '.join(args[:3])} ...` failed (exit {answer.code}): {answer.stderr.strip()[-800:]}")
    return answer.stdout.strip()


def azd_env_set(name: str, value: str) -> None:
    answer = run(["azd", "env", "set", name, value])
    if answer.code != 0:
        raise HookError(f"`azd env set {name}` failed: {answer.stderr.strip()[-500:]}")


def parameter_default(env_name: str) -> str | None:
    """The default ``infra/main.parameters.json`` gives ``${ENV_NAME=default}``."""
    text = PARAMETERS_FILE.read_text()
    match = re.search(r"\$\{" + re.escape(env_name) + r"=([^}]*)\}", text)
    return match.group(1) if match else None


# ------------------------------------------------------------------------------------ preflight

@dataclasses.dataclass
class Findings:
    """What preflight found: notes (said as they come) and problems (each with its fix)."""

    out: TextIO
    problems: list[str] = dataclasses.field(default_factory=list)

    def note(self, text: str) -> None:
        self.out.write(f"preflight: {text}\n")
        self.out.flush()

    def problem(self, text: str) -> None:
        self.problems.append(text)


def preflight(env: Mapping[str, str], out: TextIO = sys.stdout) -> Findings:
    """Every check; PreflightFailed lists all problems at once."""
    found = Findings(out)
    has_az = check_tools(found)
    if has_az:
        check_principal(env, found)
    check_client_ip(env, found)
    check_postgres_port(env, found)
    if has_az:
        check_flex_consumption(env, found)
    if found.problems:
        listed = "\n".join(f"  - {p}" for p in found.problems)
        raise PreflightFailed(f"{len(found.problems)} thing(s) to fix before provisioning:\n{listed}")
    return found


#: Commands the hooks run, and what each is for.
TOOLS = {
    "az": "the Azure CLI: the hooks ask it for the signed-in user, the region's Flex runtimes and the deployed function",
    "make": "GNU make: the hooks build the repository's venv with it (`make .venv/.installed`)",
    "npm": "Node.js 20+ with npm: `npm ci` installs the dashboard's libraries that go into the package",
}


def check_tools(found: Findings) -> bool:
    for tool, why in TOOLS.items():
        if shutil.which(tool) is None:
            found.problem(f"`{tool}` is not on PATH: install {why}")
    return shutil.which("az") is not None


def check_principal(env: Mapping[str, str], found: Findings) -> None:
    """The deployer's sign-in name: the PostgreSQL Entra administrator's role name."""
    if env.get("AZURE_PRINCIPAL_NAME"):
        return
    answer = az("ad", "signed-in-user", "show", "--query", "userPrincipalName", "-o", "tsv")
    name = answer.stdout.strip()
    if answer.code == 0 and name:
        azd_env_set("AZURE_PRINCIPAL_NAME", name)
        azd_env_set("AZURE_PRINCIPAL_TYPE", "User")
        found.note(f"deploying as {name} (AZURE_PRINCIPAL_NAME)")
        return
    found.problem("no signed-in user (`az login` first); for a service principal set its display name and "
                  "type: azd env set AZURE_PRINCIPAL_NAME <display name>; "
                  "azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal")


def public_address(env: Mapping[str, str]) -> tuple[str | None, str]:
    """This machine's public IPv4 address as a web service sees it, or None and why not."""
    url = env.get("PUBLIC_IP_URL") or DEFAULT_PUBLIC_IP_URL
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (an https URL or the test's)
            text = response.read(64).decode("ascii", "replace").strip()
        return str(ipaddress.IPv4Address(text)), url
    except (OSError, ValueError, urllib.error.URLError) as err:
        return None, f"{url}: {type(err).__name__}: {err}"


def check_client_ip(env: Mapping[str, str], found: Findings) -> None:
    """CLIENT_IP_ADDRESS: the address the first-run step reaches PostgreSQL from (a firewall rule)."""
    given = env.get("CLIENT_IP_ADDRESS", "").strip()
    seen, source = public_address(env)
    if not given:
        if seen is None:
            found.problem(f"CLIENT_IP_ADDRESS is not set and this machine's public address could not be "
                          f"found ({source}): azd env set CLIENT_IP_ADDRESS <your public IPv4 address>")
            return
        azd_env_set("CLIENT_IP_ADDRESS", seen)
        found.note(f"CLIENT_IP_ADDRESS set to {seen}, this machine's public address ({source}): "
                   "the PostgreSQL firewall lets it through for the first-run step")
        return
    try:
        address = ipaddress.IPv4Address(given)
    except ValueError:
        found.problem(f"CLIENT_IP_ADDRESS={given!r} is not an IPv4 address (PostgreSQL firewall rules take "
                      "IPv4): azd env set CLIENT_IP_ADDRESS <your public IPv4 address>")
        return
    if not address.is_global:
        found.problem(f"CLIENT_IP_ADDRESS={given} is a private address; the server sees your public one"
                      + (f" ({seen})" if seen else "") + ": azd env set CLIENT_IP_ADDRESS "
                      + (seen or "<your public IPv4 address>"))
        return
    if seen and seen != given and env.get("CLIENT_IP_CHECK", "").lower() != "off":
        found.problem(f"CLIENT_IP_ADDRESS is {given} but this machine reaches the internet as {seen} "
                      f"({source}); the first-run step would be refused: azd env set CLIENT_IP_ADDRESS {seen} "
                      "(or azd env set CLIENT_IP_CHECK off when PostgreSQL is reached by another route)")
        return
    found.note(f"CLIENT_IP_ADDRESS {given}" + (" matches this machine's public address" if seen == given else ""))


def check_postgres_port(env: Mapping[str, str], found: Findings) -> None:
    """Outbound TCP 5432 from this machine (networks that block it stop the first-run step)."""
    probe = env.get("POSTGRES_PORT_PROBE", "").strip()
    if probe.lower() == "off":
        found.note("outbound TCP 5432 not checked (POSTGRES_PORT_PROBE=off)")
        return
    server = env.get("AZURE_POSTGRES_SERVER_NAME", "").strip()
    if probe:
        host, _, port = probe.rpartition(":") if ":" in probe else (probe, "", str(POSTGRES_PORT))
    elif server:
        host, port = f"{server}.postgres.database.azure.com", str(POSTGRES_PORT)
    else:
        host, _, port = DEFAULT_PORT_PROBE.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=8):
            found.note(f"outbound TCP {port} open ({host} answered)")
    except socket.gaierror as err:
        found.note(f"outbound TCP {port} not checked: {host} does not resolve ({err}); "
                   "the first-run step checks PostgreSQL itself")
    except OSError as err:
        found.problem(f"outbound TCP {port} from this machine is blocked or filtered ({host}: {err}); the "
                      "first-run step connects to PostgreSQL on it. Run `azd up` from a network that allows "
                      "it (Azure Cloud Shell does), or set POSTGRES_PORT_PROBE=<host:port> to probe another "
                      "host, or POSTGRES_PORT_PROBE=off to skip this check")


def flex_python_runtimes(location: str) -> list[dict]:
    """``az functionapp list-flexconsumption-runtimes``: the Python versions Flex offers in a region."""
    text = az_ok("functionapp", "list-flexconsumption-runtimes", "--location", location,
                 "--runtime", "python", "-o", "json")
    runtimes = json.loads(text or "[]")
    return [r for r in runtimes if isinstance(r, dict) and r.get("version")]


def _instance_bounds(runtime: Mapping) -> tuple[int, int] | None:
    sku = runtime.get("sku")
    if isinstance(sku, list):
        sku = next((s for s in sku if isinstance(s, dict) and s.get("skuCode") == "FC1"), sku[0] if sku else None)
    bounds = (sku or {}).get("maximumInstanceCount") or {}
    low, high = bounds.get("lowestMaximumInstanceCount"), bounds.get("highestMaximumInstanceCount")
    return (int(low), int(high)) if low is not None and high is not None else None


def check_flex_consumption(env: Mapping[str, str], found: Findings) -> None:
    """The Python the app is deployed with is offered by Flex Consumption in the region (it varies),
    else a fallback; the scale-out bound is within what Flex accepts there."""
    location = env.get("AZURE_LOCATION", "").strip()
    if not location:
        found.note("AZURE_LOCATION not set yet: the region's Flex Consumption runtimes are not checked")
        return
    try:
        runtimes = flex_python_runtimes(location)
    except (AzFailed, ValueError) as err:
        found.problem(f"cannot list Flex Consumption's Python runtimes in {location}: {err}")
        return
    offered = {str(r["version"]): r for r in runtimes}
    if not offered:
        found.problem(f"Flex Consumption offers no Python in {location}: choose a region from "
                      "`az functionapp list-flexconsumption-locations -o table` (azd env set AZURE_LOCATION <region>)")
        return
    usable = [v for v in SUPPORTED_PYTHONS if v in offered]
    wanted = env.get("PYTHON_VERSION", "").strip()
    default = parameter_default("PYTHON_VERSION") or SUPPORTED_PYTHONS[0]
    listing = ", ".join(sorted(offered))
    if wanted:
        if wanted not in offered:
            found.problem(f"PYTHON_VERSION={wanted} is not offered by Flex Consumption in {location} (offered: "
                          f"{listing}): azd env set PYTHON_VERSION {usable[0] if usable else '<version>'}, "
                          "or choose another region")
            return
        chosen = wanted
    elif default in offered:
        chosen = default
    elif usable:
        chosen = usable[0]
        azd_env_set("PYTHON_VERSION", chosen)
        found.note(f"Python {default} is not offered by Flex Consumption in {location} (offered: {listing}): "
                   f"deploying Python {chosen} instead (PYTHON_VERSION={chosen})")
    else:
        found.problem(f"Flex Consumption in {location} offers Python {listing}, none of which the app runs on "
                      f"({', '.join(sorted(SUPPORTED_PYTHONS))}): choose another region")
        return
    found.note(f"Python {chosen} is offered by Flex Consumption in {location}")
    _check_instance_count(env, offered[chosen], location, found)


def _check_instance_count(env: Mapping[str, str], runtime: Mapping, location: str, found: Findings) -> None:
    bounds = _instance_bounds(runtime)
    text = env.get("MAXIMUM_INSTANCE_COUNT", "").strip() or parameter_default("MAXIMUM_INSTANCE_COUNT") or ""
    if bounds is None or not text:
        return
    low, high = bounds
    if not text.isdigit() or not low <= int(text) <= high:
        found.problem(f"MAXIMUM_INSTANCE_COUNT={text}: Flex Consumption in {location} accepts {low} to {high}: "
                      f"azd env set MAXIMUM_INSTANCE_COUNT <{low}..{high}>")


# ----------------------------------------------------------------------------------- blob events

@dataclasses.dataclass(frozen=True)
class EventSubscription:
    """One Event Grid subscription: blobs under ``prefixes`` whose names end in ``suffixes``."""

    name: str
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]


def container_prefix(container: str) -> str:
    return f"/blobServices/default/containers/{container}/"


def event_subscriptions(containers: Sequence[str], suffixes: Sequence[str] | None = None,
                        limit: int = EVENT_GRID_MAX_FILTER_VALUES) -> list[EventSubscription]:
    """The fewest subscriptions that cover every (container, suffix) pair with at most ``limit``
    filter values each (container prefixes plus suffixes). Suffixes compare case-insensitively in
    Event Grid, so each is sent once, lower case; the first subscription keeps the old name."""
    prefixes = sorted({container_prefix(c.strip()) for c in containers if c.strip()})
    endings = sorted({s.lower() for s in (suffixes if suffixes is not None else raster_names.event_suffixes())})
    if not prefixes or not endings:
        raise HookError("blob events need at least one container and one name ending")

    def count(per_sub: int) -> int:
        return math.ceil(len(prefixes) / per_sub) * math.ceil(len(endings) / (limit - per_sub))

    per_sub = min(range(1, min(len(prefixes), limit - 1) + 1), key=lambda c: (count(c), -c))
    plans = []
    for i in range(0, len(prefixes), per_sub):
        for j in range(0, len(endings), limit - per_sub):
            name = EVENT_SUBSCRIPTION_NAME if not plans else f"{EVENT_SUBSCRIPTION_NAME}-{len(plans) + 1}"
            plans.append(EventSubscription(name, tuple(prefixes[i:i + per_sub]),
                                           tuple(endings[j:j + limit - per_sub])))
    return plans


def wait_for_function(resource_group: str, app: str, *, wait_seconds: float, poll_seconds: float,
                      out: TextIO, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> str:
    """The resource id of ``blob_events`` once the deployed app lists it (a remote build and the
    host's indexing take a while after `azd deploy` returns); FunctionNotIndexed after the wait."""
    site = az_ok("functionapp", "show", "-g", resource_group, "-n", app, "--query", "id", "-o", "tsv")
    function_id = f"{site}/functions/{EVENT_FUNCTION}"
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        answer = az("resource", "show", "--ids", function_id, "--query", "id", "-o", "tsv")
        if answer.code == 0:
            out.write(f"postdeploy: {EVENT_FUNCTION} is indexed ({clock() - started:.0f}s)\n")
            return function_id
        if answer.code != AZ_RESOURCE_NOT_FOUND:
            raise AzFailed(f"cannot look up {EVENT_FUNCTION} on {app} (az exit {answer.code}): "
                           f"{answer.stderr.strip()[-800:]}")
        waited = clock() - started
        if waited + poll_seconds > wait_seconds:
            raise FunctionNotIndexed(
                f"{app} has not indexed {EVENT_FUNCTION} after {waited:.0f}s ({attempt} looks), so no Event Grid "
                f"subscription was created and blob events do not reach the app. Check that the deployment "
                f"finished and the app started (`az functionapp function list -g {resource_group} -n {app} -o table`; "
                "its log in Application Insights), then run `azd hooks run postdeploy`; "
                "BLOB_EVENTS_WAIT_SECONDS sets how long this waits")
        out.write(f"postdeploy: waiting for {app} to index {EVENT_FUNCTION} ({waited:.0f}s of {wait_seconds:.0f}s)\n")
        out.flush()
        sleep(poll_seconds)


def subscribe_blob_events(env: Mapping[str, str], out: TextIO = sys.stdout,
                          sleep: Callable[[float], None] = time.sleep) -> list[EventSubscription]:
    """Create or update the subscriptions (``az ... event-subscription create`` is a PUT) and
    delete ``blobevents-N`` ones a smaller plan no longer needs."""
    rg, app = _required(env, "AZURE_RESOURCE_GROUP"), _required(env, "AZURE_FUNCTION_APP_NAME")
    topic, account = _required(env, "AZURE_EVENTGRID_SYSTEM_TOPIC"), _required(env, "AZURE_STORAGE_ACCOUNT_NAME")
    dead_letter = _required(env, "AZURE_EVENTGRID_DEADLETTER_CONTAINER")
    containers = [c for c in _required(env, "RMH_EVENT_CONTAINERS").split(",") if c.strip()]
    plans = event_subscriptions(containers)
    function_id = wait_for_function(
        rg, app, wait_seconds=float(env.get("BLOB_EVENTS_WAIT_SECONDS") or DEFAULT_EVENTS_WAIT_SECONDS),
        poll_seconds=float(env.get("BLOB_EVENTS_POLL_SECONDS") or DEFAULT_EVENTS_POLL_SECONDS), out=out, sleep=sleep)
    account_id = az_ok("storage", "account", "show", "-n", account, "--query", "id", "-o", "tsv")
    for plan in plans:
        az_ok("eventgrid", "system-topic", "event-subscription", "create", "-g", rg,
              "--system-topic-name", topic, "-n", plan.name,
              "--endpoint-type", "azurefunction", "--endpoint", function_id,
              "--included-event-types", "Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted",
              "--advanced-filter", "subject", "StringBeginsWith", *plan.prefixes,
              "--advanced-filter", "subject", "StringEndsWith", *plan.suffixes,
              "--max-delivery-attempts", "30", "--event-ttl", "1440",
              "--max-events-per-batch", "1", "--preferred-batch-size-in-kilobytes", "64",
              "--deadletter-identity", "systemassigned",
              "--deadletter-identity-endpoint", f"{account_id}/blobServices/default/containers/{dead_letter}")
        out.write(f"postdeploy: {plan.name}: {len(plan.prefixes)} container(s), {len(plan.suffixes)} name endings\n")
    existing = json.loads(az_ok("eventgrid", "system-topic", "event-subscription", "list", "-g", rg,
                                "--system-topic-name", topic, "--query", "[].name", "-o", "json") or "[]")
    wanted = {p.name for p in plans}
    for name in existing:
        if re.fullmatch(rf"{EVENT_SUBSCRIPTION_NAME}-\d+", name) and name not in wanted:
            az_ok("eventgrid", "system-topic", "event-subscription", "delete", "-g", rg,
                  "--system-topic-name", topic, "-n", name, "--yes")
            out.write(f"postdeploy: {name} removed (no longer needed)\n")
    return plans


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise HookError(f"{name} is not in the environment: run this through azd (`azd hooks run ...`), "
                        "or `eval \"$(azd env get-values)\"` first")
    return value


# ---------------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="azd_hooks.py", description="The azd hooks' steps.")
    parser.add_argument("step", choices=["preflight", "subscribe-events"])
    args = parser.parse_args(argv)
    try:
        if args.step == "preflight":
            preflight(os.environ, out)
        else:
            subscribe_blob_events(os.environ, out)
    except HookError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
