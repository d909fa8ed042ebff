"""Bulk import: build a new log's data directory directly, without HTTP.

For benchmarks (a tree of a million entries in seconds) and for seeding test
logs.  It writes the same tiles, index and checkpoint a live log would for the
same certificates at the same timestamp (a test checks the bytes match), but
encodes entries with plain byte concatenation instead of the per-entry
dataclasses, writes tiles in large rounds, and syncs the file system once at
the end instead of after every round.  The checkpoint is written, durably,
only after that sync: a crash during the import leaves a directory that
``open_store`` refuses (tiles without a checkpoint), never a checkpoint that
covers unwritten tiles.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from trustchain.ct.checkpoint import Checkpoint, RFC6962NoteSigner, sign_checkpoint
from trustchain.ct.sct import MAX_CERT
from trustchain.ct.signer import Signer
from trustchain.ct.store import EntryIndex, TileFiles
from trustchain.ct.tiles import TreeEdge

# Fixed parts of the encodings (RFC 6962 section 3.4, static-ct-api TileLeaf):
_X509 = b"\x00\x00"  # LogEntryType x509_entry
_LEAF_PREFIX = b"\x00\x00"  # MerkleTreeLeaf v1, timestamped_entry
_EXT_PREFIX = b"\x00\x08\x00\x00\x05"  # CtExtensions<8>: leaf_index(0), 5 bytes
_NO_CHAIN = b"\x00\x00"  # TileLeaf certificate_chain<0..2^16-1>, empty


async def import_certificates(
    data_dir: Path,
    signer: Signer,
    origin: str,
    certificates: Iterable[bytes],
    *,
    timestamp: int,
    batch: int = 65536,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, bytes]:
    """Import x509 entries (DER certificates, no chain) into a new data directory.

    Every entry gets ``timestamp``.  Returns (size, root).  Blocks while it works:
    it is a one-shot tool, not part of a serving loop.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "checkpoint").exists() or (data_dir / "tile").exists():
        raise ValueError(f"{data_dir} already holds a log; bulk import needs a new directory")
    files = TileFiles(data_dir, durable=False)
    index = EntryIndex(data_dir / "index.db", cache_mib=256)
    edge = TreeEdge.empty()
    ts = timestamp.to_bytes(8, "big")
    sha256 = hashlib.sha256
    try:
        hashes: list[bytes] = []
        leaves: list[bytes] = []
        rows: list[tuple[int, bytes, bytes, int]] = []

        def flush() -> None:
            writes, superseded = edge.append(hashes, leaves)
            files.write(writes)
            files.delete(superseded)
            index.add(rows, edge.size)
            hashes.clear()
            leaves.clear()
            rows.clear()
            if progress:
                progress(edge.size)

        for i, cert in enumerate(certificates):
            if not 1 <= len(cert) <= MAX_CERT:
                raise ValueError(f"certificate {i} has {len(cert)} bytes")
            signed = len(cert).to_bytes(3, "big") + cert
            te = ts + _X509 + signed + _EXT_PREFIX + i.to_bytes(5, "big")
            leaf_hash = sha256(b"\x00" + _LEAF_PREFIX + te).digest()
            hashes.append(leaf_hash)
            leaves.append(te + _NO_CHAIN)
            rows.append((i, leaf_hash, sha256(_X509 + signed).digest(), timestamp))
            if len(hashes) == batch:
                flush()
        if hashes:
            flush()
        # Everything reaches the disk before the checkpoint that covers it.
        os.sync()
        signed_cp = await sign_checkpoint(
            Checkpoint(origin, edge.size, edge.root()),
            [RFC6962NoteSigner(origin, signer, timestamp)],
        )
        TileFiles(data_dir).write_checkpoint(signed_cp)
        return edge.size, edge.root()
    finally:
        index.close()
