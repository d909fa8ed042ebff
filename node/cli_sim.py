"""`trustchain sim`: the deterministic consensus simulator (trustchain.consensus.sim)."""

from __future__ import annotations

import argparse
import textwrap

from trustchain.consensus.safety import MUTANTS
from trustchain.consensus.sim import FAULTS, SimConfig, run_seed
from trustchain.node.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser(
        "sim",
        help="simulate a cluster under faults and Byzantine validators, check safety and liveness",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            f"""\
            Runs the real consensus core for N validators in one process, over an
            in-memory network with a seeded RNG and trio's MockClock, for each seed.
            F of the validators are Byzantine.  Checks agreement, validity and no
            honest double vote or proposal after every event, and liveness once
            faults heal.
            Prints one line per failing seed with the command that reproduces it,
            then `seeds: K violations: V`; with --seed also `trace-hash: HEX`.
            Exits 1 if any seed violated a property.

            faults: {", ".join(FAULTS)} (default: all)
            mutants: {", ".join(MUTANTS)}

            examples:
              trustchain sim --nodes 4 --byzantine 1 --seeds 300
              trustchain sim --nodes 4 --byzantine 1 --seed 17 --trace
              trustchain sim --nodes 4 --byzantine 1 --seeds 200 --mutant no-lock
            """
        ),
    )
    sim.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    sim.add_argument("--byzantine", type=int, default=1, help="Byzantine validators (default 1)")
    sim.add_argument("--seeds", type=int, default=100, help="seeds 0..K-1 (default 100)")
    sim.add_argument("--seed", type=int, help="run this one seed only")
    sim.add_argument("--faults", help="comma-separated fault classes (default: all)")
    sim.add_argument("--mutant", help="run a deliberately broken variant of the safety rules")
    sim.add_argument("--list-mutants", action="store_true", help="list the mutants and exit")
    sim.add_argument("--trace", action="store_true", help="print every event (with --seed)")
    sim.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    if args.list_mutants:
        for name, mutant in MUTANTS.items():
            print(f"{name:<12} {(mutant.__doc__ or '').splitlines()[0]}")
        return 0
    faults = tuple(FAULTS if args.faults is None else [f for f in args.faults.split(",") if f])
    if args.nodes < 1:
        raise UserError(f"--nodes {args.nodes}: need at least one validator")
    if args.byzantine < 0:
        raise UserError(f"--byzantine {args.byzantine}: a count, 0 or more")
    if 3 * args.byzantine >= args.nodes:
        raise UserError(
            f"--byzantine {args.byzantine} must be below a third of --nodes {args.nodes}"
        )
    if args.seed is None and args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: run at least one seed")
    try:
        config = SimConfig(
            nodes=args.nodes, byzantine=args.byzantine, faults=faults, mutant=args.mutant
        )
        seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
        base = f"trustchain sim --nodes {args.nodes} --byzantine {args.byzantine}"
        if args.faults is not None:
            base += f" --faults {','.join(faults)}"
        if args.mutant:
            base += f" --mutant {args.mutant}"
        violations = 0
        for seed in seeds:
            result = run_seed(seed, config, print if args.trace else None)
            for v in result.violations:
                violations += 1
                print(
                    f"seed {seed}: {v.kind}: {v.detail}  [reproduce: {base} --seed {seed} --trace]"
                )
            if args.seed is not None:
                print(f"trace-hash: {result.trace_hash}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(f"seeds: {len(seeds)} violations: {violations}")
    return 1 if violations else 0
