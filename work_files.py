"""Local working files: the one directory every staging directory lives in (RMH_TEMP_DIR), and
removing what a killed worker left there."""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from settings import get_settings

logger = logging.getLogger(__name__)

STAGING_PREFIX = "rmh-"
_stale_removed: set[str] = set()


def work_dir() -> Path:
    """The one directory all staging directories live in (RMH_TEMP_DIR). The first use in a
    process (a worker starting) removes staging directories older than the function timeout:
    what a killed worker left behind; no live activity can be that old."""
    root = get_settings().work_dir
    if not root.is_dir():  # a stat, not a refused mkdir, on every call after the first
        root.mkdir(parents=True, exist_ok=True)
    if str(root) not in _stale_removed:
        _stale_removed.add(str(root))
        removed = remove_stale_staging(root, function_timeout())
        if removed:
            logger.info("removed %d stale staging directories from %s", removed, root)
    return root


def staging_dir(kind: str):
    """A temporary directory for one task's files under ``work_dir()``, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{kind}-", dir=work_dir())


def remove_stale_staging(root: Path, max_age: dt.timedelta) -> int:
    """Remove ``rmh-*`` entries of ``root`` not modified for ``max_age``; returns how many."""
    cutoff = time.time() - max_age.total_seconds()
    removed = 0
    for entry in root.iterdir():
        try:
            if not entry.name.startswith(STAGING_PREFIX) or entry.lstat().st_mtime > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        except FileNotFoundError:  # another worker removed it first
            continue
    return removed


@functools.lru_cache(maxsize=1)
def function_timeout() -> dt.timedelta:
    """host.json ``functionTimeout`` (what bounds an activity's life), 30 minutes if unset."""
    try:
        text = json.loads((Path(__file__).parent / "host.json").read_text()).get("functionTimeout", "")
    except (OSError, ValueError, AttributeError):
        text = ""
    match = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+)$", str(text).strip())
    if not match:  # unset or -1 (unbounded on dedicated plans): a day is beyond any activity here
        return dt.timedelta(minutes=30) if not text else dt.timedelta(days=1)
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
