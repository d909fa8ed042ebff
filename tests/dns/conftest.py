"""Fixtures of the DNS tests; helpers live in doqkit.py next to this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doqkit import Tls, make_tls


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """One self-signed server identity for the whole session (key generation is cheap,
    but there is no reason to repeat it)."""
    return make_tls(tmp_path_factory.mktemp("doq-tls"))
