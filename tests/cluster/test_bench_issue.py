"""`trustchain bench issue` runs end to end on a real 4-validator cluster (a tiny run: the
figures are not judged, only that every phase issued and that nothing is left running)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_issue_prints_every_phase(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable, "-m", "trustchain.node.cli", "bench", "issue", "--nodes", "4",
            "--loads", "5", "--seconds", "1", "--clients", "4", "--dir", str(work),
        ],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # Every phase had requests made beforehand: a closed-loop phase issues far more than
    # the offered loads would suggest (here 5/s), and the mixed phase comes last.
    assert "used up" not in result.stderr, result.stderr
    row = re.search(r"^\s+5\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert row is not None, out
    assert float(row[1]) > 0 and row[4] == "0"
    saturation = re.search(r"saturation \(4 clients\): ([\d.]+) issued/s, .*, (\d+) errors", out)
    assert saturation is not None and float(saturation[1]) > 0 and saturation[2] == "0", out
    # Every status lookup is answered, also while checkpoints are being cosigned.
    assert re.search(r"status lookups: [1-9]\d*/s on one node.*, 0 errors$", out, re.M), out
    mixed = re.search(
        r"at once, every node\): (\d+)/s \(([\d.]+) issued/s, (\d+) validated/s\), (\d+) errors",
        out,
    )
    assert mixed is not None and float(mixed[2]) > 0 and int(mixed[3]) > 0, out
    assert mixed[4] == "0", out
    assert re.search(r"cryptography alone \d+ us; ratio [\d.]+", out), out
    left = subprocess.run(["pgrep", "-f", f"node run --config {work}"], capture_output=True)
    assert left.returncode == 1, f"validators still running: {left.stdout!r}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loads", "abc"], "--loads: expected comma-separated numbers"),
        (["--loads", "10,-1"], "must be positive"),
    ],
)
def test_bench_issue_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", "bench", "issue", "--dir",
         str(tmp_path / "b"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
