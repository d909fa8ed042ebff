"""Drive aioquic's sans-IO QuicConnection from trio over IPv6 UDP sockets.

aioquic's QuicConnection takes input from three places only (the API user,
``receive_datagram`` and ``handle_timer``) and answers through
``datagrams_to_send``, ``get_timer`` and ``next_event``.  This module owns the
sockets and clocks around it; everything protocol-specific lives in a
`LinkHandler` that receives the connection's events.

Loop shape (as in dnspython's dns/quic/_trio.py): each connection has one task
that waits for the next datagram inside a cancel scope whose deadline is the
connection's timer.  Other tasks that call the QuicConnection API (to send
stream data, to close) must call `QuicLink.wake` afterwards so the loop
transmits.  Handlers run inside the loop task and must not block.

Addresses are IPv6 4-tuples ``(host, port, flowinfo, scope_id)`` throughout:
that is what ``recvfrom`` returns on an AF_INET6 socket, and aioquic compares
the address of every datagram with the path it knows, so a 2-tuple given to
``connect`` would make it ignore the server's replies.

Costs (a loopback UDP send or receive is a system call of tens of
microseconds, and every trio wake-up a few more): sockets are read in
batches (everything queued, then one wait for readability), datagrams are
sent without a trio checkpoint each, and a link may delay pure ACKs
(`AckPolicy`) so that they ride on its next data (RFC 9000 section 13.2.1).
"""

from __future__ import annotations

import copy
import ipaddress
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from aioquic import tls
from aioquic._buffer import Buffer  # re-exported by aioquic.buffer without __all__
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.tls import SessionTicketFetcher, SessionTicketHandler

from trustchain.node.config import Address
from trustchain.node.errors import ListenError

Addr = tuple[str, int, int, int]
"""An IPv6 socket address as recvfrom returns it."""

MAX_DATAGRAM = 65536
RECEIVE_BUFFER = 4 * 1024 * 1024
"""Requested SO_RCVBUF of every socket (see udp_socket)."""
INBOX_SIZE = 1024
"""Datagrams queued for one connection; past this they are dropped like on a full NIC
queue, and QUIC's loss recovery resends them."""
MAX_ACK_DELAY = 0.025
"""The max_ack_delay transport parameter aioquic advertises (RFC 9000 section 18.2)."""
READ_BATCH = 64
LOOPBACK_MTU = 65536
"""Linux's loopback interface MTU: a datagram to ::1 never needs a smaller path."""
"""Datagrams read from a socket per wake-up before other tasks get a turn."""


def ipv6_addr(address: Address) -> Addr:
    return (address.host, address.port, 0, 0)


def _for_path(
    configuration: QuicConfiguration, remote: Addr, loopback_datagram: int | None
) -> QuicConfiguration:
    """`configuration`, with `loopback_datagram` as the datagram size when `remote` is ::1.

    QUIC assumes a 1200-byte path until it knows better (RFC 9000 section 14);
    the loopback interface is known to carry 64 KiB, and a message split into
    fewer datagrams costs fewer system calls and wake-ups at both ends.
    """
    if loopback_datagram is None:
        return configuration
    try:
        loopback = ipaddress.IPv6Address(remote[0].split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return configuration
    adjusted = copy.copy(configuration)
    adjusted.max_datagram_size = loopback_datagram
    return adjusted


def udp_socket() -> trio.socket.SocketType:
    """An AF_INET6 UDP socket that refuses IPv4 (IPV6_V6ONLY), with a large receive buffer."""
    return trio.socket.from_stdlib_socket(_udp_socket())


def _udp_socket() -> socket.socket:
    """`udp_socket` as a plain non-blocking socket: the drivers below do their own waiting."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    # Datagrams pile up while this process waits for a CPU; at a few thousand
    # per second Linux's default buffer (208 KiB) overflows, and every drop
    # costs a QUIC loss-recovery round (RFC 9002) in latency.  The kernel caps
    # the request at net.core.rmem_max, which is fine.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError:
        pass  # keep the default
    return sock


@dataclass(frozen=True)
class AckPolicy:
    """When a link sends pure ACKs once its handshake is complete (see QuicLink)."""

    delay: float
    """Seconds an ACK may wait for data to ride on; below MAX_ACK_DELAY."""
    every: int = 2
    """Unacknowledged datagrams after which the ACK goes at once."""

    def __post_init__(self) -> None:
        if not 0 <= self.delay < MAX_ACK_DELAY:
            raise ValueError(f"an ACK delay must be in [0, {MAX_ACK_DELAY}) seconds")
        if self.every < 1:
            raise ValueError("ACKs must go at least every so many datagrams (every >= 1)")


class LinkHandler(Protocol):
    """What a protocol plugs into a QuicLink.  Called from the link's task only."""

    def quic_event(self, link: QuicLink, event: events.QuicEvent) -> None:
        """Handle one event; may call link.quic's API (the loop transmits afterwards)."""

    def link_closed(self, link: QuicLink) -> None:
        """The connection is gone (terminated, timed out or cancelled)."""


class QuicLink:
    """One QUIC connection and the task that drives it.

    The link's task owns `quic`; other tasks may call its API (they run on the
    same trio thread) but must call `wake()` afterwards.

    `acks`, when given, lets a pure ACK wait `acks.delay` once the handshake is
    complete (aioquic's own delay is 1 ms, which costs one datagram for nearly
    every packet received).  Whatever the delay, an ACK rides on any data the
    link sends, and once `acks.every` datagrams are unacknowledged it goes at
    once (RFC 9000 section 13.2.2 recommends 2, for senders that grow their
    congestion window with each ACK).  The delay stays below the max_ack_delay
    aioquic advertises (25 ms), which the peer's loss detection allows for.
    """

    def __init__(
        self,
        quic: QuicConnection,
        remote: Addr,
        send: Callable[[bytes, Addr], Awaitable[object]],
        *,
        acks: AckPolicy | None = None,
    ) -> None:
        self.quic = quic
        self.remote = remote
        self.handler: LinkHandler | None = None
        self.closed = trio.Event()
        self.close_reason: events.ConnectionTerminated | None = None
        self.aborted: str | None = None
        """Why this side dropped the connection without a close (`abort`), if it did."""
        self._send = send
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, Addr] | None](
            INBOX_SIZE
        )
        self._wake_pending = False
        self._written = False
        self._acks = acks
        self._unacked = 0
        self._scope = trio.CancelScope()
        self.handshake_complete = False
        self.after_input: Callable[[], None] | None = None
        """Called by the link's task after each batch of datagrams and timer events."""

    @property
    def closing(self) -> bool:
        """Closed, or on its way: either side sent CONNECTION_CLOSE or the idle
        timer fired.  aioquic reports ConnectionTerminated (and the link closes)
        only after the closing or draining period of 3 PTOs (RFC 9000 section
        10.2), but nothing but that close can happen on it any more."""
        return self.close_reason is not None or self.quic._close_event is not None

    def wake(self) -> None:
        """Make the loop transmit what the QuicConnection API calls queued."""
        self._written = True
        if self._wake_pending or self.closed.is_set():
            return
        try:
            self._inbox_send.send_nowait(None)
            self._wake_pending = True
        except trio.WouldBlock:
            pass  # the loop has datagrams to process; it transmits after them anyway

    def deliver(self, data: bytes, addr: Addr) -> None:
        """Queue a datagram from the socket reader (server side)."""
        try:
            self._inbox_send.send_nowait((data, addr))
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # dropped; the peer's loss recovery resends

    def close(self, error_code: int = 0, reason: str = "") -> None:
        if not self.closed.is_set():
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self.wake()

    def abort(self, reason: str) -> None:
        """Drop the connection without telling the peer (it is unreachable anyway)."""
        if self.aborted is None:
            self.aborted = reason
        if self.close_reason is None:
            self.close_reason = events.ConnectionTerminated(
                error_code=0, frame_type=None, reason_phrase=reason
            )
        self._scope.cancel()

    def _ack_space(self) -> Any:
        """The 1-RTT packet space once pure ACKs may be delayed, else None.

        aioquic has no API for its ACK timing: `ack_at` of a packet space is
        when it sends the ACK for packets received there, and `_ack_delay` what
        it adds to the arrival time of the first unacknowledged one.
        """
        if self._acks is None or not self.handshake_complete:
            return None
        return self.quic._spaces.get(tls.Epoch.ONE_RTT)

    def _take(self, item: tuple[bytes, Addr] | None, now: float) -> None:
        if item is None:
            self._wake_pending = False
            return
        space = self._ack_space()
        if space is not None and space.ack_at is None:
            self._unacked = 0  # everything before was acknowledged
        self.quic.receive_datagram(item[0], item[1], now=now)
        if space is not None and self._acks is not None and space.ack_at is not None:
            self._unacked += 1
            if self._unacked >= self._acks.every:
                space.ack_at = now  # enough unacknowledged: acknowledge now

    async def run(self) -> None:
        """Drive the connection until it terminates; the link is closed on return."""
        try:
            with self._scope:
                await self._loop()
        finally:
            self._finish()

    async def _loop(self) -> None:
        if self.quic.configuration.is_client:
            await self._transmit()  # the Initial that connect() queued
        while self.close_reason is None:
            timer = self.quic.get_timer()
            with trio.move_on_at(timer if timer is not None else math.inf):
                item = await self._inbox.receive()
                now = trio.current_time()
                self._take(item, now)
                # Batch whatever else is already queued before answering.
                while True:
                    try:
                        item = self._inbox.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._take(item, now)
            if timer is not None and trio.current_time() >= timer:
                self.quic.handle_timer(now=trio.current_time())
            self._dispatch()
            if self.after_input is not None:
                self.after_input()
            await self._transmit()

    def _dispatch(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted):
                self.handshake_complete = True
                if self._acks is not None:
                    self.quic._ack_delay = self._acks.delay
            elif isinstance(event, events.ConnectionTerminated):
                self.close_reason = event
            if self.handler is not None:
                self.handler.quic_event(self, event)

    async def _transmit(self) -> None:
        now = trio.current_time()
        if self._written:
            self._written = False
            space = self._ack_space()
            if space is not None and space.ack_at is not None:
                space.ack_at = now  # the ACK owed rides on the data being sent
        for data, addr in self.quic.datagrams_to_send(now=now):
            await self._send(data, addr)

    def _finish(self) -> None:
        if self.close_reason is None:
            self.close_reason = events.ConnectionTerminated(
                error_code=0, frame_type=None, reason_phrase="closed locally"
            )
        self.closed.set()
        self._inbox_send.close()
        if self.handler is not None:
            self.handler.link_closed(self)


class _Sender:
    """Sends datagrams on one socket: no trio checkpoint per datagram unless the socket
    buffer is full; errors (an unreachable peer) are dropped, loss recovery resends."""

    def __init__(self, sock: socket.socket, *, connected: bool) -> None:
        self.sock = sock
        self.connected = connected
        self._full = trio.Lock()  # one task at a time waits for a full socket buffer

    async def send(self, data: bytes, addr: Addr) -> None:
        for _ in range(2):
            try:
                if self.connected:
                    self.sock.send(data)
                else:
                    self.sock.sendto(data, addr)
                return
            except BlockingIOError:
                async with self._full:
                    await trio.lowlevel.wait_writable(self.sock)
            except OSError:
                return


async def connect(
    remote: Address,
    configuration: QuicConfiguration,
    handler: LinkHandler,
    nursery: trio.Nursery,
    *,
    session_ticket_handler: SessionTicketHandler | None = None,
    acks: AckPolicy | None = None,
    loopback_datagram: int | None = None,
) -> QuicLink:
    """Open a client connection to `remote` on its own connected socket.

    The link's task and socket reader run in `nursery`; both end when the
    connection does.  Returns as soon as the first Initial packet is queued;
    the handler hears HandshakeCompleted (or ConnectionTerminated).

    To resume a session (and send 0-RTT data), put a ticket in
    `configuration.session_ticket`; `session_ticket_handler` receives the
    tickets the server issues on this connection.  `acks`: see QuicLink.
    `loopback_datagram`: the datagram size to use when `remote` is ::1.
    """
    sock = _udp_socket()
    target = ipv6_addr(remote)
    try:
        # Connecting a UDP socket only sets its default peer: it does not block.
        sock.connect(target)
        # aioquic checks each datagram's address against the path, so use the
        # full 4-tuple the kernel reports for the peer.
        target = sock.getpeername()
    except OSError:
        sock.close()
        raise
    await trio.lowlevel.checkpoint()

    quic = QuicConnection(
        configuration=_for_path(configuration, target, loopback_datagram),
        session_ticket_handler=session_ticket_handler,
    )
    link = QuicLink(quic, target, _Sender(sock, connected=True).send, acks=acks)
    link.handler = handler
    quic.connect(target, now=trio.current_time())

    async def reader() -> None:
        with sock:
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(READ_BATCH):
                    try:
                        data = sock.recv(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        # ICMP port unreachable: nobody listens there.  Before the
                        # handshake that is a failed dial; after it, a blip that
                        # the connection's idle timeout judges.
                        if not link.handshake_complete:
                            link.abort("connection refused")
                        continue
                    except OSError:
                        continue
                    link.deliver(data, target)

    async def run_link() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(reader)
            try:
                await link.run()
            finally:
                inner.cancel_scope.cancel()

    nursery.start_soon(run_link)
    return link


class QuicServer:
    """Accepts QUIC connections on one UDP socket and demultiplexes datagrams.

    Datagrams are routed by destination connection ID; an Initial packet with
    an unknown one (and a full-size datagram, RFC 9000 section 14.1) starts a
    new connection whose handler comes from `handler_factory`.

    Session resumption (and with it 0-RTT) is off unless both ticket callbacks
    are given: `session_ticket_handler` stores each ticket the server issues,
    `session_ticket_fetcher` looks one up by label when a client resumes.
    `acks` applies to every accepted link (see QuicLink);
    `loopback_datagram` to those from ::1 (see connect).
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        handler_factory: Callable[[QuicLink], LinkHandler],
        *,
        max_connections: int = 1024,
        max_connections_per_host: int = 64,
        session_ticket_fetcher: SessionTicketFetcher | None = None,
        session_ticket_handler: SessionTicketHandler | None = None,
        acks: AckPolicy | None = None,
        loopback_datagram: int | None = None,
    ) -> None:
        assert not configuration.is_client
        self.acks = acks
        self.loopback_datagram = loopback_datagram
        self.configuration = configuration
        self.handler_factory = handler_factory
        self.max_connections = max_connections
        self.max_connections_per_host = max_connections_per_host
        self.session_ticket_fetcher = session_ticket_fetcher
        self.session_ticket_handler = session_ticket_handler
        self.local: Addr | None = None
        self.links: dict[QuicLink, None] = {}
        """The server's connections, oldest first."""
        # Owned by the reader task: connection ID -> link.
        self._routes: dict[bytes, QuicLink] = {}
        self._per_host: dict[str, int] = {}

    async def serve(
        self, listen: Address, *, task_status: trio.TaskStatus[Addr] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the bound address through task_status."""
        sock = _udp_socket()
        with sock:
            try:
                sock.bind(ipv6_addr(listen))
            except OSError as exc:
                raise ListenError("UDP", listen, exc) from None
            self.local = sock.getsockname()
            await trio.lowlevel.checkpoint()
            async with trio.open_nursery() as nursery:
                task_status.started(self.local)
                await self._read(sock, nursery)

    async def _read(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        send = _Sender(sock, connected=False).send
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(READ_BATCH):
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                negotiation = self._route(data, addr, send, nursery)
                if negotiation is not None:
                    await send(negotiation, addr)

    def _route(
        self,
        data: bytes,
        addr: Addr,
        send: Callable[[bytes, Addr], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> bytes | None:
        """Hand one datagram to its link (or a new one); a version negotiation to send back."""
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return None  # not QUIC: ignore, as RFC 9000 section 5.2.2 allows
        if (
            header.version is not None
            and header.version not in self.configuration.supported_versions
        ):
            return encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=self.configuration.supported_versions,
            )
        link = self._routes.get(header.destination_cid)
        if link is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < 1200:
                return None
            link = self._accept(header.destination_cid, addr, send, nursery)
            if link is None:
                return None
        link.deliver(data, addr)
        return None

    def _accept(
        self,
        original_cid: bytes,
        addr: Addr,
        send: Callable[[bytes, Addr], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> QuicLink | None:
        host = addr[0]
        full = len(self.links) >= self.max_connections
        if full or self._per_host.get(host, 0) >= self.max_connections_per_host:
            # The oldest connection still in its handshake (of this host, if the host is
            # what is full) gives way: a flood of Initials that never finish must not
            # keep real clients out.  Else the client retries and gives up on its own.
            victim = next(
                (
                    old
                    for old in self.links
                    if not old.handshake_complete and (full or old.remote[0] == host)
                ),
                None,
            )
            if victim is None:
                return None
            victim.abort("evicted during its handshake by a newer connection")
            self._forget(victim)
        quic = QuicConnection(
            configuration=_for_path(self.configuration, addr, self.loopback_datagram),
            original_destination_connection_id=original_cid,
            session_ticket_fetcher=self.session_ticket_fetcher,
            session_ticket_handler=self.session_ticket_handler,
        )
        link = QuicLink(quic, addr, send, acks=self.acks)
        link.handler = _Routing(self, link, self.handler_factory(link))
        self.links[link] = None
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._routes[original_cid] = link
        self._routes[quic.host_cid] = link
        nursery.start_soon(link.run)
        return link

    def _forget(self, link: QuicLink) -> None:
        if link not in self.links:
            return  # evicted earlier
        del self.links[link]
        host = link.remote[0]
        self._per_host[host] -= 1
        if not self._per_host[host]:
            del self._per_host[host]
        for cid in [cid for cid, owner in self._routes.items() if owner is link]:
            del self._routes[cid]


class _Routing:
    """Keeps the server's connection-ID table in step with one link, then delegates."""

    def __init__(self, server: QuicServer, link: QuicLink, inner: LinkHandler) -> None:
        self.server = server
        self.inner = inner

    def quic_event(self, link: QuicLink, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionIdIssued):
            self.server._routes[event.connection_id] = link
        elif isinstance(event, events.ConnectionIdRetired):
            if self.server._routes.get(event.connection_id) is link:
                del self.server._routes[event.connection_id]
        self.inner.quic_event(link, event)

    def link_closed(self, link: QuicLink) -> None:
        self.server._forget(link)
        self.inner.link_closed(link)
