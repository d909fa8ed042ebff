"""Four validator processes on ::1 run consensus over the QUIC mesh, survive SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from trustchain.node.localcluster import LocalCluster, NodeProcess
from trustchain.node.opsclient import submit_all


def latest_height(events: list[dict[str, Any]]) -> int:
    heights = [e["height"] for e in events if e.get("event") == "consensus.progress"]
    return heights[-1] if heights else 0


def restart_and_catch_up(
    cluster: LocalCluster, node: NodeProcess, *, ahead: int, timeout: float
) -> None:
    """Start `node` again from its data directory; it must reach the others' height
    (plus `ahead` more blocks) within `timeout` seconds."""
    cluster.nodes.append(node)
    node.start()
    target = max(latest_height(n.events()) for n in cluster.nodes if n is not node) + ahead
    started = time.monotonic()
    assert cluster.wait(lambda ev: latest_height(ev[node.name]) >= target, timeout=timeout), (
        f"{node.name} did not catch up to {target} in {time.monotonic() - started:.0f} s"
    )


def signed_rounds(node_dir: Path) -> dict[int, set[str]]:
    rounds: dict[int, set[str]] = {}
    for line in (node_dir / "signed.log").read_text().splitlines():
        kind, round_text, what = line.split()
        if kind == "vote":
            rounds.setdefault(int(round_text), set()).add(what)
    return rounds


@pytest.mark.slow
def test_four_processes_commit_survive_sigkill_and_the_restarted_one_catches_up(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster.create(
        tmp_path / "c", 4, client_endpoints=True, consensus="round_timeout = 0.5"
    )
    cluster.start()
    v1, v4 = cluster.node("v1"), cluster.node("v4")
    assert v1.client_port is not None
    try:
        assert cluster.wait(lambda ev: all(latest_height(e) >= 5 for e in ev.values()), timeout=30)
        receipts = trio.run(submit_all, v1.client_port, [b"op-%d" % i for i in range(20)], 8)
        assert all(r.ok for r in receipts), [r.error for r in receipts if not r.ok]

        v4.kill()  # SIGKILL: no clean shutdown
        cluster.nodes.remove(v4)
        height_at_kill = max(latest_height(n.events()) for n in cluster.nodes)
        receipts = trio.run(submit_all, v1.client_port, [b"after-%d" % i for i in range(20)], 8)
        assert all(r.ok for r in receipts), [r.error for r in receipts if not r.ok]
        assert min(r.height or 0 for r in receipts) > height_at_kill - 5
        assert cluster.wait(
            lambda ev: all(latest_height(e) >= height_at_kill + 10 for e in ev.values()),
            timeout=30,
        )

        restart_and_catch_up(cluster, v4, ahead=5, timeout=60)
    finally:
        statuses = cluster.stop()
    assert set(statuses.values()) == {0}
    for node in cluster.nodes:
        doubles = {r: ids for r, ids in signed_rounds(node.directory).items() if len(ids) > 1}
        assert doubles == {}, f"{node.name} voted twice in rounds {sorted(doubles)}"
    assert signed_rounds(v4.directory)  # it did vote, before and after the crash


@pytest.mark.slow
def test_a_validator_further_behind_than_its_peers_keep_in_memory_catches_up(
    tmp_path: Path,
) -> None:
    # Peers keep the last `keep_committed` committed blocks in memory (1,024 unless
    # configured); a validator that missed more gets the older ones from their stores.
    cluster = LocalCluster.create(
        tmp_path / "c", 4,
        consensus="round_timeout = 0.2\nmin_block_interval = 0.01\nkeep_committed = 16",
    )  # fmt: skip
    cluster.start()
    v4 = cluster.node("v4")
    try:
        assert cluster.wait(lambda ev: all(latest_height(e) >= 5 for e in ev.values()), timeout=30)
        v4.kill()
        cluster.nodes.remove(v4)
        behind = latest_height(v4.events())
        assert cluster.wait(
            lambda ev: all(latest_height(e) >= behind + 100 for e in ev.values()), timeout=120
        )
        restart_and_catch_up(cluster, v4, ahead=0, timeout=90)
    finally:
        statuses = cluster.stop()
    assert set(statuses.values()) == {0}
