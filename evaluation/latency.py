"""Streaming latency of one sample, as a listener would feel it: when each chunk arrived, and whether a player
that started at the first chunk and played in real time would have run dry."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from inference.stream_quality import count_underruns

from .config import StreamSettings

SAMPLE_RATE = 24_000


@dataclass
class StreamTiming:
    time_to_first_audio: float | None = None  # seconds from the request to the first chunk
    total_seconds: float = 0.0
    audio_seconds: float = 0.0
    rtf: float | None = None  # total_seconds / audio_seconds
    chunk_compute: list[float] = field(default_factory=list)  # compute of each chunk (caller's time excluded)
    chunk_arrivals: list[float] = field(default_factory=list)  # seconds from the request
    chunk_audio: list[float] = field(default_factory=list)  # seconds of audio per chunk
    underruns: int = 0
    underrun_seconds: float = 0.0
    token_cap: bool = False  # a text piece ended at max_new_tokens instead of its stop token


def stream_sample(model, text: str, language: str | None, seed: int,
                  settings: StreamSettings) -> tuple[np.ndarray, StreamTiming]:
    """Stream one sentence through `model.generate_stream`; (24 kHz float32 audio, its timing).

    The clock starts before the call, so time to first audio includes T3's first chunk of tokens. Writing and
    scoring happen after the stream ends and are not timed."""
    timing, pieces = StreamTiming(), []
    start = time.perf_counter()
    stream = model.generate_stream(text, language_id=language, seed=seed, **settings.generate_kwargs())
    for chunk in stream:
        timing.chunk_arrivals.append(time.perf_counter() - start)
        timing.chunk_compute.append(chunk.metrics.compute_seconds)
        timing.chunk_audio.append(len(chunk.audio) / SAMPLE_RATE)
        pieces.append(chunk.audio)
        timing.token_cap |= chunk.metrics.token_cap
    timing.total_seconds = time.perf_counter() - start
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    timing.audio_seconds = len(audio) / SAMPLE_RATE
    if timing.chunk_arrivals:
        timing.time_to_first_audio = timing.chunk_arrivals[0]
    if timing.audio_seconds:
        timing.rtf = timing.total_seconds / timing.audio_seconds
    arrivals = [(t, len(p)) for t, p in zip(timing.chunk_arrivals, pieces)]
    timing.underruns, timing.underrun_seconds = count_underruns(arrivals, SAMPLE_RATE)
    return audio, timing
