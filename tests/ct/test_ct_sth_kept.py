"""The STH a log serves (get-sth) is the one its published checkpoint note carries.

The log keeps the STH signature it made instead of parsing the note back; these
tests parse the note and compare, for a new log, every round, and a reopened log.
"""

from __future__ import annotations

from pathlib import Path

from ct_testlib import ORIGIN, fill, new_signer, running_log

from trustchain.ct.checkpoint import (
    RFC6962NoteVerifier,
    decode_rfc6962_signature,
    open_checkpoint,
    parse_checkpoint,
)
from trustchain.ct.note import parse_note
from trustchain.ct.sct import verify_tree_head
from trustchain.ct.service import CTLog


def _assert_sth_is_the_notes(log: CTLog) -> None:
    size, timestamp, root, signature = log.sth()
    note = parse_note(log.checkpoint())
    assert len(note.signatures) == 1
    assert (timestamp, signature) == decode_rfc6962_signature(note.signatures[0].signature)
    cp = parse_checkpoint(note.text)
    assert (cp.size, cp.root_hash) == (size, root)


async def test_the_served_sth_is_the_published_notes_every_round(tmp_path: Path) -> None:
    signer = new_signer()
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
    seen = []
    async with running_log(tmp_path / "log", signer) as log:
        _assert_sth_is_the_notes(log)  # the empty tree a new log publishes
        assert log.sth()[0] == 0
        for start, count in ((0, 1), (1, 7), (8, 30)):
            await fill(log, start, count)
            _assert_sth_is_the_notes(log)
            size, timestamp, root, signature = log.sth()
            assert size == start + count
            verify_tree_head(signer.public_key(), timestamp, size, root, signature)
            cp, ts, ds = open_checkpoint(log.checkpoint(), verifier)
            assert (cp.size, ts, ds) == (size, timestamp, signature)
            seen.append(log.sth())
    # Reopened from disk: the STH comes from the stored checkpoint, and is the same.
    async with running_log(tmp_path / "log", signer) as log:
        assert log.sth() == seen[-1]
        _assert_sth_is_the_notes(log)
