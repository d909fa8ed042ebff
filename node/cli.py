"""The `trustchain` command line.

Each command group lives in its own module with a ``register(subparsers)``
function; this module only assembles them.  A command returns its exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from trustchain.node import (
    cli_archive,
    cli_bench,
    cli_ca,
    cli_cluster,
    cli_ct,
    cli_dns,
    cli_infra,
    cli_mesh,
    cli_node,
    cli_proofs,
    cli_sim,
)
from trustchain.node.errors import UserError

# Command groups in the order `trustchain --help` lists them.
_GROUPS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    cli_node.register,
    cli_mesh.register,
    cli_sim.register,
    cli_proofs.register,
    cli_ct.register,
    cli_ca.register,
    cli_cluster.register,
    cli_dns.register,
    cli_bench.register,
    cli_infra.register,
    cli_archive.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustchain",
        description="TrustChain: a certificate authority run by a BFT cluster of peer daemons.",
        epilog="Run `trustchain COMMAND --help` for a command's options and an example.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _GROUPS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except UserError as exc:
        print(f"trustchain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
