"""CosignatureCollector: quorum from notes as they arrive, each signature verified once,
bad, foreign and off-tree signatures never counted; parse_note's fast checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import checkpoint, note
from trustchain.ct.checkpoint import Checkpoint, CosignatureCollector, Voter
from trustchain.ct.note import Note, NoteError, NoteSignature, parse_note
from trustchain.ct.signer import SoftwareSigner

ORIGIN = "example.com/log"


@dataclass
class Counting:
    """A note verifier that counts what it is asked to check."""

    inner: checkpoint.RFC6962NoteVerifier
    calls: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def key_id(self) -> int:
        return self.inner.key_id

    def verify(self, text: bytes, signature: bytes) -> bool:
        self.calls.append(signature)
        return self.inner.verify(text, signature)


@dataclass
class Cluster:
    keys: list[SoftwareSigner]
    voters: list[Voter]
    counters: list[Counting]

    async def note(self, i: int, size: int, root: bytes, timestamp: int = 5) -> Note:
        cp = Checkpoint(ORIGIN, size, root)
        signed = await checkpoint.sign_checkpoint(
            cp, [checkpoint.RFC6962NoteSigner(ORIGIN, self.keys[i], timestamp)]
        )
        return parse_note(signed)

    def verifications(self) -> int:
        return sum(len(c.calls) for c in self.counters)


def _cluster(n: int = 4) -> Cluster:
    keys = [SoftwareSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(n)]
    counters = [Counting(checkpoint.RFC6962NoteVerifier(ORIGIN, k.public_key())) for k in keys]
    voters = [Voter(f"v{i}", c, 1) for i, c in enumerate(counters)]
    return Cluster(keys, voters, counters)


def _root(size: int) -> bytes:
    return hashlib.sha256(b"root %d" % size).digest()


def _add(c: CosignatureCollector, n: Note, size: int, root: bytes | None = None) -> bytes | None:
    done = c.add(n, size=size, root=lambda: root or _root(size), max_ahead=100)
    return None if done is None else done.note


async def test_quorum_at_the_third_note_and_each_signature_verified_once() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    notes = [await cl.note(i, 10, _root(10)) for i in range(4)]
    assert _add(c, notes[0], 10) is None
    assert _add(c, notes[1], 10) is None
    assert cl.verifications() == 0  # no quorum possible yet: nothing checked
    cosigned = _add(c, notes[2], 10)
    assert cosigned is not None and c.cosigned_size == 10
    assert cl.verifications() == 3
    ok = checkpoint.verify_cosigned(cosigned, cl.voters, origin=ORIGIN)
    assert ok.signers == ("v0", "v1", "v2") and ok.checkpoint.size == 10
    # The fourth, and the cosigned note coming back, are for a size already done.
    assert _add(c, notes[3], 10) is None
    assert _add(c, parse_note(cosigned), 10) is None
    assert cl.verifications() == 3 + 3  # verify_cosigned above checked 3 itself


async def test_a_bad_signature_under_a_voters_key_is_dropped_not_fatal() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    good = [await cl.note(i, 10, _root(10)) for i in range(4)]
    sig = good[3].signatures[0]
    forged = NoteSignature(
        sig.name, sig.key_id, sig.signature[:-1] + bytes([sig.signature[-1] ^ 1])
    )
    assert _add(c, good[0], 10) is None
    assert _add(c, good[1], 10) is None
    # A Byzantine peer sends v3's key with a bad signature: the quorum cannot form yet,
    # and the forgery is never counted nor checked twice.
    assert _add(c, Note(good[3].text, (forged,)), 10) is None
    assert len(cl.counters[3].calls) == 1
    assert _add(c, Note(good[3].text, (forged,)), 10) is None
    assert len(cl.counters[3].calls) == 1
    cosigned = _add(c, good[2], 10)
    assert cosigned is not None
    assert forged.line().encode() not in cosigned
    assert checkpoint.verify_cosigned(cosigned, cl.voters).signers == ("v0", "v1", "v2")


async def test_a_forgery_before_the_real_signature_does_not_hide_it() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    notes = [await cl.note(i, 10, _root(10)) for i in range(3)]
    sig = notes[2].signatures[0]
    forged = NoteSignature(sig.name, sig.key_id, b"\x00" * len(sig.signature))
    _add(c, notes[0], 10)
    _add(c, notes[1], 10)
    # The forged line and the real one under the same key, in one note.
    cosigned = _add(c, Note(notes[2].text, (forged, sig)), 10)
    assert cosigned is not None
    assert checkpoint.verify_cosigned(cosigned, cl.voters).power == 3


async def test_signatures_of_non_voters_never_count() -> None:
    cl = _cluster()
    outsiders = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    _add(c, await cl.note(0, 10, _root(10)), 10)
    for i in range(4):
        assert _add(c, await outsiders.note(i, 10, _root(10)), 10) is None
    assert cl.verifications() == 0 and outsiders.verifications() == 0
    _add(c, await cl.note(1, 10, _root(10)), 10)
    cosigned = _add(c, await cl.note(2, 10, _root(10)), 10)
    assert cosigned is not None
    assert len(parse_note(cosigned).signatures) == 3  # the outsiders' lines are left out


async def test_a_body_other_than_the_committed_tree_is_refused() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    lie = _root(999)
    # Three validators' keys sign another root for size 10 (or a peer replays them):
    # the collector holds it while it is the only text, but never completes it.
    for i in range(3):
        assert _add(c, await cl.note(i, 10, lie), 10) is None
    # Our committed tree for size 10 replaces it.
    for i in range(2):
        assert _add(c, await cl.note(i, 10, _root(10)), 10) is None
    cosigned = _add(c, await cl.note(3, 10, _root(10)), 10)
    assert cosigned is not None
    assert checkpoint.verify_cosigned(cosigned, cl.voters).checkpoint.root_hash == _root(10)


async def test_a_checkpoint_ahead_of_us_completes_once_we_reach_it() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN)
    for i in (1, 2, 3):
        assert _add(c, await cl.note(i, 12, _root(12)), 10) is None
    assert cl.verifications() == 0
    # We commit size 12 and sign it: the held signatures complete the quorum.
    assert _add(c, await cl.note(0, 12, _root(12)), 12) is not None
    assert c.cosigned_size == 12


async def test_old_foreign_and_far_ahead_checkpoints_are_ignored() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN, cosigned_size=10)
    for i in range(4):
        assert _add(c, await cl.note(i, 10, _root(10)), 10) is None  # not newer
    far = await cl.note(0, 500, _root(500))
    assert c.add(far, size=11, root=lambda: _root(11), max_ahead=100) is None
    other = Note(far.text.replace(ORIGIN, "other.example/log"), far.signatures)
    assert _add(c, other, 500) is None
    assert _add(c, Note("not a checkpoint\n", far.signatures), 10) is None
    assert cl.verifications() == 0


async def test_an_extra_quorum_rule_is_applied_too() -> None:
    cl = _cluster()
    # e.g. the CA's rule over all validators, one of which has no CT log key here.
    c = CosignatureCollector(cl.voters, ORIGIN, quorum=lambda power: 3 * power > 2 * 5)
    for i in range(3):
        assert _add(c, await cl.note(i, 10, _root(10)), 10) is None
    assert _add(c, await cl.note(3, 10, _root(10)), 10) is not None


async def test_pending_sizes_are_bounded_smallest_kept() -> None:
    cl = _cluster()
    c = CosignatureCollector(cl.voters, ORIGIN, max_pending=2)
    for size in (13, 12, 11):
        _add(c, await cl.note(0, size, _root(size)), 10)
    for i in (1, 2):
        _add(c, await cl.note(i, 11, _root(11)), 10)
    assert _add(c, await cl.note(3, 11, _root(11)), 11) is not None
    assert _add(c, await cl.note(1, 13, _root(13)), 13) is None  # 13 was dropped


def test_parse_note_control_characters_are_the_c0_set_but_newline() -> None:
    body = "origin\n10\nAAAA\n\n\u2014 k AAAAAAE=\n"
    for code in range(0x110000):
        ch = chr(code)
        if 0xD800 <= code < 0xE000:
            continue
        bad = ch < " " and ch != "\n"
        if code < 0x100 or bad:
            try:
                parse_note(ch + body)
            except NoteError as exc:
                assert bad == ("control character" in str(exc)), hex(code)
            else:
                assert not bad, hex(code)
    # Every other character, in one note: none of them is refused.
    others = "".join(
        chr(c) for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000 and c != 0x2014
    )
    assert parse_note(others + "\n" + body).text.startswith(others)


def test_key_names_with_any_unicode_space_are_invalid() -> None:
    for code in range(0x3100):
        ch = chr(code)
        if 0xD800 <= code < 0xE000:
            continue
        assert note.is_valid_name(f"a{ch}b") == (not ch.isspace() and ch != "+"), hex(code)
    assert not note.is_valid_name("")
    with pytest.raises(NoteError):
        parse_note("t\n\n\u2014 a\u2003b AAAAAAE=\n")
