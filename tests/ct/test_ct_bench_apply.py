"""`trustchain bench apply` runs end to end on small state and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_apply_reports_every_part(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", "bench", "apply", "--published", "300",
         "--runs", "5", "--json", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout[out.stdout.index("{") :])
    assert [row["batch"] for row in figures["dns"]] == [1, 10]
    assert figures["cosign"]["block_p50_us"] > 0 and figures["cosign"]["stale_p50_us"] > 0
    assert [row["batch"] for row in figures["ct"]["append"]] == [1, 10]
    assert figures["ct"]["size"] == 300 + 5 * 1 + 5 * 10
    assert figures["ct"]["proof_p50_us"] > 0


def test_bench_apply_refuses_nonsense() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", "bench", "apply", "--runs", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--runs" in out.stderr
