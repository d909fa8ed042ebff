"""Helpers shared by the ct tests (imported by name; tests/ct is on sys.path)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import devcerts
from trustchain.ct.chain import ChainValidator
from trustchain.ct.client import CTClient, HTTPSConnection, client_context
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.sequencer import Submission
from trustchain.ct.service import CTLog, LogParams, LogUnavailable
from trustchain.ct.signer import SoftwareSigner
from trustchain.ct.store import Check

ORIGIN = "ct.test.example/log"
REPO = Path(__file__).resolve().parents[2]


def new_signer() -> SoftwareSigner:
    return SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))


def fake_submission(i: int, size: int = 40) -> Submission:
    """An x509 entry whose 'certificate' is opaque bytes (the store does not parse it)."""
    body = (b"certificate %d " % i).ljust(size, b".")
    return Submission(LogEntry(EntryType.X509, body))


@asynccontextmanager
async def running_log(
    data: Path,
    signer: SoftwareSigner,
    *,
    validator: ChainValidator | None = None,
    params: LogParams | None = None,
    check: Check = "quick",
) -> AsyncIterator[CTLog]:
    log = await CTLog.open(
        data, signer, ORIGIN, validator, params or LogParams(interval=0.0), check=check
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            yield log
            nursery.cancel_scope.cancel()
    finally:
        log.close()


async def fill(log: CTLog, start: int, count: int, concurrency: int = 50) -> None:
    """Submit fake entries start..start+count-1 concurrently and wait for all SCTs."""

    async def worker(k: int) -> None:
        for i in range(start + k, start + count, concurrency):
            await log.submit(fake_submission(i))

    async with trio.open_nursery() as nursery:
        for k in range(min(concurrency, count)):
            nursery.start_soon(worker, k)


async def build_log(path: Path, signer: SoftwareSigner, n: int) -> bytes:
    """A closed log of `n` fake entries at `path`; its root."""
    async with running_log(path, signer) as log:
        await fill(log, 0, n)
        return log.root


def copy_log(built: tuple[Path, bytes], tmp_path: Path) -> Path:
    """A copy of a module's built log (`build_log`) for one test to change."""
    dst = tmp_path / "log"
    shutil.copytree(built[0], dst)
    return dst


async def run_until_storage_fails(log: CTLog, first: int, count: int = 5) -> list[str]:
    """Run `log` with `count` submissions (entries `first`...) until its storage fails
    and stops it; each submission's outcome: "ok" or its LogUnavailable message."""
    outcomes: list[str] = []

    async def submit(i: int) -> None:
        try:
            await log.submit(fake_submission(first + i))
            outcomes.append("ok")
        except LogUnavailable as exc:
            outcomes.append(str(exc))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.run)
            for i in range(count):
                nursery.start_soon(submit, i)
    except BaseExceptionGroup as group:
        if not group.subgroup(OSError):
            raise
        return outcomes
    raise AssertionError("the log's storage did not fail")


# --- HTTPS fixtures -----------------------------------------------------------------


@dataclass
class TLSFiles:
    ca_pem: bytes
    cert: Path
    key: Path


def tls_files(tmp: Path) -> TLSFiles:
    ca, server = devcerts.make_tls_server()
    cert, key = tmp / "tls.pem", tmp / "tls.key"
    cert.write_bytes(server.pem)
    key.write_bytes(server.key_pem)
    return TLSFiles(ca.pem, cert, key)


def connect(port: int, tls: TLSFiles, signer: SoftwareSigner | None = None) -> CTClient:
    conn = HTTPSConnection("::1", port, client_context(cadata=tls.ca_pem))
    return CTClient(conn, signer.public_key() if signer else None)
