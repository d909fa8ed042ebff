"""Fixtures for the proof tests.

Plotting at k=18 costs real CPU time, so the session makes ONE account and ONE
plot, through the real CLI (`trustchain account new`, `trustchain proof plot`),
in a temporary folder; every test reads that plot.  VDF iterations stay small
(2,000) and work is 8 bits, so the whole area runs in well under a minute.
"""

from __future__ import annotations

import pytest
from proofs_support import Made, PlotEnv, make_made, make_plot_env


@pytest.fixture(scope="session")
def plot_env(tmp_path_factory: pytest.TempPathFactory) -> PlotEnv:
    return make_plot_env(tmp_path_factory.mktemp("proofs"))


@pytest.fixture(scope="session")
def made(plot_env: PlotEnv) -> Made:
    return make_made(plot_env)
