"""Pending operations waiting for a block: deduplicated, bounded, expiring.

Owned by one Core; pure (time comes in as `now`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from trustchain.consensus.messages import Operation, operation_id


@dataclass(frozen=True)
class MempoolLimits:
    total: int = 100_000
    """Operations held in all."""
    per_submitter: int = 10_000
    """Operations held for one submitter."""
    ttl: float = 120.0
    """Seconds an operation waits before it is dropped."""
    remember_committed: int = 200_000
    """Ids of committed operations remembered to refuse replays."""


class Mempool:
    def __init__(self, limits: MempoolLimits | None = None) -> None:
        self.limits = limits or MempoolLimits()
        # id -> (operation, expiry); insertion order is arrival order.
        self._ops: OrderedDict[bytes, tuple[Operation, float]] = OrderedDict()
        self._per_submitter: dict[str, int] = {}
        self._committed: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ops)

    def add(self, op: Operation, now: float) -> str | None:
        """Queue `op`; None when added, else why not (duplicate, full, replay)."""
        self.expire(now)
        oid = operation_id(op.data)
        if oid in self._ops:
            return "duplicate"
        if oid in self._committed:
            return "already committed"
        if len(self._ops) >= self.limits.total:
            return "mempool full"
        if self._per_submitter.get(op.submitter, 0) >= self.limits.per_submitter:
            return f"too many pending operations from {op.submitter}"
        self._ops[oid] = (op, now + self.limits.ttl)
        self._per_submitter[op.submitter] = self._per_submitter.get(op.submitter, 0) + 1
        return None

    def batch(self, limit: int, exclude: set[bytes]) -> tuple[bytes, ...]:
        """Up to `limit` operations in arrival order, skipping ids in `exclude`."""
        out: list[bytes] = []
        for oid, (op, _) in self._ops.items():
            if len(out) >= limit:
                break
            if oid not in exclude:
                out.append(op.data)
        return tuple(out)

    def remove(self, oid: bytes) -> None:
        entry = self._ops.pop(oid, None)
        if entry is not None:
            submitter = entry[0].submitter
            self._per_submitter[submitter] -= 1
            if not self._per_submitter[submitter]:
                del self._per_submitter[submitter]

    def committed(self, data: bytes) -> None:
        oid = operation_id(data)
        self.remove(oid)
        self._committed[oid] = None
        if len(self._committed) > self.limits.remember_committed:
            self._committed.popitem(last=False)

    def expire(self, now: float) -> None:
        while self._ops:
            oid, (_, expiry) = next(iter(self._ops.items()))
            if expiry > now:
                break
            self.remove(oid)
