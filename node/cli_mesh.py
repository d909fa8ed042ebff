"""`trustchain mesh`: start a local mesh of validator processes and show it working."""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path
from typing import Any

from trustchain.node.errors import UserError
from trustchain.node.localcluster import LocalCluster

HEARTBEATS = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mesh = sub.add_parser(
        "mesh",
        help="start N local validators on ::1, show them authenticate and talk, stop them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Creates N validators (keys, configs, genesis) in DIR, starts each as a
            `trustchain node run` process on ::1, waits until every pair has an
            authenticated QUIC link and every node has had three heartbeat replies from
            every peer, prints a report, and stops them with SIGTERM.  DIR is replaced if it holds
            an earlier mesh.

            example:
              trustchain mesh --nodes 4 --dir .demo
            """
        ),
    )
    mesh.add_argument("--nodes", type=int, default=4, help="number of validators (default 4)")
    mesh.add_argument("--dir", type=Path, default=Path(".demo"), help="working directory")
    mesh.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    mesh.set_defaults(func=cmd_mesh)


def _progress(node: str, event: dict[str, Any]) -> None:
    kind = event.get("event")
    if kind == "peer.authenticated":
        print(f"  {node}: authenticated {event.get('peer')} ({event.get('role')})", flush=True)
    elif kind == "mesh.pong" and event.get("seq") == 1:
        print(f"  {node}: reply from {event.get('peer')} in {event.get('rtt_ms')} ms", flush=True)
    elif kind in ("peer.link_closed",) or event.get("level") in ("warning", "error"):
        print(f"  {node}: {kind} {event.get('peer', '')} {event.get('reason', '')}", flush=True)


def cmd_mesh(args: argparse.Namespace) -> int:
    if args.nodes < 2:
        raise UserError("--nodes: a mesh needs at least 2 validators")
    print(f"Creating {args.nodes} validators in {args.dir}/ (keys, node.toml, genesis.toml)")
    cluster = LocalCluster.create(args.dir, args.nodes)
    names = [n.name for n in cluster.nodes]
    started = time.monotonic()
    print(f"Starting {args.nodes} `trustchain node run` processes on ::1")
    cluster.start()

    def everyone_talked(events: dict[str, list[dict[str, Any]]]) -> bool:
        for name, evs in events.items():
            for peer in set(names) - {name}:
                replies = [
                    e for e in evs if e.get("event") == "mesh.pong" and e.get("peer") == peer
                ]
                if len(replies) < HEARTBEATS:
                    return False
        return True

    try:
        ok = cluster.wait(everyone_talked, args.timeout, on_event=_progress)
        elapsed = time.monotonic() - started
    finally:
        statuses = cluster.stop()
    print()
    if not ok:
        print(
            f"FAILED: no mesh within {args.timeout:.0f} s; see the logs in {args.dir}/v*/node.log"
        )
        return 1
    print(f"Mesh of {args.nodes} formed in {elapsed:.2f} s: every pair authenticated over QUIC.")
    print(f"{'node':<6} {'replies':>7}  {'median rtt ms':>13}  exit")
    for node in cluster.nodes:
        # The first heartbeat was queued before the links were up; skip it.
        rtts = sorted(
            e["rtt_ms"]
            for e in node.events()
            if e.get("event") == "mesh.pong" and e.get("rtt_ms") and e.get("seq", 0) > 1
        )
        median = f"{rtts[len(rtts) // 2]:.3f}" if rtts else "-"
        print(f"{node.name:<6} {len(rtts):>7}  {median:>13}  {statuses[node.name]}")
    print(f"Logs: {args.dir}/v*/node.log (one JSON event per line)")
    bad = {name: status for name, status in statuses.items() if status != 0}
    if bad:
        print(f"FAILED: nodes did not stop cleanly: {bad}")
        return 1
    return 0
