"""Statistics and report of the evaluation harness, on made-up numbers (no model runs here)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from evaluation import stats
from evaluation.report import (COMPARE_HTML, COMPARE_MD, SELF_SIMILARITY_NOTE, SYNTHETIC_WARNING, compare,
                               read_run_info, write_report, write_run_info)
from evaluation.results import RESULTS_FILE, SampleResult, append_result, read_results

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
# stats
# ----------------------------------------------------------------------------------------------------------
def test_describe_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(1)
    small = stats.describe(rng.normal(0.3, 0.1, 20))
    large = stats.describe(rng.normal(0.3, 0.1, 800))
    for s in (small, large):
        assert s.ci_low < s.mean < s.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 3


def test_describe_is_seeded_and_skips_missing():
    values = [0.1, None, math.nan, 0.3, math.inf, 0.5]
    s = stats.describe(values)
    assert s.n == 3 and s.mean == pytest.approx(0.3) and s.median == pytest.approx(0.3)
    assert s == stats.describe(values)
    assert stats.describe([None]).n == 0 and math.isnan(stats.describe([]).mean)
    one = stats.describe([2.0])
    assert (one.ci_low, one.ci_high) == (2.0, 2.0)


def test_paired_shift_gives_small_p():
    rng = np.random.default_rng(2)
    base = {(f"s{i}", 0): float(v) for i, v in enumerate(rng.uniform(0.1, 0.5, 40))}
    tuned = {k: v - 0.05 + float(rng.normal(0, 0.01)) for k, v in base.items()}
    d = stats.paired_delta(base, tuned)
    assert d.n_pairs == 40 and not d.exact
    assert d.mean == pytest.approx(-0.05, abs=0.01)
    assert d.ci_high < 0 and d.p_value < 0.001


def test_paired_no_shift_gives_large_p():
    symmetric = stats.paired_delta({i: 0.0 for i in range(30)}, {i: (0.1 if i % 2 else -0.1) for i in range(30)})
    assert symmetric.mean == pytest.approx(0.0, abs=1e-12) and symmetric.p_value > 0.99
    rng = np.random.default_rng(3)
    base = {i: float(v) for i, v in enumerate(rng.uniform(0, 1, 40))}
    noisy = stats.paired_delta(base, {k: v + float(rng.normal(0, 0.05)) for k, v in base.items()})
    assert noisy.ci_low < 0 < noisy.ci_high and noisy.p_value > 0.2


def test_exact_permutation_p_on_known_case():
    # differences 1, 2, 3: of the 8 sign patterns only +++ and --- reach |sum| = 6, so p = 2/8
    base = {"a": 0.0, "b": 0.0, "c": 0.0, "only_base": 1.0, "missing": 0.0}
    tuned = {"a": 1.0, "b": 2.0, "c": 3.0, "missing": None, "only_tuned": 5.0}
    d = stats.paired_delta(base, tuned)
    assert d.n_pairs == 3 and d.exact and d.p_value == 0.25 and d.mean == pytest.approx(2.0)
    assert stats.sign_flip_p([1.0] * 4) == (0.125, True)
    assert math.isnan(stats.paired_delta({}, {}).p_value)


def test_monte_carlo_p_is_seeded_and_never_zero():
    d = np.full(30, 0.5)
    p, exact = stats.sign_flip_p(d, seed=5)
    assert not exact and p == pytest.approx(1 / (1 + stats.N_PERM))
    rng = np.random.default_rng(4)
    noisy = rng.normal(0.1, 1, 40)
    assert stats.sign_flip_p(noisy, seed=7) == stats.sign_flip_p(noisy, seed=7)


def simulated_run(rng, sentences: int, samples: int, effect: float = 0.0) -> tuple[dict, dict]:
    """WER-like scores of base and tuned on `sentences` x `samples`: each sentence has its own difficulty AND its
    own (zero-mean) preference for one model, which every sample of that sentence shares; `effect` is the true
    mean difference."""
    base, tuned = {}, {}
    for i in range(sentences):
        difficulty, preference = rng.normal(0.3, 0.1), rng.normal(0, 0.05)
        for k in range(samples):
            base[(f"s{i}", k)] = difficulty + rng.normal(0, 0.02)
            tuned[(f"s{i}", k)] = difficulty + preference + effect + rng.normal(0, 0.02)
    return base, tuned


def test_false_positives_near_five_percent_when_samples_share_a_sentence():
    """10 sentences x 3 samples, no true difference: the sentence-level test errs about 5 % of the time and its
    95 % interval covers 0 about 95 % of the time; treating the 30 samples as independent pairs errs far more
    often (that was the old behaviour: 29 %)."""
    rng = np.random.default_rng(11)
    runs = 400
    positives = covered = naive_positives = 0
    for _ in range(runs):
        base, tuned = simulated_run(rng, 10, 3)
        d = stats.paired_delta(base, tuned, n_boot=999)
        positives += d.p_value < 0.05
        covered += d.ci_low <= 0 <= d.ci_high
        as_pairs = stats.paired_delta({str(k): v for k, v in base.items()}, {str(k): v for k, v in tuned.items()},
                                      n_boot=99)
        naive_positives += as_pairs.p_value < 0.05
    assert 0.02 <= positives / runs <= 0.085, positives / runs
    assert 0.89 <= covered / runs <= 0.98, covered / runs
    assert naive_positives / runs > 0.15, naive_positives / runs


def test_detectable_difference_and_sentences_needed():
    assert stats.min_sentences() == 6  # 5 sentences: the smallest exact p is 2/32 = 0.0625
    five = stats.paired_delta(*simulated_run(np.random.default_rng(1), 5, 1, effect=-0.5))
    assert five.p_value >= 0.0625 and five.detectable == math.inf  # a huge effect, and still undecidable
    assert stats.sentences_needed(0.5) == 32 and stats.sentences_needed(2.0) == 6
    # a true effect of the detectable size is found about POWER of the time
    rng = np.random.default_rng(5)
    sd_units = 0.05  # sd of per-sentence differences with 1 sample: preference 0.05 (+ noise 0.028)
    mde = stats.detectable_difference(np.hypot(sd_units, 0.02 * np.sqrt(2)), 30)
    found = sum(stats.paired_delta(*simulated_run(rng, 30, 1, effect=-mde), n_boot=99).p_value < 0.05
                for _ in range(200))
    assert 0.7 <= found / 200 <= 0.9, found / 200


def test_unpaired_delta():
    d = stats.unpaired_delta([0.1, 0.2, 0.3, 0.2] * 5, [0.5, 0.6, 0.7, 0.6] * 5)
    assert not d.paired and (d.n_base, d.n_tuned) == (20, 20)
    assert d.mean == pytest.approx(0.4) and d.ci_low > 0 and d.p_value < 0.001


def test_summarize_excludes_failed_rows(tmp_path):
    rows = make_rows(tmp_path)
    summary = stats.summarize(rows, ["wer", "similarity", "chunk_compute"])
    assert list(summary) == ["base", "tuned"]
    assert (summary["tuned"].ok, summary["tuned"].failed) == (12, 1)
    assert (summary["base"].ok, summary["base"].failed) == (12, 0)
    ok_wer = [r.wer for r in rows if r.model == "tuned" and r.ok]
    assert summary["tuned"]["wer"].mean == pytest.approx(np.mean(ok_wer))
    assert summary["tuned"]["chunk_compute"].mean == pytest.approx(0.15)
    found = stats.deltas(rows, ["wer", "similarity"])
    assert found["wer"].n_pairs == 12 and found["wer"].mean < 0 < found["similarity"].mean


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
