"""The voice encoder's own front-end: power mel (no log), librosa STFT with reflect-padded centring."""
from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np

from .config import VoiceEncoderConfig


@lru_cache(maxsize=4)
def mel_filters(cfg: VoiceEncoderConfig) -> np.ndarray:
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.num_mels, fmin=cfg.fmin, fmax=cfg.fmax)


def power_mel(wav: np.ndarray, cfg: VoiceEncoderConfig) -> np.ndarray:
    """(samples,) float waveform at cfg.sample_rate -> (frames, num_mels) float32."""
    spec = librosa.stft(wav, n_fft=cfg.n_fft, hop_length=cfg.hop_size, win_length=cfg.win_size,
                        center=True, pad_mode="reflect")
    power = np.abs(spec) ** 2
    return (mel_filters(cfg) @ power).T.astype(np.float32)
