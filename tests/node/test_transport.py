"""The peer mesh over real QUIC on real UDP sockets on ::1."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from aioquic.quic import events
from cryptography.hazmat.primitives import serialization
from meshkit import free_udp_port, make_cluster

from trustchain.node import identity, quic
from trustchain.node.config import (
    Address,
    Genesis,
    PeerSettings,
    Validator,
    genesis_entry_toml,
    load_genesis,
)
from trustchain.node.framing import encode_frame
from trustchain.node.identity import Identity
from trustchain.node.peer import PeerNetwork, quic_configuration
from trustchain.node.peer_session import CloseCode, PeerSession, Role

SETTINGS = PeerSettings(idle_timeout=2.0)


def network(me: Identity, genesis: Genesis, listen: Address | None = None) -> PeerNetwork:
    return PeerNetwork(me, genesis, listen or genesis.validator(me.name).address, SETTINGS)


async def collect(net: PeerNetwork, count: int) -> list[tuple[str, dict[str, Any]]]:
    return [await net.receive() for _ in range(count)]


async def exchange_all(nets: list[PeerNetwork], per_pair: int) -> None:
    """Every node sends `per_pair` numbered messages to every other; all arrive in order."""
    for a in nets:
        for b in nets:
            if a is not b:
                for i in range(per_pair):
                    assert a.send(b.me.name, {"from": a.me.name, "i": i})
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    async def gather(net: PeerNetwork) -> None:
        results[net.me.name] = await collect(net, per_pair * (len(nets) - 1))

    async with trio.open_nursery() as nursery:
        for net in nets:
            nursery.start_soon(gather, net)
    for net in nets:
        by_sender: dict[str, list[int]] = {}
        for peer, message in results[net.me.name]:
            assert message["from"] == peer  # delivered under the authenticated name
            by_sender.setdefault(peer, []).append(message["i"])
        assert by_sender == {o.me.name: list(range(per_pair)) for o in nets if o is not net}


@pytest.mark.parametrize("size", [2, 4])
async def test_endpoints_exchange_messages_in_every_direction(tmp_path: Path, size: int) -> None:
    idents, genesis = make_cluster(tmp_path, size)
    nets = [network(i, genesis) for i in idents]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for net in nets:
                await nursery.start(net.run)
            for net in nets:
                await net.wait_connected()
            await exchange_all(nets, per_pair=50)
            nursery.cancel_scope.cancel()


async def test_large_messages_and_backpressure(tmp_path: Path) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    a, b = (network(i, genesis) for i in idents)
    blob = bytes(range(256)) * 1024  # 256 KiB per message, 16 MiB in all
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await a.wait_connected()
            for i in range(64):
                assert a.send("v2", {"i": i, "blob": blob})
            got = await collect(b, 64)
            assert [m["i"] for _, m in got] == list(range(64))
            assert all(m["blob"] == blob for _, m in got)
            nursery.cancel_scope.cancel()


async def test_send_queue_is_bounded(tmp_path: Path) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    a = PeerNetwork(idents[0], genesis, genesis.validator("v1").address, PeerSettings(send_queue=3))
    # v2 is not running: messages wait in the queue, the fourth is refused.
    assert [a.send("v2", {"i": i}) for i in range(4)] == [True, True, True, False]
    assert a.peers["v2"].stats.dropped == 1


@pytest.mark.parametrize("restarting", ["v1", "v2"])  # v1 dials v2
async def test_restarted_peer_reconnects_and_traffic_resumes(
    tmp_path: Path, restarting: str
) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    by_name = {i.name: i for i in idents}
    stable_name = "v2" if restarting == "v1" else "v1"
    stable = network(by_name[stable_name], genesis)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(stable.run)
            for generation in range(3):
                moving = network(by_name[restarting], genesis)
                async with trio.open_nursery() as inner:
                    await inner.start(moving.run)
                    await moving.wait_connected()
                    await stable.wait_connected()
                    moving.send(stable_name, {"generation": generation})
                    assert await stable.receive() == (restarting, {"generation": generation})
                    stable.send(restarting, {"ack": generation})
                    assert await moving.receive() == (stable_name, {"ack": generation})
                    inner.cancel_scope.cancel()  # the node stops: sockets close, port is reusable
            nursery.cancel_scope.cancel()
    assert stable.peers[restarting].stats.connects == 3


def write_genesis(path: Path, validators: list[Validator]) -> Genesis:
    path.write_text('chain_id = "test"\n\n' + "\n".join(genesis_entry_toml(v) for v in validators))
    return load_genesis(path)


async def assert_nothing_delivered(net: PeerNetwork, seconds: float) -> None:
    with trio.move_on_after(seconds):
        peer, message = await net.receive()
        pytest.fail(f"{net.me.name} received {message!r} from {peer}")


async def test_stranger_is_refused(tmp_path: Path) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    mallory = identity.generate("mallory")  # "mallory" < "v2": mallory dials v2
    mallory_view = write_genesis(
        tmp_path / "mallory.toml",
        [
            Validator("mallory", Address("::1", free_udp_port()), mallory.public_key_raw, 1),
            genesis.validator("v2"),
        ],
    )
    v2 = network(idents[1], genesis)
    evil = network(mallory, mallory_view)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(v2.run)
            await nursery.start(evil.run)
            evil.send("v2", {"evil": True})
            await assert_nothing_delivered(v2, 1.5)
            assert evil.connected_peers() == set() and v2.connected_peers() == set()
            nursery.cancel_scope.cancel()


async def test_wrong_pinned_key_is_refused(tmp_path: Path) -> None:
    """An impostor listening at v2's address cannot pass v1's pin of v2's key."""
    idents, genesis = make_cluster(tmp_path, 2)
    impostor = identity.generate("v2")
    impostor_view = write_genesis(
        tmp_path / "impostor.toml",
        [
            genesis.validator("v1"),
            dataclasses.replace(genesis.validator("v2"), public_key=impostor.public_key_raw),
        ],
    )
    v1 = network(idents[0], genesis)
    fake = network(impostor, impostor_view)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.run)
            await nursery.start(v1.run)
            v1.send("v2", {"secret": 1})
            await assert_nothing_delivered(fake, 1.5)
            assert v1.connected_peers() == set()
            assert v1.peers["v2"].queue  # still queued for the real v2
            nursery.cancel_scope.cancel()


async def test_forged_auth_signature_is_refused(tmp_path: Path) -> None:
    """Someone who claims to be v1 without v1's key is refused by v2."""
    idents, genesis = make_cluster(tmp_path, 2)
    forger = identity.generate("v1")
    forger_view = write_genesis(
        tmp_path / "forger.toml",
        [
            dataclasses.replace(genesis.validator("v1"), public_key=forger.public_key_raw),
            genesis.validator("v2"),
        ],
    )
    v2 = network(idents[1], genesis)
    fake = network(forger, forger_view)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(v2.run)
            await nursery.start(fake.run)
            fake.send("v2", {"forged": True})
            await assert_nothing_delivered(v2, 1.5)
            assert v2.connected_peers() == set()
            nursery.cancel_scope.cancel()


class RawPeer:
    """A real v1 client that authenticates properly, then writes `payload` raw on the stream."""

    def __init__(self, me: Identity, genesis: Genesis, payload: bytes) -> None:
        self.session = PeerSession(Role.CLIENT, me, genesis, 1 << 20, expected_peer="v2")
        self.payload = payload
        self.stream_id = 0
        self.terminated: events.ConnectionTerminated | None = None
        self.done = trio.Event()

    def quic_event(self, link: quic.QuicLink, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            cert = link.quic.tls._peer_certificate
            assert cert is not None
            der = cert.public_bytes(serialization.Encoding.DER)
            key = identity.raw_public_key(cert.public_key())  # type: ignore[arg-type]
            self.stream_id = link.quic.get_next_available_stream_id()
            link.quic.send_stream_data(
                self.stream_id, self.session.handshake_completed(der, key).send
            )
        elif isinstance(event, events.StreamDataReceived):
            actions = self.session.stream_data(event.data, event.end_stream)
            if actions.send:
                link.quic.send_stream_data(self.stream_id, actions.send)
            if actions.authenticated:
                link.quic.send_stream_data(self.stream_id, self.payload)
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event

    def link_closed(self, link: quic.QuicLink) -> None:
        self.done.set()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", "malformed msgpack"),
        (b"\x7f\xff\xff\xff", "exceeds the limit"),
        (encode_frame({"t": "m", "b": "not a map"}), "unexpected frame"),
    ],
)
async def test_bad_frame_closes_only_that_link(tmp_path: Path, payload: bytes, why: str) -> None:
    idents, genesis = make_cluster(tmp_path, 3)
    v1, v2, v3 = idents
    n2, n3 = network(v2, genesis), network(v3, genesis)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(n2.run)
            await nursery.start(n3.run)
            await n2.wait_connected({"v3"})
            raw = RawPeer(v1, genesis, encode_frame({"t": "m", "b": {"first": 1}}) + payload)
            config = quic_configuration(v1, SETTINGS, is_client=True)
            await quic.connect(genesis.validator("v2").address, config, raw, nursery)
            await raw.done.wait()
            assert raw.terminated is not None
            assert raw.terminated.error_code == CloseCode.PROTOCOL_ERROR
            assert why in raw.terminated.reason_phrase
            assert await n2.receive() == ("v1", {"first": 1})  # frames before the bad one count
            # The node is unharmed: its other links still carry traffic.
            n3.send("v2", {"still": "alive"})
            assert await n2.receive() == ("v3", {"still": "alive"})
            nursery.cancel_scope.cancel()


@dataclasses.dataclass
class LossyRelay:
    """A UDP relay on ::1 that drops, delays and reorders datagrams both ways."""

    target: quic.Addr
    rng: random.Random
    drop: float = 0.1
    max_delay: float = 0.02
    forwarded: int = 0
    dropped: int = 0

    async def _forward(
        self, sock: trio.socket.SocketType, data: bytes, addr: quic.Addr | None
    ) -> None:
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        self.forwarded += 1
        await trio.sleep(self.rng.random() * self.max_delay)  # later datagrams overtake
        try:
            if addr is None:
                await sock.send(data)
            else:
                await sock.sendto(data, addr)
        except OSError:
            pass

    async def run(
        self, listen: Address, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        front = quic.udp_socket()
        await front.bind(quic.ipv6_addr(listen))
        upstreams: dict[quic.Addr, trio.socket.SocketType] = {}
        async with trio.open_nursery() as nursery:

            async def back(client: quic.Addr, up: trio.socket.SocketType) -> None:
                while True:
                    data = await up.recv(65536)
                    nursery.start_soon(self._forward, front, data, client)

            task_status.started()
            while True:
                data, client = await front.recvfrom(65536)
                up = upstreams.get(client)
                if up is None:
                    up = upstreams[client] = quic.udp_socket()
                    await up.connect(self.target)
                    nursery.start_soon(back, client, up)
                nursery.start_soon(self._forward, up, data, None)


async def test_lossy_path_still_delivers_everything_in_order(tmp_path: Path) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    # Genesis sends v1 to the relay's port; v2 really listens elsewhere.
    v2_real = Address("::1", free_udp_port())
    relay = LossyRelay(quic.ipv6_addr(v2_real), random.Random(7))
    a = network(idents[0], genesis)
    b = network(idents[1], genesis, listen=v2_real)
    count = 400
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run, genesis.validator("v2").address)
            await nursery.start(b.run)
            await nursery.start(a.run)
            await a.wait_connected()
            for i in range(count):
                a.send("v2", {"i": i, "pad": b"x" * 300})
                b.send("v1", {"j": i})
                if i % 4 == 3:
                    # Let the links transmit: many datagrams (on ::1 a datagram
                    # holds up to peer.LOOPBACK_DATAGRAM bytes of messages).
                    await trio.sleep(0.001)
            to_b, to_a = await collect(b, count), []
            to_a = await collect(a, count)
            assert [m["i"] for _, m in to_b] == list(range(count))
            assert [m["j"] for _, m in to_a] == list(range(count))
            nursery.cancel_scope.cancel()
    # The path really was lossy: a tenth of some 250 datagrams (their number depends on
    # how the sends batch, so the seed does not fix it; 20 drops happened in CI).
    assert relay.dropped >= 5, relay


async def test_cancelling_the_network_leaves_no_tasks(tmp_path: Path) -> None:
    idents, genesis = make_cluster(tmp_path, 2)
    nets = [network(i, genesis) for i in idents]
    before = trio.lowlevel.current_statistics().tasks_living
    async with trio.open_nursery() as nursery:
        for net in nets:
            await nursery.start(net.run)
        await nets[0].wait_connected()
        assert trio.lowlevel.current_statistics().tasks_living > before + 4
        nursery.cancel_scope.cancel()
    assert trio.lowlevel.current_statistics().tasks_living == before
    # Both ports are free again.
    for net in nets:
        sock = quic.udp_socket()
        await sock.bind(quic.ipv6_addr(net.listen))
        sock.close()


def test_links_to_loopback_use_large_datagrams(tmp_path: Path) -> None:
    idents, _ = make_cluster(tmp_path, 1)
    config = quic_configuration(idents[0], SETTINGS, is_client=True)
    local = quic._for_path(config, ("::1", 4433, 0, 0), 16384)
    assert local.max_datagram_size == 16384 and local is not config
    assert config.max_datagram_size == 1200  # the shared configuration is unchanged
    remote = quic._for_path(config, ("2001:db8::1", 4433, 0, 0), 16384)
    assert remote is config  # an unknown path starts at QUIC's 1200 bytes
    assert quic._for_path(config, ("::1", 4433, 0, 0), None) is config


def test_ack_policy_bounds() -> None:
    with pytest.raises(ValueError, match="ACK delay"):
        quic.AckPolicy(delay=quic.MAX_ACK_DELAY)  # the peer allows no more for it
    with pytest.raises(ValueError, match="every"):
        quic.AckPolicy(delay=0.01, every=0)
    assert quic.AckPolicy(delay=0.01).every == 2  # RFC 9000 section 13.2.2
