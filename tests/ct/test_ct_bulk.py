"""Bulk import writes exactly what a live log writes, and opens as a verified log."""

from __future__ import annotations

from pathlib import Path

from ct_testlib import ORIGIN, new_signer, running_log

from trustchain.ct import merkle
from trustchain.ct.bulk import import_certificates
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.sequencer import Sequencer, Submission
from trustchain.ct.tiles import TreeEdge


async def test_bulk_import_matches_live_sequencing(tmp_path: Path) -> None:
    signer = new_signer()
    certs = [b"certificate number %d " % i * (1 + i % 3) for i in range(700)]
    size, root = await import_certificates(
        tmp_path / "bulk", signer, ORIGIN, certs, timestamp=1_700_000_000_000, batch=256
    )
    core = Sequencer(TreeEdge.empty(), 0, pool_limit=1000, max_batch=1000, interval=0.0)
    for c in certs:
        core.submit(Submission(LogEntry(EntryType.X509, c)))
    rnd = core.start_round(0.0, 1_700_000_000_000)
    assert rnd is not None
    assert (size, root) == (rnd.size, rnd.root)
    for tile, data in rnd.tiles:
        assert (tmp_path / "bulk" / tile.path()).read_bytes() == data, tile.path()

    async with running_log(tmp_path / "bulk", signer, check="full") as log:
        assert (log.size, log.root) == (700, root)
        leaf_input, _ = (await log.entries(123, 123))[0]
        index, proof = log.proof_by_hash(merkle.leaf_hash(leaf_input), 700)
        assert index == 123
        merkle.verify_inclusion(123, 700, merkle.leaf_hash(leaf_input), proof, root)
