"""How far streamed audio is from the one-shot decode of the same tokens, and how audible its joins are.

Used by the streaming tests and `bench/streaming.py`; plain numpy so they run anywhere.
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
