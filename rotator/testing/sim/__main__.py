"""`python -m rotator.testing.sim`: a sweep of seeded schedules, and its report."""

from __future__ import annotations

import argparse
import json
import os
import sys

from rotator.testing.sim.faults import ALL_FAULTS, VARIANTS
from rotator.testing.sim.providers import KINDS
from rotator.testing.sim.quiet import quiet_logs
from rotator.testing.sim.sweep import SweepReport, sweep_parallel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rotator.testing.sim", description=__doc__)
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="provider kinds, comma-separated")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS), help="fault kinds to inject, comma-separated")
    parser.add_argument("--without", default="", help="fault kinds to leave out, comma-separated")
    parser.add_argument("--min-steps", type=int, default=30)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one per core)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    without = {f for f in args.without.split(",") if f}
    faults = [f for f in args.faults.split(",") if f and f not in without]
    unknown = [f for f in faults if f not in ALL_FAULTS]
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(unknown)} (known: {', '.join(ALL_FAULTS)})")
    def progress(report: SweepReport) -> None:
        print(f"... {report.schedules} schedules, {report.violations} violations, {report.seconds:.0f} s", file=sys.stderr, flush=True)

    with quiet_logs():
        report = sweep_parallel(args.schedules, workers=args.workers, first_seed=args.first_seed, faults=faults,
                                kinds=args.kinds.split(","), steps=(args.min_steps, args.max_steps), progress=progress)
    print(report.summary())
    for finding in report.findings:
        print(f"\nFAILED seed {finding.seed} ({finding.kind}): {finding.detail}\nminimal replay:\n{finding.replay}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"first_seed": args.first_seed, "workers": args.workers, "schedules": report.schedules, "steps": report.steps, "seconds": round(report.seconds, 1),
                       "violations": report.violations, "by_invariant": dict(report.by_invariant),
                       "faults": {k: report.faults.get(k, 0) for k in (*ALL_FAULTS, *VARIANTS.values())},
                       "findings": [f.__dict__ for f in report.findings]}, handle, indent=2)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
