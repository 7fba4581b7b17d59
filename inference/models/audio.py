"""Audio operations the models share: the error type for unusable input, and the windowed-sinc resampler S3Gen
uses (numerically the torchaudio `Resample` defaults the official pipeline ran). Here, not in `inference/audio.py`,
because modules under `models/` import nothing from above them."""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


class AudioError(ValueError):
    """A waveform or audio file that cannot serve as input."""


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """Polyphase kernel (new, 1, taps) for rates already divided by their gcd; Hann-windowed sinc."""
    cutoff = min(orig, new) * rolloff
    half = math.ceil(zeros * orig / cutoff)
    offsets = torch.arange(-half, half + orig, dtype=torch.float64)[None, None] / orig
    phase = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new
    t = ((phase + offsets) * cutoff).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig)).float(), half


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """(..., samples) float tensor -> (..., ceil(samples * new / orig))."""
    if orig_sr == new_sr:
        return wav
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, half = _sinc_kernel(orig, new)
    shape = wav.shape
    x = F.pad(wav.reshape(-1, shape[-1]), (half, half + orig))
    y = F.conv1d(x[:, None], kernel.to(wav.device, wav.dtype), stride=orig)  # (N, new, frames)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : math.ceil(new * shape[-1] / orig)]
    return y.reshape(*shape[:-1], -1)
