"""A raw aioquic client (driven through node/quic.py) commits each DoQ protocol
violation in turn over real UDP on ::1 and sees the connection closed with the
right error code (RFC 9250 sections 4.3, 4.3.3); a misbehaving server shows the
same for our client.  After each, the server still answers a fresh client."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import dns.edns
import dns.flags
import dns.rcode
import pytest
import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from doqkit import RawClient, Tls, ask, query, raw_connect, start_server

from trustchain.dns.doq import DoqError, DoqLimits, frame
from trustchain.node import quic
from trustchain.node.config import Address
from trustchain.node.doq import DoqClient, DoqClientError, DoqSettings, client_configuration

LIMITS = DoqLimits(max_open_streams=4, max_query_bytes=512, stream_timeout=0.5)
SETTINGS = DoqSettings(limits=LIMITS, max_connections_per_address=3)


def wire(name: str = "host.example.test.", **kwargs: object) -> bytes:
    return query(name, **kwargs).to_wire()


async def nonzero_id(client: RawClient) -> None:
    message = query("host.example.test.")
    message.id = 4321
    client.send(client.new_stream(), frame(message.to_wire()), end_stream=True)


async def fin_before_whole_message(client: RawClient) -> None:
    body = wire()
    client.send(client.new_stream(), struct.pack("!H", len(body)) + body[:-5], end_stream=True)


async def fin_inside_length_prefix(client: RawClient) -> None:
    client.send(client.new_stream(), b"\x00", end_stream=True)


async def empty_stream_with_fin(client: RawClient) -> None:
    client.send(client.new_stream(), b"", end_stream=True)


async def two_messages_on_a_stream(client: RawClient) -> None:
    client.send(client.new_stream(), frame(wire()) + frame(wire()), end_stream=True)


async def missing_fin(client: RawClient) -> None:
    # The whole query, but the stream stays open past the server's stream_timeout.
    client.send(client.new_stream(), frame(wire()), end_stream=False)


async def edns_tcp_keepalive(client: RawClient) -> None:
    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")
    message = query("host.example.test.", use_edns=0, options=[keepalive])
    client.send(client.new_stream(), frame(message.to_wire()), end_stream=True)


async def unidirectional_stream(client: RawClient) -> None:
    client.send(client.new_stream(unidirectional=True), frame(wire()), end_stream=True)


async def response_sent_as_query(client: RawClient) -> None:
    message = query("host.example.test.")
    message.flags |= dns.flags.QR
    client.send(client.new_stream(), frame(message.to_wire()), end_stream=True)


async def length_shorter_than_header(client: RawClient) -> None:
    client.send(client.new_stream(), b"\x00\x05hello", end_stream=True)


async def query_over_size_limit(client: RawClient) -> None:
    padded = query("host.example.test.", use_edns=0, pad=600)
    assert len(padded.to_wire()) > LIMITS.max_query_bytes
    client.send(client.new_stream(), frame(padded.to_wire()), end_stream=True)


async def too_many_open_streams(client: RawClient) -> None:
    # Five queries started and none finished: one more than max_open_streams.
    for _ in range(LIMITS.max_open_streams + 1):
        client.send(client.new_stream(), frame(wire())[:5])


VIOLATIONS: dict[str, tuple[Callable[[RawClient], Awaitable[None]], DoqError]] = {
    "non-zero message ID": (nonzero_id, DoqError.PROTOCOL_ERROR),
    "FIN before the whole message": (fin_before_whole_message, DoqError.PROTOCOL_ERROR),
    "FIN inside the length prefix": (fin_inside_length_prefix, DoqError.PROTOCOL_ERROR),
    "FIN on an empty stream": (empty_stream_with_fin, DoqError.PROTOCOL_ERROR),
    "more than one message on a stream": (two_messages_on_a_stream, DoqError.PROTOCOL_ERROR),
    "missing FIN": (missing_fin, DoqError.PROTOCOL_ERROR),
    "edns-tcp-keepalive option": (edns_tcp_keepalive, DoqError.PROTOCOL_ERROR),
    "unidirectional stream": (unidirectional_stream, DoqError.PROTOCOL_ERROR),
    "response sent as a query": (response_sent_as_query, DoqError.PROTOCOL_ERROR),
    "length shorter than a DNS header": (length_shorter_than_header, DoqError.PROTOCOL_ERROR),
    "query over the size limit": (query_over_size_limit, DoqError.PROTOCOL_ERROR),
    "too many open streams": (too_many_open_streams, DoqError.EXCESSIVE_LOAD),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_violation_closes_connection(violation: str, tls: Tls, nursery: trio.Nursery) -> None:
    commit, code = VIOLATIONS[violation]
    server, port = await start_server(nursery, tls, settings=SETTINGS)
    client = await raw_connect(nursery, port, tls)
    # A well-formed query first: the connection works until the violation.
    ok = await client.response(client.send_query(query("host.example.test.")))
    assert ok.rcode() == dns.rcode.NOERROR

    await commit(client)
    closed = await client.wait_closed()
    assert closed.frame_type is None, f"an application close, not a transport one: {closed}"
    assert closed.error_code == code, closed
    assert closed.reason_phrase, "the reason phrase says what was wrong"

    # Only that connection is gone: the server answers a new client.
    fresh = await ask(port, tls, query("host.example.test."))
    assert fresh.rcode() == dns.rcode.NOERROR
    if code == DoqError.PROTOCOL_ERROR:
        assert server.stats.protocol_errors == 1


async def test_reset_before_fin_is_answered_with_reset(tls: Tls, nursery: trio.Nursery) -> None:
    _, port = await start_server(nursery, tls, settings=SETTINGS)
    client = await raw_connect(nursery, port, tls)
    stream_id = client.new_stream()
    client.send(stream_id, frame(wire())[:6])
    client.quic.reset_stream(stream_id, DoqError.REQUEST_CANCELLED)
    assert client.link is not None
    client.link.wake()
    with trio.fail_after(5):
        await client.stream_done(stream_id).wait()
    # RFC 9250 section 4.3.1: the server abandons the transaction and says so.
    assert client.resets[stream_id] == DoqError.REQUEST_CANCELLED
    assert stream_id not in client.data
    # The connection itself is fine.
    after = await client.response(client.send_query(query("host.example.test.")))
    assert after.rcode() == dns.rcode.NOERROR and not client.closed.is_set()


async def test_connections_per_address_limit(tls: Tls, nursery: trio.Nursery) -> None:
    server, port = await start_server(nursery, tls, settings=SETTINGS)
    allowed = [await raw_connect(nursery, port, tls) for _ in range(3)]
    extra = await raw_connect(nursery, port, tls)
    closed = await extra.wait_closed()
    assert closed.error_code == DoqError.EXCESSIVE_LOAD and closed.frame_type is None
    for client in allowed:
        response = await client.response(client.send_query(query("host.example.test.")))
        assert response.rcode() == dns.rcode.NOERROR
    assert server.stats.refused == 1
    # A slot frees as soon as the server hears a connection close: not after the
    # 3 PTOs of draining (long under load), nor when the refused one goes.
    assert allowed[0].link is not None
    allowed[0].link.close(DoqError.NO_ERROR, "done")
    with trio.fail_after(5):
        while server.established("::1") > 2:
            await trio.sleep(0.01)
    assert server.connections >= 3, "the closed connections are still draining"
    again = await raw_connect(nursery, port, tls)
    response = await again.response(again.send_query(query("host.example.test.")))
    assert response.rcode() == dns.rcode.NOERROR


async def test_wrong_alpn_is_refused_in_the_handshake(tls: Tls, nursery: trio.Nursery) -> None:
    _, port = await start_server(nursery, tls)
    # "doq-i03" is what pre-RFC drafts used (and aioquic's old example server).
    client = await raw_connect(nursery, port, tls, alpn=["doq-i03"], wait=False)
    closed = await client.wait_closed()
    assert closed.error_code == 0x100 + 120, "TLS alert no_application_protocol (RFC 9001 8.1)"
    assert client.alpn is None


async def test_idle_connections_time_out(tls: Tls, nursery: trio.Nursery) -> None:
    server, port = await start_server(nursery, tls, settings=DoqSettings(idle_timeout=0.5))
    client = await raw_connect(nursery, port, tls)
    await client.response(client.send_query(query("host.example.test.")))
    closed = await client.wait_closed()
    assert "idle" in closed.reason_phrase.lower()
    with trio.fail_after(5):
        while server.connections:
            await trio.sleep(0.05)


# --- a misbehaving server, and our client ---------------------------------------------------


class RogueServer:
    """Answers the first query by breaking one rule; records how the client closed."""

    def __init__(self, misdeed: str) -> None:
        self.misdeed = misdeed
        self.terminated: events.ConnectionTerminated | None = None
        self.closed = trio.Event()

    def quic_event(self, link: quic.QuicLink, event: events.QuicEvent) -> None:
        connection = link.quic
        if isinstance(event, events.StreamDataReceived) and event.end_stream:
            reply = query("host.example.test.")
            reply.flags |= dns.flags.QR
            if self.misdeed == "server-initiated stream":
                connection.send_stream_data(
                    connection.get_next_available_stream_id(), frame(reply.to_wire()), True
                )
            elif self.misdeed == "server unidirectional stream":
                uni = connection.get_next_available_stream_id(is_unidirectional=True)
                connection.send_stream_data(uni, frame(reply.to_wire()), True)
            elif self.misdeed == "non-zero response ID":
                reply.id = 99
                connection.send_stream_data(event.stream_id, frame(reply.to_wire()), True)
            elif self.misdeed == "two responses":
                body = frame(reply.to_wire())
                connection.send_stream_data(event.stream_id, body + body, True)
            elif self.misdeed == "STOP_SENDING":
                connection.stop_stream(event.stream_id, DoqError.NO_ERROR)
            elif self.misdeed == "FIN before the whole response":
                connection.send_stream_data(event.stream_id, frame(reply.to_wire())[:-3], True)
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event

    def link_closed(self, link: quic.QuicLink) -> None:
        self.terminated = self.terminated or link.close_reason
        self.closed.set()


@pytest.mark.parametrize(
    "misdeed",
    [
        "server-initiated stream",
        "server unidirectional stream",
        "non-zero response ID",
        "two responses",
        "STOP_SENDING",
        "FIN before the whole response",
    ],
)
async def test_client_closes_on_server_violation(
    misdeed: str, tls: Tls, nursery: trio.Nursery
) -> None:
    rogue = RogueServer(misdeed)
    configuration = QuicConfiguration(is_client=False, alpn_protocols=["doq"])
    configuration.load_cert_chain(tls.certificate, tls.key)
    server = quic.QuicServer(configuration, lambda link: rogue)
    bound = await nursery.start(server.serve, Address("::1", 0))
    client = await DoqClient.connect(
        Address("::1", bound[1]), nursery, client_configuration(cafile=tls.certificate)
    )
    with pytest.raises(DoqClientError) as failure:
        await client.query(query("host.example.test."))
    assert "PROTOCOL" in str(failure.value) or "RFC 9250" in str(failure.value)
    with trio.fail_after(5):
        await rogue.closed.wait()
    assert rogue.terminated is not None
    assert rogue.terminated.error_code == DoqError.PROTOCOL_ERROR, rogue.terminated
    assert rogue.terminated.frame_type is None
