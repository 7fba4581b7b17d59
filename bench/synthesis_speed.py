"""End-to-end synthesis speed at full size (synthetic weights): T3 decoding and S3Gen for N seconds of audio.

python -m bench.synthesis_speed [--device cpu|cuda] [--seconds 5] [--family english|multilingual|turbo|nano]
Synthetic weights do the same work as real ones; decoding runs a fixed token budget (25 tokens/s of audio) with
the family's own decoding (English: two CFG rows and 10 flow steps; Turbo/Nano: one row and 2 meanflow steps).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from inference.families import FAMILIES
from inference.hardware import hardware
from inference.models.s3gen.s3gen import S3GEN_SR
from inference.models.t3 import T3, T3Cond
from inference.presets import synthetic_reference
from inference.synthetic import fill_synthetic


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--family", default="english", choices=sorted(FAMILIES))
    args = p.parse_args()
    dev, family = args.device, FAMILIES[args.family]
    n_tokens = int(args.seconds * 25)
    t0 = time.perf_counter()
    t3 = fill_synthetic(T3(family.t3, init_weights=False)).eval().to(dev)
    s3gen = fill_synthetic(family.build_s3gen()).eval().to(dev)
    print(f"{family.name} ({family.size}); hardware: {hardware(dev)}; build+fill {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    ref = s3gen.embed_ref(synthetic_reference(S3GEN_SR, 6.0), S3GEN_SR)
    print(f"embed_ref of a 6 s reference: {time.perf_counter() - t0:.2f}s")
    g = torch.Generator().manual_seed(0)
    cond = T3Cond(torch.rand(1, 256, generator=g), ref.prompt_token[:, :t3.cfg.speech_cond_prompt_len],
                  torch.full((1, 1, 1), 0.5)).to(dev)
    text = torch.randint(1, 600, (1, 60), generator=g)
    if not t3.cfg.is_gpt2:
        text = torch.cat([torch.tensor([[255]]), text, torch.tensor([[0]])], 1)
    picks = iter(torch.randint(0, 6561, (n_tokens,), generator=g).tolist())
    sampling = dataclasses.replace(family.sampling, max_new_tokens=n_tokens)
    t0 = time.perf_counter()
    tokens = list(t3.generate_tokens(cond, text.to(dev), sampling, choose=lambda probs: next(picks)))
    t_t3 = time.perf_counter() - t0
    t0 = time.perf_counter()
    wav = s3gen.inference(torch.tensor([tokens]), ref, generator=torch.Generator().manual_seed(0))
    t_s3 = time.perf_counter() - t0
    audio = wav.shape[1] / S3GEN_SR
    total = t_t3 + t_s3
    print(f"{audio:.2f} s of audio: T3 {t_t3:.2f}s ({n_tokens / t_t3:.1f} tok/s) + S3Gen {t_s3:.2f}s "
          f"= {total:.2f}s, real-time factor {total / audio:.2f} (below 1 is faster than real time)")


if __name__ == "__main__":
    main()
