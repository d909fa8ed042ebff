"""DNS over QUIC on trio: the server and a client, around the sans-IO core.

    authority = Authority([default_zone()])
    server = DoqServer(authority, server_configuration(cert, key))
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, parse_address("[::1]:8853"))

    async with trio.open_nursery() as nursery:
        configuration = client_configuration(cafile=cert, server_name="::1")
        client = await DoqClient.connect(parse_address("[::1]:8853"), nursery, configuration)
        response = await client.query(dns.message.make_query("trust.hypermesh.online.", "AAAA"))
        client.close()

Both sides run on node/quic.py's driver: a `LinkHandler` per connection feeds
QUIC events to the DoQ core (trustchain.dns.doq) and carries out its output,
actions before events, on the link's own task.  The few things that happen
outside a link's events (the core's stream timers, queries submitted by the
application, closing) call `QuicLink.wake()` so the link transmits.

Connection limits (RFC 9250 section 5.5.2 points at RFC 7766 section 6.2.2):
a client address may hold `DoqSettings.max_connections_per_address`
established connections (one that is closing no longer counts); the next one
completes its handshake and is closed with DOQ_EXCESSIVE_LOAD, so the client
learns why.  Past that, and past `max_connections` in total, new connections
are not even answered (node/quic.py drops their Initial packets), which costs
us nothing.
"""

from __future__ import annotations

import math
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import trio
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket
from cryptography import x509

from trustchain.ct.signer import spki_der
from trustchain.dns.authority import AnswerError, Authority, formerr
from trustchain.dns.doq import (
    ALPN,
    Action,
    CloseConnection,
    DoqClientProtocol,
    DoqError,
    DoqLimits,
    DoqServerProtocol,
    MessageParser,
    Output,
    QueryFailed,
    QueryReceived,
    ResetStream,
    ResponseReceived,
    SendData,
    StopSending,
    describe_termination,
    error_name,
)
from trustchain.dns.zones import DefaultZoneSettings, NameServer
from trustchain.node import quic
from trustchain.node.config import Address, ConfigError, Key, check_table, parse_address
from trustchain.node.errors import UserError
from trustchain.node.log import EventLogger, get_logger

SWEEP_INTERVAL = 0.1
"""How often stream timers are checked; they are seconds long, so this is plenty."""


@dataclass(frozen=True)
class DoqSettings:
    """Server-wide settings of the DoQ endpoint."""

    limits: DoqLimits = field(default_factory=DoqLimits)
    """Per-connection stream limits (see trustchain.dns.doq)."""
    idle_timeout: float = 30.0
    """Seconds of silence before QUIC drops a connection (RFC 9000 section 10.1;
    RFC 9250 section 4.4 wants it negotiated, and picks no value)."""
    max_connections: int = 4096
    """Connections at once; further clients get no answer at all."""
    max_connections_per_address: int = 64
    """Established connections per client address; the next is closed with
    DOQ_EXCESSIVE_LOAD."""
    session_tickets: int = 10000
    """Session tickets remembered for resumption and 0-RTT (0 turns both off).
    Each ticket is used once (RFC 8446 section 8.1, RFC 9250 section 5.5.3)."""
    max_data: int = 1024 * 1024
    """QUIC connection flow-control window in octets."""
    max_streams: int = 1024
    """QUIC bidirectional stream credit per connection (initial_max_streams_bidi):
    queries a client may have started and not yet seen fully closed."""

    def __post_init__(self) -> None:
        if not 0 < self.idle_timeout <= 3600:
            raise ValueError(f"idle_timeout {self.idle_timeout} is out of (0, 3600] seconds")
        if not 1 <= self.max_connections_per_address <= self.max_connections:
            raise ValueError(
                "max_connections_per_address must be 1..max_connections, "
                f"got {self.max_connections_per_address}"
            )
        if not 1 <= self.max_streams <= 2**16:
            raise ValueError(f"max_streams {self.max_streams} is out of 1..65536")
        if self.session_tickets < 0:
            raise ValueError("session_tickets must be 0 or more")


def server_configuration(
    certificate: Path, private_key: Path, settings: DoqSettings | None = None
) -> QuicConfiguration:
    """QUIC/TLS 1.3 settings of a DoQ server; UserError if the PEM files are unusable."""
    s = settings or DoqSettings()
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        idle_timeout=s.idle_timeout,
        max_data=s.max_data,
        # One query, length prefix included, fits a stream's window.
        max_stream_data=s.limits.max_query_bytes + 2,
    )
    for path, what in ((certificate, "--tls-cert"), (private_key, "--tls-key")):
        if not path.is_file():
            raise UserError(f"{what} {path}: no such file; give a PEM file")
    try:
        configuration.load_cert_chain(certificate, private_key)
    except (ValueError, TypeError, OSError) as exc:
        raise UserError(
            f"cannot load the TLS certificate {certificate} with key {private_key}: {exc}; "
            "give a PEM certificate (chain) and its PEM private key"
        ) from None
    assert configuration.certificate is not None and configuration.private_key is not None
    if spki_der(configuration.certificate.public_key()) != spki_der(
        configuration.private_key.public_key()
    ):
        # aioquic does not check; every handshake would fail (TLS decrypt_error).
        raise UserError(
            f"--tls-key {private_key} is not the key of --tls-cert {certificate}; "
            "give the private key the certificate was issued for"
        )
    return configuration


class SessionTicketStore:
    """Tickets this server issued, by label; each is handed out once.

    Single use is the anti-replay measure of RFC 8446 section 8.1 for one
    server process; the oldest tickets go first when the store is full.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)


@dataclass
class DoqServerStats:
    connections: int = 0
    """Connections whose handshake completed."""
    refused: int = 0
    """Connections closed with DOQ_EXCESSIVE_LOAD."""
    queries: int = 0
    protocol_errors: int = 0
    """Connections closed with DOQ_PROTOCOL_ERROR."""
    resets: int = 0
    """Streams reset with DOQ_INTERNAL_ERROR (no response could be made)."""
    resumed: int = 0
    """Connections that resumed a session."""
    unsent: int = 0
    """Actions aioquic refused (e.g. an answer for a stream the client had reset)."""


class DoqServer:
    """An authoritative DoQ server for `authority` on one UDP socket."""

    def __init__(
        self,
        authority: Authority,
        configuration: QuicConfiguration,
        settings: DoqSettings | None = None,
        *,
        log: EventLogger | None = None,
    ) -> None:
        self.authority = authority
        self.settings = settings or DoqSettings()
        self.log = log or get_logger("dns")
        self.stats = DoqServerStats()
        self.parser = MessageParser()
        tickets = SessionTicketStore(self.settings.session_tickets)
        resumption = self.settings.session_tickets > 0
        self._quic = quic.QuicServer(
            configuration,
            self._new_link,
            max_connections=self.settings.max_connections,
            # Room above the DoQ limit so that the excess can be told why.
            max_connections_per_host=self.settings.max_connections_per_address + 8,
            session_ticket_fetcher=tickets.pop if resumption else None,
            session_ticket_handler=tickets.add if resumption else None,
        )
        # Owned by this server's tasks (one trio thread).
        self._established: dict[str, set[_ServerLink]] = {}
        self._handlers: set[_ServerLink] = set()
        self._timed: set[_ServerLink] = set()

    @property
    def local(self) -> quic.Addr | None:
        """The bound address, once serving."""
        return self._quic.local

    @property
    def connections(self) -> int:
        return len(self._quic.links)

    def established(self, host: str) -> int:
        """Connections from `host` that count against its per-address limit: admitted
        and not closing.  A connection either side has closed frees its slot at
        once, not after the 3 PTOs of its closing or draining period."""
        links = self._established.get(host)
        if links is None:
            return 0
        for handler in [h for h in links if h.link.closing]:
            links.discard(handler)
        if not links:
            del self._established[host]
        return len(links)

    async def serve(
        self, listen: Address, *, task_status: trio.TaskStatus[quic.Addr] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the bound address through task_status."""
        async with trio.open_nursery() as nursery:
            bound: quic.Addr = await nursery.start(self._quic.serve, listen)
            nursery.start_soon(self._sweep)
            self.log.info("dns.serving", listen=f"[{bound[0]}]:{bound[1]}")
            task_status.started(bound)

    def close_all(self, reason: str = "server shutting down") -> None:
        """Close every connection with DOQ_NO_ERROR (RFC 9250 section 4.4)."""
        for handler in list(self._handlers):
            handler.carry_out(handler.core.close(DoqError.NO_ERROR, reason))
            handler.link.wake()

    def _new_link(self, link: quic.QuicLink) -> _ServerLink:
        # Two aioquic settings without an API; this is the one place that
        # reaches in, before the handshake sends the transport parameters.
        #
        # The stream credit is how a DoQ server bounds concurrent queries per
        # connection (RFC 9250 section 5.8).  aioquic fixes it at 128, too few:
        # credit comes back only once a stream's answer is acknowledged, and a
        # busy connection then stalls waiting for MAX_STREAMS.  `sent` is what
        # the transport parameters announce; it must equal `value`, or aioquic
        # believes it granted 128 and holds MAX_STREAMS back.
        credit = link.quic._local_max_streams_bidi
        credit.value = credit.sent = self.settings.max_streams
        # aioquic delays every ACK by 1 ms, so a query got its answer in one
        # packet and its ACK in another.  Acknowledging at once (always allowed,
        # RFC 9000 section 13.2.1) puts the ACK in the answer's packet: half the
        # packets per query on a quiet connection (docs/dns.md, benchmark).
        link.quic._ack_delay = 0.0
        handler = _ServerLink(self, link)
        self._handlers.add(handler)
        return handler

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            now = trio.current_time()
            for handler in list(self._timed):
                deadline = handler.core.timer()
                if deadline is None:
                    self._timed.discard(handler)
                elif deadline <= now:
                    handler.carry_out(handler.core.handle_timer(now))
                    handler.link.wake()


class _ServerLink:
    """One server connection: QUIC events in, DoQ core, answers out."""

    def __init__(self, server: DoqServer, link: quic.QuicLink) -> None:
        self.server = server
        self.link = link
        self.core = DoqServerProtocol(server.settings.limits, server.parser)
        self.remote = f"[{link.remote[0]}]:{link.remote[1]}"

    def quic_event(self, link: quic.QuicLink, event: quic_events.QuicEvent) -> None:
        if isinstance(event, quic_events.HandshakeCompleted):
            self._admit(event)
        self.carry_out(self.core.receive(event, trio.current_time()))
        if self.core.timer() is not None:
            self.server._timed.add(self)

    def link_closed(self, link: quic.QuicLink) -> None:
        self.server._timed.discard(self)
        self.server._handlers.discard(self)
        links = self.server._established.get(link.remote[0])
        if links is not None:
            links.discard(self)
            if not links:
                del self.server._established[link.remote[0]]
        reason = link.close_reason
        self.server.log.debug(
            "dns.connection_closed",
            remote=self.remote,
            queries=self.core.queries,
            code=None if reason is None else reason.error_code,
            reason=None if reason is None else reason.reason_phrase,
        )

    def _admit(self, event: quic_events.HandshakeCompleted) -> None:
        server = self.server
        host = self.link.remote[0]
        if event.session_resumed:
            server.stats.resumed += 1
        if server.established(host) >= server.settings.max_connections_per_address:
            server.stats.refused += 1
            server.log.info("dns.connection_refused", remote=self.remote, why="per-address limit")
            self.carry_out(
                self.core.close(
                    DoqError.EXCESSIVE_LOAD,
                    f"more than {server.settings.max_connections_per_address} connections "
                    "from your address",
                )
            )
            return
        server._established.setdefault(host, set()).add(self)
        server.stats.connections += 1

    def carry_out(self, output: Output) -> None:
        """Apply the core's actions to the QUIC connection, then answer its queries."""
        for action in output.actions:
            self._act(action)
        for event in output.events:
            if isinstance(event, QueryReceived):
                self._answer(event)

    def _act(self, action: Action) -> None:
        quic_connection = self.link.quic
        try:
            if isinstance(action, SendData):
                quic_connection.send_stream_data(action.stream_id, action.data, action.end_stream)
            elif isinstance(action, ResetStream):
                if action.error_code == DoqError.INTERNAL_ERROR:
                    self.server.stats.resets += 1
                quic_connection.reset_stream(action.stream_id, action.error_code)
            elif isinstance(action, StopSending):
                quic_connection.stop_stream(action.stream_id, action.error_code)
            elif isinstance(action, CloseConnection):
                if action.error_code == DoqError.PROTOCOL_ERROR:
                    self.server.stats.protocol_errors += 1
                self.server.log.info(
                    "dns.connection_closing",
                    remote=self.remote,
                    code=error_name(action.error_code),
                    reason=action.reason,
                )
                self.link.close(action.error_code, action.reason)
        except (RuntimeError, ValueError) as exc:
            # aioquic refuses writes on a stream the peer reset or stopped; the
            # core has normally forgotten such streams, so this is worth a line.
            self.server.stats.unsent += 1
            self.server.log.warning(
                "dns.answer_not_sent", remote=self.remote, action=repr(action), error=str(exc)
            )

    def _answer(self, event: QueryReceived) -> None:
        self.server.stats.queries += 1
        if event.message is None:
            wire = formerr(event.wire)
        else:
            try:
                wire = self.server.authority.respond(event.message, event.wire)
            except AnswerError as exc:
                self.server.log.error("dns.answer_failed", remote=self.remote, error=str(exc))
                self.carry_out(self.core.fail(event.stream_id))
                return
        self.carry_out(self.core.respond(event.stream_id, wire))


# --- client -----------------------------------------------------------------------------------


class DoqClientError(Exception):
    """A query got no response; `code` is the DoQ error the server used, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


Callback = Callable[[int, dns.message.Message | DoqClientError], None]
"""Receives (stream id, response or error) for `DoqClient.submit`."""


def client_configuration(
    *,
    cafile: Path | None = None,
    verify: bool = True,
    server_name: str | None = None,
    idle_timeout: float = 30.0,
    session_ticket: SessionTicket | None = None,
) -> QuicConfiguration:
    """QUIC/TLS settings of a DoQ client.  `cafile` pins the trusted roots
    (certifi's by default); `verify=False` accepts any certificate (tests only)."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        verify_mode=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
        server_name=server_name,
        session_ticket=session_ticket,
    )
    if cafile is not None:
        # aioquic reads the file only at connect: check it now.
        try:
            x509.load_pem_x509_certificates(Path(cafile).read_bytes())
            configuration.load_verify_locations(cafile=str(cafile))
        except OSError as exc:
            raise UserError(f"--ca {cafile}: {exc.strerror}") from None
        except (ssl.SSLError, ValueError) as exc:
            raise UserError(f"--ca {cafile}: not PEM CA certificates ({exc})") from None
    return configuration


class DoqClient:
    """One DoQ connection with any number of queries in flight.

    Queries submitted before the handshake completes are sent with it: in
    0-RTT data when the configuration carries a session ticket the server
    accepts, otherwise as soon as 1-RTT keys exist.
    """

    def __init__(self, link: quic.QuicLink, handler: _ClientLink) -> None:
        self.link = link
        self._handler = handler

    @classmethod
    async def connect(
        cls,
        server: Address,
        nursery: trio.Nursery,
        configuration: QuicConfiguration,
        *,
        fin_timeout: float = 5.0,
    ) -> DoqClient:
        """Start a connection; returns at once (see `handshake` to wait for it)."""
        handler = _ClientLink(fin_timeout)
        handler.started = trio.current_time()
        link = await quic.connect(
            server, configuration, handler, nursery, session_ticket_handler=handler.ticket
        )
        handler.link = link
        nursery.start_soon(handler.timers)
        return cls(link, handler)

    async def handshake(self) -> float:
        """Wait for the handshake; returns its duration in seconds, or raises DoqClientError."""
        await self._handler.handshake_done.wait()
        if self._handler.handshake_seconds is None:
            raise DoqClientError(self._handler.failure or "handshake failed")
        return self._handler.handshake_seconds

    @property
    def session_ticket(self) -> SessionTicket | None:
        """The newest ticket the server issued (pass it to the next connection)."""
        return self._handler.session_ticket

    @property
    def early_data_accepted(self) -> bool:
        return self._handler.early_data_accepted

    @property
    def session_resumed(self) -> bool:
        return self._handler.session_resumed

    @property
    def closed(self) -> trio.Event:
        return self.link.closed

    @property
    def close_reason(self) -> str:
        return self._handler.failure

    def submit(self, query: dns.message.Message | bytes, callback: Callback) -> int:
        """Send a query on a new stream; `callback` gets the outcome.  Returns the stream id.

        A message is sent with ID 0 (RFC 9250 section 4.2.1).
        """
        handler = self._handler
        if self.link.closed.is_set() or handler.core.closed:
            raise DoqClientError(handler.failure or "the connection is closed")
        if isinstance(query, dns.message.Message):
            query.id = 0
            wire = query.to_wire()
        else:
            wire = query
        stream_id = self.link.quic.get_next_available_stream_id()
        output = handler.core.send_query(stream_id, wire, trio.current_time())
        handler.callbacks[stream_id] = callback
        handler.carry_out(output)
        self.link.wake()
        return stream_id

    async def query(
        self, query: dns.message.Message | bytes, timeout: float = 5.0
    ) -> dns.message.Message:
        """Send one query and wait for its response; raises DoqClientError.

        The response may be the same object as for an identical earlier
        response (see MessageParser): read it, do not modify it.
        """
        done = trio.Event()
        result: list[dns.message.Message | DoqClientError] = []

        def finished(stream_id: int, outcome: dns.message.Message | DoqClientError) -> None:
            result.append(outcome)
            done.set()

        stream_id = self.submit(query, finished)
        with trio.move_on_after(timeout):
            await done.wait()
        if not result:
            self._handler.carry_out(self._handler.core.cancel(stream_id))
            self._handler.callbacks.pop(stream_id, None)
            self.link.wake()
            raise DoqClientError(f"no response within {timeout:g} s")
        outcome = result[0]
        if isinstance(outcome, DoqClientError):
            raise outcome
        return outcome

    def close(self, reason: str = "") -> None:
        """Close with DOQ_NO_ERROR (RFC 9250 section 4.4)."""
        self._handler.carry_out(self._handler.core.close(DoqError.NO_ERROR, reason))
        self.link.wake()


class _ClientLink:
    """The client connection's LinkHandler."""

    def __init__(self, fin_timeout: float) -> None:
        self.core = DoqClientProtocol(fin_timeout=fin_timeout)
        self.link: quic.QuicLink | None = None
        self.callbacks: dict[int, Callback] = {}
        self.handshake_done = trio.Event()
        self.handshake_seconds: float | None = None
        self.started = 0.0
        self.failure = ""
        self.session_ticket: SessionTicket | None = None
        self.early_data_accepted = False
        self.session_resumed = False

    def ticket(self, ticket: SessionTicket) -> None:
        self.session_ticket = ticket

    def quic_event(self, link: quic.QuicLink, event: quic_events.QuicEvent) -> None:
        if isinstance(event, quic_events.HandshakeCompleted):
            self.handshake_seconds = trio.current_time() - self.started
            self.early_data_accepted = event.early_data_accepted
            self.session_resumed = event.session_resumed
            self.handshake_done.set()
        elif isinstance(event, quic_events.ConnectionTerminated) and not self.failure:
            self.failure = describe_termination(event)
        self.carry_out(self.core.receive(event, trio.current_time()))

    def link_closed(self, link: quic.QuicLink) -> None:
        if not self.failure:
            reason = link.close_reason
            if link.aborted is not None:  # no close was exchanged: this side gave up
                self.failure = link.aborted
            else:
                self.failure = (
                    "connection closed" if reason is None else describe_termination(reason)
                )
        self.handshake_done.set()
        # Anything still waiting learns that it will get nothing, and why.
        for stream_id in list(self.callbacks):
            self._deliver(stream_id, DoqClientError(self.failure))
        self.carry_out(
            self.core.receive(
                quic_events.ConnectionTerminated(
                    error_code=0, frame_type=None, reason_phrase=self.failure
                ),
                trio.current_time(),
            )
        )

    def carry_out(self, output: Output) -> None:
        link = self.link
        for action in output.actions:
            if link is None:
                break
            try:
                if isinstance(action, SendData):
                    link.quic.send_stream_data(action.stream_id, action.data, action.end_stream)
                elif isinstance(action, ResetStream):
                    link.quic.reset_stream(action.stream_id, action.error_code)
                elif isinstance(action, StopSending):
                    link.quic.stop_stream(action.stream_id, action.error_code)
                elif isinstance(action, CloseConnection):
                    if not self.failure:
                        self.failure = (
                            f"closed by this client with {error_name(action.error_code)}"
                            + (f": {action.reason}" if action.reason else "")
                        )
                    link.close(action.error_code, action.reason)
            except (RuntimeError, ValueError) as exc:
                # aioquic refused: the query cannot go out, so say so to whoever
                # waits for it rather than leave it pending for ever.
                if isinstance(action, SendData):
                    self.carry_out(self.core.cancel(action.stream_id))
                    self._deliver(action.stream_id, DoqClientError(f"cannot send the query: {exc}"))
        for event in output.events:
            if isinstance(event, ResponseReceived):
                self._deliver(event.stream_id, event.message)
            elif isinstance(event, QueryFailed):
                self._deliver(event.stream_id, DoqClientError(event.reason, event.error_code))

    def _deliver(self, stream_id: int, outcome: dns.message.Message | DoqClientError) -> None:
        callback = self.callbacks.pop(stream_id, None)
        if callback is not None:
            callback(stream_id, outcome)

    async def timers(self) -> None:
        """Run the core's FIN timer until the connection ends."""
        assert self.link is not None
        link = self.link
        while not link.closed.is_set():
            deadline = self.core.timer()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await link.closed.wait()
                return
            self.carry_out(self.core.handle_timer(trio.current_time()))
            link.wake()


# --- [dns] section of a node config --------------------------------------------------------------


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {value!r}")
        return value

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _positive_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ValueError(f"expected a number of seconds in (0, 3600], got {value!r}")
    return float(value)


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"expected a list of non-empty strings, got {value!r}")
    return tuple(value)


_DNS_KEYS = {
    "listen": Key(_text, default="[::]:8853"),
    "zone_files": Key(_string_list, default=()),
    "origin": Key(_text, default="trust.hypermesh.online."),
    "apex_addresses": Key(_string_list, default=("2001:db8::10",)),
    "aliases": Key(_string_list, default=("ca", "ct")),
    "nameservers": Key(_string_list, default=("ns1",)),
    "nameserver_addresses": Key(_string_list, default=()),
    "hostmaster": Key(_text, default="hostmaster"),
    "serial": Key(_int_range(0, 2**32 - 1), default=1),
    "ttl": Key(_int_range(0, 2**31 - 1), default=300),
    "idle_timeout": Key(_positive_float, default=30.0),
    "max_connections": Key(_int_range(1, 1_000_000), default=4096),
    "max_connections_per_address": Key(_int_range(1, 1_000_000), default=64),
    "max_open_streams": Key(_int_range(1, 1_000_000), default=64),
    "max_streams": Key(_int_range(1, 65536), default=1024),
    "max_query_bytes": Key(_int_range(12, 65535), default=4096),
    "stream_timeout": Key(_positive_float, default=5.0),
}


@dataclass(frozen=True)
class DnsSection:
    """The ``[dns]`` table of a node config, checked (the node wires it up)."""

    listen: Address
    """UDP address of the DoQ endpoint."""
    zone: DefaultZoneSettings
    """The default zone, from config values."""
    zone_files: tuple[Path, ...]
    """Further zones from RFC 1035 master files."""
    settings: DoqSettings
    """Server limits."""


def parse_dns_section(source: str, table: Mapping[str, Any], base: Path) -> DnsSection:
    """Check a ``[dns]`` table; raises ConfigError naming `source` and the key."""
    values = check_table(source, table, _DNS_KEYS, "dns")
    try:
        listen = parse_address(values["listen"])
    except ValueError as exc:
        raise ConfigError(f"{source}: key 'dns.listen': {exc}") from None
    addresses = values["nameserver_addresses"] or values["apex_addresses"]
    try:
        settings = DoqSettings(
            limits=DoqLimits(
                max_open_streams=values["max_open_streams"],
                max_query_bytes=values["max_query_bytes"],
                stream_timeout=values["stream_timeout"],
            ),
            idle_timeout=values["idle_timeout"],
            max_connections=values["max_connections"],
            max_connections_per_address=values["max_connections_per_address"],
            max_streams=values["max_streams"],
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [dns]: {exc}") from None
    zone = DefaultZoneSettings(
        origin=values["origin"],
        apex_addresses=values["apex_addresses"],
        aliases=values["aliases"],
        nameservers=tuple(NameServer(n, tuple(addresses)) for n in values["nameservers"]),
        hostmaster=values["hostmaster"],
        serial=values["serial"],
        ttl=values["ttl"],
    )
    return DnsSection(
        listen=listen,
        zone=zone,
        zone_files=tuple((base / f).resolve() for f in values["zone_files"]),
        settings=settings,
    )
