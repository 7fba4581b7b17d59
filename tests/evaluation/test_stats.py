"""Statistics of the evaluation harness (`evaluation.stats`), on made-up numbers (no model runs here)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import stats
from tests.evaluation.made_up_runs import make_rows


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
