"""Static checks of infra/ (azd + Bicep): every Bicep file parses (pycep, checkov's own Bicep
parser), modules get the parameters they declare, checkov finds no failed check that
infra/checkov-suppressions.toml does not list with a reason, the app settings the Bicep sets are
the ones settings.py reads (and build valid settings for an identity-only deployment), and
docs/deploy.md names every resource, role, parameter and setting the Bicep creates.

checkov and pycep run from their own venv (tests/tools.py), cached in the user's cache.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

import tools
from settings import ENV_PREFIX, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
INFRA = REPO_ROOT / "infra"
DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"

PARSE_SCRIPT = """
import json, sys
from pathlib import Path
import yaml
from pycep import BicepParser
parser, out = BicepParser(), {"bicep": {}, "errors": {}}
root = Path(sys.argv[1])
for path in sorted(root.glob("infra/**/*.bicep")):
    try:
        out["bicep"][path.relative_to(root).as_posix()] = parser.parse(file_path=path)
    except Exception as err:
        out["errors"][path.relative_to(root).as_posix()] = f"{type(err).__name__}: {err}"[:2000]
out["azure_yaml"] = yaml.safe_load((root / "azure.yaml").read_text())
print(json.dumps(out, default=str))
"""

# Values Azure assigns at deployment time, standing in when the Bicep's settings are evaluated.
DEPLOY_TIME = {
    "resourceToken": "abc123",
    "storage.outputs.blobEndpoint": "https://strmhabc123.blob.core.windows.net/",
    "postgres.outputs.fqdn": "psql-rmh-abc123.postgres.database.azure.com",
    "changes.outputs.endpoint": "https://evgt-changes-rmh-abc123.westeurope-1.eventgrid.azure.net/api/events",
}
# What an identity-only deployment needs besides the settings the host resolves (%RMH_...%) and
# the fields without a default: Azure storage through its account URL, pgSTAC through its DSN,
# signed in with an Entra token.
IDENTITY_ONLY = {"RMH_STORAGE_BACKEND", "RMH_STORAGE_ACCOUNT_URL", "RMH_CATALOG_BACKEND",
                 "RMH_PGSTAC_DSN", "RMH_PGSTAC_USE_MANAGED_IDENTITY"}


@pytest.fixture(scope="module")
def checkov_python(run_report) -> Path:
    started = time.monotonic()
    venv = tools.tool_venv("checkov")
    run_report.append(f"checkov tool venv: {venv} (ready in {time.monotonic() - started:.1f}s)")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def parsed(checkov_python) -> dict:
    proc = subprocess.run([str(checkov_python), "-c", PARSE_SCRIPT, str(REPO_ROOT)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def main_bicep(parsed) -> dict:
    return parsed["bicep"]["infra/main.bicep"]


def test_every_bicep_file_parses(parsed):
    assert parsed["errors"] == {}
    assert {"infra/main.bicep", "infra/app/function-app.bicep", "infra/app/storage.bicep",
            "infra/app/postgres.bicep", "infra/app/event-grid.bicep", "infra/app/rbac.bicep",
            "infra/app/monitoring.bicep", "infra/app/change-topic.bicep"} <= set(parsed["bicep"])


def test_modules_get_exactly_the_parameters_they_declare(parsed, main_bicep):
    for name, module in main_bicep["modules"].items():
        path = f"infra/{module['detail']['path']}"
        assert path in parsed["bicep"], f"module {name}: {path} does not exist"
        declared = parsed["bicep"][path]["parameters"]
        given = set(_module_config(module)["params"])
        required = {p for p, spec in declared.items() if spec.get("default") is None}
        assert given <= set(declared), f"module {name} passes undeclared {sorted(given - set(declared))}"
        assert required <= given, f"module {name} misses required {sorted(required - given)}"


def _module_config(module: dict) -> dict:
    """A module's body, also when it is deployed on a condition (``module x '...' = if (c) {...}``)."""
    config = module["config"]
    return config["config"] if "condition" in config else config


def test_main_parameters_file_names_only_declared_parameters(main_bicep):
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(main_bicep["parameters"])
    required = {p for p, spec in main_bicep["parameters"].items() if spec.get("default") is None}
    assert required <= set(values), f"azd cannot fill {sorted(required - set(values))}"


def test_azure_yaml_deploys_the_built_package_as_a_python_function_app(parsed):
    """The api service is the repository as a Python Function App whose deployed directory is the
    package the prepackage hook builds (tests/test_package.py builds and checks it azd's way)."""
    spec = parsed["azure_yaml"]
    assert spec["infra"]["path"] == "infra" and spec["infra"]["module"] == "main"
    api = spec["services"]["api"]
    assert {k: api[k] for k in ("project", "language", "host", "dist")} == {
        "project": ".", "language": "python", "host": "function", "dist": "dist/app"}
    assert api["hooks"]["prepackage"]["run"] == "infra/hooks/prepackage.sh"
    assert "deploy.py package --dir dist/app" in (REPO_ROOT / api["hooks"]["prepackage"]["run"]).read_text()
    hooks = [*spec["hooks"].values(), *api["hooks"].values()]
    assert {"preprovision", "postprovision", "postdeploy"} <= set(spec["hooks"])
    for hook in hooks:
        script = REPO_ROOT / hook["run"]
        assert script.is_file() and script.stat().st_mode & 0o111, script
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, script
    assert subprocess.run(["sh", "-n", str(INFRA / "hooks" / "python.sh")]).returncode == 0
    site = parsed["bicep"]["infra/app/function-app.bicep"]["resources"]["site"]["config"]
    assert site["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": "api"}


def _decorators(spec: dict) -> dict:
    return {d["type"]: d.get("argument") for d in spec.get("decorators", [])}


def test_maximum_instance_count_is_bounded_as_flex_consumption_bounds_it(parsed, main_bicep):
    """Flex Consumption refuses a maximum instance count outside 1 to 1,000 (its documented bounds;
    the lowest was 40 during the preview): the Bicep refuses it first, in main.bicep and in the
    module; azd fills it from MAXIMUM_INSTANCE_COUNT, and preprovision checks the bounds the
    platform reports for the region (tests/test_azd_hooks.py)."""
    for spec in (main_bicep["parameters"]["maximumInstanceCount"],
                 parsed["bicep"]["infra/app/function-app.bicep"]["parameters"]["maximumInstanceCount"]):
        bounds = _decorators(spec)
        assert (bounds.get("min_value"), bounds.get("max_value")) == (1, 1000)
    assert main_bicep["parameters"]["maximumInstanceCount"]["default"] == 40
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["maximumInstanceCount"]["value"] == "${MAXIMUM_INSTANCE_COUNT=40}"


def _condition(resource: dict):
    return resource["config"].get("condition") if "condition" in resource["config"] else None


def test_postgres_access_is_the_azure_rule_or_a_private_endpoint_never_both(parsed, main_bicep):
    """'azureServices' (default): the 0.0.0.0 rule and no network. 'privateEndpoint': a network
    whose app subnet the Function App integrates with, a private endpoint and DNS zone for the
    server, and no rule for all Azure addresses; the client's own rule stays in both."""
    assert _decorators(main_bicep["parameters"]["postgresAccess"])["allowed"] == ["azureServices", "privateEndpoint"]
    assert main_bicep["parameters"]["postgresAccess"]["default"] == "azureServices"
    assert main_bicep["modules"]["network"]["config"]["condition"] == "privateNetwork"
    assert main_bicep["variables"]["privateNetwork"]["value"]["operator"]["type"] == "equals"
    site_params = _module_config(main_bicep["modules"]["functionApp"])["params"]
    assert site_params["virtualNetworkSubnetId"]["operator"]["operands"]["condition"] == "privateNetwork"
    postgres = parsed["bicep"]["infra/app/postgres.bicep"]["resources"]
    assert _condition(postgres["allowAzure"]) == {"operator": {"type": "not", "operands": {"bool_value": "privateAccess"}}}
    assert _condition(postgres["privateEndpoint"]) == "privateAccess"
    assert _condition(postgres["privateDns"]) == "privateAccess"
    endpoint = postgres["privateEndpoint"]["config"]["config"]["properties"]
    assert endpoint["privateLinkServiceConnections"][0]["properties"]["groupIds"] == ["postgresqlServer"]
    network = parsed["bicep"]["infra/app/network.bicep"]["resources"]
    subnets = network["vnet"]["config"]["properties"]["subnets"]
    assert subnets[0]["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert network["dnsZone"]["config"]["name"] == "privatelink.postgres.database.azure.com"
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["postgresAccess"]["value"] == "${POSTGRES_ACCESS=azureServices}"


def test_blob_event_subscriptions_are_left_to_the_postdeploy_hook(parsed, main_bicep):
    """The topic, its identity and dead-letter role are Bicep's; the subscriptions are the hook's
    (they need the deployed function and the app's list of name endings): Bicep declares none, so
    provisioning again never rewrites the hook's filter."""
    assert "Microsoft.EventGrid/systemTopics/eventSubscriptions" not in _resource_types(parsed)
    assert {"AZURE_EVENTGRID_SYSTEM_TOPIC", "AZURE_EVENTGRID_DEADLETTER_CONTAINER", "RMH_EVENT_CONTAINERS",
            "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP"} <= set(main_bicep["outputs"])
    import azd_hooks

    hook = (REPO_ROOT / "azd_hooks.py").read_text()
    for output in ("AZURE_EVENTGRID_SYSTEM_TOPIC", "AZURE_EVENTGRID_DEADLETTER_CONTAINER", "RMH_EVENT_CONTAINERS"):
        assert f'"{output}"' in hook
    assert azd_hooks.EVENT_FUNCTION == "blob_events"


def test_change_events_go_to_an_identity_only_topic_the_app_may_send_to(parsed, main_bicep):
    """The custom topic takes CloudEvents and no keys (local auth off); the app's identity holds
    "EventGrid Data Sender" on it and gets its endpoint as RMH_EVENT_GRID_ENDPOINT."""
    topic = parsed["bicep"]["infra/app/change-topic.bicep"]["resources"]["topic"]
    assert topic["type"] == "Microsoft.EventGrid/topics"
    properties = topic["config"]["properties"]
    assert properties["inputSchema"] == "CloudEventSchemaV1_0" and properties["disableLocalAuth"] is True
    rbac = parsed["bicep"]["infra/app/rbac.bicep"]
    assert rbac["variables"]["roles"]["value"]["'EventGrid Data Sender'"] == "d5a91429-5739-47e2-a06b-3470a27159e7"
    assignment = rbac["resources"]["appChangeEvents"]["config"]
    assert assignment["scope"] == "changeTopic" and assignment["properties"]["principalId"] == "appPrincipalId"
    settings = main_bicep["variables"]["rmhSettings"]["value"]
    assert _evaluate(settings["RMH_EVENT_GRID_ENDPOINT"], main_bicep, {}) == DEPLOY_TIME["changes.outputs.endpoint"]
    assert "RMH_EVENT_GRID_ENDPOINT" in main_bicep["outputs"] and "AZURE_EVENTGRID_CHANGES_TOPIC" in main_bicep["outputs"]


# ------------------------------------------------------------------------------------ checkov

def _suppressions() -> list[dict[str, str]]:
    return tomllib.loads((INFRA / "checkov-suppressions.toml").read_text())["suppress"]


@pytest.fixture(scope="module")
def checkov_failures(checkov_python, run_report) -> dict:
    started = time.monotonic()
    proc = subprocess.run([str(checkov_python), "-m", "checkov.main", "-d", str(INFRA), "--framework",
                           "bicep", "secrets", "--quiet", "--compact", "--skip-download", "-o", "json"],
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    run_report.append(f"checkov on infra/: {time.monotonic() - started:.1f}s, "
                      + ", ".join(f"{r['check_type']} {r['summary']['passed']} passed "
                                  f"{r['summary']['failed']} failed" for r in reports))
    return {"reports": reports,
            "failed": {(f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]}}


def test_checkov_runs_the_bicep_checks_without_parse_errors(checkov_failures):
    bicep = next(r for r in checkov_failures["reports"] if r["check_type"] == "bicep")
    assert bicep["summary"]["parsing_errors"] == 0
    assert bicep["summary"]["passed"] >= 10 and bicep["summary"]["resource_count"] >= 20


def test_checkov_fails_no_check_that_is_not_suppressed_with_a_reason(checkov_failures):
    suppressed = {(s["check"], s["resource"]) for s in _suppressions()}
    unlisted = checkov_failures["failed"] - suppressed
    assert not unlisted, f"checkov failures not in infra/checkov-suppressions.toml: {sorted(unlisted)}"


def test_every_suppression_still_matches_a_failure_and_says_why(checkov_failures):
    entries = _suppressions()
    assert len({(s["check"], s["resource"]) for s in entries}) == len(entries), "duplicate entries"
    for entry in entries:
        assert len(entry["reason"].split()) >= 15, f"{entry['check']}: give a reason"
        assert (entry["check"], entry["resource"]) in checkov_failures["failed"], \
            f"{entry['check']} on {entry['resource']} no longer fails: remove the suppression"


# ------------------------------------------------------------------------- settings and docs

def _evaluate(value: Any, bicep: dict, overrides: dict[str, Any]) -> Any:
    """The value of a (small subset of) Bicep expression as pycep gives it."""
    def ev(node: Any) -> Any:
        if isinstance(node, str):
            return lookup(node) if node in names else _interpolate(node)
        if isinstance(node, list):
            return [ev(item) for item in node]
        if isinstance(node, dict) and "operator" in node:
            op = node["operator"]
            if op["type"] == "property_accessor":
                path = _dotted(node)
                if path in DEPLOY_TIME:
                    return DEPLOY_TIME[path]
                head, _, rest = path.partition(".")
                if head in names:  # a property of a variable or parameter (an object)
                    value = lookup(head)
                    for key in rest.split("."):
                        value = value[key]
                    return value
                raise AssertionError(f"no deploy-time value for {path}")
            if op["type"] == "conditional":
                operands = op["operands"]
                return ev(operands["true_value"] if ev(operands["condition"]) else operands["false_value"])
            raise AssertionError(f"operator {op['type']} not evaluated here")
        if isinstance(node, dict) and "function" in node:
            fn, args = node["function"]["type"], list(node["function"]["parameters"].values())
            values = [ev(a) for a in args]
            table = {"string": lambda v: json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else v,
                     "join": lambda items, sep: sep.join(items), "empty": lambda v: len(v) == 0,
                     "trim": str.strip, "split": lambda s, sep: s.split(sep),
                     "replace": lambda s, old, new: s.replace(old, new),
                     "union": lambda *arrays: list(dict.fromkeys(x for a in arrays for x in a))}
            assert fn in table, f"function {fn} not evaluated here"
            return table[fn](*values)
        if isinstance(node, dict):
            return {k.strip("'"): ev(v) for k, v in node.items()}
        return node

    def lookup(name: str) -> Any:
        if name in overrides:
            return overrides[name]
        if name in DEPLOY_TIME:
            return DEPLOY_TIME[name]
        if name in bicep.get("parameters", {}):
            return bicep["parameters"][name]["default"]
        return ev(bicep["variables"][name]["value"])

    def _interpolate(text: str) -> str:
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(DEPLOY_TIME.get(m.group(1)) or lookup(m.group(1))), text)

    names = set(bicep.get("parameters", {})) | set(bicep.get("variables", {})) | set(DEPLOY_TIME)
    return ev(value)


def _dotted(node: Any) -> str:
    if isinstance(node, str):
        return node
    operands = node["operator"]["operands"]
    return f"{_dotted(operands['operand_1'])}.{_dotted(operands['operand_2'])}"


def _field_env_names() -> dict[str, str]:
    return {f"{ENV_PREFIX}{name.upper()}": name for name in Settings.model_fields}


def _app_settings(parsed) -> dict[str, Any]:
    """Every app setting the Function App gets: the host's and the app's RMH_* ones (unevaluated)."""
    main = parsed["bicep"]["infra/main.bicep"]
    host = parsed["bicep"]["infra/app/function-app.bicep"]["variables"]["hostSettings"]["value"]
    assert _module_config(main["modules"]["functionApp"])["params"]["appSettings"] == "rmhSettings"
    return {**host, **main["variables"]["rmhSettings"]["value"]}


def _required_on_azure() -> set[str]:
    indexed = subprocess.run([sys.executable, "-I", str(REPO_ROOT / "tests" / "worker_index.py"),
                              str(REPO_ROOT), "--index-only"], capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin"}, cwd=REPO_ROOT)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    referenced = set(re.findall(r"%(RMH_[A-Z0-9_]+)%", indexed.stdout + (REPO_ROOT / "host.json").read_text()))
    without_default = {f"{ENV_PREFIX}{n.upper()}" for n, f in Settings.model_fields.items() if f.is_required()}
    assert {"RMH_TASK_HUB_NAME", "RMH_SYNC_SCHEDULE"} <= referenced
    return referenced | without_default | IDENTITY_ONLY


def test_every_rmh_name_in_infra_is_a_setting_of_settings_py():
    fields = _field_env_names()
    for path in sorted(INFRA.rglob("*")) + [REPO_ROOT / "azure.yaml"]:
        if path.is_file() and path.suffix in {".bicep", ".json", ".sh", ".yaml"}:
            for name in set(re.findall(r"\bRMH_[A-Z0-9_]+", path.read_text())):
                assert name in fields, f"{path.relative_to(REPO_ROOT)}: {name} is not a setting in settings.py"


def test_app_settings_cover_what_azure_requires(parsed):
    settings = _app_settings(parsed)
    missing = _required_on_azure() - set(settings)
    assert not missing, f"app settings the Bicep must set: {sorted(missing)}"
    assert {"AzureWebJobsStorage__credential", "AzureWebJobsStorage__queueServiceUri",
            "AzureWebJobsStorage__tableServiceUri", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= set(settings)
    assert not any("AccountKey" in str(v) or "SharedAccessSignature" in str(v) for v in settings.values())


@pytest.mark.parametrize("overrides", [{}, {"syncContainers": "landing, archive", "taskHubName": "rmhprod"}],
                         ids=["defaults", "sync-containers"])
def test_bicep_app_settings_build_valid_identity_only_settings(parsed, overrides, monkeypatch):
    main = parsed["bicep"]["infra/main.bicep"]
    values = _evaluate(main["variables"]["rmhSettings"]["value"], main, overrides)
    for key in list(__import__("os").environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in values.items():
        assert isinstance(value, str), f"{key} must be a string app setting, got {value!r}"
        monkeypatch.setenv(key, value)
    config = load_settings()
    assert config.storage_backend.value == "azure" and config.storage_connection_string is None
    assert config.storage_account_url == DEPLOY_TIME["storage.outputs.blobEndpoint"]
    assert config.catalog_backend.value == "pgstac" and config.pgstac_use_managed_identity is True
    dsn = config.pgstac_dsn.get_secret_value()
    assert "password" not in dsn and "sslmode=require" in dsn and "user=func-rmh-abc123" in dsn
    assert config.sync_containers == (["landing", "archive"] if overrides else [])
    assert config.task_hub_name == overrides.get("taskHubName", "rmhgeoapi")
    assert config.gdal_options["GDAL_CACHEMAX"] == "256"
    assert config.event_grid_endpoint == DEPLOY_TIME["changes.outputs.endpoint"] and config.events_enabled
    assert config.event_source == "/rmhgeoapi/func-rmh-abc123" and config.event_webhooks == []
    outputs = {name: _evaluate(spec["value"], main, overrides) for name, spec in main["outputs"].items()
               if name.startswith(ENV_PREFIX)}
    assert outputs and all(values[name] == value for name, value in outputs.items())


def _resource_types(parsed) -> set[str]:
    types = set()
    for bicep in parsed["bicep"].values():
        for resource in bicep.get("resources", {}).values():
            if not resource.get("existing"):
                types.add(resource["type"])
    return types


def test_deploy_doc_names_every_resource_role_parameter_and_setting(parsed):
    doc = DEPLOY_DOC.read_text()
    roles = parsed["bicep"]["infra/app/rbac.bicep"]["variables"]["roles"]["value"]
    names = {
        "resource type": _resource_types(parsed),
        "role": {name.strip("'") for name in roles},
        "app setting": set(_app_settings(parsed)),
        "parameter": set(parsed["bicep"]["infra/main.bicep"]["parameters"]),
        "output": set(parsed["bicep"]["infra/main.bicep"]["outputs"]),
    }
    assert len(names["resource type"]) >= 13 and len(names["role"]) == 6
    for kind, values in names.items():
        for value in sorted(values):
            assert f"`{value}`" in doc, f"docs/deploy.md does not name the {kind} `{value}`"
    assert "docs/deploy.md" in (REPO_ROOT / "README.md").read_text()


def _doc_commands(doc: str) -> list[str]:
    """Each command of the page's ``sh`` blocks (continuation lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", doc, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_command_of_the_deploy_doc_is_tested_or_needs_azure():
    """The walk-through table names each command of docs/deploy.md: it is run by named tests that
    exist, or it is marked as needing Azure."""
    doc = DEPLOY_DOC.read_text()
    walk = doc[doc.index("## Walked through, command by command"):]
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| (.+) \|$", walk, re.MULTILINE)
    assert len(rows) >= 15
    for command, checked in rows:
        references = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", checked)
        assert references or "needs Azure" in checked, f"{command}: neither tested nor marked as needing Azure"
        for path, name in references:
            source = (REPO_ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{command}: {path}::{name} does not exist"
    commands = _doc_commands(doc)
    assert len(commands) >= 12
    for line in commands:
        assert any(line.startswith(command) for command, _ in rows), f"docs/deploy.md runs `{line}`, not in the walk table"
