"""LoRA on T3's Llama backbone for training, through `peft`; reading, checking and merging adapters lives in
`inference.adapters` (inference loads adapters too).

A LoRA layer replaces a frozen weight W (out, in) by W + (alpha / r) * B @ A, with A (r, in) and B (out, r)
the only trained tensors; B starts at zero, so a fresh adapter leaves the model unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.adapters import on_synthetic_base
from inference.models.t3 import T3

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    """rank r and alpha set the update's scale alpha / r (alpha = 2 * rank is the usual choice)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = LLAMA_PROJECTIONS  # Llama linear layers that get an adapter

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = tuple(t.strip() for t in self.targets.split(",") if t.strip())
        self.targets = tuple(self.targets)
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora alpha must be positive, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        unknown = sorted(set(self.targets) - set(LLAMA_PROJECTIONS))
        if unknown or not self.targets:
            raise ValueError(f"lora targets {list(self.targets)}: each must be one of {', '.join(LLAMA_PROJECTIONS)}")


def add_lora(t3: T3, settings: LoraSettings, base_name: str | None = None):
    """Wrap `t3` in a PeftModel whose only trainable parameters are the LoRA matrices (B zero, A seeded
    from torch's global generator). `base_name` goes to adapter_config.json's base_model_name_or_path."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none")
    t3.name_or_path = base_name  # peft copies the model's name_or_path into the config
    return get_peft_model(t3, config)


def model_card(title: str, base: dict, facts: dict[str, str], usage: list[str]) -> str:
    """README.md of an adapter or merged folder: what it was trained on and from, how well, and how to use it
    (it replaces peft's generated card, which is a form of "More Information Needed")."""
    lines = [f"# {title}", "", "LoRA fine-tune of the Chatterbox T3 (text to speech tokens) on one speaker's "
             "recordings, made with `python -m training.lora` of the Chatterbox workbench.", ""]
    if on_synthetic_base(base):
        lines += ["**Synthetic base: the `tiny` preset has random weights. This model produces no intelligible "
                  "speech; it exists to test the pipeline.**", ""]
    lines += ["| | |", "| --- | --- |",
              f"| base model | `{base.get('model')}` ({base.get('family')}) |",
              f"| base T3 SHA-256 | `{base.get('t3_sha256')}` |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Use it", "", "```bash", *usage, "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> None:
    (Path(folder) / "README.md").write_text(text)
