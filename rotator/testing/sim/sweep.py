"""Sweeps: many seeded schedules run (in parallel), failures noted by invariant, the lowest seed per
invariant shrunk to a minimal replay (docs/RELIABILITY.md).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rotator.testing.sim.explorer import generate, run, shrink
from rotator.testing.sim.faults import ALL_FAULTS, VARIANTS


@dataclass
class Finding:
    seed: int
    kind: str
    invariant: str
    detail: str
    replay: str


@dataclass
class SweepReport:
    schedules: int = 0
    steps: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    violations: int = 0
    by_invariant: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    failing: list[tuple[int, str]] = field(default_factory=list)  # (seed, invariant), the first few per invariant

    def summary(self) -> str:
        lines = [
            f"schedules: {self.schedules}",
            f"steps: {self.steps}",
            f"seconds: {self.seconds:.1f}",
            f"violations: {self.violations}",
        ]
        lines += [f"  {name}: {count}" for name, count in sorted(self.by_invariant.items())]
        lines.append("faults injected by kind:")
        for name in ALL_FAULTS:
            lines.append(f"  {name}: {self.faults.get(name, 0)}")
            if name in VARIANTS:
                lines.append(f"    of which {VARIANTS[name]}: {self.faults.get(VARIANTS[name], 0)}")
        return "\n".join(lines)


def sweep(count: int, *, first_seed: int = 0, faults: Iterable[str] = ALL_FAULTS, kinds: Sequence[str] | None = None,
          steps: tuple[int, int] = (30, 40), shrink_findings: int = 5, stop_after: int | None = None,
          progress: Callable[[SweepReport], None] | None = None) -> SweepReport:
    """Run `count` schedules; shrink the first `shrink_findings` failures of each invariant."""
    enabled = tuple(faults)
    report = SweepReport()
    started = time.perf_counter()
    shrunk: Counter[str] = Counter()
    for seed in range(first_seed, first_seed + count):
        schedule = generate(seed, faults=enabled, kinds=kinds, steps=steps)
        result = run(schedule)
        report.schedules += 1
        report.steps += result.steps
        report.faults.update(result.faults)
        if result.violations:
            first = result.violations[0]
            report.violations += 1
            report.by_invariant[first.invariant] += 1
            if report.by_invariant[first.invariant] <= 5:
                report.failing.append((seed, first.invariant))
            if shrunk[first.invariant] < shrink_findings:
                shrunk[first.invariant] += 1
                small = shrink(schedule, first.invariant)
                detail = next((str(v) for v in run(small).violations if v.invariant == first.invariant), str(first))
                report.findings.append(Finding(seed, schedule.kind, first.invariant, detail, small.replay_text()))
            if stop_after is not None and report.violations >= stop_after:
                break
        if progress is not None and report.schedules % 1000 == 0:
            report.seconds = time.perf_counter() - started
            progress(report)
    report.seconds = time.perf_counter() - started
    return report


def merge(reports: Iterable[SweepReport]) -> SweepReport:
    total = SweepReport()
    for part in reports:
        total.schedules += part.schedules
        total.steps += part.steps
        total.faults.update(part.faults)
        total.violations += part.violations
        total.by_invariant.update(part.by_invariant)
        total.findings.extend(part.findings)
        total.failing.extend(part.failing)
        total.seconds = max(total.seconds, part.seconds)
    return total


def _sweep_part(args: tuple[int, int, tuple[str, ...], tuple[str, ...] | None, tuple[int, int], int]) -> SweepReport:
    from rotator.testing.sim.quiet import quiet_logs

    count, first_seed, faults, kinds, steps, shrink_findings = args
    with quiet_logs():
        return sweep(count, first_seed=first_seed, faults=faults, kinds=kinds, steps=steps, shrink_findings=shrink_findings)


def sweep_parallel(count: int, *, workers: int, first_seed: int = 0, faults: Iterable[str] = ALL_FAULTS,
                   kinds: Sequence[str] | None = None, steps: tuple[int, int] = (30, 40), shrink_findings: int = 5,
                   progress: Callable[[SweepReport], None] | None = None) -> SweepReport:
    """`sweep` over `workers` processes, in chunks of consecutive seeds; the same seeds give the same report."""
    if workers <= 1:
        return sweep(count, first_seed=first_seed, faults=faults, kinds=kinds, steps=steps,
                     shrink_findings=shrink_findings, progress=progress)
    from concurrent.futures import ProcessPoolExecutor

    chunk = 1000
    # Chunks only note their failing seeds; the lowest are shrunk here at the end (shrinking costs
    # hundreds of runs per failure: done per chunk it would cost more than the sweep).
    jobs = [(min(chunk, count - start), first_seed + start, tuple(faults), tuple(kinds) if kinds else None, steps, 0)
            for start in range(0, count, chunk)]
    started = time.perf_counter()
    parts: list[SweepReport] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_sweep_part, jobs):
            parts.append(part)
            if progress is not None:
                so_far = merge(parts)
                so_far.seconds = time.perf_counter() - started
                progress(so_far)
    total = merge(parts)
    total.seconds = time.perf_counter() - started
    kept: Counter[str] = Counter()
    for seed, invariant in sorted(total.failing):
        if kept[invariant] >= shrink_findings:
            continue
        kept[invariant] += 1
        schedule = generate(seed, faults=faults, kinds=kinds, steps=steps)
        small = shrink(schedule, invariant)
        detail = next((str(v) for v in run(small).violations if v.invariant == invariant), invariant)
        total.findings.append(Finding(seed, schedule.kind, invariant, detail, small.replay_text()))
    return total
