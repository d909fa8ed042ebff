"""`trustchain cluster up|status|down|demo`: a whole TrustChain cluster on this machine.

``up`` runs the key ceremony on SoftHSM2, writes a genesis file with a demo
account and a laptop-sized proof policy, starts N `trustchain node run`
processes on ::1 (each in its own session, so they outlive the command), waits
until they commit blocks, and prints the endpoints.  ``down`` stops them
(SIGTERM, then SIGKILL after a timeout).  ``demo`` is `make demo`: up, request a
certificate, verify it online, resolve its TLSA record over DoQ, report, down.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustchain.node.errors import UserError
from trustchain.node.localcluster import (
    DEMO_ZONE,
    LocalCluster,
    NodeProcess,
    create_full_cluster,
    load_endpoints,
)

if TYPE_CHECKING:
    _Sub = argparse._SubParsersAction[argparse.ArgumentParser]

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def _parser(sub: _Sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(description),
    )


def register(sub: _Sub) -> None:
    group = sub.add_parser("cluster", help="run a whole cluster on this machine (::1)")
    csub = group.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    p = _parser(
        csub,
        "up",
        "key ceremony, genesis, N validator processes; waits until they commit",
        """\
        Creates DIR (replacing an earlier cluster that is not running): a SoftHSM2
        key ceremony (root, per-validator intermediates and CT log keys), a genesis
        with a demo account (DIR/accounts/demo.key, a k=18 plot beside it) and a
        policy sized for a laptop, TLS certificates for the servers and a client
        certificate from the TrustChain CA for the API.  Then it starts the nodes
        and waits until they commit blocks.  Logs: DIR/vK/node.log.

        example:
          trustchain cluster up --nodes 4 --dir .demo
        """,
    )
    p.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    p.add_argument("--dir", type=Path, default=Path(".demo"), help="cluster directory")
    p.set_defaults(func=cmd_up)

    p = _parser(
        csub,
        "status",
        "show the nodes of a running cluster (process, height, log size)",
        """\
        example:
          trustchain cluster status --dir .demo
        """,
    )
    p.add_argument("--dir", type=Path, default=Path(".demo"), help="cluster directory")
    p.set_defaults(func=cmd_status)

    p = _parser(
        csub,
        "down",
        "stop the cluster's nodes (SIGTERM, then SIGKILL after a timeout)",
        """\
        example:
          trustchain cluster down --dir .demo
        """,
    )
    p.add_argument("--dir", type=Path, default=Path(".demo"), help="cluster directory")
    p.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="seconds before SIGKILL")
    p.set_defaults(func=cmd_down)

    p = _parser(
        csub,
        "demo",
        "up, issue a certificate, verify it online, resolve its TLSA over DoQ, down",
        """\
        What `make demo` runs.  Prints a short report: issuance latency, SCT
        signers, the cosigned checkpoint, the DNS answer and where the logs are.

        example:
          trustchain cluster demo --nodes 4 --dir .demo
        """,
    )
    p.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    p.add_argument("--dir", type=Path, default=Path(".demo"), help="cluster directory")
    p.set_defaults(func=cmd_demo)


# --- processes ---------------------------------------------------------------------------


def _pids_path(directory: Path) -> Path:
    return directory / "pids.json"


def _is_node(pid: int, directory: Path) -> bool:
    """Is `pid` alive and one of this cluster's node processes (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = [c.decode(errors="replace") for c in cmdline]
    return "node" in text and any(str(directory.resolve()) in c for c in text)


def _running(directory: Path) -> dict[str, int]:
    try:
        pids = json.loads(_pids_path(directory).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {name: pid for name, pid in pids.items() if _is_node(int(pid), directory)}


def _wait_ready(cluster: LocalCluster, timeout: float) -> bool:
    def ready(events: dict[str, list[dict[str, Any]]]) -> bool:
        return all(any(e.get("event") == "node.ready" for e in evs) for evs in events.values())

    def progress(node: str, event: dict[str, Any]) -> None:
        if event.get("event") == "node.ready":
            print(f"  {node}: ready (following the chain at height {event.get('height')})")
        elif event.get("level") == "error":
            print(f"  {node}: {event.get('event')} {event.get('error', '')}")

    return cluster.wait(ready, timeout, on_event=progress)


def up(directory: Path, nodes: int) -> LocalCluster:
    if nodes < 1:
        raise UserError("--nodes: need at least one validator")
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise UserError(f"--dir {directory}: is a file; give a folder for the cluster")
    if _running(directory):
        raise UserError(f"a cluster is running in {directory}; `trustchain cluster down` first")
    print(f"Setting up {nodes} validators in {directory}/")
    cluster = create_full_cluster(directory, nodes, progress=lambda t: print(f"  {t}"))
    print(f"Starting {nodes} `trustchain node run` processes on ::1")
    for node in cluster.nodes:
        node.start()
    _pids_path(directory).write_text(
        json.dumps({n.name: n.process.pid for n in cluster.nodes if n.process}) + "\n"
    )
    try:
        ready = _wait_ready(cluster, READY_TIMEOUT)
    except BaseException:  # a node exited (UserError), or ^C: stop the others too
        down(directory, STOP_TIMEOUT)
        raise
    if not ready:
        down(directory, STOP_TIMEOUT)
        raise UserError(
            f"the nodes did not commit within {READY_TIMEOUT:g} s; see {directory}/v*/node.log"
        )
    return cluster


def down(directory: Path, timeout: float) -> dict[str, str]:
    directory = directory.resolve()
    pids = _running(directory)
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    outcome = {}
    for name, pid in pids.items():
        while _is_node(pid, directory) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _is_node(pid, directory):
            os.kill(pid, signal.SIGKILL)
            _reap(pid, block=True)
            outcome[name] = "killed (SIGKILL after the timeout)"
        else:
            outcome[name] = "stopped"
    _pids_path(directory).unlink(missing_ok=True)
    return outcome


def _reap(pid: int, *, block: bool = False) -> None:
    """Collect the exit status if `pid` is our child (a zombie still has /proc entries)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0 if block else os.WNOHANG)


def _print_endpoints(directory: Path) -> None:
    endpoints = load_endpoints(directory)
    print(f"{'node':<5} {'CT + status (HTTPS)':<26} {'API (HTTPS, mTLS)':<26} DoQ")
    for ep in endpoints.values():
        print(f"{ep.name:<5} {ep.ct_url:<26} {ep.api_url:<26} {ep.dns}")


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    up(args.dir, args.nodes)
    d = args.dir
    print(f"\nCluster of {args.nodes} up in {time.monotonic() - started:.1f} s.")
    _print_endpoints(d)
    print(
        textwrap.dedent(
            f"""
            Try:
              trustchain cert request --cluster {d} --account {d}/accounts/demo.key \\
                  --plot {d}/accounts/demo.plot --name demo.{DEMO_ZONE} --out demo.pem
              trustchain cert verify demo.pem --genesis {d}/genesis.toml --root {d}/ca/root.pem \\
                  --online <a CT URL above> --online-cafile {d}/tls/ca.pem
              trustchain cluster status --dir {d}
              trustchain cluster down --dir {d}
            Logs: {d}/v*/node.log (JSON lines)"""
        )
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from trustchain.node.cli_cert import ApiError, cluster_client

    directory = args.dir.resolve()
    endpoints = load_endpoints(directory)
    running = _running(directory)
    print(f"{'node':<5} {'pid':>7}  {'state':<8} {'height':>7} {'log size':>8}")
    for name in endpoints:
        pid = running.get(name)
        height = size = "-"
        state = "down" if pid is None else "running"
        if pid is not None:
            try:
                health = cluster_client(directory, name).call("GET", "/health")
                height, size = str(health["height"]), str(health["log_size"])
            except ApiError as exc:
                state = "no api" if exc.status == 0 else f"api {exc.status}"
        print(f"{name:<5} {pid or '-':>7}  {state:<8} {height:>7} {size:>8}")
    return 0 if running else 1


def cmd_down(args: argparse.Namespace) -> int:
    outcome = down(args.dir, args.timeout)
    if not outcome:
        print(f"no node of {args.dir} is running")
    for name, what in outcome.items():
        print(f"{name}: {what}")
    return 0


# --- the demo ------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from trustchain.ct.checkpoint import parse_checkpoint
    from trustchain.ct.note import parse_note
    from trustchain.node.cli import main as cli_main
    from trustchain.node.cli_cert import (
        ApiError,
        cluster_client,
        load_account,
        make_key_and_csr,
        request_certificate,
    )

    d: Path = args.dir.resolve()
    started = time.monotonic()
    up(d, args.nodes)
    print(f"Cluster up in {time.monotonic() - started:.1f} s\n")
    name = f"demo.{DEMO_ZONE}"
    ok = True
    try:
        print(f"Requesting a certificate for {name} from v1 (proofs made on this machine):")
        key_pem, csr = make_key_and_csr([name])
        client = cluster_client(d, "v1")
        t0 = time.monotonic()
        try:
            doc = request_certificate(
                client, load_account(d / "accounts" / "demo.key"), d / "accounts" / "demo.plot",
                csr, lambda t: print(f"  {t}"),
            )  # fmt: skip
        except ApiError as exc:
            raise UserError(f"the node refused the request: {exc}") from None
        total = time.monotonic() - t0
        cert = d / "demo.pem"
        cert.write_text(doc["certificate"])
        (d / "demo.key").write_bytes(key_pem)
        (d / "demo.key").chmod(0o600)
        endpoints = load_endpoints(d)
        print("\nVerifying it online against v2 (trustchain cert verify --online):")
        verify_out = io.StringIO()
        with contextlib.redirect_stdout(verify_out):
            status = cli_main(
                [
                    "cert", "verify", str(cert), "--genesis", str(d / "genesis.toml"),
                    "--root", str(d / "ca" / "root.pem"), "--online", endpoints["v2"].ct_url,
                    "--online-cafile", str(d / "tls" / "ca.pem"),
                ]
            )  # fmt: skip
        print(textwrap.indent(verify_out.getvalue().rstrip(), "  "))
        ok = ok and status == 0
        print(f"\nResolving _443._tcp.{name} TLSA over DNS-over-QUIC at v3:")
        dns = subprocess.run(
            [
                sys.executable, "-m", "trustchain.node.cli", "dns", "query",
                f"_443._tcp.{name}", "TLSA", "--server", str(endpoints["v3"].dns),
                "--ca", str(d / "tls" / "ca.pem"),
            ],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        tlsa = [line for line in dns.stdout.splitlines() if "TLSA" in line and "IN" in line]
        print(textwrap.indent(dns.stdout.rstrip() or dns.stderr.rstrip(), "  "))
        ok = ok and dns.returncode == 0 and any(" 3 1 1 " in line for line in tlsa)
        cp = parse_checkpoint(parse_note(doc["checkpoint"]).text)
        signatures = len(parse_note(doc["checkpoint"]).signatures)
        print("\nReport")
        print(f"  certificate   {cert} (serial {doc['serial']}), key {d / 'demo.key'}")
        print(f"  issuance      {total * 1000:.0f} ms including the client's proofs")
        print(f"  SCTs          from {', '.join(doc['signers'])} ({len(doc['scts'])} embedded)")
        print(f"  log           leaf {doc['leaf_index']} in block {doc['height']}")
        print(f"  checkpoint    size {cp.size}, cosigned by {signatures} validators")
        print(f"  verify        {'passed' if status == 0 else 'FAILED'} (offline and online)")
        print(f"  DoQ TLSA      {'answered' if tlsa else 'MISSING'}")
        print(f"  logs          {d}/v*/node.log")
    finally:
        print("\nStopping the cluster:")
        for node, what in down(d, STOP_TIMEOUT).items():
            print(f"  {node}: {what}")
    if not ok:
        print("DEMO FAILED (see above)")
        return 1
    print("Demo passed.")
    return 0


# LocalCluster and NodeProcess are part of this module's public story (docs/node.md).
__all__ = ["LocalCluster", "NodeProcess", "down", "register", "up"]
