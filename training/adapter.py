"""LoRA adapters on T3's Llama backbone, through `peft`, in its standard on-disk format.

A LoRA layer replaces a frozen weight W (out, in) by W + (alpha / r) * B @ A, with A (r, in) and B (out, r)
the only trained tensors; B starts at zero, so a fresh adapter leaves the model unchanged. Merging folds
(alpha / r) * B @ A into W, giving a plain T3 with the official state-dict layout.

The adapter folder is what `PeftModel.save_pretrained` writes (`adapter_config.json` with `r`, `lora_alpha`,
`target_modules`; `adapter_model.safetensors` with keys `base_model.model.tfmr.layers.<i>...lora_A.weight`),
so `PeftModel.from_pretrained(T3(cfg), folder)` reads it without this project.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from inference.models.t3 import T3, T3Cond, T3Config

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
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


class AdapterMismatch(ValueError):
    """An adapter and the settings asked for (or the model it is put on) disagree."""


def add_lora(t3: T3, settings: LoraSettings):
    """Wrap `t3` in a PeftModel whose only trainable parameters are the LoRA matrices (B zero, A seeded
    from torch's global generator)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.targets), bias="none")
    return get_peft_model(t3, config)


def read_adapter_config(folder: str | Path) -> dict:
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a LoRA adapter folder: {ADAPTER_CONFIG} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterMismatch(f"{path} is not valid JSON: {e}") from e
    if config.get("peft_type") != "LORA" or "r" not in config or "lora_alpha" not in config:
        raise AdapterMismatch(f"{path} does not describe a LoRA adapter (peft_type, r and lora_alpha are needed)")
    return config


def check_settings(folder: str | Path, rank: int | None = None, alpha: float | None = None) -> dict:
    """The adapter's config, after checking that the rank/alpha a user asked for are the adapter's own."""
    config = read_adapter_config(folder)
    if rank is not None and int(rank) != int(config["r"]):
        raise AdapterMismatch(f"rank mismatch: you asked for rank {rank} but the adapter in {folder} has "
                              f"rank {config['r']} (r in {ADAPTER_CONFIG})")
    if alpha is not None and float(alpha) != float(config["lora_alpha"]):
        raise AdapterMismatch(f"alpha mismatch: you asked for alpha {alpha:g} but the adapter in {folder} has "
                              f"alpha {float(config['lora_alpha']):g} (lora_alpha in {ADAPTER_CONFIG})")
    return config


def load_adapter(t3: T3, folder: str | Path, trainable: bool = False):
    """`t3` wrapped with the adapter saved in `folder`. Every adapter tensor must find its place and every
    LoRA layer must get its tensors: a missing or unexpected key is an error, not a silent no-op."""
    from peft import PeftModel
    from safetensors.torch import load_file

    folder = Path(folder)
    read_adapter_config(folder)
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} lacks {ADAPTER_WEIGHTS}")
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    try:
        model = PeftModel.from_pretrained(t3, str(folder), is_trainable=trainable)
    except RuntimeError as e:  # size mismatch between the adapter and this T3
        raise AdapterMismatch(f"the adapter in {folder} does not fit this T3: {e}") from e
    expected = {_saved_name(name) for name, _ in model.named_parameters() if ".lora_" in name}
    missing, unexpected = sorted(expected - saved.keys()), sorted(saved.keys() - expected)
    if missing or unexpected:
        raise AdapterMismatch(f"the adapter in {folder} does not fit this T3: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]} ({len(missing)} missing, {len(unexpected)} unexpected)")
    return model


def _saved_name(name: str) -> str:
    """Parameter name in a live PeftModel -> key in adapter_model.safetensors (no adapter name)."""
    return name.replace(".default.", ".")


def merge(model) -> T3:
    """Fold the adapter into the base weights and return the plain T3 (peft's merge_and_unload)."""
    merged = model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged.eval()


def probe_batch(cfg: T3Config, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """A fixed two-row teacher-forcing input (random ids and conditioning from `seed`) to compare models on."""
    g = torch.Generator().manual_seed(seed)
    lt, ls = 24, 40
    text = torch.randint(1, min(cfg.text_vocab_size, 255), (2, lt), generator=g)
    text[:, 0], text[:, -1] = cfg.start_text_token, cfg.stop_text_token
    speech = torch.randint(0, 6561, (2, ls), generator=g)
    speech[:, 0], speech[:, -1] = cfg.start_speech_token, cfg.stop_speech_token
    cond = T3Cond(speaker_emb=torch.randn(2, cfg.speaker_embed_size, generator=g),
                  cond_prompt_speech_tokens=torch.randint(0, 6561, (2, 50), generator=g),
                  emotion_adv=torch.full((2, 1, 1), 0.5))
    return {"cond": cond.to(device), "text_tokens": text.to(device), "text_token_lens": torch.full((2,), lt).to(device),
            "speech_tokens": speech.to(device), "speech_token_lens": torch.full((2,), ls).to(device)}


@torch.no_grad()
def probe_logits(t3: T3, probe: dict) -> torch.Tensor:
    """Speech logits (2, Ls, V) of `t3` (plain, or with its adapter injected) on `probe`, in eval mode."""
    was_training = t3.training
    t3.eval()
    try:
        return t3(**probe).speech_logits.float().cpu()
    finally:
        t3.train(was_training)


def merge_verified(model, tolerance: float = 1e-4) -> tuple[T3, float]:
    """Merge, then check the merged T3 gives the adapter model's logits on `probe_batch`.

    Returns (merged T3, max |difference| relative to the logits' largest magnitude). Raises AdapterMismatch
    when that exceeds `tolerance` (float32 merging differs only by rounding, around 1e-6).
    """
    base = model.get_base_model()
    probe = probe_batch(base.cfg, base.device)
    before = probe_logits(base, probe)  # the adapter layers are injected in place: this includes them
    merged = merge(model)
    after = probe_logits(merged, probe)
    scale = max(1.0, float(before.abs().max()))
    diff = float((after - before).abs().max()) / scale
    if not diff <= tolerance:
        raise AdapterMismatch(f"merged logits differ from the adapter model's by {diff:.2e} (relative), "
                              f"above the tolerance {tolerance:.0e}")
    return merged, diff


def trainable_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
