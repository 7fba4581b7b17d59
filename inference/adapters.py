"""LoRA adapters of T3 on disk: reading them, checking they belong to the base they are put on, and applying them.

An adapter folder is what `PeftModel.save_pretrained` writes (`adapter_config.json`, `adapter_model.safetensors`,
keys `base_model.model.tfmr.layers.<i>...lora_A.weight`), so stock `peft` reads it without this project. Beside
those files our training writes:
  - `chatterbox_base.json`: the base it was trained on (the model name as given, the family, the T3 config and
    a SHA-256 of the base T3 weights), so that a merge or a load onto another base is refused, not done quietly;
  - `training_config.json`: the run's settings (the adapter's rank/alpha must agree with them);
  - `conds.pt`: the training speaker's voice.

A LoRA layer replaces a frozen weight W (out, in) by W + (alpha / r) * B @ A, with A (r, in) and B (out, r) the
trained tensors. Merging folds (alpha / r) * B @ A into W, giving a plain T3 in the official layout.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from .models.t3 import T3, T3Cond, T3Config

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FILE = "chatterbox_base.json"
RUN_CONFIG = "training_config.json"
HELDOUT_FILE = "heldout_clips.json"  # in adapter and merged exports: clips held out of training (a voice to test)


class AdapterMismatch(ValueError):
    """An adapter and the settings asked for (or the model it is put on) disagree."""


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


# ------------------------------------------------------------------------------------------ identity of a base

def t3_fingerprint(t3: T3) -> str:
    """SHA-256 over the T3 state dict (names, shapes, dtypes, bytes), before any adapter is injected.
    About 2 s for the 0.5B model: cheap beside loading it, and it tells two bases apart whatever their names."""
    h = hashlib.sha256()
    for name, value in sorted(t3.state_dict().items()):
        if ".lora_" in name or "base_layer" in name:
            raise ValueError("fingerprint the base T3 before an adapter is injected into it")
        h.update(name.encode())
        h.update(repr((tuple(value.shape), str(value.dtype))).encode())
        h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def base_identity(model, name: str) -> dict:
    """What `chatterbox_base.json` records of a loaded Chatterbox: `name` is the model as the user gave it ('tiny',
    a folder made absolute, a repo id), so that a later load can find the base again. The family comes from the
    model, not from T3's configuration: the tiny Turbo and Nano presets share one."""
    path = Path(name).expanduser()
    return {"model": str(path.resolve()) if path.exists() else name, "family": model.FAMILY.name,
            "t3_config": json.loads(json.dumps(asdict(model.t3.cfg))), "t3_sha256": t3_fingerprint(model.t3)}


def on_synthetic_base(identity: dict) -> bool:
    """Whether a recorded base is a preset (random weights): its adapters make no speech either."""
    from .families import FAMILIES, PRESETS

    if identity.get("model") in PRESETS:
        return True
    family = FAMILIES.get(identity.get("family", "english"))
    layers = identity.get("t3_config", {}).get("num_layers")
    return family is not None and layers is not None and layers < family.t3.num_layers


def write_base_identity(folder: str | Path, identity: dict) -> None:
    (Path(folder) / BASE_FILE).write_text(json.dumps(identity, indent=1) + "\n")


def read_base_identity(folder: str | Path) -> dict | None:
    path = Path(folder) / BASE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterMismatch(f"{path} is not valid JSON: {e}") from e


def check_base(folder: str | Path, model) -> None:
    """Refuse to put the adapter in `folder` on `model` (a loaded Chatterbox) unless it is the base the adapter
    was trained on, naming what differs. Adapters without a record (made elsewhere) only get a warning."""
    saved = read_base_identity(folder)
    if saved is None:
        log.warning("%s has no %s: cannot check that it belongs to this base model", folder, BASE_FILE)
        return
    t3, family = model.t3, model.FAMILY.name
    problems = []
    if saved.get("family") != family:
        problems.append(f"it was trained on the {saved.get('family')} model, this base is the {family} one "
                        "(an adapter fits only the family and weights it was trained on)")
    ours = json.loads(json.dumps(asdict(t3.cfg)))
    differing = sorted(k for k in set(ours) | set(saved.get("t3_config", {}))
                       if ours.get(k) != saved.get("t3_config", {}).get(k))
    if differing:
        shown = ", ".join(f"{k}: adapter's base {saved['t3_config'].get(k)!r}, this base {ours.get(k)!r}"
                          for k in differing[:4])
        problems.append(f"the T3 configurations differ ({shown}{', ...' if len(differing) > 4 else ''})")
    elif saved.get("t3_sha256") and saved["t3_sha256"] != (now := t3_fingerprint(t3)):
        problems.append(f"the T3 weights differ (SHA-256 {saved['t3_sha256'][:12]}... when trained, "
                        f"{now[:12]}... now)")
    if problems:
        raise AdapterMismatch(f"the adapter in {folder} was trained on another base ({saved.get('model')}): "
                              + "; ".join(problems) + ". Use the base it was trained on")


# ------------------------------------------------------------------------------------------ adapter settings

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
    """The adapter's config, after checking that the rank/alpha a user asked for, and the settings of the run
    that trained it (training_config.json, when present), agree with it."""
    config = read_adapter_config(folder)
    if rank is not None and int(rank) != int(config["r"]):
        raise AdapterMismatch(f"rank mismatch: you asked for rank {rank} but the adapter in {folder} has "
                              f"rank {config['r']} (r in {ADAPTER_CONFIG})")
    if alpha is not None and float(alpha) != float(config["lora_alpha"]):
        raise AdapterMismatch(f"alpha mismatch: you asked for alpha {alpha:g} but the adapter in {folder} has "
                              f"alpha {float(config['lora_alpha']):g} (lora_alpha in {ADAPTER_CONFIG})")
    run_file = Path(folder) / RUN_CONFIG
    if run_file.is_file():
        lora = json.loads(run_file.read_text()).get("lora", {})
        pairs = {"rank": (config["r"], lora.get("rank")), "alpha": (config["lora_alpha"], lora.get("alpha")),
                 "targets": (sorted(config.get("target_modules") or []), sorted(lora.get("targets") or []))}
        differing = [f"{k}: {ADAPTER_CONFIG} says {a!r}, {RUN_CONFIG} says {b!r}"
                     for k, (a, b) in pairs.items() if b is not None and a != b and not _same_number(a, b)]
        if differing:
            raise AdapterMismatch(f"the adapter in {folder} disagrees with the run that trained it ("
                                  + "; ".join(differing) + f"): was {ADAPTER_CONFIG} edited? Restore it")
    return config


def _same_number(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ loading and merging

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
    expected = {name.replace(".default.", ".") for name, _ in model.named_parameters() if ".lora_" in name}
    missing, unexpected = sorted(expected - saved.keys()), sorted(saved.keys() - expected)
    if missing or unexpected:
        raise AdapterMismatch(f"the adapter in {folder} does not fit this T3: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]} ({len(missing)} missing, {len(unexpected)} unexpected)")
    return model


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
    """Speech logits (2, Ls, V) of `t3` (plain, or with its adapter injected) on `probe`: eval mode, float32,
    autocast off (a training loop may have left one active), so the comparison is about weights only."""
    was_training = t3.training
    t3.eval()
    try:
        with torch.autocast(device_type=t3.device.type, enabled=False):
            return t3(**probe).speech_logits.float().cpu()
    finally:
        t3.train(was_training)


def merge_verified(model, tolerance: float = 1e-4) -> tuple[T3, float]:
    """Fold the adapter into the base weights (peft's merge_and_unload) and check that the merged T3 gives the
    adapter model's logits on `probe_batch`.

    Both sides run in float32 with autocast off, whatever precision training used, so the only difference is
    the rounding of W + (alpha / r) B A (about 1e-6 relative). Returns (merged T3, max |difference| relative to
    the logits' largest magnitude); AdapterMismatch when that exceeds `tolerance`.
    """
    base = model.get_base_model()
    if any(p.dtype != torch.float32 for p in base.parameters()):
        raise AdapterMismatch("merging needs the float32 base weights; this model holds "
                              f"{sorted({str(p.dtype) for p in base.parameters()})}")
    probe = probe_batch(base.cfg, base.device)
    before = probe_logits(base, probe)  # the adapter layers are injected in place: this includes them
    merged = model.merge_and_unload()
    merged.voice_prefixes.clear()  # merging changes weights through .data, which no version counter sees
    for p in merged.parameters():
        p.requires_grad_(False)
    merged.eval()
    after = probe_logits(merged, probe)
    scale = max(1.0, float(before.abs().max()))
    diff = float((after - before).abs().max()) / scale
    if not diff <= tolerance:
        raise AdapterMismatch(f"the merged T3's float32 logits differ from the adapter model's by {diff:.2e} "
                              f"(relative) on a probe input, above the tolerance {tolerance:.0e}: the merge "
                              "went wrong (a peft version that merges these layers differently?)")
    return merged, diff


def apply_adapter(model, folder: str | Path) -> float:
    """Put the adapter of `folder` on a loaded Chatterbox of any family, merged in memory (so
    synthesis runs at the base model's speed), and take its voice (conds.pt) when it has one.
    Returns the probe's relative logit difference between the merged and the adapter model."""
    from .conditionals import Conditionals

    folder = Path(folder)
    check_settings(folder)
    check_base(folder, model)
    merged, diff = merge_verified(load_adapter(model.t3, folder))
    model.t3 = merged
    if (folder / "conds.pt").is_file():
        model.conds = Conditionals.load(folder / "conds.pt").to(model.device)
    log.info("applied the LoRA adapter %s (merged in memory, max relative logit difference %.1e)", folder, diff)
    return diff


def adapter_base(folder: str | Path) -> str:
    """The base model an adapter folder names (chatterbox_base.json, else peft's base_model_name_or_path)."""
    saved = read_base_identity(folder) or {}
    name = saved.get("model") or read_adapter_config(folder).get("base_model_name_or_path")
    if not name:
        raise AdapterMismatch(f"{folder} does not say which base model it belongs to: pass the base with "
                              f"--model and this folder with --adapter")
    return name
