"""Reading user audio files robustly, and the checks every user clip passes (one rule each: silence, non-finite
samples, clipping, length), shared by voice references, training clips and evaluation references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .models.audio import AudioError, resample

__all__ = ["AudioError", "NonFiniteAudio", "check_reference", "load_audio", "resample"]


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
    check_finite(wav, str(path))
    if sr != sample_rate:
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate)
    if max_seconds is not None:
        wav = wav[: int(max_seconds * sample_rate)]
    return np.ascontiguousarray(wav, dtype=np.float32)


# One rule each, for every clip a user gives us (voice references, uploads, training clips, evaluation references).
SILENT_PEAK = 1e-4  # a clip whose loudest sample is below this is silent
CLIP_LEVEL = 0.999  # |sample| at or above this fraction of full scale counts as clipped
MIN_REFERENCE_SECONDS = 0.5  # shortest voice reference (5-10 s works best)
MAX_REFERENCE_SECONDS = 60  # longer references are cut here (the voice embedding gains nothing beyond)


def check_finite(wav: np.ndarray, source: str) -> None:
    if not np.isfinite(wav).all():
        raise NonFiniteAudio(f"{source} holds NaN or infinite samples")


def peak(wav: np.ndarray) -> float:
    return float(np.abs(wav).max(initial=0.0))


def is_silent(wav: np.ndarray) -> bool:
    return peak(wav) < SILENT_PEAK


def clipped_fraction(wav: np.ndarray) -> float:
    return float((np.abs(wav) >= CLIP_LEVEL).mean()) if len(wav) else 0.0


def check_reference(wav, sample_rate: int, source: str = "reference") -> np.ndarray:
    """Specific errors for unusable voice references; long ones are cut to MAX_REFERENCE_SECONDS."""
    import logging

    log = logging.getLogger(__name__)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{source}: expected mono audio, got shape {wav.shape}")
    check_finite(wav, source)
    if is_silent(wav):
        raise AudioError(f"{source}: the audio is silent (peak {peak(wav):.1e})")
    voiced = np.abs(wav) > 0.01 * peak(wav)
    if voiced.sum() < MIN_REFERENCE_SECONDS * sample_rate * 0.5 or len(wav) < MIN_REFERENCE_SECONDS * sample_rate:
        raise AudioError(f"{source}: {len(wav) / sample_rate:.2f} s is too short; give at least "
                         f"{MIN_REFERENCE_SECONDS} s of speech (5-10 s works best)")
    if (clipped := clipped_fraction(wav)) > 0.01:
        log.warning("%s: %.1f%% of samples are clipped; the cloned voice will sound distorted", source, 100 * clipped)
    if len(wav) > MAX_REFERENCE_SECONDS * sample_rate:
        log.info("%s: using the first %d s of %.0f s", source, MAX_REFERENCE_SECONDS, len(wav) / sample_rate)
        wav = wav[: MAX_REFERENCE_SECONDS * sample_rate]
    return wav
