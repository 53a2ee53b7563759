"""kill -9 in the middle of a 200-task fan-out, restart on the same file, and finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
DESYNC_WARNING = "Potential duplicate Task completion"

COUNT = 200


def start_host(db: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "local_runtime.py"), "serve",
         "--app", f"{APPS / 'crash_app.py'}:app", "--db", str(db), "--port", "0",
         "--workers", "2"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on "), line
    return process, line.split()[-1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def completed_tasks(base: str, instance_id: str) -> int:
    status = get(f"{base}/runtime/webhooks/durabletask/instances/{instance_id}?showHistory=true")
    return sum(1 for e in status.get("historyEvents", []) if e["EventType"] == "TaskCompleted")


def test_kill_nine_mid_fan_out_then_restart_completes(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    run_log = tmp_path / "runs.log"
    host_log = tmp_path / "host.log"
    env = {**os.environ, "CRASH_RUN_LOG": str(run_log)}
    process, base = start_host(db, env, host_log)
    try:
        request = urllib.request.Request(
            f"{base}/runtime/webhooks/durabletask/orchestrators/fan_out_200/crash-1",
            data=json.dumps(json.dumps(COUNT)).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 202
        deadline = time.time() + 20
        done = 0
        while time.time() < deadline:
            done = completed_tasks(base, "crash-1")
            if done >= COUNT // 2 - 20:
                break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert COUNT // 2 - 20 <= done < COUNT, f"kill landed outside the fan-out ({done} tasks done)"

    process, base = start_host(db, env, host_log)
    try:
        deadline = time.time() + 30
        status = get(f"{base}/runtime/webhooks/durabletask/instances/crash-1")
        while status["runtimeStatus"] != "Completed" and time.time() < deadline:
            time.sleep(0.05)
            status = get(f"{base}/runtime/webhooks/durabletask/instances/crash-1")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    assert status["runtimeStatus"] == "Completed"
    output = status["output"]
    assert len(output) == COUNT
    assert output == [{"index": i, "square": i * i} for i in range(COUNT)]
    runs = [int(x) for x in run_log.read_text().split()]
    print(f"killed after {done} completions; {len(runs)} activity runs in total")
    assert set(runs) == set(range(COUNT))
    assert DESYNC_WARNING not in host_log.read_text()
