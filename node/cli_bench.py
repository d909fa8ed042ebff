"""`trustchain bench ...`: benchmarks that print figures.

Each benchmark module has a ``register(bench_subparsers)`` function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    _Register = Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]


def _benches() -> list[_Register]:
    # Imported here so that `trustchain --help` does not pay for every benchmark.
    from trustchain.node import (
        bench_apply,
        bench_archive,
        bench_ca,
        bench_consensus,
        bench_ct,
        bench_dns,
        bench_issue,
        bench_proofs,
        bench_transport,
    )

    return [
        bench_transport.register,
        bench_consensus.register,
        bench_proofs.register,
        bench_ct.register,
        bench_ca.register,
        bench_dns.register,
        bench_issue.register,
        bench_archive.register,
        bench_apply.register,
    ]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure throughput and latency (prints figures)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for register_bench in _benches():
        register_bench(bench_sub)
