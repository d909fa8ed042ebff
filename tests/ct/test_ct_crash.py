"""Crash test: a child appends under load and is SIGKILLed at random moments.

After every kill the parent reopens the store itself and checks that the tree
verifies (every tile and entry, ``check="full"``), that every acknowledged entry
is present at its index with its leaf hash, and that the new tree head is
consistent with every tree head seen before (published by the child, or found
after an earlier restart).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ct_testlib import new_signer

from trustchain.ct import merkle
from trustchain.ct.checkpoint import RFC6962NoteVerifier
from trustchain.ct.signer import p256_pem
from trustchain.ct.store import TreeReader, open_store

CHILD = Path(__file__).with_name("ct_crash_child.py")
ORIGIN = "crash.test.example/log"
KILLS = 24


def _run_child(data: Path, key: Path, run_id: str, rng: random.Random) -> tuple[list[str], bool]:
    """Start a child, kill it at a random moment; return its complete output lines."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data), str(key), run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    # One kill in five lands during start-up (recovery itself must be crash-safe).
    early = rng.random() < 0.2
    delay = rng.uniform(0.0, 0.4) if early else rng.uniform(0.05, 0.5)
    ready_at = time.monotonic() if early else None
    deadline = time.monotonic() + 30
    while True:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
        if ready_at is None and b"ready\n" in buf:
            ready_at = time.monotonic()
        if ready_at is not None and time.monotonic() >= ready_at + delay:
            break
        assert proc.poll() is None, f"child exited early: {buf[-500:]!r}"
        assert time.monotonic() < deadline, "child never became ready"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read()
    if rest:
        buf += rest
    proc.stdout.close()
    # A line cut by the kill has no newline: it was never fully written.
    lines = buf.decode().split("\n")[:-1]
    return lines, b"ready\n" in buf


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CT_CRASH_SEED", "6962")))
    signer = new_signer()
    key = tmp_path / "log.key"
    key.write_bytes(p256_pem(signer._key))  # type: ignore[arg-type]
    data = tmp_path / "data"
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
    acked: dict[int, str] = {}
    heads: list[tuple[int, bytes]] = []
    total_acks = 0
    during_startup = 0
    for kill in range(KILLS):
        lines, was_ready = _run_child(data, key, f"{kill}", rng)
        during_startup += not was_ready
        for line in lines:
            kind, a, b = [*line.split(" "), "", ""][:3]
            if kind == "ack":
                index = int(a)
                assert acked.setdefault(index, b) == b, (
                    f"index {index} acknowledged twice differently"
                )
                total_acks += 1
            elif kind == "ckpt":
                heads.append((int(a), bytes.fromhex(b)))

        # Reopen as the next process would, verifying every tile and entry.
        store = open_store(data, verifier, check="full")
        try:
            size, root = store.edge.size, store.edge.root()
            reader = TreeReader(store.files, store.edge)
            assert not acked or max(acked) < size, "an acknowledged entry is beyond the tree"
            hashes: dict[int, list[bytes]] = {}
            for index, hex_hash in acked.items():
                tile = index // 256
                if tile not in hashes:
                    hashes[tile] = reader.leaf_hashes(tile)
                assert hashes[tile][index % 256].hex() == hex_hash, f"entry {index} lost or changed"
            # The new head is consistent with every head seen before.
            for old_size, old_root in heads:
                assert old_size <= size
                if old_size == 0:
                    assert old_root == merkle.EMPTY_ROOT
                    continue
                proof = merkle.consistency_proof(reader.node, old_size, size)
                merkle.verify_consistency(old_size, size, old_root, root, proof)
            heads.append((size, root))
        finally:
            store.close()
    # The load really ran: many rounds, several tile boundaries crossed.
    assert total_acks > 1000, total_acks
    assert heads[-1][0] > 2 * 256
    print(
        f"{KILLS} kills ({during_startup} during start-up), {total_acks} acks, size {heads[-1][0]}"
    )
