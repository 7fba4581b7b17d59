"""Perth implicit watermark (Resemble AI): on by default on everything we synthesise, so generated
speech stays identifiable. Needs the `resemble-perth` package."""
from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)


class WatermarkUnavailable(RuntimeError):
    """The Perth watermarker cannot run in this environment."""


@lru_cache(maxsize=1)
def _watermarker():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # perth imports the deprecated pkg_resources
            import perth
    except ImportError as e:
        raise WatermarkUnavailable("watermarking needs the 'resemble-perth' package (pip install resemble-perth); "
                                   "or pass watermark=False") from e
    if perth.PerthImplicitWatermarker is None:  # perth hides its own import failures (torchaudio, setuptools)
        raise WatermarkUnavailable("resemble-perth is installed but its watermarker failed to import (it needs "
                                   "torchaudio and setuptools<81); pass watermark=False to synthesise without it")
    return perth.PerthImplicitWatermarker()


def apply_watermark(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """(samples,) float waveform -> watermarked copy (same length)."""
    out = _watermarker().apply_watermark(np.asarray(wav, dtype=np.float32), sample_rate=sample_rate)
    return np.asarray(out, dtype=np.float32)


def detect_watermark(wav: np.ndarray, sample_rate: int) -> float:
    """Fraction of watermark evidence in [0, 1]: ~1.0 for our output, ~0.0 for clean audio."""
    score = _watermarker().get_watermark(np.asarray(wav, dtype=np.float32), sample_rate=sample_rate, round=False)
    return float(np.mean(score))
