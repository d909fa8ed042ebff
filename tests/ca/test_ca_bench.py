"""`trustchain bench ca` runs end to end (a tiny run; the figures are not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from cakit import require_softhsm


@pytest.mark.slow
def test_bench_ca_prints_every_figure() -> None:
    require_softhsm()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustchain.node.cli",
            "bench",
            "ca",
            "--seconds",
            "0.2",
            "--in-flight",
            "4",
            "--requests",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for label in ("ECDSA P-384 (intermediate)", "ECDSA P-256 (CT log)", "RSA-4096 PKCS#1"):
        assert label in out
    assert re.search(r"final certificates .*: [\d,]+/s", out)
    assert re.search(r"offline verifications .*: [\d,]+/s wall, [\d,]+ per CPU second", out)
    floor = re.search(
        r"([\d,]+) CPU us each, of which the 5 signature checks alone take ([\d,]+)", out
    )
    assert floor is not None, out
    each, signatures = (int(g.replace(",", "")) for g in floor.groups())
    assert 0 < signatures <= each * 1.5  # the floor is part of the whole (timing noise aside)
    check = re.search(
        r"validator request check: ([\d,]+) us per request \(cryptography alone ([\d,]+) us", out
    )
    assert check is not None, out
    each, signatures = (int(g.replace(",", "")) for g in check.groups())
    assert 0 < signatures <= each * 1.5


@pytest.mark.slow
def test_bench_ca_validator_check_only() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "trustchain.node.cli", "bench", "ca",
            "--validator-check-only", "--requests", "10",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "validator request check:" in result.stdout
    assert "final certificates" not in result.stdout
