"""Signed notes (c2sp.org/signed-note): parse, sign, open; Ed25519 keys (type 0x01).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID || signature)``.  Opening a note checks every
signature whose (name, key ID) is known; one that fails rejects the whole note,
unknown ones are kept aside, and a note with no verified signature is rejected
(signed-note, "Signatures").  Behaviour follows golang.org/x/mod/sumdb/note so that
notes interoperate byte for byte, including its limit of 100 signatures.

The RFC 6962 tree-head signature type (0x05) lives in checkpoint.py, since it
only signs checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

MAX_SIGNATURES = 100
"""More signature lines than this make a note malformed (as in Go's sumdb/note)."""

ALG_ED25519 = 0x01
ALG_RFC6962 = 0x05
_DASH = "\u2014 "


class NoteError(ValueError):
    """A malformed note, key or signature line; the message says which part."""


class InvalidSignatureError(NoteError):
    """A signature from a known key did not verify: the whole note is rejected."""

    def __init__(self, name: str, key_id: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_id:08x}")
        self.name = name
        self.key_id = key_id


class UnverifiedNoteError(NoteError):
    """The note parsed but no known key signed it."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


@functools.lru_cache(maxsize=256)
def is_valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or '+' (signed-note, "Format").

    Cached: every signature line of every note names one of a few keys.
    """
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
"""Control characters other than newline, which no note may contain (signed-note)."""


def key_id(name: str, key: bytes) -> int:
    """SHA-256(key name || 0x0A || type byte || public key)[:4], big-endian."""
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + key).digest()[:4], "big")


def _b64decode(text: str) -> bytes:
    """Strict standard base64: padding required, no stray characters, canonical bits."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError("bad base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError("non-canonical base64")
    return raw


@dataclass(frozen=True)
class NoteSignature:
    """One signature line."""

    name: str
    """The key name."""
    key_id: int
    """The 32-bit key ID."""
    signature: bytes
    """The signature bytes after the key ID."""

    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{_DASH}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note whose signatures are not yet checked."""

    text: str
    """The signed text, ending in a newline."""
    signatures: tuple[NoteSignature, ...]
    """Signature lines in order."""


@dataclass(frozen=True)
class OpenedNote:
    """A note with at least one verified signature."""

    text: str
    """The signed text."""
    verified: tuple[NoteSignature, ...]
    """Signatures by known keys, each verified (one per key)."""
    unverified: tuple[NoteSignature, ...]
    """Signatures by keys we do not know (not checked)."""


def parse_note(data: bytes | str) -> Note:
    """Split a note into text and signature lines; no signature is checked."""
    if isinstance(data, bytes):
        try:
            msg = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: not UTF-8") from None
    else:
        msg = data
    if _CONTROL.search(msg):
        raise NoteError("malformed note: control character")
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed note: missing signature lines")
    sigs: list[NoteSignature] = []
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("malformed note: signature line does not start with '\u2014 '")
        name, sep, b64 = line[len(_DASH) :].partition(" ")
        if not sep or not b64 or not is_valid_name(name):
            raise NoteError("malformed note: bad signature line")
        try:
            blob = _b64decode(b64)
        except NoteError as exc:
            raise NoteError(f"malformed note: signature of {name}: {exc}") from None
        if len(blob) < 5:
            raise NoteError(f"malformed note: signature of {name} is too short")
        sigs.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    return Note(text, tuple(sigs))


class NoteVerifier(Protocol):
    """A public key that checks note signatures."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True iff ``signature`` (without the key ID) is valid over ``text``."""
        ...


class NoteSigner(Protocol):
    """A private key that signs note text."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    async def sign(self, text: bytes) -> bytes:
        """The signature over ``text`` (without the key ID)."""
        ...


def open_note(data: bytes | str, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Parse ``data`` and check its signatures against ``verifiers``."""
    known: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        k = (v.name, v.key_id)
        if k in known:
            raise NoteError(f"ambiguous key {v.name}+{v.key_id:08x}: two verifiers share it")
        known[k] = v
    note = parse_note(data)
    text = note.text.encode()
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for sig in note.signatures:
        k = (sig.name, sig.key_id)
        verifier = known.get(k)
        if verifier is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if k in seen:
            continue  # a repeated signature by one key counts once
        seen.add(k)
        if not verifier.verify(text, sig.signature):
            raise InvalidSignatureError(sig.name, sig.key_id)
        verified.append(sig)
    if not verified:
        raise UnverifiedNoteError(note)
    return OpenedNote(note.text, tuple(verified), tuple(unverified))


def format_note(text: str, signatures: Iterable[NoteSignature]) -> bytes:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    lines = [s.line() for s in signatures]
    if not lines:
        raise NoteError("a note needs at least one signature")
    return (text + "\n" + "".join(lines)).encode()


async def sign_note(
    text: str, signers: Sequence[NoteSigner], existing: Iterable[NoteSignature] = ()
) -> bytes:
    """Sign ``text``; keep ``existing`` signatures except those the new signers replace."""
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if _CONTROL.search(text):
        raise NoteError("note text contains a control character")
    new = []
    for s in signers:
        if not is_valid_name(s.name):
            raise NoteError(f"invalid signer name {s.name!r}")
        new.append(NoteSignature(s.name, s.key_id, await s.sign(text.encode())))
    replaced = {(s.name, s.key_id) for s in new}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    return format_note(text, [*kept, *new])


# --- Ed25519 (type 0x01) ----------------------------------------------------------


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError(f"malformed {what}")
    return fields


def _parse_hash(h: str, what: str) -> int:
    if len(h) != 8 or any(c not in "0123456789abcdef" for c in h):
        raise NoteError(f"malformed {what}: key hash must be 8 lowercase hex digits")
    return int(h, 16)


@dataclass(frozen=True)
class Ed25519NoteVerifier:
    """An Ed25519 note verifier (signed-note type 0x01)."""

    name: str
    """Key name."""
    key_id: int
    """Key ID."""
    public_key: ed25519.Ed25519PublicKey
    """The key."""

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


class Ed25519NoteSigner:
    """Signs notes with an Ed25519 private key held in memory."""

    def __init__(self, name: str, key: ed25519.Ed25519PrivateKey) -> None:
        if not is_valid_name(name):
            raise NoteError(f"invalid key name {name!r}")
        self.name = name
        self._key = key
        self.key_id = key_id(name, bytes([ALG_ED25519]) + _raw_public(key.public_key()))

    async def sign(self, text: bytes) -> bytes:
        return self._key.sign(text)

    def verifier(self) -> Ed25519NoteVerifier:
        return Ed25519NoteVerifier(self.name, self.key_id, self._key.public_key())


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_vkey(name: str, public_key: ed25519.Ed25519PublicKey) -> str:
    """The verifier key string ``name+hash+base64(0x01 || key)``."""
    if not is_valid_name(name):
        raise NoteError(f"invalid key name {name!r}")
    blob = bytes([ALG_ED25519]) + _raw_public(public_key)
    return f"{name}+{key_id(name, blob):08x}+{base64.b64encode(blob).decode()}"


def ed25519_verifier(vkey: str) -> Ed25519NoteVerifier:
    """Parse a ``name+hash+base64`` Ed25519 verifier key, checking the hash."""
    name, h, b64 = _split_key(vkey, 3, "verifier key")
    hash_ = _parse_hash(h, "verifier key")
    if not is_valid_name(name):
        raise NoteError("malformed verifier key: bad name")
    blob = _b64decode(b64)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise NoteError("malformed verifier key: not an Ed25519 key (type 0x01, 32 bytes)")
    if key_id(name, blob) != hash_:
        raise NoteError("verifier key hash does not match the name and key")
    return Ed25519NoteVerifier(name, hash_, ed25519.Ed25519PublicKey.from_public_bytes(blob[1:]))


def ed25519_signer(skey: str) -> Ed25519NoteSigner:
    """Parse a ``PRIVATE+KEY+name+hash+base64(0x01 || seed)`` signer key, checking the hash."""
    p1, p2, name, h, b64 = _split_key(skey, 5, "signer key")
    if p1 != "PRIVATE" or p2 != "KEY":
        raise NoteError("malformed signer key: must start with PRIVATE+KEY+")
    hash_ = _parse_hash(h, "signer key")
    if not is_valid_name(name):
        raise NoteError("malformed signer key: bad name")
    blob = _b64decode(b64)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise NoteError("malformed signer key: not an Ed25519 seed (type 0x01, 32 bytes)")
    signer = Ed25519NoteSigner(name, ed25519.Ed25519PrivateKey.from_private_bytes(blob[1:]))
    if signer.key_id != hash_:
        raise NoteError("signer key hash does not match the name and key")
    return signer


def generate_ed25519(name: str) -> tuple[str, str]:
    """A new (signer key, verifier key) pair for ``name``."""
    key = ed25519.Ed25519PrivateKey.generate()
    signer = Ed25519NoteSigner(name, key)
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    skey_blob = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
    skey = f"PRIVATE+KEY+{name}+{signer.key_id:08x}+{skey_blob}"
    return skey, ed25519_vkey(name, key.public_key())
