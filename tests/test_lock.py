"""The remote build installs exactly what was tested: requirements.txt names requirements-lock.txt
with ``-c``, and for each Python the app runs on (3.11, 3.12, 3.13) what pip resolves from
requirements.txt, from PyPI (``pip install --dry-run --report``: nothing is installed), is the lock's
set for that Python, transitive dependencies included, nothing missing and nothing stale.

Each Python runs its own pip, from another directory than the repository (the ``-c`` path is
relative to requirements.txt, as in the unpacked package the remote build sees). A Python this
machine does not have is skipped, with the reason.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import deploy

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_requirements_txt_names_the_lock_and_the_package_carries_it():
    text = (REPO_ROOT / "requirements.txt").read_text()
    assert "-c requirements-lock.txt" in text.splitlines()
    assert "requirements-lock.txt" in deploy.deployed_files(REPO_ROOT)
    locked = deploy.read_lock()
    assert all(locked[python] for python in deploy.LOCK_PYTHONS)


@pytest.mark.parametrize("python_version", deploy.LOCK_PYTHONS)
def test_the_lock_is_what_pip_installs_from_requirements_txt(python_version, run_report):
    try:
        python = deploy.find_python(python_version)
    except deploy.DeployError as err:
        pytest.skip(str(err))
    installed = deploy.resolve(python, REPO_ROOT / "requirements.txt")
    locked = deploy.read_lock()[python_version]
    unpinned = {name: version for name, version in installed.items() if locked.get(name) != version}
    stale = {name: version for name, version in locked.items() if name not in installed}
    assert not unpinned, f"installed but not pinned by the lock for {python_version} (run `make lock`): {unpinned}"
    assert not stale, f"pinned for {python_version} but no longer installed (run `make lock`): {stale}"
    run_report.append(f"lock: Python {python_version} resolves {len(installed)} packages, all pinned")
