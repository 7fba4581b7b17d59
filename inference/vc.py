"""Voice conversion: S3Gen re-synthesises the speech tokens of a source utterance in a target voice.

python -m inference.vc --source a.wav --target b.wav --out c.wav [--model tiny|DIR|owner/repo] [--key value | key=value ...]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from . import loading
from .audio import AudioError, check_reference, load_audio
from .checkpoints import CheckpointError
from .conditionals import Conditionals
from .families import ENGLISH, FAMILIES, Family, family_of_preset
from .models.s3gen.s3gen import S3GEN_SR, S3_SR, RefDict, S3Gen
from .settings import command_parser, parse_command

log = logging.getLogger(__name__)


class ChatterboxVC:
    sr = S3GEN_SR

    def __init__(self, s3gen: S3Gen, device: str | torch.device = "cpu", ref: RefDict | None = None):
        self.device = torch.device(device)
        self.s3gen = s3gen.to(self.device).eval()
        self.ref = ref

    @classmethod
    def from_local(cls, folder: str | Path, device="cpu") -> "ChatterboxVC":
        """Reads the folder's S3Gen (`s3gen.safetensors`, or Turbo/Nano's `s3gen_meanflow.safetensors`: 2 flow steps)
        and, if present, the built-in voice of `conds.pt`."""
        folder = Path(folder)
        s3gen = loading.read_s3gen(s3gen_family(folder), folder)
        conds = folder / ENGLISH.files.conds
        ref = RefDict.from_dict(Conditionals.load(conds).gen) if conds.is_file() else None
        return cls(s3gen, device, ref)

    @classmethod
    def from_pretrained(cls, device="cpu", repo_id: str | None = None) -> "ChatterboxVC":
        family = loading.family_for(repo_id) if repo_id else ENGLISH
        return cls.from_local(loading.download(family, repo_id=repo_id), device)

    @classmethod
    def load(cls, model: str, device="cpu") -> "ChatterboxVC":
        source = loading.describe_source(model)
        if source == "preset":
            from .presets import WARNING, synthetic_s3gen

            log.warning(WARNING)
            return cls(synthetic_s3gen(family_of_preset(model)), device)
        if source == "folder":
            return cls.from_local(Path(model).expanduser(), device)
        return cls.from_pretrained(device, repo_id=model)

    def set_target_voice(self, wav_path: str | Path) -> None:
        from .chatterbox import S3GEN_PROMPT_SECONDS

        wav = check_reference(load_audio(wav_path, S3GEN_SR), S3GEN_SR, str(wav_path))
        self.ref = self.s3gen.embed_ref(wav[: S3GEN_PROMPT_SECONDS * S3GEN_SR], S3GEN_SR)

    @torch.inference_mode()
    def generate(self, source_path: str | Path, target_voice_path: str | Path | None = None,
                 seed: int | None = None, watermark: bool = True) -> torch.Tensor:
        """-> (1, samples) 24 kHz: the words and timing of `source_path` in the target voice."""
        if target_voice_path is not None:
            self.set_target_voice(target_voice_path)
        if self.ref is None:
            raise RuntimeError("no target voice: pass one (--target on the command line, target_voice_path in Python); "
                               "this model has no built-in voice (conds.pt)")
        source = check_reference(load_audio(source_path, S3_SR), S3_SR, str(source_path))
        tokens, _ = self.s3gen.tokenizer([torch.from_numpy(source).to(self.device)])
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        wav = self.s3gen.inference(tokens, self.ref, generator=generator)[0].cpu()
        if watermark:
            from .watermark import apply_watermark

            wav = torch.from_numpy(apply_watermark(wav.numpy(), self.sr))
        return wav[None]


def s3gen_family(folder: Path) -> Family:
    """The family whose S3Gen file the folder holds (the meanflow one first: a Turbo folder has no other)."""
    from .checkpoints import find_weights

    for family in sorted(FAMILIES.values(), key=lambda f: "meanflow" not in f.files.s3gen):
        if find_weights(folder, family.files.s3gen).is_file():
            return family
    return ENGLISH  # read_s3gen then names the file that is missing


@dataclass
class VCConfig:
    """`[vc]` of config.toml."""

    model: str = "tiny"  # a preset (tiny, tiny-turbo: meanflow S3Gen) | folder in the official layout | HF repo id
    device: str = "cpu"
    seed: int | None = 0
    watermark: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m inference.vc", VCConfig, "vc", __doc__.splitlines()[0])
    p.add_argument("--source", required=True, type=Path, help="utterance whose words are kept")
    p.add_argument("--target", type=Path, help="recording of the voice to speak them (default: conds.pt)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-watermark", action="store_true", help="the same as --watermark false")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, cfg = parse_command(parser, argv, VCConfig, "vc")
        for path in (args.source, args.target):
            if path is not None and not path.is_file():  # before the model takes seconds to load
                raise FileNotFoundError(f"audio file not found: {path}")
        start = time.perf_counter()
        vc = ChatterboxVC.load(cfg.model, cfg.device)
        wav = vc.generate(args.source, args.target, seed=cfg.seed, watermark=cfg.watermark and not args.no_watermark)
    except (AudioError, CheckpointError, FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), np.asarray(wav[0]), vc.sr)
    print(f"wrote {wav.shape[1] / vc.sr:.2f} s to {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
