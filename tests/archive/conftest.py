"""Two regions for the archive tests: one moto S3 server process each, on ::1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trustchain.node.drill import REGIONS, LocalRegion


@pytest.fixture(scope="session")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalRegion]]:
    """us-west-2 and us-east-1, each with its provisioned archive bucket."""
    started: dict[str, LocalRegion] = {}
    try:
        for name in REGIONS:
            started[name] = LocalRegion.start(name, tmp_path_factory.mktemp(name))
        yield started
    finally:
        for region in started.values():
            region.kill()
