"""The report of the evaluation harness (report.md, report.html, --compare), on made-up numbers (no model
runs here)."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from evaluation.report import (COMPARE_HTML, COMPARE_MD, SELF_SIMILARITY_NOTE, SYNTHETIC_WARNING, compare,
                               read_run_info, write_report, write_run_info)
from evaluation.results import RESULTS_FILE, SampleResult, append_result, read_results
from tests.evaluation.made_up_runs import make_rows

SUMMARY_COLUMNS = ("WER", "CER", "speaker similarity", "time to first audio (s)", "real-time factor",
                   "underruns", "samples ok/failed")
INFO = {
    "config": {"samples_per_sentence": 2, "language": "en"},
    "environment": {"device": "cpu", "torch": "2.x"},
    "models": {"base": "base model (test numbers)", "tuned": "tuned model (test numbers)"},
    "synthetic": True,
    "asr_model": "test-asr",
    "similarity_model": "test-verifier",
}


@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    rows = make_rows(run)
    md, page = write_report(run, rows, INFO)
    return run, rows, md.read_text(encoding="utf-8"), page.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def one_model_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run_base")
    rows = make_rows(run, models=("base",), fail=None)
    md, _ = write_report(run, rows, {**INFO, "synthetic": False})
    return md.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# report.md / report.html
# ----------------------------------------------------------------------------------------------------------
def _summary_lines(md: str) -> list[str]:
    """The summary table's lines: header first."""
    section = md[md.index("## Summary"):].splitlines()
    return [line for line in section[1:section.index("", 2)] if line.startswith("| ")]


def test_report_has_required_columns_and_warning(two_model_run, one_model_run):
    _, _, md, page = two_model_run
    header = _summary_lines(md)[0]
    for column in SUMMARY_COLUMNS:
        assert f"| {column} |" in header
    assert md.index(SYNTHETIC_WARNING) < md.index("## Summary")
    assert SYNTHETIC_WARNING in page
    assert SYNTHETIC_WARNING not in one_model_run
    assert SELF_SIMILARITY_NOTE in md
    assert "test-asr" in md and "test-verifier" in md


def test_delta_table_only_with_two_models(two_model_run, one_model_run):
    _, _, md, _ = two_model_run
    assert "## tuned vs base" in md and "delta (tuned − base)" in md
    wer_line = next(line for line in md.splitlines() if line.startswith("| WER | lower |"))
    assert wer_line.endswith("| tuned better |")
    assert "vs base" not in one_model_run and "delta (" not in one_model_run


def test_failed_rows_listed_and_excluded(two_model_run):
    _, rows, md, page = two_model_run
    assert "\\<script>alert(1)\\</script> out of memory" in md
    assert re.search(r"(?<!\\)<script", md) is None
    assert "&lt;script&gt;alert(1)&lt;/script&gt; out of memory" in page
    assert "<script" not in page
    tuned = next(line for line in _summary_lines(md) if line.startswith("| tuned |"))
    assert tuned.endswith("| 12/1 |")
    mean = np.mean([r.wer for r in rows if r.model == "tuned" and r.ok])
    assert f"| {mean:.3f} [" in tuned and "50.000" not in tuned


def test_plots_written_and_linked(two_model_run):
    run, _, md, _ = two_model_run
    for name in ("means", "latency", "wer_per_sentence", "similarity", "pairs"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"](plots/{name}.png)" in md


def test_html_is_self_contained(two_model_run):
    _, _, _, page = two_model_run
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    for src in re.findall(r'src="([^"]+)"', page):
        assert src.startswith("data:") or "://" not in src
    assert "<link" not in page


def test_worst_sample_links_exist(two_model_run):
    run, _, md, page = two_model_run
    links = re.findall(r"\]\(([^)]+\.wav)\)", md)
    worst_section = md[md.index("## Worst samples"):]
    assert len(re.findall(r"\]\(([^)]+\.wav)\)", worst_section)) == 4 * 5  # 2 models x (WER, similarity) x 5
    assert len(links) == 4 * 5 + 24  # and every sample once in the per-sentence table
    for link in links + re.findall(r'href="([^"]+\.wav)"', page):
        assert not Path(unquote(link)).is_absolute() and (run / unquote(link)).is_file()
    worst = max((r for r in two_model_run[1] if r.model == "base" and r.ok), key=lambda r: r.wer)
    section = md[md.index("### base: highest WER"):]
    first = next(line for line in section.splitlines() if line.startswith("| sent-"))
    assert first.startswith(f"| {worst.sentence_id} | {worst.sample} |") and worst.hypothesis in first


def test_run_info_round_trip(tmp_path):
    assert read_run_info(tmp_path) == {}
    write_run_info(tmp_path, INFO)
    assert read_run_info(tmp_path) == INFO


# ----------------------------------------------------------------------------------------------------------
# --compare
# ----------------------------------------------------------------------------------------------------------
def _saved_run(folder: Path, config: dict | None = None, **kwargs) -> Path:
    folder.mkdir()
    for row in make_rows(folder, **kwargs):
        append_result(folder, row)
    write_run_info(folder, {**INFO, "synthetic": False, **({"config": config} if config else {})})
    return folder


def test_compare_two_runs(tmp_path):
    a = _saved_run(tmp_path / "run_a", seed=1)
    b = _saved_run(tmp_path / "run_b", seed=2, fail=None)
    out = tmp_path / "cmp"
    md_path, html_path = compare(a, b, out)
    assert (md_path.name, html_path.name) == (COMPARE_MD, COMPARE_HTML)
    md = md_path.read_text(encoding="utf-8")
    assert "## B/base vs A/base" in md and "## B/tuned vs A/tuned" in md and "Paired by" in md
    for label in ("A/base", "A/tuned", "B/base", "B/tuned"):
        assert f"| {label} |" in md
    for link in re.findall(r"\]\(([^)]+\.wav)\)", md):
        assert (out / unquote(link)).is_file()
    assert len(read_results(a)) == 25  # only read: nothing appended or rewritten
    assert SYNTHETIC_WARNING not in md


def test_compare_unpaired_when_sentences_differ(tmp_path):
    a = _saved_run(tmp_path / "run_a", models=("base",), fail=None)
    b = _saved_run(tmp_path / "run_b", models=("base",), first_sentence=50, fail=None)
    md = compare(a, b, tmp_path / "cmp")[0].read_text(encoding="utf-8")
    assert "Unpaired" in md and "samples (A/base / B/base)" in md


def test_compare_lists_setting_differences_and_pairs_only_scored_samples(tmp_path):
    a = _saved_run(tmp_path / "run_a", models=("base",), sentences=8, samples=1, fail=None,
                   config={"language": "en", "stream": {"chunk_size": 25, "temperature": 0.8}})
    b = _saved_run(tmp_path / "run_b", models=("base",), sentences=8, samples=1, fail=None,
                   config={"language": "en", "stream": {"chunk_size": 10, "temperature": 0.8}})
    rows = read_results(b)  # three of B's samples failed: they share keys with A but cannot pair
    for row in rows[:3]:
        append_result(b, SampleResult(**{**row.__dict__, "error": "boom", "wer": None, "similarity": None}))
    md = compare(a, b, tmp_path / "cmp")[0].read_text(encoding="utf-8")
    assert "| stream.chunk_size | 25 | 10 |" in md and "stream.temperature |" not in md
    assert "Paired by (sentence_id, sample): 5 shared sample(s)" in md
    assert "| WER | lower | 5 |" in md


def test_compare_errors_clearly_without_results(tmp_path):
    good = _saved_run(tmp_path / "good", models=("base",), sentences=2, fail=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"empty: no {RESULTS_FILE}"):
        compare(good, empty, tmp_path / "cmp")
    (empty / RESULTS_FILE).write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no readable result rows"):
        compare(empty, good, tmp_path / "cmp")


def test_report_survives_a_model_with_no_scores(tmp_path):
    rows = make_rows(tmp_path, models=("base",), sentences=2, fail=None)
    rows += [SampleResult(model="tuned", sentence_id="sent-00", sample=k, seed=k, language="en", text="x",
                          error="empty audio") for k in range(2)]
    md = write_report(tmp_path, rows, {})[0].read_text(encoding="utf-8")
    tuned = next(line for line in _summary_lines(md) if line.startswith("| tuned |"))
    assert tuned == "| tuned | – | – | – | – | – | – | – | – | 0/2 |"
    assert "| WER | lower | 0 | – | – | – | – |" in md
    assert write_report(tmp_path / "samples", [], {})[0].is_file()


def test_word_diff_marks_and_caps_a_looping_transcript():
    from evaluation.report import MAX_SHOWN_WORDS, Marked, word_diff

    parts = word_diff("the cat sat on the mat", "the bat sat on mat").parts
    assert parts == ("the", Marked("bat", "sub"), "sat", "on", Marked("the", "del"), "mat")
    assert word_diff("hello world", "hello big world").parts == ("hello", Marked("big", "ins"), "world")
    looping = word_diff("hello there", " ".join(["i am sorry"] * 100)).parts
    assert len(looping) == MAX_SHOWN_WORDS + 1 and looping[-1] == f"… (+{300 - MAX_SHOWN_WORDS} words)"
