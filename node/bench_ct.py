"""`trustchain bench ct`: the standalone CT log under load, measured from outside.

The log runs as its own process (`trustchain ct serve`, HTTPS on ::1); this
process is the load generator.  Figures:
- add-chain with 1, 16 and 64 concurrent clients (one kept-alive TLS
  connection each): entries/s, p50/p99 latency, average entries per sequencing
  round (from the log's /metrics) and the log process's CPU microseconds per
  entry (from /proc);
- bytes on disk per entry after those runs;
- get-proof-by-hash per second on a tree of 1,000,000 entries.  That tree is
  bulk-imported straight into a data directory (trustchain.ct.bulk), not
  submitted over HTTP, and the log is then started on it;
- one store round (tiles, checkpoint, index: what a validator does per
  committed block) of 1 and of 16 entries on a store of 10,000 entries, in this
  process: wall time until the round's entries are answered and until the round
  is done, and the fsync/fdatasync calls it makes (counted by wrapping ``os``'s
  functions here, so SQLite's own syncs are not included), with how many
  serialized waits they form (calls that overlap in time count as one wait) and
  how long the round spent in them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import devcerts, merkle, sct
from trustchain.ct import signer as ct_signer
from trustchain.ct.bulk import import_certificates
from trustchain.ct.client import HTTPSConnection, client_context
from trustchain.ct.sct import EntryType, LogEntry, TimestampedEntry
from trustchain.ct.sequencer import Submission
from trustchain.ct.service import CTLog, LogParams
from trustchain.node.benchstats import percentile, usable_cpus
from trustchain.node.errors import UserError

ORIGIN = "bench.ct.trustchain.example/log"
CERT_RATE_GUESS = 2500
"""Certificates generated per second of measurement and concurrency level (an upper bound)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "ct",
        help="standalone CT log: add-chain load, proofs at 1M entries, disk and CPU per entry",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Starts `trustchain ct serve` as a separate process on ::1 and drives
            add-chain from this process with 1, 16 and 64 concurrent HTTPS clients
            (real certificates under a test root), then bulk-imports a 1,000,000-entry
            tree directly into a new data directory (not over HTTP), starts the log on
            it and measures get-proof-by-hash.  Prints entries/s, p50/p99 latency,
            entries per sequencing round, CPU microseconds per entry (log process),
            bytes on disk per entry and proofs/s.  Finally it times single store
            rounds (1 and 16 entries on a 10,000-entry store) in this process and
            counts their fsync calls.

            examples:
              trustchain bench ct --seconds 5
              trustchain bench ct --rounds-only
            """
        ),
    )
    bench.add_argument(
        "--seconds", type=float, default=5.0, help="per concurrency level (default 5)"
    )
    bench.add_argument(
        "--concurrency", default="1,16,64", help="client counts, comma-separated (default 1,16,64)"
    )
    bench.add_argument("--pool-interval", type=int, default=50, metavar="MS", help="(default 50)")
    bench.add_argument(
        "--proof-entries",
        type=int,
        default=1_000_000,
        help="tree size for proofs (default 1000000)",
    )
    bench.add_argument("--proof-seconds", type=float, default=5.0, help="(default 5)")
    bench.add_argument("--proof-concurrency", type=int, default=16, help="(default 16)")
    bench.add_argument(
        "--round-entries",
        type=int,
        default=10_000,
        help="store size for the store-round figures (default 10000)",
    )
    bench.add_argument(
        "--rounds", type=int, default=40, help="store rounds per batch size (default 40)"
    )
    bench.add_argument(
        "--rounds-only",
        action="store_true",
        help="measure only the store rounds (skip add-chain and proofs)",
    )
    bench.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _disk_usage(path: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of every file under ``path``."""
    allocated = apparent = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


@dataclass
class Setup:
    root: devcerts.Issued
    ca: devcerts.Issued
    key: Path
    roots: Path
    tls_cert: Path
    tls_key: Path
    ca_pem: bytes


class LogProcess:
    """`trustchain ct serve` in a child process; its events go to a file."""

    def __init__(self, setup: Setup, data: Path, pool_interval: int, log_file: Path) -> None:
        self._log_file = log_file
        self._out = log_file.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trustchain.node.cli",
                "ct",
                "serve",
                "--data",
                str(data),
                "--roots",
                str(setup.roots),
                "--log-key",
                str(setup.key),
                "--origin",
                ORIGIN,
                "--listen",
                "[::1]:0",
                "--tls-cert",
                str(setup.tls_cert),
                "--tls-key",
                str(setup.tls_key),
                "--pool-interval",
                str(pool_interval),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"the log process exited; see {self._log_file}")
            for line in self._log_file.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "ct.listening":
                    return int(event["urls"][0].rsplit(":", 1)[1])
            time.sleep(0.05)
        raise UserError("the log process did not start within 300 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


async def _metrics(conn: HTTPSConnection) -> dict[str, float]:
    r = await conn.request("GET", "/metrics")
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" ")
            out[name] = float(value)
    return out


@dataclass
class AddChainResult:
    clients: int
    seconds: float
    entries: int
    entries_per_second: float
    p50_ms: float
    p99_ms: float
    rejected_503: int
    errors: int
    rounds: int
    entries_per_round: float
    log_cpu_us_per_entry: float
    client_cpu_us_per_entry: float


async def _add_chain_phase(
    port: int, ca_pem: bytes, pid: int, bodies: list[bytes], clients: int, seconds: float
) -> AddChainResult:
    ctx = client_context(cadata=ca_pem)
    conns = [HTTPSConnection("::1", port, ctx) for _ in range(clients)]
    for c in conns:  # connect and warm up before the clock starts
        await c.request("GET", "/ct/v1/get-sth")
    latencies: list[float] = []
    rejected = errors = 0
    feed = iter(bodies)
    before = await _metrics(conns[0])
    cpu0, self0 = _cpu_seconds(pid), _self_cpu()
    start = trio.current_time()
    deadline = start + seconds

    async def worker(conn: HTTPSConnection) -> None:
        nonlocal rejected, errors
        while trio.current_time() < deadline:
            body = next(feed, None)
            if body is None:
                return
            t0 = trio.current_time()
            r = await conn.request("POST", "/ct/v1/add-chain", body)
            if r.status == 200:
                latencies.append(trio.current_time() - t0)
            elif r.status == 503:
                rejected += 1
                await trio.sleep(0.01)
            else:
                errors += 1

    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(worker, c)
    elapsed = trio.current_time() - start
    cpu1, self1 = _cpu_seconds(pid), _self_cpu()
    after = await _metrics(conns[0])
    for c in conns:
        await c.aclose()
    if next(feed, None) is None:
        _say("  (ran out of pre-generated certificates; the figure is a lower bound)")
    n = len(latencies)
    rounds = int(after["ct_rounds_total"] - before["ct_rounds_total"])
    sequenced = after["ct_sequenced_entries_total"] - before["ct_sequenced_entries_total"]
    lat = sorted(latencies)
    return AddChainResult(
        clients=clients,
        seconds=round(elapsed, 2),
        entries=n,
        entries_per_second=round(n / elapsed, 1),
        p50_ms=round(percentile(lat, 0.50) * 1000, 2),
        p99_ms=round(percentile(lat, 0.99) * 1000, 2),
        rejected_503=rejected,
        errors=errors,
        rounds=rounds,
        entries_per_round=round(sequenced / rounds, 1) if rounds else 0.0,
        log_cpu_us_per_entry=round((cpu1 - cpu0) / max(n, 1) * 1e6, 1),
        client_cpu_us_per_entry=round((self1 - self0) / max(n, 1) * 1e6, 1),
    )


async def _proof_phase(
    port: int,
    ca_pem: bytes,
    pid: int,
    queries: list[tuple[int, bytes]],
    size: int,
    clients: int,
    seconds: float,
) -> dict[str, Any]:
    ctx = client_context(cadata=ca_pem)
    conns = [HTTPSConnection("::1", port, ctx) for _ in range(clients)]
    r = await conns[0].request("GET", "/ct/v1/get-sth")
    root = base64.b64decode(r.json()["sha256_root_hash"])
    for c in conns[1:]:
        await c.request("GET", "/ct/v1/get-sth")
    done = errors = 0
    latencies: list[float] = []
    cpu0 = _cpu_seconds(pid)
    start = trio.current_time()
    deadline = start + seconds
    rng = random.Random(1)

    async def worker(conn: HTTPSConnection) -> None:
        nonlocal done, errors
        while trio.current_time() < deadline:
            index, h = queries[rng.randrange(len(queries))]
            target = (
                f"/ct/v1/get-proof-by-hash?hash={quote(base64.b64encode(h).decode(), safe='')}"
                f"&tree_size={size}"
            )
            t0 = trio.current_time()
            resp = await conn.request("GET", target)
            latencies.append(trio.current_time() - t0)
            if resp.status != 200:
                errors += 1
                continue
            doc = resp.json()
            if done % 97 == 0:  # spot-check the answers
                proof = [base64.b64decode(p) for p in doc["audit_path"]]
                merkle.verify_inclusion(doc["leaf_index"], size, h, proof, root)
                assert doc["leaf_index"] == index
            done += 1

    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(worker, c)
    elapsed = trio.current_time() - start
    cpu = _cpu_seconds(pid) - cpu0
    for c in conns:
        await c.aclose()
    lat = sorted(latencies)
    return {
        "tree_size": size,
        "clients": clients,
        "proofs": done,
        "errors": errors,
        "proofs_per_second": round(done / elapsed, 1),
        "p50_ms": round(percentile(lat, 0.5) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "log_cpu_us_per_proof": round(cpu / max(done, 1) * 1e6, 1),
    }


class _SyncCounter:
    """Wraps ``os.fsync`` and ``os.fdatasync`` while active; records each call's span."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            t0 = time.perf_counter()
            try:
                real(fd)
            finally:
                t1 = time.perf_counter()
                with self._lock:
                    self.spans.append((t0, t1))

        return call

    @contextmanager
    def active(self) -> Iterator[None]:
        real_fsync, real_fdatasync = os.fsync, os.fdatasync
        os.fsync, os.fdatasync = self._wrap(real_fsync), self._wrap(real_fdatasync)  # type: ignore[assignment]
        try:
            yield
        finally:
            os.fsync, os.fdatasync = real_fsync, real_fdatasync

    def take(self) -> tuple[int, int, float]:
        """(calls, serialized waits, seconds spent waiting) since the last ``take``:
        calls that overlap in time count as one wait, and their time once."""
        with self._lock:
            spans, self.spans = sorted(self.spans), []
        waits, end, busy = 0, -1.0, 0.0
        for t0, t1 in spans:
            if t0 >= end:
                waits += 1
                busy += t1 - t0
            elif t1 > end:
                busy += t1 - end
            end = max(end, t1)
        return len(spans), waits, busy


async def _store_round_phase(
    data: Path, signer: ct_signer.Signer, first: int, template: bytes, rounds: int
) -> list[dict[str, Any]]:
    """Time rounds the way a validator cuts them (one per block, ReplicatedLog.append)."""
    log = await CTLog.open(
        data, signer, ORIGIN, None, LogParams(interval=0.0, refresh_interval=1e9)
    )
    counter = _SyncCounter()
    serial = first
    out = []
    try:
        with counter.active():
            for batch in (1, 16):
                answered: list[float] = []
                done: list[float] = []
                calls: list[int] = []
                waits: list[int] = []
                syncing: list[float] = []
                for _ in range(rounds):
                    for _ in range(batch):
                        cert = template[:-8] + serial.to_bytes(8, "big")
                        serial += 1
                        log._core.submit(Submission(LogEntry(EntryType.X509, cert)))
                    rnd = log._core.start_round(trio.current_time(), time.time_ns() // 1_000_000)
                    assert rnd is not None and len(rnd.entries) == batch
                    counter.take()
                    before = log.metrics.round_seconds
                    t0 = time.perf_counter()
                    await log._publish(rnd)  # what ReplicatedLog.append runs per block
                    done.append(time.perf_counter() - t0)
                    answered.append(log.metrics.round_seconds - before)
                    n, w, busy = counter.take()
                    calls.append(n)
                    waits.append(w)
                    syncing.append(busy)
                out.append(
                    {
                        "entries": batch,
                        "rounds": rounds,
                        "answered_p50_ms": round(percentile(answered, 0.5) * 1000, 2),
                        "answered_p90_ms": round(percentile(answered, 0.9) * 1000, 2),
                        "done_p50_ms": round(percentile(done, 0.5) * 1000, 2),
                        "fsyncs_per_round": round(sum(calls) / rounds, 1),
                        "serial_waits_per_round": round(sum(waits) / rounds, 1),
                        "sync_wait_p50_ms": round(percentile(syncing, 0.5) * 1000, 2),
                    }
                )
    finally:
        log.close()
    return out


def _store_rounds(
    args: argparse.Namespace, setup: Setup, signer: ct_signer.Signer, work: Path
) -> dict[str, Any]:
    _say(f"bulk-importing {args.round_entries} entries for the store rounds...")
    data = work / "round-data"
    template = devcerts.make_leaf(setup.ca, "round.bench.example").der

    def cert(i: int) -> bytes:
        return template[:-8] + i.to_bytes(8, "big")

    trio.run(
        lambda: import_certificates(
            data,
            signer,
            ORIGIN,
            (cert(i) for i in range(args.round_entries)),
            timestamp=time.time_ns() // 1_000_000,
        )
    )
    _say(f"timing {args.rounds} store rounds of 1 and of 16 entries...")
    rows = trio.run(_store_round_phase, data, signer, args.round_entries, template, args.rounds)
    return {"store_size": args.round_entries, "rounds": rows}


def _setup(work: Path) -> Setup:
    root = devcerts.make_root("TrustChain Bench Root")
    ca = devcerts.make_intermediate(root, "TrustChain Bench Intermediate")
    key = work / "log.key"
    ct_signer.write_private_key(key, ct_signer.p256_pem(ct_signer.generate_p256()))
    roots = work / "roots.pem"
    roots.write_bytes(root.pem)
    tls_ca, server = devcerts.make_tls_server()
    (work / "tls.pem").write_bytes(server.pem)
    (work / "tls.key").write_bytes(server.key_pem)
    return Setup(root, ca, key, roots, work / "tls.pem", work / "tls.key", tls_ca.pem)


def _bodies(setup: Setup, count: int) -> list[bytes]:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_b64 = base64.b64encode(setup.ca.der).decode()
    out = []
    started = time.monotonic()
    for i in range(count):
        leaf = devcerts.make_leaf(setup.ca, f"leaf{i}.bench.example", key=leaf_key, serial=i + 1)
        out.append(json.dumps({"chain": [base64.b64encode(leaf.der).decode(), ca_b64]}).encode())
        if i % 5000 == 4999:
            _say(f"  certificates: {i + 1}/{count} ({time.monotonic() - started:.0f} s)")
    return out


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        levels = [int(x) for x in args.concurrency.split(",")]
    except ValueError:
        raise UserError("--concurrency: expected comma-separated integers, e.g. 1,16,64") from None
    if any(n < 1 for n in levels) or args.seconds <= 0 or args.proof_entries < 1:
        raise UserError("--concurrency, --seconds and --proof-entries must be positive")
    if args.round_entries < 1 or args.rounds < 1:
        raise UserError("--round-entries and --rounds must be positive")
    own_dir = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="trustchain-bench-ct-")) if own_dir else args.dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = _run(args, levels, work)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
    return 0


def _run(args: argparse.Namespace, levels: list[int], work: Path) -> dict[str, Any]:
    setup = _setup(work)
    signer = ct_signer.load_p256_signer(setup.key)
    if args.rounds_only:
        return {
            "machine": {"cpus": usable_cpus(), "python": sys.version.split()[0]},
            "store_rounds": _store_rounds(args, setup, signer, work),
        }
    count = int(CERT_RATE_GUESS * args.seconds * len(levels)) + 1000
    _say(f"generating {count} leaf certificates (ECDSA P-256, signed by a test intermediate)...")
    bodies = _bodies(setup, count)

    _say("starting `trustchain ct serve` for add-chain...")
    data = work / "data"
    log = LogProcess(setup, data, args.pool_interval, work / "serve.log")
    phases: list[AddChainResult] = []
    try:
        used = 0
        for clients in levels:
            _say(f"add-chain with {clients} client(s) for {args.seconds:g} s...")
            res = trio.run(
                _add_chain_phase,
                log.port,
                setup.ca_pem,
                log.proc.pid,
                bodies[used:],
                clients,
                args.seconds,
            )
            used += res.entries + res.rejected_503 + res.errors + clients
            phases.append(res)
    finally:
        log.stop()
    size = sum(p.entries for p in phases)
    allocated, apparent = _disk_usage(data)

    _say(f"bulk-importing {args.proof_entries} entries directly into a new data directory...")
    proof_data = work / "proof-data"
    timestamp = time.time_ns() // 1_000_000
    template = devcerts.make_leaf(setup.ca, "bulk.bench.example").der

    def cert(i: int) -> bytes:
        # Distinct, certificate-sized entries; the store does not parse them.
        return template[:-8] + i.to_bytes(8, "big")

    started = time.monotonic()
    last = [0.0]

    def progress(n: int) -> None:
        if time.monotonic() - last[0] > 3 or n == args.proof_entries:
            last[0] = time.monotonic()
            _say(f"  imported {n}/{args.proof_entries}")

    bulk_size, _ = trio.run(
        lambda: import_certificates(
            proof_data,
            signer,
            ORIGIN,
            (cert(i) for i in range(args.proof_entries)),
            timestamp=timestamp,
            progress=progress,
        )
    )
    import_seconds = time.monotonic() - started
    rng = random.Random(6962)
    queries = []
    for index in rng.sample(range(bulk_size), min(20_000, bulk_size)):
        entry = LogEntry(EntryType.X509, cert(index))
        te = TimestampedEntry(timestamp, entry, sct.leaf_index_extensions(index))
        queries.append((index, merkle.leaf_hash(sct.merkle_tree_leaf(te))))
    _say("starting `trustchain ct serve` on the imported tree (verifies every hash tile)...")
    t0 = time.monotonic()
    log = LogProcess(setup, proof_data, args.pool_interval, work / "serve-proofs.log")
    open_seconds = time.monotonic() - t0
    try:
        clients, secs = args.proof_concurrency, args.proof_seconds
        _say(f"get-proof-by-hash with {clients} clients for {secs:g} s...")
        proofs = trio.run(
            _proof_phase,
            log.port,
            setup.ca_pem,
            log.proc.pid,
            queries,
            bulk_size,
            args.proof_concurrency,
            args.proof_seconds,
        )
    finally:
        log.stop()
    bulk_alloc, _ = _disk_usage(proof_data)
    store_rounds = _store_rounds(args, setup, signer, work)
    return {
        "machine": {"cpus": usable_cpus(), "python": sys.version.split()[0]},
        "pool_interval_ms": args.pool_interval,
        "add_chain": [asdict(p) for p in phases],
        "disk": {
            "entries": size,
            "bytes_per_entry_allocated": round(allocated / max(size, 1)),
            "bytes_per_entry_apparent": round(apparent / max(size, 1)),
            "leaf_certificate_bytes": len(base64.b64decode(json.loads(bodies[0])["chain"][0])),
        },
        "proofs": {
            **proofs,
            "import": "bulk-imported into the store directly, not over HTTP",
            "import_seconds": round(import_seconds, 1),
            "start_and_verify_seconds": round(open_seconds, 1),
            "bytes_per_entry_allocated": round(bulk_alloc / bulk_size),
        },
        "store_rounds": store_rounds,
    }


def _print_rounds(r: dict[str, Any]) -> None:
    print(
        f"store round on a {r['store_size']}-entry store (in process; answered = until SCTs "
        "could go out, done = with superseded-tile cleanup):"
    )
    print(
        "  entries  answered p50 ms  p90 ms  done p50 ms  fsyncs/round  serialized waits"
        "  in fsync p50 ms"
    )
    for row in r["rounds"]:
        print(
            f"  {row['entries']:>7}  {row['answered_p50_ms']:>15}  {row['answered_p90_ms']:>6}"
            f"  {row['done_p50_ms']:>11}  {row['fsyncs_per_round']:>12}"
            f"  {row['serial_waits_per_round']:>16}  {row['sync_wait_p50_ms']:>15}"
        )


def _print(r: dict[str, Any]) -> None:
    if "add_chain" not in r:
        print(f"CT store rounds ({r['machine']['cpus']} CPUs)")
        _print_rounds(r["store_rounds"])
        return
    print(
        f"CT log benchmark (pool interval {r['pool_interval_ms']} ms, {r['machine']['cpus']} CPUs)"
    )
    print("add-chain (log in its own process, HTTPS/1.1 keep-alive, TLS 1.3):")
    print("  clients  entries/s   p50 ms   p99 ms  entries/round  log CPU us/entry  503s")
    for p in r["add_chain"]:
        print(
            f"  {p['clients']:>7}  {p['entries_per_second']:>9}  {p['p50_ms']:>7}"
            f"  {p['p99_ms']:>7}  {p['entries_per_round']:>13}"
            f"  {p['log_cpu_us_per_entry']:>16}  {p['rejected_503']:>4}"
        )
    d = r["disk"]
    print(
        f"disk: {d['bytes_per_entry_allocated']} bytes/entry allocated "
        f"({d['bytes_per_entry_apparent']} apparent) over {d['entries']} entries "
        f"of {d['leaf_certificate_bytes']}-byte leaf certificates (chains of 2 issuers)"
    )
    p = r["proofs"]
    print(
        f"get-proof-by-hash at {p['tree_size']} entries ({p['import']}, "
        f"{p['import_seconds']} s; log start with tile verification "
        f"{p['start_and_verify_seconds']} s):"
    )
    print(
        f"  {p['proofs_per_second']} proofs/s with {p['clients']} clients, p50 {p['p50_ms']} ms, "
        f"p99 {p['p99_ms']} ms, log CPU {p['log_cpu_us_per_proof']} us/proof, "
        f"{p['bytes_per_entry_allocated']} bytes/entry on disk"
    )
    _print_rounds(r["store_rounds"])
