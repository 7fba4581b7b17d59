from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .cases import UnsupportedCase, run_case
from .golden import Comparison, Tolerances, compare, find_tolerances, load_golden


@dataclass
class CaseResult:
    path: Path
    status: str  # PASS, FAIL or ERROR (could not run)
    comparisons: list[Comparison] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    @property
    def worst(self) -> Comparison | None:
        failing = [c for c in self.comparisons if not c.passed]
        pool = failing or self.comparisons
        return max(pool, key=lambda c: c.max_abs) if pool else None

    def summary(self) -> str:
        w = self.worst
        worst = f"worst {w.name} max_abs={w.max_abs:.3g}" if w else self.message
        return f"{self.path.name} {self.status} {worst} ({len(self.comparisons)} tensors, {self.seconds:.1f}s)"


def run_file(path: str | Path, tolerances: Tolerances | None = None) -> CaseResult:
    path = Path(path)
    start = time.perf_counter()
    try:
        golden = load_golden(path)
    except Exception as e:  # unreadable file: report, keep going with the others
        return CaseResult(path, "ERROR", message=f"cannot read golden file: {e}")
    if tolerances is None:
        tol_path = find_tolerances(path)
        if tol_path is None:
            return CaseResult(path, "ERROR", message="no tolerances.json beside the golden folder; pass --tolerances")
        tolerances = Tolerances.load(tol_path)
    rules = tolerances.for_golden(golden)
    try:
        produced = run_case(golden)
    except UnsupportedCase as e:
        return CaseResult(path, "ERROR", message=str(e), seconds=time.perf_counter() - start)
    comparisons = []
    for name, expected in sorted(golden.tensors.items()):
        rule = rules.get(name)
        if rule == "input":
            continue
        if name not in produced:
            if rule is None:
                continue  # neither an input nor an output we know: nothing to check
            comparisons.append(Comparison(name, False, float("inf"), float("inf"), "not produced"))
            continue
        if rule is None:
            comparisons.append(Comparison(name, False, float("inf"), float("inf"), "no tolerance for this tensor"))
            continue
        comparisons.append(compare(name, produced[name], expected, rule))
    status = "PASS" if comparisons and all(c.passed for c in comparisons) else "FAIL"
    return CaseResult(path, status, comparisons, seconds=time.perf_counter() - start)
