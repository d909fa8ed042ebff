"""Tiles (c2sp.org/tlog-tiles, c2sp.org/static-ct-api), pure.

A level-L tile holds 256 consecutive hashes of tree level 8L: level-0 tiles hold
leaf hashes, and entry i of level-(L+1) tile n is the MTH of level-L tile
256n + i.  The rightmost tile of each level is usually partial (1..255 hashes),
served as ``.p/<W>``; it must never be hashed into the level above.  Data tiles
("entry bundles") hold the log entries matching the level-0 tiles, as
static-ct-api ``TileLeaf`` structures.

``TreeEdge`` is the right edge of a tiled tree: the partial tile of every level
plus the partial data tile.  That is all a sequencer needs to append leaves and
compute the new root (every hash left of the edge is in an immutable full tile),
which is what lets the sequencer core stay pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trustchain.ct import _tls, merkle
from trustchain.ct._tls import DecodeError, Reader
from trustchain.ct.merkle import HASH_SIZE
from trustchain.ct.sct import EntryType, LogEntry, TimestampedEntry, merkle_tree_leaf

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_LEVEL = 5
"""static-ct-api allows levels 0..5 (trees of up to 2**48 leaves)."""
DATA = -1
"""The ``level`` of data tiles."""
MAX_CHAIN = (1 << 16) - 1


@dataclass(frozen=True, order=True)
class TileID:
    """One tile: a hash tile (level >= 0) or a data tile (level == DATA)."""

    level: int
    """0..5 for hash tiles, DATA (-1) for entry bundles."""
    index: int
    """Index of the tile within its level."""
    width: int
    """Number of entries, 1..256 (256 is a full tile)."""

    def __post_init__(self) -> None:
        if not DATA <= self.level <= MAX_LEVEL:
            raise ValueError(f"tile level {self.level} out of range")
        if self.index < 0:
            raise ValueError("tile index must not be negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ValueError(f"tile width {self.width} out of range 1..256")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        """The URL path below the monitoring prefix, without a leading slash."""
        level = "data" if self.level == DATA else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"


def encode_index(n: int) -> str:
    """Tile index in 3-digit path elements, all but the last prefixed with x."""
    digits = f"{n:03d}"
    if len(digits) % 3:
        digits = "0" * (3 - len(digits) % 3) + digits
    parts = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*("x" + p for p in parts[:-1]), parts[-1]])


_TILE_RE = re.compile(r"tile/(data|[0-5])/((?:x\d{3}/)*\d{3})(?:\.p/([1-9]\d{0,2}))?")


def parse_tile_path(path: str) -> TileID:
    """Parse ``tile/<L>/<N>[.p/<W>]`` strictly: the canonical spelling only."""
    m = _TILE_RE.fullmatch(path)
    if m is None:
        raise ValueError(f"not a tile path: {path!r}")
    level_s, index_s, width_s = m.groups()
    index = int(index_s.replace("x", "").replace("/", ""))
    width = int(width_s) if width_s else TILE_WIDTH
    if width_s and width >= TILE_WIDTH:
        raise ValueError("partial tile width must be 1..255")
    tile = TileID(DATA if level_s == "data" else int(level_s), index, width)
    if tile.path() != path:
        raise ValueError(f"non-canonical tile path {path!r} (expected {tile.path()!r})")
    return tile


# --- entries --------------------------------------------------------------------------


@dataclass(frozen=True)
class TileLeaf:
    """static-ct-api ``TileLeaf``: one log entry in a data tile."""

    entry: TimestampedEntry
    """The RFC 6962 TimestampedEntry (timestamp, signed entry, extensions)."""
    pre_certificate: bytes
    """The submitted precertificate (precert entries only; empty for x509)."""
    chain: tuple[bytes, ...]
    """SHA-256 fingerprints of the submitted issuers, leaf-side first."""

    def __post_init__(self) -> None:
        is_pre = self.entry.entry.entry_type == EntryType.PRECERT
        if is_pre != bool(self.pre_certificate):
            raise ValueError("pre_certificate is required for, and only for, precert entries")
        if any(len(f) != 32 for f in self.chain):
            raise ValueError("chain fingerprints are 32 bytes")

    def encode(self) -> bytes:
        out = self.entry.encode()
        if self.pre_certificate:
            out += _tls.opaque(self.pre_certificate, 3, minimum=1, what="pre_certificate")
        return out + _tls.opaque(b"".join(self.chain), 2, what="certificate_chain")

    @classmethod
    def read(cls, r: Reader) -> TileLeaf:
        entry = TimestampedEntry.read(r)
        pre = b""
        if entry.entry.entry_type == EntryType.PRECERT:
            pre = r.opaque(3, "pre_certificate", minimum=1)
        fps = r.opaque(2, "certificate_chain")
        if len(fps) % 32:
            raise DecodeError("TileLeaf: certificate_chain is not a list of 32-byte hashes")
        return cls(entry, pre, tuple(fps[i : i + 32] for i in range(0, len(fps), 32)))

    def merkle_leaf(self) -> bytes:
        """The RFC 6962 MerkleTreeLeaf (get-entries ``leaf_input``)."""
        return merkle_tree_leaf(self.entry)

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.merkle_leaf())


def new_leaf(
    entry: LogEntry, timestamp: int, index: int, pre_certificate: bytes, chain: Sequence[bytes]
) -> TileLeaf:
    """The TileLeaf for ``entry`` sequenced at ``index`` (static-ct-api leaf_index extension)."""
    from trustchain.ct.sct import leaf_index_extensions

    te = TimestampedEntry(timestamp, entry, leaf_index_extensions(index))
    return TileLeaf(te, pre_certificate, tuple(chain))


def parse_data_tile(data: bytes, width: int) -> list[TileLeaf]:
    """Decode a data tile that must hold exactly ``width`` entries."""
    r = Reader(data, "data tile")
    out = []
    for _ in range(width):
        try:
            out.append(TileLeaf.read(r))
        except ValueError as exc:
            raise DecodeError(f"data tile entry {len(out)}: {exc}") from None
    r.finish()
    return out


def split_hashes(data: bytes, width: int) -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise DecodeError(f"hash tile is {len(data)} bytes, expected {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def fingerprint(der: bytes) -> bytes:
    return hashlib.sha256(der).digest()


# --- tree shape ---------------------------------------------------------------------


def levels_for(size: int) -> int:
    """Number of hash-tile levels a tree of ``size`` leaves has (0 for the empty tree)."""
    n = 0
    while size >> (TILE_HEIGHT * n):
        n += 1
    return n


def edge_widths(size: int) -> list[int]:
    """Width of the partial tile at each level (0 where the level has none)."""
    return [(size >> (TILE_HEIGHT * level)) % TILE_WIDTH for level in range(levels_for(size))]


def full_tiles(size: int, level: int) -> int:
    """How many full tiles level ``level`` (or DATA) has in a tree of ``size`` leaves."""
    lv = 0 if level == DATA else level
    return size >> (TILE_HEIGHT * (lv + 1))


def tiles_of(size: int) -> list[TileID]:
    """Every tile, full and partial, of a tree of ``size`` leaves, data tiles included."""
    out: list[TileID] = []
    for level, width in enumerate(edge_widths(size)):
        levels = [level, DATA] if level == 0 else [level]
        for lv in levels:
            out.extend(TileID(lv, i, TILE_WIDTH) for i in range(full_tiles(size, lv)))
            if width:
                out.append(TileID(lv, full_tiles(size, lv), width))
    return out


class TileTree:
    """All internal nodes of one hash tile: ``node(h, j)`` is the height-h node j."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(hashes)]
        while len(self.levels[-1]) > 1:
            prev = self.levels[-1]
            self.levels.append(
                [merkle.node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)]
            )

    def node(self, height: int, index: int) -> bytes:
        return self.levels[height][index]


@dataclass
class TreeEdge:
    """The partial tiles along the right edge of a tree; enough to append and to hash.

    Owned by one sequencer; copies are taken for a round in flight.  ``partial``
    and ``data`` are changed only by ``append``: the edge keeps, beside each
    partial row, the roots of its perfect subtrees (what ``root`` folds), updated
    as hashes are appended instead of re-hashing the row at every ``root``.
    """

    size: int
    """Number of leaves."""
    partial: list[list[bytes]]
    """partial[L]: the hashes of the rightmost, incomplete level-L tile (may be empty)."""
    data: list[bytes]
    """Encoded TileLeafs of the rightmost, incomplete data tile."""
    _peaks: list[list[bytes]] = field(init=False, repr=False, compare=False)
    """_peaks[L]: the roots of the perfect subtrees of partial[L], one per set bit of
    its width, largest (leftmost) first (RFC 6962 section 2.1: MTH of the row)."""

    def __post_init__(self) -> None:
        self._peaks = [_row_peaks(row) for row in self.partial]

    @classmethod
    def empty(cls) -> TreeEdge:
        return cls(0, [], [])

    @classmethod
    def load(cls, size: int, read: Callable[[TileID], bytes]) -> TreeEdge:
        """Rebuild the edge of a tree of ``size`` leaves from its partial tiles."""
        partial: list[list[bytes]] = []
        for level, width in enumerate(edge_widths(size)):
            if not width:
                partial.append([])
                continue
            tile = TileID(level, full_tiles(size, level), width)
            try:
                partial.append(split_hashes(read(tile), width))
            except DecodeError as exc:
                raise DecodeError(f"{tile.path()}: {exc}") from None
        data: list[bytes] = []
        w0 = size % TILE_WIDTH
        if w0:
            tile = TileID(DATA, full_tiles(size, DATA), w0)
            try:
                data = [leaf.encode() for leaf in parse_data_tile(read(tile), w0)]
            except DecodeError as exc:
                raise DecodeError(f"{tile.path()}: {exc}") from None
        return cls(size, partial, data)

    def copy(self) -> TreeEdge:
        other = TreeEdge.__new__(TreeEdge)
        other.size = self.size
        other.partial = [list(p) for p in self.partial]
        other.data = list(self.data)
        other._peaks = [list(p) for p in self._peaks]
        return other

    def root(self) -> bytes:
        """MTH of the whole tree, from the edge alone (RFC 6962 section 2.1)."""
        if self.size == 0:
            return merkle.EMPTY_ROOT
        # The tree is the perfect subtrees of size's binary expansion, largest
        # (leftmost) first; inside level L's partial tile they are the bits of its
        # width (the row's peaks).  MTH folds them from the right.
        parts = [h for level in reversed(range(len(self._peaks))) for h in self._peaks[level]]
        acc = parts[-1]
        for h in reversed(parts[:-1]):
            acc = merkle.node_hash(h, acc)
        return acc

    def append(
        self, leaf_hashes: Sequence[bytes], leaves: Sequence[bytes]
    ) -> tuple[list[tuple[TileID, bytes]], list[TileID]]:
        """Append leaves (hash and encoded TileLeaf each).

        Returns (tiles to write, superseded partial tiles).  The tiles to write are
        every tile that became full plus the new partial tile of every level that
        changed.  Superseded tiles are every possible partial of a tile that became
        full (whichever of them exist on disk); they may be deleted once a
        checkpoint covering the new size is published.
        """
        if len(leaf_hashes) != len(leaves):
            raise ValueError("one encoded leaf per leaf hash")
        if not leaf_hashes:
            return [], []
        old_widths = edge_widths(self.size)
        old_size = self.size
        writes: list[tuple[TileID, bytes]] = []
        touched = {0}
        for h, leaf in zip(leaf_hashes, leaves, strict=True):
            self.size += 1
            self.data.append(leaf)
            if len(self.data) == TILE_WIDTH:
                tile_index = (self.size - 1) >> TILE_HEIGHT
                writes.append((TileID(DATA, tile_index, TILE_WIDTH), b"".join(self.data)))
                self.data = []
            level, carry = 0, h
            while True:
                if level == len(self.partial):
                    self.partial.append([])
                    self._peaks.append([])
                row = self.partial[level]
                _push_peak(self._peaks[level], len(row), carry)
                row.append(carry)
                touched.add(level)
                if len(row) < TILE_WIDTH:
                    break
                tile_index = ((self.size - 1) >> (TILE_HEIGHT * level)) >> TILE_HEIGHT
                writes.append((TileID(level, tile_index, TILE_WIDTH), b"".join(row)))
                # A full row has one peak: its root, which goes up a level.
                (carry,) = self._peaks[level]
                self.partial[level] = []
                self._peaks[level] = []
                level += 1
        for level in sorted(touched):
            row = self.partial[level]
            if row:
                index = full_tiles(self.size, level)
                writes.append((TileID(level, index, len(row)), b"".join(row)))
        if self.data:
            writes.append(
                (TileID(DATA, full_tiles(self.size, DATA), len(self.data)), b"".join(self.data))
            )
        # static-ct-api: a partial tile for a published size must stay available
        # until its full tile exists, so only partials whose tile just became full
        # are superseded.
        completed = {(t.level, t.index) for t, _ in writes if t.full}
        superseded: list[TileID] = []
        for level, width in enumerate(old_widths):
            if not width:
                continue
            index = full_tiles(old_size, level)
            for lv in [level, DATA] if level == 0 else [level]:
                if (lv, index) in completed:
                    superseded.extend(TileID(lv, index, w) for w in range(1, TILE_WIDTH))
        return writes, superseded


def _push_peak(peaks: list[bytes], width: int, h: bytes) -> None:
    """Append hash ``h`` to a row of ``width`` hashes whose perfect-subtree roots are
    ``peaks``: each trailing set bit of ``width`` merges a peak with the new one."""
    while width & 1:
        h = merkle.node_hash(peaks.pop(), h)
        width >>= 1
    peaks.append(h)


def _row_peaks(row: Sequence[bytes]) -> list[bytes]:
    peaks: list[bytes] = []
    for width, h in enumerate(row):
        _push_peak(peaks, width, h)
    return peaks
