"""A client of a node's local operations endpoint (see trustchain.node.consensus_driver)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import trio

from trustchain.node.framing import FrameDecoder, encode_frame


@dataclass
class Receipt:
    op: bytes
    ok: bool
    height: int | None
    error: str | None
    latency: float
    """Seconds from sending the operation to its commit reply."""


async def submit_all(port: int, ops: list[bytes], in_flight: int = 1) -> list[Receipt]:
    """Submit `ops` over one connection with at most `in_flight` unanswered; wait for all."""
    stream = await trio.open_tcp_stream("::1", port)
    sent: dict[int, tuple[bytes, float]] = {}
    receipts: list[Receipt] = []
    window = trio.Semaphore(in_flight)
    decoder = FrameDecoder(1 << 20)

    async def reader() -> None:
        while len(receipts) < len(ops):
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("the node closed the operations endpoint")
            for reply in decoder.feed(data):
                receipts.append(_receipt(reply, sent))
                window.release()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for i, op in enumerate(ops):
            await window.acquire()
            sent[i] = (op, time.monotonic())
            await stream.send_all(encode_frame({"id": i, "op": op}))
    return receipts


def _receipt(reply: dict[str, Any], sent: dict[int, tuple[bytes, float]]) -> Receipt:
    op, started = sent.pop(reply["id"])
    return Receipt(
        op,
        bool(reply.get("ok")),
        reply.get("height"),
        reply.get("error"),
        time.monotonic() - started,
    )
