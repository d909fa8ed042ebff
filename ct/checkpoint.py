"""Checkpoints (c2sp.org/tlog-checkpoint), RFC 6962 note signatures, and quorum checks.

A checkpoint is a signed note whose text is ``origin``, ``size``, base64 ``root``
and optional extension lines.  The log signs it with an RFC 6962
``TreeHeadSignature`` encoded as note signature type 0x05 (c2sp.org/static-ct-api,
"Checkpoints"), so a checkpoint and an RFC 6962 get-sth answer carry the same
signature.  In TrustChain every validator adds its own 0x05 signature with its CT
log key; ``verify_cosigned`` accepts a checkpoint only when signers from a given
set holding more than a given fraction of the voting power have signed it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import _tls, note
from trustchain.ct._tls import DecodeError, Reader
from trustchain.ct.merkle import HASH_SIZE
from trustchain.ct.note import NoteError, NoteSignature, NoteVerifier
from trustchain.ct.sct import DigitallySigned, SCTError, sign_tree_head, verify_tree_head
from trustchain.ct.signer import PublicKey, Signer, log_id, spki_der


class CheckpointError(ValueError):
    """A malformed checkpoint, or one that is not signed as required."""


@dataclass(frozen=True)
class Checkpoint:
    """The note text of a checkpoint."""

    origin: str
    """The log's identity: its submission prefix without scheme (static-ct-api)."""
    size: int
    """Number of leaves."""
    root_hash: bytes
    """RFC 6962 Merkle tree hash at ``size``."""
    extensions: tuple[str, ...] = ()
    """Extension lines (none for checkpoints carrying RFC 6962 signatures)."""

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("checkpoint origin must be a non-empty single line")
        if self.size < 0:
            raise CheckpointError("checkpoint size must not be negative")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("checkpoint root hash must be 32 bytes")
        if any(not e or "\n" in e for e in self.extensions):
            raise CheckpointError("checkpoint extension lines must be non-empty single lines")

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text strictly (c2sp.org/tlog-checkpoint, "Note text")."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed checkpoint: text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("malformed checkpoint: fewer than three lines")
    origin, size_s, root_s, *ext = lines
    if not origin:
        raise CheckpointError("malformed checkpoint: empty origin")
    if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
        raise CheckpointError("malformed checkpoint: size is not a canonical decimal")
    try:
        root = base64.b64decode(root_s, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("malformed checkpoint: root hash is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_s:
        raise CheckpointError("malformed checkpoint: root hash is not 32 bytes of base64")
    if any(not e for e in ext):
        raise CheckpointError("malformed checkpoint: empty extension line")
    size = int(size_s)
    if size >= 1 << 63:
        raise CheckpointError("malformed checkpoint: size out of range")
    return Checkpoint(origin, size, root, tuple(ext))


# --- RFC 6962 note signatures (type 0x05) -----------------------------------------


def rfc6962_key_id(name: str, public_key: PublicKey) -> int:
    """static-ct-api: SHA-256(name || 0x0A || 0x05 || LogID)[:4]."""
    return note.key_id(name, bytes([note.ALG_RFC6962]) + log_id(public_key))


def encode_rfc6962_signature(timestamp: int, ds: DigitallySigned) -> bytes:
    """``struct { uint64 timestamp; TreeHeadSignature signature; } RFC6962NoteSignature``."""
    return _tls.u64(timestamp) + ds.encode()


def decode_rfc6962_signature(sig: bytes) -> tuple[int, DigitallySigned]:
    r = Reader(sig, "RFC6962NoteSignature")
    timestamp = r.uint(8, "timestamp")
    ds = DigitallySigned.read(r)
    r.finish()
    return timestamp, ds


class RFC6962NoteVerifier:
    """Checks type 0x05 signatures: an RFC 6962 STH signature over the checkpoint."""

    def __init__(self, name: str, public_key: PublicKey) -> None:
        if not note.is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise NoteError("RFC 6962 note signatures need an ECDSA P-256 key here")
        self.name = name
        self.public_key = public_key
        self.key_id = rfc6962_key_id(name, public_key)

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            cp = parse_checkpoint(text.decode())
            # static-ct-api: a checkpoint signed this way has no extension lines,
            # because the TreeHeadSignature could not cover them.
            if cp.extensions:
                return False
            timestamp, ds = decode_rfc6962_signature(signature)
            verify_tree_head(self.public_key, timestamp, cp.size, cp.root_hash, ds)
        except (CheckpointError, DecodeError, SCTError, UnicodeDecodeError):
            return False
        return True

    def vkey(self) -> str:
        """``name+hash+base64(0x05 || SPKI)`` for configuration files."""
        blob = bytes([note.ALG_RFC6962]) + spki_der(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(blob).decode()}"


def rfc6962_verifier(vkey: str) -> RFC6962NoteVerifier:
    """Parse a ``name+hash+base64(0x05 || SPKI)`` verifier key, checking the hash."""
    fields = vkey.split("+", 2)
    if len(fields) != 3:
        raise NoteError("malformed verifier key")
    name, h, b64 = fields
    if len(h) != 8 or any(c not in "0123456789abcdef" for c in h):
        raise NoteError("malformed verifier key: key hash must be 8 lowercase hex digits")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("malformed verifier key: bad base64") from None
    if not blob or blob[0] != note.ALG_RFC6962:
        raise NoteError("malformed verifier key: not an RFC 6962 key (type 0x05)")
    try:
        key = serialization.load_der_public_key(blob[1:])
    except (ValueError, TypeError):
        raise NoteError("malformed verifier key: bad SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise NoteError("malformed verifier key: not an ECDSA key")
    v = RFC6962NoteVerifier(name, key)
    if v.key_id != int(h, 16):
        raise NoteError("verifier key hash does not match the name and key")
    return v


class RFC6962NoteSigner:
    """Signs one checkpoint text with a ``Signer`` as an RFC 6962 STH at ``timestamp``.

    The timestamp is part of what is signed, so a signer object is made per
    checkpoint (``RFC6962NoteSigner(name, signer, timestamp)``).
    """

    def __init__(self, name: str, signer: Signer, timestamp: int) -> None:
        if not note.is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        self.name = name
        self.key_id = rfc6962_key_id(name, signer.public_key())
        self._signer = signer
        self._timestamp = timestamp
        self.tree_head_signature: DigitallySigned | None = None
        """The STH signature the last ``sign`` made (what its note signature encodes
        after the timestamp), for a caller that keeps the STH: no need to parse the
        note it is in again."""

    async def sign(self, text: bytes) -> bytes:
        cp = parse_checkpoint(text.decode())
        if cp.extensions:
            raise CheckpointError("RFC 6962 signatures cannot cover extension lines")
        ds = await sign_tree_head(self._signer, self._timestamp, cp.size, cp.root_hash)
        self.tree_head_signature = ds
        return encode_rfc6962_signature(self._timestamp, ds)


async def sign_checkpoint(
    cp: Checkpoint, signers: Sequence[note.NoteSigner], existing: Sequence[NoteSignature] = ()
) -> bytes:
    """The signed checkpoint note (existing cosignatures kept unless replaced)."""
    return await note.sign_note(cp.text(), signers, existing)


def merge_cosignatures(a: bytes, b: bytes) -> bytes:
    """One note holding the signatures of two notes over the same checkpoint text."""
    na, nb = note.parse_note(a), note.parse_note(b)
    if na.text != nb.text:
        raise CheckpointError("cannot merge signatures over different checkpoints")
    seen = set()
    merged = []
    for s in (*na.signatures, *nb.signatures):
        k = (s.name, s.key_id, s.signature)
        if k not in seen:
            seen.add(k)
            merged.append(s)
    return note.format_note(na.text, merged)


# --- quorum verification ------------------------------------------------------------


@dataclass(frozen=True)
class Voter:
    """A member of the signing set."""

    label: str
    """How messages name this voter (e.g. the validator name)."""
    verifier: NoteVerifier
    """Its note verifier (name and key ID identify its signature line)."""
    power: int
    """Voting power, positive."""


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A checkpoint accepted by ``verify_cosigned``."""

    checkpoint: Checkpoint
    """The checkpoint."""
    signers: tuple[str, ...]
    """Labels of the voters whose signatures verified."""
    power: int
    """Their total voting power."""
    total_power: int
    """The voting power of the whole set."""


def verify_cosigned(
    data: bytes | str,
    voters: Sequence[Voter],
    threshold: Fraction = Fraction(2, 3),
    *,
    origin: str | None = None,
) -> CosignedCheckpoint:
    """Accept a checkpoint signed by voters with more than ``threshold`` of the power.

    Signatures by keys outside the set are ignored; a signature by a voter's key
    that does not verify rejects the note (signed-note, "Signatures").  Each voter
    counts once however many lines it has.  Quorum is strict: power > threshold *
    total, so for 3f+1 equal voters and 2/3 it takes 2f+1 signatures.
    """
    if not 0 <= threshold < 1:
        raise ValueError("threshold must be in [0, 1)")
    if not voters:
        raise ValueError("the voter set is empty")
    if any(v.power <= 0 for v in voters):
        raise ValueError("voting power must be positive")
    total = sum(v.power for v in voters)
    by_key = {(v.verifier.name, v.verifier.key_id): v for v in voters}
    try:
        opened = note.open_note(data, [v.verifier for v in voters])
    except note.UnverifiedNoteError:
        raise CheckpointError(
            f"checkpoint carries no signature from the {len(voters)} known signers"
        ) from None
    except NoteError as exc:
        raise CheckpointError(f"checkpoint rejected: {exc}") from None
    cp = parse_checkpoint(opened.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    labels = []
    power = 0
    for sig in opened.verified:
        voter = by_key[(sig.name, sig.key_id)]
        if voter.label not in labels:
            labels.append(voter.label)
            power += voter.power
    if power * threshold.denominator <= threshold.numerator * total:
        raise CheckpointError(
            f"checkpoint signed by {', '.join(labels)} holding {power} of {total} voting power; "
            f"more than {threshold} is required"
        )
    return CosignedCheckpoint(cp, tuple(labels), power, total)


def open_checkpoint(
    data: bytes | str, verifier: RFC6962NoteVerifier
) -> tuple[Checkpoint, int, DigitallySigned]:
    """Verify a single-log checkpoint; return it with its STH timestamp and signature."""
    try:
        opened = note.open_note(data, [verifier])
    except NoteError as exc:
        raise CheckpointError(f"checkpoint rejected: {exc}") from None
    cp = parse_checkpoint(opened.text)
    if cp.origin != verifier.name:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not {verifier.name!r}")
    sig = next(s for s in opened.verified if s.key_id == verifier.key_id)
    timestamp, ds = decode_rfc6962_signature(sig.signature)
    return cp, timestamp, ds


# --- collecting cosignatures (sans-IO) ------------------------------------------------


MAX_CANDIDATES = 4
"""Unverified signature lines kept per voter key and checkpoint: a peer that sends
junk under a validator's key costs at most this many verifications per checkpoint."""


class _Gathering:
    """The signatures offered for one checkpoint text; each verified at most once."""

    def __init__(self, text: str, checkpoint: Checkpoint) -> None:
        self.text = text
        self.checkpoint = checkpoint
        self.verified: dict[tuple[str, int], NoteSignature] = {}
        """One verified signature per voter key, in the order they verified."""
        self.candidates: dict[tuple[str, int], list[NoteSignature]] = {}
        """Unverified signature lines by voter key (keys without a verified one only)."""
        self.failed: set[tuple[str, int, bytes]] = set()
        """Lines that did not verify: never tried again, never counted."""


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint that voters holding a quorum of the power signed."""

    note: bytes
    """The note: the checkpoint text and one verified signature per signing voter."""
    cosigned: CosignedCheckpoint
    """The checkpoint, its signers and their power."""


class CosignatureCollector:
    """Gathers validators' signatures over checkpoints until a quorum signed one (sans-IO).

    ``add`` takes parsed notes as they arrive (a validator's own signature, its
    peers' and re-broadcast cosigned notes).  Signatures over one checkpoint text
    are merged as parsed lines; none is checked until the voters behind the lines
    could make a quorum, and then each line is verified once: a line that does
    not verify is dropped (it never counts, and never spoils the others), and a
    voter with one verified signature needs no other.  The note that ``add``
    returns holds only verified signatures, so ``verify_cosigned`` accepts it.

    Only checkpoints larger than the last cosigned one are collected.  For one
    size the first text seen is kept, unless another text is the tree the caller
    committed (``add``'s ``size`` and ``root``), which then replaces it.  At most
    ``max_pending`` sizes are held (the smallest kept).  A quorum is more than
    ``threshold`` of the voters' power (as in ``verify_cosigned``) and, if given,
    what ``quorum(power)`` also requires.  Owned by one thread.
    """

    def __init__(
        self,
        voters: Sequence[Voter],
        origin: str,
        threshold: Fraction = Fraction(2, 3),
        *,
        quorum: Callable[[int], bool] | None = None,
        cosigned_size: int = -1,
        max_pending: int = 256,
    ) -> None:
        if not voters or any(v.power <= 0 for v in voters):
            raise ValueError("the voter set must be non-empty with positive powers")
        if not 0 <= threshold < 1:
            raise ValueError("threshold must be in [0, 1)")
        self.origin = origin
        self.threshold = threshold
        self._also = quorum
        self.cosigned_size = cosigned_size
        """Size of the last checkpoint a quorum signed (-1: none yet)."""
        self._max_pending = max_pending
        self._by_key = {(v.verifier.name, v.verifier.key_id): v for v in voters}
        self._total = sum(v.power for v in voters)
        self._pending: dict[int, _Gathering] = {}

    def _quorum(self, power: int) -> bool:
        if power * self.threshold.denominator <= self.threshold.numerator * self._total:
            return False
        return self._also is None or self._also(power)

    def _power(self, keys: Iterable[tuple[str, int]]) -> int:
        labels = {self._by_key[k].label: self._by_key[k].power for k in keys}
        return sum(labels.values())

    def add(
        self, parsed: note.Note, *, size: int, root: Callable[[], bytes], max_ahead: int
    ) -> Cosigned | None:
        """Take the signatures of ``parsed``; the cosigned note if this completed a quorum.

        ``size`` and ``root()`` are the caller's committed tree (``root`` is called
        only when needed): a checkpoint larger than it is held (until the caller
        reaches it) but not completed, one of that size must have that root, and
        one more than ``max_ahead`` beyond it is ignored.
        """
        gathering = self._pending.get(_size_of(parsed.text))
        if gathering is not None and gathering.text == parsed.text:
            cp = gathering.checkpoint  # parsed when the first note of this text came
        else:
            try:
                cp = parse_checkpoint(parsed.text)
            except CheckpointError:
                return None
        if cp.origin != self.origin or cp.size <= self.cosigned_size:
            return None  # nothing newer than the cosigned checkpoint we have
        if cp.size > size + max_ahead:
            return None  # not a tree the caller could reach soon: a peer is lying or far ahead
        if gathering is None:
            gathering = self._pending[cp.size] = _Gathering(parsed.text, cp)
        elif gathering.text != parsed.text:
            # Another text for this size: only the committed tree counts.
            if cp.size > size or cp.root_hash != root():
                return None
            gathering = self._pending[cp.size] = _Gathering(parsed.text, cp)
        for sig in parsed.signatures:
            key = (sig.name, sig.key_id)
            if key not in self._by_key or key in gathering.verified:
                continue  # not a voter's key, or that voter's signature is checked already
            if (sig.name, sig.key_id, sig.signature) in gathering.failed:
                continue
            lines = gathering.candidates.setdefault(key, [])
            if sig not in lines and len(lines) < MAX_CANDIDATES:
                lines.append(sig)
        while len(self._pending) > self._max_pending:
            del self._pending[max(self._pending)]
        if cp.size not in self._pending:
            return None
        if cp.size > size or (cp.size == size and cp.root_hash != root()):
            return None  # completed once the caller commits that tree itself
        # Count the voters first: signatures are checked only once a quorum could be there.
        if not self._quorum(self._power([*gathering.verified, *gathering.candidates])):
            return None
        text = gathering.text.encode()
        power = self._power(gathering.verified)
        for key in list(gathering.candidates):
            if self._quorum(power):
                break  # enough: the other lines need not be checked at all
            verifier = self._by_key[key].verifier
            for sig in gathering.candidates.pop(key):
                if verifier.verify(text, sig.signature):
                    gathering.verified[key] = sig
                    break
                gathering.failed.add((sig.name, sig.key_id, sig.signature))
            power = self._power(gathering.verified)
        if not self._quorum(power):
            return None
        self.cosigned_size = cp.size
        for old in [s for s in self._pending if s <= cp.size]:
            del self._pending[old]
        labels = tuple(dict.fromkeys(self._by_key[k].label for k in gathering.verified))
        return Cosigned(
            note.format_note(gathering.text, gathering.verified.values()),
            CosignedCheckpoint(cp, labels, power, self._total),
        )


def _size_of(text: str) -> int:
    """The size line of checkpoint text, or -1 (a cache key only; parse_checkpoint checks)."""
    first = text.find("\n")
    second = text.find("\n", first + 1)
    line = text[first + 1 : second]
    ok = first >= 0 and second > first and 0 < len(line) <= 20 and line.isascii()
    return int(line) if ok and line.isdigit() else -1
