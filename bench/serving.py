"""Serving throughput: a server that decodes concurrent requests as one T3 batch against one that decodes them in turn.

    python bench/serving.py                                      # GPU when available, full size, 50 tokens each
    python bench/serving.py --device cpu --clients 1,2,4,8 --tokens 50
    python bench/serving.py --device cpu --clients 1,2 --tokens 10 --no-results    # smoke run
    python bench/serving.py --skip-server                        # T3 in-process only (the cleanest T3 number)
Options: --device cpu|cuda, --threads T (torch threads here; OMP_NUM_THREADS for the server), --clients 1,2,4,8,
--tokens 50 (speech tokens per request: 25 = 1 s of audio), --chunk-size 25, --prompt-tokens 75 (voice-prompt
tokens S3Gen decodes with each chunk; 0: all), --model DIR (a real checkpoint folder), --build-dir DIR (keep the
synthetic model there and reuse it next time), --skip-server, --skip-t3, --results bench/RESULTS.md, --no-results
(`python -m bench.serving ...` works too).

Model: full size with deterministic synthetic weights (T3 English 520M, S3Gen, voice encoder; the tiny preset's
character tokenizer, whose 704 ids fit T3's text vocabulary) and a built-in voice from a 10 s synthetic reference,
saved once in the official layout in a temporary folder; or a real checkpoint folder with `--model DIR`.
Synthetic weights never choose the stop token on purpose, so every request is capped at `--tokens` tokens (the
server's --max-new-tokens), and the work does not depend on what the weights say. They also pick ids >= 6561
(about 20% of the 8194), which are not speech and are dropped: a request yields about 0.8 x tokens / 25 seconds
of audio (real weights: tokens / 25).

Two parts, each one heavy thing at a time:
1. T3 in-process (no server, no S3Gen): N requests (different sentences and seeds, the model's default sampling
   with classifier-free guidance, i.e. 2 rows each) decoded solo one after another, each by its own `T3Batcher`,
   against the same N added to one `T3Batcher` and stepped together (each joins after its own prefill, as in the
   server). Timed with time.perf_counter (CUDA synchronised): T3 tokens per second of each, batched / solo.
   This is the clean number for the T3 throughput target.
2. The server (`python -m inference.server`, a subprocess): once with --max-batch 1 (serial: requests decoded one
   after another) and once with --max-batch 8 (continuous batching), both with --max-queue 64. After one untimed
   warm-up request, for each N in --clients, N threads each stream `POST /v1/audio/speech` (pcm, a different
   sentence and seed each) with httpx, all released at once by a barrier. Per client: time to first audio byte
   (from its release), arrival time and size of every network read, underruns of a player that starts at the
   first byte (`inference.stream_quality.count_underruns`: stalls and stall seconds), audio seconds. Per N: p50 / p95
   time to first audio, underruns, aggregate audio seconds per wall second (all audio / release -> last byte),
   T3 tokens per second from the server's /health counters (delta `tokens_decoded` over the wall, and over the
   T3 span: release -> the moment the counter stopped, polled every 0.2 s), tokens per batch step (delta
   `tokens_decoded` / delta `batch_steps`: about the number of requests decoded together), wall time.
   On a CPU the server's T3 numbers include contention with S3Gen for the same cores.

Targets: CPU: aggregate T3 throughput with 8 streams >= 4x serial (in-process T3 part; the server's counters and
the end-to-end gain, which S3Gen limits since it is compute-bound on a CPU, are reported beside it).
GPU: 8 streams >= 4x the end-to-end throughput (audio seconds per second) of the serial server, and p95 time to
first audio with 8 streams <= 3x that of one client (batched server).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/serving.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.stream_quality import count_underruns  # noqa: E402
from bench.streaming import load_average, sync  # noqa: E402
from inference.hardware import hardware, on_gpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 24000
TOKENS_PER_SECOND = 25
REFERENCE_SECONDS = 10.0
MODES = (("serial", 1), ("batched", 8))  # (name, --max-batch)
MAX_QUEUE = 64
POLL_SECONDS = 0.2
START_TIMEOUT = 900.0  # seconds for the server to load a full-size model and warm up
READ_TIMEOUT = 1800.0  # seconds without a byte: a serial server on a CPU keeps its 8th client waiting long
TARGET_T3 = 4.0
TARGET_E2E = 4.0
TARGET_TTFA = 3.0
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to water the plants before you leave for the weekend.",
    "Our train was delayed by twenty minutes because of the heavy snow.",
    "She opened the window and listened to the birds singing in the garden.",
    "A good cup of coffee in the morning makes the whole day feel brighter.",
    "The museum will stay open late on Friday for the new exhibition.",
    "He wrote the numbers down carefully so that nobody would forget them.",
    "When the lights went out, everyone in the room started to laugh.",
)
SEED = 1000


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ------------------------------------------------------------------------------------------------------ model


def build_synthetic(device: str):
    """Full-size English Chatterbox with synthetic weights and a built-in voice: what the server loads by default."""
    from inference.chatterbox import ChatterboxTTS
    from inference.models.t3 import T3, T3Config
    from inference.models.voice_encoder import VoiceEncoder
    from inference.presets import synthetic_reference, synthetic_s3gen, tiny_tokenizer
    from inference.synthetic import fill_synthetic

    t3 = fill_synthetic(T3(T3Config.english(), init_weights=False)).eval()
    tokenizer = tiny_tokenizer(multilingual=False)
    if tokenizer.vocab_size > t3.cfg.text_vocab_size:
        raise SystemExit(f"the synthetic tokenizer has {tokenizer.vocab_size} ids, T3 only {t3.cfg.text_vocab_size}")
    model = ChatterboxTTS(t3, synthetic_s3gen(), fill_synthetic(VoiceEncoder()).eval(), tokenizer, device)
    model.prepare_conditionals_from_array(synthetic_reference(SAMPLE_RATE, seconds=REFERENCE_SECONDS), SAMPLE_RATE)
    return model


def prepare_model(args, workdir: Path) -> tuple[object | None, str, str]:
    """(model in memory or None, folder the server loads, description). The model is only kept for the T3 part."""
    from inference.chatterbox import load_chatterbox

    from inference.families import PRESETS

    if args.model in PRESETS:
        model = None if args.skip_t3 else load_chatterbox(args.model, device=args.device)
        return model, args.model, (f"the {args.model} preset (official shapes, synthetic weights: not speech), "
                                   "its 10 s synthetic reference voice")
    if args.model:
        model = None if args.skip_t3 else load_chatterbox(args.model, device=args.device)
        return model, args.model, f"real weights from {args.model}, its stored voice"
    what = (f"full size, synthetic weights (T3 English, S3Gen, voice encoder), character tokenizer, "
            f"{REFERENCE_SECONDS:g} s synthetic reference voice")
    folder = Path(args.build_dir) if args.build_dir else workdir / "model"
    if args.build_dir and (folder / "t3_cfg.safetensors").is_file() and (folder / "conds.pt").is_file():
        model = None if args.skip_t3 else load_chatterbox(folder, device=args.device)
        return model, str(folder), what + f" (reused from {folder})"
    t0 = time.perf_counter()
    model = build_synthetic(args.device)
    model.save_local(folder)
    print(f"built and saved the synthetic model in {time.perf_counter() - t0:.1f}s -> {folder}", flush=True)
    return (None if args.skip_t3 else model), str(folder), what


# ------------------------------------------------------------------------------------------------ T3 in-process


def decode(model, n: int, tokens: int, together: bool, device: str) -> dict:
    """Decode `n` requests solo one after another, or together in one T3Batcher; tokens, seconds and steps."""
    from inference.server.batching import Decoding, T3Batcher

    sampling = model.sampling_config(max_new_tokens=tokens)
    cond = model.conds.t3.with_exaggeration(model._exaggeration(None))  # the family's (Turbo, Nano: none)
    count = [0]

    def emit(token: int | None) -> None:
        if token is not None:
            count[0] += 1

    def request(i: int) -> Decoding:
        generator = torch.Generator(device=model.device).manual_seed(SEED + i)
        return Decoding(cond, model.text_tokens(SENTENCES[i % len(SENTENCES)]), sampling, emit, generator)

    def prefill(batcher: T3Batcher, d: Decoding) -> float:
        """Seconds of one request's prefill (its first token), kept apart: it does not batch."""
        sync(device)
        t = time.perf_counter()
        batcher.add(d)
        sync(device)
        return time.perf_counter() - t

    requests = [request(i) for i in range(n)]  # tokenizing is not T3 work: outside the clock
    steps, prefills = 0, 0.0
    sync(device)
    t0 = time.perf_counter()
    if together:
        batcher = T3Batcher(model.t3)
        for d in requests:
            prefills += prefill(batcher, d)
        while batcher.active:
            batcher.step()
        steps = batcher.steps
    else:
        for d in requests:
            batcher = T3Batcher(model.t3)
            prefills += prefill(batcher, d)
            while batcher.active:
                batcher.step()
            steps += batcher.steps
    sync(device)
    seconds = time.perf_counter() - t0
    return {"n": n, "mode": "batched" if together else "solo", "tokens": count[0], "seconds": seconds,
            "tok_s": count[0] / seconds, "steps": steps, "prefill": prefills,
            "ms_step": 1000 * (seconds - prefills) / steps if steps else None}


def bench_t3(model, args) -> list[dict]:
    """Solo and batched decoding for every N; batched rows carry their ratio to the solo row of the same N."""
    decode(model, 1, min(args.tokens, 5), False, args.device)  # warm-up: first-call allocations
    rows = []
    for n in args.client_counts:
        solo = decode(model, n, args.tokens, False, args.device)
        print(f"  T3 N={n} solo: {solo['tokens']} tokens in {solo['seconds']:.2f}s = {solo['tok_s']:.2f} tok/s",
              flush=True)
        batched = decode(model, n, args.tokens, True, args.device)
        batched["ratio"] = batched["tok_s"] / solo["tok_s"]
        print(f"  T3 N={n} batched: {batched['tokens']} tokens in {batched['seconds']:.2f}s = "
              f"{batched['tok_s']:.2f} tok/s (x{batched['ratio']:.2f})", flush=True)
        rows += [solo, batched]
    return rows


# ---------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m inference.server` subprocess, its log in a file (read back to report server-side errors)."""

    def __init__(self, folder: str, max_batch: int, args, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        voices = workdir / "voices"  # empty: only the built-in voice
        voices.mkdir(exist_ok=True)
        self.log_path = workdir / f"server-batch{max_batch}.log"
        command = [sys.executable, "-m", "inference.server", "--model", folder, "--device", args.device,
                   "--host", "127.0.0.1", "--port", str(self.port), "--max-batch", str(max_batch),
                   "--max-queue", str(MAX_QUEUE), "--max-new-tokens", str(args.tokens),
                   "--chunk-size", str(args.chunk_size), "--voices", str(voices), "--t3-dtype", args.t3_dtype,
                   "--s3gen-dtype", args.s3gen_dtype]
        if args.prompt_tokens is not None:
            command += ["--prompt-tokens", str(args.prompt_tokens)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> float:
        """Seconds until /health answers; the log tail on failure."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < START_TIMEOUT:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT:g}s:\n{self.log_tail()}")

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=30).json()

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no request is left in the engine, so one round's work does not leak into the next."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            h = self.health()
            if not (h["streams"] or h["in_batch"] or h["queued"]):
                return
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"the server still has requests after {timeout:g}s: {self.health()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def problems(self) -> list[str]:
        """Log lines that say something went wrong on the server side (tracebacks, errors, warnings)."""
        from inference.presets import WARNING as PRESET_WARNING  # a preset says so at load: not a problem

        text = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in text if (line.startswith(("ERROR", "WARNING", "Traceback", "CRITICAL"))
                                          or "Error" in line.split(":")[0]) and PRESET_WARNING not in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def speech_body(i: int, text: str | None = None) -> dict:
    return {"model": "tts-1", "input": text or SENTENCES[i % len(SENTENCES)], "voice": "default",
            "response_format": "pcm", "seed": SEED + i}


def stream_client(url: str, body: dict, barrier: threading.Barrier | None, out: dict) -> None:
    """One streaming client: released by `barrier`, records when each read arrived and how many samples it
    completed (times from its own release); errors are recorded, not raised (the other clients go on)."""
    with httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT, connect=30.0)) as client:
        if barrier is not None:
            barrier.wait()
        t0 = time.perf_counter()
        received, arrivals, first, error = 0, [], None, None
        try:
            with client.stream("POST", url + "/v1/audio/speech", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
                else:
                    for data in response.iter_raw():
                        now = time.perf_counter()
                        before = received // 2
                        received += len(data)
                        if received // 2 > before:
                            arrivals.append((now - t0, received // 2 - before))
                            first = now - t0 if first is None else first
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
        end = time.perf_counter()
    underruns, stalled = count_underruns(arrivals, SAMPLE_RATE)
    out.update(start=t0, end=end, first=first, samples=received // 2, reads=len(arrivals), underruns=underruns,
               stalled=stalled, error=error, odd_bytes=received % 2)


class HealthPoller(threading.Thread):
    """Samples /health's `tokens_decoded` while a round runs: when it stops growing, T3 is done with the round."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.samples, self.done = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.done.is_set():
                try:
                    tokens = client.get(self.url + "/health").json()["tokens_decoded"]
                    self.samples.append((time.perf_counter(), tokens))
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                self.done.wait(POLL_SECONDS)

    def finished_at(self, final_tokens: int) -> float | None:
        """The first poll that saw the final count (T3's last token came in the poll interval before it)."""
        return next((t for t, tokens in self.samples if tokens >= final_tokens), None)


def run_round(server: Server, mode: str, n: int) -> dict:
    """N clients released at once; the per-round aggregates."""
    server.wait_idle()
    before = server.health()
    barrier = threading.Barrier(n + 1)
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=stream_client, args=(server.url, speech_body(i), barrier, results[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    poller = HealthPoller(server.url)
    poller.start()
    barrier.wait()
    release = time.perf_counter()
    for t in threads:
        t.join()
    poller.done.set()
    poller.join()
    after = server.health()
    wall = max(r["end"] for r in results) - release
    tokens = after["tokens_decoded"] - before["tokens_decoded"]
    steps = after["batch_steps"] - before["batch_steps"]
    t3_end = poller.finished_at(after["tokens_decoded"])
    t3_span = (t3_end - release) if t3_end is not None else wall
    firsts = [r["first"] for r in results if r["first"] is not None]
    audio = sum(r["samples"] for r in results) / SAMPLE_RATE
    errors = [r["error"] for r in results if r["error"]]
    return {"mode": mode, "n": n, "wall": wall, "ttfa_p50": percentile(firsts, 50), "ttfa_p95": percentile(firsts, 95),
            "ttfa_max": max(firsts) if firsts else None, "underruns": sum(r["underruns"] for r in results),
            "stalled": sum(r["stalled"] for r in results), "audio": audio, "audio_per_s": audio / wall,
            "tokens": tokens, "steps": steps, "tok_s_wall": tokens / wall, "tok_s_t3": tokens / t3_span,
            "t3_span": t3_span, "tok_per_step": tokens / steps if steps else None,
            "completed": after["completed"] - before["completed"], "errors": errors,
            "odd_bytes": sum(r["odd_bytes"] for r in results), "clients": results}


def bench_server(folder: str, args, workdir: Path) -> tuple[list[dict], list[str]]:
    """Both modes, one server each; (rows, lines the servers logged as problems)."""
    rows, problems = [], []
    for mode, max_batch in MODES:
        server = Server(folder, max_batch, args, workdir)
        try:
            ready = server.wait_ready()
            print(f"{mode} server (--max-batch {max_batch}) ready in {ready:.1f}s on {server.url}", flush=True)
            warm: dict = {}
            t0 = time.perf_counter()
            stream_client(server.url, speech_body(len(SENTENCES), "This request only warms the server up."),
                          None, warm)
            print(f"  warm-up request: {warm['samples'] / SAMPLE_RATE:.2f} s of audio in "
                  f"{time.perf_counter() - t0:.1f}s{' ERROR ' + warm['error'] if warm['error'] else ''}", flush=True)
            for n in args.client_counts:
                r = run_round(server, mode, n)
                rows.append(r)
                print(f"  {mode} N={n}: wall {r['wall']:.1f}s, TTFA p50 {fmt(r['ttfa_p50'], '.2f')}s p95 "
                      f"{fmt(r['ttfa_p95'], '.2f')}s, underruns {r['underruns']} ({r['stalled']:.1f}s), "
                      f"audio {r['audio']:.2f}s = {r['audio_per_s']:.3f} audio s/s, T3 {r['tok_s_wall']:.2f} tok/s "
                      f"(T3 span {r['tok_s_t3']:.2f}), {fmt(r['tok_per_step'], '.2f')} tok/step, "
                      f"completed {r['completed']}/{n}" + (f", ERRORS {r['errors']}" if r["errors"] else ""),
                      flush=True)
        except Exception as e:  # report and go on to the other mode: one failure should not hide the rest
            print(f"{mode} server: FAILED {type(e).__name__}: {e}", flush=True)
            problems.append(f"{mode}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        finally:
            server.stop()
            found = server.problems()
            if found:
                print(f"  {mode} server log ({server.log_path}) reports problems:\n    " + "\n    ".join(found[:20]),
                      flush=True)
                problems += [f"{mode} server log: {line[:200]}" for line in found[:10]]
    return rows, problems


# ---------------------------------------------------------------------------------------------------- report


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def render(head: list[str], cells: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return lines + ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    line = lambda cs: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cs, widths)))
    return [line(head)] + [line(c) for c in cells]


def t3_table(rows: list[dict], markdown: bool) -> list[str]:
    head = ["N", "T3 in-process", "tokens", "seconds", "tokens/s", "prefills s", "steps", "ms/step",
            "batched / solo"]
    cells = [[str(r["n"]), r["mode"], str(r["tokens"]), fmt(r["seconds"], ".2f"), fmt(r["tok_s"], ".2f"),
              fmt(r["prefill"], ".2f"), str(r["steps"]), fmt(r["ms_step"], ".0f"), fmt(r.get("ratio"), ".2f")]
             for r in rows]
    return render(head, cells, markdown)


def server_table(rows: list[dict], markdown: bool) -> list[str]:
    head = ["mode", "N", "wall s", "TTFA p50 s", "TTFA p95 s", "underruns (stall s)", "audio s", "audio s/s",
            "T3 tok/s (wall)", "T3 tok/s (T3 span)", "tok/step", "completed"]
    cells = [[r["mode"], str(r["n"]), fmt(r["wall"], ".1f"), fmt(r["ttfa_p50"], ".2f"), fmt(r["ttfa_p95"], ".2f"),
              f"{r['underruns']} ({r['stalled']:.1f})", fmt(r["audio"], ".2f"), fmt(r["audio_per_s"], ".3f"),
              fmt(r["tok_s_wall"], ".2f"), fmt(r["tok_s_t3"], ".2f"), fmt(r["tok_per_step"], ".2f"),
              f"{r['completed']}/{r['n']}" + (f" ({len(r['errors'])} errors)" if r["errors"] else "")] for r in rows]
    return render(head, cells, markdown)


def summary(t3_rows: list[dict], server_rows: list[dict], args) -> list[str]:
    """Ratios batched / serial at the largest N (8 by default) and the verdict for this device's target."""
    n = max(args.client_counts)
    out = []
    caveat = "" if n == 8 else f" (measured at N={n}, not 8)"
    t3 = {(r["mode"], r["n"]): r for r in t3_rows}
    sv = {(r["mode"], r["n"]): r for r in server_rows}
    t3_ratio = t3[("batched", n)]["ratio"] if ("batched", n) in t3 else None
    if t3_ratio is not None:
        out.append(f"T3 in-process, N={n}: batched {t3[('batched', n)]['tok_s']:.2f} tok/s vs solo "
                   f"{t3[('solo', n)]['tok_s']:.2f} tok/s: x{t3_ratio:.2f}")
    serial, batched, one = sv.get(("serial", n)), sv.get(("batched", n)), sv.get(("batched", 1))
    e2e = ttfa = None
    if serial and batched:
        e2e = batched["audio_per_s"] / serial["audio_per_s"]
        out.append(f"server, N={n}, batched / serial: T3 tok/s over the wall "
                   f"x{batched['tok_s_wall'] / serial['tok_s_wall']:.2f} ({batched['tok_s_wall']:.2f} vs "
                   f"{serial['tok_s_wall']:.2f}), over the T3 span "
                   f"x{batched['tok_s_t3'] / serial['tok_s_t3']:.2f} ({batched['tok_s_t3']:.2f} vs "
                   f"{serial['tok_s_t3']:.2f}); end-to-end audio s/s x{e2e:.2f} ({batched['audio_per_s']:.3f} vs "
                   f"{serial['audio_per_s']:.3f}); wall {batched['wall']:.1f}s vs {serial['wall']:.1f}s")
    if batched and one and one["ttfa_p95"] and batched["ttfa_p95"] is not None:
        ttfa = batched["ttfa_p95"] / one["ttfa_p95"]
        out.append(f"batched server: p95 time to first audio N={n} {batched['ttfa_p95']:.2f}s vs N=1 "
                   f"{one['ttfa_p95']:.2f}s: x{ttfa:.2f}")
    tokens = "" if args.tokens == 50 else f"; {args.tokens} tokens per request, not 50"
    if on_gpu(args.device):
        target = (f"target (GPU): {n} streams >= {TARGET_E2E:g}x the end-to-end throughput of serial and p95 TTFA "
                  f"<= {TARGET_TTFA:g}x that of one client")
        if e2e is None or ttfa is None:
            out.append(f"{target}: NOT evaluated (server part skipped or failed)")
        else:
            met = e2e >= TARGET_E2E and ttfa <= TARGET_TTFA
            out.append(f"{target}: {'MET' if met else 'NOT met'}{caveat}{tokens} -- end-to-end x{e2e:.2f}, "
                       f"p95 TTFA x{ttfa:.2f}")
    else:
        target = f"target (CPU): aggregate T3 throughput with {n} streams >= {TARGET_T3:g}x serial"
        if t3_ratio is None:
            out.append(f"{target}: NOT evaluated (T3 part skipped)")
        else:
            out.append(f"{target}: {'MET' if t3_ratio >= TARGET_T3 else 'NOT met'}{caveat}{tokens} -- "
                       f"in-process T3 x{t3_ratio:.2f}")
        if e2e is not None:
            out.append(f"end-to-end on this CPU: x{e2e:.2f} audio s/s batched / serial at N={n}: S3Gen, compute-bound "
                       "here and run one chunk at a time in one thread, takes most of the time T3 batching saves")
        if serial and ("solo", n) in t3:
            # T3 and S3Gen share the cores and are both compute-bound here: the serial wall is about their sum
            t3_alone = t3[("solo", n)]["seconds"]
            if serial["wall"] > t3_alone:
                ceiling = serial["wall"] / (serial["wall"] - t3_alone)
                out.append(f"S3Gen's share: of the serial server's {serial['wall']:.1f}s wall at N={n}, T3 alone "
                           f"needs about {t3_alone:.1f}s (in-process solo), so even free T3 decoding would raise the "
                           f"end-to-end throughput by at most about x{ceiling:.2f}")
    return out


def command_line() -> str:
    argv = sys.argv[1:]
    if __package__ in (None, ""):
        return " ".join(["python", "bench/serving.py", *argv])
    return " ".join(["python", "-m", "bench.serving", *argv])


def append_results(path: Path, header: list[str], tables: list[list[str]], summary_lines: list[str]) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        if new:
            f.write("# Benchmark results\n\nAppend-only log of benchmark runs: date, hardware, exact command, "
                    "numbers. Absolute times depend on the machine and on its load at the time.\n")
        f.write(f"\n## bench/serving.py, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n")
        f.write("\n".join(f"- {h}" for h in header) + "\n\n")
        for table in tables:
            f.write("\n".join(table) + "\n\n")
        f.write("\n".join(f"- {s}" for s in summary_lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads here, OMP_NUM_THREADS for the server (default: torch's own choice)")
    p.add_argument("--clients", default="1,2,4,8", help="comma-separated numbers of concurrent streams")
    p.add_argument("--tokens", type=int, default=50, help="speech tokens per request (25 per second of audio)")
    p.add_argument("--chunk-size", type=int, default=25, help="the server's --chunk-size")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="the server's --prompt-tokens (0: all; default: the model family's)")
    p.add_argument("--t3-dtype", default="float32", choices=("float32", "bfloat16", "float16", "int8"),
                   help="T3's weights and activations (the server's --t3-dtype); bfloat16 uses AMX/tensor cores")
    p.add_argument("--s3gen-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="S3Gen's flow (the server's --s3gen-dtype)")
    p.add_argument("--model", default=None, help="a checkpoint folder, or a full-size preset (synthetic-nano, "
                   "synthetic-turbo...), instead of the synthetic English model")
    p.add_argument("--build-dir", default=None, help="keep the synthetic model in this folder; reused if there")
    p.add_argument("--skip-server", action="store_true", help="only the in-process T3 part")
    p.add_argument("--skip-t3", action="store_true", help="only the server part")
    p.add_argument("--results", default="bench/RESULTS.md", help="markdown file to append to")
    p.add_argument("--no-results", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.client_counts = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    if not args.client_counts or min(args.client_counts) < 1:
        p.error("--clients needs positive numbers")
    if args.skip_server and args.skip_t3:
        p.error("--skip-server and --skip-t3 together leave nothing to run")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = load_average()
    hw = hardware(args.device)
    server_threads = f"OMP_NUM_THREADS={args.threads}" if args.threads else "torch default"
    print(f"hardware: {hw}; server threads: {server_threads}")
    print(f"load average at start (1/5/15 min): {load_before}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        model, folder, what = prepare_model(args, workdir)
        print(f"model: {what}")
        prompt = "family default" if args.prompt_tokens is None else args.prompt_tokens or "all"
        print(f"{args.tokens} tokens per request ({args.tokens / TOKENS_PER_SECOND:g} s of audio), chunk "
              f"{args.chunk_size}, prompt tokens {prompt}, clients {args.client_counts}", flush=True)
        t3_rows: list[dict] = []
        if model is not None:
            from inference.precision import set_t3_dtype

            model.t3 = set_t3_dtype(model.t3, args.t3_dtype)
        if not args.skip_t3:
            with torch.inference_mode():
                t3_rows = bench_t3(model, args)
        del model  # the server loads its own copy: free this one's memory first
        gc.collect()
        server_rows: list[dict] = []
        problems: list[str] = []
        if not args.skip_server:
            server_rows, problems = bench_server(folder, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = load_average()
    elapsed = time.perf_counter() - started

    tables_text, tables_md = [], []
    if t3_rows:
        tables_text.append(t3_table(t3_rows, markdown=False))
        tables_md.append(t3_table(t3_rows, markdown=True))
    if server_rows:
        tables_text.append(server_table(server_rows, markdown=False))
        tables_md.append(server_table(server_rows, markdown=True))
    print()
    for table in tables_text:
        print("\n".join(table) + "\n")
    notes = ("T3 in-process: solo = N requests decoded one after another, batched = N in one T3Batcher (prefills "
             "included in both; ms/step excludes them). Server: TTFA = time to first audio byte from release; "
             "underruns of a player starting at its first byte; audio s/s = all audio / (release -> last byte); "
             "T3 tok/s from /health tokens_decoded over the wall and over the T3 span (release -> counter stopped, "
             "+-0.2 s); tok/step = tokens / batch steps (a request's first token comes from its prefill, not a step)")
    print(notes)
    summary_lines = summary(t3_rows, server_rows, args)
    summary_lines.append(f"total run time {elapsed / 60:.1f} min")
    if problems:
        summary_lines.append("server problems: " + "; ".join(problems[:10]))
    for line in summary_lines:
        print(line)
    print(f"load average at end (1/5/15 min): {load_after} (shared machine: other processes may have competed)")

    if not args.no_results:
        path = Path(args.results)
        if not path.is_absolute():
            path = ROOT / path
        header = [f"hardware: {hw}; server threads: {server_threads}", f"command: `{command_line()}`",
                  f"model: {what}",
                  f"{args.tokens} speech tokens per request ({args.tokens / TOKENS_PER_SECOND:g} s of audio), chunk "
                  f"{args.chunk_size}, server prompt tokens {prompt}; serial: --max-batch 1, "
                  f"batched: --max-batch 8, both --max-queue {MAX_QUEUE}; N clients released at once, a different "
                  "sentence and seed each, pcm over HTTP",
                  notes, f"load average (1/5/15 min) at start {load_before}, at end {load_after}"]
        append_results(path, header, tables_md, summary_lines)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
