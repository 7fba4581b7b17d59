"""Audio I/O and resampling shared by the models: reading user files robustly, and the windowed-sinc
resampler S3Gen uses (numerically the torchaudio `Resample` defaults the official pipeline ran)."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
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


class NonFiniteAudio(AudioError):
    """A file whose samples include NaN or infinity (float WAVs written by broken pipelines)."""


def load_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at `sample_rate`.

    Stereo is averaged; other rates are resampled (soxr, high quality, as librosa.load does). Empty files and
    NaN/inf samples are AudioErrors raised before resampling, which would otherwise fail with librosa's own error.
    """
    import librosa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"{path} is empty (0 bytes)")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot read {path} as audio ({e})") from e
    wav = data.mean(axis=1)
    if len(wav) == 0:
        raise AudioError(f"{path} holds no samples")
    if not np.isfinite(wav).all():
        raise NonFiniteAudio(f"{path} holds NaN or infinite samples")
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate)
    if max_seconds is not None:
        wav = wav[: int(max_seconds * sample_rate)]
    return np.ascontiguousarray(wav, dtype=np.float32)
