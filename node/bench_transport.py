"""`trustchain bench transport`: request/response over the peer mesh, two processes.

The bench process creates two validators, starts an echo node and a driver
node as separate processes on ::1, and prints what the driver measured:
round trips per second with 1 and 16 requests in flight, round-trip latency
percentiles, and the CPU time both processes spent per 1,000 messages (a round
trip is two messages).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import trio

from trustchain.node import identity
from trustchain.node.benchstats import percentile
from trustchain.node.config import load_genesis, load_node_config
from trustchain.node.localcluster import LocalCluster
from trustchain.node.peer import PeerNetwork

IN_FLIGHT = (1, 16)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "transport",
        help="peer mesh round trips between two node processes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Starts an echo node and a driver node as two processes on ::1 and measures
            request/response round trips over the authenticated QUIC link with 1 and 16
            requests in flight: round trips per second, p50/p99 latency, and CPU seconds
            (both processes) per 1,000 messages.

            example:
              trustchain bench transport --seconds 5
            """
        ),
    )
    bench.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    bench.add_argument("--payload", type=int, default=100, help="request bytes (default 100)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        cluster = LocalCluster.create(Path(tmp) / "mesh", 2)
        echo_cfg, driver_cfg = (str(n.config) for n in cluster.nodes[::-1])
        worker = [sys.executable, "-m", "trustchain.node.bench_transport"]
        print(
            f"bench transport: echo and driver processes on ::1, {args.seconds:g} s per run",
            flush=True,
        )
        echo = subprocess.Popen([*worker, "echo", echo_cfg], stdin=subprocess.DEVNULL)
        try:
            result = subprocess.run(
                [*worker, "driver", driver_cfg, str(args.seconds), str(args.payload)],
                capture_output=True,
                text=True,
                timeout=120 + 4 * args.seconds,
            )
        finally:
            echo.terminate()
            echo.wait(10)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        print("bench transport: the driver failed (its stderr is above)", file=sys.stderr)
        return 1
    figures = json.loads(result.stdout)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    header = ("in flight", "round trips/s", "p50 ms", "p99 ms", "CPU s/1000 msgs")
    print(f"{header[0]:>9} {header[1]:>14} {header[2]:>8} {header[3]:>8} {header[4]:>16}")
    for row in figures["runs"]:
        print(
            f"{row['in_flight']:>9} {row['round_trips_per_s']:>14,.0f} {row['p50_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f} {row['cpu_s_per_1000_msgs']:>16.4f}"
        )
    return 0


# --- worker processes -----------------------------------------------------------


async def _start(config_path: str, nursery: trio.Nursery) -> PeerNetwork:
    config = load_node_config(config_path)
    me = identity.load(config.name, config.consensus_key, config.tls_certificate)
    network = PeerNetwork(me, load_genesis(config.genesis), config.listen, config.peer)
    await nursery.start(network.run)
    return network


async def _echo(config_path: str) -> None:
    async with trio.open_nursery() as nursery:
        network = await _start(config_path, nursery)
        async for peer, message in network:
            if "cpu" in message:
                network.send(peer, {"cpu": time.process_time()})
            else:
                network.send(peer, {"id": message["id"]})


async def _drive(config_path: str, seconds: float, payload: int) -> dict[str, Any]:
    runs = []
    async with trio.open_nursery() as nursery:
        network = await _start(config_path, nursery)
        (peer,) = network.peers
        await network.wait_connected()
        waiting: dict[int, trio.Event] = {}
        cpu_reply: list[float] = []
        cpu_event = trio.Event()

        async def dispatch() -> None:
            nonlocal cpu_event
            async for _, message in network:
                if "cpu" in message:
                    cpu_reply.append(message["cpu"])
                    cpu_event.set()
                else:
                    waiting.pop(message["id"]).set()

        async def echo_cpu() -> float:
            nonlocal cpu_event
            cpu_event = trio.Event()
            network.send(peer, {"cpu": True})
            await cpu_event.wait()
            return cpu_reply[-1]

        nursery.start_soon(dispatch)
        body = b"\x00" * payload
        next_id = 0

        async def client(latencies: list[float], deadline: float) -> None:
            nonlocal next_id
            while trio.current_time() < deadline:
                next_id += 1
                done = waiting[next_id] = trio.Event()
                start = trio.current_time()
                network.send(peer, {"id": next_id, "p": body})
                await done.wait()
                latencies.append(trio.current_time() - start)

        # The first pass is a one-second warm-up at 16 in flight, not reported.
        for pass_number, in_flight in enumerate((16, *IN_FLIGHT)):
            warmup = pass_number == 0
            latencies: list[float] = []
            cpu_before = time.process_time() + await echo_cpu()
            started = trio.current_time()
            async with trio.open_nursery() as clients:
                for _ in range(in_flight):
                    clients.start_soon(client, latencies, started + (1.0 if warmup else seconds))
            elapsed = trio.current_time() - started
            cpu = time.process_time() + await echo_cpu() - cpu_before
            if warmup:
                continue
            latencies.sort()
            runs.append(
                {
                    "in_flight": in_flight,
                    "round_trips": len(latencies),
                    "round_trips_per_s": len(latencies) / elapsed,
                    "p50_ms": percentile(latencies, 0.50) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "cpu_s_per_1000_msgs": cpu / (2 * len(latencies)) * 1000,
                }
            )
        nursery.cancel_scope.cancel()
    return {"payload_bytes": payload, "seconds": seconds, "runs": runs}


def _worker(argv: list[str]) -> int:
    role, config_path, *rest = argv
    if role == "echo":
        trio.run(_echo, config_path)
    else:
        figures = trio.run(_drive, config_path, float(rest[0]), int(rest[1]))
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
