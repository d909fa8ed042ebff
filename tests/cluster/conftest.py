"""Fixtures of the node/cluster tests; helpers live in clusterkit.py next to this file.

Plotting at k=18 costs real CPU time, so the session makes one plotted account.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proofs_support import PlotEnv, make_plot_env


@pytest.fixture(scope="session")
def plot_env(tmp_path_factory: pytest.TempPathFactory) -> PlotEnv:
    return make_plot_env(tmp_path_factory.mktemp("cluster-plot"))
