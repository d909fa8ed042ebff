"""`trustchain bench consensus`: committed operations per second, TrustChain vs etcd.

Starts 4 validator processes on ::1 and drives 100-byte no-op operations into
their local operations endpoints from a separate client process: first one at
a time (commit latency), then many in flight (throughput).  In the same run it
starts a 3-member etcd cluster on ::1 (Debian's etcd-server, installed with
apt-get when missing and running as root) and measures puts of the same
payload the same two ways through etcd's JSON gateway, then prints both.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import trio

from trustchain.node.benchstats import percentile
from trustchain.node.localcluster import LocalCluster, free_tcp_port
from trustchain.node.opsclient import submit_all

PAYLOAD = 100


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "consensus",
        help="committed operations per second with 4 validators, side by side with etcd",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            4 validator processes on ::1; a client process submits 100-byte no-op
            operations one at a time (commit latency p50/p99) and then with many in
            flight (committed operations/s, blocks/s).  The same run measures a 3-member
            etcd cluster on ::1 with the same payload (sequential and concurrent puts).

            example:
              trustchain bench consensus --ops 20000 --in-flight 256
            """
        ),
    )
    bench.add_argument("--ops", type=int, default=20000, help="operations in the throughput run")
    bench.add_argument("--in-flight", type=int, default=256, help="unanswered operations per node")
    bench.add_argument("--latency-ops", type=int, default=300, help="operations one at a time")
    bench.add_argument("--no-etcd", action="store_true", help="skip the etcd comparison")
    bench.set_defaults(func=cmd_bench)


def _client(argv: list[str]) -> dict[str, Any]:
    """Runs in its own process: argv = [ports-comma, total ops, in flight per node, tag]."""
    ports = [int(p) for p in argv[0].split(",")]
    total, in_flight, tag = int(argv[1]), int(argv[2]), argv[3]

    async def main() -> dict[str, Any]:
        results: list[Any] = []
        per_node = max(1, total // len(ports))
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for index, port in enumerate(ports):
                ops = [
                    (f"{tag}-{index}-{i}-".encode() + os.urandom(PAYLOAD))[:PAYLOAD]
                    for i in range(per_node)
                ]

                async def run(port: int = port, ops: list[bytes] = ops) -> None:
                    results.extend(await submit_all(port, ops, in_flight))

                nursery.start_soon(run)
        elapsed = time.monotonic() - started
        latencies = [r.latency for r in results if r.ok]
        return {
            "ops": len(latencies),
            "failed": len(results) - len(latencies),
            "seconds": elapsed,
            "ops_per_s": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
        }

    return trio.run(main)


def _run_worker(role: str, args: list[str]) -> dict[str, Any]:
    """Run a load generator (`client` or `etcd-client`) in its own process; its figures."""
    result = subprocess.run(
        [sys.executable, "-m", "trustchain.node.bench_consensus", role, *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{result.stderr}")
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def _height(cluster: LocalCluster) -> int:
    heights = [
        e["height"] for e in cluster.node("v1").events() if e.get("event") == "consensus.progress"
    ]
    return heights[-1] if heights else 0


def bench_trustchain(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = LocalCluster.create(
        workdir / "cluster", 4, client_endpoints=True,
        consensus="round_timeout = 1.0\nmax_batch = 2000\nmin_block_interval = 0.05",
    )  # fmt: skip
    cluster.start()
    try:
        if not cluster.wait(lambda ev: _height(cluster) >= 3, timeout=60):
            raise RuntimeError("the cluster did not start committing; see its logs")
        ports = ",".join(str(n.client_port) for n in cluster.nodes)
        print("  trustchain: one operation at a time ...", flush=True)
        first = str(cluster.nodes[0].client_port)
        latency = _run_worker("client", [first, str(args.latency_ops), "1", "lat"])
        print("  trustchain: many in flight ...", flush=True)
        time.sleep(1.1)  # let a progress line mark the start
        h0, t0 = _height(cluster), time.monotonic()
        throughput = _run_worker("client", [ports, str(args.ops), str(args.in_flight), "tput"])
        time.sleep(1.1)
        blocks_per_s = (_height(cluster) - h0) / (time.monotonic() - t0)
    finally:
        cluster.stop()
    return {"latency": latency, "throughput": throughput, "blocks_per_s": blocks_per_s}


# --- etcd -------------------------------------------------------------------------------


def ensure_etcd() -> str | None:
    """Path of the etcd binary, installing Debian's etcd-server as root if needed."""
    found = shutil.which("etcd")
    if found:
        return found
    if os.geteuid() != 0:
        print("  etcd: not installed; run `sudo apt-get install etcd-server` to compare")
        return None
    print("  etcd: installing Debian package etcd-server ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("etcd")


def start_etcd(binary: str, workdir: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    names = ["e1", "e2", "e3"]
    peer = {n: free_tcp_port() for n in names}
    client = {n: free_tcp_port() for n in names}
    initial = ",".join(f"{n}=http://[::1]:{peer[n]}" for n in names)
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for n in names:
        command = [binary, "--name", n, "--data-dir", str(workdir / n)]
        command += ["--listen-peer-urls", f"http://[::1]:{peer[n]}"]
        command += ["--initial-advertise-peer-urls", f"http://[::1]:{peer[n]}"]
        command += ["--listen-client-urls", f"http://[::1]:{client[n]}"]
        command += ["--advertise-client-urls", f"http://[::1]:{client[n]}"]
        command += ["--initial-cluster", initial, "--initial-cluster-state", "new"]
        command += ["--initial-cluster-token", f"tc-bench-{os.getpid()}"]
        with open(workdir / f"{n}.log", "wb") as log:
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
    return procs, [client[n] for n in names]


def _etcd_put(conn: http.client.HTTPConnection, key: bytes, value: bytes) -> None:
    body = json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    )
    conn.request("POST", "/v3/kv/put", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"etcd put failed: {response.status} {data[:200]!r}")


def _etcd_client(argv: list[str]) -> dict[str, Any]:
    """Runs in its own process: argv = [ports-comma, total puts, concurrency]."""
    ports = [int(p) for p in argv[0].split(",")]
    total, threads = int(argv[1]), int(argv[2])
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, total // threads)

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("::1", ports[index % len(ports)], timeout=30)
        mine = []
        for i in range(per_thread):
            started = time.monotonic()
            _etcd_put(conn, f"k-{index}-{i}".encode(), os.urandom(PAYLOAD))
            mine.append(time.monotonic() - started)
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    return {
        "ops": len(latencies),
        "seconds": elapsed,
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def bench_etcd(args: argparse.Namespace, workdir: Path) -> dict[str, Any] | None:
    binary = ensure_etcd()
    if binary is None:
        return None
    procs, ports = start_etcd(binary, workdir / "etcd")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _etcd_put(http.client.HTTPConnection("::1", ports[0], timeout=2), b"warm", b"up")
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not start; see its logs") from None
                time.sleep(0.2)
        print("  etcd: sequential puts ...", flush=True)
        sequential = _run_worker("etcd-client", [str(ports[0]), str(args.latency_ops), "1"])
        print("  etcd: concurrent puts ...", flush=True)
        threads = min(64, args.in_flight)
        concurrent = _run_worker(
            "etcd-client", [",".join(map(str, ports)), str(args.ops // 4), str(threads)]
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    return {"sequential": sequential, "concurrent": concurrent, "threads": threads}


def cmd_bench(args: argparse.Namespace) -> int:
    print("bench consensus: 4 validators on ::1, 100-byte operations from a client process")
    with tempfile.TemporaryDirectory(prefix="tc-bench-consensus-") as tmp:
        tc = bench_trustchain(args, Path(tmp))
        etcd = None if args.no_etcd else bench_etcd(args, Path(tmp))
    lat, tput = tc["latency"], tc["throughput"]
    print()
    print(f"{'system':<22} {'1-at-a-time ops/s':>17} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'concurrent ops/s':>16} {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    print(f"{'trustchain (4 nodes)':<22} {lat['ops_per_s']:>17,.0f} {lat['p50_ms']:>7.1f} "
          f"{lat['p99_ms']:>7.1f} {tput['ops_per_s']:>16,.0f} {tput['p50_ms']:>7.1f} "
          f"{tput['p99_ms']:>7.1f}")  # fmt: skip
    if etcd is not None:
        seq, con = etcd["sequential"], etcd["concurrent"]
        print(f"{'etcd (3 members)':<22} {seq['ops_per_s']:>17,.0f} {seq['p50_ms']:>7.1f} "
              f"{seq['p99_ms']:>7.1f} {con['ops_per_s']:>16,.0f} {con['p50_ms']:>7.1f} "
              f"{con['p99_ms']:>7.1f}")  # fmt: skip
        print(f"ratio trustchain/etcd: sequential {lat['ops_per_s'] / seq['ops_per_s']:.2f}, "
              f"concurrent {tput['ops_per_s'] / con['ops_per_s']:.2f} "
              f"(etcd with {etcd['threads']} client threads)")  # fmt: skip
    print(f"blocks/s during the concurrent run: {tc['blocks_per_s']:.1f}; "
          f"failed operations: {tput['failed'] + lat['failed']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    figures = _client(rest) if role == "client" else _etcd_client(rest)
    print(json.dumps(figures))
