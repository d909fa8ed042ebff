"""The sans-IO DoQ cores alone: QUIC events in, explicit `now`, Output checked."""

from __future__ import annotations

import struct

import dns.message
import pytest
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from doqkit import query

from trustchain.dns.doq import (
    CloseConnection,
    DoqClientProtocol,
    DoqError,
    DoqLimits,
    DoqServerProtocol,
    Output,
    QueryFailed,
    QueryReceived,
    ResetStream,
    ResponseReceived,
    SendData,
    StopSending,
    error_name,
    frame,
)

QUERY = frame(query("host.example.test.").to_wire())


def data(stream_id: int, payload: bytes, fin: bool = False) -> StreamDataReceived:
    return StreamDataReceived(data=payload, end_stream=fin, stream_id=stream_id)


def closed_with(output: Output) -> tuple[int, str]:
    (action,) = output.actions
    assert isinstance(action, CloseConnection), output
    return action.error_code, action.reason


def test_query_in_pieces_then_answer() -> None:
    core = DoqServerProtocol()
    # Byte by byte, FIN in a frame of its own: framing does not care.
    for i in range(len(QUERY)):
        assert core.receive(data(0, QUERY[i : i + 1]), now=0.0) == Output()
    assert core.open_streams == 1
    out = core.receive(data(0, b"", fin=True), now=0.1)
    (event,) = out.events
    assert isinstance(event, QueryReceived) and event.stream_id == 0
    assert (
        event.message is not None and event.message.question == query("host.example.test.").question
    )
    reply = dns.message.make_response(event.message).to_wire()
    (send,) = core.respond(0, reply).actions
    assert send == SendData(0, struct.pack("!H", len(reply)) + reply, True)
    assert core.open_streams == 0
    assert core.respond(0, reply) == Output(), "one answer per stream"


def test_unparseable_query_is_handed_over_for_formerr() -> None:
    core = DoqServerProtocol()
    garbage = b"\x00\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07broken"
    (event,) = core.receive(data(0, frame(garbage), fin=True), now=0).events
    assert isinstance(event, QueryReceived) and event.message is None and event.problem


@pytest.mark.parametrize(
    ("events", "fragment"),
    [
        ([data(0, frame(b"\x00\x07" + bytes(10)), fin=True)], "message ID is 7"),
        ([data(0, QUERY[:-1], fin=True)], "STREAM FIN after"),
        ([data(0, QUERY + QUERY[:3])], "more than one query"),
        ([data(2, QUERY, fin=True)], "client-initiated unidirectional"),
        ([data(1, QUERY, fin=True)], "server-initiated bidirectional"),
        ([data(3, QUERY, fin=True)], "server-initiated unidirectional"),
        ([data(0, b"\x00\x04abcd", fin=True)], "shorter than a DNS header"),
        ([data(0, b"\x20\x00")], "exceeds the limit of 4096"),
    ],
)
def test_protocol_errors(events: list[StreamDataReceived], fragment: str) -> None:
    core = DoqServerProtocol()
    outputs = [core.receive(event, now=0) for event in events]
    code, reason = closed_with(outputs[-1])
    assert code == DoqError.PROTOCOL_ERROR and fragment in reason
    assert core.closed and core.close_code == DoqError.PROTOCOL_ERROR
    # A closed core ignores everything.
    assert core.receive(data(4, QUERY, fin=True), now=0) == Output()
    assert core.timer() is None


def test_nonzero_id_is_caught_before_the_message_is_complete() -> None:
    core = DoqServerProtocol()
    code, reason = closed_with(core.receive(data(0, b"\x00\x20\x00\x01"), now=0))
    assert code == DoqError.PROTOCOL_ERROR and "message ID is 1" in reason


def test_keepalive_option_is_a_protocol_error() -> None:
    import dns.edns

    keepalive = dns.edns.GenericOption(dns.edns.OptionType.KEEPALIVE, b"")
    message = query("host.example.test.", use_edns=0, options=[keepalive])
    code, reason = closed_with(
        DoqServerProtocol().receive(data(0, frame(message.to_wire()), fin=True), now=0)
    )
    assert code == DoqError.PROTOCOL_ERROR and "keepalive" in reason


def test_missing_fin_times_out_at_the_deadline() -> None:
    core = DoqServerProtocol(DoqLimits(stream_timeout=2.0))
    core.receive(data(0, QUERY), now=10.0)
    assert core.timer() == 12.0
    assert core.handle_timer(11.9) == Output()
    code, reason = closed_with(core.handle_timer(12.0))
    assert code == DoqError.PROTOCOL_ERROR and "without FIN" in reason


def test_incomplete_query_times_out_too() -> None:
    core = DoqServerProtocol(DoqLimits(stream_timeout=1.0))
    core.receive(data(0, QUERY[:5]), now=0.0)
    code, reason = closed_with(core.handle_timer(1.0))
    assert code == DoqError.PROTOCOL_ERROR and "incomplete" in reason


def test_answered_streams_have_no_timer() -> None:
    core = DoqServerProtocol()
    core.receive(data(0, QUERY, fin=True), now=0.0)
    assert core.timer() is None, "an answer in progress is the application's business"


def test_open_stream_limit_is_excessive_load() -> None:
    core = DoqServerProtocol(DoqLimits(max_open_streams=2))
    core.receive(data(0, QUERY[:3]), now=0)
    core.receive(data(4, QUERY[:3]), now=0)
    code, reason = closed_with(core.receive(data(8, QUERY[:3]), now=0))
    assert code == DoqError.EXCESSIVE_LOAD and "more than 2" in reason


def test_finished_streams_free_their_slot() -> None:
    core = DoqServerProtocol(DoqLimits(max_open_streams=1))
    for stream_id in range(0, 40, 4):
        (event,) = core.receive(data(stream_id, QUERY, fin=True), now=0).events
        assert isinstance(event, QueryReceived)
        core.respond(stream_id, dns.message.make_response(event.message).to_wire())
    assert not core.closed


def test_reset_before_fin_abandons_and_resets_back() -> None:
    core = DoqServerProtocol()
    core.receive(data(0, QUERY[:5]), now=0)
    out = core.receive(StreamReset(error_code=DoqError.REQUEST_CANCELLED, stream_id=0), now=0)
    assert out.actions == (ResetStream(0, DoqError.REQUEST_CANCELLED),)
    assert core.open_streams == 0 and core.timer() is None


def test_reset_of_a_stream_that_never_carried_data_is_reset_back() -> None:
    core = DoqServerProtocol()
    out = core.receive(StreamReset(error_code=DoqError.REQUEST_CANCELLED, stream_id=8), now=0)
    assert out.actions == (ResetStream(8, DoqError.REQUEST_CANCELLED),)
    # 0 and 4 were opened implicitly; their data may still come.
    assert isinstance(core.receive(data(4, QUERY, fin=True), now=0).events[0], QueryReceived)
    again = core.receive(StreamReset(error_code=0, stream_id=8), now=0)
    assert again == Output(), "one reset per stream"


def test_reset_after_fin_keeps_the_query() -> None:
    core = DoqServerProtocol()
    (event,) = core.receive(data(0, QUERY, fin=True), now=0).events
    assert core.receive(StreamReset(error_code=3, stream_id=0), now=0) == Output()
    assert isinstance(event, QueryReceived) and event.message is not None
    assert core.respond(0, dns.message.make_response(event.message).to_wire()).actions


def test_stop_sending_means_no_answer() -> None:
    core = DoqServerProtocol()
    (event,) = core.receive(data(0, QUERY, fin=True), now=0).events
    core.receive(StopSendingReceived(error_code=DoqError.REQUEST_CANCELLED, stream_id=0), now=0)
    assert isinstance(event, QueryReceived) and event.message is not None
    assert core.respond(0, dns.message.make_response(event.message).to_wire()) == Output()

    # Before the query is complete: the rest is still read, then dropped.
    core.receive(data(4, QUERY[:4]), now=0)
    core.receive(StopSendingReceived(error_code=DoqError.REQUEST_CANCELLED, stream_id=4), now=0)
    assert core.receive(data(4, QUERY[4:], fin=True), now=0) == Output()
    assert core.open_streams == 0


def test_bad_response_from_the_application_becomes_internal_error() -> None:
    core = DoqServerProtocol()
    core.receive(data(0, QUERY, fin=True), now=0)
    out = core.respond(0, b"\x00\x09" + bytes(10))
    assert out.actions == (ResetStream(0, DoqError.INTERNAL_ERROR),)
    core.receive(data(4, QUERY, fin=True), now=0)
    assert core.fail(4).actions == (ResetStream(4, DoqError.INTERNAL_ERROR),)


def test_other_events_change_nothing() -> None:
    core = DoqServerProtocol()
    event = HandshakeCompleted(
        alpn_protocol="doq", early_data_accepted=False, session_resumed=False
    )
    assert core.receive(event, now=0) == Output()
    core.receive(ConnectionTerminated(error_code=0, frame_type=None, reason_phrase=""), now=0)
    assert core.closed and core.close_code is None


def test_error_names() -> None:
    assert error_name(2) == "DOQ_PROTOCOL_ERROR"
    assert error_name(0xD098EA5E) == "DOQ_ERROR_RESERVED"
    assert "DOQ_UNSPECIFIED_ERROR" in error_name(0x77), "RFC 9250 section 4.3.4"


# --- client ---------------------------------------------------------------------------------


def response_bytes(message_id: int = 0) -> bytes:
    reply = dns.message.make_response(query("host.example.test."))
    reply.id = message_id
    return reply.to_wire()


def test_client_round_trip() -> None:
    client = DoqClientProtocol()
    wire = query("host.example.test.").to_wire()
    (send,) = client.send_query(0, wire, now=0).actions
    assert send == SendData(0, frame(wire), True), "query, length prefix, FIN"
    (event,) = client.receive(data(0, frame(response_bytes()), fin=True), now=0).events
    assert isinstance(event, ResponseReceived) and event.stream_id == 0
    assert client.pending == 0


def test_client_refuses_to_send_what_the_rfc_forbids() -> None:
    client = DoqClientProtocol()
    message = query("host.example.test.")
    message.id = 5
    with pytest.raises(ValueError, match="message ID 0"):
        client.send_query(0, message.to_wire(), now=0)
    with pytest.raises(ValueError, match="fresh client bidirectional"):
        client.send_query(2, query("x.").to_wire(), now=0)


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        (data(1, frame(response_bytes()), fin=True), "server opened"),
        (data(3, frame(response_bytes()), fin=True), "server opened"),
        (data(0, frame(response_bytes(9)), fin=True), "message ID is 9"),
        (data(0, frame(response_bytes()) * 2, fin=True), "more than one response"),
        (data(0, frame(response_bytes())[:-1], fin=True), "STREAM FIN after"),
        (StopSendingReceived(error_code=0, stream_id=0), "STOP_SENDING"),
    ],
)
def test_client_protocol_errors(event: object, fragment: str) -> None:
    client = DoqClientProtocol()
    client.send_query(0, query("host.example.test.").to_wire(), now=0)
    out = client.receive(event, now=0)  # type: ignore[arg-type]
    (close,) = out.actions
    assert isinstance(close, CloseConnection) and close.error_code == DoqError.PROTOCOL_ERROR
    assert fragment in close.reason
    (failed,) = out.events
    assert isinstance(failed, QueryFailed) and failed.stream_id == 0


def test_client_missing_fin_times_out() -> None:
    client = DoqClientProtocol(fin_timeout=1.0)
    client.send_query(0, query("host.example.test.").to_wire(), now=0)
    client.receive(data(0, frame(response_bytes())), now=5.0)
    assert client.timer() == 6.0
    (close,) = client.handle_timer(6.0).actions
    assert isinstance(close, CloseConnection) and "without FIN" in close.reason


def test_client_cancel_and_server_reset() -> None:
    client = DoqClientProtocol()
    client.send_query(0, query("a.").to_wire(), now=0)
    client.send_query(4, query("b.").to_wire(), now=0)
    assert client.cancel(0).actions == (StopSending(0, DoqError.REQUEST_CANCELLED),)
    (failed,) = client.receive(StreamReset(error_code=1, stream_id=4), now=0).events
    assert isinstance(failed, QueryFailed) and failed.error_code == DoqError.INTERNAL_ERROR
    assert "DOQ_INTERNAL_ERROR" in failed.reason


def test_client_connection_loss_fails_every_query() -> None:
    client = DoqClientProtocol()
    for stream_id in (0, 4, 8):
        client.send_query(stream_id, query("a.").to_wire(), now=0)
    out = client.receive(
        ConnectionTerminated(error_code=4, frame_type=None, reason_phrase="busy"), now=0
    )
    assert sorted(e.stream_id for e in out.events) == [0, 4, 8]
    assert all(isinstance(e, QueryFailed) and e.error_code == 4 for e in out.events)
    assert "DOQ_EXCESSIVE_LOAD" in out.events[0].reason  # type: ignore[union-attr]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_open_streams"):
        DoqLimits(max_open_streams=0)
    with pytest.raises(ValueError, match="max_query_bytes"):
        DoqLimits(max_query_bytes=70000)
    with pytest.raises(ValueError, match="stream_timeout"):
        DoqLimits(stream_timeout=0)
