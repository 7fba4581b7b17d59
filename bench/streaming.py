"""Streaming S3Gen cost: the `incremental` strategy against the reference's `window` strategy, chunk by chunk.

    python bench/streaming.py                                   # GPU when available, 20 s of tokens
    python bench/streaming.py --device cpu --threads 2          # CPU (the window strategy is the slow part)
Options: --device cpu|cuda, --threads T, --seconds 20, --chunks 10,25,50, --context-window 300, --model DIR,
--prompt-tokens all,75 (voice-prompt tokens decoded with each chunk, StreamConfig.prompt_tokens; both strategies
run at each), --results bench/RESULTS.md (`python -m bench.streaming ...` works too).

S3Gen at full size with synthetic weights (same shapes, same work as real ones) and a 10 s synthetic reference
voice, or the real S3Gen and its stored voice (conds.pt) with `--model DIR`. A fixed, seeded list of random
speech tokens (25 per second of audio, ids in [0, 6561)) is fed `--chunks` tokens at a time to
`make_streamer(...)`: `incremental` with its defaults, `window` with `--context-window` tokens re-synthesised
before each chunk. T3 is not run: every number here is S3Gen compute only.

Per configuration, timed with time.perf_counter around each `push` / `finish` call (CUDA synchronised):
  - first audio: compute from the first push until a call returns non-empty audio (calls that return nothing,
    while look-ahead is held back, count), i.e. time to first audio excluding T3;
  - mean / max per call: each push and the final finish is one call (what a caller waits for per chunk);
  - total: all calls; RTF = total / audio seconds (below 1 is faster than real time);
  - flow frames of the first and last middle chunk (`streamer.work[1]` and `[-2]`, prompt included): whether
    a chunk's cost stays flat as the utterance grows, and their sum over the stream (work that does not
    depend on machine load; the voice prompt's frames are integrated again in every call);
  - the 1-minute load average when each configuration started (the machine may be shared).
The one-shot `s3gen.inference(tokens, ref)` of the whole list is timed for reference.

Target: for a 20 s utterance at chunk 25, incremental total compute at least 3x lower than window with context
300, and incremental time to first audio not higher than window's.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/streaming.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.hardware import hardware, on_gpu  # noqa: E402

SAMPLE_RATE = 24000
TOKENS_PER_SECOND = 25
VOCAB = 6561
REFERENCE_SECONDS = 10.0
TARGET_CHUNK = 25
TARGET_RATIO = 3.0


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def sync(device: str) -> None:
    if on_gpu(device):
        torch.cuda.synchronize(device)


def build(args):
    """(s3gen, ref, description) on the device."""
    from inference.models.s3gen.s3gen import RefDict

    if args.model:
        from inference.chatterbox import load_chatterbox

        model = load_chatterbox(args.model, device=args.device)
        if model.conds is None:
            raise SystemExit(f"{args.model} has no stored voice (conds.pt); the benchmark needs one")
        s3gen = model.s3gen.eval()
        ref = RefDict.from_dict(model.conds.gen)
        return s3gen, ref, f"real weights from {args.model}, its stored voice"
    from inference.presets import synthetic_reference, synthetic_s3gen

    s3gen = synthetic_s3gen().to(args.device)
    ref = s3gen.embed_ref(synthetic_reference(SAMPLE_RATE, seconds=REFERENCE_SECONDS), SAMPLE_RATE)
    return s3gen, ref, f"synthetic weights, {REFERENCE_SECONDS:g} s synthetic reference voice"


def timed(device: str, fn, *a):
    sync(device)
    t0 = time.perf_counter()
    out = fn(*a)
    sync(device)
    return out, time.perf_counter() - t0


def label(strategy: str, prompt: int | None) -> str:
    return strategy if prompt is None else f"{strategy} p{prompt}"


def run_stream(s3gen, ref, tokens: list[int], strategy: str, chunk: int, prompt: int | None, args) -> dict:
    from inference.streaming import StreamConfig, make_streamer

    kwargs = {"context_window": args.context_window} if strategy == "window" else {}
    cfg = StreamConfig(strategy=strategy, chunk_size=chunk, prompt_tokens=prompt, **kwargs)
    streamer = make_streamer(s3gen, ref, cfg, torch.Generator().manual_seed(0))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    times, samples, first = [], 0, None
    calls = [(streamer.push, tokens[i:i + chunk]) for i in range(0, len(tokens), chunk)]
    calls.append((streamer.finish,))
    for fn, *a in calls:
        audio, spent = timed(args.device, fn, *a)
        times.append(spent)
        samples += len(audio)
        if first is None and len(audio):
            first = sum(times)
    work = streamer.work
    flow_total = sum(w.flow_frames for w in work)
    middle = (work[1].flow_frames, work[-2].flow_frames) if len(work) >= 3 else (None, None)
    audio_s = samples / SAMPLE_RATE
    return {"strategy": label(strategy, prompt), "chunk": chunk, "calls": len(times), "first": first, "mean": float(np.mean(times)),
            "max": max(times), "total": sum(times), "audio": audio_s, "rtf": sum(times) / audio_s if audio_s else
            float("inf"), "samples": samples, "flow_first": middle[0], "flow_last": middle[1], "flow_total": flow_total,
            "load": load}


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict], markdown: bool) -> list[str]:
    head = ["chunk", "strategy", "calls", "first audio s", "mean/call s", "max/call s", "total s", "RTF",
            "flow frames 1st/last mid", "flow frames total", "load"]
    cells = []
    for r in rows:
        if "error" in r:
            cells.append([str(r["chunk"]), r["strategy"], "-", "-", "-", "-", "-", "-", "failed: " + r["error"], "-",
                          "-"])
            continue
        cells.append([str(r["chunk"]), r["strategy"], str(r["calls"]), fmt(r["first"]), fmt(r["mean"]),
                      fmt(r["max"]), fmt(r["total"], ".2f"), fmt(r["rtf"]),
                      f"{fmt(r['flow_first'], 'd')}/{fmt(r['flow_last'], 'd')}", str(r["flow_total"]),
                      fmt(r["load"], ".2f")])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return lines + ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    line = lambda cs: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cs, widths)))
    return [line(head)] + [line(c) for c in cells]


def summary(rows: list[dict], chunks: list[int], prompts: list[int | None], args) -> list[str]:
    """Ratios window / incremental per chunk size and prompt setting, and the target verdicts."""
    by = {(r["strategy"], r["chunk"]): r for r in rows if "error" not in r}
    out = []
    for c in chunks:
        for p in prompts:
            inc, win = by.get((label("incremental", p), c)), by.get((label("window", p), c))
            name = f"chunk {c}" + ("" if p is None else f", prompt {p} tokens")
            if inc is None or win is None:
                out.append(f"{name}: ratio not available (a configuration failed)")
                continue
            out.append(f"{name}: window / incremental total compute x{win['total'] / inc['total']:.2f}, "
                       f"time to first audio x{win['first'] / inc['first']:.2f}; flow frames integrated "
                       f"x{win['flow_total'] / inc['flow_total']:.2f} (load-independent work)")
    caveats = []
    if args.seconds != 20:
        caveats.append(f"measured on {args.seconds:g} s, not 20 s")
    if args.context_window != 300:
        caveats.append(f"window context {args.context_window}, not 300")
    note = f" ({'; '.join(caveats)})" if caveats else ""
    target = (f"target (20 s utterance, chunk {TARGET_CHUNK}, window context 300): incremental total compute >= "
              f"{TARGET_RATIO:g}x lower than window and time to first audio not higher")
    for p in prompts:
        for wp in dict.fromkeys([p, None]):
            inc, win = by.get((label("incremental", p), TARGET_CHUNK)), by.get((label("window", wp), TARGET_CHUNK))
            pair = f"{label('incremental', p)} vs {label('window', wp)}"
            if inc is None or win is None:
                out.append(f"{target}, {pair}: NOT evaluated (chunk {TARGET_CHUNK} not run or failed)")
                continue
            ratio = win["total"] / inc["total"]
            met = ratio >= TARGET_RATIO and inc["first"] <= win["first"]
            out.append(f"{target}, {pair}: {'MET' if met else 'NOT met'}{note} -- total x{ratio:.2f}, first audio "
                       f"{inc['first']:.3f} s vs {win['first']:.3f} s")
    return out


def command_line() -> str:
    argv = sys.argv[1:]
    if __package__ in (None, ""):
        return " ".join(["python", "bench/streaming.py", *argv])
    return " ".join(["python", "-m", "bench.streaming", *argv])


def append_results(path: Path, header_lines: list[str], table_lines: list[str], summary_lines: list[str],
                   script: str = "bench/streaming.py") -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        if new:
            f.write("# Benchmark results\n\nAppend-only log of benchmark runs: date, hardware, exact command, "
                    "numbers. Absolute times depend on the machine and on its load at the time.\n")
        f.write(f"\n## {script}, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n")
        f.write("\n".join(f"- {h}" for h in header_lines) + "\n\n")
        f.write("\n".join(table_lines) + "\n\n")
        f.write("\n".join(f"- {s}" for s in summary_lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--seconds", type=float, default=20.0, help="utterance length: 25 speech tokens per second")
    p.add_argument("--chunks", default="10,25,50", help="comma-separated chunk sizes in speech tokens")
    p.add_argument("--context-window", type=int, default=300, help="window strategy: tokens re-synthesised")
    p.add_argument("--prompt-tokens", default="all",
                   help="comma-separated voice-prompt lengths in tokens, 'all' for the whole reference")
    p.add_argument("--model", default=None, help="a Chatterbox folder: real S3Gen weights and stored voice")
    p.add_argument("--results", default="bench/RESULTS.md", help="markdown file to append to ('' for none)")
    args = p.parse_args(argv)
    args.chunk_sizes = [int(c) for c in args.chunks.split(",") if c.strip()]
    args.prompts = [None if x.strip() == "all" else int(x) for x in args.prompt_tokens.split(",") if x.strip()]
    return args


@torch.inference_mode()
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    n_tokens = round(args.seconds * TOKENS_PER_SECOND)
    load_before = load_average()

    t0 = time.perf_counter()
    s3gen, ref, what = build(args)
    built = time.perf_counter() - t0
    tokens = torch.randint(0, VOCAB, (n_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    hw = hardware(dev)
    print(f"hardware: {hw}")
    print(f"S3Gen: {what}; build {built:.1f}s; prompt {ref.prompt_feat.shape[1]} mel frames")
    print(f"{n_tokens} random speech tokens ({n_tokens / TOKENS_PER_SECOND:g} s of audio); chunks {args.chunks}; "
          f"incremental: defaults; window: context {args.context_window} tokens")
    print(f"load average at start (1/5/15 min): {load_before}", flush=True)

    # warm-up: first-call allocations and caches, outside every timed configuration
    from inference.streaming import StreamConfig, make_streamer

    s3gen.inference(torch.tensor(tokens[:25]), ref, generator=torch.Generator().manual_seed(0))
    warm = make_streamer(s3gen, ref, StreamConfig(), torch.Generator().manual_seed(0))
    warm.push(tokens[:25])
    warm.finish()

    wav, one_shot = timed(dev, lambda: s3gen.inference(torch.tensor(tokens), ref,
                                                       generator=torch.Generator().manual_seed(0)))
    one_audio = wav.shape[-1] / SAMPLE_RATE
    one_line = (f"one-shot s3gen.inference of all {n_tokens} tokens: {one_shot:.2f}s for {one_audio:.2f} s of audio, "
                f"RTF {one_shot / one_audio:.3f}")
    print(one_line, flush=True)

    rows = []
    for c in args.chunk_sizes:
        for prompt, strategy in ((p, s) for p in args.prompts for s in ("incremental", "window")):
            try:
                r = run_stream(s3gen, ref, tokens, strategy, c, prompt, args)
            except Exception as e:  # report and go on: one broken configuration should not hide the others
                r = {"strategy": label(strategy, prompt), "chunk": c, "error": f"{type(e).__name__}: {e}".splitlines()[0][:120]}
                print(f"  chunk {c} {r['strategy']}: FAILED {r['error']}", flush=True)
            else:
                expected = n_tokens * 960
                check = "" if r["samples"] == expected else f" (expected {expected} samples, got {r['samples']})"
                print(f"  chunk {c} {r['strategy']}: total {r['total']:.2f}s, first audio {fmt(r['first'])}s{check}",
                      flush=True)
            rows.append(r)

    load_after = load_average()
    print()
    for line in table(rows, markdown=False):
        print(line)
    print("first audio: S3Gen compute from the first push to the first non-empty chunk (T3 excluded); "
          "a call is one push or the final finish; flow frames include the voice prompt's in every call; "
          "load: 1-min load average when the configuration started; pN: the last N voice-prompt tokens only")
    summary_lines = summary(rows, args.chunk_sizes, args.prompts, args)
    for line in summary_lines:
        print(line)
    print(f"load average at end (1/5/15 min): {load_after} (shared machine: other processes may have competed)")

    if args.results:
        path = Path(args.results)
        if not path.is_absolute():
            path = Path(__file__).resolve().parents[1] / path
        header = [f"hardware: {hw}", f"command: `{command_line()}`", f"S3Gen: {what}",
                  f"{n_tokens} random speech tokens ({n_tokens / TOKENS_PER_SECOND:g} s); window context "
                  f"{args.context_window}; incremental defaults",
                  one_line, f"load average (1/5/15 min) at start {load_before}, at end {load_after}"]
        append_results(path, header, table(rows, markdown=True), summary_lines)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
