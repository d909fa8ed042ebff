"""Strict msgpack-ready encoding of consensus messages.

`encode` turns a message into a map of plain values (for a peer frame or a
database row); `decode` checks every field's type, size and range and builds
the frozen dataclass, raising `CodecError` naming the field that is wrong.
Extra or missing fields are errors.  Nothing here verifies signatures: that
is `ValidatorSet`'s job once a message is well-formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from trustchain.consensus.messages import (
    HASH_BYTES,
    Block,
    Message,
    Operation,
    Proposal,
    QuorumCert,
    SyncRequest,
    SyncResponse,
    Timeout,
    TimeoutCert,
    Vote,
    block_id,
)

MAX_NAME = 64
MAX_SIGNERS = 1024
MAX_OPS = 10_000
MAX_OP_BYTES = 64 * 1024
MAX_SYNC_BLOCKS = 256
SIGNATURE_BYTES = 64
MAX_ROUND = 2**62

T = TypeVar("T")


class CodecError(ValueError):
    """A consensus message is malformed; the message names the field."""


def _fields(where: str, value: Any, names: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"{where}: expected a map, got {type(value).__name__}")
    if set(value) != names:
        extra, missing = sorted(set(value) - names), sorted(names - set(value))
        raise CodecError(
            f"{where}: unexpected fields {extra}" if extra else f"{where}: missing {missing}"
        )
    return value


def _int(where: str, value: Any, low: int = 0, high: int = MAX_ROUND) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CodecError(f"{where}: expected an integer in {low}..{high}, got {value!r:.40}")
    return value


def _bytes(where: str, value: Any, size: int | None = None, max_size: int = MAX_OP_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise CodecError(f"{where}: expected bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise CodecError(f"{where}: expected {size} bytes, got {len(value)}")
    if len(value) > max_size:
        raise CodecError(f"{where}: {len(value)} bytes exceeds {max_size}")
    return value


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise CodecError(f"{where}: expected a name of at most {MAX_NAME} characters")
    return value


def _list(where: str, value: Any, limit: int, item: Callable[[str, Any], T]) -> tuple[T, ...]:
    if not isinstance(value, list):
        raise CodecError(f"{where}: expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise CodecError(f"{where}: {len(value)} items exceeds {limit}")
    return tuple(item(f"{where}[{i}]", v) for i, v in enumerate(value))


# --- certificates ------------------------------------------------------------------


def _encode_qc(qc: QuorumCert) -> dict[str, Any]:
    return {
        "block": qc.block_id,
        "round": qc.round,
        "height": qc.height,
        "votes": [[n, s] for n, s in qc.votes],
    }


def _signed_by(where: str, value: Any) -> tuple[str, bytes]:
    if not isinstance(value, list) or len(value) != 2:
        raise CodecError(f"{where}: expected [validator, signature]")
    return _name(f"{where}.validator", value[0]), _bytes(
        f"{where}.signature", value[1], SIGNATURE_BYTES
    )


def _decode_qc(where: str, value: Any) -> QuorumCert:
    f = _fields(where, value, {"block", "round", "height", "votes"})
    return QuorumCert(
        block_id=_bytes(f"{where}.block", f["block"], HASH_BYTES),
        round=_int(f"{where}.round", f["round"]),
        height=_int(f"{where}.height", f["height"]),
        votes=_list(f"{where}.votes", f["votes"], MAX_SIGNERS, _signed_by),
    )


def _encode_tc(tc: TimeoutCert | None) -> dict[str, Any] | None:
    if tc is None:
        return None
    return {"round": tc.round, "timeouts": [[n, r, s] for n, r, s in tc.timeouts]}


def _timeout_entry(where: str, value: Any) -> tuple[str, int, bytes]:
    if not isinstance(value, list) or len(value) != 3:
        raise CodecError(f"{where}: expected [validator, high qc round, signature]")
    return (
        _name(f"{where}.validator", value[0]),
        _int(f"{where}.high_qc_round", value[1]),
        _bytes(f"{where}.signature", value[2], SIGNATURE_BYTES),
    )


def _decode_tc(where: str, value: Any) -> TimeoutCert | None:
    if value is None:
        return None
    f = _fields(where, value, {"round", "timeouts"})
    timeouts = _list(f"{where}.timeouts", f["timeouts"], MAX_SIGNERS, _timeout_entry)
    if not timeouts:
        raise CodecError(f"{where}.timeouts: empty")
    return TimeoutCert(round=_int(f"{where}.round", f["round"], 1), timeouts=timeouts)


# --- blocks ---------------------------------------------------------------------------


def encode_block(b: Block) -> dict[str, Any]:
    return {
        "round": b.round,
        "height": b.height,
        "parent": b.parent_id,
        "qc": _encode_qc(b.qc),
        "ts": b.timestamp,
        "state": b.state,
        "ops": list(b.payload),
        "proposer": b.proposer,
    }


def decode_block(where: str, value: Any) -> Block:
    """Decode a block and recompute its id (the id is never taken from the wire)."""
    f = _fields(where, value, {"round", "height", "parent", "qc", "ts", "state", "ops", "proposer"})
    b = Block(
        round=_int(f"{where}.round", f["round"]),
        height=_int(f"{where}.height", f["height"]),
        parent_id=_bytes(f"{where}.parent", f["parent"], HASH_BYTES),
        qc=_decode_qc(f"{where}.qc", f["qc"]),
        timestamp=_int(f"{where}.ts", f["ts"]),
        state=_bytes(f"{where}.state", f["state"], max_size=256),
        payload=_list(f"{where}.ops", f["ops"], MAX_OPS, _bytes),
        proposer=_name(f"{where}.proposer", f["proposer"]),
    )
    if b.parent_id != b.qc.block_id:
        raise CodecError(f"{where}: parent is not the block its qc certifies")
    return Block(
        b.round,
        b.height,
        b.parent_id,
        b.qc,
        b.timestamp,
        b.state,
        b.payload,
        b.proposer,
        block_id(b),
    )


# --- messages --------------------------------------------------------------------------


def encode(message: Message) -> dict[str, Any]:
    """The map carried in a peer frame under the key "c"."""
    if isinstance(message, Proposal):
        return {"k": "proposal", "block": encode_block(message.block), "tc": _encode_tc(message.tc),
                "sig": message.signature}  # fmt: skip
    if isinstance(message, Vote):
        return {"k": "vote", "block": message.block_id, "round": message.round,
                "height": message.height, "voter": message.voter,
                "sig": message.signature}  # fmt: skip
    if isinstance(message, Timeout):
        return {"k": "timeout", "round": message.round, "high_qc": _encode_qc(message.high_qc),
                "voter": message.voter, "sig": message.signature,
                "tc": _encode_tc(message.tc)}  # fmt: skip
    if isinstance(message, SyncRequest):
        return {"k": "sync?", "from": message.from_height, "target": message.target}
    if isinstance(message, SyncResponse):
        qc = None if message.commit_qc is None else _encode_qc(message.commit_qc)
        return {"k": "sync", "blocks": [encode_block(b) for b in message.blocks], "qc": qc}
    if isinstance(message, Operation):
        return {"k": "op", "submitter": message.submitter, "data": message.data}
    raise TypeError(f"not a consensus message: {type(message).__name__}")


def decode(value: Any) -> Message:
    if not isinstance(value, dict) or not isinstance(value.get("k"), str):
        raise CodecError("message: expected a map with a string kind 'k'")
    kind = value["k"]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise CodecError(f"message: unknown kind {kind!r:.40}")
    return decoder(value)


def _decode_proposal(v: Any) -> Proposal:
    f = _fields("proposal", v, {"k", "block", "tc", "sig"})
    return Proposal(
        decode_block("proposal.block", f["block"]),
        _decode_tc("proposal.tc", f["tc"]),
        _bytes("proposal.sig", f["sig"], SIGNATURE_BYTES),
    )


def _decode_vote(v: Any) -> Vote:
    f = _fields("vote", v, {"k", "block", "round", "height", "voter", "sig"})
    return Vote(
        _bytes("vote.block", f["block"], HASH_BYTES),
        _int("vote.round", f["round"], 1),
        _int("vote.height", f["height"], 1),
        _name("vote.voter", f["voter"]),
        _bytes("vote.sig", f["sig"], SIGNATURE_BYTES),
    )


def _decode_timeout(v: Any) -> Timeout:
    f = _fields("timeout", v, {"k", "round", "high_qc", "voter", "sig", "tc"})
    return Timeout(
        _int("timeout.round", f["round"], 1),
        _decode_qc("timeout.high_qc", f["high_qc"]),
        _name("timeout.voter", f["voter"]),
        _bytes("timeout.sig", f["sig"], SIGNATURE_BYTES),
        _decode_tc("timeout.tc", f["tc"]),
    )


def _decode_sync_request(v: Any) -> SyncRequest:
    f = _fields("sync?", v, {"k", "from", "target"})
    return SyncRequest(
        _int("sync?.from", f["from"]), _bytes("sync?.target", f["target"], HASH_BYTES)
    )


def _decode_sync_response(v: Any) -> SyncResponse:
    f = _fields("sync", v, {"k", "blocks", "qc"})
    return SyncResponse(
        _list("sync.blocks", f["blocks"], MAX_SYNC_BLOCKS, decode_block),
        None if f["qc"] is None else _decode_qc("sync.qc", f["qc"]),
    )


def _decode_operation(v: Any) -> Operation:
    f = _fields("op", v, {"k", "submitter", "data"})
    return Operation(_name("op.submitter", f["submitter"]), _bytes("op.data", f["data"]))


_DECODERS: dict[str, Callable[[Any], Message]] = {
    "proposal": _decode_proposal,
    "vote": _decode_vote,
    "timeout": _decode_timeout,
    "sync?": _decode_sync_request,
    "sync": _decode_sync_response,
    "op": _decode_operation,
}


def encode_qc(qc: QuorumCert) -> dict[str, Any]:
    return _encode_qc(qc)


def decode_qc(value: Any) -> QuorumCert:
    return _decode_qc("qc", value)


def encode_tc(tc: TimeoutCert | None) -> dict[str, Any] | None:
    return _encode_tc(tc)


def decode_tc(value: Any) -> TimeoutCert | None:
    return _decode_tc("tc", value)
