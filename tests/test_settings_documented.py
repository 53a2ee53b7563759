"""No dead settings: every ``RMH_*`` setting the README, docs/ or local.settings.sample.json names
is read by the code. A setting of the app (a field of ``settings.Settings``) must be read off a
settings object somewhere (``config.<field>``, ``settings().<field>``...), not merely declared; a
variable of the tools (the CLI, the test harness) must appear in their code."""
from __future__ import annotations

import re
from pathlib import Path

import settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO_ROOT / "README.md", REPO_ROOT / "local.settings.sample.json", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: How the code holds a settings object when it reads one of its fields.
SETTINGS_OBJECT = r"(?:\bconfig|\bsettings\(\)|\bget_settings\(\)|\bload_settings\([^()]*\)|\bself|\bsettings)"


def documented() -> dict[str, set[str]]:
    """Setting -> the documents that name it (``RMH_STORAGE_*``, a family, is left out)."""
    found: dict[str, set[str]] = {}
    for document in DOCUMENTS:
        for name in re.findall(r"\bRMH_[A-Z0-9_]*[A-Z0-9]\b", document.read_text()):
            found.setdefault(name, set()).add(document.name)
    return found


def code_text() -> str:
    """The app's modules, the tools' and the test harness's code (a tool's variable is read there)."""
    paths = [*REPO_ROOT.glob("*.py"), *REPO_ROOT.glob("tests/**/*.py"), *REPO_ROOT.glob("benchmarks/*.py"),
             REPO_ROOT / "Makefile"]
    return "\n".join(path.read_text() for path in paths)


def app_text() -> str:
    return "\n".join(path.read_text() for path in REPO_ROOT.glob("*.py"))


def test_every_documented_setting_is_read_by_the_code():
    names = documented()
    assert len(names) > 30 and "RMH_OUTAGE_SECONDS" in names  # the documents were read
    fields = set(settings.Settings.model_fields)
    app, code = app_text(), code_text()
    unread = []
    for name, where in sorted(names.items()):
        field = name.removeprefix(settings.ENV_PREFIX).lower()
        if field in fields:
            if not re.search(rf"{SETTINGS_OBJECT}\.{field}\b", app):
                unread.append(f"{name} ({', '.join(sorted(where))}): settings.{field} is read by no module")
        elif not re.search(rf"\b{name}\b", code):
            unread.append(f"{name} ({', '.join(sorted(where))}): not a setting, and no code reads it")
    assert not unread, "documented settings nothing reads:\n" + "\n".join(unread)


def test_every_setting_is_documented_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [f"{settings.ENV_PREFIX}{field.upper()}" for field in settings.Settings.model_fields
               if f"{settings.ENV_PREFIX}{field.upper()}" not in readme]
    assert not missing, missing
