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
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}'s header says {sr} Hz; clips are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
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


# What a clip's header may say: below 8 kHz is not speech audio (a 1 Hz header would make resampling to 24 kHz
# allocate 24,000 samples for each one read), above 384 kHz no recorder writes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 384_000
MAX_CHANNELS = 8
BLOCK_FRAMES = 65_536


def decode_clip(data: bytes, max_seconds: float, source: str = "the clip") -> tuple[np.ndarray, int]:
    """An encoded clip from a client (bytes of WAV, FLAC, Ogg, MP3) as (mono float32, its rate), bounded in memory.

    The header's rate, channels and length are checked before anything is decoded, and decoding goes block by
    block, mixed to mono as it goes and stopped past `max_seconds`: a small file that unpacks to hours of
    multichannel audio is refused after reading one block past the limit, not after decoding it whole. Errors
    carry libsndfile's reason only (its full message names the in-memory file by heap address)."""
    import io

    try:
        clip = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as e:
        raise AudioError(f"{source} is not audio this server reads (WAV, FLAC, Ogg, MP3): {e.error_string}") from None
    except (RuntimeError, TypeError, ValueError):
        raise AudioError(f"{source} is not audio this server reads (WAV, FLAC, Ogg, MP3)") from None
    with clip:
        rate, channels, frames = clip.samplerate, clip.channels, clip.frames
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioError(f"{source}'s header says {rate} Hz; clips are {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioError(f"{source} has {channels} channels; at most {MAX_CHANNELS} are read")
        if 0 < frames < 2**62 and frames / rate > max_seconds:  # 0 or huge: the header does not say
            raise AudioError(too_long(source, frames / rate, max_seconds))
        limit = int(max_seconds * rate)
        parts, read = [], 0
        try:
            for block in clip.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True, frames=limit + 1):
                parts.append(block.mean(axis=1))
                read += len(block)
        except sf.LibsndfileError as e:
            raise AudioError(f"{source} could not be decoded: {e.error_string}") from None
    if read > limit:
        raise AudioError(too_long(source, None, max_seconds))
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if len(wav) == 0:
        raise AudioError(f"{source} holds no samples")
    check_finite(wav, source)
    return wav, rate


def too_long(source: str, seconds: float | None, max_seconds: float) -> str:
    said = f"{seconds:.0f} s long" if seconds is not None else f"longer than {max_seconds:.0f} s"
    return f"{source} is {said}; voices take at most {max_seconds:.0f} s (5-10 s of clean speech works best)"
