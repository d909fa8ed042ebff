"""`trustchain node ...`: create a node's identity and run it."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from trustchain.node import identity
from trustchain.node.config import (
    Validator,
    genesis_entry_toml,
    load_node_config,
    parse_address,
)
from trustchain.node.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="create and run a validator node")
    node_sub = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)

    init = node_sub.add_parser(
        "init",
        help="create a node's consensus key, TLS certificate and config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Creates DIR/consensus.key (Ed25519, mode 0600), DIR/tls.pem (a self-signed
            certificate made from that key, pinned by peers) and DIR/node.toml, then
            prints the node's [[validators]] entry for the genesis file.

            example:
              trustchain node init --dir nodes/v1 --name v1 --listen [::1]:7001
            """
        ),
    )
    init.add_argument("--dir", required=True, type=Path, help="the node's data directory")
    init.add_argument("--name", required=True, help="validator name, unique in the cluster")
    init.add_argument("--listen", required=True, help="QUIC peer address, [IPv6]:PORT")
    init.add_argument("--power", type=int, default=1, help="voting power (default 1)")
    init.add_argument(
        "--genesis",
        type=Path,
        default=Path("../genesis.toml"),
        help="genesis file path written into node.toml, relative to DIR (default ../genesis.toml)",
    )
    init.set_defaults(func=cmd_init)

    run = node_sub.add_parser(
        "run",
        help="run a validator until SIGTERM",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Runs one validator: joins the authenticated QUIC mesh of the validators in
            the genesis file and logs one JSON line per event to stderr.  SIGTERM or
            SIGINT stops it cleanly.

            example:
              trustchain node run --config nodes/v1/node.toml
            """
        ),
    )
    run.add_argument("--config", required=True, type=Path, help="the node's node.toml")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from trustchain.node import daemon, log

    config = load_node_config(args.config)
    log.configure(config.log_level)
    return daemon.main(config)


def cmd_init(args: argparse.Namespace) -> int:
    try:
        listen = parse_address(args.listen)
    except ValueError as exc:
        raise UserError(f"--listen: {exc}") from None
    if args.power < 1:
        raise UserError("--power: expected a positive integer")
    ident = identity.generate(args.name)
    identity.save(ident, args.dir)
    (args.dir / "node.toml").write_text(
        f'name = "{args.name}"\nlisten = "{listen}"\ndata_dir = "."\ngenesis = "{args.genesis}"\n'
    )
    entry = Validator(args.name, listen, ident.public_key_raw, args.power)
    print(genesis_entry_toml(entry), end="")
    return 0
