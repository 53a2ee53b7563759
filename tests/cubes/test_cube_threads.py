"""Cubes described and converted by several threads of one process at once, as a Functions
worker runs activities: GDAL's netCDF and GRIB drivers each hold a global mutex, and rasterio
closes datasets holding the GIL while its error handler needs the GIL for a message raised
under that mutex, so two threads deadlocked (seen: a conversion of six files that never ended).
Run in a child process with a deadline, so a deadlock fails the test instead of hanging it."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import concurrent.futures, sys
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {tests!r}]
    import cube_jobs_checks as checks
    import cubes
    tmp = Path({tmp!r})
    files = [p for p in checks.write_good(tmp).values() if p.is_file()] + [checks.write_corrupt(tmp)]
    groups = []
    for path in files:
        try:
            facts = cubes.open_cube(path)
        except cubes.CubeError:
            continue
        groups += [(g, path) for g in cubes.plan_slices(facts, str(tmp / "out" / path.stem), max_slices=1000,
                                                        max_pixels_per_task=10**8, max_slices_per_task=2)]

    def describe(i):
        try:
            cubes.open_cube(files[i % len(files)])
        except cubes.CubeError:
            pass

    def convert(i):
        group, _ = groups[i % len(groups)]
        try:
            cubes.convert_slices(group.model_copy(update={{"tasks": [
                t.model_copy(update={{"output_path": f"{{t.output_path}}.{{i}}.tif"}}) for t in group.tasks]}}))
        except cubes.CubeError:
            pass

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(describe, range(240)))
        list(pool.map(convert, range(60)))
    print("ok", len(files), len(groups))
""")


def test_threads_of_one_worker_describe_and_convert_cubes_without_deadlock(tmp_path):
    script = SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), tmp=str(tmp_path))
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("threads describing and converting cubes deadlocked (no end in 90 s)") from None
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:2] == ["ok", "5"], done.stdout
