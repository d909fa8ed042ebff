"""`trustchain bench apply`: what a validator does per committed block, piece by piece.

Every validator carries out every committed block on its one event loop
(trustchain.node.app ``_carry_out``): the block's entries go into the CT store
(``ReplicatedLog.append``), its DNS changes into the authority
(``Authority.apply``), and the checkpoint cosignatures of the validators are
collected until a quorum signed (``NodeApp._add_cosignature``).  This bench
times each of those in this process, on realistic state, without a cluster:

- dns: a batch of K new certificates (one TLSA owner each) applied on top of
  ``--published`` certificates already published;
- cosign: one block's checkpoint cosignatures arriving at one validator of
  four (its own note, then the three peers' notes, ECDSA P-256 keys as the
  validators' CT log keys are), and a stale re-broadcast cosigned note;
- ct: a round of K entries appended to a store of ``--published`` entries on
  disk (wall time, and the CPU time of the event-loop thread, which is what
  the other work of the node waits for); and one inclusion proof at that size
  (a status lookup).

Figures are per block (or per lookup) at the median; K is 1 and 10 (blocks
carry 1 to 10 certificates at the loads we measure).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import shutil
import statistics
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.name
import trio

from trustchain.node.errors import UserError

ORIGIN = "bench.apply.trustchain.example/log"
BATCHES = (1, 10)
"""Certificates (entries) per measured block."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "apply",
        help="per committed block: DNS records, checkpoint cosignatures, CT store append",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Times, in this process, what every validator does per committed block:
            applying a block's DNS changes (K new certificates on top of --published
            ones), collecting one checkpoint's cosignatures from four validators
            (ECDSA P-256 CT log keys), and appending K entries to a CT store of
            --published entries on disk; plus one inclusion proof at that size.
            K is 1 and 10.  Prints medians per block.

            examples:
              trustchain bench apply
              trustchain bench apply --published 100000 --runs 100 --json
            """
        ),
    )
    bench.add_argument(
        "--published",
        type=int,
        default=20_000,
        help="certificates already published / entries already logged (default 20000)",
    )
    bench.add_argument(
        "--runs", type=int, default=200, help="blocks timed per figure (default 200)"
    )
    bench.add_argument(
        "--only",
        choices=("dns", "cosign", "ct"),
        action="append",
        help="run only this part (repeatable; default all)",
    )
    bench.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)


def _say(text: str) -> None:
    print(f"bench apply: {text}", flush=True)


def _us(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1e6, 1)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.published < 1 or args.runs < 1:
        raise UserError("--published and --runs must be positive; e.g. --published 20000")
    parts = args.only or ["dns", "cosign", "ct"]
    figures: dict[str, Any] = {"published": args.published, "runs": args.runs}
    if "dns" in parts:
        figures["dns"] = measure_dns(args.published, args.runs)
    if "cosign" in parts:
        figures["cosign"] = measure_cosign(args.runs)
    if "ct" in parts:
        own_dir = args.dir is None
        work = Path(tempfile.mkdtemp(prefix="trustchain-bench-apply-")) if own_dir else args.dir
        work.mkdir(parents=True, exist_ok=True)
        try:
            figures["ct"] = trio.run(measure_ct, work, args.published, args.runs)
        finally:
            if own_dir:
                shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures)
    return 0


def _print(f: dict[str, Any]) -> None:
    print(f"\nper committed block, medians over {f['runs']} blocks, {f['published']:,} published")
    for row in f.get("dns", []):
        print(f"  dns    apply {row['batch']:>2} certificates      {row['p50_us']:>9.1f} us")
    cosign = f.get("cosign")
    if cosign:
        print(f"  cosign 4 notes of one checkpoint   {cosign['block_p50_us']:>9.1f} us")
        print(f"         a stale re-broadcast note   {cosign['stale_p50_us']:>9.1f} us")
    for row in f.get("ct", {}).get("append", []):
        print(
            f"  ct     append {row['batch']:>2} entries          {row['cpu_p50_us']:>9.1f} us "
            f"event-loop CPU, {row['wall_p50_us']:.0f} us wall"
        )
        print(
            f"         of which the tree edge      {row['edge_p50_us']:>9.1f} us"
            " (copy, append, root)"
        )
    if "ct" in f:
        print(f"  ct     one inclusion proof         {f['ct']['proof_p50_us']:>9.1f} us")


# --- DNS ------------------------------------------------------------------------------------


def measure_dns(published_count: int, runs: int) -> list[dict[str, Any]]:
    """`Authority.apply` of one block of K certificates (one name each) on top of
    `published_count` published ones; each run starts from the same snapshot."""
    from trustchain.dns.authority import Authority
    from trustchain.dns.records import CertificateIssued, PublishedRecords
    from trustchain.dns.zones import default_zone

    zones = [default_zone()]

    def certificate(i: int) -> CertificateIssued:
        host = f"host{i}.trust.hypermesh.online."
        return CertificateIssued(
            f"{i + 1:x}", (dns.name.from_text(host),), hashlib.sha256(host.encode()).digest()
        )

    _say(f"dns: publishing {published_count:,} certificates ...")
    published = PublishedRecords.empty(zone.origin for zone in zones)
    for start in range(0, published_count, 5_000):
        chunk = [certificate(i) for i in range(start, min(published_count, start + 5_000))]
        published = published.apply(chunk)
    rows = []
    for batch in BATCHES:
        blocks = [
            [certificate(published_count + run * batch + j) for j in range(batch)]
            for run in range(runs)
        ]
        gc.collect()
        timings = []
        for block in blocks:
            authority = Authority(zones, published)
            started = time.perf_counter()
            authority.apply(block, version=published.version + 1)
            timings.append(time.perf_counter() - started)
        rows.append(
            {"batch": batch, "p50_us": _us(timings), "mean_us": _us([statistics.mean(timings)])}
        )
    return rows


# --- checkpoint cosignatures -----------------------------------------------------------------


def measure_cosign(runs: int) -> dict[str, Any]:
    """One block's cosignatures at one validator: its own note, then three peers'.

    Each note goes through what `NodeApp._add_cosignature` does with it: parsed, then
    given to the node's `CosignatureCollector` with the CT store's size and root.
    """
    from trustchain.ct.checkpoint import (
        Checkpoint,
        CosignatureCollector,
        Cosigned,
        RFC6962NoteSigner,
        RFC6962NoteVerifier,
        Voter,
        sign_checkpoint,
    )
    from trustchain.ct.note import parse_note
    from trustchain.ct.signer import SoftwareSigner, generate_p256
    from trustchain.node.app import MAX_COSIG_AHEAD, MAX_COSIG_PENDING

    signers = [SoftwareSigner(generate_p256()) for _ in range(4)]
    voters = [
        Voter(f"v{i}", RFC6962NoteVerifier(ORIGIN, s.public_key()), 1)
        for i, s in enumerate(signers)
    ]
    rng = random.Random(1)
    first = 20_000

    async def sign_all() -> list[tuple[int, bytes, list[bytes]]]:
        out = []
        for run in range(runs):
            size, root = first + run, rng.randbytes(32)
            cp = Checkpoint(ORIGIN, size, root)
            notes = [
                await sign_checkpoint(cp, [RFC6962NoteSigner(ORIGIN, s, 1_700_000_000_000 + run)])
                for s in signers
            ]
            out.append((size, root, notes))
        return out

    _say(f"cosign: signing {runs} checkpoints with 4 P-256 keys ...")
    blocks = trio.run(sign_all)
    collector = CosignatureCollector(voters, ORIGIN, max_pending=MAX_COSIG_PENDING)

    def add(note: bytes, size: int, root: bytes) -> Cosigned | None:
        return collector.add(
            parse_note(note), size=size, root=lambda: root, max_ahead=MAX_COSIG_AHEAD
        )

    gc.collect()
    block_times, stale_times = [], []
    previous: bytes | None = None
    for size, root, notes in blocks:
        done: Cosigned | None = None
        started = time.perf_counter()
        for note in notes:  # ours first (as _cosign does), then the peers'
            done = add(note, size, root) or done
        block_times.append(time.perf_counter() - started)
        assert done is not None and done.cosigned.checkpoint.size == size, "no quorum"
        if previous is not None:
            started = time.perf_counter()
            add(previous, size, root)  # a peer's once-a-second re-broadcast of an older one
            stale_times.append(time.perf_counter() - started)
        previous = done.note
    return {"block_p50_us": _us(block_times), "stale_p50_us": _us(stale_times)}


# --- the CT store ------------------------------------------------------------------------------


async def measure_ct(work: Path, published_count: int, runs: int) -> dict[str, Any]:
    """`ReplicatedLog.append` of K entries on a store of `published_count` entries."""
    from trustchain.ct import devcerts
    from trustchain.ct.bulk import import_certificates
    from trustchain.ct.sct import EntryType, LogEntry
    from trustchain.ct.signer import SoftwareSigner, generate_p256
    from trustchain.ct.tiles import fingerprint, new_leaf
    from trustchain.node.app import ReplicatedLog
    from trustchain.node.state import LoggedEntry

    signer = SoftwareSigner(generate_p256())
    root = devcerts.make_root("TrustChain Bench Root")
    issuer = devcerts.make_intermediate(root, "TrustChain Bench Intermediate")
    template = devcerts.make_leaf(issuer, "apply.bench.example").der

    def cert(i: int) -> bytes:
        return template[:-8] + i.to_bytes(8, "big")

    _say(f"ct: bulk-importing {published_count:,} entries ...")
    data = work / "ct"
    timestamp = 1_700_000_000_000
    await import_certificates(
        data, signer, ORIGIN, (cert(i) for i in range(published_count)), timestamp=timestamp
    )
    log = await ReplicatedLog.open_replicated(data, signer, ORIGIN)
    chain = (fingerprint(issuer.der),)
    serial = published_count
    rows = []
    try:
        _say(f"ct: appending {runs} blocks of {' and of '.join(map(str, BATCHES))} entries ...")
        for batch in BATCHES:
            wall, cpu, pure = [], [], []
            for _ in range(runs):
                timestamp += 1
                entries = []
                edge = log._core.edge.copy()
                for j in range(batch):
                    leaf = new_leaf(LogEntry(EntryType.X509, cert(serial)), timestamp,
                                    edge.size + j, b"", chain)  # fmt: skip
                    serial += 1
                    # Only .leaf and .issuer_der are read by append.
                    entries.append(LoggedEntry(b"", leaf, issuer.der, None))  # type: ignore[arg-type]
                hashes = [e.leaf.leaf_hash() for e in entries]
                leaves = [e.leaf.encode() for e in entries]
                # The pure part of a round: the edge copied, appended to and hashed
                # (what Sequencer.start_round does with the tree).
                t0 = time.perf_counter()
                edge = log._core.edge.copy()
                edge.append(hashes, leaves)
                expected = edge.root()
                pure.append(time.perf_counter() - t0)
                c0, t0 = time.thread_time(), time.perf_counter()
                await log.append(entries, timestamp, expected)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            rows.append(
                {
                    "batch": batch,
                    "cpu_p50_us": _us(cpu),
                    "wall_p50_us": _us(wall),
                    "edge_p50_us": _us(pure),
                }
            )
        size = log.size
        rng = random.Random(2)
        proofs = []
        for _ in range(runs * 5):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            log.inclusion_proof(index, size)
            proofs.append(time.perf_counter() - t0)
    finally:
        log.close()
    return {"append": rows, "proof_p50_us": _us(proofs), "size": size}
