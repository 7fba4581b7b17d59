"""Fold a LoRA checkpoint into its base model and save the official layout.

    python -m training.merge --checkpoint checkpoints_dir/<run>/adapter --base <model folder|repo id|tiny> --out <folder>

`--checkpoint` is a run's adapter/ or any step-<n>/ folder. Rank, alpha and targets come from its own
adapter_config.json; `--rank`/`--alpha` are a check, not a setting, and the adapter must agree with the run that
trained it (training_config.json): a mismatch is refused with both values named. `--base` must be the model the
adapter was trained on (family, T3 configuration and a SHA-256 of the T3 weights, recorded in
chatterbox_base.json); another base is refused with what differs. After merging, the merged T3 must give the
adapter model's float32 logits on a fixed probe input, and the command says by how much they differ. The output
holds the merged T3 beside the base's VE, S3Gen and tokenizer, and the checkpoint's conds.pt (the training
speaker's voice) when it has one; `ChatterboxTTS.from_local(out)` loads it.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from inference.adapters import BASE_FILE, AdapterMismatch, apply_adapter, check_settings
from inference.chatterbox import load_chatterbox
from inference.checkpoints import CheckpointError


def merge_checkpoint(checkpoint: str | Path, base: str, out: str | Path, rank: int | None = None,
                     alpha: float | None = None, multilingual: bool = False, device: str = "cpu") -> float:
    """Merge and save; returns the probe's max relative logit difference between merged and adapter model."""
    checkpoint, out = Path(checkpoint), Path(out)
    config = check_settings(checkpoint, rank, alpha)  # before the (slow) model load
    if out.resolve() == checkpoint.resolve() or (Path(base).is_dir() and out.resolve() == Path(base).resolve()):
        raise ValueError(f"--out {out} must be a new folder, not the checkpoint or the base model")
    model = load_chatterbox(base, multilingual, device)
    print(f"adapter: rank {config['r']}, alpha {config['lora_alpha']:g}, targets {config['target_modules']}",
          file=sys.stderr)
    diff = apply_adapter(model, checkpoint)  # checks the base, merges, verifies, takes the voice
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_local(tmp)
    for name in (BASE_FILE, "README.md"):  # which base, and the model card
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="adapter folder: a run's adapter/ or step-<n>/ (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--base", required=True, help="base model: folder in the official layout, HF repo id, or tiny")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--rank", type=int, help="expected LoRA rank: refuse to merge if the adapter's differs")
    p.add_argument("--alpha", type=float, help="expected LoRA alpha: refuse to merge if the adapter's differs")
    p.add_argument("--multilingual", action="store_true", help="load --base as the multilingual model")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        diff = merge_checkpoint(args.checkpoint, args.base, args.out, args.rank, args.alpha, args.multilingual,
                                args.device)
    except (AdapterMismatch, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged logits equal the adapter model's on the probe input (max relative difference {diff:.1e})")
    print(f"merged model: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
