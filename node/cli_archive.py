"""`trustchain restore` (rebuild a node from one region's S3 archive) and `trustchain drill`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from trustchain.node.config import http_url
from trustchain.node.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "restore",
        help="rebuild a node's CT log and state from one region's S3 archive",
        description=(
            "Download and verify one region's archive (docs/durability.md): the checkpoint "
            "against the genesis validators' CT log keys and quorum, every tile against its "
            "root, the archived blocks by replaying them; then write DIR/ct and DIR/state.db."
        ),
        epilog=(
            "example:\n  trustchain restore --region us-east-1 "
            "--bucket trustchain-ct-logs-prod-us-east-1 --genesis genesis.toml --dir v1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--region", required=True, help="AWS region of the bucket (us-east-1)")
    p.add_argument("--bucket", required=True, help="the region's CT archive bucket")
    p.add_argument("--endpoint", type=http_url, help="S3 endpoint URL (a moto server locally)")
    p.add_argument("--ca-bundle", help="PEM file the endpoint's TLS certificate chains to")
    p.add_argument("--prefix", default="", help="key prefix of the log in the bucket")
    p.add_argument("--genesis", default="genesis.toml", help="the chain's genesis file")
    p.add_argument("--dir", required=True, help="the node's data directory to write")
    p.add_argument(
        "--new-cluster",
        action="store_true",
        help="this node is one validator of a cluster rebuilt from this archive (a region "
        "failover): drop its consensus history and start a new consensus epoch at the last "
        "restored block; restore every validator of the new cluster this way from the same "
        "archive, after the old cluster is stopped",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_restore)

    drill = sub.add_parser("drill", help="disaster-recovery drills on a local cluster")
    drills = drill.add_subparsers(dest="drill", required=True, metavar="DRILL")
    f = drills.add_parser(
        "failover",
        help="lose us-west-2 under load, restore in us-east-1, measure RPO and RTO",
        description=(
            "Start a 4-validator cluster in a local 'us-west-2' archiving to two local S3 "
            "regions (moto servers on ::1), issue certificates under load, SIGKILL every "
            "us-west-2 node and its S3 server, rebuild the cluster in 'us-east-1' from the "
            "us-east-1 bucket and the HSM token backups, and wait for the first new "
            "certificate. Reports acknowledged certificates, how many are missing (RPO), "
            "seconds from the outage to the first new issuance (RTO), and whether every "
            "checkpoint seen before the outage is a prefix of the restored log. Exits 1 if "
            "an acknowledged certificate was lost, the log forked or nothing was issued."
        ),
        epilog="example:\n  trustchain drill failover --dir .drill --seconds 10 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--dir", required=True, help="working directory (emptied first)")
    f.add_argument("--seconds", type=float, default=10.0, help="issuance load before the outage")
    f.add_argument("--clients", type=int, default=4, help="concurrent issuing clients")
    f.add_argument(
        "--mode",
        choices=("both", "local"),
        default="both",
        help="durability mode of the cluster that fails (default both: RPO must be 0)",
    )
    f.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=cmd_drill_failover)


def cmd_restore(args: argparse.Namespace) -> int:
    from trustchain.infra.s3archive import ArchiveError, S3Archive, s3_client
    from trustchain.node.config import ConfigError
    from trustchain.node.restore import RestoreError, restore

    if args.ca_bundle is not None and not Path(args.ca_bundle).is_file():
        raise UserError(f"--ca-bundle {args.ca_bundle}: no such file")
    client = s3_client(args.region, args.endpoint, ca_bundle=args.ca_bundle)
    archive = S3Archive(client, args.bucket, args.prefix, region=args.region)
    quiet = args.json
    try:
        report = restore(
            archive,
            Path(args.genesis),
            Path(args.dir),
            progress=lambda text: None if quiet else print(f"  {text}", file=sys.stderr),
            new_cluster=args.new_cluster,
        )
    except RestoreError as exc:
        raise UserError(
            f"restore refused: {exc}; nothing was written to {args.dir}. Restore from the "
            "other region's bucket, or bring back the object's previous version (the buckets "
            "are versioned) and run restore again"
        ) from None
    except ArchiveError as exc:
        raise UserError(f"restore failed: {exc}; nothing was written to {args.dir}") from None
    except ConfigError as exc:
        raise UserError(f"restore refused: {exc}; nothing was written to {args.dir}") from None
    doc = {
        "entries": report.size,
        "height": report.height,
        "signers": list(report.signers),
        "tiles": report.tiles,
        "seconds": round(report.seconds, 3),
        "snapshot": report.snapshot,
        "warnings": list(report.warnings),
    }
    if args.json:
        print(json.dumps(doc))
    else:
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"restored {report.size} entries and {report.height} blocks into {args.dir} "
            f"in {report.seconds:.2f} s (checkpoint cosigned by {', '.join(report.signers)}"
            + (f"; state from the snapshot of block {report.snapshot})" if report.snapshot else ")")
        )
    return 0


def cmd_drill_failover(args: argparse.Namespace) -> int:
    from trustchain.node.drill import failover_drill

    if args.seconds <= 0 or args.clients < 1 or args.timeout <= 0:
        raise UserError("--seconds and --timeout must be positive and --clients at least 1")
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    report = failover_drill(
        Path(args.dir), seconds=args.seconds, clients=args.clients, mode=args.mode,
        timeout=args.timeout, progress=progress,
    )  # fmt: skip
    doc = report.as_json()
    if args.json:
        print(json.dumps(doc))
    else:
        rto = "never" if report.rto_seconds is None else f"{report.rto_seconds:.1f} s"
        print(
            f"failover drill (mode {report.mode}): {report.acknowledged} certificates "
            f"acknowledged, {len(report.missing)} missing after failover (RPO); "
            f"first new certificate {rto} after the outage (RTO); restore "
            f"{report.restore_seconds:.1f} s for {report.restored_entries} entries; "
            f"{report.checkpoints} checkpoints checked, {len(report.forks)} forked; "
            f"{report.issued_after} issued after failover: {'PASS' if report.ok else 'FAIL'}"
        )
    return 0 if report.ok else 1
