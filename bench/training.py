"""One LoRA training step of the full-size T3 (0.5B Llama backbone, synthetic weights), with and without
gradient checkpointing: time per step and peak memory.

    python bench/training.py                                        # GPU: bf16 autocast, 10 timed steps
    python bench/training.py --device cpu --steps 2 --threads 2     # CPU (about 10 minutes on 2 cores)
Options: --device cpu|cuda, --dtype fp32|bf16|fp16, --steps N, --batch-size 4, --seconds 10, --rank 32,
--threads T (`python -m bench.training ...` works too).

The batch is the recipe's worst case: every row a full clip of `--seconds` (10 s = 250 speech tokens plus
start/stop), about 12 text tokens per second of speech (120 plus start/stop) and a 150-token voice prompt.
A step is forward + backward + AdamW (lr 1e-4) over the LoRA matrices only (rank 32, alpha 64, dropout 0.05
on all Llama projections), under torch.autocast in `--dtype`. Each configuration gets 1 warm-up step, then
`--steps` timed ones (default 10 on GPU, 3 on CPU).

Target: batch 4 x 10 s fits in 8 GB on a GPU (the reference recipe needed 18 GB). On CUDA the peak is
torch.cuda.max_memory_allocated (reset between configurations, weights included) next to the card's total;
on CPU each configuration runs in a fresh subprocess and reports that process's peak RSS (ru_maxrss is
monotone, so one process cannot measure both), with the growth over the built model.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/training.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from inference.hardware import hardware, on_gpu  # noqa: E402

RESULT_TAG = "RESULT "
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GB = 1e9


def rss_now() -> int:
    """Current resident set size in bytes (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def shapes(args) -> tuple[int, int]:
    """(text length, speech length) of every row, start/stop included."""
    return round(12 * args.seconds) + 2, round(25 * args.seconds) + 2


def make_batch(cfg, args, device: str) -> dict:
    from inference.models.t3 import T3Cond

    g = torch.Generator().manual_seed(0)
    b = args.batch_size
    lt, ls = shapes(args)
    text = torch.randint(1, min(cfg.text_vocab_size, 255), (b, lt), generator=g)
    text[:, 0], text[:, -1] = cfg.start_text_token, cfg.stop_text_token
    speech = torch.randint(0, 6561, (b, ls), generator=g)
    speech[:, 0], speech[:, -1] = cfg.start_speech_token, cfg.stop_speech_token
    cond = T3Cond(speaker_emb=torch.randn(b, cfg.speaker_embed_size, generator=g),
                  cond_prompt_speech_tokens=torch.randint(0, 6561, (b, cfg.speech_cond_prompt_len), generator=g),
                  emotion_adv=torch.full((b, 1, 1), 0.5))
    lens = torch.full((b,), lt), torch.full((b,), ls)
    return {"cond": cond.to(device), "text_tokens": text.to(device), "text_token_lens": lens[0].to(device),
            "speech_tokens": speech.to(device), "speech_token_lens": lens[1].to(device)}


def build(args):
    """Full-size T3 with synthetic weights and LoRA adapters, on the device, in train mode."""
    from inference.models.t3 import T3, T3Config
    from inference.synthetic import fill_synthetic
    from training.adapter import LoraSettings, add_lora, trainable_parameters

    t0 = time.perf_counter()
    t3 = fill_synthetic(T3(T3Config.english(), init_weights=False))
    torch.manual_seed(0)  # LoRA A matrices
    add_lora(t3, LoraSettings(rank=args.rank, alpha=2.0 * args.rank, dropout=0.05))  # injected in place
    t3 = t3.to(args.device).train()
    params = trainable_parameters(t3)
    return t3, params, time.perf_counter() - t0


def sync(device: str) -> None:
    if on_gpu(device):
        torch.cuda.synchronize(device)


def set_checkpointing(llama, on: bool) -> None:
    """Non-reentrant activation checkpointing of every decoder layer, as the training recipe does."""
    if on:
        llama.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif llama.is_activation_checkpointing:
        llama.activation_checkpointing_disable()


def measure(t3, params, batch: dict, args, checkpointing: bool) -> dict:
    """Warm-up step + `args.steps` timed steps; returns times and the peak memory of this configuration."""
    dev = args.device
    set_checkpointing(t3.tfmr, checkpointing)
    t3.train()
    dtype = DTYPES[args.dtype]
    device_type = "cuda" if on_gpu(dev) else "cpu"
    autocast = (torch.autocast(device_type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    if device_type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    losses = []

    def step() -> None:
        with autocast:
            loss_text, loss_speech = t3.loss(**batch)
            loss = loss_text + loss_speech
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    step()  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(dev)
    elapsed = time.perf_counter() - t0
    out = {"checkpointing": checkpointing, "steps": args.steps, "seconds": elapsed, "loss": losses[-1]}
    if device_type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(dev)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
    else:
        out["peak_bytes"] = peak_rss()
    return out


def child_command(args, mode: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", mode, "--device", args.device,
           "--dtype", args.dtype, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--seconds", str(args.seconds), "--rank", str(args.rank)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_one(args) -> None:
    """Internal mode: one configuration in this (fresh) process; the result goes to stdout as one JSON line."""
    t3, params, built_s = build(args)
    batch = make_batch(t3.cfg, args, args.device)
    base = torch.cuda.memory_allocated(args.device) if on_gpu(args.device) else rss_now()
    print(f"  [{args.one}] build+fill+LoRA {built_s:.1f}s; running 1 warm-up + {args.steps} steps", file=sys.stderr,
          flush=True)
    out = measure(t3, params, batch, args, args.one == "on")
    out["base_bytes"] = base
    print(RESULT_TAG + json.dumps(out), flush=True)


def run_in_subprocess(args, mode: str) -> dict:
    proc = subprocess.run(child_command(args, mode), stdout=subprocess.PIPE, text=True,
                          cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode != 0:
        raise SystemExit(f"configuration {mode} failed (exit {proc.returncode}):\n{proc.stdout}")
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"configuration {mode} printed no result:\n{proc.stdout}")


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="autocast dtype (default bf16 on CUDA when supported, fp32 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 10 GPU, 3 CPU)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length: 25 speech tokens and ~12 text tokens/s")
    p.add_argument("--rank", type=int, default=32, help="LoRA rank (alpha = 2 * rank)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--one", choices=("off", "on"), help=argparse.SUPPRESS)  # internal: one configuration
    args = p.parse_args(argv)
    on_cuda = on_gpu(args.device)
    if args.dtype is None:
        args.dtype = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    if args.steps is None:
        args.steps = 10 if on_cuda else 3
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        run_one(args)
        return

    from inference.models.t3 import T3Config

    cfg = T3Config.english()
    lt, ls = shapes(args)
    b = args.batch_size
    tokens = b * (lt + ls)
    positions = b * (cfg.cond_len + lt + ls)
    print(f"hardware: {hardware(args.device)}")
    print(f"batch {b} x {args.seconds:g} s: {ls} speech + {lt} text tokens per row (start/stop included), "
          f"prompt {cfg.speech_cond_prompt_len}; sequence {cfg.cond_len + lt + ls} positions; autocast {args.dtype}; "
          f"LoRA rank {args.rank}, alpha {2 * args.rank}; AdamW lr 1e-4; 1 warm-up + {args.steps} timed steps")

    results = {}
    if on_gpu(args.device):
        t3, params, built_s = build(args)
        batch = make_batch(t3.cfg, args, args.device)
        n_train, n_all = sum(p.numel() for p in params), sum(p.numel() for p in t3.parameters())
        print(f"trainable parameters: {n_train:,} of {n_all:,} ({100 * n_train / n_all:.2f}%); build {built_s:.1f}s")
        base = torch.cuda.memory_allocated(args.device)
        for mode in ("off", "on"):
            results[mode] = measure(t3, params, batch, args, mode == "on")
            results[mode]["base_bytes"] = base
        mem_name = "peak allocated"
    else:
        from inference.models.t3 import T3
        from training.adapter import LoraSettings, add_lora, trainable_parameters

        with torch.device("meta"):  # count parameters without building the weights
            t3 = T3(cfg, init_weights=False)
        add_lora(t3, LoraSettings(rank=args.rank, alpha=2.0 * args.rank, dropout=0.05))
        n_train = sum(p.numel() for p in trainable_parameters(t3))
        n_all = sum(p.numel() for p in t3.parameters())
        del t3
        print(f"trainable parameters: {n_train:,} of {n_all:,} ({100 * n_train / n_all:.2f}%)")
        print("each configuration runs in a fresh process (peak RSS is per process)", flush=True)
        for mode in ("off", "on"):
            results[mode] = run_in_subprocess(args, mode)
        mem_name = "peak RSS"

    print()
    print(f"{'checkpointing':<14} {'s/step':>8} {'steps/s':>8} {'tokens/s':>9} {mem_name + ' GB':>18} "
          f"{'over model GB':>14} {'last loss':>10}")
    for mode in ("off", "on"):
        r = results[mode]
        per = r["seconds"] / r["steps"]
        print(f"{mode:<14} {per:>8.2f} {1 / per:>8.3f} {tokens / per:>9.0f} {r['peak_bytes'] / GB:>18.2f} "
              f"{(r['peak_bytes'] - r['base_bytes']) / GB:>14.2f} {r['loss']:>10.3f}")
    off, on = results["off"], results["on"]
    slow = (on["seconds"] / on["steps"]) / (off["seconds"] / off["steps"])
    saved = off["peak_bytes"] - on["peak_bytes"]
    grow_off, grow_on = off["peak_bytes"] - off["base_bytes"], on["peak_bytes"] - on["base_bytes"]
    print(f"tokens/s counts text+speech tokens ({tokens} per step; {positions} positions with conditioning)")
    over = f"; memory over the model x{grow_on / grow_off:.2f}" if grow_off > 0 else ""
    print(f"gradient checkpointing: step time x{slow:.2f} ({(slow - 1) * 100:+.0f}%), {mem_name} "
          f"x{on['peak_bytes'] / off['peak_bytes']:.2f} (saves {saved / GB:.2f} GB){over}")
    if on_gpu(args.device):
        total = torch.cuda.get_device_properties(args.device).total_memory
        for mode in ("off", "on"):
            r = results[mode]
            print(f"checkpointing {mode}: peak allocated {r['peak_bytes'] / GB:.2f} GB, peak reserved "
                  f"{r['peak_reserved_bytes'] / GB:.2f} GB of {total / GB:.1f} GB total; target 8 GB "
                  f"{'met' if r['peak_reserved_bytes'] <= 8 * GB else 'NOT met'} (reference recipe: 18 GB)")
    else:
        print("target (GPU): batch 4 x 10 s within 8 GB (reference recipe 18 GB); CPU RSS also holds Python, torch "
              "and the CPU kernels' buffers, so it only indicates the GPU figure")


if __name__ == "__main__":
    main()
