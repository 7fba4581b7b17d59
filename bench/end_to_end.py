"""End to end: `generate_stream` with T3 included, beside the one-shot `generate()` of the same tokens.

    python bench/end_to_end.py                          # CPU, default threads and 1 thread, 150 T3 tokens
    python bench/end_to_end.py --threads 2 --runs oneshot,before,after --tokens 100
Options: --device cpu|cuda, --threads 0,1 (0: torch's default), --tokens 150, --chunk 25, --voice-seconds 8,
--runs (see RUNS), --skip-quality, --model DIR, --results bench/RESULTS.md ('' for none).

Model: full size with deterministic synthetic weights (T3 English 520M, S3Gen, voice encoder, the tiny preset's
character tokenizer), the voice an espeak-ng recording of `--voice-seconds` (a synthetic clip when espeak-ng is
missing), or a real checkpoint with `--model DIR` and its stored voice. Synthetic T3 never stops early, so every
run decodes `--tokens` T3 tokens; the ids it picks that are not speech (>= 6561) are dropped as always, so the
audio is a little shorter than tokens / 25 s. Each run uses seed 0: every run gets the same tokens.

Runs, all in one process (`fast`: T3 int8 and S3Gen's flow bfloat16, inference.precision):
  - oneshot / oneshot-fast: T3's tokens, then one `s3gen.inference` over them: what `generate()` does for text
    of one piece (no watermark);
  - before: the streaming loop as it was before issue 15 (T3 running ahead from the first token with every
    thread, S3Gen competing with it, every chunk `--chunk` tokens);
  - turns-fixed / turns: `generate_stream(run_ahead=False)`: T3 and S3Gen take turns throughout, every chunk
    `--chunk` tokens / chunks growing from `--chunk` to 4x;
  - after / after-fast: `generate_stream` defaults: turns until the first chunk, then T3 ahead in its thread
    with a quarter of the threads (at least one), chunks growing from `--chunk` to 4x.
Per run: time to first audio (from the call to the first chunk), total wall, T3's own time (its token generator
timed; in `before` and `ahead` it runs in its thread beside S3Gen, so this includes the competition), chunks,
flow frames integrated over the stream (the voice prompt is decoded again in every S3Gen call), and total over
the one-shot of the same precision. The 1-minute load average is recorded per run.

Quality (S3Gen only, the same tokens and the same random draws): log-mel L1 and SNR of the streamed audio
against the float32 one-shot, for fixed and growing chunks, in float32 and with the flow in bfloat16.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/end_to_end.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.streaming import append_results, load_average  # noqa: E402
from inference.hardware import hardware  # noqa: E402
from inference.precision import set_s3gen_dtype  # noqa: E402

SAMPLE_RATE = 24000
RUNS = ("oneshot", "before", "turns-fixed", "turns", "after", "oneshot-fast", "after-fast")
ONE_THREAD_RUNS = ("oneshot", "before", "turns", "after", "oneshot-fast", "after-fast")
TEXT = ("The old lighthouse keeper climbed the winding stairs every evening, lit the great lamp, and watched "
        "the ships pass safely along the rocky coast until the morning light returned over the quiet harbour "
        "and the fishermen came home with their nets full of silver.")
VOICE_TEXT = ("Good morning. I am reading a few sentences aloud, so that the model can learn how my voice "
              "sounds when I speak slowly and clearly.")
# The side-by-side run (brody-dowling/chatterbox-streaming at 1046532, one torch thread, another machine).
REFERENCE_1T = {"first audio": 32.3, "total": 240.0, "generate": 112.0, "t3 tok/s": 2.41}


class T3Timer:
    """Wraps T3.generate_tokens to time the generator's own work (each next()), in whichever thread runs it."""

    def __init__(self, t3):
        self.t3, self.original = t3, t3.generate_tokens
        self.seconds, self.tokens, self.first = 0.0, 0, None
        t3.generate_tokens = self

    def reset(self) -> None:
        self.seconds, self.tokens, self.first = 0.0, 0, None

    def __call__(self, *args, **kwargs):
        inner = self.original(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            try:
                token = next(inner)
            except StopIteration:
                self.seconds += time.perf_counter() - t0
                return
            self.seconds += time.perf_counter() - t0
            if self.first is None:
                self.first = self.seconds
            self.tokens += 1
            yield token


def espeak_voice(seconds: float) -> np.ndarray | None:
    """An espeak-ng recording cut to `seconds` at 24 kHz, or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    import soundfile as sf

    from inference.audio import resample

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "voice.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(path), VOICE_TEXT + " " + VOICE_TEXT],
                       check=True, capture_output=True)
        wav, sr = sf.read(path, dtype="float32")
    wav = resample(torch.from_numpy(wav)[None], sr, SAMPLE_RATE)[0].numpy()
    return wav[: int(seconds * SAMPLE_RATE)]


def build(args):
    """(model, description)."""
    from inference.chatterbox import ChatterboxTTS, load_chatterbox
    from inference.models.t3 import T3, T3Config
    from inference.models.voice_encoder import VoiceEncoder
    from inference.presets import synthetic_reference, synthetic_s3gen, tiny_tokenizer
    from inference.synthetic import fill_synthetic

    if args.model:
        model = load_chatterbox(args.model, device=args.device)
        if model.conds is None:
            raise SystemExit(f"{args.model} has no stored voice (conds.pt)")
        return model, f"real weights from {args.model}, its stored voice"
    t3 = fill_synthetic(T3(T3Config.english(), init_weights=False)).eval()
    model = ChatterboxTTS(t3, synthetic_s3gen(), fill_synthetic(VoiceEncoder()).eval(),
                          tiny_tokenizer(multilingual=False), args.device)
    voice = espeak_voice(args.voice_seconds)
    source = "espeak-ng en-us"
    if voice is None:
        voice, source = synthetic_reference(SAMPLE_RATE, seconds=args.voice_seconds), "synthetic"
    model.prepare_conditionals_from_array(voice, SAMPLE_RATE)
    return model, (f"full size, synthetic weights (T3 English, S3Gen, voice encoder), character tokenizer, "
                   f"{len(voice) / SAMPLE_RATE:.1f} s {source} voice")


def stream_kwargs(args) -> dict:
    return dict(seed=0, max_new_tokens=args.tokens, chunk_size=args.chunk)


def run_oneshot(model, args) -> dict:
    from inference.models.s3gen.s3gen import RefDict

    t0 = time.perf_counter()
    tokens = model.generate_speech_tokens(TEXT, seed=0, max_new_tokens=args.tokens)
    t3 = time.perf_counter() - t0
    wav = model.s3gen.inference(tokens, RefDict.from_dict(model.conds.gen),
                                generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - t0
    return {"first": total, "total": total, "t3": t3, "chunks": 1, "audio": wav.shape[-1] / SAMPLE_RATE,
            "frames": model.conds.gen["prompt_feat"].shape[1] + 2 * len(tokens), "tokens": tokens}


def run_before(model, args) -> list:
    """The loop generate_stream ran before issue 15 (commit d93ccc4): T3 ahead in a thread from the start."""
    from inference.streaming import iterate_ahead

    utterance = model.utterance(TEXT, chunk_size=args.chunk, seed=0, max_chunk_size=args.chunk,
                                max_new_tokens=args.tokens)

    def all_tokens():
        for piece in utterance.pieces:
            generator = torch.Generator().manual_seed(piece.seed)
            yield from model.t3.generate_tokens(piece.cond, piece.text_tokens, piece.sampling, generator=generator)
            yield None

    chunks = []
    for token in iterate_ahead(all_tokens()):
        chunk = utterance.feed(token)
        if chunk is not None:
            chunks.append(chunk)
            utterance.clock.resume()
    return chunks


def run_stream(model, args, name: str) -> dict:
    t0 = time.perf_counter()
    if name == "before":
        chunks = run_before(model, args)
    else:
        kwargs = stream_kwargs(args)
        if name.startswith("turns"):
            kwargs.update(run_ahead=False)
        if name == "turns-fixed":
            kwargs.update(max_chunk_size=args.chunk)
        chunks = list(model.generate_stream(TEXT, **kwargs))
    total = time.perf_counter() - t0
    frames = sum(c.metrics.work.flow_frames for c in chunks if c.metrics.work is not None)
    return {"first": chunks[0].metrics.time_to_first_audio, "total": total, "chunks": len(chunks),
            "audio": sum(len(c.audio) for c in chunks) / SAMPLE_RATE, "frames": frames,
            "sizes": [round(c.metrics.audio_seconds * 25) for c in chunks]}


def set_fast(model, fast: bool, t3s: dict) -> None:
    model.t3 = t3s["int8" if fast else "float32"]
    set_s3gen_dtype(model.s3gen, "bfloat16" if fast else "float32")


def quality(model, tokens: torch.Tensor, args) -> list[str]:
    """Streamed vs one-shot on the same tokens and draws, S3Gen only: the flow's mel (what chunking and the
    flow's precision change) and the audio."""
    from inference.models.s3gen.hifigan import draw_source_randomness
    from inference.models.s3gen.s3gen import RefDict
    from inference.stream_quality import log_mel_l1, snr_db
    from inference.streaming import TOKEN_SAMPLES, IncrementalStreamer, StreamConfig

    class Recording(IncrementalStreamer):
        """Keeps every mel frame it vocodes, to compare with the one-shot mel."""

        def _vocode(self, new_mel, final):
            self.mels = getattr(self, "mels", []) + [new_mel.cpu()]
            return super()._vocode(new_mel, final)

    s3gen, ref = model.s3gen, RefDict.from_dict(model.conds.gen)
    g = torch.Generator().manual_seed(1)
    draws = {"flow_noise": torch.randn(1, 80, ref.prompt_feat.shape[1] + 2 * len(tokens), generator=g)}
    draws["source_phase"], draws["source_noise"] = draw_source_randomness(1, len(tokens) * TOKEN_SAMPLES,
                                                                          s3gen.mel2wav.cfg, g)

    def one_shot():
        mel = s3gen.flow_inference(tokens, ref, noise=draws["flow_noise"])
        return mel, s3gen.inference(tokens, ref, flow_noise=draws["flow_noise"], sine_phase=draws["source_phase"],
                                    sine_noise=draws["source_noise"])[0].numpy()

    set_s3gen_dtype(s3gen, "float32")
    one_mel, one = one_shot()
    lines = ["| what | flow | compute s | mel L1 | mel SNR dB | audio log-mel L1 | audio SNR dB |",
             "|---|---|---|---|---|---|---|"]
    cases = [("one-shot", None, "bfloat16"), (f"stream, chunks of {args.chunk}", args.chunk, "float32"),
             (f"stream, chunks {args.chunk} growing to {4 * args.chunk}", None, "float32"),
             (f"stream, chunks {args.chunk} growing to {4 * args.chunk}", None, "bfloat16")]
    for what, largest, dtype in cases:
        set_s3gen_dtype(s3gen, dtype)
        t0 = time.perf_counter()
        if what == "one-shot":
            mel, wav = one_shot()
        else:
            cfg = StreamConfig(chunk_size=args.chunk, max_chunk_size=largest)
            streamer = Recording(s3gen, ref, cfg, **draws)
            parts, i, k = [], 0, 0
            while i < len(tokens):
                size = cfg.chunk_tokens(k)
                parts.append(streamer.push(tokens[i:i + size].tolist()))
                i, k = i + size, k + 1
            parts.append(streamer.finish())
            wav, mel = np.concatenate(parts), torch.cat(streamer.mels, dim=2)
        seconds = time.perf_counter() - t0
        mel_l1 = float((mel - one_mel).abs().mean())
        mel_snr = snr_db(one_mel.numpy(), mel.numpy())
        lines.append(f"| {what} | {dtype} | {seconds:.1f} | {mel_l1:.4f} | {mel_snr:.1f} | "
                     f"{log_mel_l1(one, wav):.4f} | {snr_db(one, wav):.1f} |")
        print(lines[-1], flush=True)
    set_s3gen_dtype(s3gen, "float32")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", default="0,1", help="comma-separated torch thread counts (0: torch's default)")
    p.add_argument("--tokens", type=int, default=150)
    p.add_argument("--chunk", type=int, default=25)
    p.add_argument("--voice-seconds", type=float, default=8.0)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}; with 1 thread "
                   f"only {', '.join(ONE_THREAD_RUNS)} unless --all-runs-at-one-thread")
    p.add_argument("--all-runs-at-one-thread", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--results", default="bench/RESULTS.md")
    args = p.parse_args(argv)
    args.runs = [r for r in args.runs.split(",") if r]
    unknown = set(args.runs) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; choose from {', '.join(RUNS)}")
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    return args


@torch.inference_mode()
def main(argv=None) -> None:
    args = parse_args(argv)
    default_threads = torch.get_num_threads()
    start_load, started = load_average(), time.perf_counter()
    model, what = build(args)
    from inference.precision import set_t3_dtype

    t3s = {"float32": model.t3}
    if any(r.endswith("-fast") for r in args.runs):
        t3s["int8"] = set_t3_dtype(copy.deepcopy(model.t3), "int8")
    timers = {k: T3Timer(t3) for k, t3 in t3s.items()}
    print(f"hardware: {hardware(args.device)}\nmodel: {what}\nload average at start: {start_load}", flush=True)

    table = ["| threads | run | T3 / flow | first audio s | total s | T3 s (first token) | "
             "chunks (audio of each, in tokens) | audio s | flow frames | total / one-shot | load 1 min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary, oneshot_tokens = [], None
    for threads in args.thread_counts:
        torch.set_num_threads(threads or default_threads)
        n = torch.get_num_threads()
        for fast in (False, True):  # warm-up per precision: first-call allocations outside the timed runs
            if fast and "int8" not in t3s:
                continue
            set_fast(model, fast, t3s)
            list(model.generate_stream(TEXT, seed=1, max_new_tokens=30, chunk_size=args.chunk))
        runs = args.runs if (n > 1 or args.all_runs_at_one_thread) else [r for r in args.runs
                                                                          if r in ONE_THREAD_RUNS]
        oneshot = {}
        for name in runs:
            fast = name.endswith("-fast")
            set_fast(model, fast, t3s)
            timer = timers["int8" if fast else "float32"]
            timer.reset()
            load = os.getloadavg()[0]
            row = run_oneshot(model, args) if name.startswith("oneshot") else run_stream(model, args, name)
            if name.startswith("oneshot"):
                oneshot[fast] = row["total"]
                oneshot_tokens = row.pop("tokens")
            ratio = row["total"] / oneshot[fast] if fast in oneshot else float("nan")
            sizes = row.get("sizes")
            chunks = f"{row['chunks']}" + (f" ({', '.join(map(str, sizes))})" if sizes else "")
            label = "int8 / bfloat16" if fast else "float32 / float32"
            table.append(f"| {n} | {name} | {label} | {row['first']:.1f} | {row['total']:.1f} | "
                         f"{timer.seconds:.1f} ({timer.first or 0:.1f}) | {chunks} | {row['audio']:.2f} | "
                         f"{row['frames']} | {ratio:.2f} | {load:.2f} |")
            print(table[-1], flush=True)
    set_fast(model, False, t3s)
    torch.set_num_threads(default_threads)
    quality_lines = [] if args.skip_quality or oneshot_tokens is None else quality(model, oneshot_tokens, args)
    header = [f"hardware: {hardware(args.device)}",
              f"command: `python bench/end_to_end.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
              f"model: {what}",
              f"text: {len(TEXT)} characters, one piece; {args.tokens} T3 tokens (seed 0), chunk {args.chunk}",
              f"load average (1/5/15 min) at start {start_load}, at end {load_average()}",
              f"reference (issue 15, brody-dowling/chatterbox-streaming at 1046532, 1 thread, another machine): "
              f"first audio {REFERENCE_1T['first audio']} s, stream total {REFERENCE_1T['total']} s, generate "
              f"{REFERENCE_1T['generate']} s"]
    summary.append(f"total run time {(time.perf_counter() - started) / 60:.1f} min")
    print("\n".join(summary))
    if args.results:
        append_results(Path(args.results), header, table + [""] + quality_lines, summary,
                       script="bench/end_to_end.py")


if __name__ == "__main__":
    main()
