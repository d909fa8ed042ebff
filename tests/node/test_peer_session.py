"""The peer authentication protocol, sans-IO: every check refuses what it must."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from meshkit import make_cluster

from trustchain.node import identity
from trustchain.node.config import Genesis
from trustchain.node.framing import FrameDecoder, encode_frame
from trustchain.node.identity import Identity
from trustchain.node.peer_session import Actions, CloseCode, PeerSession, Role, State

MAX = 1 << 20


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[list[Identity], Genesis]:
    return make_cluster(tmp_path, 3)


def pair(
    client_id: Identity, server_id: Identity, genesis: Genesis, dial: str | None = None
) -> tuple[PeerSession, PeerSession]:
    client = PeerSession(Role.CLIENT, client_id, genesis, MAX, expected_peer=dial or server_id.name)
    server = PeerSession(Role.SERVER, server_id, genesis, MAX, nonce=os.urandom(32))
    return client, server


def run_handshake(
    client: PeerSession, server: PeerSession, server_id: Identity
) -> tuple[Actions, Actions]:
    """Shuttle bytes between the two sessions until neither has anything to send."""
    last_client = client.handshake_completed(server_id.certificate_der, server_id.public_key_raw)
    last_server = Actions()
    to_server = last_client.send
    while to_server and last_client.close is None:
        last_server = server.stream_data(to_server, end_stream=False)
        if last_server.close is not None or not last_server.send:
            break
        last_client = client.stream_data(last_server.send, end_stream=False)
        to_server = last_client.send
    return last_client, last_server


def test_handshake_opens_both_sides_and_carries_messages(
    cluster: tuple[list[Identity], Genesis],
) -> None:
    (a, b, _), genesis = cluster
    client, server = pair(a, b, genesis)
    c, s = run_handshake(client, server, b)
    assert client.state is State.OPEN and server.state is State.OPEN
    assert c.authenticated == "v2" and s.authenticated == "v1"
    out = server.stream_data(client.encode({"x": 1}) + client.encode({"x": 2}), end_stream=False)
    assert out.delivered == [{"x": 1}, {"x": 2}]
    assert client.stream_data(server.encode({"y": b"\x00"}), False).delivered == [{"y": b"\x00"}]


def test_client_refuses_server_whose_key_is_not_pinned(
    cluster: tuple[list[Identity], Genesis],
) -> None:
    (a, _, c), genesis = cluster
    client = PeerSession(Role.CLIENT, a, genesis, MAX, expected_peer="v2")
    # v3 answers at v2's address: its key is not v2's genesis key.
    actions = client.handshake_completed(c.certificate_der, c.public_key_raw)
    assert actions.close is not None and actions.close[0] is CloseCode.AUTH_FAILED
    assert "does not match its genesis consensus key" in actions.close[1]
    assert actions.send == b"" and client.state is State.CLOSED


def test_server_refuses_stranger(cluster: tuple[list[Identity], Genesis]) -> None:
    (_, b, _), genesis = cluster
    stranger = identity.generate("mallory")
    client, server = pair(stranger, b, genesis)
    _, s = run_handshake(client, server, b)
    assert s.close is not None and s.close[0] is CloseCode.AUTH_FAILED
    assert "not a genesis validator" in s.close[1]
    assert s.authenticated is None


def test_server_refuses_forged_signature(cluster: tuple[list[Identity], Genesis]) -> None:
    (a, b, _), genesis = cluster
    # Mallory claims to be v1 but holds a different key.
    impostor = Identity("v1", identity.generate("v1").key, a.certificate)
    client, server = pair(impostor, b, genesis)
    _, s = run_handshake(client, server, b)
    assert s.close == (CloseCode.AUTH_FAILED, "v1: auth signature does not verify")
    assert server.state is State.CLOSED


def test_signature_for_another_server_is_refused(cluster: tuple[list[Identity], Genesis]) -> None:
    """A signature binds the server certificate: one made for v3 does not open v2."""
    (a, b, c), genesis = cluster
    client, server = pair(a, b, genesis)
    hello = client.handshake_completed(c.certificate_der, c.public_key_raw)  # dials "v2"...
    assert hello.close is not None  # ...and refuses v3's key outright
    # Make a client that believes v3's certificate is the server's, then replay to v2.
    client = PeerSession(Role.CLIENT, a, genesis, MAX, expected_peer="v3")
    hello = client.handshake_completed(c.certificate_der, c.public_key_raw)
    challenge = server.stream_data(hello.send, False)
    auth = client.stream_data(challenge.send, False)
    result = server.stream_data(auth.send, False)
    assert result.close is not None and result.close[0] is CloseCode.AUTH_FAILED


def test_server_refuses_node_claiming_its_own_name(cluster: tuple[list[Identity], Genesis]) -> None:
    (_, b, _), genesis = cluster
    server = PeerSession(Role.SERVER, b, genesis, MAX, nonce=os.urandom(32))
    actions = server.stream_data(encode_frame({"t": "hello", "v": 1, "name": "v2"}), False)
    assert actions.close is not None and "claims to be this node" in actions.close[1]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"t": "m", "b": {"x": 1}}, "unexpected frame type 'm'"),
        ({"t": "auth", "sig": b"x" * 64}, "unexpected frame type 'auth'"),
        ({"t": "hello", "v": 2, "name": "v1"}, "bad hello"),
        ({"t": "hello", "v": 1, "name": "v1", "extra": 1}, "bad hello"),
        ({"t": "hello", "v": 1, "name": 7}, "not a genesis validator"),
    ],
)
def test_server_refuses_out_of_order_or_malformed_handshake(
    cluster: tuple[list[Identity], Genesis], frame: dict[str, object], reason: str
) -> None:
    (_, b, _), genesis = cluster
    server = PeerSession(Role.SERVER, b, genesis, MAX, nonce=os.urandom(32))
    actions = server.stream_data(encode_frame(frame), False)
    assert actions.close is not None and reason in actions.close[1]
    assert actions.delivered == [] and actions.authenticated is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x01\xc1",  # malformed msgpack
        b"\xff\xff\xff\xff",  # oversized frame header
        encode_frame({"t": "m", "b": [1]}),  # message body is not a map
        encode_frame({"t": "m", "b": {}, "x": 1}),  # extra key
        encode_frame({"t": "nope"}),  # unknown frame type
    ],
)
def test_open_link_closes_on_bad_frame(
    cluster: tuple[list[Identity], Genesis], garbage: bytes
) -> None:
    (a, b, _), genesis = cluster
    client, server = pair(a, b, genesis)
    run_handshake(client, server, b)
    actions = server.stream_data(client.encode({"ok": 1}) + garbage, False)
    assert actions.delivered == [{"ok": 1}]  # what came before the bad frame is kept
    assert actions.close is not None and actions.close[0] is CloseCode.PROTOCOL_ERROR
    assert server.stream_data(client.encode({"late": 1}), False).delivered == []


def test_peer_ending_the_stream_closes_the_link(cluster: tuple[list[Identity], Genesis]) -> None:
    (a, b, _), genesis = cluster
    client, server = pair(a, b, genesis)
    run_handshake(client, server, b)
    actions = server.stream_data(b"", end_stream=True)
    assert actions.close == (CloseCode.PROTOCOL_ERROR, "peer ended the stream")


def test_decoder_limit_applies_to_sessions(cluster: tuple[list[Identity], Genesis]) -> None:
    (_, b, _), genesis = cluster
    server = PeerSession(Role.SERVER, b, genesis, 2048, nonce=os.urandom(32))
    assert isinstance(server._decoder, FrameDecoder)
    big = encode_frame({"t": "hello", "v": 1, "name": "x" * 4096})
    actions = server.stream_data(big, False)
    assert actions.close is not None and "exceeds the limit of 2048" in actions.close[1]
