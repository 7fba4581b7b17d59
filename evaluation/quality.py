"""Speech quality without a reference recording: DNSMOS, Microsoft's non-intrusive MOS predictors (P.835 signal,
background and overall, and P.808 overall), as Seed-TTS-eval and F5-TTS style reports carry a MOS predictor.

Why DNSMOS: its ONNX models ship inside the `speechmos` wheel and run offline on a CPU (about 0.1 s per second
of audio); UTMOS, the TTS field's other favourite, has no offline weights. DNSMOS was trained on noisy and
enhanced speech, not on TTS: it hears noise, clicks and buzz well and prosody poorly, so read it beside WER and
similarity, never alone. Scores are on the 1-5 MOS scale.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000  # what the DNSMOS models take
MIN_SECONDS = 0.5  # DNSMOS tiles a clip to its 9 s window; below this the score means little


class DnsMos:
    """`score(audio, sample_rate)` -> {"quality": P.835 OVRL, "quality_sig", "quality_bak", "quality_p808"}."""

    name = "DNSMOS P.835 (SIG/BAK/OVRL) and P.808 (speechmos 0.0.1.1, ONNX)"

    def __init__(self) -> None:
        try:
            from speechmos import dnsmos
        except ImportError as e:
            raise ImportError(f"DNSMOS needs the speechmos and onnxruntime packages ({e}): "
                              "pip install speechmos==0.0.1.1 onnxruntime") from None
        self._run = dnsmos.run

    def score(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or len(audio) < MIN_SECONDS * sample_rate:
            raise ValueError(f"DNSMOS needs at least {MIN_SECONDS:g} s of mono audio, got {len(audio) / sample_rate:.2f} s")
        if sample_rate != SAMPLE_RATE:
            import librosa

            audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
        result = self._run(np.clip(audio, -1.0, 1.0).astype(np.float32), sr=SAMPLE_RATE)
        return {"quality": float(result["ovrl_mos"]), "quality_sig": float(result["sig_mos"]),
                "quality_bak": float(result["bak_mos"]), "quality_p808": float(result["p808_mos"])}
