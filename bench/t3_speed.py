"""Full-size T3 speed with synthetic weights: one teacher-forced forward and KV-cached decoding.

python -m bench.t3_speed [--device cpu|cuda] [--tokens 50] [--multilingual]
Prints absolute times and tokens/s with the hardware named. Synthetic weights decode like real ones
(same shapes, same work); only the stopping point differs, so decoding runs a fixed token budget.
"""
from __future__ import annotations

import argparse
import time

import torch

from inference.hardware import hardware
from inference.models.t3 import T3, SamplingConfig, T3Cond, T3Config
from inference.synthetic import fill_synthetic


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--multilingual", action="store_true")
    args = p.parse_args()
    cfg = T3Config.multilingual() if args.multilingual else T3Config.english()
    t = time.perf_counter()
    model = fill_synthetic(T3(cfg, init_weights=False)).eval().to(args.device)
    print(f"hardware: {hardware(args.device)}; build+fill {time.perf_counter() - t:.1f}s")
    g = torch.Generator().manual_seed(0)
    cond = T3Cond(torch.rand(1, 256, generator=g), torch.randint(0, 6561, (1, 150), generator=g),
                  torch.full((1, 1, 1), 0.5)).to(args.device)
    text = torch.cat([torch.tensor([[255]]), torch.randint(1, 600, (1, 40), generator=g), torch.tensor([[0]])], 1)
    text = text.to(args.device)
    speech = torch.randint(0, 6561, (1, 100), generator=g).to(args.device)
    with torch.no_grad():
        model(cond, text, torch.tensor([42]), speech, torch.tensor([100]))  # warm-up
        t = time.perf_counter()
        model(cond, text, torch.tensor([42]), speech, torch.tensor([100]))
        fwd = time.perf_counter() - t
    print(f"teacher-forced forward, batch 1, 34+42+100 positions: {fwd * 1000:.0f} ms")
    sampling = SamplingConfig(max_new_tokens=args.tokens)
    picks = iter(range(1, args.tokens + 1))  # never the stop token: fixed budget
    t = time.perf_counter()
    n = sum(1 for _ in model.generate_tokens(cond, text, sampling, choose=lambda probs: next(picks)))
    dec = time.perf_counter() - t
    print(f"decoding with CFG (2 rows): {n} tokens in {dec:.2f}s = {n / dec:.1f} tokens/s "
          f"(real time needs 25 tokens/s: ratio {n / dec / 25:.2f}x)")


if __name__ == "__main__":
    main()
