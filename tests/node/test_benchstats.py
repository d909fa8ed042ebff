"""The figures every benchmark shares."""

from __future__ import annotations

import math
import os

from trustchain.node.benchstats import percentile, usable_cpus


def test_percentile_is_the_nearest_rank_of_any_order() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert math.isnan(percentile([], 0.5))


def test_usable_cpus_follow_the_affinity_not_the_machine() -> None:
    saved = os.sched_getaffinity(0)
    one = min(saved)
    try:
        os.sched_setaffinity(0, {one})
        assert usable_cpus() == 1
    finally:
        os.sched_setaffinity(0, saved)
    assert usable_cpus() == len(saved)
