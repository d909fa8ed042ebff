"""Shared test configuration: make tests/<area>/ helper modules importable."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
from trio_deadline import with_deadline

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"

sys.path.insert(0, str(TESTS / "node"))
sys.path.insert(0, str(TESTS / "consensus"))
sys.path.insert(0, str(TESTS / "proofs"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every trio test fails with its tasks' stacks if it runs past the deadline."""
    for item in items:
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test):
            item.obj = with_deadline(test)  # type: ignore[attr-defined]
