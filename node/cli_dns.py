"""`trustchain dns ...`: serve zones over DNS over QUIC, and query a DoQ server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import trio

from trustchain.dns.authority import Authority
from trustchain.dns.doq import DEFAULT_PORT, DoqLimits
from trustchain.dns.zones import DefaultZoneSettings, ZoneError, ZoneIndex, default_zone
from trustchain.dns.zones import load_zone_file as _load_zone_file
from trustchain.node.config import Address, parse_address
from trustchain.node.errors import ListenError, UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("dns", help="serve zones over DNS over QUIC (RFC 9250), query them")
    dns_sub = group.add_subparsers(dest="dns_command", metavar="COMMAND", required=True)

    serve = dns_sub.add_parser(
        "serve",
        help="run a standalone authoritative DoQ server",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            f"""\
            Serves the given zones as an authoritative server over DNS over QUIC
            (RFC 9250: ALPN "doq", TLS 1.3, UDP, IPv6 only) until SIGINT or SIGTERM,
            logging one JSON line per event to stderr.  Zones are RFC 1035 master
            files (each needs an $ORIGIN line or ORIGIN given as FILE=ORIGIN);
            --default-zone adds the generated trust.hypermesh.online zone.
            Prints "serving ... on [ADDR]:PORT" once it listens (port 0 picks one).

            example:
              trustchain dns serve --zone trust.zone --listen [::]:{DEFAULT_PORT} \\
                  --tls-cert dns.pem --tls-key dns.key
            """
        ),
    )
    serve.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="FILE[=ORIGIN]",
        help="a zone master file (repeatable)",
    )
    serve.add_argument(
        "--default-zone",
        action="store_true",
        help="also serve the generated default zone (trust.hypermesh.online)",
    )
    serve.add_argument(
        "--apex-address",
        action="append",
        default=[],
        metavar="IPV6",
        help="AAAA of the default zone's apex (repeatable; default 2001:db8::10)",
    )
    serve.add_argument(
        "--listen",
        default=f"[::1]:{DEFAULT_PORT}",
        help=f"UDP address [IPv6]:PORT (default [::1]:{DEFAULT_PORT})",
    )
    serve.add_argument("--tls-cert", required=True, type=Path, help="PEM certificate (chain)")
    serve.add_argument("--tls-key", required=True, type=Path, help="PEM private key")
    serve.add_argument(
        "--idle-timeout", type=float, default=30.0, help="seconds before idle connections go"
    )
    serve.add_argument(
        "--max-connections-per-address",
        type=int,
        default=64,
        help="connections per client address (default 64)",
    )
    serve.add_argument(
        "--max-open-queries",
        type=int,
        default=64,
        help="queries started and unfinished per connection before DOQ_EXCESSIVE_LOAD (64)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=cmd_serve)

    query = dns_sub.add_parser(
        "query",
        help="ask a DoQ server one question",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            f"""\
            Sends one query over DNS over QUIC and prints the response like dig does.
            The server certificate is checked against --ca (or the system's roots)
            and against --server-name (default: the server address).  Exit status: 0
            for a response (whatever its RCODE), 1 if none came.

            example:
              trustchain dns query ca.trust.hypermesh.online AAAA \\
                  --server [::1]:{DEFAULT_PORT} --ca dns.pem
            """
        ),
    )
    query.add_argument("name", help="the domain name to ask about")
    query.add_argument("type", nargs="?", default="AAAA", help="record type (default AAAA)")
    query.add_argument("--server", required=True, help="the DoQ server, [IPv6]:PORT")
    query.add_argument("--ca", type=Path, help="PEM file of the CA (or self-signed cert) to trust")
    query.add_argument("--server-name", help="name to verify in the server certificate")
    query.add_argument(
        "--insecure", action="store_true", help="do not verify the certificate (testing only)"
    )
    query.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    query.add_argument("--no-edns", action="store_true", help="send the query without EDNS(0)")
    query.add_argument("--dnssec", action="store_true", help="set the DO bit")
    query.set_defaults(func=cmd_query)


def _address(flag: str, text: str, *, any_port: bool = False) -> Address:
    try:
        return parse_address(text, allow_port_zero=any_port)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None


_FLAGS = {
    "apex_addresses": "--apex-address",
    "idle_timeout": "--idle-timeout",
    "max_open_streams": "--max-open-queries",
    "max_connections_per_address": "--max-connections-per-address",
}
"""The settings' names (as in node.toml's [dns] table) -> this command's flags."""


def _flags(message: str) -> str:
    for name, flag in _FLAGS.items():
        message = message.replace(name, flag)
    return message


def load_zones(specs: list[str], *, with_default: bool, apex: list[str]) -> list[ZoneIndex]:
    zones: list[ZoneIndex] = []
    try:
        for spec in specs:
            path, _, origin = spec.partition("=")
            zones.append(_load_zone_file(Path(path), origin or None))
    except ZoneError as exc:
        raise UserError(f"{exc}; fix the zone and start again") from None
    if with_default:
        settings = DefaultZoneSettings()
        if apex:
            settings = DefaultZoneSettings(apex_addresses=tuple(apex))
        try:
            zones.append(default_zone(settings))
        except ZoneError as exc:
            raise UserError(_flags(str(exc).removeprefix("config: "))) from None
    if not zones:
        raise UserError("no zone to serve: give --zone FILE (repeatable) or --default-zone")
    return zones


def cmd_serve(args: argparse.Namespace) -> int:
    from trustchain.node import log
    from trustchain.node.doq import DoqServer, DoqSettings, server_configuration

    listen = _address("--listen", args.listen, any_port=True)
    zones = load_zones(args.zone, with_default=args.default_zone, apex=args.apex_address)
    try:
        authority = Authority(zones)
        settings = DoqSettings(
            limits=DoqLimits(max_open_streams=args.max_open_queries),
            idle_timeout=args.idle_timeout,
            max_connections_per_address=args.max_connections_per_address,
        )
    except (ZoneError, ValueError) as exc:
        raise UserError(_flags(str(exc))) from None
    configuration = server_configuration(args.tls_cert, args.tls_key, settings)
    log.configure(args.log_level)
    server = DoqServer(authority, configuration, settings, log=log.get_logger("dns"))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve, listen)
            origins = ", ".join(str(z.origin) for z in zones)
            print(f"serving {origins} over DoQ on [{bound[0]}]:{bound[1]}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            # Tell clients we are going (DOQ_NO_ERROR) and give it a moment to leave.
            server.close_all()
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()

    try:
        run_trio(run)
    except ListenError as exc:
        raise UserError(f"--listen: {exc}") from None
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from trustchain.node.doq import DoqClient, DoqClientError, client_configuration

    server = _address("--server", args.server)
    # aioquic logs handshake failures itself; our message below says it better.
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    try:
        qname = dns.name.from_text(args.name)
        rdtype = dns.rdatatype.from_text(args.type)
    except (dns.exception.DNSException, ValueError) as exc:
        raise UserError(f"{args.name} {args.type}: {exc}") from None
    if args.ca is not None and not args.ca.is_file():
        raise UserError(f"--ca {args.ca}: no such file; give the PEM the server's cert chains to")
    if not 0 < args.timeout <= 600:
        raise UserError("--timeout: expected seconds in (0, 600]")
    query = dns.message.make_query(
        qname,
        rdtype,
        dns.rdataclass.IN,
        use_edns=False if args.no_edns else 0,
        want_dnssec=args.dnssec,
        pad=0 if args.no_edns else 128,  # RFC 8467 section 4.1: queries to 128-octet blocks
    )
    query.flags &= ~dns.flags.RD  # an authoritative server does not recurse
    configuration = client_configuration(
        cafile=args.ca,
        verify=not args.insecure,
        server_name=args.server_name or server.host,
    )

    elapsed: list[float] = []

    async def run() -> dns.message.Message:
        async with trio.open_nursery() as nursery:
            try:
                client = await DoqClient.connect(server, nursery, configuration)
            except OSError as exc:
                raise UserError(f"--server {server}: {exc.strerror or exc}") from None
            started = trio.current_time()
            try:
                response = await client.query(query, timeout=args.timeout)
                elapsed.append(trio.current_time() - started)
            finally:
                client.close()
                # Let the link send CONNECTION_CLOSE, then stop without waiting
                # out the closing period (RFC 9000 section 10.2).
                with trio.move_on_after(0.05):
                    await client.closed.wait()
                nursery.cancel_scope.cancel()
            return response

    try:
        response = run_trio(run)
    except DoqClientError as exc:
        print(
            f"trustchain: no response from {server}: {exc}; check the address, that the "
            "server runs, and --ca/--server-name",
            file=sys.stderr,
        )
        return 1
    print(response.to_text())
    print(f";; SERVER: {server} (DNS over QUIC)")
    print(f";; Query time (handshake included): {elapsed[0] * 1000:.1f} ms")
    return 0


T = TypeVar("T")


def run_trio(main: Callable[[], Awaitable[T]]) -> T:
    """trio.run, with a lone exception taken out of trio's exception groups so
    that UserError and friends reach the CLI's handler as themselves."""
    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
