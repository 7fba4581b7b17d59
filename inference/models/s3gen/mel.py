"""S3Gen's 24 kHz prompt mel (the flow's target space): natural-log magnitude mel, 80 bands, 50 Hz."""
from __future__ import annotations

from functools import lru_cache

import librosa
import torch
import torch.nn.functional as F
from torch import Tensor

N_FFT, HOP, SAMPLE_RATE, N_MELS = 1920, 480, 24000, 80


@lru_cache(maxsize=4)
def _filters(device: str) -> Tensor:
    bank = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0, fmax=8000)
    return torch.from_numpy(bank).float().to(device)


def mel_24k(wav: Tensor) -> Tensor:
    """(B, samples) at 24 kHz -> (B, frames, 80), one frame per 480 samples (frames = samples // 480)."""
    pad = (N_FFT - HOP) // 2
    x = F.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(N_FFT, periodic=True, device=wav.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=False, return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    mel = _filters(str(wav.device)) @ mag
    return torch.log(mel.clamp(min=1e-5)).transpose(1, 2)
