"""A tiny in-memory cluster for core scenario tests (explicit time, direct delivery)."""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.core import Config, Core, Output
from trustchain.consensus.messages import Block, Message, SyncResponse
from trustchain.consensus.sim import SimApp, _raw
from trustchain.consensus.storage import MemoryStorage, SqliteStorage, Storage
from trustchain.consensus.validators import Member, ValidatorSet


def keys(n: int) -> dict[str, Ed25519PrivateKey]:
    return {
        f"n{i}": Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"k%d" % i).digest())
        for i in range(n)
    }


class Cluster:
    def __init__(self, n: int = 4, tmp: Path | None = None, config: Config | None = None) -> None:
        self.keys = keys(n)
        self.validators = ValidatorSet(
            "test", [Member(k, _raw(v), 1) for k, v in self.keys.items()]
        )
        self.app = SimApp()
        self.config = config or Config(round_timeout=1.0)
        self.storage: dict[str, Storage] = {
            name: SqliteStorage(tmp / f"{name}.db") if tmp else MemoryStorage()
            for name in self.keys
        }
        self.cores: dict[str, Core] = {}
        self.down: set[str] = set()
        self.queue: deque[tuple[str, str, Message]] = deque()
        self.commits: dict[str, list[Block]] = {name: [] for name in self.keys}
        self.now = 0.0
        self.sent: list[tuple[str, str | None, Message]] = []
        for name in self.keys:
            self.boot(name)

    def boot(self, name: str) -> None:
        self.down.discard(name)
        core = Core(
            name, self.keys[name], self.validators, self.app, self.storage[name].load(), self.config
        )
        self.cores[name] = core
        self.act(name, core.start(self.now))

    def act(self, name: str, out: Output) -> Output:
        self.storage[name].write(out.persist)
        for to, message in out.send:
            self.sent.append((name, to, message))
            for dest in [to] if to else [d for d in self.keys if d != name]:
                self.queue.append((name, dest, message))
        for peer, height in out.history:  # as the node's driver does
            blocks = self.storage[name].committed_after(height, self.cores[name].config.sync_batch)
            if blocks:
                self.queue.append((name, peer, SyncResponse(tuple(blocks), None)))
        self.commits[name].extend(out.committed)
        return out

    def run(self, steps: int = 10_000, until: int | None = None) -> None:
        """Deliver queued messages (dropping those to down nodes); tick when idle."""
        for _ in range(steps):
            if until is not None and all(
                self.height(n) >= until for n in self.cores if n not in self.down
            ):
                return
            if not self.queue:
                self.now += self.config.round_timeout
                for name, core in self.cores.items():
                    if name not in self.down:
                        self.act(name, core.tick(self.now))
                continue
            src, dst, message = self.queue.popleft()
            self.now += 0.001
            if dst not in self.down:
                self.act(dst, self.cores[dst].handle(src, message, self.now))

    def height(self, name: str) -> int:
        return self.cores[name].committed_height
