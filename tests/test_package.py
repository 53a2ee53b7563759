"""The deployment package (`make package`): what it holds, that it loads on its own, and that azd
deploys exactly it.

The package is unpacked into an empty directory and given a fresh venv with ``requirements.txt``
only (what the remote build installs); there, without the local runtime, the tests, ``cli.py`` or
``../shared``, the app is imported and indexed as the Python worker does (on Python 3.13+ by the
worker's own runtime library, ``azure-functions-runtime``). Which files of the tree are deployed
comes from ``.funcignore`` alone; besides them the zip carries the dashboard's npm files, copied
from ``node_modules`` (which ``.funcignore`` leaves out) with their licences.

azd builds its own zip: it runs the service's ``prepackage`` hook from ``azure.yaml``, then zips
the service's directory (``project``, or ``dist`` under it) the way its Function App target does
(``azd_deployable_zip`` below follows azd's ``createDeployableZip``). That zip, built from a copy of
the source tree, must hold the same files as ``make package``'s, and serve every file the page names.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

import dashboard
import deploy

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_INDEX = Path(__file__).with_name("worker_index.py")
SIZE_BUDGET = 1024 * 1024  # the zip carries source only; dependencies come from the remote build


def _index(python: Path | str, app_dir: Path, *extra: str) -> dict:
    proc = subprocess.run([str(python), "-I", str(WORKER_INDEX), str(app_dir), *extra], cwd=app_dir,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(app_dir.parent)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> deploy.PackageReport:
    return deploy.build_package(REPO_ROOT, tmp_path_factory.mktemp("dist") / "rmhgeoapi.zip")


@pytest.fixture(scope="module")
def fresh_app(package, tmp_path_factory, run_report):
    """The package unpacked into an empty directory, with a fresh venv from its requirements.txt."""
    work = tmp_path_factory.mktemp("fresh")
    app_dir, venv = work / "app", work / "venv"
    with zipfile.ZipFile(package.path) as archive:
        archive.extractall(app_dir)
    base = getattr(sys, "_base_executable", None) or sys.executable
    started = time.monotonic()
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", "-r", str(app_dir / "requirements.txt")],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-4000:]
    install_seconds = time.monotonic() - started
    before = _tree(app_dir)
    result = _index(venv / "bin" / "python", app_dir)
    run_report.append(
        f"package: {package.summary()}; fresh venv (Python {result['python']}) installs "
        f"{_site_packages_mib(venv):.0f} MiB of dependencies in {install_seconds:.0f}s; "
        f"indexed {len(result['functions'])} functions with {result['loader']}")
    return {"dir": app_dir, "venv": venv, "index": result, "before": before}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def _site_packages_mib(venv: Path) -> float:
    site = next((venv / "lib").glob("python3.*/site-packages"))
    skip = {"pip", "setuptools", "_distutils_hack"}
    total = 0
    for path in site.rglob("*"):
        top = path.relative_to(site).parts[0]
        if path.is_file() and top not in skip and not top.startswith(("pip-", "setuptools-")):
            total += path.stat().st_size
    return total / 2**20


def test_package_is_what_the_funcignore_leaves(package):
    """The tree's files that .funcignore leaves, plus the dashboard's npm files from node_modules."""
    assert set(package.files) == set(deploy.deployed_files(REPO_ROOT)) | set(package.vendored)
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
        assert names == package.files
        for name in names:
            source = package.vendored.get(name, REPO_ROOT / name)
            assert archive.read(name) == source.read_bytes(), name
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(names)
    assert package.size < SIZE_BUDGET, package.summary()


def test_package_leaves_out_tests_tooling_local_runtime_and_state(package):
    forbidden_dirs = ("tests/", "benchmarks/", "docs/", "infra/", ".ci/", ".local/", ".venv",
                      "node_modules/", ".git/", "dist/", ".pytest_cache/")
    for name in package.files:
        assert not name.startswith(forbidden_dirs), name
        assert "__pycache__" not in name and not name.endswith((".pyc", ".sqlite", ".sqlite-wal")), name
    root_modules = {n for n in package.files if "/" not in n and n.endswith(".py")}
    assert not any(n.startswith("local_") for n in root_modules), root_modules
    assert not {"cli.py", "deploy.py"} & root_modules
    assert not {"local.settings.json", "local.settings.sample.json", "Makefile", "azure.yaml",
                "requirements-dev.txt", "package.json"} & set(package.files)
    # Every other root module is the app's and is deployed.
    assert {"function_app.py", "orchestrators.py", "activities.py", "entities.py", "models.py",
            "settings.py", "storage.py", "geo_ops.py", "stac_ops.py"} <= root_modules


def test_funcignore_rules_on_files_that_may_appear(tmp_path):
    """New local runtime modules stay out by pattern; new app modules and folders go in; state never."""
    shutil.copy(REPO_ROOT / ".funcignore", tmp_path / ".funcignore")
    files = ["function_app.py", "host.json", "requirements.txt", "catalogs.py", "local_engine.py",
             "local_store.py", "cli.py", "static/index.html", "static/js/app.js",
             "stac_schemas/proj/v2.0.0/schema.json", ".local/durable.sqlite", "durable.sqlite-wal",
             "tests/test_x.py", "__pycache__/settings.cpython-311.pyc", "local.settings.json",
             "infra/main.bicep", "docs/deploy.md", ".venv-python3.12/bin/python",
             "dashboard/index.html", "node_modules/leaflet/dist/leaflet.js"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert deploy.deployed_files(tmp_path) == [
        "catalogs.py", "dashboard/index.html", "function_app.py", "host.json", "requirements.txt",
        "stac_schemas/proj/v2.0.0/schema.json", "static/index.html", "static/js/app.js"]


def test_package_carries_the_dashboards_npm_libraries_with_their_licences(package):
    """Each vendor file once, under dashboard/vendor/, at the version package-lock.json pins, with
    the package's licence; nothing else of node_modules; our page's own three files."""
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())["packages"]
    pinned = json.loads((REPO_ROOT / "package.json").read_text())["dependencies"]
    vendored = {n.removeprefix("dashboard/vendor/") for n in package.files if n.startswith("dashboard/vendor/")}
    assert vendored == set(dashboard.VENDOR_FILES)
    packages = {path.split("/")[0] for path in dashboard.VENDOR_FILES}
    assert packages <= set(pinned), "every vendored package is a pinned dependency"
    with zipfile.ZipFile(package.path) as archive:
        for name in packages:
            assert f"{name}/LICENSE" in vendored, name
            shipped = json.loads(archive.read(f"dashboard/vendor/{name}/package.json"))
            assert shipped["version"] == lock[f"node_modules/{name}"]["version"] == pinned[name], name
    assert {"dashboard/index.html", "dashboard/dashboard.js", "dashboard/dashboard.css"} <= set(package.files)
    assert not [n for n in package.files if "node_modules" in n]


def test_the_unpacked_package_serves_every_file_the_page_loads(fresh_app):
    """Without node_modules (as on Azure), every static URL that index.html and dashboard.js name
    is served from the package's own copy."""
    page_dir = REPO_ROOT / "dashboard"
    text = (page_dir / "index.html").read_text() + (page_dir / "dashboard.js").read_text()
    urls = sorted(set(re.findall(r"dashboard/static/([A-Za-z0-9_./-]+)", text)))
    assert {"dashboard.js", "dashboard.css", "vendor/leaflet/dist/leaflet.js",
            "vendor/world-atlas/countries-110m.json"} <= set(urls)
    assert not (fresh_app["dir"] / "node_modules").exists()
    check = ("import json, sys\n"
             "sys.path.insert(0, sys.argv[1])  # the app directory, as the worker puts it\n"
             "import dashboard\n"
             "sizes = {u: len(dashboard.static_file(u)[0]) for u in json.loads(sys.argv[2])}\n"
             "print(json.dumps(sizes))")
    proc = subprocess.run([str(fresh_app["venv"] / "bin" / "python"), "-I", "-c", check,
                           str(fresh_app["dir"]), json.dumps(urls)],
                          cwd=fresh_app["dir"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(fresh_app["dir"].parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = json.loads(proc.stdout)
    assert all(size > 0 for size in sizes.values()), sizes


# ----------------------------------------------------------------------- the package azd deploys

def azd_deployable_zip(service_dir: Path, out: Path, *, ignore_file: str = ".funcignore") -> list[str]:
    """The zip azd uploads for a Python Function App service whose files are in ``service_dir``
    (azd: pkg/project/project_utils.go, createDeployableZip, with pkg/rzip): every file below it,
    symbolic links followed; left out are ``.azure/``, the ignore file itself and
    ``local.settings.json``, then what the ignore file read from ``service_dir`` matches (gitignore
    syntax), or without one the Python defaults (a directory holding ``pyvenv.cfg``, ``__pycache__``)."""
    import pathspec

    ignore = service_dir / ignore_file
    spec = pathspec.GitIgnoreSpec.from_lines(ignore.read_text().splitlines()) if ignore.is_file() else None
    names = []

    def keep(path: Path, rel: str, is_dir: bool) -> bool:
        if (is_dir and path.name == ".azure") or (not is_dir and path.name in (ignore_file, "local.settings.json")):
            return False
        if spec is not None:
            return not spec.match_file(f"{rel}/" if is_dir else rel)
        return not (is_dir and ((path / "pyvenv.cfg").exists() or path.name.lower() == "__pycache__"))

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        def add(directory: Path, prefix: str) -> None:
            for path in sorted(directory.iterdir()):
                rel, is_dir = f"{prefix}{path.name}", path.is_dir()  # is_dir follows a link, as azd does
                if not keep(path, rel, is_dir):
                    continue
                if is_dir:
                    add(path, f"{rel}/")
                else:
                    archive.writestr(rel, path.read_bytes())
                    names.append(rel)

        add(service_dir, "")
    return names


def _source_tree_copy(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new files, not ignored ones),
    with node_modules (installed by `make setup`) linked in."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO_ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    (dest / "node_modules").symlink_to((REPO_ROOT / "node_modules").resolve())
    return dest


@pytest.fixture(scope="module")
def azd_package(tmp_path_factory, run_report) -> dict:
    """`azd package` of the api service on a copy of the tree: its prepackage hook, then azd's zip
    of the service directory, unpacked into an empty directory."""
    work = tmp_path_factory.mktemp("azd")
    project = _source_tree_copy(work / "project")
    service = yaml.safe_load((project / "azure.yaml").read_text())["services"]["api"]
    service_dir = project / service["project"]
    started = time.monotonic()
    hooks = service.get("hooks", {}).get("prepackage") or []
    for hook in hooks if isinstance(hooks, list) else [hooks]:  # azd accepts one hook or a list
        proc = subprocess.run([hook.get("shell", "sh"), hook["run"]], cwd=service_dir, capture_output=True,
                              text=True, timeout=600,
                              env={"PATH": os.environ["PATH"], "HOME": str(work), "DEPLOY_VENV": sys.prefix})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    source = service_dir / service["dist"] if service.get("dist") else service_dir
    names = azd_deployable_zip(source, work / "azd.zip")
    unpacked = work / "unpacked"
    with zipfile.ZipFile(work / "azd.zip") as archive:
        archive.extractall(unpacked)
    run_report.append(f"azd package: {len(names)} files from {source.relative_to(project)} "
                      f"({(work / 'azd.zip').stat().st_size / 1024:.1f} KiB zipped) in {time.monotonic() - started:.1f}s")
    return {"names": names, "dir": unpacked, "zip": work / "azd.zip"}


def test_azd_deploys_exactly_what_make_package_builds(azd_package, package):
    """The same entries with the same bytes: the dashboard's npm files included, nothing else."""
    assert sorted(azd_package["names"]) == package.files
    with zipfile.ZipFile(package.path) as made:
        for name in package.files:
            assert (azd_package["dir"] / name).read_bytes() == made.read(name), name
    assert {f"dashboard/vendor/{p}" for p in dashboard.VENDOR_FILES} <= set(azd_package["names"])


def _page_urls() -> list[str]:
    """Every static file the page names: the URLs in index.html and dashboard.js, and dashboard.py's
    own lists (its files and the npm files, whose CSS names the images by relative URL)."""
    page_dir = REPO_ROOT / "dashboard"
    text = (page_dir / "index.html").read_text() + (page_dir / "dashboard.js").read_text()
    named = set(re.findall(r"dashboard/static/([A-Za-z0-9_./-]+)", text))
    return sorted(named | set(dashboard.OWN_FILES) | {f"vendor/{p}" for p in dashboard.VENDOR_FILES})


def test_the_package_azd_deploys_serves_every_file_the_page_names(azd_package, fresh_app):
    """Unpacked alone, without node_modules (as on Azure), the deployed dashboard serves each file
    index.html, dashboard.js and dashboard.py name, with the bytes of the npm package."""
    urls = _page_urls()
    assert {"dashboard.js", "vendor/leaflet/dist/leaflet.js", "vendor/world-atlas/countries-110m.json"} <= set(urls)
    assert not (azd_package["dir"] / "node_modules").exists()
    check = ("import json, sys\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "import dashboard\n"
             "print(json.dumps({u: dashboard.static_file(u)[0].hex() for u in json.loads(sys.argv[2])}))")
    proc = subprocess.run([str(fresh_app["venv"] / "bin" / "python"), "-I", "-c", check,
                           str(azd_package["dir"]), json.dumps(urls)], cwd=azd_package["dir"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(azd_package["dir"].parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = {url: bytes.fromhex(content) for url, content in json.loads(proc.stdout).items()}
    for url in urls:
        source = REPO_ROOT / "node_modules" / url.removeprefix("vendor/") if url.startswith("vendor/") \
            else REPO_ROOT / "dashboard" / url
        assert served[url] == source.read_bytes(), url


def test_package_bytes_are_reproducible(package, tmp_path):
    again = deploy.build_package(REPO_ROOT, tmp_path / "again.zip")
    assert again.path.read_bytes() == package.path.read_bytes()


def test_fresh_venv_indexes_the_package_as_the_worker_does(fresh_app):
    index = fresh_app["index"]
    if sys.version_info >= (3, 13):
        assert index["loader"].startswith("azure-functions-runtime "), index["loader"]
    else:
        assert index["loader"].endswith(" get_functions"), index["loader"]
    dev = _index(sys.executable, REPO_ROOT, "--index-only")
    assert index["functions"] == dev["functions"]
    triggers = {f["trigger"] for f in index["functions"].values()}
    assert {"httpTrigger", "timerTrigger", "orchestrationTrigger", "activityTrigger", "entityTrigger"} <= triggers
    assert index["functions"]["health"]["trigger"] == "httpTrigger"


def test_importing_the_package_writes_nothing_into_it(fresh_app):
    assert _tree(fresh_app["dir"]) == fresh_app["before"]


def test_nothing_deployed_imports_what_is_not_deployed(package, fresh_app):
    assert fresh_app["index"]["outside"] == []
    assert fresh_app["index"]["missing"] == []
    not_deployed = {p.stem for p in REPO_ROOT.glob("*.py")} - {Path(n).stem for n in package.files}
    assert {"cli", "deploy"} <= not_deployed
    for name in package.files:
        if name.endswith(".py"):
            tree = ast.parse((REPO_ROOT / name).read_text())
            imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                         if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
            assert not imported & not_deployed, f"{name} imports {sorted(imported & not_deployed)}, which is not deployed"


def test_make_package_reports_the_size(tmp_path):
    out = tmp_path / "app.zip"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "deploy.py"), "package", "--out", str(out)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert f"{out}:" in proc.stdout and "KiB zipped" in proc.stdout
    assert zipfile.ZipFile(out).testzip() is None


SCHEMA_CHECK = """
import json, sys
sys.path.insert(0, ".")
import numpy as np, rasterio
from rasterio.transform import from_bounds
import stac_ops
import stac_validation
with rasterio.open("dem.tif", "w", driver="GTiff", width=32, height=32, count=1, dtype="float32", nodata=-1.0,
                   crs="EPSG:32633", transform=from_bounds(500000, 4980000, 500320, 4980320, 32, 32)) as dst:
    dst.write(np.arange(1024, dtype="float32").reshape(1, 32, 32))
item = stac_ops.item_from_raster("dem.tif", container="c", blob_name="dem.tif", data_alternates={"vsiaz": "/vsiaz/c/dem.tif"},
                                 datetime_override=__import__("datetime").datetime(2024, 1, 1)).to_dict()
validator = stac_validation.StacValidator()
checked, skipped = validator.schema_uris(item)
validator.validate_item(item)
item["properties"]["renders"]["default"]["rescale"] = [[0]]
print(json.dumps({"checked": checked, "skipped": skipped, "errors": validator.errors(item)}))
"""


def test_the_package_ships_the_extension_schemas_and_validates_with_them(package, fresh_app, tmp_path):
    """Unpacked alone (no RMH_STAC_SCHEMA_DIR, no ../shared), the app checks an item against
    every extension it declares, from the schemas the package carries."""
    shipped = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "stac_schemas").rglob("*") if p.is_file()}
    assert {"stac_schemas/LICENSE-Apache-2.0", "stac_schemas/render/v2.0.0/schema.json"} <= shipped
    assert shipped <= set(package.files)
    work = tmp_path / "app"
    shutil.copytree(fresh_app["dir"], work)
    proc = subprocess.run([str(fresh_app["venv"] / "bin" / "python"), "-I", "-c", SCHEMA_CHECK], cwd=work,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["skipped"] == []
    assert {"https://stac-extensions.github.io/render/v2.0.0/schema.json",
            "https://stac-extensions.github.io/alternate-assets/v1.2.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"} <= set(result["checked"])
    assert any("render" in message for message in result["errors"]), result["errors"]
