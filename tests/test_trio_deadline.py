"""The deadline every trio test runs under (tests/trio_deadline.py)."""

from __future__ import annotations

import pytest
import trio
from trio_deadline import with_deadline


async def test_a_hung_test_fails_saying_where_it_waits() -> None:
    async def waits_forever() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.Event().wait()

    with pytest.raises(pytest.fail.Exception) as failed:
        await with_deadline(waits_forever, seconds=0.2)()
    message = str(failed.value)
    assert "still running after 0.2 s" in message
    assert "in waits_forever" in message and "in sleep_forever" in message
    assert "/trio/_core/" not in message, "plumbing frames are left out"


async def test_a_failing_test_fails_as_itself() -> None:
    async def fails() -> None:
        await trio.sleep(0)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await with_deadline(fails, seconds=5)()


async def test_a_test_in_time_passes_and_leaves_nothing_running() -> None:
    done = []

    async def quick(value: int) -> None:
        await trio.sleep(0.01)
        done.append(value)

    with trio.fail_after(2):
        await with_deadline(quick, seconds=30)(7)
    assert done == [7]
