"""Tool venvs for the test tooling: tools whose pins are not the app's (checkov) get a venv of
their own, built once per requirements file and Python in the user's cache, so a clean clone (CI)
reuses it and a changed requirements file builds a new one.

    python tests/tools.py checkov     # builds it if missing, prints the venv's path

The cache is ``$RMH_TOOLS_CACHE``, else ``$XDG_CACHE_HOME/rmhgeoapi/tools``, else
``~/.cache/rmhgeoapi/tools``. Concurrent builders (two test runs) wait on a lock file.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"checkov": REPO_ROOT / "infra" / "checkov-requirements.txt"}


class ToolInstallError(RuntimeError):
    """A tool venv could not be built; the message carries pip's output."""


def cache_dir() -> Path:
    if os.environ.get("RMH_TOOLS_CACHE"):
        return Path(os.environ["RMH_TOOLS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rmhgeoapi" / "tools"


def tool_venv(name: str) -> Path:
    """The venv of tool ``name``, built from its requirements file when missing."""
    requirements = TOOLS[name]
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    venv = cache_dir() / f"{name}-{python_tag}-{digest}"
    if (venv / ".installed").exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".installed").exists():
            _build(venv, requirements)
            for stale in venv.parent.glob(f"{name}-{python_tag}-*"):
                if stale != venv:
                    shutil.rmtree(stale, ignore_errors=True)
    return venv


def _build(venv: Path, requirements: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "-r", str(requirements)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise ToolInstallError(f"installing {requirements.name} failed:\n{proc.stderr[-3000:]}")
    (venv / ".installed").write_text(requirements.read_text())


if __name__ == "__main__":
    print(tool_venv(sys.argv[1]))
