"""The simulator gate: the real core stays safe and live under faults and Byzantine
validators, and every deliberately broken variant is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trustchain.consensus.safety import MUTANTS
from trustchain.consensus.sim import FAULTS, SimConfig, run_seed

BIN = Path(sys.executable).parent / "trustchain"


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "byzantine", "seeds"), [(4, 1, 300), (7, 2, 100)])
def test_honest_core_has_no_violations(nodes: int, byzantine: int, seeds: int) -> None:
    config = SimConfig(nodes=nodes, byzantine=byzantine, faults=FAULTS)
    failures = []
    for seed in range(seeds):
        result = run_seed(seed, config)
        failures += [(seed, v.kind, v.detail) for v in result.violations]
        assert min(result.committed.values()) > 0, f"seed {seed}: nothing committed"
    assert failures == []


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_every_mutant_is_caught_within_200_seeds(mutant: str) -> None:
    config = SimConfig(nodes=4, byzantine=1, faults=FAULTS, mutant=mutant)
    for seed in range(200):
        if run_seed(seed, config).violations:
            return
    pytest.fail(f"mutant {mutant} survived 200 seeds: the checkers do not bite")


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "sim", *args], capture_output=True, text=True, timeout=120)


def test_one_seed_reproduces_exactly_across_processes() -> None:
    first, second = sim("--seed", "11"), sim("--seed", "11")
    assert first.returncode == 0, first.stderr
    hashes = [line for line in first.stdout.splitlines() if line.startswith("trace-hash: ")]
    assert len(hashes) == 1 and hashes[0] in second.stdout.splitlines()
    assert sim("--seed", "12").stdout.splitlines()[0] != hashes[0]


def test_failing_seed_prints_the_command_that_reproduces_it() -> None:
    result = sim("--seeds", "5", "--mutant", "double-vote")
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith("seed "))
    command = line.split("[reproduce: ")[1].rstrip("]")
    assert command.startswith("trustchain sim --nodes 4 --byzantine 1 --mutant double-vote --seed ")
    assert result.stdout.splitlines()[-1].startswith("seeds: 5 violations: ")
    rerun = sim(*command.split()[2:-1])  # same seed, without --trace
    assert rerun.returncode == 1 and "double-vote" in rerun.stdout


def test_bad_arguments_are_explained() -> None:
    assert "below a third" in sim("--nodes", "3", "--byzantine", "1").stderr
    assert "unknown faults" in sim("--faults", "meteor", "--seeds", "1").stderr
    assert "unknown mutant" in sim("--mutant", "nope", "--seeds", "1").stderr
    # A run that checks nothing is not a pass.
    none = sim("--seeds", "0")
    assert none.returncode == 2 and "run at least one seed" in none.stderr
    assert "--byzantine -1: a count" in sim("--byzantine", "-1", "--seeds", "1").stderr
    assert "--nodes 0: need at least one" in sim("--nodes", "0", "--seeds", "1").stderr
