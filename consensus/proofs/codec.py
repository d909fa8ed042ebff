"""msgpack encoding of proof bundles and stake-ledger operations, strictly decoded.

Decoding accepts exactly what `encode_*` produces: the right types, exact byte
lengths, exactly the known map keys (no extra, none missing), no trailing
bytes, and the canonical encoding (the bytes must equal the re-encoding of
what was decoded, which rules out other key orders, duplicate keys and
over-long integer or length formats).  Anything else is a `ProofRejected` for
``bundle`` (or a `LedgerError` for an operation) saying which field is wrong;
no other exception escapes, whatever the input.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from trustchain.consensus.proofs.bundle import (
    BUNDLE_VERSION,
    PLOT_SALT_BYTES,
    VDF_FORM_BYTES,
    WORK_NONCE_BYTES,
    ProofBundle,
    SpaceProof,
    StakeProof,
    TimeProof,
    WorkProof,
)
from trustchain.consensus.proofs.errors import LedgerError, ProofRejected
from trustchain.consensus.proofs.hashing import (
    ACCOUNT_ID_BYTES,
    DIGEST_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
)
from trustchain.consensus.proofs.ledger import (
    Bond,
    Operation,
    SignedOperation,
    Transfer,
    Unbond,
)
from trustchain.consensus.proofs.policy import CHIAPOS_MAX_K, MAX_AMOUNT

MAX_BUNDLE_BYTES = 2048
"""A k=50 bundle is under 1000 bytes; anything far larger is refused unread."""
MAX_OPERATION_BYTES = 512

_UINT63 = 2**63 - 1

# Unpacker limits: nothing in a bundle is longer than a k=50 space proof (400 bytes).
_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    "use_list": True,
    "max_str_len": 64,
    "max_bin_len": 8 * CHIAPOS_MAX_K,
    "max_array_len": 16,
    "max_map_len": 16,
    "max_ext_len": 0,
}


class _Invalid(Exception):
    """Internal: a field failed validation; carries the field path and reason."""


def _fail(where: str, reason: str) -> NoReturn:
    raise _Invalid(f"field '{where}': {reason}")


def _describe(value: Any) -> str:
    return type(value).__name__


def _map(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, f"expected a map, got {_describe(value)}")
    extra = sorted(k for k in value if k not in keys)
    if extra:
        _fail(where, f"unknown key {extra[0]!r} (expected {', '.join(keys)})")
    for key in keys:
        if key not in value:
            _fail(where, f"missing key {key!r}")
    return value


def _bin(value: Any, where: str, length: int | None = None, *, max_len: int = 0) -> bytes:
    if not isinstance(value, bytes):
        _fail(where, f"expected bytes, got {_describe(value)}")
    if length is not None and len(value) != length:
        _fail(where, f"expected {length} bytes, got {len(value)}")
    if max_len and not 1 <= len(value) <= max_len:
        _fail(where, f"expected 1..{max_len} bytes, got {len(value)}")
    return value


def _uint(value: Any, where: str, low: int = 0, high: int = _UINT63) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(where, f"expected an integer, got {_describe(value)}")
    if not low <= value <= high:
        _fail(where, f"expected an integer in {low}..{high}, got {value}")
    return value


def _unpack(data: Any, limit: int) -> Any:
    """Decode one msgpack object; raise _Invalid for anything that is not exactly one."""
    if not isinstance(data, bytes | bytearray):
        raise _Invalid(f"expected bytes, got {_describe(data)}")
    if len(data) > limit:
        raise _Invalid(f"{len(data)} bytes exceeds the limit of {limit}")
    try:
        return msgpack.unpackb(bytes(data), **_UNPACK_LIMITS)
    except msgpack.ExtraData:
        raise _Invalid("trailing bytes after the encoded object") from None
    except Exception as exc:
        # Untrusted bytes: whatever the decoder raises (truncation, bad UTF-8,
        # limits, recursion) is one kind of failure to the caller.
        raise _Invalid(f"not valid msgpack: {msgpack_problem(exc)}") from None


def msgpack_problem(exc: Exception) -> str:
    """What a failure to decode untrusted msgpack means, in words."""
    if isinstance(exc, msgpack.FormatError):
        return "a byte that starts no msgpack object"
    if isinstance(exc, msgpack.StackError):
        return "nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "a string that is not UTF-8"
    return str(exc) or type(exc).__name__


# --- bundles ------------------------------------------------------------------------

_BUNDLE_KEYS = ("v", "account", "epoch", "request", "work", "space", "time", "stake")
_WORK_KEYS = ("nonce",)
_SPACE_KEYS = ("salt", "plot_id", "k", "index", "proof")
_TIME_KEYS = ("iterations", "output", "proof")
_STAKE_KEYS = ("signature",)


def _bundle_obj(b: ProofBundle) -> dict[str, Any]:
    return {
        "v": b.version,
        "account": b.account,
        "epoch": b.epoch,
        "request": b.request,
        "work": {"nonce": b.work.nonce},
        "space": {
            "salt": b.space.salt,
            "plot_id": b.space.plot_id,
            "k": b.space.k,
            "index": b.space.index,
            "proof": b.space.proof,
        },
        "time": {
            "iterations": b.time.iterations,
            "output": b.time.output,
            "proof": b.time.proof,
        },
        "stake": {"signature": b.stake.signature},
    }


def encode_bundle(bundle: ProofBundle) -> bytes:
    """The canonical encoding of `bundle`."""
    packed: bytes = msgpack.packb(_bundle_obj(bundle), use_bin_type=True)
    return packed


def _bundle_from(obj: Any) -> ProofBundle:
    if isinstance(obj, dict) and "v" in obj and obj["v"] != BUNDLE_VERSION:
        raise _Invalid(
            f"unsupported version {obj['v']!r} (this node reads version {BUNDLE_VERSION})"
        )
    top = _map(obj, "bundle", _BUNDLE_KEYS)
    _uint(top["v"], "v")
    work = _map(top["work"], "work", _WORK_KEYS)
    space = _map(top["space"], "space", _SPACE_KEYS)
    time = _map(top["time"], "time", _TIME_KEYS)
    stake = _map(top["stake"], "stake", _STAKE_KEYS)
    return ProofBundle(
        version=BUNDLE_VERSION,
        account=_bin(top["account"], "account", ACCOUNT_ID_BYTES),
        epoch=_uint(top["epoch"], "epoch"),
        request=_bin(top["request"], "request", DIGEST_BYTES),
        work=WorkProof(nonce=_bin(work["nonce"], "work.nonce", WORK_NONCE_BYTES)),
        # The policy bounds on k, index and the proof length are the space
        # check's business (so that its errors name the space proof); here
        # only the types and absolute limits.
        space=SpaceProof(
            salt=_bin(space["salt"], "space.salt", PLOT_SALT_BYTES),
            plot_id=_bin(space["plot_id"], "space.plot_id", DIGEST_BYTES),
            k=_uint(space["k"], "space.k", 1, 255),
            index=_uint(space["index"], "space.index", 0, 2**32 - 1),
            proof=_bin(space["proof"], "space.proof", max_len=8 * CHIAPOS_MAX_K),
        ),
        time=TimeProof(
            iterations=_uint(time["iterations"], "time.iterations", 1),
            output=_bin(time["output"], "time.output", VDF_FORM_BYTES),
            proof=_bin(time["proof"], "time.proof", VDF_FORM_BYTES),
        ),
        stake=StakeProof(signature=_bin(stake["signature"], "stake.signature", SIGNATURE_BYTES)),
    )


def decode_bundle(data: bytes) -> ProofBundle:
    """Decode and validate a bundle; raise ProofRejected("bundle", ...) for anything else."""
    try:
        bundle = _bundle_from(_unpack(data, MAX_BUNDLE_BYTES))
    except _Invalid as exc:
        raise ProofRejected("bundle", str(exc)) from None
    if encode_bundle(bundle) != bytes(data):
        raise ProofRejected(
            "bundle", "not in canonical encoding (key order, integer or length formats)"
        )
    return bundle


# --- ledger operations --------------------------------------------------------------------

_OP_KINDS = ("transfer", "bond", "unbond")


def _operation_obj(op: Operation) -> dict[str, Any]:
    if isinstance(op, Transfer):
        return {
            "op": "transfer",
            "account": op.account,
            "seq": op.seq,
            "to": op.recipient_key,
            "amount": op.amount,
        }
    kind = "bond" if isinstance(op, Bond) else "unbond"
    return {"op": kind, "account": op.account, "seq": op.seq, "amount": op.amount}


def encode_operation(op: Operation) -> bytes:
    """The canonical encoding of an (unsigned) operation (its signature covers
    `ledger.operation_message`, a fixed layout, not these bytes)."""
    packed: bytes = msgpack.packb(_operation_obj(op), use_bin_type=True)
    return packed


def encode_signed_operation(signed: SignedOperation) -> bytes:
    obj = {"operation": _operation_obj(signed.operation), "signature": signed.signature}
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _operation_from(obj: Any) -> Operation:
    kind = obj.get("op") if isinstance(obj, dict) else None
    if kind not in _OP_KINDS:
        _fail("operation.op", f"expected one of {', '.join(_OP_KINDS)}, got {kind!r}")
    if kind == "transfer":
        m = _map(obj, "operation", ("op", "account", "seq", "to", "amount"))
        return Transfer(
            account=_bin(m["account"], "operation.account", ACCOUNT_ID_BYTES),
            seq=_uint(m["seq"], "operation.seq", 1),
            recipient_key=_bin(m["to"], "operation.to", PUBLIC_KEY_BYTES),
            amount=_uint(m["amount"], "operation.amount", 1, MAX_AMOUNT),
        )
    m = _map(obj, "operation", ("op", "account", "seq", "amount"))
    account = _bin(m["account"], "operation.account", ACCOUNT_ID_BYTES)
    seq = _uint(m["seq"], "operation.seq", 1)
    amount = _uint(m["amount"], "operation.amount", 1, MAX_AMOUNT)
    if kind == "bond":
        return Bond(account=account, seq=seq, amount=amount)
    return Unbond(account=account, seq=seq, amount=amount)


def decode_signed_operation(data: bytes) -> SignedOperation:
    """Decode and validate a signed ledger operation; raise LedgerError if malformed."""
    try:
        top = _map(_unpack(data, MAX_OPERATION_BYTES), "signed", ("operation", "signature"))
        signed = SignedOperation(
            operation=_operation_from(top["operation"]),
            signature=_bin(top["signature"], "signature", SIGNATURE_BYTES),
        )
    except _Invalid as exc:
        raise LedgerError(f"operation: {exc}") from None
    if encode_signed_operation(signed) != bytes(data):
        raise LedgerError("operation: not in canonical encoding")
    return signed
