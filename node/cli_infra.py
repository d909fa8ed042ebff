"""`trustchain infra ...`: provision AWS (or moto) for a TrustChain deployment."""

from __future__ import annotations

import argparse
import sys
import textwrap
from importlib import resources
from typing import Any

from trustchain.node.config import http_url
from trustchain.node.errors import UserError

_REGION_HELP = "AWS region, e.g. us-west-2 (primary) or us-east-1 (failover)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    infra = sub.add_parser("infra", help="provision AWS: S3 buckets, CloudFormation templates")
    infra_sub = infra.add_subparsers(dest="infra_command", metavar="COMMAND", required=True)

    buckets = infra_sub.add_parser(
        "buckets",
        help="create or fix the region's S3 buckets (idempotent)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Creates the region's two buckets, PREFIX-ct-logs-ENV-REGION and
            PREFIX-certificates-ENV-REGION, or brings existing ones to TrustChain's
            settings: versioning, SSE-KMS under the key alias/trustchain-storage-ENV
            (created when missing), every public access block, ACLs disabled, TLS-only
            policy, and the lifecycle (CT data: Standard-IA after 30 days, Glacier
            Instant Retrieval after 90, expiry after 7 years).  Running it again
            changes nothing.  Credentials come from the usual AWS sources
            (environment, profile, instance role).

            examples:
              trustchain infra buckets --region us-west-2
              trustchain infra buckets --region us-east-1 --endpoint http://[::1]:5000
              trustchain infra buckets --region us-west-2 --names ct=my-ct,certificates=my-certs
            """
        ),
    )
    buckets.add_argument("--region", required=True, help=_REGION_HELP)
    buckets.add_argument(
        "--endpoint",
        type=http_url,
        help="S3/KMS endpoint URL instead of AWS's (moto: http://[::1]:PORT)",
    )
    buckets.add_argument("--prefix", default="trustchain", help="bucket name prefix")
    buckets.add_argument("--environment", default="prod", help="deployment name (default prod)")
    buckets.add_argument(
        "--names",
        help="explicit names instead of the naming scheme: ct=NAME,certificates=NAME",
    )
    buckets.add_argument(
        "--kms-key", help="KMS key ARN or alias for SSE-KMS (default: alias/trustchain-storage-ENV)"
    )
    buckets.add_argument("--quiet", action="store_true", help="print only changes")
    buckets.set_defaults(func=cmd_buckets)

    templates = infra_sub.add_parser(
        "templates",
        help="list the CloudFormation templates and systemd units shipped with TrustChain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Prints the path of each CloudFormation template, in deployment order,
            then of each systemd unit.  docs/deploy-aws.md walks through deploying
            them.

            example:
              trustchain infra templates
            """
        ),
    )
    templates.set_defaults(func=cmd_templates)


# Deployment order: each stack imports the outputs of those before it.
TEMPLATE_ORDER = (
    "network",
    "storage",
    "iam",
    "hsm",
    "compute",
    "loadbalancer",
    "monitoring",
    "dns",
)


def _parse_names(text: str) -> list[tuple[Any, str]]:
    pairs: list[tuple[Any, str]] = []
    kinds = {"ct": "ct-logs", "ct-logs": "ct-logs", "certificates": "certificates"}
    for item in text.split(","):
        key, sep, name = item.partition("=")
        if not sep or key.strip() not in kinds or not name.strip():
            raise UserError(f"--names: {item!r} is not KIND=NAME; write ct=NAME,certificates=NAME")
        pairs.append((kinds[key.strip()], name.strip()))
    return pairs


def cmd_buckets(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from trustchain.infra import buckets as b

    if args.names:
        pairs = _parse_names(args.names)
    else:
        names = b.bucket_names(args.prefix, args.environment, args.region)
        pairs = [(kind, names[kind]) for kind in b.KINDS]
    names_given = [name for _, name in pairs]
    if len(set(names_given)) != len(names_given):
        # Each kind has its own lifecycle rules: one bucket cannot hold both.
        raise UserError(f"--names: give each kind its own bucket ({args.names})")
    for _, name in pairs:
        if not (3 <= len(name) <= 63) or name != name.lower() or name.startswith("-"):
            raise UserError(
                f"{name!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, "
                "hyphens); choose another --prefix or --names"
            )
    session = boto3.session.Session(region_name=args.region)
    kw: dict[str, Any] = {"endpoint_url": args.endpoint} if args.endpoint else {}
    try:
        s3 = session.client("s3", **kw)
        kms = session.client("kms", **kw)
        if args.kms_key:
            key = str(kms.describe_key(KeyId=args.kms_key)["KeyMetadata"]["Arn"])
        else:
            account = session.client("sts", **kw).get_caller_identity()["Account"]
            key = b.ensure_storage_key(kms, args.environment, account)
        print(f"storage key: {key}", file=sys.stderr)

        def progress(change: b.Change) -> None:
            if args.quiet and change.action == "unchanged":
                return
            print(f"{change.bucket}: {change.setting} {change.action}", file=sys.stderr)

        changes = b.ensure_buckets(s3, pairs, args.region, key, progress)
    except b.ProvisioningError as exc:
        raise UserError(str(exc)) from None
    except NoCredentialsError:
        raise UserError(
            "no AWS credentials found; set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (any values for moto)"
        ) from None
    except (ClientError, BotoCoreError) as exc:
        raise UserError(f"AWS refused the request: {exc}; check --region and --endpoint") from None
    done = sum(1 for c in changes if c.action != "unchanged")
    for _, name in pairs:
        print(name)
    print(f"{len(pairs)} buckets ready in {args.region}; {done} settings changed", file=sys.stderr)
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    root = resources.files("trustchain.infra")
    for name in TEMPLATE_ORDER:
        path = root / "cloudformation" / f"{name}.yaml"
        print(f"{path}")
    for unit in ("trustchain.service", "trustchain@.service"):
        print(f"{root / 'systemd' / unit}")
    return 0
