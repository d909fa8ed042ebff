"""Figures the benchmarks share."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (any order); NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def usable_cpus() -> int:
    """The CPUs this process may run on (``taskset`` and cgroup cpusets narrow them),
    which is what a benchmark's figures depend on; os.cpu_count() counts the machine's."""
    return len(os.sched_getaffinity(0))
