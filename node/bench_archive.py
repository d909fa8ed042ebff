"""`trustchain bench archive`: what two-region archiving costs, and how fast a restore is."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import textwrap
import time
from pathlib import Path

from trustchain.node.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "archive",
        help="issuance latency with archive modes both/local/none; restore time per entry",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Starts two local regions (moto S3 servers on ::1) and a 4-validator
            cluster, and measures one-at-a-time issuance latency with the archive
            in mode both, in mode local and without an archive (the cost of
            synchronous two-region archiving). It then fills the log to --entries
            and restores one validator from the us-east-1 bucket, timing each
            phase, and extrapolates the time per million entries.

            example:
              trustchain bench archive --requests 100 --entries 2000
            """
        ),
    )
    bench.add_argument("--dir", type=Path, default=Path(".bench/archive"), help="work directory")
    bench.add_argument("--requests", type=int, default=100, help="latency samples per mode")
    bench.add_argument("--entries", type=int, default=1000, help="log size to restore")
    bench.add_argument("--clients", type=int, default=8, help="clients filling the log")
    bench.set_defaults(func=cmd_bench)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cmd_bench(args: argparse.Namespace) -> int:
    from trustchain.node.cli_cert import cluster_client, epoch_proofs, load_account
    from trustchain.node.drill import (
        PREFIX,
        REGIONS,
        IssuingLoad,
        LocalRegion,
        archive_table,
        wait_ready,
    )
    from trustchain.node.localcluster import create_full_cluster
    from trustchain.node.restore import restore

    if args.requests < 10 or args.entries < 1 or args.clients < 1:
        raise UserError("--requests must be at least 10, --entries and --clients at least 1")
    directory: Path = args.dir
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)

    def say(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    regions: dict[str, LocalRegion] = {}
    cluster = None
    try:
        for name in REGIONS:
            regions[name] = LocalRegion.start(name, directory / "s3" / name)
        with contextlib.redirect_stdout(sys.stderr):
            cluster = create_full_cluster(directory / "cluster", 4, progress=say)
        base = {n.name: n.config.read_text() for n in cluster.nodes}
        ordered = [regions["us-west-2"], regions["us-east-1"]]
        latency: dict[str, tuple[float, float]] = {}
        proofs = None
        for mode in ("none", "local", "both"):
            for n in cluster.nodes:
                extra = "" if mode == "none" else archive_table(ordered, mode)
                n.config.write_text(base[n.name] + extra)
            cluster.start()
            wait_ready(cluster, 60)
            if proofs is None:
                cdir = cluster.directory
                proofs = epoch_proofs(
                    cluster_client(cdir, "v1"),
                    load_account(cdir / "accounts" / "demo.key"),
                    cdir / "accounts" / "demo.plot",
                )
            say(f"mode {mode}: {args.requests} issuances one at a time")
            load = IssuingLoad(cluster.directory, ["v1"], proofs, 1)
            load.start()
            while len(load.latencies) < args.requests:
                time.sleep(0.05)
            load.stop()
            ms = [x * 1000 for x in load.latencies[: args.requests]]
            latency[mode] = (_percentile(ms, 0.5), _percentile(ms, 0.99))
            if mode != "both":
                cluster.stop()
        have = len(load.acknowledged)
        say(f"filling the log to {args.entries} entries with {args.clients} clients (mode both)")
        fill = IssuingLoad(cluster.directory, [n.name for n in cluster.nodes], proofs, args.clients)
        started = time.monotonic()
        fill.start()
        while have + len(fill.acknowledged) < args.entries:
            time.sleep(0.1)
        fill.stop()
        fill_rate = len(fill.acknowledged) / (time.monotonic() - started)
        time.sleep(1.0)  # the last round of every validator's archiving
        cluster.stop()
        say("restoring v1 from us-east-1")
        marks: list[tuple[float, str]] = []
        t0 = time.monotonic()
        report = restore(
            regions["us-east-1"].archive(PREFIX),
            cluster.directory / "genesis.toml",
            directory / "restored",
            progress=lambda text: marks.append((time.monotonic() - t0, text)),
        )
    finally:
        if cluster is not None:
            cluster.stop()
        for region in regions.values():
            region.kill()
    print("issuance latency, one at a time (ms)   p50      p99")
    for mode in ("none", "local", "both"):
        p50, p99 = latency[mode]
        print(f"  archive {mode:<5}                     {p50:7.1f}  {p99:7.1f}")
    print(f"filling at {args.clients} clients in mode both: {fill_rate:.1f} issued/s")
    per_million = report.seconds / report.size * 1_000_000
    print(
        f"restore: {report.size} entries, {report.height} blocks, {report.tiles} tiles in "
        f"{report.seconds:.2f} s = {per_million / 60:.1f} min per million entries"
    )
    last = 0.0
    for at, text in marks:
        print(f"  {at - last:7.2f} s  then: {text}")
        last = at
    print(f"  {report.seconds - last:7.2f} s  writing the store")
    return 0
