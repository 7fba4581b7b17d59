"""LoRA training steps of the full-size T3 (synthetic weights) through the recipe's own code: seconds per step and
peak memory, with and without gradient checkpointing, in fp32 and under bf16 autocast, for the original model
(0.5B Llama backbone) and, with --model, Turbo (350M GPT-2) and Nano (110M GPT-2) beside it in the same run.

    python bench/training.py                                    # GPU: fp32 and bf16, 10 timed steps each
    python bench/training.py --model turbo,nano --device cpu --steps 2   # CPU: each configuration in its own process
    python bench/training.py --precisions bf16 --results ''     # one precision, nothing appended
Options: --model english,multilingual,turbo,nano (the original always runs too), --device cpu|cuda,
--precisions no,bf16[,fp16], --steps N, --batch-size 4, --seconds 10, --threads T, --results FILE (default
bench/RESULTS.md) (`python -m bench.training ...` works too).

What runs is `training.lora`'s step: the recipe's TrainConfig defaults (LoRA rank 16, alpha 32, dropout 0.05 on
the family's projections: Llama's seven, GPT-2's c_attn, c_proj, c_fc; AdamW, lr 2e-4, warmup + cosine; clipping
at 1.0), rows collated by `T3Collator` (each conditioned on another row's voice), `SpeechObjective` prepared by
accelerate, `Precision` (torch.amp autocast, fp16 with a gradient scaler) and `optimizer_step`. Every row is a
full clip of `--seconds` (10 s = 250 speech tokens plus start/stop), about 12 text tokens per second of speech and
a full voice prompt (150 tokens; Turbo/Nano 375): the recipe's worst case. Each configuration gets 1 warm-up
step, then `--steps` timed ones.

Goal: batch 4 x 10 s within 8 GB on a GPU (the reference recipe needed 18 GB). On CUDA the peak is
torch.cuda.max_memory_allocated / max_memory_reserved (weights included); on CPU every configuration runs in a
fresh subprocess and reports that process's peak RSS (ru_maxrss only grows, so one process cannot measure two),
which also holds Python, torch and the kernels' buffers: it indicates, not measures, the GPU figure.
"""
from __future__ import annotations

import argparse
import json
import os
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
GB = 1e9


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rows(cfg, args) -> list[dict]:
    """batch_size training rows as the dataset stores them (random ids of the recipe's worst-case lengths; GPT-2
    T3's text without start/stop text tokens, as its rows hold it)."""
    g = torch.Generator().manual_seed(0)
    lt, ls = round(12 * args.seconds), round(25 * args.seconds)
    out = []
    for i in range(args.batch_size):
        text = torch.randint(1, min(cfg.text_vocab_size, 255), (lt,), generator=g).tolist()
        speech = torch.randint(0, 6561, (ls,), generator=g).tolist()
        marked = text if cfg.is_gpt2 else [cfg.start_text_token, *text, cfg.stop_text_token]
        out.append({"path": f"clip{i}.wav", "duration": args.seconds, "text_tokens": marked,
                    "speech_tokens": [cfg.start_speech_token, *speech, cfg.stop_speech_token],
                    "speaker_emb": torch.randn(cfg.speaker_embed_size, generator=g).tolist(),
                    "prompt_tokens": torch.randint(0, 6561, (cfg.speech_cond_prompt_len,), generator=g).tolist()})
    return out


def measure(args, family_name: str, precision_name: str, checkpointing: bool) -> dict:
    """Build, prepare and step exactly as `training.lora.train` does; returns times and peak memory."""
    from accelerate import Accelerator

    from inference.families import family_named
    from inference.models.t3 import T3
    from inference.synthetic import fill_synthetic
    from training.adapter import add_lora, enable_checkpointing
    from training.dataset import T3Collator
    from training.lora import (Precision, SpeechObjective, TrainConfig, make_scheduler, micro_batch_seed,
                               optimizer_step)

    family = family_named(family_name)
    cfg = TrainConfig(gradient_checkpointing=checkpointing)
    dev = torch.device(args.device)
    accelerator = Accelerator(cpu=dev.type == "cpu", mixed_precision="no")
    t0 = time.perf_counter()
    t3 = fill_synthetic(T3(family.t3, init_weights=False))
    torch.manual_seed(cfg.seed)
    add_lora(t3, cfg.lora.for_backbone(t3, family.name))
    if checkpointing:
        enable_checkpointing(t3)
    t3.train()
    params = [p for p in t3.parameters() if p.requires_grad]
    precision = Precision(precision_name, dev.type)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, args.steps + 1)
    module, optimizer = accelerator.prepare(SpeechObjective(t3, cfg.text_loss_weight), optimizer)
    built = time.perf_counter() - t0
    pool = rows(t3.cfg, args)
    collator = T3Collator(seed=cfg.seed, emotion_adv=0.0 if t3.cfg.is_gpt2 else 0.5, text_pad_id=t3.cfg.stop_text_token,
                          speech_pad_id=t3.cfg.stop_speech_token)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    print(f"  [{family_name}, {precision_name}, checkpointing {'on' if checkpointing else 'off'}] built in {built:.1f}s; "
          f"1 warm-up + {args.steps} steps", file=sys.stderr, flush=True)
    losses = []

    def step(i: int) -> None:
        batch = collator(pool, pool, step=i)
        result = optimizer_step(module, [batch], [micro_batch_seed(cfg.seed, 0, i)], optimizer, scheduler,
                                precision, accelerator, cfg.max_grad_norm, params)
        losses.append(result.objective)

    step(0)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i + 1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - t0
    out = {"model": family_name, "precision": precision_name, "checkpointing": checkpointing, "steps": args.steps,
           "seconds": elapsed, "prompt": t3.cfg.speech_cond_prompt_len, "text": len(pool[0]["text_tokens"]),
           "loss": losses[-1], "trainable": sum(p.numel() for p in params),
           "parameters": sum(p.numel() for p in t3.parameters())}
    if dev.type == "cuda":
        out["peak_bytes"] = torch.cuda.max_memory_allocated(dev)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
        out["total_bytes"] = torch.cuda.get_device_properties(dev).total_memory
    else:
        out["peak_bytes"] = peak_rss()
    return out


def run_in_subprocess(args, family: str, precision: str, checkpointing: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{family}:{precision}:{int(checkpointing)}",
           "--device", args.device, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--seconds", str(args.seconds)] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode == -9:  # the kernel's OOM killer: a result of its own (this machine cannot train it so)
        return {"model": family, "precision": precision, "checkpointing": checkpointing, "killed": True}
    if proc.returncode != 0:
        raise SystemExit(f"configuration {precision}/{checkpointing} failed (exit {proc.returncode}):\n{proc.stdout}")
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"configuration {precision}/{checkpointing} printed no result:\n{proc.stdout}")


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="english",
                   help="comma-separated families to time beside the original (english): multilingual, turbo, nano")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--precisions", default="no,bf16", help="comma-separated: no (fp32), bf16, fp16")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 10 GPU, 2 CPU)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length: 25 speech tokens and ~12 text tokens/s")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--results", default="bench/RESULTS.md", help="markdown file to append to ('' for none)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration, "family:precision:checkpointing"
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 10 if on_gpu(args.device) else 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        family, precision, ckpt = args.one.split(":")
        print(RESULT_TAG + json.dumps(measure(args, family, precision, ckpt == "1")), flush=True)
        return

    families = list(dict.fromkeys(["english", *(m.strip() for m in args.model.split(",") if m.strip())]))

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M")
    lines = [f"- hardware: {hardware(args.device)}",
             f"- command: `python bench/training.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- T3 full size (synthetic weights) of {', '.join(families)}; the recipe's defaults (LoRA rank 16, alpha "
             f"32 on the family's projections, AdamW 2e-4); batch {args.batch_size} x {args.seconds:g} s "
             f"({round(25 * args.seconds) + 2} speech + ~{round(12 * args.seconds)} text tokens a row, a full voice "
             f"prompt); 1 warm-up + {args.steps} steps",
             f"- load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"]
    for line in lines:
        print(line, flush=True)
    results = []
    for family in families:
        for precision in precisions:
            for ckpt in (False, True):
                if on_gpu(args.device):
                    r = measure(args, family, precision, ckpt)
                    torch.cuda.empty_cache()
                else:
                    r = run_in_subprocess(args, family, precision, ckpt)
                results.append(r)
                print(f"  {family} {precision} checkpointing {'on' if ckpt else 'off'}: " + (
                    "killed (out of memory)" if r.get("killed") else
                    f"{r['seconds'] / r['steps']:.2f} s/step, peak {r['peak_bytes'] / GB:.2f} GB"), flush=True)

    gpu = on_gpu(args.device)
    mem = "peak allocated / reserved GB" if gpu else "peak RSS GB"
    table = ["", f"| model | precision | checkpointing | s/step | x original | tokens/s | {mem} | last loss |",
             "|---|---|---|---|---|---|---|---|"]
    original = {(r["precision"], r["checkpointing"]): r["seconds"] / r["steps"] for r in results
                if r["model"] == "english" and not r.get("killed")}
    for r in results:
        if r.get("killed"):
            table.append(f"| {r['model']} | {r['precision']} | {'on' if r['checkpointing'] else 'off'} | killed: out of "
                         f"memory ({os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.0f} GB machine) "
                         "| | | | |")
            continue
        per = r["seconds"] / r["steps"]
        tokens = args.batch_size * (round(25 * args.seconds) + 2 + r["text"])  # the tokens the loss reads
        peak = (f"{r['peak_bytes'] / GB:.2f} / {r['peak_reserved_bytes'] / GB:.2f}" if gpu
                else f"{r['peak_bytes'] / GB:.2f}")
        key = (r["precision"], r["checkpointing"])
        ratio = f"{per / original[key]:.2f}" if key in original else "–"
        table.append(f"| {r['model']} | {r['precision']} | {'on' if r['checkpointing'] else 'off'} | {per:.2f} | "
                     f"{ratio} | {tokens / per:.0f} | {peak} | {r['loss']:.3f} |")
    first = results[0]
    table.append("")
    for family in families:
        r = next((r for r in results if r["model"] == family and not r.get("killed")), None)
        if r is None:
            continue
        table.append(f"- {family}: trainable parameters {r['trainable']:,} of {r['parameters']:,}; voice prompt "
                     f"{r['prompt']} tokens")
    if gpu:
        best = min(r["peak_reserved_bytes"] for r in results)
        table.append(f"- goal (GPU): batch 4 x 10 s within 8 GB reserved: {'met' if best <= 8 * GB else 'NOT met'} "
                     f"(lowest {best / GB:.2f} GB of {first['total_bytes'] / GB:.0f} GB; reference recipe: 18 GB)")
    else:
        table.append("- goal (GPU): batch 4 x 10 s within 8 GB; peak RSS on a CPU also holds Python, torch and the "
                     "CPU kernels' buffers, so it only indicates the GPU figure")
    load = os.getloadavg()
    table.append(f"- load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for line in table:
        print(line)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n".join([f"\n## bench/training.py, {started}", "", *lines, *table]) + "\n")
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
