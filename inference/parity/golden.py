"""Golden files of the parity kit and their comparison rule."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open


@dataclass
class Golden:
    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]

    @property
    def case(self) -> str:
        return self.meta.get("case") or self.path.name.removesuffix(".safetensors")

    def params(self) -> dict:
        return json.loads(self.meta.get("params", "{}"))


def load_golden(path: str | Path) -> Golden:
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        return Golden(path, {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {}))


@dataclass
class Tolerances:
    """Per-file, per-tensor rules: "exact", "input", or {"atol": a, "rtol": r}."""

    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "Tolerances":
        return cls(json.loads(Path(path).read_text())["files"])

    def for_golden(self, golden: Golden) -> dict:
        """Rules of this case; a case the table has never seen borrows those of a file of the same format."""
        if golden.case in self.files:
            return self.files[golden.case]
        names = set(golden.tensors)
        for rules in self.files.values():
            if set(rules) == names:
                return rules
        borrowed = {}
        for case in sorted(self.files):
            for name, rule in self.files[case].items():
                if name in names:
                    borrowed.setdefault(name, rule)
        return borrowed


def find_tolerances(golden_path: Path) -> Path | None:
    for folder in (golden_path.parent, golden_path.parent.parent):
        if (folder / "tolerances.json").is_file():
            return folder / "tolerances.json"
    return None


@dataclass
class Comparison:
    name: str
    passed: bool
    max_abs: float
    max_rel: float
    detail: str = ""


def compare(name: str, actual: torch.Tensor, expected: torch.Tensor, rule) -> Comparison:
    if tuple(actual.shape) != tuple(expected.shape):
        return Comparison(name, False, float("inf"), float("inf"),
                          f"shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if rule == "exact" or not expected.is_floating_point():
        mismatches = int((actual.to(expected.dtype) != expected).sum())
        err = float((actual.double() - expected.double()).abs().max()) if expected.numel() else 0.0
        return Comparison(name, mismatches == 0, err, 0.0, f"{mismatches} mismatches" if mismatches else "")
    atol, rtol = float(rule["atol"]), float(rule["rtol"])
    a, e = actual.detach().double().cpu(), expected.double()
    a_inf, e_inf = torch.isneginf(a), torch.isneginf(e)
    if not torch.equal(a_inf, e_inf):
        return Comparison(name, False, float("inf"), float("inf"),
                          f"-inf at {int((a_inf != e_inf).sum())} different positions")
    finite = ~e_inf
    if not torch.isfinite(a[finite]).all():
        return Comparison(name, False, float("inf"), float("inf"), "non-finite values")
    diff = (a[finite] - e[finite]).abs()
    bound = atol + rtol * e[finite].abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / e[finite].abs().clamp_min(1e-12)).max()) if diff.numel() else 0.0
    bad = int((diff > bound).sum())
    return Comparison(name, bad == 0, max_abs, max_rel, f"{bad} elements out of tolerance" if bad else "")
