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
from abc import ABC, abstractmethod
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..models.limits import FADES, STRATEGIES, check_limits
from ..models.rates import TOKEN_SAMPLES
from ..models.s3gen.flow import LOOKAHEAD_TOKENS, TOKEN_MEL_RATIO
from ..models.s3gen.hifigan import draw_source_randomness, harmonic_excitation
from ..models.s3gen.s3gen import FADE_SAMPLES, S3GEN_SR, RefDict, S3Gen, trim_fade

FRAME_SAMPLES = TOKEN_SAMPLES // TOKEN_MEL_RATIO  # 480: one 50 Hz mel frame at 24 kHz


@dataclass
class StreamConfig:
    """How tokens become chunks of audio. Sizes in speech tokens (25 per second) unless named otherwise; the
    allowed values of most fields are in `inference/models/limits.py`."""

    strategy: str = "incremental"
    chunk_size: int = 25  # tokens in the first chunk: 1 s of audio
    # later chunks double up to this many tokens (None: 4 x chunk_size; chunk_size: every chunk the same). Each
    # S3Gen call decodes the whole voice prompt again, so fewer, longer calls after the first cost less in total,
    # while the audio already sent grows just as fast, so the listener does not wait longer for any chunk.
    max_chunk_size: int | None = None
    context_window: int = 50  # window: tokens re-synthesised before the new ones
    left_context: int = 50  # incremental: emitted tokens re-decoded before the new ones
    hold_tokens: int = 2  # incremental: tokens held back beyond the encoder's 3 look-ahead tokens
    vocoder_context: int = 16  # incremental: mel frames vocoded again as left context
    hold_frames: int = 12  # incremental: mel frames at the right edge vocoded but emitted only next time
    fade: str = "hann"  # linear | hann | equal_power
    fade_duration: int = 960  # samples overlap-added at each join (40 ms)
    # voice-prompt tokens the flow sees in every call, the last ones of the reference (None: all, as one-shot
    # does). The prompt is decoded again in each call, so with a 10 s reference it is most of a chunk's cost.
    prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        check_limits(vars(self))  # strategy, fade, the sizes in tokens, prompt_tokens
        if self.hold_frames < IncrementalStreamer.F0_EDGE or self.vocoder_context < 1:
            raise ValueError(f"hold_frames must be >= {IncrementalStreamer.F0_EDGE} and vocoder_context >= 1")
        if not 0 <= self.fade_duration <= min(self.vocoder_context, self.hold_frames) * FRAME_SAMPLES // 2:
            raise ValueError(f"fade_duration must be in [0, {min(self.vocoder_context, self.hold_frames) * 240}] "
                             f"samples (half the vocoder context and hold), got {self.fade_duration}")
        if self.max_chunk_size is not None and self.max_chunk_size < self.chunk_size:
            raise ValueError(f"max_chunk_size ({self.max_chunk_size}) must be at least chunk_size ({self.chunk_size})")
        if self.strategy == "window" and self.fade_duration > self.context_window * TOKEN_SAMPLES:
            raise ValueError("window: fade_duration must not exceed the context window")

    def chunk_tokens(self, index: int) -> int:
        """Tokens in chunk `index` (0 = the first) of an utterance."""
        largest = 4 * self.chunk_size if self.max_chunk_size is None else self.max_chunk_size
        return min(self.chunk_size << min(index, 20), largest)


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
    token_cap: bool = False  # the last chunk of a text piece that ended at max_new_tokens, not at its stop token


class StreamChunk(NamedTuple):
    audio: np.ndarray  # float32, 24 kHz, mono
    metrics: ChunkMetrics


class StreamClock:
    """Turns (audio, work) into StreamChunks with timings; call `resume()` when the generator resumes."""

    def __init__(self, sample_rate: int = S3GEN_SR):
        self.sample_rate = sample_rate
        self.started = self.last = time.perf_counter()
        self.compute = self.audio = 0.0
        self.first: float | None = None
        self.index = 0

    def resume(self) -> None:
        self.last = time.perf_counter()

    def chunk(self, audio: np.ndarray, work: ChunkWork | None, token_cap: bool = False) -> StreamChunk:
        now = time.perf_counter()
        spent = now - self.last
        self.compute += spent
        seconds = len(audio) / self.sample_rate
        self.audio += seconds
        if self.first is None:
            self.first = now - self.started
        metrics = ChunkMetrics(self.index, seconds, self.audio, spent, self.first,
                               self.compute / self.audio if self.audio else float("inf"), work, token_cap)
        self.index += 1
        return StreamChunk(audio.astype(np.float32, copy=False), metrics)


def last_prompt_tokens(ref: RefDict, n: int | None) -> RefDict:
    """The voice with only its last `n` prompt tokens and their 2n mel frames (speaker embedding unchanged).

    `S3Gen.embed_ref` keeps every mel frame of the clip and cuts the tokens to match, so a clip with an odd
    frame count has one frame past its last token; the frames are taken aligned with the tokens, from the
    start, which drops that frame."""
    tokens = ref.prompt_token.shape[1]
    if n is None or n >= tokens:
        return ref
    if ref.prompt_feat.shape[1] < TOKEN_MEL_RATIO * tokens:
        raise ValueError(f"the voice has {ref.prompt_feat.shape[1]} prompt frames for {tokens} prompt tokens; "
                         f"trimming needs at least {TOKEN_MEL_RATIO} per token")
    feat = ref.prompt_feat[:, TOKEN_MEL_RATIO * (tokens - n): TOKEN_MEL_RATIO * tokens]
    return RefDict(ref.prompt_token[:, -n:], torch.full_like(ref.prompt_token_len, n), feat, ref.embedding,
                   None if ref.prompt_feat_len is None else torch.full_like(ref.prompt_feat_len, feat.shape[1]))


class _Streamer(ABC):
    def __init__(self, s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, generator: torch.Generator | None):
        ref = last_prompt_tokens(ref, cfg.prompt_tokens)
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
        out = self._step(final=True)
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

    @abstractmethod
    def _step(self, final: bool) -> np.ndarray:
        """Decode what the tokens so far allow; `final` flushes everything held back."""


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

    Vocoder bookkeeping, in mel frames of the utterance: audio is emitted up to `emitted`; the source excitation
    is final up to `committed` (its F0 had enough right context); mel is known up to `received`. Each call
    vocodes frames [emitted - vocoder_context, received), so emitted audio always had at least
    `vocoder_context` frames on its left and `hold_frames` on its right: measured on the full-size vocoder,
    each edge disturbs about 11 frames and the F0 predictor's about 5.
    """

    F0_EDGE = 6  # frames at a window's right edge whose F0 is not final

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
        self.cycles = torch.zeros(1, vcfg.num_harmonics, 1, dtype=torch.float64)  # committed phase, in cycles
        self.first = 0  # utterance frame index of mel[:, :, 0] and excitation[..., 0]
        self.mel = torch.zeros(1, 80, 0)  # frames [first, received)
        self.excitation = torch.zeros(1, 1, 0)  # committed source for frames [first, committed)
        self.emitted = self.committed = self.received = 0

    def _flow(self, start: int, n: int) -> Tensor:
        """Mel of tokens[start:n] decoded after the voice prompt, with the utterance's noise for those frames."""
        p = self.prompt_frames
        noise = torch.cat([self.flow_noise[:, :, :p],
                           self.flow_noise[:, :, p + TOKEN_MEL_RATIO * start:p + TOKEN_MEL_RATIO * n]], dim=2)
        if noise.shape[2] < p + TOKEN_MEL_RATIO * (n - start):
            raise ValueError("the utterance is longer than the flow noise drawn for it (max_tokens)")
        return self.s3gen.flow_inference(torch.tensor(self.tokens[start:n]), self.ref, noise=noise)

    def _source(self, f0: Tensor, commit: bool) -> Tensor:
        """Excitation (1, 1, N) for frames of F0 (1, T) following the committed ones; `commit` advances the
        phase and the noise position past them."""
        vocoder = self.s3gen.mel2wav
        vcfg = vocoder.cfg
        f0_samples = f0.repeat_interleave(vcfg.samples_per_frame, dim=-1)  # (1, N)
        n = f0_samples.shape[1]
        offset = self.committed * vcfg.samples_per_frame
        if self.source_noise is not None:
            noise = self.source_noise[:, :, offset:offset + n]
            if noise.shape[2] < n:
                raise ValueError("source_noise is shorter than the audio being made")
        elif commit:
            _, noise = draw_source_randomness(1, n, vcfg, self.generator)
        else:  # provisional frames: their audio is never emitted, so any noise will do
            noise = torch.zeros(1, vcfg.num_harmonics, n)
        phase = (self.source_phase + 2 * math.pi * self.cycles).to(f0.dtype)
        harmonics, _ = harmonic_excitation(f0_samples, phase.to(f0.device), noise.to(f0), vcfg)
        if commit:
            k = torch.arange(1, vcfg.num_harmonics + 1, dtype=torch.float64, device=f0.device)[None, :, None]
            step = (f0_samples[:, None, :].double() * k / vcfg.sample_rate).sum(-1, keepdim=True)
            self.cycles = (self.cycles + step.cpu()) % 1.0
        return vocoder.m_source(harmonics)

    def _vocode(self, new_mel: Tensor, final: bool) -> np.ndarray:
        vocoder, cfg = self.s3gen.mel2wav, self.cfg
        self.mel = torch.cat([self.mel, new_mel.cpu()], dim=2)
        self.received += new_mel.shape[2]
        commit_to = self.received if final else max(self.committed, self.received - self.F0_EDGE)
        emit_to = self.received if final else max(self.emitted, min(commit_to, self.received - cfg.hold_frames))
        if emit_to == self.emitted and not final:
            return np.zeros(0, dtype=np.float32)
        with torch.nn.utils.parametrize.cached():
            f0 = vocoder.predict_f0(self.mel)  # (1, received - first)
            a = self.first
            committed = self._source(f0[:, self.committed - a:commit_to - a], commit=True)
            self.excitation = torch.cat([self.excitation, committed], dim=2)
            self.committed = commit_to
            provisional = self._source(f0[:, commit_to - a:], commit=False)
            wav = vocoder.decode(self.mel, torch.cat([self.excitation, provisional], dim=2))[0]
        if self.emitted == 0:  # the utterance's start: as the one-shot path, silence the first frame, fade in
            m = min(2 * FADE_SAMPLES, wav.shape[0])
            wav = wav.clone()
            wav[:m] *= trim_fade(wav.device)[:m]
        wav = wav[:(emit_to - a) * FRAME_SAMPLES + (0 if final else len(self.fade_in))]
        out = self._join(wav.float().numpy(), (self.emitted - a) * FRAME_SAMPLES, final)
        self.emitted = emit_to
        keep_from = max(0, self.emitted - cfg.vocoder_context)
        self.mel = self.mel[:, :, keep_from - a:]
        self.excitation = self.excitation[:, :, (keep_from - a) * FRAME_SAMPLES:]
        self.first = keep_from
        return out

    @torch.inference_mode()
    def _step(self, final: bool) -> np.ndarray:
        cfg = self.cfg
        n, e = len(self.tokens), self.done
        upto = n if final else n - LOOKAHEAD_TOKENS - cfg.hold_tokens
        if upto <= e:
            return self._vocode(torch.zeros(1, 80, 0), final) if final else np.zeros(0, dtype=np.float32)
        start = max(0, e - cfg.left_context)
        mel = self._flow(start, n)  # (1, 80, 2 * (n - start))
        new_mel = mel[:, :, TOKEN_MEL_RATIO * (e - start):TOKEN_MEL_RATIO * (upto - start)]
        self.done = upto
        vocoder_frames = self.received + new_mel.shape[2] - self.first
        out = self._vocode(new_mel, final)
        self.work.append(ChunkWork(n - start, self.prompt_frames + TOKEN_MEL_RATIO * (n - start),
                                   vocoder_frames, len(out)))
        return out


def make_streamer(s3gen: S3Gen, ref: RefDict, cfg: StreamConfig, generator: torch.Generator | None = None,
                  **draws) -> _Streamer:
    if cfg.strategy == "window":
        if draws:
            raise ValueError("the window strategy draws fresh randomness on every call; it takes no fixed draws")
        return WindowStreamer(s3gen, ref, cfg, generator)
    return IncrementalStreamer(s3gen, ref, cfg, generator, **draws)
