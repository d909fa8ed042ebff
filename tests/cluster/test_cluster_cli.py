"""`trustchain cluster up/status/down` and `cluster demo` (what `make demo` runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text()


def test_up_status_down(tmp_path: Path) -> None:
    d = tmp_path / "c"
    up = _cli("cluster", "up", "--nodes", "4", "--dir", str(d))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "trustchain cert request --cluster" in up.stdout
    pids = json.loads((d / "pids.json").read_text())
    try:
        assert sorted(pids) == ["v1", "v2", "v3", "v4"] and all(_alive(p) for p in pids.values())
        again = _cli("cluster", "up", "--dir", str(d))
        assert again.returncode == 2 and "a cluster is running" in again.stderr
        status = _cli("cluster", "status", "--dir", str(d))
        assert status.returncode == 0, status.stderr
        rows = [line.split() for line in status.stdout.splitlines()[1:]]
        assert [r[0] for r in rows] == ["v1", "v2", "v3", "v4"]
        assert all(r[2] == "running" and int(r[3]) > 0 for r in rows), status.stdout
    finally:
        down = _cli("cluster", "down", "--dir", str(d))
    assert down.returncode == 0 and down.stdout.count("stopped") == 4, down.stdout
    assert not any(_alive(p) for p in pids.values())
    after = _cli("cluster", "status", "--dir", str(d))
    assert after.returncode == 1 and after.stdout.count("down") == 4


def test_demo(tmp_path: Path) -> None:
    demo = _cli("cluster", "demo", "--nodes", "4", "--dir", str(tmp_path / "demo"))
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "verified offline and online" in out and "IN TLSA 3 1 1" in out
    assert "Demo passed." in out and out.count(": stopped") == 4
