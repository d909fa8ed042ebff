"""DNS over QUIC (RFC 9250): the stream protocol of one connection, sans-IO.

Everything that decides what happens on a DoQ connection lives in this
module: framing, the per-stream state machine, the protocol-error rules of
RFC 9250 section 4.3.3 and the limits.  The cores take aioquic's QUIC events
(`aioquic.quic.events`, plain dataclasses) with an explicit `now`, and return
an `Output`.  They never touch a socket, a clock or the QuicConnection: the
driver (trustchain.node.doq) carries out the output.

Output order (stated once, here): carry out `Output.actions` first, in order,
on the QUIC connection, then hand `Output.events` to the application.  After
a `CloseConnection` action the core is closed and ignores all further input.

Server side (`DoqServerProtocol`), per client-initiated bidirectional stream::

    RECEIVING --(whole message + FIN)--> ANSWERING --respond()/fail()--> done
        |                                     |
        +-- RESET_STREAM from client: RESET_STREAM(DOQ_REQUEST_CANCELLED), done
        +-- STOP_SENDING from client: done, no answer (RFC 9250 section 4.3.1)

Protocol errors close the connection with DOQ_PROTOCOL_ERROR (RFC 9250
section 4.3.3): a message ID other than 0, a STREAM FIN before the whole
message, bytes after the first message, no FIN within `DoqLimits.stream_timeout`,
the edns-tcp-keepalive option (RFC 9250 section 5.5.2), a unidirectional
stream, a server-initiated stream; and here also a declared length shorter
than a DNS header or longer than `DoqLimits.max_query_bytes`, and a response
(QR set) sent as a query.  Too many open query streams closes with
DOQ_EXCESSIVE_LOAD.

0-RTT: queries arriving in 0-RTT data are answered like any other.  RFC 9250
section 4.5 forbids processing non-replayable transactions early; every
transaction this server handles (QUERY answered, other opcodes NOTIMP) changes
nothing, so all of them are replayable.

The client side (`DoqClientProtocol`) applies the same rules to responses,
plus a client's own (STOP_SENDING from the server, a server-initiated stream).
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.message
from aioquic.quic import events as quic_events
from aioquic.tls import AlertDescription

ALPN = "doq"
"""RFC 9250 section 4.1."""
DEFAULT_PORT = 8853
"""This deployment's DoQ port (RFC 9250 section 4.1.1 says 853 unless agreed otherwise)."""
MAX_MESSAGE = 65535
"""The 2-octet length field bounds every DoQ message (RFC 9250 section 4.6)."""
HEADER = 12
"""Octets in a DNS header (RFC 1035 section 4.1.1)."""
_QR = 0x8000


class DoqError(enum.IntEnum):
    """Application error codes of RFC 9250 section 4.3."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    PROTOCOL_ERROR = 0x2
    REQUEST_CANCELLED = 0x3
    EXCESSIVE_LOAD = 0x4
    UNSPECIFIED_ERROR = 0x5
    ERROR_RESERVED = 0xD098EA5E


def error_name(code: int) -> str:
    """``DOQ_PROTOCOL_ERROR`` for 2; unknown codes count as DOQ_UNSPECIFIED_ERROR
    (RFC 9250 section 4.3.4) but keep their number in the name."""
    try:
        return f"DOQ_{DoqError(code).name}"
    except ValueError:
        return f"0x{code:x} (unknown, treated as DOQ_UNSPECIFIED_ERROR)"


def describe_termination(event: quic_events.ConnectionTerminated) -> str:
    """Say why a connection ended, decoding DoQ codes and TLS alerts."""
    code = event.error_code
    if event.frame_type is None:
        what = error_name(code)
    elif 0x100 <= code <= 0x1FF:
        # RFC 9001 section 4.8: CRYPTO_ERROR carries the TLS alert.
        try:
            alert = AlertDescription(code - 0x100).name
        except ValueError:
            alert = "unknown"
        what = f"TLS alert {code - 0x100} ({alert})"
    else:
        what = f"QUIC transport error 0x{code:x}"
    reason = f" ({event.reason_phrase})" if event.reason_phrase else ""
    return f"connection closed: {what}{reason}"


@dataclass(frozen=True)
class DoqLimits:
    """Per-connection limits of the server core (the driver adds connection limits)."""

    max_open_streams: int = 64
    """Query streams open at once (first byte seen, not yet answered); one more
    closes the connection with DOQ_EXCESSIVE_LOAD.  QUIC's own stream credit
    (aioquic grants 128) caps what a client can even try."""
    max_query_bytes: int = 4096
    """Largest query accepted; a query is a question plus EDNS options, and 4096
    leaves room for TSIG and padding.  A longer declared length is a protocol error."""
    stream_timeout: float = 5.0
    """Seconds from a stream's first byte to its FIN; later is a protocol error
    (the "missing FIN" / dangling-stream rule of RFC 9250 sections 4.2, 4.3.3)."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_open_streams <= 1_000_000:
            raise ValueError(f"max_open_streams {self.max_open_streams} is out of 1..1000000")
        if not HEADER <= self.max_query_bytes <= MAX_MESSAGE:
            raise ValueError(
                f"max_query_bytes {self.max_query_bytes} is out of {HEADER}..{MAX_MESSAGE}"
            )
        if not 0 < self.stream_timeout <= 3600:
            raise ValueError(f"stream_timeout {self.stream_timeout} is out of (0, 3600] seconds")


# --- output --------------------------------------------------------------------------


@dataclass(frozen=True)
class SendData:
    """Write `data` on a stream."""

    stream_id: int
    """The stream."""
    data: bytes
    """Bytes to send (already framed)."""
    end_stream: bool
    """Send FIN after them."""


@dataclass(frozen=True)
class ResetStream:
    """Abruptly end the sending side of a stream (QUIC RESET_STREAM)."""

    stream_id: int
    """The stream."""
    error_code: int
    """A DoqError."""


@dataclass(frozen=True)
class StopSending:
    """Ask the peer to stop sending on a stream (QUIC STOP_SENDING)."""

    stream_id: int
    """The stream."""
    error_code: int
    """A DoqError."""


@dataclass(frozen=True)
class CloseConnection:
    """Close the whole connection (QUIC CONNECTION_CLOSE, application error)."""

    error_code: int
    """A DoqError."""
    reason: str
    """Human-readable reason phrase sent to the peer."""


Action = SendData | ResetStream | StopSending | CloseConnection


@dataclass(frozen=True)
class QueryReceived:
    """A complete query arrived (server side); answer it with `respond` or `fail`."""

    stream_id: int
    """The stream to answer on."""
    wire: bytes
    """The query as received, without the length prefix."""
    message: dns.message.Message | None
    """The parsed query, shared and read-only; None if dnspython could not parse
    it, in which case the answer is FORMERR (`problem` says why)."""
    problem: str = ""
    """Why parsing failed, when `message` is None."""


@dataclass(frozen=True)
class ResponseReceived:
    """A complete response arrived (client side)."""

    stream_id: int
    """The query's stream."""
    wire: bytes
    """The response without the length prefix."""
    message: dns.message.Message
    """The parsed response, shared with identical responses and read-only."""


@dataclass(frozen=True)
class QueryFailed:
    """A query will get no response (client side)."""

    stream_id: int
    """The query's stream."""
    error_code: int | None
    """The DoqError the server reset the stream or closed the connection with, if any."""
    reason: str
    """What happened."""


Event = QueryReceived | ResponseReceived | QueryFailed


@dataclass(frozen=True)
class Output:
    """What one input produced.  Carry out `actions` in order, then deliver `events`."""

    actions: tuple[Action, ...] = ()
    """Operations on the QUIC connection."""
    events: tuple[Event, ...] = ()
    """Things for the application."""


_NOTHING = Output()


# --- message parsing (shared between connections) ------------------------------------------


class MessageParser:
    """Parses DNS messages, remembering recent ones by their bytes.

    DoQ messages all carry ID 0, so the same question from any client is the
    same bytes, and so is the same answer from an unchanged zone; parsing each
    once saves most of the per-message cost of dnspython.  Cached messages are
    shared: nobody may modify them.  Messages over 4096 octets are not kept.
    """

    def __init__(self, size: int = 4096) -> None:
        self._cache: OrderedDict[bytes, dns.message.Message] = OrderedDict()
        self._size = size

    def parse(self, wire: bytes) -> dns.message.Message:
        """Parse `wire`; raises dns.exception.DNSException (or ValueError) when malformed."""
        message = self._cache.get(wire)
        if message is not None:
            return message
        message = dns.message.from_wire(wire)
        if len(wire) <= 4096:
            self._cache[wire] = message
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return message


def has_keepalive(message: dns.message.Message) -> bool:
    """The message carries edns-tcp-keepalive (RFC 7828), forbidden on DoQ."""
    return any(option.otype == dns.edns.OptionType.KEEPALIVE for option in message.options)


def frame(wire: bytes) -> bytes:
    """Prefix a message with its 2-octet length (RFC 9250 section 4.2)."""
    if len(wire) > MAX_MESSAGE:
        raise ValueError(f"a DoQ message is at most {MAX_MESSAGE} octets, this one {len(wire)}")
    return struct.pack("!H", len(wire)) + wire


def _client_bidi(stream_id: int) -> bool:
    return stream_id % 4 == 0


def _stream_kind(stream_id: int) -> str:
    initiator = "server-initiated" if stream_id & 1 else "client-initiated"
    direction = "unidirectional" if stream_id & 2 else "bidirectional"
    return f"{initiator} {direction} stream {stream_id}"


class _Violation(Exception):
    """Raised inside a core to close the connection with `code`."""

    def __init__(self, reason: str, code: DoqError = DoqError.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass
class _Reader:
    """Collects one length-prefixed message from a stream and checks its framing.

    Owned by the core whose stream it is; `feed` raises _Violation.
    """

    limit: int
    what: str
    """"query" or "response", for messages."""
    opened: float
    buffer: bytearray = field(default_factory=bytearray)
    length: int | None = None
    fin: bool = False
    cancelled: bool = False
    """The peer sent STOP_SENDING: keep checking the framing, but answer nothing."""

    @property
    def complete(self) -> bool:
        return self.length is not None and len(self.buffer) == 2 + self.length

    def feed(self, data: bytes, end_stream: bool) -> None:
        self.buffer += data
        if self.length is None and len(self.buffer) >= 2:
            (length,) = struct.unpack_from("!H", self.buffer)
            if length < HEADER:
                raise _Violation(f"{self.what} length {length} is shorter than a DNS header")
            if length > self.limit:
                raise _Violation(f"{self.what} length {length} exceeds the limit of {self.limit}")
            self.length = length
        if self.length is not None:
            if len(self.buffer) > 2 + self.length:
                raise _Violation(f"more than one {self.what} on a stream (RFC 9250 section 4.2)")
            if len(self.buffer) >= 4:
                (message_id,) = struct.unpack_from("!H", self.buffer, 2)
                if message_id != 0:
                    raise _Violation(
                        f"{self.what} message ID is {message_id}, not 0 (RFC 9250 section 4.2.1)"
                    )
        if end_stream:
            self.fin = True
            if not self.complete:
                have = max(0, len(self.buffer) - 2)
                want = "?" if self.length is None else str(self.length)
                raise _Violation(
                    f"STREAM FIN after {have} of {want} {self.what} octets (RFC 9250 section 4.3.3)"
                )

    @property
    def wire(self) -> bytes:
        return bytes(self.buffer[2:])


class _Answering:
    """A server stream whose query is with the application."""

    __slots__ = ()


_ANSWERING = _Answering()


class DoqServerProtocol:
    """The server side of one DoQ connection."""

    def __init__(
        self, limits: DoqLimits | None = None, parser: MessageParser | None = None
    ) -> None:
        self.limits = limits or DoqLimits()
        self.parser = parser or MessageParser()
        self.closed = False
        self.close_code: int | None = None
        """The DoqError this core closed the connection with, if it did."""
        self.close_reason = ""
        # stream id -> its reader while receiving, or _ANSWERING.  Owned here.
        self._streams: dict[int, _Reader | _Answering] = {}
        # Which client streams were ever opened: all up to _highest except those
        # in _unseen (QUIC opens lower-numbered streams implicitly, RFC 9000
        # section 2.1, so an id can be skipped and its data arrive later).  A
        # reset of a stream never seen still needs our RESET_STREAM in reply.
        self._highest = -4
        self._unseen: set[int] = set()
        self.queries = 0
        """Queries handed to the application so far."""

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def receive(self, event: quic_events.QuicEvent, now: float) -> Output:
        """Take one QUIC event."""
        if self.closed:
            return _NOTHING
        try:
            if isinstance(event, quic_events.StreamDataReceived):
                return self._data(event, now)
            if isinstance(event, quic_events.StreamReset):
                return self._reset(event)
            if isinstance(event, quic_events.StopSendingReceived):
                # aioquic has already reset our sending side with the client's code
                # (RFC 9000 section 3.5); the transaction is abandoned (RFC 9250
                # section 4.3.1), though the query stream must still end properly.
                state = self._streams.get(event.stream_id)
                if isinstance(state, _Reader):
                    state.cancelled = True
                elif state is not None:
                    del self._streams[event.stream_id]
                return _NOTHING
            if isinstance(event, quic_events.ConnectionTerminated):
                self.closed = True
                self._streams.clear()
        except _Violation as violation:
            return self._close(violation.code, violation.reason)
        return _NOTHING

    def _data(self, event: quic_events.StreamDataReceived, now: float) -> Output:
        stream_id = event.stream_id
        if not _client_bidi(stream_id):
            # RFC 9250 section 4.3.3: only client-initiated bidirectional streams.
            raise _Violation(f"data on a {_stream_kind(stream_id)}; DoQ uses client bidi streams")
        state = self._streams.get(stream_id)
        if state is None:
            if not self._first_sight(stream_id):
                raise _Violation(f"data on stream {stream_id} after it ended")
            if len(self._streams) >= self.limits.max_open_streams:
                raise _Violation(
                    f"more than {self.limits.max_open_streams} queries open on one connection",
                    DoqError.EXCESSIVE_LOAD,
                )
            state = self._streams[stream_id] = _Reader(self.limits.max_query_bytes, "query", now)
        elif not isinstance(state, _Reader):
            # QUIC enforces the final size, so nothing can follow a FIN; an empty
            # frame repeating the FIN is harmless.
            if event.data:
                raise _Violation(f"data after FIN on stream {stream_id}")
            return _NOTHING
        state.feed(event.data, event.end_stream)
        if not state.fin:
            return _NOTHING
        if state.cancelled:
            del self._streams[stream_id]
            return _NOTHING
        return Output(events=(self._complete(stream_id, state.wire),))

    def _first_sight(self, stream_id: int) -> bool:
        """Record that `stream_id` is in use; False if it was in use before."""
        if stream_id > self._highest:
            # Skipped ids are bounded by the stream credit QUIC gives the client.
            self._unseen.update(range(self._highest + 4, stream_id, 4))
            self._highest = stream_id
            return True
        if stream_id in self._unseen:
            self._unseen.discard(stream_id)
            return True
        return False

    def _complete(self, stream_id: int, wire: bytes) -> QueryReceived:
        (flags,) = struct.unpack_from("!H", wire, 2)
        if flags & _QR:
            raise _Violation("a response (QR set) was sent as a query")
        try:
            message = self.parser.parse(wire)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
            self._streams[stream_id] = _ANSWERING
            self.queries += 1
            return QueryReceived(stream_id, wire, None, f"{type(exc).__name__}: {exc}")
        if has_keepalive(message):
            raise _Violation("query carries edns-tcp-keepalive (RFC 9250 section 5.5.2)")
        self._streams[stream_id] = _ANSWERING
        self.queries += 1
        return QueryReceived(stream_id, wire, message)

    def _reset(self, event: quic_events.StreamReset) -> Output:
        stream_id = event.stream_id
        state = self._streams.get(stream_id)
        if isinstance(state, _Reader):
            del self._streams[stream_id]
        elif state is not None or not _client_bidi(stream_id) or not self._first_sight(stream_id):
            # After FIN the query stands and is answered (or was already).
            return _NOTHING
        # RFC 9250 section 4.3.1: a reset before FIN abandons the transaction,
        # and the server says so with its own RESET_STREAM.
        return Output(actions=(ResetStream(stream_id, DoqError.REQUEST_CANCELLED),))

    def respond(self, stream_id: int, wire: bytes) -> Output:
        """Send the response to a QueryReceived; a no-op if the client cancelled meanwhile."""
        if self.closed or not isinstance(self._streams.get(stream_id), _Answering):
            return _NOTHING
        del self._streams[stream_id]
        if len(wire) < HEADER or wire[:2] != b"\x00\x00" or len(wire) > MAX_MESSAGE:
            # Our own answering produced something unsendable: RFC 9250 4.3.2.
            return Output(actions=(ResetStream(stream_id, DoqError.INTERNAL_ERROR),))
        return Output(actions=(SendData(stream_id, frame(wire), True),))

    def fail(self, stream_id: int) -> Output:
        """No response can be produced: reset with DOQ_INTERNAL_ERROR (RFC 9250 section 4.3.2)."""
        if self.closed or self._streams.pop(stream_id, None) is None:
            return _NOTHING
        return Output(actions=(ResetStream(stream_id, DoqError.INTERNAL_ERROR),))

    def close(self, code: DoqError, reason: str) -> Output:
        """Close on the application's behalf (e.g. DOQ_EXCESSIVE_LOAD, DOQ_NO_ERROR)."""
        if self.closed:
            return _NOTHING
        return self._close(code, reason)

    def _close(self, code: DoqError, reason: str) -> Output:
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        self._streams.clear()
        return Output(actions=(CloseConnection(code, reason),))

    def timer(self) -> float | None:
        """When `handle_timer` must next run, or None."""
        deadlines = [s.opened for s in self._streams.values() if isinstance(s, _Reader)]
        if not deadlines or self.closed:
            return None
        return min(deadlines) + self.limits.stream_timeout

    def handle_timer(self, now: float) -> Output:
        if self.closed:
            return _NOTHING
        for stream_id, state in self._streams.items():
            if isinstance(state, _Reader) and now >= state.opened + self.limits.stream_timeout:
                what = "without FIN" if state.complete else "incomplete"
                return self._close(
                    DoqError.PROTOCOL_ERROR,
                    f"query on stream {stream_id} still {what} after "
                    f"{self.limits.stream_timeout:g} s (RFC 9250 section 4.3.3)",
                )
        return _NOTHING


class DoqClientProtocol:
    """The client side of one DoQ connection: many queries, one stream each."""

    def __init__(self, *, fin_timeout: float = 5.0, parser: MessageParser | None = None) -> None:
        self.fin_timeout = fin_timeout
        """Seconds a complete response may wait for its FIN."""
        self.parser = parser or MessageParser(size=1024)
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        # stream id -> reader of the response.  Owned here.
        self._streams: dict[int, _Reader] = {}
        self._completed_at: dict[int, float] = {}

    @property
    def pending(self) -> int:
        return len(self._streams)

    def send_query(self, stream_id: int, wire: bytes, now: float) -> Output:
        """Send one query on a fresh client-initiated bidirectional stream."""
        if self.closed:
            raise RuntimeError("the DoQ connection is closed")
        if not _client_bidi(stream_id) or stream_id in self._streams:
            raise ValueError(f"stream {stream_id} is not a fresh client bidirectional stream")
        if len(wire) < HEADER or wire[:2] != b"\x00\x00":
            raise ValueError("a DoQ query has a DNS header and message ID 0 (RFC 9250 4.2.1)")
        self._streams[stream_id] = _Reader(MAX_MESSAGE, "response", now)
        return Output(actions=(SendData(stream_id, frame(wire), True),))

    def cancel(self, stream_id: int) -> Output:
        """Abandon a query: STOP_SENDING with DOQ_REQUEST_CANCELLED (RFC 9250 section 4.3.1)."""
        if self.closed or self._streams.pop(stream_id, None) is None:
            return _NOTHING
        self._completed_at.pop(stream_id, None)
        return Output(actions=(StopSending(stream_id, DoqError.REQUEST_CANCELLED),))

    def receive(self, event: quic_events.QuicEvent, now: float) -> Output:
        if self.closed:
            return _NOTHING
        try:
            if isinstance(event, quic_events.StreamDataReceived):
                return self._data(event, now)
            if isinstance(event, quic_events.StreamReset):
                if self._streams.pop(event.stream_id, None) is None:
                    return _NOTHING
                self._completed_at.pop(event.stream_id, None)
                reason = f"the server reset the stream with {error_name(event.error_code)}"
                return Output(events=(QueryFailed(event.stream_id, event.error_code, reason),))
            if isinstance(event, quic_events.StopSendingReceived):
                raise _Violation(
                    f"STOP_SENDING from the server on stream {event.stream_id} "
                    "(RFC 9250 section 4.3.3)"
                )
            if isinstance(event, quic_events.ConnectionTerminated):
                self.closed = True
                return self._fail_all(event.error_code, describe_termination(event))
        except _Violation as violation:
            return self._close(violation.code, violation.reason)
        return _NOTHING

    def _data(self, event: quic_events.StreamDataReceived, now: float) -> Output:
        stream_id = event.stream_id
        if not _client_bidi(stream_id):
            raise _Violation(f"the server opened a {_stream_kind(stream_id)} (RFC 9250 4.3.3)")
        reader = self._streams.get(stream_id)
        if reader is None:
            if event.data:
                raise _Violation(f"data on stream {stream_id}, which has no query outstanding")
            return _NOTHING
        reader.feed(event.data, event.end_stream)
        if reader.complete and not reader.fin:
            self._completed_at.setdefault(stream_id, now)
        if not reader.fin:
            return _NOTHING
        del self._streams[stream_id]
        self._completed_at.pop(stream_id, None)
        wire = reader.wire
        try:
            message = self.parser.parse(wire)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
            return Output(events=(QueryFailed(stream_id, None, f"malformed response: {exc}"),))
        if has_keepalive(message):
            raise _Violation("response carries edns-tcp-keepalive (RFC 9250 section 5.5.2)")
        return Output(events=(ResponseReceived(stream_id, wire, message),))

    def timer(self) -> float | None:
        if self.closed or not self._completed_at:
            return None
        return min(self._completed_at.values()) + self.fin_timeout

    def handle_timer(self, now: float) -> Output:
        for stream_id, completed in self._completed_at.items():
            if now >= completed + self.fin_timeout:
                return self._close(
                    DoqError.PROTOCOL_ERROR,
                    f"response on stream {stream_id} without FIN after {self.fin_timeout:g} s",
                )
        return _NOTHING

    def close(self, code: DoqError = DoqError.NO_ERROR, reason: str = "") -> Output:
        """Close the connection (RFC 9250 section 4.4: DOQ_NO_ERROR when done)."""
        if self.closed:
            return _NOTHING
        return self._close(code, reason)

    def _close(self, code: DoqError, reason: str) -> Output:
        out = self._fail_all(code, f"closed by this client: {reason}")
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        return Output(actions=(CloseConnection(code, reason),), events=out.events)

    def _fail_all(self, code: int | None, reason: str) -> Output:
        failed = tuple(QueryFailed(stream_id, code, reason) for stream_id in self._streams)
        self._streams.clear()
        self._completed_at.clear()
        return Output(events=failed)
