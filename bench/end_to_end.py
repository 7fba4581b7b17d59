"""End to end, side by side for each family: `generate_stream` with T3 included, beside the one-shot of the same
tokens, and whether a listener who starts playing at the first chunk hears a gap.

    python bench/end_to_end.py                                  # english, turbo, nano; float32 and fast; 10 s
    python bench/end_to_end.py --families nano --runs stream --seconds 4
Options: --families english,turbo,nano, --runs (see RUNS), --seconds 10 (speech tokens = 25 per second),
--voice-seconds 10, --threads 0 (0: torch's default), --device cpu|cuda, --skip-quality, --results
bench/RESULTS.md ('' for none).

Models: each family's `synthetic-<family>` preset (official shapes, deterministic random weights: the output is
NOT speech, only the work is real), with one voice for all: an espeak-ng recording of `--voice-seconds` (a
synthetic clip without espeak-ng). Synthetic T3 never stops early, so every run decodes 25 x `--seconds` tokens
(the ids it picks that are not speech are dropped as always, so the audio is a little shorter). Seed 0 in every
run: all runs of a family get the same tokens.

Runs (`fast`: T3 int8 and S3Gen's flow in bfloat16, inference.precision):
  - oneshot / oneshot-fast: T3's tokens, then one `s3gen.inference` over them (what `generate()` does for one
    piece, without the watermark);
  - stream / stream-fast: `generate_stream` with the family's defaults (turns until the first chunk, then T3
    ahead in its own thread; the family's StreamConfig);
  - turns: `generate_stream(run_ahead=False)`: T3 and S3Gen take turns throughout.
Per run: time to first audio, total wall, total over the one-shot of the same precision, chunks (the audio of
each, in tokens), underruns and stalled seconds of a player that starts at the first chunk
(inference.stream_quality.count_underruns, as the client counts them), "gapless from": the earliest moment a
player could start and never stall (first audio + stream_quality.gapless_delay), and the 1-minute load average.

Quality (S3Gen only, same tokens, same random draws): the streamed mel against the one-shot mel, with the
family's stream settings and with StreamConfig's (the whole voice prompt, 50 tokens of left context). With
synthetic weights only the mel columns mean anything: the random vocoder turns small mel differences into large
waveform ones.
"""
from __future__ import annotations

import argparse
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

SAMPLE_RATE = 24000
TOKENS_PER_SECOND = 25
FAMILIES = ("english", "turbo", "nano")
RUNS = ("oneshot", "stream", "oneshot-fast", "stream-fast", "turns")
TEXT = ("The old lighthouse keeper climbed the winding stairs every evening, lit the great lamp, and watched "
        "the ships pass safely along the rocky coast until the morning light returned over the quiet harbour "
        "and the fishermen came home with their nets full of silver.")
VOICE_TEXT = ("Good morning. I am reading a few sentences aloud, so that the model can learn how my voice "
              "sounds when I speak slowly and clearly.")


def espeak_voice(seconds: float) -> tuple[np.ndarray, str]:
    """(24 kHz clip of `seconds`, where it came from): espeak-ng when installed, else a synthetic clip."""
    from inference.audio import resample
    from inference.presets import synthetic_reference

    exe = shutil.which("espeak-ng")
    if exe is None:
        return synthetic_reference(SAMPLE_RATE, seconds), "synthetic"
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "voice.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(path), " ".join([VOICE_TEXT] * 3)],
                       check=True, capture_output=True)
        wav, sr = sf.read(path, dtype="float32")
    wav = resample(torch.from_numpy(wav)[None], sr, SAMPLE_RATE)[0].numpy()
    return wav[: int(seconds * SAMPLE_RATE)], "espeak-ng en-us"


def build(family: str, voice: np.ndarray, device: str, fast: bool):
    from inference.chatterbox import load_chatterbox
    from inference.families import FAMILIES as ALL

    dtypes = dict(t3_dtype="int8", s3gen_dtype="bfloat16") if fast else {}
    model = load_chatterbox(ALL[family].synthetic_preset, device=device, **dtypes)
    model.prepare_conditionals_from_array(voice, SAMPLE_RATE)
    model.setup_model()
    return model


def run_oneshot(model, tokens: int) -> dict:
    from inference.models.s3gen.s3gen import RefDict

    t0 = time.perf_counter()
    ids = model.generate_speech_tokens(TEXT, seed=0, max_new_tokens=tokens)
    t3 = time.perf_counter() - t0
    ids = torch.cat([ids, torch.tensor(model.FAMILY.tail_tokens, dtype=torch.long)])
    wav = model.s3gen.inference(ids.to(model.device), RefDict.from_dict(model.conds.gen),
                                generator=torch.Generator().manual_seed(0))
    total = time.perf_counter() - t0
    return {"first": total, "total": total, "t3": t3, "sizes": None, "audio": wav.shape[-1] / SAMPLE_RATE,
            "underruns": 0, "stalled": 0.0, "wait": 0.0, "tokens": ids}


def run_stream(model, tokens: int, run_ahead: bool) -> dict:
    from inference.stream_quality import count_underruns, gapless_delay

    t0, arrivals, sizes = time.perf_counter(), [], []
    for chunk in model.generate_stream(TEXT, seed=0, max_new_tokens=tokens, run_ahead=run_ahead):
        arrivals.append((time.perf_counter() - t0, len(chunk.audio)))
        sizes.append(round(chunk.metrics.audio_seconds * TOKENS_PER_SECOND))
    total = time.perf_counter() - t0
    underruns, stalled = count_underruns(arrivals, SAMPLE_RATE)
    return {"first": arrivals[0][0], "total": total, "sizes": sizes, "underruns": underruns, "stalled": stalled,
            "audio": sum(n for _, n in arrivals) / SAMPLE_RATE, "wait": gapless_delay(arrivals, SAMPLE_RATE)}


def quality(model, tokens: torch.Tensor) -> list[str]:
    """Streamed mel vs one-shot mel, S3Gen only, the same tokens and draws; float32."""
    from inference.models.s3gen.hifigan import draw_source_randomness
    from inference.models.s3gen.s3gen import RefDict
    from inference.stream_quality import snr_db
    from inference.streaming import TOKEN_SAMPLES, IncrementalStreamer, StreamConfig, last_prompt_tokens

    class Recording(IncrementalStreamer):
        def _vocode(self, new_mel, final):
            self.mels = getattr(self, "mels", []) + [new_mel.cpu()]
            return super()._vocode(new_mel, final)

    s3gen, ref = model.s3gen, RefDict.from_dict(model.conds.gen)
    g = torch.Generator().manual_seed(1)
    draws = {"flow_noise": torch.randn(1, 80, ref.prompt_feat.shape[1] + 2 * len(tokens), generator=g)}
    draws["source_phase"], draws["source_noise"] = draw_source_randomness(1, len(tokens) * TOKEN_SAMPLES,
                                                                          s3gen.mel2wav.cfg, g)
    one_mel = s3gen.flow_inference(tokens, ref, noise=draws["flow_noise"])
    lines, whole = [], ref.prompt_feat.shape[1]
    for what, cfg in ((f"{model.FAMILY.name} defaults {model.FAMILY.stream or ''}", model.stream_config),
                      ("StreamConfig() (whole prompt, left context 50)", StreamConfig())):
        t0 = time.perf_counter()
        # the same noise for the generated frames as one-shot's: a shorter prompt takes the noise of its own frames
        kept = last_prompt_tokens(ref, cfg.prompt_tokens).prompt_feat.shape[1]
        noise = torch.cat([draws["flow_noise"][:, :, whole - kept:whole], draws["flow_noise"][:, :, whole:]], dim=2)
        streamer = Recording(s3gen, ref, cfg, **{**draws, "flow_noise": noise})
        i, k = 0, 0
        while i < len(tokens):
            size = cfg.chunk_tokens(k)
            streamer.push(tokens[i:i + size].tolist())
            i, k = i + size, k + 1
        streamer.finish()
        seconds = time.perf_counter() - t0
        mel = torch.cat(streamer.mels, dim=2)
        lines.append(f"| {model.FAMILY.name} | {what} | {seconds:.1f} | {float((mel - one_mel).abs().mean()):.4f} | "
                     f"{snr_db(one_mel.numpy(), mel.numpy()):.1f} |")
        print(lines[-1], flush=True)
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--runs", default=",".join(RUNS[:4]), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--voice-seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--results", default="bench/RESULTS.md")
    args = p.parse_args(argv)
    args.families = [f for f in args.families.split(",") if f]
    args.runs = [r for r in args.runs.split(",") if r]
    for given, known, what in ((args.families, FAMILIES, "families"), (args.runs, RUNS, "runs")):
        if set(given) - set(known):
            p.error(f"unknown {what} {sorted(set(given) - set(known))}; choose from {', '.join(known)}")
    return args


@torch.inference_mode()
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start_load, started = load_average(), time.perf_counter()
    voice, source = espeak_voice(args.voice_seconds)
    tokens = round(args.seconds * TOKENS_PER_SECOND)
    print(f"hardware: {hardware(args.device)}\nload average at start: {start_load}", flush=True)
    table = ["| family | run | T3 / flow | first audio s | total s | total / one-shot | chunks (audio of each, in "
             "tokens) | audio s | underruns (stalled s) | gapless from s | load 1 min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    quality_lines = ["| family | stream settings | S3Gen s | mel L1 vs one-shot | mel SNR dB |", "|---|---|---|---|---|"]
    for family in args.families:
        for fast in (False, True):
            runs = [r for r in args.runs if r.endswith("-fast") == fast]
            if not runs:
                continue
            model = build(family, voice, args.device, fast)
            list(model.generate_stream(TEXT, seed=1, max_new_tokens=30))  # warm-up: first-call allocations
            oneshot, oneshot_tokens = None, None
            for name in runs:
                load = os.getloadavg()[0]
                if name.startswith("oneshot"):
                    row = run_oneshot(model, tokens)
                    oneshot, oneshot_tokens = row["total"], row.pop("tokens")
                else:
                    row = run_stream(model, tokens, run_ahead=name != "turns")
                ratio = f"{row['total'] / oneshot:.2f}" if oneshot else "-"
                sizes = f"{len(row['sizes'])} ({', '.join(map(str, row['sizes']))})" if row["sizes"] else "1"
                table.append(f"| {family} | {name} | {'int8 / bfloat16' if fast else 'float32 / float32'} | "
                             f"{row['first']:.2f} | {row['total']:.2f} | {ratio} | {sizes} | {row['audio']:.2f} | "
                             f"{row['underruns']} ({row['stalled']:.2f}) | {row['first'] + row['wait']:.2f} | "
                             f"{load:.2f} |")
                print(table[-1], flush=True)
            if not fast and not args.skip_quality and oneshot_tokens is not None:
                quality_lines += quality(model, oneshot_tokens)
            del model
    header = [f"hardware: {hardware(args.device)}",
              f"command: `python bench/end_to_end.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
              "models: the synthetic-<family> presets (official shapes, random weights: not speech), "
              f"{len(voice) / SAMPLE_RATE:.1f} s {source} voice",
              f"text: {len(TEXT)} characters, one piece; {tokens} T3 tokens (seed 0): {args.seconds:g} s of audio",
              f"load average (1/5/15 min) at start {start_load}, at end {load_average()}"]
    summary = [f"total run time {(time.perf_counter() - started) / 60:.1f} min"]
    print("\n".join(summary))
    if args.results:
        lines = table + ([""] + quality_lines if len(quality_lines) > 2 else [])
        append_results(Path(args.results), header, lines, summary, script="bench/end_to_end.py")


if __name__ == "__main__":
    main()
