"""The package layering that lets a model family be added in one place: models at the bottom, the streaming
runtime above them, the facade on top; training and evaluation side by side, neither importing the other."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.append(module)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_imported_modules_resolves_relative_imports():
    path = ROOT / "inference" / "models" / "s3gen" / "s3gen.py"
    assert "inference.models.rates" in imported_modules(path)  # `from ..rates import ...`
    assert "inference.models.s3gen.flow" in imported_modules(path)  # `from .flow import ...`


@pytest.mark.parametrize("path", modules_under("inference/models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_nothing_above_them(path):
    upward = [m for m in imported_modules(path) if m.startswith("inference") and not m.startswith("inference.models")]
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}"


@pytest.mark.parametrize("path", modules_under("inference/streaming"), ids=lambda p: str(p.relative_to(ROOT)))
def test_streaming_runtime_sits_below_the_facade(path):
    above = [m for m in imported_modules(path) if m.startswith(("inference.chatterbox", "inference.server",
                                                                 "inference.tts", "inference.loading"))]
    assert not above, f"{path.relative_to(ROOT)} imports {above}"


@pytest.mark.parametrize("a, b", [("training", "evaluation"), ("evaluation", "training")])
def test_training_and_evaluation_do_not_import_each_other(a, b):
    crossing = {str(p.relative_to(ROOT)): m for p in modules_under(a) for m in imported_modules(p)
                if m == b or m.startswith(b + ".")}
    assert not crossing


def test_importing_the_packages_sets_no_environment():
    """Importing must not change process-wide settings (MKL_CBWR made every test's matmuls slower once)."""
    code = ("import os, torch, transformers, peft; before = dict(os.environ); "  # torch sets its own cache dirs
            "import inference.parity, inference.chatterbox, "
            "inference.server, training.lora, evaluation.evaluate; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
