"""One row per generated sample: what `results.jsonl` holds, and how runs are read back (resume, --compare)."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .jsonfiles import parse_json

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
NOT_A_ROW = ("it is not a result row of `python -m evaluation`, and only the last line can be cut short by a kill: "
             "delete that line to go on (its sample is run again)")


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
    _cut_torn_row(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(row), ensure_ascii=False) + "\n")
        f.flush()


def read_results(run_dir: Path) -> list[SampleResult]:
    """Rows of a run; a later row for the same key replaces an earlier one (a failed sample that was retried).

    A last line without its newline is a row cut short by a kill: it is dropped with a warning and its sample is
    run again. Any other line that is not a result row is refused (BrokenFileError names the line): a row that
    only looked right could put wrong numbers in the report.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return []
    *lines, torn = path.read_bytes().split(b"\n")
    if torn.strip():
        log.warning("%s: the last row was cut short (the run was killed while writing it): dropped, its sample "
                    "is run again", path)
    rows: dict[tuple, SampleResult] = {}
    for number, line in enumerate(lines, 1):
        if line.strip():
            row = parse_row(line, f"{path} line {number}")
            rows[row.key] = row
    return list(rows.values())


def parse_row(line: bytes, where: str) -> SampleResult:
    """One line of results.jsonl, its fields of the types SampleResult declares (ints and numbers written by any
    version load; "0.1" for a number does not); fields this version does not know (a newer run's) are ignored."""
    return parse_json(line, SampleResult, where, NOT_A_ROW)


def _cut_torn_row(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline, which `read_results` drops: cut it off
    here too, so the next row starts a line of its own and no broken line is left inside the file."""
    data = path.read_bytes() if path.is_file() else b""
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)
