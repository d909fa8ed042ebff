"""The validator mesh: one authenticated QUIC connection per pair of validators.

    network = PeerNetwork(identity, genesis, config.listen, config.peer)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        network.send("v2", {"type": "ping"})
        async for peer, message in network:
            ...

Who dials: of each pair, the validator whose name sorts first dials the other,
so each pair has one connection; if both ends ever hold one (after a restart),
the newest authenticated connection replaces the older.  A dialler that loses
its link redials with jittered exponential backoff.

Delivery is in order per link and at most once: a message queued for a peer
waits (up to `PeerSettings.send_queue` messages, then further ones are dropped
and counted) until the link is up; a message in flight when a link dies is
lost, which the consensus protocol tolerates by design (it retransmits through
timeouts and catch-up).
"""

from __future__ import annotations

import os
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustchain.node import quic
from trustchain.node.config import Address, Genesis, PeerSettings
from trustchain.node.identity import Identity, raw_public_key
from trustchain.node.log import EventLogger, get_logger
from trustchain.node.peer_session import Actions, CloseCode, PeerSession, Role, State

ALPN = "trustchain-peer/1"
BACKOFF_INITIAL = 0.05
BACKOFF_MAX = 2.0
AUTH_TIMEOUT = 5.0
INBOUND_QUEUE = 65536
MAX_UNACKED_BYTES = 4 * 1024 * 1024
"""Stream bytes handed to QUIC but not yet acknowledged, per link.  Past this,
messages wait in the peer's bounded queue instead of in aioquic's buffer."""
MAINTAIN_INTERVAL = 0.1
"""Seconds between checks for keepalives and slow handshakes (at most; see _maintain)."""
ACKS = quic.AckPolicy(delay=0.02, every=8)
"""When a peer link sends pure ACKs (quic.QuicLink): consensus traffic flows both
ways within a round, so most ACKs ride on votes and proposals instead of costing a
datagram (and a system call at each end) of their own.  Every 8 datagrams rather
than RFC 9000's suggested 2: a validator's flows are a few messages per round, far
below any congestion window, and the delay bounds how late an ACK can be."""
LOOPBACK_DATAGRAM = 16384
"""Datagram bytes on links to ::1 (a local cluster): an issue request of a few KiB
travels in one datagram instead of three (quic._for_path)."""


def _unacked_bytes(connection: Any, stream_id: int) -> int:
    # aioquic keeps unacknowledged stream data in the sender's buffer and has
    # no public accessor for its size; this is the one place that reads it.
    stream = connection._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


def quic_configuration(
    me: Identity, settings: PeerSettings, *, is_client: bool
) -> QuicConfiguration:
    """QUIC settings of a peer link, either end."""
    configuration = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=settings.idle_timeout,
        max_data=16 * 1024 * 1024,
        max_stream_data=8 * 1024 * 1024,
        # Peers pin keys from genesis instead of trusting a CA (see peer_session).
        verify_mode=ssl.CERT_NONE,
    )
    configuration.certificate = me.certificate
    configuration.private_key = me.key
    return configuration


@dataclass
class PeerStats:
    sent: int = 0
    received: int = 0
    dropped: int = 0
    """Messages refused because the peer's send queue was full."""
    connects: int = 0


@dataclass
class _Peer:
    """Per-peer state, owned by the PeerNetwork (all on one trio thread)."""

    name: str
    address: Address
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    link: _PeerLink | None = None
    up: trio.Event = field(default_factory=trio.Event)
    stats: PeerStats = field(default_factory=PeerStats)


class PeerNetwork:
    """This node's end of the validator mesh."""

    def __init__(
        self,
        me: Identity,
        genesis: Genesis,
        listen: Address,
        settings: PeerSettings | None = None,
        *,
        log: EventLogger | None = None,
    ) -> None:
        self.me = me
        self.genesis = genesis
        self.listen = listen
        self.settings = settings or PeerSettings()
        self.log = log or get_logger("peer", node=me.name)
        self.local_address: quic.Addr | None = None
        self.peers = {
            v.name: _Peer(v.name, v.address) for v in genesis.validators if v.name != me.name
        }
        self._inbound_send, self._inbound = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            INBOUND_QUEUE
        )
        self.inbound_dropped = 0
        # Server-side links still authenticating; _maintain expires them.
        self.handshaking: set[_PeerLink] = set()

    # --- public API --------------------------------------------------------------

    def send(self, peer: str, message: dict[str, Any]) -> bool:
        """Queue `message` for `peer`; False if the peer's queue is full (message dropped)."""
        state = self.peers[peer]
        if len(state.queue) >= self.settings.send_queue:
            state.stats.dropped += 1
            return False
        state.queue.append(message)
        if state.link is not None:
            state.link.flush()
        return True

    def broadcast(self, message: dict[str, Any]) -> None:
        for name in self.peers:
            self.send(name, message)

    async def receive(self) -> tuple[str, dict[str, Any]]:
        return await self._inbound.receive()

    def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self._inbound.__aiter__()

    def connected_peers(self) -> set[str]:
        return {name for name, p in self.peers.items() if p.link is not None}

    async def wait_connected(self, names: set[str] | None = None) -> None:
        """Wait until every peer in `names` (default: all) has an authenticated link."""
        for name in sorted(names if names is not None else self.peers):
            await self.peers[name].up.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[quic.Addr] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, dial, keep links alive; runs until cancelled, then closes every link."""
        server = quic.QuicServer(
            quic_configuration(self.me, self.settings, is_client=False),
            self._accepted,
            max_connections=4 * len(self.genesis.validators) + 16,
            max_connections_per_host=4 * len(self.genesis.validators) + 16,
            acks=ACKS,
            loopback_datagram=LOOPBACK_DATAGRAM,
        )
        try:
            async with trio.open_nursery() as nursery:
                self.local_address = await nursery.start(server.serve, self.listen)
                self.log.info("peer.listening", address=str(self.listen))
                for name in sorted(self.peers):
                    if self.me.name < name:
                        nursery.start_soon(self._dial_forever, self.peers[name], nursery)
                nursery.start_soon(self._maintain)
                task_status.started(self.local_address)
        finally:
            self._inbound_send.close()

    # --- links ------------------------------------------------------------------

    def _accepted(self, link: quic.QuicLink) -> _PeerLink:
        return _PeerLink(
            self,
            link,
            PeerSession(
                Role.SERVER,
                self.me,
                self.genesis,
                self.settings.max_frame_bytes,
                nonce=os.urandom(32),
            ),
        )

    async def _dial_forever(self, peer: _Peer, nursery: trio.Nursery) -> None:
        attempt = 0
        configuration = quic_configuration(self.me, self.settings, is_client=True)
        configuration.server_name = peer.name
        while True:
            session = PeerSession(
                Role.CLIENT,
                self.me,
                self.genesis,
                self.settings.max_frame_bytes,
                expected_peer=peer.name,
            )
            handler = _PeerLink(self, None, session)
            try:
                link = await quic.connect(
                    peer.address, configuration, handler, nursery, acks=ACKS,
                    loopback_datagram=LOOPBACK_DATAGRAM,
                )  # fmt: skip
            except OSError as exc:
                self.log.warning("peer.dial_failed", peer=peer.name, error=str(exc))
            else:
                handler.link = link
                await link.closed.wait()
                if handler.was_open:
                    attempt = 0
            delay = min(BACKOFF_MAX, BACKOFF_INITIAL * 2**attempt) * random.uniform(0.5, 1.0)
            attempt = min(attempt + 1, 16)
            await trio.sleep(delay)

    def _attach(self, handler: _PeerLink) -> None:
        name = handler.session.peer
        assert name is not None
        peer = self.peers[name]
        old = peer.link
        peer.link = handler
        peer.stats.connects += 1
        peer.up.set()
        if old is not None and old is not handler:
            old.close(CloseCode.REPLACED, "replaced by a newer connection")
        self.log.info("peer.authenticated", peer=name, role=handler.session.role.value)
        handler.flush()

    def _detach(self, handler: _PeerLink) -> None:
        name = handler.session.peer
        if name is None or name not in self.peers:
            return
        peer = self.peers[name]
        if peer.link is handler:
            peer.link = None
            peer.up = trio.Event()
            self.log.info("peer.disconnected", peer=name, reason=handler.close_text())

    def _deliver(self, peer: str, message: dict[str, Any]) -> None:
        self.peers[peer].stats.received += 1
        try:
            self._inbound_send.send_nowait((peer, message))
        except trio.WouldBlock:
            self.inbound_dropped += 1
        except trio.ClosedResourceError:
            pass

    async def _maintain(self) -> None:
        """Send keepalives and expire slow handshakes.

        Queues held back by backpressure are flushed by their link as ACKs
        arrive (`_PeerLink.flush`), not by polling here.
        """
        keepalive_every = self.settings.idle_timeout / 3
        interval = min(MAINTAIN_INTERVAL, keepalive_every / 4)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for peer in self.peers.values():
                link = peer.link
                if link is None:
                    continue
                if peer.queue:
                    link.flush()
                if now - link.last_send > keepalive_every:
                    link.write(PeerSession.keepalive())
            for pending in list(self.handshaking):
                if now - pending.created > AUTH_TIMEOUT:
                    pending.close(CloseCode.TIMEOUT, "authentication timed out")


class _PeerLink:
    """Connects one QUIC link to its PeerSession and the network."""

    def __init__(
        self, network: PeerNetwork, link: quic.QuicLink | None, session: PeerSession
    ) -> None:
        self.network = network
        self.link = link
        self.session = session
        self.stream_id: int | None = None
        self.was_open = False
        self.created = trio.current_time()
        self.last_send = self.created
        self._closed_for: tuple[int, str] | None = None
        if session.role is Role.SERVER:
            network.handshaking.add(self)

    @property
    def log(self) -> EventLogger:
        return self.network.log

    def close_text(self) -> str:
        if self._closed_for is not None:
            return f"{CloseCode(self._closed_for[0]).name}: {self._closed_for[1]}"
        reason = self.link.close_reason if self.link is not None else None
        if reason is None:
            return "unknown"
        return f"error {reason.error_code:#x}: {reason.reason_phrase or 'no reason'}"

    # --- LinkHandler ------------------------------------------------------------

    def quic_event(self, link: quic.QuicLink, event: events.QuicEvent) -> None:
        self.link = link
        if isinstance(event, events.HandshakeCompleted):
            if self.session.role is Role.CLIENT:
                self._client_handshake(link)
        elif isinstance(event, events.StreamDataReceived):
            if self.stream_id is None and self.session.role is Role.SERVER:
                self.stream_id = event.stream_id
            if event.stream_id != self.stream_id:
                self.close(CloseCode.PROTOCOL_ERROR, f"data on unexpected stream {event.stream_id}")
                return
            self._apply(self.session.stream_data(event.data, event.end_stream))
        elif isinstance(event, events.StreamReset):
            self.close(CloseCode.PROTOCOL_ERROR, f"stream {event.stream_id} reset by peer")

    def link_closed(self, link: quic.QuicLink) -> None:
        self.network.handshaking.discard(self)
        self.network._detach(self)
        if not self.was_open and self.session.state is not State.CLOSED:
            self.log.debug(
                "peer.link_failed",
                peer=self.session.peer,
                role=self.session.role.value,
                reason=self.close_text(),
            )

    # --- helpers -------------------------------------------------------------------

    def _client_handshake(self, link: quic.QuicLink) -> None:
        # aioquic has verified the CertificateVerify signature with this certificate's
        # key; the session pins that key to genesis.  aioquic exposes the peer
        # certificate only as a private attribute of its TLS context.
        certificate = link.quic.tls._peer_certificate
        key = certificate.public_key() if certificate is not None else None
        if certificate is None or not isinstance(key, Ed25519PublicKey):
            self.close(CloseCode.AUTH_FAILED, f"{self.session.peer}: server key is not Ed25519")
            return
        self.stream_id = link.quic.get_next_available_stream_id()
        der = certificate.public_bytes(serialization.Encoding.DER)
        self._apply(self.session.handshake_completed(der, raw_public_key(key)))

    def _apply(self, actions: Actions) -> None:
        if actions.send:
            self.write(actions.send)
        if actions.authenticated is not None:
            self.was_open = True
            self.network.handshaking.discard(self)
            self.network._attach(self)
        for message in actions.delivered:
            assert self.session.peer is not None
            self.network._deliver(self.session.peer, message)
        if actions.close is not None:
            self.close(*actions.close)

    def write(self, data: bytes) -> None:
        if self.link is None or self.stream_id is None or self.link.closed.is_set():
            return
        self.link.quic.send_stream_data(self.stream_id, data)
        self.last_send = trio.current_time()
        self.link.wake()

    def flush(self) -> None:
        """Move queued messages into QUIC while the link's unacknowledged data is small."""
        if self.session.state is not State.OPEN or self.link is None or self.stream_id is None:
            return
        peer = self.network.peers[self.session.peer or ""]
        if peer.link is not self:
            return
        connection = self.link.quic
        frames: list[bytes] = []
        while peer.queue and _unacked_bytes(connection, self.stream_id) < MAX_UNACKED_BYTES:
            frames.append(self.session.encode(peer.queue.popleft()))
            if len(frames) >= 64:
                self.write(b"".join(frames))
                peer.stats.sent += len(frames)
                frames.clear()
        if frames:
            self.write(b"".join(frames))
            peer.stats.sent += len(frames)
        # Held back: try again whenever the link has taken in datagrams (ACKs free
        # the window), until the queue is empty.
        self.link.after_input = self.flush if peer.queue else None

    def close(self, code: CloseCode, reason: str) -> None:
        if self._closed_for is None:
            self._closed_for = (int(code), reason)
            level = (
                self.log.info
                if code in (CloseCode.NORMAL, CloseCode.REPLACED)
                else self.log.warning
            )
            level(
                "peer.link_closed",
                peer=self.session.peer,
                role=self.session.role.value,
                code=code.name,
                reason=reason,
            )
        if self.link is not None:
            self.link.close(int(code), reason)
