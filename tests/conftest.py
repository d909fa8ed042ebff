"""Shared test configuration: make tests/<area>/ helper modules importable."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO_ROOT = TESTS.parent
SHARED_TESTDATA = REPO_ROOT.parent / "shared" / "testdata"

sys.path.insert(0, str(TESTS / "node"))
sys.path.insert(0, str(TESTS / "consensus"))
sys.path.insert(0, str(TESTS / "proofs"))
