"""Child process for the crash test: appends under load until it is SIGKILLed.

usage: python ct_crash_child.py DATA_DIR LOG_KEY_PEM RUN_ID

Prints ``ready`` once the log is open, then ``ack INDEX LEAF_HASH_HEX`` for every
SCT it receives (the entry is durable by then) and ``ckpt SIZE ROOT_HEX`` for
published tree heads it observes.  Every line is flushed at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from trustchain.ct import merkle, sct
from trustchain.ct.sct import EntryType, LogEntry, TimestampedEntry
from trustchain.ct.sequencer import Submission
from trustchain.ct.service import CTLog, LogParams
from trustchain.ct.signer import load_p256_signer

ORIGIN = "crash.test.example/log"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(data: Path, key: Path, run_id: str) -> None:
    signer = load_p256_signer(key)
    log = await CTLog.open(data, signer, ORIGIN, None, LogParams(interval=0.005), check="quick")
    out("ready")

    async def worker(k: int) -> None:
        i = 0
        while True:
            # A few resubmissions of already-acknowledged entries exercise dedup.
            n = i // 2 if i % 7 == 6 else i
            body = (f"run {run_id} worker {k} entry {n} ".encode()).ljust(120, b"#")
            entry = LogEntry(EntryType.X509, body)
            s = await log.submit(Submission(entry))
            index = sct.leaf_index_of(s.extensions)
            assert index is not None
            leaf = sct.merkle_tree_leaf(TimestampedEntry(s.timestamp, entry, s.extensions))
            out(f"ack {index} {merkle.leaf_hash(leaf).hex()}")
            i += 1

    async def watch() -> None:
        last = -1
        while True:
            if log.size != last:
                last = log.size
                out(f"ckpt {log.size} {log.root.hex()}")
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.run)
        nursery.start_soon(watch)
        for k in range(48):
            nursery.start_soon(worker, k)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
