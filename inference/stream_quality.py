"""How far streamed audio is from the one-shot decode of the same tokens, how audible its joins are, and how
often a real-time player fed by the stream would run dry.

Used by the streaming tests, `bench/streaming.py`, the client and evaluation; plain numpy so they run anywhere.
"""
from __future__ import annotations

import numpy as np

from .models.rates import S3GEN_SR


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-error ratio of `test` against `reference` (same length), in dB; inf when identical."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"lengths differ: {reference.shape} vs {test.shape}")
    error = np.sum((reference - test) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(np.sum(reference ** 2) / error))


def log_mel(wav: np.ndarray, sample_rate: int = S3GEN_SR, n_mels: int = 80) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(wav, np.float32), sr=sample_rate, n_fft=1024,
                                         hop_length=256, n_mels=n_mels)
    return np.log(np.maximum(mel, 1e-5))


def log_mel_l1(reference: np.ndarray, test: np.ndarray, sample_rate: int = S3GEN_SR) -> float:
    """Mean absolute log-mel difference (natural log units): 0 identical, ~0.1 hard to hear, >1 clearly different."""
    return float(np.mean(np.abs(log_mel(reference, sample_rate) - log_mel(test, sample_rate))))


def join_jumps(wav: np.ndarray, joins: list[int]) -> np.ndarray:
    """Sample step |x[j] - x[j-1]| at each join, divided by the 99th percentile of all steps in the signal:
    around 1 or below is an ordinary sample-to-sample change, well above 1 is a click."""
    steps = np.abs(np.diff(np.asarray(wav, np.float64)))
    scale = max(float(np.percentile(steps, 99)), 1e-12)
    return np.array([steps[j - 1] / scale for j in joins if 0 < j < len(wav)])


def joins_of(chunks: list[np.ndarray]) -> list[int]:
    """Sample positions where consecutive chunks meet."""
    return list(np.cumsum([len(c) for c in chunks])[:-1].astype(int))


def count_underruns(arrivals: list[tuple[float, int]], sample_rate: int = 24000,
                    prebuffer_s: float = 0.0) -> tuple[int, float]:
    """(underruns, total stall seconds) of a real-time player fed by `arrivals` = [(arrival time s, samples)].

    The player starts once `prebuffer_s` seconds of audio have arrived (with the default 0: at the first arrival
    that carries samples; if the whole stream holds less than the prebuffer, at the last arrival) and then
    consumes `sample_rate` samples per second. Whenever it has played everything received so far and more is
    still to come, it stalls until the next arrival: one underrun, lasting (that arrival - the moment the buffer
    ran dry). It resumes as soon as data is there (no re-buffering). Running out after the last arrival is the
    end of the stream, not an underrun. Arrivals are taken in time order; entries with 0 samples are ignored.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    events = sorted((float(t), int(n)) for t, n in arrivals if n > 0)
    if not events:
        return 0, 0.0
    need = max(0.0, prebuffer_s) * sample_rate
    received, start_index = 0, len(events) - 1
    for i, (_, n) in enumerate(events):
        received += n
        if received >= need:
            start_index = i
            break
    clock = events[start_index][0]  # when playback (re)started
    buffered = sum(n for _, n in events[:start_index + 1])  # samples playable from `clock` on without a stall
    underruns, stalled = 0, 0.0
    for t, n in events[start_index + 1:]:
        dry_at = clock + buffered / sample_rate
        if t > dry_at + 1e-9:
            underruns += 1
            stalled += t - dry_at
            clock, buffered = t, n
        else:
            buffered += n
    return underruns, stalled


def gapless_delay(arrivals: list[tuple[float, int]], sample_rate: int = 24000) -> float:
    """Seconds after the first audio a player must wait before starting so that it never stalls: what a
    listener pays for gapless playback of this stream (0 when playing at once never stalls)."""
    events = sorted((float(t), int(n)) for t, n in arrivals if n > 0)
    if not events:
        return 0.0
    first, played = events[0][0], 0
    delay = 0.0
    for t, n in events:
        delay = max(delay, t - first - played / sample_rate)  # this chunk must be there when the audio before ends
        played += n
    return delay if delay > 1e-9 else 0.0  # arrival times in float seconds: rounding is not a wait
