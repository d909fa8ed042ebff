"""The peer link protocol, sans-IO: authentication, then framed messages.

One `PeerSession` lives on each side of one QUIC connection between two
validators and owns that link's state transitions; everything that changes
them is in this module.  It never touches a socket or a clock: the driver
(`trustchain.node.peer`) feeds it stream bytes and hands it randomness, and
acts on the `Actions` it returns.

Authentication (DESIGN.md section 3).  The client pins the server: the public
key of the server's TLS certificate must be the consensus key that genesis
lists for the validator it dialled (aioquic has already checked the TLS
CertificateVerify signature, so the server holds that key).  aioquic servers
cannot ask for client certificates, so the client proves itself on the first
stream instead::

    client -> server   hello      {"t": "hello", "v": 1, "name": NAME}
    server -> client   challenge  {"t": "challenge", "nonce": 32 random bytes}
    client -> server   auth       {"t": "auth", "sig": Ed25519(consensus key,
                                   "trustchain-peer-auth-v1" || nonce || sha256(server cert DER))}
    server -> client   welcome    {"t": "welcome"}

Binding the server certificate into the signature stops a signature made for
one validator from being replayed to another.  Until ``welcome`` neither side
delivers anything; any other frame before it, or a failed check, closes the
connection.  After it, both sides send ``{"t": "m", "b": MESSAGE}`` frames on
the same stream and ``{"t": "ping"}`` keepalives.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustchain.node.config import Genesis
from trustchain.node.framing import FrameDecoder, FrameError, encode_frame
from trustchain.node.identity import PEER_AUTH_DOMAIN, Identity

PROTOCOL_VERSION = 1
NONCE_BYTES = 32


class CloseCode(enum.IntEnum):
    """QUIC application error codes a peer link closes with."""

    NORMAL = 0x0
    AUTH_FAILED = 0x101
    PROTOCOL_ERROR = 0x102
    REPLACED = 0x103
    TIMEOUT = 0x104


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    HANDSHAKING = "handshaking"  # QUIC/TLS handshake not complete (client) or no hello yet (server)
    AWAIT_CHALLENGE = "await-challenge"  # client sent hello
    AWAIT_AUTH = "await-auth"  # server sent challenge
    AWAIT_WELCOME = "await-welcome"  # client sent auth
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Actions:
    """What the driver must do after a call, in this order: send, deliver, close."""

    send: bytes = b""
    """Bytes to write on the peer stream."""
    delivered: list[dict[str, Any]] = field(default_factory=list)
    """Application messages from the authenticated peer, in stream order."""
    authenticated: str | None = None
    """Set once, to the peer's validator name, when the link becomes OPEN."""
    close: tuple[CloseCode, str] | None = None
    """Close the connection with this code and reason; the session is CLOSED."""


class PeerSession:
    """One side of one authenticated peer link."""

    def __init__(
        self,
        role: Role,
        me: Identity,
        genesis: Genesis,
        max_frame_bytes: int,
        *,
        expected_peer: str | None = None,
        nonce: bytes | None = None,
    ) -> None:
        """A client passes `expected_peer` (whom it dialled); a server passes a fresh `nonce`."""
        if role is Role.CLIENT and expected_peer is None:
            raise ValueError("a client session needs the name of the peer it dials")
        if role is Role.SERVER and (nonce is None or len(nonce) != NONCE_BYTES):
            raise ValueError(f"a server session needs a {NONCE_BYTES}-byte nonce")
        self.role = role
        self.me = me
        self.genesis = genesis
        self.peer = expected_peer
        self.state = State.HANDSHAKING
        self._nonce = nonce
        self._server_cert_hash = b""
        self._decoder = FrameDecoder(max_frame_bytes)

    # --- inputs ---------------------------------------------------------------

    def handshake_completed(self, server_certificate_der: bytes, server_key_raw: bytes) -> Actions:
        """Client only: the QUIC handshake finished with this server certificate."""
        assert self.role is Role.CLIENT and self.peer is not None
        pinned = self.genesis.validator(self.peer).public_key
        if server_key_raw != pinned:
            return self._fail(
                CloseCode.AUTH_FAILED,
                f"{self.peer}: TLS key does not match its genesis consensus key",
            )
        self._server_cert_hash = hashlib.sha256(server_certificate_der).digest()
        self.state = State.AWAIT_CHALLENGE
        return Actions(
            send=encode_frame({"t": "hello", "v": PROTOCOL_VERSION, "name": self.me.name})
        )

    def stream_data(self, data: bytes, end_stream: bool) -> Actions:
        """Bytes arrived on the peer stream."""
        actions = Actions()
        if self.state is State.CLOSED:
            return actions
        error: FrameError | None = None
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            frames, error = exc.preceding, exc
        for frame in frames:
            self._step(frame, actions)
            if actions.close is not None:
                return actions
        if error is not None:
            return self._fail(CloseCode.PROTOCOL_ERROR, str(error), actions)
        if end_stream:
            return self._fail(CloseCode.PROTOCOL_ERROR, "peer ended the stream", actions)
        return actions

    def encode(self, message: dict[str, Any]) -> bytes:
        """The frame carrying one application message (only valid while OPEN)."""
        assert self.state is State.OPEN
        return encode_frame({"t": "m", "b": message})

    @staticmethod
    def keepalive() -> bytes:
        return encode_frame({"t": "ping"})

    # --- transitions ------------------------------------------------------------

    def _step(self, frame: dict[str, Any], actions: Actions) -> None:
        kind = frame.get("t")
        if self.state is State.OPEN:
            if kind == "m" and set(frame) == {"t", "b"} and isinstance(frame["b"], dict):
                actions.delivered.append(frame["b"])
            elif kind == "ping" and set(frame) == {"t"}:
                pass
            else:
                self._fail(
                    CloseCode.PROTOCOL_ERROR, f"unexpected frame {_describe(frame)}", actions
                )
            return
        handler = _HANDSHAKE_STEPS.get((self.role, self.state, str(kind)))
        if handler is None:
            self._fail(
                CloseCode.PROTOCOL_ERROR,
                f"unexpected frame {_describe(frame)} in state {self.state.value}",
                actions,
            )
            return
        handler(self, frame, actions)

    def _server_hello(self, frame: dict[str, Any], actions: Actions) -> None:
        if set(frame) != {"t", "v", "name"} or frame["v"] != PROTOCOL_VERSION:
            self._fail(CloseCode.PROTOCOL_ERROR, f"bad hello {_describe(frame)}", actions)
            return
        name = frame["name"]
        if not isinstance(name, str) or not any(v.name == name for v in self.genesis.validators):
            self._fail(
                CloseCode.AUTH_FAILED, f"hello from {name!r}, not a genesis validator", actions
            )
            return
        if name == self.me.name:
            self._fail(CloseCode.AUTH_FAILED, f"hello claims to be this node ({name})", actions)
            return
        assert self._nonce is not None
        self.peer = name
        self.state = State.AWAIT_AUTH
        actions.send += encode_frame({"t": "challenge", "nonce": self._nonce})

    def _client_challenge(self, frame: dict[str, Any], actions: Actions) -> None:
        nonce = frame.get("nonce")
        if (
            set(frame) != {"t", "nonce"}
            or not isinstance(nonce, bytes)
            or len(nonce) != NONCE_BYTES
        ):
            self._fail(CloseCode.PROTOCOL_ERROR, f"bad challenge {_describe(frame)}", actions)
            return
        signature = self.me.key.sign(PEER_AUTH_DOMAIN + nonce + self._server_cert_hash)
        self.state = State.AWAIT_WELCOME
        actions.send += encode_frame({"t": "auth", "sig": signature})

    def _server_auth(self, frame: dict[str, Any], actions: Actions) -> None:
        signature = frame.get("sig")
        if set(frame) != {"t", "sig"} or not isinstance(signature, bytes):
            self._fail(CloseCode.PROTOCOL_ERROR, f"bad auth {_describe(frame)}", actions)
            return
        assert self.peer is not None and self._nonce is not None
        key = Ed25519PublicKey.from_public_bytes(self.genesis.validator(self.peer).public_key)
        own_cert_hash = hashlib.sha256(self.me.certificate_der).digest()
        try:
            key.verify(signature, PEER_AUTH_DOMAIN + self._nonce + own_cert_hash)
        except InvalidSignature:
            self._fail(
                CloseCode.AUTH_FAILED, f"{self.peer}: auth signature does not verify", actions
            )
            return
        self._open(actions)
        actions.send += encode_frame({"t": "welcome"})

    def _client_welcome(self, frame: dict[str, Any], actions: Actions) -> None:
        if set(frame) != {"t"}:
            self._fail(CloseCode.PROTOCOL_ERROR, f"bad welcome {_describe(frame)}", actions)
            return
        self._open(actions)

    def _open(self, actions: Actions) -> None:
        self.state = State.OPEN
        actions.authenticated = self.peer

    def _fail(self, code: CloseCode, reason: str, actions: Actions | None = None) -> Actions:
        actions = actions or Actions()
        self.state = State.CLOSED
        actions.close = (code, reason)
        return actions


_HANDSHAKE_STEPS = {
    (Role.SERVER, State.HANDSHAKING, "hello"): PeerSession._server_hello,
    (Role.CLIENT, State.AWAIT_CHALLENGE, "challenge"): PeerSession._client_challenge,
    (Role.SERVER, State.AWAIT_AUTH, "auth"): PeerSession._server_auth,
    (Role.CLIENT, State.AWAIT_WELCOME, "welcome"): PeerSession._client_welcome,
}


def _describe(frame: dict[str, Any]) -> str:
    kind = frame.get("t")
    return f"type {kind!r} with keys {sorted(frame)}"
