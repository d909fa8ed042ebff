"""Durable storage for a tiled log: files in the static-ct-api layout plus an index.

A data directory holds::

    checkpoint              the latest signed checkpoint: the commit point
    tile/<L>/<N>[.p/<W>]    hash tiles          tile/data/<N>[.p/<W>]   entry bundles
    issuer/<sha256 hex>     issuer certificates (DER), referenced by entries
    index.db                SQLite: leaf hash -> index, entry identity -> (index, timestamp)
    lock                    flock of the one process that writes

The tiles and the checkpoint *are* the log: any static file server can publish
the directory, and a monitor can audit it without this process.  The checkpoint
is written last, so a size is durable exactly when a checkpoint covering it is.
``index.db`` only speeds up lookups; it is rebuilt from the data tiles whenever it
lags the checkpoint or cannot be read.

Contracts (the sequencer relies on them):
- ``TileFiles.write`` returns only when every file and the directory entries
  naming them are on disk.  Each tile is written to a temporary name and renamed
  into place (readers never see half a file), then all the round's files and
  dirty directories are synced at once (see ``_SYNC_WORKERS``).  A new tile is
  renamed before its sync: every tile a round writes lies beyond the published
  checkpoint (a tile of a published size is never rewritten), so a crash before
  the sync leaves at worst torn files beyond the checkpoint, which ``open_store``
  removes.  A file that already exists is replaced only by a synced one.  It
  raises ``OSError`` on failure.  Only this module touches the files and sqlite3.
- The checkpoint is written in two halves so that its sync overlaps the tiles':
  ``stage_checkpoint`` writes and syncs a temporary file (any time),
  ``publish_checkpoint`` renames it to ``checkpoint`` and syncs the directory --
  the commit point, called only after ``write`` returned for the round's tiles.
  A crash in between leaves the old checkpoint and a temporary file that
  ``open_store`` removes.
- ``open_store`` verifies what it opens: the checkpoint's signature, every hash
  tile against the level above and against the checkpoint's root, the edge data
  tile (and with ``check="full"`` every data tile) against the level-0 hashes.
  Anything wrong raises ``StoreCorrupt`` naming the file; nothing is repaired
  silently except removing files beyond the checkpoint (written by a round that
  crashed before it was published) and rebuilding the index.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trustchain.ct import merkle
from trustchain.ct._tls import DecodeError
from trustchain.ct.checkpoint import (
    Checkpoint,
    CheckpointError,
    RFC6962NoteVerifier,
    open_checkpoint,
)
from trustchain.ct.merkle import HASH_SIZE
from trustchain.ct.sct import DigitallySigned
from trustchain.ct.tiles import (
    DATA,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    TileLeaf,
    TreeEdge,
    edge_widths,
    full_tiles,
    parse_data_tile,
    parse_tile_path,
    split_hashes,
)

Check = Literal["quick", "full"]
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` for long start-up checks."""


class StoreCorrupt(Exception):
    """The data directory is damaged; the message names the file and the problem.

    Fatal: the log must not serve or extend a store in this state.
    """


class StoreKeyMismatch(StoreCorrupt):
    """The checkpoint does not verify with the key and origin given: most likely not the
    ones the directory was started with (else the checkpoint is damaged)."""


class StoreLocked(Exception):
    """Another process has the data directory open."""


_SYNC_WORKERS = 8
"""Threads that sync one round's files at once.  ext4's journal (jbd2) lets every
fsync that arrives while a commit is forming wait for that one commit, so syncing
a round's files together costs about one journal commit and one cache flush
instead of one per file; syncing them one after another costs one each."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_and_close(fd: int) -> None:
    # fdatasync: the data and the size (all that is read back); mtime is not needed.
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StagedCheckpoint:
    """A signed checkpoint on disk under a temporary name, synced; not yet the commit."""

    tmp: Path
    """The synced temporary file, renamed to ``checkpoint`` by ``publish_checkpoint``."""


class TileFiles:
    """The files of a data directory.  Reads are safe from any thread; writes are not
    concurrent with each other (one sequencer), except that a checkpoint may be
    staged while tiles are written."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        # durable=False skips per-file fsync for bulk imports, which sync the
        # whole file system once before writing their checkpoint (bulk.py).
        self.durable = durable
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Stop the sync threads (they are started again if needed)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    _SYNC_WORKERS, thread_name_prefix="ct-sync"
                )
            return self._pool

    def path(self, tile: TileID) -> Path:
        return self.root / tile.path()

    def read(self, tile: TileID) -> bytes | None:
        try:
            return self.path(tile).read_bytes()
        except FileNotFoundError:
            return None

    def _makedirs(self, d: Path, dirty: set[Path]) -> None:
        missing = []
        while not d.exists():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            with contextlib.suppress(FileExistsError):
                m.mkdir()
            # The new directory's name lives in its parent: fsync that too.
            dirty.add(m.parent)

    def _write_tmp(self, path: Path, data: bytes, dirty: set[Path]) -> tuple[Path, int]:
        """Write ``data`` to a new temporary file beside ``path``; returns it and its
        open descriptor (not synced)."""
        self._makedirs(path.parent, dirty)
        # Unique per writer, so that two writers of one path never share a temp file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return tmp, fd

    def _write_one(self, path: Path, data: bytes, dirty: set[Path]) -> None:
        """Write, sync, rename: ``path`` is never seen without all of ``data``."""
        tmp, fd = self._write_tmp(path, data, dirty)
        try:
            if self.durable:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dirty.add(path.parent)

    def _sync_all(self, fds: list[int], dirs: set[Path]) -> None:
        """fdatasync (and close) ``fds`` and fsync ``dirs``, all at once; raise the
        first failure after every sync has finished."""
        if len(fds) + len(dirs) <= 1:
            for fd in fds:
                _sync_and_close(fd)
            for d in dirs:
                _fsync_dir(d)
            return
        pool = self._executor()
        futures = [pool.submit(_sync_and_close, fd) for fd in fds]
        futures += [pool.submit(_fsync_dir, d) for d in dirs]
        concurrent.futures.wait(futures)
        for f in futures:
            f.result()

    def write(self, items: Iterable[tuple[TileID, bytes]]) -> None:
        """Write tiles durably (see the module contract)."""
        dirty: set[Path] = set()
        fds: list[int] = []
        try:
            for tile, data in items:
                path = self.path(tile)
                if not self.durable or path.exists():
                    # Replacing a file: only ever with a synced one.
                    self._write_one(path, data, dirty)
                    continue
                tmp, fd = self._write_tmp(path, data, dirty)
                fds.append(fd)
                # Crash from here until the syncs below finish: this tile may be
                # torn, but it is beyond the checkpoint and open_store removes it.
                os.replace(tmp, path)
                dirty.add(path.parent)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if self.durable:
            self._sync_all(fds, dirty)

    def delete(self, tiles: Iterable[TileID]) -> None:
        """Remove tiles that are no longer needed (missing ones are fine)."""
        partial_dirs: dict[Path, set[str]] = {}
        for tile in tiles:
            p = self.path(tile)
            if tile.full:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            else:
                partial_dirs.setdefault(p.parent, set()).add(p.name)
        # Partials are listed by the caller as every width that might exist;
        # look at what does instead of trying 255 names.
        for d, names in partial_dirs.items():
            try:
                present = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in present:
                if name in names:
                    with contextlib.suppress(FileNotFoundError):
                        (d / name).unlink()
            with contextlib.suppress(OSError):
                d.rmdir()  # the ``<N>.p`` directory, once empty

    def read_checkpoint(self) -> bytes | None:
        try:
            return (self.root / "checkpoint").read_bytes()
        except FileNotFoundError:
            return None

    def stage_checkpoint(self, data: bytes) -> StagedCheckpoint:
        """Write ``data`` to a temporary file and sync it; the checkpoint is unchanged.

        May run while the round's tiles are being written: nothing names this
        file until ``publish_checkpoint``.
        """
        tmp, fd = self._write_tmp(self.root / "checkpoint", data, set())
        try:
            os.fdatasync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            os.close(fd)
        return StagedCheckpoint(tmp)

    def publish_checkpoint(self, staged: StagedCheckpoint) -> None:
        """The commit point: rename the staged checkpoint into place and sync the
        directory.  Call it only once every tile it covers is durable."""
        os.replace(staged.tmp, self.root / "checkpoint")
        _fsync_dir(self.root)

    def discard_checkpoint(self, staged: StagedCheckpoint) -> None:
        """Remove a staged checkpoint whose round failed (missing is fine)."""
        with contextlib.suppress(FileNotFoundError):
            staged.tmp.unlink()

    def write_checkpoint(self, data: bytes) -> None:
        """Replace the checkpoint durably (its tiles must be durable already)."""
        self.publish_checkpoint(self.stage_checkpoint(data))

    def issuer_path(self, fp: bytes) -> Path:
        return self.root / "issuer" / fp.hex()

    def has_issuer(self, fp: bytes) -> bool:
        return self.issuer_path(fp).exists()

    def put_issuer(self, fp: bytes, der: bytes) -> None:
        """Store an issuer durably before any entry refers to it."""
        if self.has_issuer(fp):
            return
        dirty: set[Path] = set()
        self._write_one(self.issuer_path(fp), der, dirty)
        for d in dirty:
            _fsync_dir(d)

    def get_issuer(self, fp: bytes) -> bytes | None:
        try:
            return self.issuer_path(fp).read_bytes()
        except FileNotFoundError:
            return None


class EntryIndex:
    """Leaf hash -> index and entry identity -> (index, timestamp), in SQLite.

    WAL mode with synchronous=NORMAL: a crash may lose the last index commits,
    never corrupt them, and ``open_store`` re-indexes whatever lags the
    checkpoint.  The log indexes a round while its tiles sync, so the index may
    also be ahead of the checkpoint: ``open_store`` truncates it, and lookups
    ignore indices at or beyond the published size.  One connection writes (the
    sequencer's worker thread), another reads (the event loop); WAL lets them run
    at the same time.
    """

    def __init__(self, path: Path, *, cache_mib: int = 64) -> None:
        self.path = path
        self._cache_kib = cache_mib * 1024
        self._writer = self._connect()
        self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Keys are hashes, so inserts land all over the B-trees: a page cache
        # that holds the upper levels keeps them from re-reading pages.
        db.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS leaves (hash BLOB PRIMARY KEY, idx INTEGER NOT NULL)"
            " WITHOUT ROWID"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS identities (identity BLOB PRIMARY KEY,"
            " idx INTEGER NOT NULL, timestamp INTEGER NOT NULL) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        return db

    def close(self) -> None:
        self._writer.close()
        self._reader.close()

    def indexed_size(self) -> int:
        row = self._reader.execute("SELECT value FROM meta WHERE key='size'").fetchone()
        return int(row[0]) if row else 0

    def add(self, rows: Sequence[tuple[int, bytes, bytes, int]], new_size: int) -> None:
        """Index entries ``(index, leaf hash, identity, timestamp)``; record ``new_size``."""
        db = self._writer
        db.execute("BEGIN")
        try:
            # Sorted by key, a batch walks each B-tree once, left to right.
            db.executemany(
                "INSERT OR REPLACE INTO leaves (hash, idx) VALUES (?, ?)",
                sorted((h, i) for i, h, _, _ in rows),
            )
            # The first index of an identity wins: a resubmission after a crash can
            # log a certificate twice, and answers must stay stable.
            identities: list[tuple[bytes, int, int]] = sorted(
                (ident, i, ts) for i, _, ident, ts in rows
            )
            db.executemany(
                "INSERT OR IGNORE INTO identities (identity, idx, timestamp) VALUES (?, ?, ?)",
                identities,
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('size', ?)", (new_size,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def truncate(self, size: int) -> None:
        """Forget entries at or beyond ``size`` (the store was rolled back)."""
        db = self._writer
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM leaves WHERE idx >= ?", (size,))
            db.execute("DELETE FROM identities WHERE idx >= ?", (size,))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('size', ?)", (size,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def index_of(self, leaf_hash: bytes) -> int | None:
        row = self._reader.execute("SELECT idx FROM leaves WHERE hash=?", (leaf_hash,)).fetchone()
        return int(row[0]) if row else None

    def find_identity(self, identity: bytes) -> tuple[int, int] | None:
        row = self._reader.execute(
            "SELECT idx, timestamp FROM identities WHERE identity=?", (identity,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None


class _TileTreeCache:
    """LRU of full hash tiles with every internal node, as one bytes blob per height."""

    def __init__(self, files: TileFiles, capacity: int) -> None:
        self._files = files
        self._capacity = capacity
        self._cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        # Readers run on the event loop and in worker threads (get-entries).
        self._lock = threading.Lock()

    def get(self, level: int, index: int) -> list[bytes]:
        key = (level, index)
        with self._lock:
            tree = self._cache.get(key)
            if tree is not None:
                self._cache.move_to_end(key)
                return tree
        tile = TileID(level, index, TILE_WIDTH)
        data = self._files.read(tile)
        if data is None or len(data) != TILE_WIDTH * HASH_SIZE:
            raise StoreCorrupt(f"{tile.path()}: missing or truncated full tile")
        tree = [data]
        hashes = split_hashes(data, TILE_WIDTH)
        while len(hashes) > 1:
            hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
            tree.append(b"".join(hashes))
        with self._lock:
            self._cache[key] = tree
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return tree


_EDGE_NODES = 8192
"""Complete nodes of partial tiles a TreeReader remembers (a few edges' worth)."""


class TreeReader:
    """Hashes of the published tree, for proofs.

    Full tiles come from disk through an LRU of tile trees (they never change);
    the right edge comes from memory, replaced on every publish by the driver
    that owns it.
    """

    def __init__(self, files: TileFiles, edge: TreeEdge, cache_tiles: int = 4096) -> None:
        self._files = files
        self._tiles = _TileTreeCache(files, cache_tiles)
        self._edge_nodes: dict[tuple[int, int, int, int], bytes] = {}
        """(tile level, tile index, offset, height) -> a complete node in a partial
        tile: it never changes once complete, however the edge grows."""
        self.ranges: dict[tuple[int, int], bytes] = {}
        """``merkle.RangeHashes`` of this log for proofs: the right edge of the tree
        at the sizes proofs are asked for (cleared when it grows past _EDGE_NODES)."""
        self.edge = edge

    def snapshot(self) -> TreeReader:
        """A reader of the tree as published now, sharing the tile cache (published
        edges are never mutated, only replaced)."""
        other = TreeReader.__new__(TreeReader)
        other._files, other._tiles, other.edge = self._files, self._tiles, self.edge
        other._edge_nodes = self._edge_nodes
        other.ranges = self.ranges
        return other

    @property
    def size(self) -> int:
        return self.edge.size

    def node(self, level: int, index: int) -> bytes:
        """``merkle.NodeReader``: complete subtree at ``level``, ``index``."""
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height  # first level-8L hash under this node
        tile_index, offset = divmod(first, TILE_WIDTH)
        if tile_index < full_tiles(self.edge.size, tile_level):
            blob = self._tiles.get(tile_level, tile_index)[height]
            at = (offset >> height) * HASH_SIZE
            return blob[at : at + HASH_SIZE]
        row = self.edge.partial[tile_level]
        if offset + (1 << height) > len(row):
            raise ValueError(f"node ({level}, {index}) is not complete in the published tree")
        key = (tile_level, tile_index, offset, height)
        found = self._edge_nodes.get(key)
        if found is None:
            # Every inclusion proof near the edge asks for these: hash each once.
            found = merkle.root_of(row[offset : offset + (1 << height)])
            if len(self._edge_nodes) >= _EDGE_NODES:
                self._edge_nodes.clear()
            self._edge_nodes[key] = found
        return found

    def known_ranges(self) -> dict[tuple[int, int], bytes]:
        """`ranges`, emptied first if it grew past its bound (a proof adds a few)."""
        if len(self.ranges) >= _EDGE_NODES:
            self.ranges.clear()
        return self.ranges

    def leaf_hashes(self, tile_index: int) -> list[bytes]:
        """The level-0 hashes of data tile ``tile_index`` (full or the edge)."""
        if tile_index < full_tiles(self.edge.size, 0):
            return split_hashes(self._tiles.get(0, tile_index)[0], TILE_WIDTH)
        return list(self.edge.partial[0])


def read_entries(
    files: TileFiles, reader: TreeReader, start: int, end: int
) -> list[tuple[int, TileLeaf]]:
    """Entries ``start..end`` inclusive (end < published size), each checked against its
    level-0 hash so that a damaged data tile is reported, never served."""
    out: list[tuple[int, TileLeaf]] = []
    size = reader.size
    for tile_index in range(start // TILE_WIDTH, end // TILE_WIDTH + 1):
        if tile_index < full_tiles(size, DATA):
            tile = TileID(DATA, tile_index, TILE_WIDTH)
            raw = files.read(tile)
            if raw is None:
                raise StoreCorrupt(f"{tile.path()}: data tile is missing")
        else:
            tile = TileID(DATA, tile_index, len(reader.edge.data))
            raw = b"".join(reader.edge.data)
        try:
            leaves = parse_data_tile(raw, tile.width)
        except DecodeError as exc:
            raise StoreCorrupt(f"{tile.path()}: {exc}") from None
        hashes = reader.leaf_hashes(tile_index)
        for i, leaf in enumerate(leaves):
            index = tile_index * TILE_WIDTH + i
            if start <= index <= end:
                if leaf.leaf_hash() != hashes[i]:
                    raise StoreCorrupt(f"{tile.path()}: entry {index} does not match its leaf hash")
                out.append((index, leaf))
    return out


@dataclass
class OpenedStore:
    """A verified data directory, ready for a sequencer.  Owned by the log driver."""

    files: TileFiles
    """The files."""
    index: EntryIndex
    """The lookup index, caught up with the checkpoint."""
    edge: TreeEdge
    """The right edge of the published tree."""
    checkpoint: bytes | None
    """The signed checkpoint, or None for a new, empty log (not yet signed)."""
    timestamp: int
    """The checkpoint's STH timestamp (0 for a new log)."""
    signature: DigitallySigned | None
    """The checkpoint's STH signature (None for a new log)."""
    lock_fd: int
    """Holds the directory's flock until ``close``."""

    def close(self) -> None:
        self.index.close()
        self.files.close()
        os.close(self.lock_fd)


def _lock(root: Path) -> int:
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise StoreLocked(f"{root} is in use by another process") from None
        raise
    return fd


def _required(files: TileFiles, tile: TileID) -> bytes:
    data = files.read(tile)
    if data is None:
        raise StoreCorrupt(f"{tile.path()}: tile is missing")
    if tile.level != DATA and len(data) != tile.width * HASH_SIZE:
        raise StoreCorrupt(
            f"{tile.path()}: {len(data)} bytes, expected {tile.width * HASH_SIZE} (truncated?)"
        )
    return data


def _check_data_tile(
    files: TileFiles, tile: TileID, raw: bytes, hashes: Sequence[bytes]
) -> list[TileLeaf]:
    try:
        leaves = parse_data_tile(raw, tile.width)
    except DecodeError as exc:
        raise StoreCorrupt(f"{tile.path()}: {exc}") from None
    for i, leaf in enumerate(leaves):
        if leaf.leaf_hash() != hashes[i]:
            raise StoreCorrupt(
                f"{tile.path()}: entry {tile.index * TILE_WIDTH + i} does not match its leaf hash"
            )
        for fp in leaf.chain:
            if not files.has_issuer(fp):
                raise StoreCorrupt(f"issuer/{fp.hex()}: missing, but entry refers to it")
    return leaves


def _verify_tiles(
    files: TileFiles, edge: TreeEdge, check: Check, progress: Progress | None
) -> None:
    """Every full hash tile hashes to its entry in the level above; data tiles exist
    (and, for ``full``, match their level-0 hashes)."""
    size = edge.size
    widths = edge_widths(size)
    for level in range(len(widths) - 1):
        parent_level = level + 1
        count = full_tiles(size, level)
        parent: list[bytes] = []
        parent_index = -1
        for n in range(count):
            if n >> TILE_HEIGHT != parent_index:
                parent_index = n >> TILE_HEIGHT
                if parent_index < full_tiles(size, parent_level):
                    tile = TileID(parent_level, parent_index, TILE_WIDTH)
                    parent = split_hashes(_required(files, tile), TILE_WIDTH)
                else:
                    parent = edge.partial[parent_level]
            tile = TileID(level, n, TILE_WIDTH)
            hashes = split_hashes(_required(files, tile), TILE_WIDTH)
            if merkle.root_of(hashes) != parent[n % TILE_WIDTH]:
                raise StoreCorrupt(
                    f"{tile.path()}: hashes do not match entry {n % TILE_WIDTH} of "
                    f"level {parent_level} tile {parent_index} (corrupt tile)"
                )
            if level == 0:
                data_tile = TileID(DATA, n, TILE_WIDTH)
                if check == "full" or n == count - 1:
                    _check_data_tile(files, data_tile, _required(files, data_tile), hashes)
                elif not files.path(data_tile).is_file():
                    raise StoreCorrupt(f"{data_tile.path()}: data tile is missing")
            if progress and level == 0 and n % 1024 == 1023:
                progress("verify", n + 1, count)
    if edge.data:
        tile = TileID(DATA, full_tiles(size, DATA), len(edge.data))
        _check_data_tile(files, tile, b"".join(edge.data), edge.partial[0])


def _remove_unpublished(files: TileFiles, size: int) -> list[str]:
    """Delete tiles beyond ``size`` (from a round that crashed before its checkpoint)
    and partial tiles whose full tile exists; keep partials of published sizes."""
    removed: list[str] = []
    for p in files.root.glob(".checkpoint.*.tmp"):  # staged by a round that crashed
        p.unlink()
        removed.append(p.name)
    issuers = files.root / "issuer"
    if issuers.is_dir():
        for p in issuers.glob(".*.tmp"):  # from an interrupted issuer write
            p.unlink()
            removed.append(p.relative_to(files.root).as_posix())
    widths = edge_widths(size)
    tile_root = files.root / "tile"
    if not tile_root.is_dir():
        return removed
    for dirpath, _dirs, names in os.walk(tile_root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(files.root).as_posix()
            if name.startswith("."):  # a temporary file from an interrupted write
                p.unlink()
                removed.append(rel)
                continue
            try:
                tile = parse_tile_path(rel)
            except ValueError:
                continue  # not ours; leave it alone
            level = 0 if tile.level == DATA else tile.level
            full = full_tiles(size, level)
            width = widths[level] if level < len(widths) else 0
            keep = tile.index < full if tile.full else (tile.index == full and tile.width <= width)
            if not keep:
                files.delete([tile])
                removed.append(rel)
    return removed


def _catch_up_index(
    files: TileFiles, index: EntryIndex, reader: TreeReader, progress: Progress | None
) -> None:
    size = reader.size
    start = index.indexed_size()
    if start > size:
        index.truncate(size)
        return
    step = 4096
    for lo in range(start, size, step):
        hi = min(size, lo + step) - 1
        rows = [
            (i, leaf.leaf_hash(), leaf.entry.entry.identity(), leaf.entry.timestamp)
            for i, leaf in read_entries(files, reader, lo, hi)
        ]
        index.add(rows, hi + 1)
        if progress:
            progress("index", hi + 1 - start, size - start)


def open_store(
    root: Path,
    verifier: RFC6962NoteVerifier,
    *,
    check: Check = "quick",
    progress: Progress | None = None,
) -> OpenedStore:
    """Open (creating if needed) and verify a data directory; see the module contract."""
    root.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(root)
    try:
        return _open_locked(root, verifier, check, progress, lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise


def _open_locked(
    root: Path,
    verifier: RFC6962NoteVerifier,
    check: Check,
    progress: Progress | None,
    lock_fd: int,
) -> OpenedStore:
    files = TileFiles(root)
    raw = files.read_checkpoint()
    if raw is None:
        if (root / "tile").exists() and any((root / "tile").iterdir()):
            raise StoreCorrupt(
                f"{root}/checkpoint is missing but tiles exist: restore the checkpoint "
                "from a backup or a monitor; refusing to start a new log over old data"
            )
        edge = TreeEdge.empty()
        cp: Checkpoint | None = None
        timestamp, signature = 0, None
    else:
        try:
            cp, timestamp, signature = open_checkpoint(raw, verifier)
        except CheckpointError as exc:
            raise StoreKeyMismatch(f"{root}/checkpoint: {exc}") from None
        _remove_unpublished(files, cp.size)
        try:
            edge = TreeEdge.load(cp.size, lambda t: _required(files, t))
        except DecodeError as exc:
            raise StoreCorrupt(f"{exc} (damaged edge tile)") from None
        if edge.root() != cp.root_hash:
            raise StoreCorrupt(
                f"{root}: the root computed from the edge tiles does not match the checkpoint"
            )
        _verify_tiles(files, edge, check, progress)
    try:
        index = EntryIndex(root / "index.db")
        index.indexed_size()
    except sqlite3.DatabaseError:
        # The index is derived data: rebuild it rather than refuse to start.
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                (root / f"index.db{suffix}").unlink()
        index = EntryIndex(root / "index.db")
    _catch_up_index(files, index, TreeReader(files, edge, cache_tiles=16), progress)
    return OpenedStore(files, index, edge, raw, timestamp, signature, lock_fd)
