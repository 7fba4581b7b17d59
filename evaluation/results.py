"""One row per generated sample: what `results.jsonl` holds, and how runs are read back (resume, --compare)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

RESULTS_FILE = "results.jsonl"


@dataclass
class SampleResult:
    """Scores of one sample. Scores are None when the sample failed (then `error` says why)."""

    model: str  # "base" | "tuned"
    sentence_id: str  # stable id of the test sentence, e.g. "harvard_en-007"
    sample: int  # 0 .. samples_per_sentence - 1
    seed: int
    language: str
    text: str  # the sentence as given to the model
    wav: str | None = None  # path relative to the run folder, e.g. "samples/base/harvard_en-007_s0.wav"
    error: str | None = None  # exception text, "empty audio", "non-finite audio", ...
    # intelligibility
    hypothesis: str | None = None  # raw ASR output
    reference_norm: str | None = None  # normalised text scored against
    hypothesis_norm: str | None = None
    wer: float | None = None
    cer: float | None = None
    # speaker similarity: cosine in [-1, 1] against the reference clip (the report shows x100)
    similarity: float | None = None  # the independent verification model (`similarity_model`)
    similarity_self: float | None = None  # the model's own voice encoder: biased, secondary
    # quality: DNSMOS predicted MOS, 1-5 (evaluation/quality.py)
    quality: float | None = None  # P.835 overall
    quality_sig: float | None = None  # P.835 speech signal
    quality_bak: float | None = None  # P.835 background
    quality_p808: float | None = None  # P.808 overall
    # streaming
    time_to_first_audio: float | None = None  # seconds from the request to the first chunk
    total_seconds: float | None = None  # wall clock of the whole stream
    audio_seconds: float | None = None
    rtf: float | None = None  # total_seconds / audio_seconds
    chunk_compute: list[float] = field(default_factory=list)  # seconds per chunk
    chunk_arrivals: list[float] = field(default_factory=list)  # seconds from the request to each chunk
    chunk_audio: list[float] = field(default_factory=list)  # seconds of audio in each chunk
    underruns: int | None = None  # stalls a real-time player would have hit after the first chunk
    underrun_seconds: float | None = None  # total silence those stalls cause
    token_cap: bool = False  # T3 stopped at max_new_tokens, not at its stop token: the speech may be cut short
    load_average: float | None = None  # the machine's 1-minute load average when the sample started

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.sentence_id, self.sample

    @property
    def ok(self) -> bool:
        return self.error is None


def append_result(run_dir: Path, row: SampleResult) -> None:
    """Append and flush one row, so an interrupted run loses at most the sample in progress."""
    path = Path(run_dir) / RESULTS_FILE
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if torn:  # the last run died mid-line: end that line, or this row would be glued to it and lost
            f.write("\n")
        f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        f.flush()


def read_results(run_dir: Path) -> list[SampleResult]:
    """Rows of a run; a half-written last line (the run was killed mid-write) is ignored. A later row for the
    same key replaces an earlier one (a failed sample that was retried)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    known = {f.name for f in fields(SampleResult)}
    rows: dict[tuple, SampleResult] = {}
    for line in _lines(path):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        row = SampleResult(**{k: v for k, v in data.items() if k in known})
        rows[row.key] = row
    return list(rows.values())


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line
