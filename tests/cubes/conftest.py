"""Fixtures of the cube tests: the root modules and the test helpers on the path, a converter
that runs the whole library path (open, plan, convert) over a file."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
for _path in (TESTS_DIR, TESTS_DIR.parent):  # cube_factory.py, and cubes.py at the root
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import cubes  # noqa: E402


@pytest.fixture
def convert(tmp_path: Path) -> Callable[..., tuple[cubes.CubeFacts, list[cubes.SliceOutput]]]:
    """``convert(path, **plan_kwargs)``: open, plan and convert every group; (facts, outputs)."""

    def _convert(path: Path, **kwargs: Any) -> tuple[cubes.CubeFacts, list[cubes.SliceOutput]]:
        facts = cubes.open_cube(path)
        plan = dict(max_slices=10_000, max_pixels_per_task=64 * 1024 * 1024, max_slices_per_task=8)
        plan.update(kwargs)
        groups = cubes.plan_slices(facts, str(tmp_path / "out" / path.name), **plan)
        outputs = [o for g in groups for o in cubes.convert_slices(g).outputs]
        return facts, outputs

    return _convert
