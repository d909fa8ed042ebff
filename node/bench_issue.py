"""`trustchain bench issue`: certificate issuance through a local cluster's HTTPS API.

The parent process starts a full cluster (`create_full_cluster`, N validator
processes) and runs the load generator as another process
(``python -m trustchain.node.bench_issue --worker ...``), which makes every
request's key, CSR and proof bundle beforehand (the epoch's space and time
proofs once, the work per request), then:

1. fixed offered loads (open loop: latency counts from the scheduled send time),
   each with the validators' CPU time (from /proc) per issued certificate;
2. saturation: closed-loop clients for a while; issued certificates per second
   and the validators' CPU time per issued certificate;
3. status lookups per second (closed loop), on one node and on all nodes at once;
4. mixed saturation: issuance and status lookups at once, every node serving
   both: certificate operations (issue + validate) per second;
5. the cryptography alone, measured in the same process: what one validator
   must compute per certificate at the least (Ed25519 bundle signature, the work
   hash, the precertificate's P-384 signature check, its P-256 SCT) plus its
   share as issuing node (two P-384 signatures, SCT checks).

The load generator is one process: its own CPU time per request is printed too,
since on a small machine it shares the CPUs with the validators.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustchain.node.benchstats import percentile, usable_cpus
from trustchain.node.errors import UserError

SATURATION_CEILING = 200.0
"""Issuances per second that the closed-loop phases get requests made beforehand for
(at least; more if an offered load is higher).  The cluster reaches about 100."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "issue",
        help="issuance through a local cluster: latency at fixed loads, saturation, CPU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Starts N validators on ::1 (key ceremony included), makes the requests'
            proofs beforehand in a load-generator process, and measures issuance at
            fixed offered loads and at saturation, status lookups, the validators'
            CPU microseconds per issued certificate and its ratio to the cost of
            the cryptography alone.

            example:
              trustchain bench issue --nodes 4 --loads 10,50,100 --seconds 5
              trustchain bench issue --consensus 'min_block_interval = 0.25'
            """
        ),
    )
    bench.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    bench.add_argument("--dir", type=Path, default=Path(".bench/issue"), help="work directory")
    bench.add_argument("--loads", default="10,50,100", help="offered loads, issuances/s")
    bench.add_argument("--seconds", type=float, default=5.0, help="per phase (default 5)")
    bench.add_argument("--clients", type=int, default=32, help="saturation clients (default 32)")
    bench.add_argument(
        "--consensus",
        default="",
        metavar="TOML",
        help="body of a [consensus] table for every node (e.g. 'min_block_interval = 0.25')",
    )
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from trustchain.node.localcluster import create_full_cluster

    try:
        loads = [float(x) for x in args.loads.split(",") if x.strip()]
    except ValueError:
        raise UserError("--loads: expected comma-separated numbers, e.g. 10,50,100") from None
    if not loads or min(loads) <= 0 or args.seconds <= 0 or args.clients < 1:
        raise UserError("--loads, --seconds and --clients must be positive")
    print(f"Setting up {args.nodes} validators in {args.dir}/ ...", flush=True)
    cluster = create_full_cluster(
        args.dir.resolve(),
        args.nodes,
        node_extra="api_rate_limit = 10000000\n",
        consensus=args.consensus.replace(";", "\n"),
    )
    cluster.start()
    try:
        if not cluster.wait(
            lambda ev: all(any(e.get("event") == "node.ready" for e in v) for v in ev.values()),
            60,
        ):
            raise UserError(f"the cluster did not start; see {args.dir}/v*/node.log")
        pids = [str(n.process.pid) for n in cluster.nodes if n.process is not None]
        worker = subprocess.run(
            [
                sys.executable, "-m", "trustchain.node.bench_issue", "--worker",
                str(args.dir.resolve()), args.loads, str(args.seconds), str(args.clients),
                ",".join(pids),
            ],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        cluster.stop()
    if worker.returncode != 0:
        print("the load generator failed", file=sys.stderr)
        return 1
    result = json.loads(worker.stdout.strip().splitlines()[-1])
    print(f"\nIssuance, {args.nodes} validators on one machine ({usable_cpus()} CPUs)")
    if args.consensus:
        print(f"[consensus] {args.consensus}")
    print(
        f"{'offered/s':>10} {'issued/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'CPU us/cert/validator':>22}"
    )
    for row in result["loads"]:
        print(
            f"{row['offered']:>10.0f} {row['rate']:>9.1f} {row['p50']:>8.1f} "
            f"{row['p99']:>8.1f} {row['errors']:>7} {row['cpu_us_per_cert_per_validator']:>22.0f}"
        )
    sat = result["saturation"]
    print(
        f"saturation ({args.clients} clients): {sat['rate']:.1f} issued/s, "
        f"p50 {sat['p50']:.1f} ms, p99 {sat['p99']:.1f} ms, {sat['errors']} errors"
    )
    status = result["status"]
    print(
        f"status lookups: {status['one']:.0f}/s on one node; {status['all']:.0f}/s on "
        f"{args.nodes} nodes at once ({status['all'] / args.nodes:.0f}/s per node), "
        f"{status['errors']} errors"
    )
    mixed = result["mixed"]
    print(
        f"certificate operations at saturation (issue and status lookups at once, every "
        f"node): {mixed['issued'] + mixed['validated']:.0f}/s ({mixed['issued']:.1f} issued/s, "
        f"{mixed['validated']:.0f} validated/s), {mixed['errors']:.0f} errors"
    )
    crypto = result["crypto_us"]
    cpu = sat["cpu_us_per_cert_per_validator"]
    print(
        f"CPU per issued certificate per validator: {cpu:.0f} us; cryptography alone "
        f"{crypto:.0f} us; ratio {cpu / crypto:.1f}"
    )
    print(
        f"load generator CPU per issuance request: {result['loadgen_us_per_issue']:.0f} us "
        f"(its own process, on the same CPUs)"
    )
    return 0


# --- the load generator (its own process) -----------------------------------------------


class _Conn:
    """One kept-alive HTTPS connection with the client certificate.

    HTTP/1.1 is written and read here directly: http.client's request building and
    header parsing cost the load generator, which shares the two CPUs with the
    validators, as much as the TLS records themselves.  The API always sends
    Content-Length.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        host, port = client.url.removeprefix("https://[").split("]:")
        self.host, self.port = host, int(port)
        self.authority = f"[{host}]:{port}"
        self.sock: ssl.SSLSocket | None = None
        self.buffer = b""
        self._context: ssl.SSLContext | None = None

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.authority}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = head.encode() + b"\r\n" + (body or b"")
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                assert self.sock is not None
                self.sock.sendall(request)
                return self._response()
            except (OSError, ValueError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def _connect(self) -> None:
        if self._context is None:
            self._context = self.client.context()
        raw = socket.create_connection((self.host, self.port), timeout=60)
        # As trio's streams, curl and Go's HTTP clients do.  Without it about one
        # request in 40 at 10/s reached the server 40 to 60 ms after the client wrote
        # it (one write per request; TCP's delayed-ACK time), which was most of p99.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)

    def _response(self) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buffer[:end].split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length < 0:
            raise ValueError("a response without Content-Length")
        stop = end + 4 + length
        while len(self.buffer) < stop:
            self._fill()
        body, self.buffer = self.buffer[end + 4 : stop], self.buffer[stop:]
        if close:
            self.close()
        return status, body

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the node closed the connection")
        self.buffer += chunk


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _prepare(directory: Path, count: int) -> list[bytes]:
    from trustchain.node.cli_cert import (
        cluster_client,
        epoch_proofs,
        issue_body,
        load_account,
        make_key_and_csr,
    )

    key = load_account(directory / "accounts" / "demo.key")
    proofs = epoch_proofs(
        cluster_client(directory, "v1"), key, directory / "accounts" / "demo.plot"
    )
    bodies = []
    for i in range(count):
        _, csr = make_key_and_csr([f"b{i}.bench.trust.hypermesh.online"])
        bodies.append(json.dumps(issue_body(key, csr, proofs.bundle(csr))).encode())
    return bodies


def _crypto_us(nodes: int) -> float:
    """Microseconds of cryptography one validator needs per certificate, at the least."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def per_op(fn: Any, n: int = 300) -> float:
        started = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - started) / n * 1e6

    msg = b"x" * 200
    ed = Ed25519PrivateKey.generate()
    ed_sig = ed.sign(msg)
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_sig = p384.sign(msg, ec.ECDSA(hashes.SHA384()))
    p256 = ec.generate_private_key(ec.SECP256R1())
    p256_sig = p256.sign(msg, ec.ECDSA(hashes.SHA256()))
    ed_verify = per_op(lambda: ed.public_key().verify(ed_sig, msg))
    work = per_op(lambda: hashlib.sha256(msg).digest(), 3000)
    p384_verify = per_op(lambda: p384.public_key().verify(p384_sig, msg, ec.ECDSA(hashes.SHA384())))
    p384_sign = per_op(lambda: p384.sign(msg, ec.ECDSA(hashes.SHA384())))
    p256_sign = per_op(lambda: p256.sign(msg, ec.ECDSA(hashes.SHA256())))
    p256_verify = per_op(lambda: p256.public_key().verify(p256_sig, msg, ec.ECDSA(hashes.SHA256())))
    issuer_share = (2 * p384_sign + nodes * p256_verify) / nodes
    return ed_verify + work + p384_verify + p256_sign + issuer_share


def _open_loop(
    apis: list[Any],
    load: float,
    seconds: float,
    issue: Callable[[_Conn, bytes], bool],
    next_body: Callable[[], bytes | None],
) -> dict[str, Any]:
    """Send `load` requests per second for `seconds`; latency from the scheduled time."""
    n = int(load * seconds)
    latencies: list[float] = []
    errors = [0]
    start = time.monotonic() + 0.2
    index = [0]
    lock = threading.Lock()

    def run(conn: _Conn) -> None:
        while True:
            with lock:
                i = index[0]
                index[0] += 1
            if i >= n:
                return
            scheduled = start + i / load
            time.sleep(max(0.0, scheduled - time.monotonic()))
            body = next_body()
            if body is None:
                return
            ok = issue(conn, body)
            with lock:
                if ok:
                    latencies.append((time.monotonic() - scheduled) * 1000)
                else:
                    errors[0] += 1

    workers = min(64, max(4, int(load * 0.5)))
    threads = [
        threading.Thread(target=run, args=(_Conn(apis[k % len(apis)]),)) for k in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {
        "offered": load, "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        "errors": errors[0],
    }  # fmt: skip


def _closed_loop(
    conns: list[_Conn],
    seconds: float,
    work: Callable[[_Conn], bool],
    latencies: list[float] | None = None,
) -> tuple[int, int, float]:
    """Each connection does `work` back to back for `seconds`: (done, errors, elapsed)."""
    counts = [0, 0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(conn: _Conn) -> None:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            try:
                ok = work(conn)
            except _Exhausted:
                return
            with lock:
                counts[0 if ok else 1] += 1
                if ok and latencies is not None:
                    latencies.append((time.monotonic() - t0) * 1000)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts[0], counts[1], time.monotonic() - t0


class _Exhausted(Exception):
    """The requests made beforehand are used up."""


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(
    directory: Path, loads: list[float], seconds: float, clients: int, pids: list[int]
) -> None:
    from trustchain.node.cli_cert import cluster_client
    from trustchain.node.localcluster import load_endpoints

    names = list(load_endpoints(directory))
    apis = [cluster_client(directory, n) for n in names]
    # The closed-loop phases issue as fast as the cluster goes, whatever the offered
    # loads were: size them by a rate above what it reached so far (about 100/s).
    ceiling = max(*loads, SATURATION_CEILING)
    saturation_budget = int(ceiling * seconds * 1.5) + 200
    mixed_budget = int(ceiling * seconds) + 100
    total = int(sum(load * seconds for load in loads)) + saturation_budget + mixed_budget
    print(f"making {total} requests' proofs beforehand ...", file=sys.stderr, flush=True)
    bodies = _prepare(directory, total)
    cursor = [0]
    ran_out: list[bool] = []
    lock = threading.Lock()
    serials: list[str] = []
    issued_cpu = [0.0, 0]  # load generator CPU seconds and requests, issuance phases

    def next_body() -> bytes | None:
        with lock:
            if cursor[0] >= len(bodies):
                if not ran_out:
                    ran_out.append(True)
                    print(
                        f"warning: all {len(bodies)} requests made beforehand are used up; "
                        "the issuance figures after this are lower bounds (fewer --seconds, "
                        "or raise SATURATION_CEILING in node/bench_issue.py)",
                        file=sys.stderr, flush=True,
                    )  # fmt: skip
                return None
            cursor[0] += 1
            return bodies[cursor[0] - 1]

    def issue(conn: _Conn, body: bytes) -> bool:
        status, data = conn.call("POST", "/v1/issue", body)
        if status == 200:
            with lock:
                serials.append(json.loads(data)["serial"])
        return status == 200

    def issue_next(conn: _Conn) -> bool:
        body = next_body()
        if body is None:
            raise _Exhausted
        return issue(conn, body)

    results: dict[str, Any] = {"loads": []}
    for load in loads:
        cpu0, own0, done0 = _cpu_seconds(pids), _own_cpu(), cursor[0]
        row = _open_loop(apis, load, seconds, issue, next_body)
        issued = row["rate"] * seconds
        row["cpu_us_per_cert_per_validator"] = (
            (_cpu_seconds(pids) - cpu0) / len(pids) / max(1.0, issued) * 1e6
        )
        issued_cpu[0] += _own_cpu() - own0
        issued_cpu[1] += cursor[0] - done0
        results["loads"].append(row)
        print(f"offered {load}/s done", file=sys.stderr, flush=True)

    sat_latencies: list[float] = []
    cpu0, own0, done0 = _cpu_seconds(pids), _own_cpu(), cursor[0]
    conns = [_Conn(apis[k % len(apis)]) for k in range(clients)]
    issued, errors, elapsed = _closed_loop(conns, seconds, issue_next, sat_latencies)
    cpu = _cpu_seconds(pids) - cpu0
    issued_cpu[0] += _own_cpu() - own0
    issued_cpu[1] += cursor[0] - done0
    results["saturation"] = {
        "rate": issued / elapsed, "p50": percentile(sat_latencies, 0.5),
        "p99": percentile(sat_latencies, 0.99), "errors": errors,
        "cpu_us_per_cert_per_validator": cpu / len(pids) / max(1, issued) * 1e6,
    }  # fmt: skip
    print("saturation done", file=sys.stderr, flush=True)

    # Lookups ask for certificates issued before they start: one issued during the
    # mixed phase through another node may not be committed on the asked node yet.
    known = list(serials)

    def lookup(conn: _Conn) -> bool:
        serial = known[int(time.monotonic() * 1e6) % len(known)]
        status, _ = conn.call("GET", f"/v1/status/{serial}")
        return status == 200

    lookup_seconds = min(seconds, 3.0)
    done, failed, elapsed = _closed_loop([_Conn(apis[0]) for _ in range(8)], lookup_seconds, lookup)
    every = [_Conn(apis[k % len(apis)]) for k in range(8 * len(apis))]
    done_all, failed_all, elapsed_all = _closed_loop(every, lookup_seconds, lookup)
    results["status"] = {
        "one": done / elapsed, "all": done_all / elapsed_all, "errors": failed + failed_all
    }  # fmt: skip
    print("status lookups done", file=sys.stderr, flush=True)

    # Mixed: the issuing clients and lookups spread over every node, at once.
    mixed: dict[str, float] = {"errors": 0}

    def issuing() -> None:
        n, failed, t = _closed_loop(
            [_Conn(apis[k % len(apis)]) for k in range(clients)], seconds, issue_next
        )
        mixed["issued"] = n / t
        mixed["errors"] += failed

    def validating() -> None:
        conns = [_Conn(apis[k % len(apis)]) for k in range(4 * len(apis))]
        n, failed, t = _closed_loop(conns, seconds, lookup)
        mixed["validated"] = n / t
        mixed["errors"] += failed

    both = [threading.Thread(target=issuing), threading.Thread(target=validating)]
    for t in both:
        t.start()
    for t in both:
        t.join()
    results["mixed"] = mixed
    results["loadgen_us_per_issue"] = issued_cpu[0] / max(1, issued_cpu[1]) * 1e6
    results["crypto_us"] = _crypto_us(len(pids))
    print(json.dumps(results))


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--worker":
    _worker(
        Path(sys.argv[2]),
        [float(x) for x in sys.argv[3].split(",")],
        float(sys.argv[4]),
        int(sys.argv[5]),
        [int(p) for p in sys.argv[6].split(",")],
    )
