"""A full validator under systemd's notify protocol: READY=1 only once it serves and follows."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trustchain.node.cli_cert import cluster_client
from trustchain.node.localcluster import create_full_cluster

pytestmark = pytest.mark.slow


def test_full_node_ready_after_recovery_and_stopping(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cluster = create_full_cluster(d, 4)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(60)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    received: list[str] = []

    def wait_for(line: str) -> None:
        while not any(line in m for m in received):
            received.append(listener.recv(4096).decode())

    v1 = cluster.node("v1")
    try:
        v1.start(env=env)
        for node in cluster.nodes[1:]:
            node.start()
        wait_for("READY=1")
        # Ready means serving: the state was recovered and the API answers at once.
        events = [e["event"] for e in v1.events()]
        assert events.index("app.recovered") < events.index("node.ready")
        # The startup heap was frozen out of the cycle collector's reach at that point.
        ready = next(e for e in v1.events() if e["event"] == "node.ready")
        assert ready["gc_frozen"] > 10_000
        assert cluster_client(d, "v1").call("GET", "/health")["status"] == "ok"
        wait_for("WATCHDOG=1")
        v1.terminate()
        wait_for("STOPPING=1")
        assert v1.process is not None and v1.process.wait(20) == 0
        # Restarted from its data directory, it is ready again once it follows.
        received.clear()
        v1.start(env=env)
        wait_for("READY=1")
        assert cluster_client(d, "v1").call("GET", "/health")["height"] > 0
    finally:
        statuses = cluster.stop()
        listener.close()
    assert set(statuses.values()) == {0}, statuses
