"""`trustchain cluster up/status/down` and `cluster demo` (what `make demo` runs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trustchain.node import cli_cluster, localcluster
from trustchain.node.errors import UserError

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


def _processes_under(directory: Path) -> list[int]:
    """Live processes whose command line names `directory` (its node processes)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline and _alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_up_stops_every_node_when_one_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v2's DNS port is taken: `cluster up` says so and leaves nothing running."""
    real = localcluster.free_udp_ports
    calls: list[int] = []
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as holder:
        holder.bind(("::1", 0))
        busy = holder.getsockname()[1]

        def rigged(count: int) -> list[int]:
            ports = real(count)
            calls.append(count)
            if len(calls) == 2:  # the DNS ports (the peer ports came first)
                ports[1] = busy
            return ports

        monkeypatch.setattr(localcluster, "free_udp_ports", rigged)
        d = (tmp_path / "c").resolve()
        with pytest.raises(
            UserError, match=rf"v2 exited with status 2 \(UDP \[::1\]:{busy}: cannot"
        ):
            cli_cluster.up(d, 4)
    assert len(calls) == 2
    assert _processes_under(d) == []
    assert not (d / "pids.json").exists()


def test_demo(tmp_path: Path) -> None:
    demo = _cli("cluster", "demo", "--nodes", "4", "--dir", str(tmp_path / "demo"))
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "verified offline and online" in out and "IN TLSA 3 1 1" in out
    assert "Demo passed." in out and out.count(": stopped") == 4
