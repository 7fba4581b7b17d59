"""Speech tokens -> audio chunk by chunk, with joins that do not click.

Two strategies turn a growing list of S3 speech tokens into 24 kHz audio:

`incremental` (default) treats the chunks as pieces of one utterance:
  - the flow's ODE start noise is drawn once per utterance and indexed by frame position, so a frame decoded in
    two calls starts from the same noise (and from the same noise as the one-shot decode of the same tokens);
  - the encoder's look-ahead tokens, plus `hold_tokens` more, are held back until the next chunk (or the end),
    so every emitted mel frame was decoded with some right context;
  - each call re-decodes at most `left_context` already-emitted tokens before the new ones, so a chunk costs the
    same however long the utterance is;
  - the vocoder's harmonic source continues across calls: its phase is carried over, and the excitation of the
    last `vocoder_context` mel frames is reused while those frames are vocoded again as left context;
  - the last `fade_duration` samples of each chunk are held back and overlap-added with the same stretch of time
    as computed in the next call (audio computed twice, so the fade hides only rounding-level differences).

`window` is the reference's approach: every chunk re-synthesises the last `context_window` tokens plus the new
ones from scratch (fresh flow noise, restarted vocoder source, no look-ahead held back), crops the new part and
cross-fades it with the previous chunk. Here the cross-fade at least blends two renderings of the same stretch of
time (the reference blended the end of one chunk with the start of the next); the renderings still differ.

Both emit exactly 960 samples per speech token in total, like the one-shot `S3Gen.inference`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .models.s3gen.flow import LOOKAHEAD_TOKENS, TOKEN_MEL_RATIO
from .models.s3gen.hifigan import draw_source_randomness, harmonic_excitation
from .models.s3gen.s3gen import FADE_SAMPLES, RefDict, S3Gen, trim_fade

STRATEGIES = ("incremental", "window")
FADES = ("linear", "hann", "equal_power")
FRAME_SAMPLES = 480  # one 50 Hz mel frame at 24 kHz
TOKEN_SAMPLES = TOKEN_MEL_RATIO * FRAME_SAMPLES  # 960: one 25 Hz speech token


@dataclass
class StreamConfig:
    """How tokens become chunks of audio. Sizes in speech tokens (25 per second) unless named otherwise."""

    strategy: str = "incremental"
    chunk_size: int = 25  # tokens per chunk: 1 s of audio
    context_window: int = 50  # window: tokens re-synthesised before the new ones
    left_context: int = 25  # incremental: emitted tokens re-decoded before the new ones
    hold_tokens: int = 2  # incremental: tokens held back beyond the encoder's 3 look-ahead tokens
    vocoder_context: int = 8  # incremental: mel frames vocoded again as left context
    fade: str = "hann"  # linear | hann | equal_power
    fade_duration: int = 960  # samples overlap-added at each join (40 ms)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.fade not in FADES:
            raise ValueError(f"fade must be one of {', '.join(FADES)}, got {self.fade!r}")
        if self.chunk_size < 1 or self.context_window < 0 or self.left_context < 0 or self.hold_tokens < 0:
            raise ValueError("chunk_size must be >= 1 and the context sizes >= 0")
        if not 0 <= self.fade_duration <= self.vocoder_context * FRAME_SAMPLES // 2:
            raise ValueError(f"fade_duration must be in [0, {self.vocoder_context * FRAME_SAMPLES // 2}] samples "
                             f"(half the vocoder context), got {self.fade_duration}")
        if self.strategy == "window" and self.fade_duration > self.context_window * TOKEN_SAMPLES:
            raise ValueError("window: fade_duration must not exceed the context window")


def fade_curves(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) of length n. linear and hann sum to 1 (for audio that agrees); equal_power keeps the
    power of uncorrelated signals constant (for audio that does not)."""
    t = (np.arange(n) + 0.5) / max(n, 1)
    if kind == "linear":
        fade_in = t
    elif kind == "hann":
        fade_in = 0.5 - 0.5 * np.cos(np.pi * t)
    elif kind == "equal_power":
        return np.cos(0.5 * np.pi * t).astype(np.float32), np.sin(0.5 * np.pi * t).astype(np.float32)
    else:
        raise ValueError(f"fade must be one of {', '.join(FADES)}, got {kind!r}")
    return (1 - fade_in).astype(np.float32), fade_in.astype(np.float32)


@dataclass
class ChunkWork:
    """What one call computed: lets tests and benchmarks check that chunk cost does not grow."""

    tokens_in: int  # speech tokens given to the flow (prompt excluded)
    flow_frames: int  # mel frames the flow decoder integrated (prompt included)
    vocoder_frames: int  # mel frames vocoded
    samples: int  # audio samples emitted


@dataclass
class ChunkMetrics:
    """Per-chunk numbers for the caller. Times in seconds of wall clock spent inside the stream (the caller's
    time between chunks excluded); `rtf` < 1 means the stream is produced faster than it plays."""

    index: int
    audio_seconds: float  # this chunk
    total_audio_seconds: float  # all chunks so far
    compute_seconds: float  # producing this chunk: T3 tokens, flow and vocoder
    time_to_first_audio: float  # from the request to the first chunk
    rtf: float  # compute so far / audio so far
    work: ChunkWork | None  # what the S3Gen call behind it computed


class StreamChunk(NamedTuple):
    audio: np.ndarray  # float32, 24 kHz, mono
    metrics: ChunkMetrics


class StreamClock:
    """Turns (audio, work) into StreamChunks with timings; call `resume()` when the generator resumes."""

    def __init__(self, sample_rate: int = 24000):
        self.sample_rate = sample_rate
        self.started = self.last = time.perf_counter()
        self.compute = self.audio = 0.0
        self.first: float | None = None
        self.index = 0

    def resume(self) -> None:
        self.last = time.perf_counter()

    def chunk(self, audio: np.ndarray, work: ChunkWork | None) -> StreamChunk:
        now = time.perf_counter()
        spent = now - self.last
        self.compute += spent
        seconds = len(audio) / self.sample_rate
        self.audio += seconds
        if self.first is None:
            self.first = now - self.started
        metrics = ChunkMetrics(self.index, seconds, self.audio, spent, self.first,
                               self.compute / self.audio if self.audio else float("inf"), work)
        self.index += 1
        return StreamChunk(audio.astype(np.float32, copy=False), metrics)


class _Streamer:
    def __init__(self, s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, generator: torch.Generator | None):
        self.s3gen, self.ref, self.cfg, self.generator = s3gen, ref, cfg, generator
        self.tokens: list[int] = []
        self.done = 0  # tokens whose audio has been emitted (up to the held tail)
        self.tail = np.zeros(0, dtype=np.float32)  # emitted later, blended with its second rendering
        self.fade_out, self.fade_in = fade_curves(cfg.fade, cfg.fade_duration)
        self.work: list[ChunkWork] = []
        self.prompt_frames = ref.prompt_feat.shape[1]

    def push(self, tokens) -> np.ndarray:
        """Add speech tokens; returns the audio that is final now (possibly empty)."""
        self.tokens.extend(int(t) for t in tokens)
        return self._step(final=False)

    def finish(self) -> np.ndarray:
        """The rest of the utterance, including the held-back tail."""
        out = self._step(final=True) if len(self.tokens) > self.done else np.zeros(0, dtype=np.float32)
        out, self.tail = np.concatenate([out, self.tail]), np.zeros(0, dtype=np.float32)
        return out

    def _join(self, wav: np.ndarray, overlap_start: int, final: bool) -> np.ndarray:
        """Blend the held tail with `wav[overlap_start:overlap_start + len(tail)]` (the same stretch of time),
        emit through the end minus a new tail (none when final)."""
        n = len(self.tail)
        head = wav[overlap_start:overlap_start + n]
        blended = self.tail * self.fade_out[:n] + head * self.fade_in[:n] if n else head
        rest = wav[overlap_start + n:]
        keep = 0 if final else min(self.cfg.fade_duration, len(rest))
        self.tail = rest[len(rest) - keep:].copy()
        return np.concatenate([blended, rest[:len(rest) - keep]]).astype(np.float32)

    def _step(self, final: bool) -> np.ndarray:
        raise NotImplementedError


class WindowStreamer(_Streamer):
    """The reference's re-synthesise-and-crop strategy (see the module docstring)."""

    def _step(self, final: bool) -> np.ndarray:
        n, e = len(self.tokens), self.done
        if n == e or (not final and n - e < self.cfg.chunk_size):
            return np.zeros(0, dtype=np.float32)
        start = max(0, e - self.cfg.context_window)
        tokens = torch.tensor(self.tokens[start:n], dtype=torch.long)
        wav = self.s3gen.inference(tokens, self.ref, generator=self.generator, fade_in=start == 0)[0].cpu().numpy()
        self.work.append(ChunkWork(n - start, self.prompt_frames + TOKEN_MEL_RATIO * (n - start),
                                   TOKEN_MEL_RATIO * (n - start), 0))
        overlap_start = (e - start) * TOKEN_SAMPLES - len(self.tail)
        out = self._join(wav, overlap_start, final)
        self.done = n
        self.work[-1].samples = len(out)
        return out


class IncrementalStreamer(_Streamer):
    """Chunks as pieces of one utterance (see the module docstring).

    flow_noise (1, 80, >= prompt frames + 2 * tokens), source_phase (1, 9, 1) and source_noise (1, 9, samples)
    fix the random draws (tests pass the one-shot decode's); missing ones come from `generator`.
    """

    def __init__(self, s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, generator: torch.Generator | None = None,
                 flow_noise: Tensor | None = None, source_phase: Tensor | None = None,
                 source_noise: Tensor | None = None, max_tokens: int = 4096):
        super().__init__(s3gen, ref, cfg, generator)
        vcfg = s3gen.mel2wav.cfg
        if flow_noise is None:  # drawn once; ~1 MB for the longest utterance T3 can produce
            frames = self.prompt_frames + TOKEN_MEL_RATIO * max_tokens
            flow_noise = torch.randn(1, 80, frames, generator=generator)
        self.flow_noise = flow_noise
        if source_phase is None:
            source_phase, _ = draw_source_randomness(1, 0, vcfg, generator)
        self.source_phase = source_phase.double()
        self.source_noise = source_noise
        self.cycles = torch.zeros(1, vcfg.num_harmonics, 1, dtype=torch.float64)  # source phase so far, in cycles
        self.samples = 0  # excitation samples generated so far
        self.mel_context = None  # (1, 80, <= vocoder_context) last emitted mel frames
        self.exc_context = None  # (1, 1, frames * 480) their excitation

    def _flow(self, start: int, n: int) -> Tensor:
        """Mel of tokens[start:n] decoded after the voice prompt, with the utterance's noise for those frames."""
        p = self.prompt_frames
        noise = torch.cat([self.flow_noise[:, :, :p],
                           self.flow_noise[:, :, p + TOKEN_MEL_RATIO * start:p + TOKEN_MEL_RATIO * n]], dim=2)
        if noise.shape[2] < p + TOKEN_MEL_RATIO * (n - start):
            raise ValueError("the utterance is longer than the flow noise drawn for it (max_tokens)")
        return self.s3gen.flow_inference(torch.tensor(self.tokens[start:n]), self.ref, noise=noise)

    def _excitation(self, f0: Tensor) -> Tensor:
        """Harmonic source for new frames (1, T) of F0, continuing the phase of the previous ones."""
        vocoder = self.s3gen.mel2wav
        vcfg = vocoder.cfg
        f0_samples = f0.repeat_interleave(vcfg.samples_per_frame, dim=-1)  # (1, N)
        n = f0_samples.shape[1]
        if self.source_noise is not None:
            noise = self.source_noise[:, :, self.samples:self.samples + n]
            if noise.shape[2] < n:
                raise ValueError("source_noise is shorter than the audio being made")
        else:
            _, noise = draw_source_randomness(1, n, vcfg, self.generator)
        phase = (self.source_phase + 2 * math.pi * self.cycles).to(f0.dtype)
        harmonics, _ = harmonic_excitation(f0_samples, phase.to(f0.device), noise.to(f0), vcfg)
        k = torch.arange(1, vcfg.num_harmonics + 1, dtype=torch.float64, device=f0.device)[None, :, None]
        step = (f0_samples[:, None, :].double() * k / vcfg.sample_rate).sum(-1, keepdim=True)
        self.cycles = (self.cycles + step.cpu()) % 1.0
        self.samples += n
        return vocoder.m_source(harmonics)

    @torch.inference_mode()
    def _step(self, final: bool) -> np.ndarray:
        cfg = self.cfg
        n, e = len(self.tokens), self.done
        upto = n if final else n - LOOKAHEAD_TOKENS - cfg.hold_tokens
        if upto <= e or (not final and upto - e < min(cfg.chunk_size, 1)):
            return np.zeros(0, dtype=np.float32)
        start = max(0, e - cfg.left_context)
        mel = self._flow(start, n)  # (1, 80, 2 * (n - start))
        new_mel = mel[:, :, TOKEN_MEL_RATIO * (e - start):TOKEN_MEL_RATIO * (upto - start)]

        vocoder = self.s3gen.mel2wav
        context = 0 if self.mel_context is None else self.mel_context.shape[2]
        mel_in = new_mel if context == 0 else torch.cat([self.mel_context, new_mel], dim=2)
        with torch.nn.utils.parametrize.cached():
            f0 = vocoder.predict_f0(mel_in)
            excitation = self._excitation(f0[:, context:])
            if context:
                excitation = torch.cat([self.exc_context, excitation], dim=2)
            wav = vocoder.decode(mel_in, excitation)[0]
        if context == 0:  # the utterance's start: as the one-shot path, silence the first frame and fade in
            m = min(2 * FADE_SAMPLES, wav.shape[0])
            wav = wav.clone()
            wav[:m] *= trim_fade(wav.device)[:m]
        keep = min(cfg.vocoder_context, mel_in.shape[2])
        self.mel_context = mel_in[:, :, mel_in.shape[2] - keep:]
        self.exc_context = excitation[:, :, excitation.shape[2] - keep * FRAME_SAMPLES:]

        out = self._join(wav.float().cpu().numpy(), context * FRAME_SAMPLES - len(self.tail), final)
        self.work.append(ChunkWork(n - start, self.prompt_frames + TOKEN_MEL_RATIO * (n - start),
                                   mel_in.shape[2], len(out)))
        self.done = upto
        return out


def make_streamer(s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, generator: torch.Generator | None = None,
                  **draws) -> _Streamer:
    if cfg.strategy == "window":
        if draws:
            raise ValueError("the window strategy draws fresh randomness on every call; it takes no fixed draws")
        return WindowStreamer(s3gen, ref, cfg, generator)
    return IncrementalStreamer(s3gen, ref, cfg, generator, **draws)
