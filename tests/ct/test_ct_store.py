"""The durable store under the log driver: reopen, verification, damage detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
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
from trustchain.ct.checkpoint import RFC6962NoteVerifier, open_checkpoint
from trustchain.ct.sequencer import Sequencer
from trustchain.ct.service import CTLog, LogParams, LogRequestError
from trustchain.ct.signer import SoftwareSigner
from trustchain.ct.store import StoreCorrupt, StoreKeyMismatch, StoreLocked, open_store
from trustchain.ct.tiles import TileID, TreeEdge


@pytest.fixture(scope="module")
def signer() -> SoftwareSigner:
    return new_signer()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, signer: SoftwareSigner) -> tuple[Path, bytes]:
    """A closed log of 600 entries: full and partial tiles on two levels."""
    path = tmp_path_factory.mktemp("built") / "log"
    root = trio.run(build_log, path, signer, 600)
    return path, root


async def test_entries_survive_reopen_with_proofs(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    async with running_log(path, signer, check="full") as log:
        assert log.size == 600 and log.root == built[1]
        # The checkpoint on disk is the one the log serves, and verifies.
        verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
        cp, _ts, _ = open_checkpoint(log.checkpoint(), verifier)
        assert (cp.size, cp.root_hash) == (600, built[1])
        # Every entry comes back (in pages, as RFC 6962 section 4.6 allows), at its
        # index, with an inclusion proof that verifies.
        where: dict[bytes, int] = {}
        start = 0
        while start < 600:
            page = await log.entries(start, 599)
            assert 0 < len(page) <= 256
            for k, (leaf_input, extra) in enumerate(page):
                index = start + k
                te = sct.parse_merkle_tree_leaf(leaf_input)
                assert sct.leaf_index_of(te.extensions) == index
                assert extra == b"\0\0\0"  # no issuers: an empty certificate_chain
                where[te.entry.certificate] = index
                if index % 37 == 0:
                    h = merkle.leaf_hash(leaf_input)
                    got_index, proof = log.proof_by_hash(h, 600)
                    assert got_index == index
                    merkle.verify_inclusion(index, 600, h, proof, built[1])
            start += len(page)
        assert set(where) == {fake_submission(i).entry.certificate for i in range(600)}
        # A duplicate submission returns an SCT for the logged entry, no new leaf.
        again = await log.submit(fake_submission(42))
        assert sct.leaf_index_of(again.extensions) == where[fake_submission(42).entry.certificate]
        assert log.size == 600
        # Appending continues consistently.
        await fill(log, 600, 100)
        assert log.size == 700
        proof = log.consistency(600, 700)
        merkle.verify_consistency(600, 700, built[1], log.root, proof)


async def test_second_process_is_locked_out(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
    first = open_store(path, verifier)
    try:
        with pytest.raises(StoreLocked):
            open_store(path, verifier)
    finally:
        first.close()


def _damage_cases() -> list[tuple[str, str]]:
    return [
        ("truncate:tile/0/000", "tile/0/000: 8191 bytes"),
        ("flip:tile/0/001", "tile/0/001: hashes do not match"),
        ("flip:tile/1/000.p/2", "root computed from the edge tiles"),
        ("truncate:tile/0/002.p/88", "tile/0/002.p/88"),
        ("delete:tile/0/001", "tile/0/001: tile is missing"),
        ("delete:tile/data/000", "tile/data/000: data tile is missing"),
        ("flip:tile/data/001", "tile/data/001: entry"),
        ("truncate:tile/data/002.p/88", "tile/data/002.p/88"),
        ("flip:checkpoint", "checkpoint"),
        ("delete:checkpoint", "checkpoint is missing but tiles exist"),
    ]


@pytest.mark.parametrize(("damage", "message"), _damage_cases())
async def test_damage_is_detected_at_start(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner, damage: str, message: str
) -> None:
    path = copy_log(built, tmp_path)
    how, name = damage.split(":")
    target = path / name
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[:-1])
    elif how == "flip":
        at = len(data) // 2 if name != "checkpoint" else len(data) - 10
        target.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])
    else:
        target.unlink()
    with pytest.raises(StoreCorrupt, match=message.replace(".", r"\.")):
        await CTLog.open(path, signer, ORIGIN)


async def test_damaged_old_data_tile_is_found_by_full_check_and_never_served(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    target = path / "tile/data/000"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match="tile/data/000"):
        await CTLog.open(path, signer, ORIGIN, check="full")
    # The quick check does not read old data tiles, but serving them checks them.
    async with running_log(path, signer) as log:
        with pytest.raises(StoreCorrupt, match="tile/data/000"):
            await log.entries(0, 3)
        with pytest.raises(StoreCorrupt, match="tile/data/000"):
            await log.static("tile/data/000")
        assert len(await log.entries(300, 301)) == 2


async def test_wrong_key_or_origin_is_refused(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    with pytest.raises(StoreKeyMismatch, match="checkpoint"):
        await CTLog.open(path, new_signer(), ORIGIN)
    with pytest.raises(StoreKeyMismatch, match="checkpoint"):
        await CTLog.open(path, signer, "other.example/log")


async def test_unpublished_round_is_rolled_back(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    """Tiles written by a round that crashed before its checkpoint are removed."""
    path = copy_log(built, tmp_path)
    verifier = RFC6962NoteVerifier(ORIGIN, signer.public_key())
    store = open_store(path, verifier)
    core = Sequencer(store.edge, store.timestamp, interval=0.0)
    for i in range(10_000, 10_000 + 300):
        core.submit(fake_submission(i))
    rnd = core.start_round(0.0, 1)
    assert rnd is not None
    store.files.write(rnd.tiles)  # step 1 done, then "crash" before the checkpoint
    store.close()
    assert (path / "tile/0/002").exists() and (path / "tile/data/003.p/132").exists()
    async with running_log(path, signer) as log:
        assert log.size == 600 and log.root == built[1]
        assert not (path / "tile/0/002").exists()
        assert not (path / "tile/data/003.p/132").exists()
        assert (path / "tile/0/002.p/88").exists()
        await fill(log, 20_000, 50)
        merkle.verify_consistency(600, 650, built[1], log.root, log.consistency(600, 650))


async def test_lost_or_damaged_index_is_rebuilt(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = copy_log(built, tmp_path)
    (path / "index.db").write_bytes(b"this is not a database" * 100)
    for extra in ("index.db-wal", "index.db-shm"):
        (path / extra).unlink(missing_ok=True)
    async with running_log(path, signer) as log:
        leaf_input, _ = (await log.entries(599, 599))[0]
        assert log.proof_by_hash(merkle.leaf_hash(leaf_input), 600)[0] == 599
        size = log.size
        again = await log.submit(fake_submission(7))
        index = sct.leaf_index_of(again.extensions)
        assert index is not None and index < 600 and log.size == size


async def test_partial_tiles_of_published_sizes_stay_until_full(
    tmp_path: Path, signer: SoftwareSigner
) -> None:
    path = tmp_path / "log"
    async with running_log(path, signer) as log:
        for n in (10, 20, 30):
            await fill(log, log.size, n - log.size)
        for w in (10, 20, 30):
            assert await log.static(f"tile/0/000.p/{w}") is not None
            assert (await log.static(f"tile/data/000.p/{w}")) is not None
        assert await log.static("tile/0/000.p/31") is None  # beyond the tree
        await fill(log, 30, 256 - 30)
        assert (path / "tile/0/000").exists()
        # Superseded partials are removed after the answers went out (step 4).
        with trio.fail_after(5):
            while (path / "tile/0/000.p").exists() or (path / "tile/data/000.p").exists():
                await trio.sleep(0.01)
        assert await log.static("tile/0/000") is not None
        assert await log.static("tile/0/000.p/10") is None


def test_edge_load_rejects_a_short_tile(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TreeEdge.load(3, lambda t: b"\0" * 64)
    assert TileID(0, 0, 3).path() == "tile/0/000.p/3"


async def test_new_log_publishes_the_empty_tree(tmp_path: Path, signer: SoftwareSigner) -> None:
    async with running_log(tmp_path / "new", signer, params=LogParams(interval=0.0)) as log:
        size, ts, root, _ = log.sth()
        assert (size, root) == (0, merkle.EMPTY_ROOT) and ts > 0
        assert (tmp_path / "new" / "checkpoint").read_bytes() == log.checkpoint()


async def test_storage_failure_stops_the_sequencer_and_loses_nothing(
    built: tuple[Path, bytes], tmp_path: Path, signer: SoftwareSigner
) -> None:
    """A write error while publishing is fatal: waiting submitters are told, the
    driver raises, and the directory reopens at the last published checkpoint."""
    import errno

    from trustchain.ct.service import LogUnavailable

    path = copy_log(built, tmp_path)
    log = await CTLog.open(path, signer, ORIGIN, None, LogParams(interval=0.0))
    real_write = log._files.write

    def failing_write(items: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    log._files.write = failing_write  # type: ignore[method-assign]
    outcomes = await run_until_storage_fails(log, 50_000)
    assert outcomes and all("No space left" in o for o in outcomes)
    with pytest.raises(LogUnavailable):
        await log.submit(fake_submission(1))
    log._files.write = real_write  # type: ignore[method-assign]
    log.close()
    async with running_log(path, signer) as again:
        assert (again.size, again.root) == (600, built[1])


async def test_inclusion_proofs_stay_right_while_the_edge_grows(
    tmp_path: Path, signer: SoftwareSigner
) -> None:
    """Complete nodes of partial tiles are remembered between proofs: proofs asked at
    every size, before and after the edge tile fills and a new one starts, all verify."""
    async with running_log(tmp_path / "log", signer) as log:
        size = 0
        for step in (1, 2, 5, 13, 60, 175, 1, 3, 40, 300):
            await fill(log, size, step)
            size += step
            assert log.size == size
            for index in {0, size // 3, size // 2, max(0, size - 7), size - 2, size - 1} - {-1}:
                proof = log.inclusion_proof(index, size)
                leaf = merkle.leaf_hash((await log.entries(index, index))[0][0])
                merkle.verify_inclusion(index, size, leaf, proof, log.root)
                assert log.proof_by_hash(leaf, size) == (index, proof)
        with pytest.raises(LogRequestError):
            log.inclusion_proof(0, size + 1)
