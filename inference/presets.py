"""The presets: each family's real architecture with deterministic synthetic weights (T3 at toy size).

They exercise every code path offline (tests, demos, CI). Their output is NOT speech: the weights are random, so
nothing they produce says anything about synthesis quality.
"""
from __future__ import annotations

import numpy as np

from .families import FAMILIES, PRESETS, Family
from .models.s3gen.s3gen import S3Gen
from .models.t3 import T3
from .models.voice_encoder import VoiceEncoder
from .synthetic import fill_synthetic

__all__ = ["PRESETS", "WARNING", "synthetic_reference", "synthetic_s3gen", "tiny_t3", "tiny_tokenizer",
           "tiny_voice_encoder"]

WARNING = "preset model: random weights, the output is not intelligible speech"


def _family(multilingual: bool) -> Family:
    return FAMILIES["multilingual" if multilingual else "english"]


def tiny_t3(multilingual: bool = False) -> T3:
    return fill_synthetic(T3(_family(multilingual).tiny_t3, init_weights=False)).eval()


def tiny_voice_encoder() -> VoiceEncoder:
    return fill_synthetic(VoiceEncoder()).eval()


def tiny_tokenizer(multilingual: bool = False):
    return _family(multilingual).tiny_tokenizer()


def synthetic_s3gen(family: Family | None = None) -> S3Gen:
    """S3Gen at full size (it has no smaller configuration) with synthetic weights: ~1 GB, a few seconds.
    Random initialisation is skipped: every weight is overwritten by fill_synthetic anyway."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        s3gen = (family.build_s3gen if family else S3Gen)()
    return fill_synthetic(s3gen).eval()


def synthetic_reference(sample_rate: int, seconds: float = 3.0) -> np.ndarray:
    """A fixed voiced-sounding clip (gliding harmonics plus a little noise) to build the preset's voice."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    noise = np.random.default_rng(0).standard_normal(len(t))
    return (0.25 * wav / np.abs(wav).max() + 0.005 * noise).astype(np.float32)
