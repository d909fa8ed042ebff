"""A deadline for every trio test (tests/conftest.py applies it): past it the test is
cancelled and fails with where each trio task waited.  pytest-timeout's 600 s stays the
backstop for the others; in a trio test its stack is the event loop's epoll wait, which
says nothing about where the test hung."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

TRIO_TEST_DEADLINE = 300.0
"""Seconds of real time a trio test may run."""


def with_deadline(
    test: Callable[..., Awaitable[None]], seconds: float = TRIO_TEST_DEADLINE
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            return await test(*args, **kwargs)  # virtual time: no real deadline
        stuck: list[str] = []

        async def watchdog(cancel_scope: trio.CancelScope) -> None:
            await trio.sleep(seconds)
            stuck.extend(task_tree(trio.lowlevel.current_root_task()))
            cancel_scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watchdog, nursery.cancel_scope)
                await test(*args, **kwargs)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # the test's own failure, as it would show alone
                raise group.exceptions[0] from None
            raise
        if stuck:
            pytest.fail(
                f"still running after {seconds:g} s; where every task waited:\n" + "\n".join(stuck),
                pytrace=False,
            )

    return run


_PLUMBING = ("/trio/_core/", "/pytest_trio/", "/contextlib.py")
"""Frames every waiting task has; the ones left show what it waits for."""


def task_tree(task: trio.lowlevel.Task, depth: int = 0) -> list[str]:
    """One line per task and per frame it is suspended in, children indented."""
    pad = "  " * depth
    lines = [f"{pad}task {task.name}"]
    for frame, lineno in task.iter_await_frames():
        code = frame.f_code
        if not any(part in code.co_filename for part in _PLUMBING):
            lines.append(f"{pad}  {code.co_filename}:{lineno} in {code.co_name}")
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            lines += task_tree(child, depth + 1)
    return lines
