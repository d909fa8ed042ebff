"""Signed notes and checkpoints: the shared vector, mangled keys, quorum rules."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import checkpoint, note
from trustchain.ct.checkpoint import Checkpoint, CheckpointError, Voter
from trustchain.ct.note import NoteError
from trustchain.ct.signer import SoftwareSigner

VECTOR = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "note" / "signed-note.json"
)


@pytest.fixture(scope="module")
def vec() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR.read_text())
    return data


async def test_signing_reproduces_the_vector(vec: dict[str, Any]) -> None:
    signer = note.ed25519_signer(vec["signer_key"])
    verifier = note.ed25519_verifier(vec["verifier_key"])
    assert (signer.name, signer.key_id) == (verifier.name, verifier.key_id)
    signed = await note.sign_note(vec["text"], [signer])
    assert signed == vec["signed_note"].encode()
    opened = note.open_note(signed, [verifier])
    assert opened.text == vec["text"]
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert opened.unverified == ()


def _substrings(s: str) -> set[str]:
    return {s[i:j] for i in range(len(s) + 1) for j in range(i, len(s) + 1)} - {s}


def _plus_one(s: str) -> list[str]:
    out = []
    for i, c in enumerate(s):
        b = s.encode()
        if len(c.encode()) == 1 and b[i] < 0x7F:
            out.append(s[:i] + chr(ord(c) + 1) + s[i + 1 :])
    return out


def test_every_mangled_verifier_key_is_rejected(vec: dict[str, Any]) -> None:
    key = vec["verifier_key"]
    bad = _substrings(key) | set(_plus_one(key))
    assert len(bad) > 1000
    for k in bad:
        with pytest.raises(NoteError):
            note.ed25519_verifier(k)


def test_every_mangled_signer_key_is_rejected(vec: dict[str, Any]) -> None:
    key = vec["signer_key"]
    bad = _substrings(key) | set(_plus_one(key))
    for k in bad:
        with pytest.raises(NoteError):
            note.ed25519_signer(k)


def test_unknown_signature_is_kept_unverified(vec: dict[str, Any]) -> None:
    both = vec["signed_note"] + vec["second_signature_line"]
    opened = note.open_note(both, [note.ed25519_verifier(vec["verifier_key"])])
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.name for s in opened.unverified] == ["EnochRoot"]
    # With both keys known, both verify.
    second = note.ed25519_verifier(vec["second_verifier_key"])
    opened2 = note.open_note(both, [note.ed25519_verifier(vec["verifier_key"]), second])
    assert {s.name for s in opened2.verified} == {"PeterNeumann", "EnochRoot"}


def test_more_than_100_signatures_is_malformed(vec: dict[str, Any]) -> None:
    line = vec["second_signature_line"]
    verifier = note.ed25519_verifier(vec["verifier_key"])
    ok = vec["signed_note"] + line * 99  # 100 signature lines in all
    note.open_note(ok, [verifier])
    with pytest.raises(NoteError, match="more than 100"):
        note.open_note(ok + line, [verifier])


def test_bad_notes_are_rejected(vec: dict[str, Any]) -> None:
    verifier = note.ed25519_verifier(vec["verifier_key"])
    good: str = vec["signed_note"]
    with pytest.raises(note.InvalidSignatureError):
        note.open_note(good.replace("cryptography", "Cryptography"), [verifier])
    with pytest.raises(note.UnverifiedNoteError):
        note.open_note(good, [note.ed25519_verifier(vec["second_verifier_key"])])
    for bad in (
        good.rstrip("\n"),  # no final newline
        good.replace("\n\n", "\n"),  # no blank line
        good.replace("\u2014", "-"),  # wrong dash
        good + "\x01",  # control character
        good.replace("\u2014 PeterNeumann ", "\u2014 PeterNeumann  "),  # bad base64
        good.replace("\u2014 PeterNeumann ", "\u2014 Peter+Neumann "),  # bad name
        good + "\u2014 X AAAA\n",  # too short
    ):
        with pytest.raises(NoteError):
            note.open_note(bad, [verifier])
    with pytest.raises(NoteError):
        note.open_note(good.encode()[:-3] + b"\xff\n", [verifier])


async def test_generated_keys_roundtrip() -> None:
    skey, vkey = note.generate_ed25519("example.com/log")
    signed = await note.sign_note("hello\n", [note.ed25519_signer(skey)])
    note.open_note(signed, [note.ed25519_verifier(vkey)])


# --- checkpoints -------------------------------------------------------------------


def _ckpt(size: int = 7) -> Checkpoint:
    return Checkpoint("example.com/log", size, bytes(range(32)))


def test_checkpoint_text_roundtrip() -> None:
    cp = _ckpt()
    assert checkpoint.parse_checkpoint(cp.text()) == cp
    for bad in (
        "a\n1\n",
        "a\n01\n" + cp.text().split("\n")[2] + "\n",
        "\n1\nAAAA\n",
        "a\n-1\nx\n",
        "a\n1\nAAAA\n",
        cp.text() + "\n",
        cp.text()[:-1],
    ):
        with pytest.raises(CheckpointError):
            checkpoint.parse_checkpoint(bad)


async def test_rfc6962_note_signature() -> None:
    key = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    cp = _ckpt()
    signed = await checkpoint.sign_checkpoint(
        cp, [checkpoint.RFC6962NoteSigner(cp.origin, key, 1_700_000_000_000)]
    )
    v = checkpoint.RFC6962NoteVerifier(cp.origin, key.public_key())
    got, ts, _ds = checkpoint.open_checkpoint(signed, v)
    assert (got, ts) == (cp, 1_700_000_000_000)
    # The vkey form parses back to the same verifier; mangled ones do not.
    vkey = v.vkey()
    assert checkpoint.rfc6962_verifier(vkey).key_id == v.key_id
    for bad in (vkey[:-4], "x" + vkey, vkey.replace("+", "-", 1)):
        with pytest.raises(NoteError):
            checkpoint.rfc6962_verifier(bad)
    # A changed size, root or timestamp fails.
    tampered = signed.replace(b"\n7\n", b"\n8\n")
    with pytest.raises(CheckpointError, match="invalid signature"):
        checkpoint.open_checkpoint(tampered, v)
    # An extension line cannot be signed or verified with type 0x05.
    with pytest.raises(CheckpointError):
        await checkpoint.sign_checkpoint(
            Checkpoint(cp.origin, 1, cp.root_hash, ("ext",)),
            [checkpoint.RFC6962NoteSigner(cp.origin, key, 1)],
        )


async def _cosigned(
    n: int, signing: list[int], power: list[int] | None = None
) -> tuple[bytes, list[Voter]]:
    cp = _ckpt(10)
    keys = [SoftwareSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(n)]
    power = power or [1] * n
    voters = [
        Voter(f"v{i}", checkpoint.RFC6962NoteVerifier(cp.origin, k.public_key()), power[i])
        for i, k in enumerate(keys)
    ]
    signed = b""
    for i in signing:
        one = await checkpoint.sign_checkpoint(
            cp, [checkpoint.RFC6962NoteSigner(cp.origin, keys[i], 5)]
        )
        signed = one if not signed else checkpoint.merge_cosignatures(signed, one)
    return signed, voters


async def test_quorum_needs_more_than_two_thirds() -> None:
    signed, voters = await _cosigned(4, [0, 1, 2])
    ok = checkpoint.verify_cosigned(signed, voters, Fraction(2, 3), origin="example.com/log")
    assert ok.signers == ("v0", "v1", "v2") and (ok.power, ok.total_power) == (3, 4)
    signed2, voters2 = await _cosigned(4, [0, 1])
    with pytest.raises(CheckpointError, match="2 of 4"):
        checkpoint.verify_cosigned(signed2, voters2)
    # Exactly 2/3 of the power is not more than 2/3.
    signed3, voters3 = await _cosigned(3, [0, 1])
    with pytest.raises(CheckpointError):
        checkpoint.verify_cosigned(signed3, voters3)
    # Weighted: one voter with 5 of 7 power suffices alone.
    signed4, voters4 = await _cosigned(3, [2], [1, 1, 5])
    assert checkpoint.verify_cosigned(signed4, voters4).signers == ("v2",)


async def test_quorum_ignores_outsiders_and_duplicates() -> None:
    signed, voters = await _cosigned(4, [0, 1, 2])
    # Only voters 0 and 1 are in the set we trust (the others are outsiders now).
    with pytest.raises(CheckpointError):
        checkpoint.verify_cosigned(signed, [*voters[:2], voters[3]])
    # A repeated line from one voter counts once.
    one, vs = await _cosigned(4, [0])
    text = note.parse_note(one)
    dup = note.format_note(text.text, list(text.signatures) * 3)
    with pytest.raises(CheckpointError, match="1 of 4"):
        checkpoint.verify_cosigned(dup, vs)


async def test_quorum_rejects_a_bad_signature_from_a_voter() -> None:
    signed, voters = await _cosigned(4, [0, 1, 2, 3])
    parsed = note.parse_note(signed)
    sigs = list(parsed.signatures)
    bad = sigs[3].signature[:-1] + bytes([sigs[3].signature[-1] ^ 1])
    sigs[3] = note.NoteSignature(sigs[3].name, sigs[3].key_id, bad)
    with pytest.raises(CheckpointError, match="invalid signature"):
        checkpoint.verify_cosigned(note.format_note(parsed.text, sigs), voters)
    with pytest.raises(CheckpointError, match="origin"):
        checkpoint.verify_cosigned(signed, voters, origin="other")
    other, _ = await _cosigned(1, [0])
    with pytest.raises(CheckpointError, match="merge"):
        checkpoint.merge_cosignatures(signed, other.replace(b"\n10\n", b"\n11\n"))
