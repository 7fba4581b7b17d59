"""LoRA on T3's backbone (Llama or GPT-2) for training, through `peft`; reading, checking and merging adapters
lives in `inference.adapters` (inference loads adapters too).

A LoRA layer replaces a frozen weight W (out, in) by W + (alpha / r) * B @ A, with A (r, in) and B (out, r)
the only trained tensors; B starts at zero, so a fresh adapter leaves the model unchanged. GPT-2's projections
are `Conv1D` layers that store W transposed, (in, out): peft must be told (`fan_in_fan_out`), or a merge would
fold in the transpose of the update. The merge's float32 logit check (inference.adapters.merge_verified) would
catch that, and a test trains, merges and compares on Turbo.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.adapters import on_synthetic_base
from inference.models.t3 import T3

LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# GPT-2 (Turbo, Nano): c_attn (q, k, v in one), c_proj (the attention's output and the MLP's down projection:
# peft matches the name's end, so both), c_fc (the MLP's up projection); the community recipes' choice
GPT2_PROJECTIONS = ("c_attn", "c_proj", "c_fc")


def projections(t3_or_cfg) -> tuple[str, ...]:
    """The linear layers LoRA may adapt in this T3 (its configuration decides the backbone)."""
    cfg = getattr(t3_or_cfg, "cfg", t3_or_cfg)
    return GPT2_PROJECTIONS if cfg.is_gpt2 else LLAMA_PROJECTIONS


@dataclass
class LoraSettings:
    """rank r and alpha set the update's scale alpha / r (alpha = 2 * rank is the usual choice)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ()  # layers that get an adapter; (): all of the backbone's (`projections`)

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
        unknown = sorted(set(self.targets) - set(LLAMA_PROJECTIONS) - set(GPT2_PROJECTIONS))
        if unknown:
            raise ValueError(f"lora targets {list(self.targets)}: each must be one of {', '.join(LLAMA_PROJECTIONS)} "
                             f"(English, multilingual) or {', '.join(GPT2_PROJECTIONS)} (Turbo, Nano)")

    def for_backbone(self, t3_or_cfg, family: str) -> "LoraSettings":
        """These settings with the targets this T3 has: the family's own projections when none were given; a
        target of the other backbone is refused with both lists named."""
        own = projections(t3_or_cfg)
        if not self.targets:
            return LoraSettings(self.rank, self.alpha, self.dropout, own)
        foreign = sorted(set(self.targets) - set(own))
        if foreign:
            raise ValueError(f"lora targets {foreign} are not layers of the {family} model's T3; its layers are "
                             f"{', '.join(own)} (leave targets empty for all of them)")
        return self


def add_lora(t3: T3, settings: LoraSettings, base_name: str | None = None):
    """Wrap `t3` in a PeftModel whose only trainable parameters are the LoRA matrices (B zero, A seeded
    from torch's global generator); `settings.targets` must be resolved (`for_backbone`). `base_name` goes to adapter_config.json's base_model_name_or_path."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none", fan_in_fan_out=t3.cfg.is_gpt2)
    t3.name_or_path = base_name  # peft copies the model's name_or_path into the config
    return get_peft_model(t3, config)


def enable_checkpointing(t3: T3) -> None:
    """Recompute each backbone layer in backward: about half the activation memory for a third more time.
    Non-reentrant checkpointing needs no input that requires grad, so transformers' hook on the token table's
    output is not needed; GPT-2 T3 has no token table (its inputs are embeddings), and the hook would fail there."""
    if t3.cfg.is_gpt2:
        t3.tfmr.enable_input_require_grads = lambda: None
    t3.tfmr.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def model_card(title: str, base: dict, facts: dict[str, str], usage: list[str]) -> str:
    """README.md of an adapter or merged folder: what it was trained on and from, how well, and how to use it
    (it replaces peft's generated card, which is a form of "More Information Needed")."""
    lines = [f"# {title}", "", f"LoRA fine-tune of the Chatterbox {base.get('family', '')} T3 (text to speech "
             "tokens) on one speaker's recordings, made with `python -m training.lora` of the Chatterbox workbench.",
             ""]
    if on_synthetic_base(base):
        lines += [f"**Synthetic base: the `{base.get('model')}` preset has random weights. This model produces no "
                  "intelligible speech; it exists to test the pipeline.**", ""]
    lines += ["| | |", "| --- | --- |",
              f"| base model | `{base.get('model')}` ({base.get('family')}) |",
              f"| base T3 SHA-256 | `{base.get('t3_sha256')}` |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Use it", "", "```bash", *usage, "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> None:
    (Path(folder) / "README.md").write_text(text)
