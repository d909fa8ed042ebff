"""`trustchain restore`: rebuild a node's log and state from one region's S3 archive."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    p.add_argument("--endpoint", help="S3 endpoint URL (a moto server locally)")
    p.add_argument("--ca-bundle", help="PEM file the endpoint's TLS certificate chains to")
    p.add_argument("--prefix", default="", help="key prefix of the log in the bucket")
    p.add_argument("--genesis", default="genesis.toml", help="the chain's genesis file")
    p.add_argument("--dir", required=True, help="the node's data directory to write")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    from trustchain.infra.s3archive import ArchiveError, S3Archive, s3_client
    from trustchain.node.config import ConfigError
    from trustchain.node.restore import RestoreError, restore

    client = s3_client(args.region, args.endpoint, ca_bundle=args.ca_bundle)
    archive = S3Archive(client, args.bucket, args.prefix, region=args.region)
    quiet = args.json
    try:
        report = restore(
            archive,
            Path(args.genesis),
            Path(args.dir),
            progress=lambda text: None if quiet else print(f"  {text}", file=sys.stderr),
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
    }
    if args.json:
        print(json.dumps(doc))
    else:
        print(
            f"restored {report.size} entries and {report.height} blocks into {args.dir} "
            f"in {report.seconds:.2f} s (checkpoint cosigned by {', '.join(report.signers)})"
        )
    return 0
