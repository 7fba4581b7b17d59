"""Building a voice (T3 conditioning + S3Gen's reference dictionary) from a reference clip, for every family.

The original model and Turbo/Nano prepare a voice the same way (kit 5.8, 5.17, 7.9): S3Gen gets `embed_ref` of the
clip's first seconds at 24 kHz; T3 gets the S3 speech tokens of its first seconds at 16 kHz and the voice-encoder
embedding of the whole clip. They differ only in numbers, a minimum length and Turbo's loudness normalisation,
which `VoiceRules` holds, so the facade calls one function with its family's rules.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .audio import AudioError, check_reference
from .conditionals import Conditionals
from .models.s3gen.s3gen import S3GEN_SR, S3_SR, S3Gen
from .models.t3 import T3Cond
from .models.voice_encoder import VoiceEncoder

__all__ = ["VoiceRules", "ORIGINAL_VOICE", "TURBO_VOICE", "NANO_VOICE", "build_conditionals", "normalize_loudness"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceRules:
    """How one family turns a reference clip into a voice. The T3 prompt's token limit is not here: it is the T3
    configuration's `speech_cond_prompt_len` (150 original, 375 Turbo/Nano), passed with the model."""

    label: str  # the model's name in error messages
    t3_prompt_seconds: float  # T3's speech-token prompt comes from this much of the 16 kHz clip
    s3gen_prompt_seconds: float = 10  # S3Gen's embed_ref sees this much of the 24 kHz clip
    min_seconds: float | None = None  # the clip must be strictly longer (Turbo asserts > 5 s)
    loudness_lufs: float | None = None  # normalise the clip to this integrated loudness first


ORIGINAL_VOICE = VoiceRules("Chatterbox", t3_prompt_seconds=6)
TURBO_VOICE = VoiceRules("Turbo", t3_prompt_seconds=15, min_seconds=5.0, loudness_lufs=-27.0)
NANO_VOICE = replace(TURBO_VOICE, label="Nano")


def normalize_loudness(wav: np.ndarray, sample_rate: int, target_lufs: float,
                       source: str = "reference") -> tuple[np.ndarray, float | None]:
    """(clip scaled to `target_lufs`, the gain) or (clip unchanged, None) when its loudness cannot be measured
    (shorter than one 400 ms block) or gives no usable gain (silence measures -inf LUFS): a log line, not an
    error, as in the reference.

    Loudness is pyloudnorm's ITU-R BS.1770-4 integrated loudness. The product stays float32 (the gain is rounded to
    float32 first), which is what the reference computes under NumPy 1.x; under NumPy 2 its float64 gain would
    promote the clip to float64 and break the S3 tokenizer further on.
    """
    import pyloudnorm

    wav = np.asarray(wav, dtype=np.float32)
    try:
        loudness = float(pyloudnorm.Meter(sample_rate).integrated_loudness(wav))
    except ValueError as e:  # pyloudnorm's checks: too short for one block, not float audio
        log.warning("%s: loudness not measured (%s); level left as it is", source, e)
        return wav, None
    with np.errstate(over="ignore", invalid="ignore"):
        gain = float(np.power(10.0, (target_lufs - loudness) / 20.0))
    if not (math.isfinite(gain) and gain > 0.0):
        log.warning("%s: loudness %s LUFS gives no usable gain (silence?); level left as it is", source, loudness)
        return wav, None
    return wav * np.float32(gain), gain


def build_conditionals(wav: np.ndarray, sample_rate: int, *, s3gen: S3Gen, ve: VoiceEncoder, prompt_len: int,
                       rules: VoiceRules, exaggeration: float = 0.5, device: str | torch.device = "cpu",
                       source: str = "reference", trace: dict | None = None) -> Conditionals:
    """A mono clip at any rate -> the voice, as the reference's `prepare_conditionals` builds it for the family.

    Steps: resample to 24 kHz; refuse clips not longer than `rules.min_seconds` and unusable ones
    (`check_reference`: silence, NaN, under 0.5 s; cut at 60 s); normalise loudness if the rules say so; 16 kHz copy
    by librosa (soxr_hq); S3Gen `embed_ref` of the first `s3gen_prompt_seconds` at 24 kHz; T3 prompt = S3 tokens
    of the first `t3_prompt_seconds` at 16 kHz, at most `prompt_len`; voice-encoder embedding of the whole 16 kHz
    copy; `emotion_adv` = exaggeration (Turbo's T3 stores but never reads it). `trace`, if given, receives the
    intermediate `loudness_gain` (None if not applied), `wav_24k` (after normalisation) and `ref_16k`.
    """
    import librosa

    device = torch.device(device)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{source}: expected mono audio, got shape {wav.shape}")
    if sample_rate != S3GEN_SR:
        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=S3GEN_SR)
    seconds = len(wav) / S3GEN_SR
    if rules.min_seconds is not None and not seconds > rules.min_seconds:
        shown = f"{seconds:.1f}"
        if float(shown) >= rules.min_seconds > seconds:  # 4.99 s must not read as 5.0 s
            shown = f"{seconds:.3f}"
        raise AudioError(f"{source}: {rules.label} needs a reference longer than {rules.min_seconds:g} s; "
                         f"got {shown} s")
    wav = check_reference(wav, S3GEN_SR, source)
    gain = None
    if rules.loudness_lufs is not None:
        wav, gain = normalize_loudness(wav, S3GEN_SR, rules.loudness_lufs, source)
    ref_16k = librosa.resample(wav, orig_sr=S3GEN_SR, target_sr=S3_SR)

    gen = s3gen.embed_ref(wav[: int(rules.s3gen_prompt_seconds * S3GEN_SR)], S3GEN_SR)
    prompt_16k = torch.from_numpy(ref_16k[: int(rules.t3_prompt_seconds * S3_SR)]).to(device)
    prompt_tokens, _ = s3gen.tokenizer([prompt_16k], max_len=prompt_len)
    speaker = ve.embed_speaker([ref_16k], S3_SR).to(device)
    t3 = T3Cond(speaker_emb=speaker, cond_prompt_speech_tokens=torch.atleast_2d(prompt_tokens).to(device),
                emotion_adv=torch.full((1, 1, 1), float(exaggeration), device=device))
    if trace is not None:
        trace.update(loudness_gain=gain, wav_24k=wav, ref_16k=ref_16k)
    return Conditionals(t3, gen.as_dict())
