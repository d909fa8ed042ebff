"""The publishing order of a round when its waits overlap (sequencer.py, store.py).

Tiles are renamed into place before they are synced and synced all at once; the
checkpoint is signed and staged meanwhile and renamed only after every tile is
durable; the index may run ahead of the checkpoint.  These tests check that
order on the real file system and what a crash at each new point leaves.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from ct_testlib import (
    ORIGIN,
    build_log,
    copy_log,
    fake_submission,
    fill,
    new_signer,
    run_until_storage_fails,
    running_log,
)

from trustchain.ct import merkle, sct
from trustchain.ct.checkpoint import (
    Checkpoint,
    RFC6962NoteSigner,
    RFC6962NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from trustchain.ct.sequencer import Sequencer
from trustchain.ct.service import CTLog, LogParams, LogRequestError
from trustchain.ct.signer import SoftwareSigner
from trustchain.ct.store import StagedCheckpoint, open_store


@pytest.fixture(scope="module")
def signer() -> SoftwareSigner:
    return new_signer()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, signer: SoftwareSigner) -> tuple[Path, bytes]:
    """A closed log of 250 entries: the next rounds cross a tile boundary."""
    path = tmp_path_factory.mktemp("order") / "log"
    return path, trio.run(build_log, path, signer, 250)


class _Recorder:
    """Records, in order, each finished sync (by the path it synced) and each rename."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _add(self, kind: str, path: str) -> None:
        with self._lock:
            self.events.append((kind, path))

    def sync(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            real(fd)
            self._add("synced", path)

        return call

    def replace(self, real: Callable[..., None]) -> Callable[..., None]:
        def call(src: str | Path, dst: str | Path) -> None:
            real(src, dst)
            self._add("renamed", os.fspath(dst))

        return call


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recorder]:
    rec = _Recorder()
    monkeypatch.setattr(os, "fsync", rec.sync(os.fsync))
    monkeypatch.setattr(os, "fdatasync", rec.sync(os.fdatasync))
    monkeypatch.setattr(os, "replace", rec.replace(os.replace))
    yield rec


async def test_checkpoint_is_renamed_only_after_every_tile_and_directory_is_synced(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner, recorder: _Recorder
) -> None:
    path = copy_log(built, tmp_path).resolve()
    checkpoint = str(path / "checkpoint")
    async with running_log(path, signer) as log:
        # Rounds that complete tile 0 (new full tiles, a new 001.p directory).
        await fill(log, 250, 20)
        assert log.size == 270
    events = recorder.events
    commits = [i for i, (kind, p) in enumerate(events) if (kind, p) == ("renamed", checkpoint)]
    assert len(commits) >= 1
    start = 0
    tiles_seen = 0
    for commit in commits:
        round_events = events[start:commit]
        renamed = [p for kind, p in round_events if kind == "renamed"]
        assert all("/tile/" in p for p in renamed), renamed
        for tile in renamed:
            at = round_events.index(("renamed", tile))
            later = {p for kind, p in round_events[at:] if kind == "synced"}
            # The tile's data, and its name in its directory, are on disk before
            # the checkpoint that covers it is named.
            assert tile in later, f"{tile} not synced before the checkpoint"
            assert str(Path(tile).parent) in later, f"{tile}'s directory not synced"
            tiles_seen += 1
        # The checkpoint's own contents were synced before the rename too.
        staged = [p for kind, p in round_events if kind == "synced" and "/.checkpoint." in p]
        assert len(staged) == 1
        # ... and its name right after.
        assert ("synced", str(path)) in events[commit + 1 : commit + 2]
        start = commit + 1
    assert tiles_seen >= 4  # full tile 0, data tile 0, the new partials
    assert (path / "tile/0/000").exists() and (path / "tile/data/001.p/14").exists()


async def _signed(signer: SoftwareSigner, size: int, root: bytes) -> bytes:
    return await sign_checkpoint(
        Checkpoint(ORIGIN, size, root), [RFC6962NoteSigner(ORIGIN, signer, 2)]
    )


async def test_crash_after_tile_sync_and_staged_checkpoint_reopens_at_the_old_checkpoint(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    """A crash after step 1 and the first half of step 2: the tiles are durable (or,
    renamed but not yet synced, torn), the index took the round, the signed
    checkpoint sits under its temporary name.  The store reopens at the old
    checkpoint and the round's entries are sequenced again when resubmitted."""
    path = copy_log(built, tmp_path)
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
    store = open_store(path, verifier)
    core = Sequencer(store.edge, store.timestamp, interval=0.0)
    for i in range(1000, 1020):
        core.submit(fake_submission(i))
    rnd = core.start_round(0.0, 2)
    assert rnd is not None
    store.files.write(rnd.tiles)
    staged = store.files.stage_checkpoint(await _signed(signer, rnd.size, rnd.root))
    rows = [(e.index, e.leaf_hash, e.leaf.entry.entry.identity(), 2) for e in rnd.entries]
    store.index.add(rows, rnd.size)
    store.close()
    # A renamed tile whose sync had not finished may come back torn.
    torn = path / "tile/data/001.p/14"
    torn.write_bytes(torn.read_bytes()[:50])
    assert staged.tmp.exists() and (path / "tile/0/000").exists()

    async with running_log(path, signer) as log:
        assert (log.size, log.root) == (250, built[1])
        assert not staged.tmp.exists()
        assert not torn.exists() and not (path / "tile/0/000").exists()
        # The index no longer claims the unpublished entries ...
        with pytest.raises(LogRequestError, match="no entry"):
            log.proof_by_hash(rows[5][1], 250)
        # ... so a resubmission is logged anew, and proves.
        again = await log.submit(fake_submission(1005))
        index = sct.leaf_index_of(again.extensions)
        assert index is not None and 250 <= index < log.size
        leaf_input, _ = (await log.entries(index, index))[0]
        got, proof = log.proof_by_hash(merkle.leaf_hash(leaf_input), log.size)
        assert got == index
        merkle.verify_inclusion(index, log.size, merkle.leaf_hash(leaf_input), proof, log.root)
        merkle.verify_consistency(250, log.size, built[1], log.root, log.consistency(250, log.size))


async def test_duplicate_of_an_entry_indexed_but_not_yet_published_waits_for_the_round(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    log = await CTLog.open(path, signer, ORIGIN, None, LogParams(interval=0.0))
    real_publish = log._files.publish_checkpoint
    entered, gate = threading.Event(), threading.Event()
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())

    def held_publish(staged: StagedCheckpoint) -> None:
        # Only the round that logs the submission is held: the log may first cut
        # a round without entries (a fresh checkpoint at start).
        if open_checkpoint(staged.tmp.read_bytes(), verifier)[0].size > 250:
            entered.set()
            gate.wait()
        real_publish(staged)

    log._files.publish_checkpoint = held_publish  # type: ignore[method-assign]
    sub = fake_submission(4242)
    results: list[int | None] = []

    async def submit() -> None:
        s = await log.submit(sub)
        results.append(sct.leaf_index_of(s.extensions))

    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(log.run)
                nursery.start_soon(submit)
                try:
                    await trio.to_thread.run_sync(entered.wait)
                    # The round is about to commit; its index commit may still be running.
                    while log._index.find_identity(sub.entry.identity()) is None:
                        await trio.sleep(0.001)
                    nursery.start_soon(submit)
                    await trio.testing.wait_all_tasks_blocked()
                    # Not answered from the index: the entry is not published yet.
                    assert results == [] and log.size == 250
                finally:
                    # Always let the shielded round finish, or the nursery never exits.
                    gate.set()
                while len(results) < 2:
                    await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
    finally:
        log.close()
    assert results == [250, 250]


async def test_failed_commit_writes_no_checkpoint_and_forgets_the_indexed_round(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    log = await CTLog.open(path, signer, ORIGIN, None, LogParams(interval=0.0))
    before = (path / "checkpoint").read_bytes()

    def failing_publish(staged: StagedCheckpoint) -> None:
        raise OSError(errno.EIO, "Input/output error")

    log._files.publish_checkpoint = failing_publish  # type: ignore[method-assign]
    outcomes = await run_until_storage_fails(log, 7000)
    assert outcomes and all("Input/output error" in o for o in outcomes)
    # The index took the round alongside the tiles; the failure dropped it again.
    assert log._index.indexed_size() == 250
    assert log._index.find_identity(fake_submission(7000).entry.identity()) is None
    assert (path / "checkpoint").read_bytes() == before
    assert not list(path.glob(".checkpoint.*.tmp"))
    log.close()
    async with running_log(path, signer) as again:
        assert (again.size, again.root) == (250, built[1])
