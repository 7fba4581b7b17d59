"""T3 in reduced precision (inference.precision): decoding speed and accuracy against float32.

    python bench/t3_precision.py                    # CPU: float32, bfloat16, int8; default threads and 1 thread
    python bench/t3_precision.py --device cuda --dtypes float32,bfloat16,float16
    python bench/t3_precision.py --family nano      # the GPT-2 T3 of Turbo (--family turbo) or Nano
Options: --family english|turbo|nano, --dtypes, --threads 0,1 (0: torch's default), --steps 200, --speed-tokens 60, --parity DIR (default
$CHATTERBOX_PARITY_DIR, else ../shared/parity), --results bench/RESULTS.md ('' for none).

Full-size T3 of the family with the parity kit's synthetic weights. Accuracy:
  - logits on the parity inputs (golden/t3_<en|turbo|nano>_full.safetensors, teacher-forced forward of 2 rows;
    the English one with emotion 0.5 and the kit's CFG-free forward): largest and
    mean absolute error against the golden float32 logits, the error over the logits' spread (std), and how
    often the top-1 speech token agrees;
  - `--steps` greedy decoding steps with CFG (the default sampling settings, argmax instead of a draw): the
    share of steps whose token matches float32's when the tokens run freely (one early difference changes
    everything after it, and with random weights the top two tokens are often nearly tied), and when every step
    is fed float32's previous tokens (teacher-forced: the per-step agreement). GPT-2 T3 has no CFG: one row.
Speed: time to the first token (English: prefill of the 34 conditioning, text and start positions, 2 rows for
CFG; GPT-2: the 376 conditioning positions are computed once per voice, so this is the text's prefill), then
decoding tokens/s over `--speed-tokens` tokens.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.streaming import append_results, load_average  # noqa: E402
from inference.hardware import hardware  # noqa: E402


def parity_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("CHATTERBOX_PARITY_DIR"):
        return Path(os.environ["CHATTERBOX_PARITY_DIR"])
    return Path(__file__).resolve().parents[2] / "shared" / "parity"


def logit_errors(model, golden) -> dict:
    from inference.models.t3 import T3Cond

    t = golden.tensors
    cond = T3Cond(t["speaker_emb"], t["cond_prompt_speech_tokens"], t["emotion_adv"] if "emotion_adv" in t else 0.5)
    out = model(cond, t["text_tokens"], t["text_token_lens"], t["speech_tokens"], t["speech_token_lens"])
    got, want = out.speech_logits.float(), t["speech_logits"]
    err = (got - want).abs()
    return {"max": float(err.max()), "mean": float(err.mean()), "relative": float(err.mean() / want.std()),
            "top1": float((got.argmax(-1) == want.argmax(-1)).float().mean())}


def greedy(model, cond, text, steps: int, forced: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(tokens emitted, argmax at each step). With `forced`, those tokens are fed instead of the argmax."""
    from inference.models.t3 import SamplingConfig

    picks: list[int] = []

    def choose(probs):
        picks.append(int(probs.argmax()))
        return forced[len(picks) - 1] if forced is not None else picks[-1]

    sampling = SamplingConfig(max_new_tokens=steps, repetition_penalty=1.2,
                              **(dict(cfg_weight=0.0, min_p=0.0) if model.cfg.is_gpt2 else {}))
    tokens = list(model.generate_tokens(cond, text, sampling, choose=choose))
    return tokens, picks


def speed(model, cond, text, n: int) -> tuple[float, float]:
    """(seconds to the first token, tokens/s after it) with a fixed budget (never the stop token)."""
    from inference.models.t3 import SamplingConfig

    picks = iter(range(1, n + 1))
    times = []
    t0 = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=n, **(dict(cfg_weight=0.0, min_p=0.0) if model.cfg.is_gpt2 else {}))
    for _ in model.generate_tokens(cond, text, sampling, choose=lambda p: next(picks)):
        times.append(time.perf_counter() - t0)
    return times[0], (len(times) - 1) / (times[-1] - times[0])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--family", default="english", choices=("english", "turbo", "nano"))
    p.add_argument("--dtypes", default="float32,bfloat16,int8")
    p.add_argument("--threads", default="0,1")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--speed-tokens", type=int, default=60)
    p.add_argument("--parity", default=None)
    p.add_argument("--results", default="bench/RESULTS.md")
    args = p.parse_args(argv)
    args.dtype_list = [d for d in args.dtypes.split(",") if d]
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    return args


@torch.inference_mode()
def main(argv=None) -> None:
    args = parse_args(argv)
    from inference.models.t3 import T3, T3Cond
    from inference.parity.golden import load_golden
    from inference.precision import set_t3_dtype
    from inference.synthetic import fill_synthetic

    started, start_load = time.perf_counter(), load_average()
    default_threads = torch.get_num_threads()
    from inference.families import FAMILIES

    kit_name = {"english": "en"}.get(args.family, args.family)
    golden = load_golden(parity_dir(args.parity) / "golden" / f"t3_{kit_name}_full.safetensors")
    t3_cfg = FAMILIES[args.family].t3
    base = fill_synthetic(T3(t3_cfg, init_weights=False)).eval().to(args.device)
    g = torch.Generator().manual_seed(0)
    cond = T3Cond(torch.rand(1, 256, generator=g),
                  torch.randint(0, 6561, (1, t3_cfg.speech_cond_prompt_len), generator=g),
                  torch.full((1, 1, 1), 0.5)).to(args.device)
    text = torch.randint(1, 600, (1, 300), generator=g)
    if not t3_cfg.is_gpt2:  # the Llama T3 reads start/stop text markers
        text = torch.cat([torch.tensor([[255]]), text, torch.tensor([[0]])], 1)
    text = text.to(args.device)
    print(f"hardware: {hardware(args.device)}", flush=True)

    reference, _ = greedy(base, cond, text, args.steps)
    accuracy = ["| T3 | logits max abs err | mean abs err | mean err / logit std | top-1 agreement (parity) | "
                f"free-running greedy: same token, first difference ({args.steps} steps) | "
                "teacher-forced: same argmax |", "|---|---|---|---|---|---|---|"]
    speeds = ["| T3 | threads | first token s | decode tok/s | x float32 |", "|---|---|---|---|---|"]
    models = {}
    for dtype in args.dtype_list:
        model = base if dtype == "float32" else set_t3_dtype(copy.deepcopy(base), dtype)
        models[dtype] = model
        errors = logit_errors(model, golden)
        tokens, _ = greedy(model, cond, text, args.steps)
        _, picks = greedy(model, cond, text, args.steps, forced=reference)
        same = sum(a == b for a, b in zip(tokens, reference)) / len(reference)
        first = next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), None)
        forced_same = sum(a == b for a, b in zip(picks, reference)) / len(reference)
        accuracy.append(f"| {dtype} | {errors['max']:.4f} | {errors['mean']:.5f} | {errors['relative']:.5f} | "
                        f"{errors['top1']:.3f} | {same:.3f}, {'none' if first is None else f'step {first}'} | "
                        f"{forced_same:.3f} |")
        print(accuracy[-1], flush=True)
    for threads in args.thread_counts:
        torch.set_num_threads(threads or default_threads)
        base_rate = None
        for dtype, model in models.items():
            speed(model, cond, text, 5)  # warm-up
            first, rate = speed(model, cond, text, args.speed_tokens)
            base_rate = base_rate or (rate if dtype == "float32" else None)
            ratio = f"{rate / base_rate:.2f}" if base_rate else "-"
            speeds.append(f"| {dtype} | {torch.get_num_threads()} | {first:.2f} | {rate:.2f} | {ratio} |")
            print(speeds[-1], flush=True)
    torch.set_num_threads(default_threads)
    header = [f"hardware: {hardware(args.device)}",
              f"command: `python bench/t3_precision.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
              f"model: full-size {args.family} T3, synthetic weights (parity kit procedure); {text.shape[1]} text "
              f"positions, {t3_cfg.speech_cond_prompt_len} conditioning speech tokens; "
              f"{'no CFG' if t3_cfg.is_gpt2 else 'CFG 0.5'}, repetition penalty 1.2",
              f"load average (1/5/15 min) at start {start_load}, at end {load_average()}"]
    summary = [f"total run time {(time.perf_counter() - started) / 60:.1f} min"]
    print("\n".join(summary))
    if args.results:
        append_results(Path(args.results), header, accuracy + [""] + speeds, summary, script="bench/t3_precision.py")


if __name__ == "__main__":
    main()
