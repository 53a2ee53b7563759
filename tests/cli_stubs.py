"""Stand-ins for the command-line tools the azd hooks run (``az``, ``azd``) where the real ones
would need Azure: executables put first on PATH that record every call and answer from a script of
answers the test writes, shaped like the real tool's documented output (JSON or ``-o tsv`` text,
exit code 3 and an ``ERROR: (ResourceNotFound) ...`` message for a missing ARM resource).

    stubs = CliStubs(tmp_path)
    stubs.answer("az", ["resource", "show"], Answer.not_found("..."), Answer.ok("/subscriptions/..."))
    subprocess.run(["sh", "infra/hooks/postdeploy.sh"], env=stubs.env(AZURE_RESOURCE_GROUP="rg"))
    stubs.calls("az")  # [["functionapp", "show", ...], ["resource", "show", ...], ...]

A rule matches a call whose arguments start with its ``args`` (the first such rule; answering the
same ``args`` again replaces that rule's answers); its answers are given in order, the last one
again for later calls. A call no rule matches exits 97 and says so (the test fails).
Run as a program, this file is the stub itself: ``cli_stubs.py <tool> <args...>``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

NO_RULE_EXIT = 97


@dataclasses.dataclass(frozen=True)
class Answer:
    code: int = 0
    stdout: str = ""
    stderr: str = ""

    @classmethod
    def ok(cls, stdout: str = "") -> "Answer":
        return cls(0, stdout if stdout.endswith("\n") or not stdout else stdout + "\n")

    @classmethod
    def json(cls, value) -> "Answer":
        return cls(0, json.dumps(value, indent=2) + "\n")

    @classmethod
    def not_found(cls, resource: str, group: str) -> "Answer":
        """az's answer for a missing ARM resource (exit code 3)."""
        return cls(3, "", f"ERROR: (ResourceNotFound) The Resource '{resource}' under resource group '{group}' "
                          "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix\n"
                          f"Code: ResourceNotFound\nMessage: The Resource '{resource}' under resource group "
                          f"'{group}' was not found. For more details please go to "
                          "https://aka.ms/ARMResourceNotFoundFix\n")

    @classmethod
    def error(cls, message: str, code: int = 1) -> "Answer":
        return cls(code, "", f"ERROR: {message}\n")


class CliStubs:
    def __init__(self, root: Path):
        self.bin = root / "stub-bin"
        self.state = root / "stub-state"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.rules: dict[str, list[dict]] = {}
        self._save()

    def answer(self, tool: str, args: list[str], *answers: Answer) -> None:
        if not (self.bin / tool).exists():
            script = self.bin / tool
            script.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {tool} \"$@\"\n")
            script.chmod(0o755)
        rule = {"args": list(args), "answers": [dataclasses.asdict(a) for a in answers] or [dataclasses.asdict(Answer())]}
        rules = self.rules.setdefault(tool, [])
        same = next((i for i, r in enumerate(rules) if r["args"] == rule["args"]), None)
        if same is None:
            rules.append(rule)
        else:  # answering the same call anew: replaces the old answers and starts them again
            rules[same] = rule
            counts_path = self.state / "counts.json"
            counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
            counts.pop(f"{tool}:{same}", None)
            counts_path.write_text(json.dumps(counts))
        self._save()

    def _save(self) -> None:
        (self.state / "rules.json").write_text(json.dumps(self.rules))

    def env(self, path_tail: str | None = None, **values: str) -> dict[str, str]:
        """An environment with the stubs first on PATH (then ``path_tail``, default this PATH)."""
        tail = os.environ["PATH"] if path_tail is None else path_tail
        return {"PATH": f"{self.bin}{os.pathsep}{tail}", "HOME": str(self.state), "CLI_STUB_STATE": str(self.state),
                **values}

    def calls(self, tool: str | None = None) -> list[list[str]]:
        log = self.state / "calls.jsonl"
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [e["argv"] for e in entries if tool is None or e["tool"] == tool]


def _serve(tool: str, argv: list[str]) -> int:
    state = Path(os.environ["CLI_STUB_STATE"])
    with (state / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"tool": tool, "argv": argv}) + "\n")
    rules = json.loads((state / "rules.json").read_text()).get(tool, [])
    counts_path = state / "counts.json"
    counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    for index, rule in enumerate(rules):
        if argv[:len(rule["args"])] == rule["args"]:
            key = f"{tool}:{index}"
            seen = counts.get(key, 0)
            counts[key] = seen + 1
            counts_path.write_text(json.dumps(counts))
            answer = rule["answers"][min(seen, len(rule["answers"]) - 1)]
            sys.stdout.write(answer["stdout"])
            sys.stderr.write(answer["stderr"])
            return answer["code"]
    sys.stderr.write(f"stub {tool}: no answer for {argv}\n")
    return NO_RULE_EXIT


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], sys.argv[2:]))
