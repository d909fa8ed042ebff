"""`trustchain bench dns`: DNS over QUIC, server and client in separate processes.

The bench process writes a throw-away TLS certificate, starts a DoQ server
process (the default zone plus published TLSA/CAA records) and a client
process on ::1, and prints what the client measured:

- handshake: time from the first Initial to HandshakeCompleted for new
  connections, and to the first answer; the same for resumed sessions whose
  query rides in 0-RTT;
- one kept connection at fixed offered loads (open loop: queries leave on a
  schedule whatever the answers do, and latency counts from the scheduled
  time, so a client or server that falls behind shows in the figures);
- one kept connection with a fixed number of queries in flight (closed loop:
  the most it does);
- the same with every query name distinct, so no cache helps;
- many connections sharing the offered load;
- before all that, in the bench process itself: the cost of applying one
  committed batch of 10 certificates (`Authority.apply`, what every validator
  runs on its event loop per block) on top of 1,000 and of 50,000 published
  certificates; it should not grow with the number published.

Server CPU time per query comes from /proc/PID/stat of the server process,
which is what the "queries per second per server process" goal is about; the
client's CPU share shows when the client (or a busy machine) is the limit, and
the UDP drop count (/proc/net/snmp6, machine-wide) explains latency tails: each
dropped datagram costs a QUIC loss-recovery round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import trio

from trustchain.node.benchstats import percentile, usable_cpus

LOADS = (500, 1000, 2000, 3000, 4000)
HOT_NAMES = (
    ("trust.hypermesh.online.", "AAAA"),
    ("ca.trust.hypermesh.online.", "AAAA"),
    ("ct.trust.hypermesh.online.", "AAAA"),
    ("_443._tcp.www.trust.hypermesh.online.", "TLSA"),
    ("trust.hypermesh.online.", "CAA"),
    ("nope.trust.hypermesh.online.", "AAAA"),
)
"""What the kept-connection runs ask, in turn (answers, CNAME chains, TLSA, CAA, NXDOMAIN)."""
APPLY_SIZES = (1_000, 50_000)
"""Published certificates under which the cost of one batch is measured."""
APPLY_BATCH = 10
"""Certificates per measured batch."""
APPLY_RUNS = 200
"""Batches measured per size, each applied to the same snapshot."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "dns",
        help="DNS over QUIC: handshake time, latency at fixed loads, queries per second",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Starts a DoQ server process and a client process on ::1 and measures: the
            handshake time of new and of resumed (0-RTT) connections; p50/p99 latency
            and answered queries per second at fixed offered loads over one kept
            connection and over many connections; the most one connection does with
            64 queries in flight, with repeated and with distinct names; and the
            server's CPU time per query.  First, in this process, the time to apply
            one committed batch of 10 certificates on top of 1,000 and of 50,000
            published ones (what every validator does per block).

            examples:
              trustchain bench dns --seconds 3
              trustchain bench dns --apply-sizes 1000,20000,100000 --seconds 1
            """
        ),
    )
    bench.add_argument("--seconds", type=float, default=3.0, help="per run (default 3)")
    bench.add_argument(
        "--loads",
        default=",".join(map(str, LOADS)),
        help=f"offered loads in queries/s (default {','.join(map(str, LOADS))})",
    )
    bench.add_argument(
        "--connections", type=int, default=16, help="connections in the many-connection runs"
    )
    bench.add_argument(
        "--apply-sizes",
        default=",".join(map(str, APPLY_SIZES)),
        help="published certificates under which a 10-certificate batch is applied "
        f"(default {','.join(map(str, APPLY_SIZES))}; empty: skip)",
    )
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from trustchain.node.errors import UserError

    try:
        loads = [int(x) for x in args.loads.split(",") if x]
    except ValueError:
        raise UserError("--loads: expected comma-separated integers, e.g. 1000,3000") from None
    if not loads or min(loads) < 1 or not 0 < args.seconds <= 60 or not 1 <= args.connections <= 64:
        raise UserError("--loads > 0, --seconds in (0, 60], --connections in 1..64 please")
    try:
        apply_sizes = [int(x) for x in args.apply_sizes.split(",") if x]
    except ValueError:
        raise UserError("--apply-sizes: expected integers, e.g. 1000,50000") from None
    if apply_sizes and not 0 <= min(apply_sizes) <= max(apply_sizes) <= 1_000_000:
        raise UserError("--apply-sizes: each in 0..1000000 please (or empty to skip)")
    applies = measure_apply(apply_sizes)
    worker = [sys.executable, "-m", "trustchain.node.bench_dns"]
    with tempfile.TemporaryDirectory(prefix="tc-bench-dns-") as tmp:
        cert, key = _write_tls(Path(tmp))
        print(
            f"bench dns: server and client processes on ::1, {args.seconds:g} s per run "
            f"({usable_cpus()} CPUs, shared)",
            flush=True,
        )
        server = subprocess.Popen(
            [*worker, "server", str(cert), str(key)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("port "):
                print("bench dns: the server did not start", file=sys.stderr)
                return 1
            port = int(line.split()[1])
            result = subprocess.run(
                [
                    *worker,
                    "client",
                    str(port),
                    str(cert),
                    str(server.pid),
                    str(args.seconds),
                    ",".join(map(str, loads)),
                    str(args.connections),
                ],
                stdout=subprocess.PIPE,
                text=True,
                timeout=120 + 12 * args.seconds * (len(loads) + 6),
            )
        finally:
            server.terminate()
            server.wait(10)
    if result.returncode != 0:
        print("bench dns: the client failed (its stderr is above)", file=sys.stderr)
        return 1
    figures = json.loads(result.stdout)
    figures["apply"] = applies
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures)
    return 0


def _print(figures: dict[str, Any]) -> None:
    for row in figures["apply"]:
        print(
            f"apply {row['batch']} certificates on {row['published']:>9,} published: "
            f"p50 {row['p50_us']:6.0f} us  mean {row['mean_us']:6.0f} us  max "
            f"{row['max_us']:6.0f} us per batch  ({row['runs']} batches)"
        )
    for row in figures["handshakes"]:
        print(
            f"{row['kind']:<34} handshake p50 {row['handshake_p50_ms']:6.2f} ms  "
            f"p99 {row['handshake_p99_ms']:6.2f} ms   first answer p50 "
            f"{row['first_answer_p50_ms']:6.2f} ms  p99 {row['first_answer_p99_ms']:6.2f} ms"
            f"  ({row['runs']} runs)"
        )
    header = (
        f"{'run':<34} {'offered/s':>9} {'answered/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'errors':>6} {'server CPU us/q':>15} {'client CPU':>10} "
        f"{'UDP drops':>9}"
    )
    print(header)
    for row in figures["runs"]:
        offered = "-" if row["offered"] is None else f"{row['offered']:,}"
        print(
            f"{row['kind']:<34} {offered:>9} {row['answered_per_s']:>10,.0f} "
            f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['max_ms']:>7.2f} "
            f"{row['errors']:>6} {row['server_cpu_us_per_query']:>15.0f} "
            f"{row['client_cpu_share']:>9.0%} {row['udp_drops']:>10}"
        )
        for sample in row["error_samples"]:
            print(f"    error: {sample}")


def _write_tls(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustchain bench dns")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("::1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "dns.pem", directory / "dns.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- applying committed batches (in the bench process) --------------------------------------


def measure_apply(sizes: list[int]) -> list[dict[str, Any]]:
    """Time `Authority.apply` of one APPLY_BATCH-certificate batch per published size.

    Every timed batch goes onto the same snapshot of `size` certificates (a new
    Authority over it each time, not timed), so the size does not drift during
    the runs; snapshots are immutable, which is what makes that possible.
    """
    import gc
    import hashlib
    import statistics

    from trustchain.dns.authority import Authority
    from trustchain.dns.records import CertificateIssued, PublishedRecords
    from trustchain.dns.zones import default_zone

    zones = [default_zone()]

    def certificate(i: int) -> CertificateIssued:
        host = f"host{i}.trust.hypermesh.online."
        return CertificateIssued(
            f"{i + 1:x}", (dns.name.from_text(host),), hashlib.sha256(host.encode()).digest()
        )

    rows = []
    for size in sizes:
        print(f"bench dns: publishing {size:,} certificates to apply batches on ...", flush=True)
        published = PublishedRecords.empty(zone.origin for zone in zones)
        for start in range(0, size, 5_000):
            chunk = [certificate(i) for i in range(start, min(size, start + 5_000))]
            published = published.apply(chunk)
        batches = [
            [certificate(size + run * APPLY_BATCH + j) for j in range(APPLY_BATCH)]
            for run in range(APPLY_RUNS)
        ]
        gc.collect()  # the build's garbage is not the batches' cost
        timings = []
        for batch in batches:
            authority = Authority(zones, published)
            started = time.perf_counter()
            authority.apply(batch, version=published.version + 1)
            timings.append(time.perf_counter() - started)
        rows.append(
            {
                "published": size,
                "batch": APPLY_BATCH,
                "runs": len(timings),
                "p50_us": statistics.median(timings) * 1e6,
                "mean_us": statistics.mean(timings) * 1e6,
                "max_us": max(timings) * 1e6,
            }
        )
    return rows


# --- server process ----------------------------------------------------------------------------


async def _serve(cert: Path, key: Path) -> None:
    import hashlib

    from trustchain.dns.authority import Authority
    from trustchain.dns.records import CaaPolicy, CaaRecord, CertificateIssued
    from trustchain.dns.zones import default_zone
    from trustchain.node.config import Address
    from trustchain.node.doq import DoqServer, DoqSettings, server_configuration

    authority = Authority([default_zone()])
    apex = dns.name.from_text("trust.hypermesh.online.")
    authority.apply(
        [
            *(
                CertificateIssued(
                    f"{i + 1:x}",
                    (dns.name.from_text(f"{host}.trust.hypermesh.online."),),
                    hashlib.sha256(host.encode()).digest(),
                )
                for i, host in enumerate(("www", "api", "mail"))
            ),
            CaaPolicy(apex, (CaaRecord(0, "issue", "trust.hypermesh.online"),)),
        ]
    )
    from trustchain.node import log

    log.configure("warning")  # anything unusual shows in the bench's output
    settings = DoqSettings()
    server = DoqServer(authority, server_configuration(cert, key, settings), settings)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, Address("::1", 0))
        print(f"port {bound[1]}", flush=True)


# --- client process -----------------------------------------------------------------------------


def _udp_drops() -> int:
    """Datagrams this machine dropped for full UDP6 receive buffers (all processes)."""
    try:
        with open("/proc/net/snmp6") as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "Udp6RcvbufErrors":
                    return int(value)
    except OSError:
        pass
    return 0


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


class _Client:
    def __init__(self, port: int, cert: Path, server_pid: int, nursery: trio.Nursery) -> None:
        self.port = port
        self.cert = cert
        self.server_pid = server_pid
        self.nursery = nursery
        hot = []
        for qname, rdtype in HOT_NAMES:
            message = dns.message.make_query(qname, rdtype)
            message.id = 0
            hot.append(message.to_wire())
        self.hot = hot
        self.distinct = 0

    def configuration(self, ticket: Any = None) -> Any:
        from trustchain.node.doq import client_configuration

        return client_configuration(cafile=self.cert, server_name="::1", session_ticket=ticket)

    async def connect(self, ticket: Any = None) -> Any:
        from trustchain.node.config import Address
        from trustchain.node.doq import DoqClient

        return await DoqClient.connect(
            Address("::1", self.port), self.nursery, self.configuration(ticket)
        )

    def next_query(self, counter: int, distinct: bool) -> bytes:
        if not distinct:
            return self.hot[counter % len(self.hot)]
        self.distinct += 1
        message = dns.message.make_query(f"q{self.distinct}.trust.hypermesh.online.", "AAAA")
        message.id = 0
        return message.to_wire()

    async def handshakes(self, runs: int = 30) -> list[dict[str, Any]]:
        rows = []
        # One connection first, not measured: the server's first handshake
        # pays for lazy set-up that no later client sees.
        warm = await self.connect()
        await warm.query(self.hot[0])
        warm.close()
        await warm.closed.wait()
        ticket = None
        for kind in ("new connection", "resumed session, query in 0-RTT"):
            handshake, first = [], []
            for _ in range(runs):
                started = trio.current_time()
                client = await self.connect(ticket if kind.startswith("resumed") else None)
                await client.query(self.hot[0])
                first.append(trio.current_time() - started)
                handshake.append(await client.handshake())
                if kind.startswith("resumed") and not client.early_data_accepted:
                    raise RuntimeError("the server did not accept 0-RTT")
                with trio.fail_after(5):
                    while client.session_ticket is None:
                        await trio.sleep(0.001)
                ticket = client.session_ticket
                client.close()
                await client.closed.wait()
            handshake.sort()
            first.sort()
            rows.append(
                {
                    "kind": kind,
                    "runs": runs,
                    "handshake_p50_ms": percentile(handshake, 0.5) * 1000,
                    "handshake_p99_ms": percentile(handshake, 0.99) * 1000,
                    "first_answer_p50_ms": percentile(first, 0.5) * 1000,
                    "first_answer_p99_ms": percentile(first, 0.99) * 1000,
                }
            )
        return rows

    async def measure(
        self,
        kind: str,
        clients: list[Any],
        seconds: float,
        *,
        offered: int | None = None,
        in_flight: int = 0,
        distinct: bool = False,
    ) -> dict[str, Any]:
        """Open loop at `offered` queries/s, or closed loop with `in_flight` per connection."""
        from trustchain.node.doq import DoqClientError

        latencies: list[float] = []
        errors = 0
        samples: list[str] = []
        server_cpu = _process_cpu(self.server_pid)
        client_cpu = time.process_time()
        drops = _udp_drops()
        started = trio.current_time()
        stop = started + seconds
        counter = 0
        outstanding = 0
        all_done = trio.Event()

        def on_reply(scheduled: float, refill: Callable[[], None] | None) -> Any:
            def callback(stream_id: int, outcome: object) -> None:
                nonlocal errors, outstanding
                outstanding -= 1
                if isinstance(outcome, DoqClientError):
                    errors += 1
                    if len(samples) < 3:
                        samples.append(f"stream {stream_id}: {outcome}")
                else:
                    latencies.append(trio.current_time() - scheduled)
                if refill is not None and trio.current_time() < stop:
                    refill()
                elif outstanding == 0 and trio.current_time() >= stop:
                    all_done.set()

            return callback

        def send(client: Any, scheduled: float, refill: Callable[[], None] | None) -> None:
            nonlocal counter, outstanding
            counter += 1
            outstanding += 1
            client.submit(self.next_query(counter, distinct), on_reply(scheduled, refill))

        if offered is not None:
            interval = 1.0 / offered
            due = started
            while due < stop:
                now = trio.current_time()
                while due <= now and due < stop:
                    send(clients[counter % len(clients)], due, None)
                    due += interval
                await trio.sleep_until(min(due, stop))
        else:
            for client in clients:
                for _ in range(in_flight):

                    def refill(client: Any = client) -> None:
                        send(client, trio.current_time(), refill)

                    refill()
            await trio.sleep_until(stop)
        with trio.move_on_after(10):
            if outstanding:
                await all_done.wait()
        elapsed = trio.current_time() - started
        if outstanding:
            samples.append(f"{outstanding} queries unanswered 10 s after the run")
        errors += outstanding
        server_cpu = _process_cpu(self.server_pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        latencies.sort()
        answered = len(latencies)
        return {
            "kind": kind,
            "offered": offered,
            "in_flight": in_flight * len(clients) if offered is None else None,
            "connections": len(clients),
            "answered": answered,
            "answered_per_s": answered / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": (latencies[-1] if latencies else math.nan) * 1000,
            "errors": errors,
            "server_cpu_us_per_query": server_cpu / max(answered, 1) * 1e6,
            "client_cpu_share": client_cpu / elapsed,
            "error_samples": samples,
            "udp_drops": _udp_drops() - drops,
        }


async def _drive(
    port: int, cert: Path, server_pid: int, seconds: float, loads: list[int], connections: int
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        client = _Client(port, cert, server_pid, nursery)
        handshakes = await client.handshakes()
        kept = await client.connect()
        await kept.handshake()
        # Warm-up, not reported: caches, allocator, CPU frequency.
        await client.measure("warm-up", [kept], 1.0, in_flight=16)
        for load in loads:
            runs.append(await client.measure("1 connection", [kept], seconds, offered=load))
        runs.append(
            await client.measure("1 connection, 64 in flight", [kept], seconds, in_flight=64)
        )
        runs.append(
            await client.measure(
                "1 connection, distinct names", [kept], seconds, offered=1000, distinct=True
            )
        )
        runs.append(
            await client.measure(
                "1 conn., distinct names, 64 in flight",
                [kept],
                seconds,
                in_flight=64,
                distinct=True,
            )
        )
        many = [await client.connect() for _ in range(connections)]
        for each in many:
            await each.handshake()
        for load in (1000, 3000):
            runs.append(
                await client.measure(f"{connections} connections", many, seconds, offered=load)
            )
        runs.append(
            await client.measure(
                f"{connections} connections, 4 in flight each", many, seconds, in_flight=4
            )
        )
        for each in [kept, *many]:
            each.close()
        nursery.cancel_scope.cancel()
    return {"seconds": seconds, "handshakes": handshakes, "runs": runs}


def _worker(argv: list[str]) -> int:
    role, *rest = argv
    if role == "server":
        trio.run(_serve, Path(rest[0]), Path(rest[1]))
        return 0
    port, cert, pid, seconds, loads, connections = rest
    figures = trio.run(
        _drive,
        int(port),
        Path(cert),
        int(pid),
        float(seconds),
        [int(x) for x in loads.split(",")],
        int(connections),
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
