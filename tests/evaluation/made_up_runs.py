"""Made-up result rows of an evaluation run, for the statistics and report tests (no model runs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from evaluation.results import SampleResult

ERROR = "<script>alert(1)</script> out of memory"


def make_rows(run_dir: Path, models=("base", "tuned"), sentences=6, samples=2, seed=0, first_sentence=0,
              fail: str | None = "tuned") -> list[SampleResult]:
    """Plausible numbers: tuned has lower WER and higher similarity than base. WAV files are placeholders."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        better = model != "base"
        for i in range(first_sentence, first_sentence + sentences):
            for k in range(samples):
                wav = f"samples/{model}/sent-{i:02d}_s{k}.wav"
                (run_dir / wav).parent.mkdir(parents=True, exist_ok=True)
                sf.write(run_dir / wav, np.zeros(2400, dtype=np.float32), 24000)
                rows.append(SampleResult(
                    model=model, sentence_id=f"sent-{i:02d}", sample=k, seed=k, language="en",
                    text=f"reference number {i}", wav=wav, hypothesis=f"hypothesis number {i}",
                    wer=float(rng.uniform(0.25, 0.45) - 0.2 * better), cer=float(rng.uniform(0.05, 0.2)),
                    similarity=float(rng.uniform(0.6, 0.8) + 0.05 * better),
                    similarity_self=float(rng.uniform(0.8, 0.9)),
                    time_to_first_audio=float(rng.uniform(0.2, 0.5)), total_seconds=2.0, audio_seconds=3.0,
                    rtf=float(rng.uniform(0.5, 0.8)), underruns=int(rng.integers(0, 2)), underrun_seconds=0.0,
                    chunk_compute=[0.1, 0.2]))
    if fail in models:
        # a failed sample whose scores were (wrongly) left set: they must still be kept out of every mean
        rows.append(SampleResult(model=fail, sentence_id="sent-99", sample=0, seed=0, language="en",
                                 text="never spoken", error=ERROR, wer=50.0, similarity=-1.0))
    return rows
