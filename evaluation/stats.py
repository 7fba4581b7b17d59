"""Statistics for evaluation scores: bootstrap confidence intervals, permutation tests, detectable differences.

Why these methods: a run has a few to a few hundred samples per model and the scores are skewed and bounded
(WER piles up at 0, latency has a long tail), so normal-theory intervals mislead; BCa bootstrap intervals
(bias-corrected and accelerated, scipy.stats.bootstrap) keep their coverage on small skewed samples where the
plain percentile bootstrap does not, and a sign-flip permutation test assumes no distribution.

The unit is the SENTENCE. Samples of one sentence share its text (its difficulty, and how each model handles
it), so they are not independent: treating 10 sentences x 3 samples as 30 pairs gave p < 0.05 in 29 % of
simulated runs without any true difference. Base and tuned read the same sentences with the same seeds; the
per-pair differences `tuned - base` are averaged within each sentence, and the interval and test run over
those sentence means (a cluster bootstrap and a sign flip per sentence). With one sample per sentence that is
the ordinary paired test.

Every function ignores missing scores (None, NaN, inf): a failed sample has no scores, and counts only in
`ModelSummary.failed`. Everything random is seeded, so the same rows give the same report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from evaluation.results import SampleResult

CONFIDENCE = 0.95
ALPHA = 0.05  # a difference is called at p < ALPHA
POWER = 0.8  # the smallest detectable difference is the one found this often
N_BOOT = 9999  # bootstrap resamples
BOOT_METHOD = "BCa"
EXACT_MAX_PAIRS = 16  # up to here the sign-flip test enumerates all 2**n sign patterns (65,536 at 16)
N_PERM = 10_000  # Monte Carlo permutations above EXACT_MAX_PAIRS
_BATCH_ELEMENTS = 2_000_000  # resampled values held at once (16 MB of float64), whatever the sample size


@dataclass(frozen=True)
class Summary:
    """One metric of one model. All NaN when n == 0; the CI collapses to the value when n == 1."""

    n: int
    mean: float
    median: float
    p90: float
    ci_low: float  # BCa bootstrap CONFIDENCE interval of the mean (over sentences when clustered)
    ci_high: float
    n_sentences: int = 0  # clusters the interval resampled; 0: the values themselves


@dataclass(frozen=True)
class Delta:
    """`tuned - base` for one metric. NaN everywhere when nothing can be compared."""

    n_pairs: int  # pairs used (paired); 0 when unpaired
    mean: float  # mean of the per-sentence mean differences (paired) or difference of the means (unpaired)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided permutation test of "no difference"
    exact: bool  # the p-value enumerates every permutation (no Monte Carlo error)
    paired: bool = True
    n_base: int = 0
    n_tuned: int = 0
    n_sentences: int = 0  # the units of the paired test
    detectable: float = math.nan  # smallest |difference| this run finds with probability POWER; inf: none


@dataclass
class ModelSummary:
    """Scores of one model: `summary["wer"]` is a Summary over its successful samples."""

    model: str
    ok: int
    failed: int
    metrics: dict[str, Summary]

    def __getitem__(self, metric: str) -> Summary:
        return self.metrics[metric]


# ----------------------------------------------------------------------------------------------------------
# Single samples of values
# ----------------------------------------------------------------------------------------------------------
def finite(values: Iterable[float | None]) -> np.ndarray:
    """The finite numbers among `values` as float64; None, NaN and inf are dropped."""
    array = np.array([float(v) for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _bootstrap_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Means of `n_boot` resamples with replacement, drawn in batches so memory stays bounded."""
    n = len(values)
    batch = max(1, _BATCH_ELEMENTS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, batch):
        stop = min(n_boot, start + batch)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def bca_interval(values: np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> tuple[float, float]:
    """BCa CONFIDENCE interval of the mean of `values`; the point itself when there is no spread to resample."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) <= 1e-12 * max(1.0, abs(mean)):
        return mean, mean
    from scipy.stats import bootstrap

    result = bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_boot, method=BOOT_METHOD,
                       vectorized=True, random_state=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined (e.g. 2 values): percentile instead
        low, high = _interval(_bootstrap_means(values, np.random.default_rng(seed), n_boot))
    return low, high


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def describe(values: Iterable[float | None], seed: int = 0, n_boot: int = N_BOOT,
             clusters: Sequence[Hashable] | None = None) -> Summary:
    """Mean, median, 90th percentile and a BCa bootstrap CI of the mean of the finite `values`. With `clusters`
    (one label per value, e.g. its sentence), the CI resamples the cluster means: values of one cluster are
    not independent."""
    values = list(values)
    keep = [i for i, v in enumerate(values) if _is_finite(v)]
    x = np.array([float(values[i]) for i in keep], dtype=float)
    if len(x) == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if clusters is None:
        low, high = bca_interval(x, seed, n_boot)
        n_clusters = 0
    else:
        means = _cluster_means([clusters[i] for i in keep], x)
        low, high = bca_interval(means, seed, n_boot)
        n_clusters = len(means)
    return Summary(len(x), mean, float(np.median(x)), float(np.percentile(x, 90)), low, high, n_clusters)


def _cluster_means(labels: Sequence[Hashable], x: np.ndarray) -> np.ndarray:
    groups: dict[Hashable, list[float]] = {}
    for label, value in zip(labels, x):
        groups.setdefault(label, []).append(float(value))
    return np.array([np.mean(groups[k]) for k in sorted(groups, key=repr)], dtype=float)


def min_sentences(alpha: float = ALPHA) -> int:
    """The fewest sentences whose exact two-sided sign-flip test can reach p < alpha at all (2 / 2**n < alpha):
    6 at 0.05. Fewer sentences can never show a difference, however large."""
    n = 1
    while 2 / 2**n >= alpha:
        n += 1
    return n


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a paired test over `n` sentences finds with probability `power`, given the
    standard deviation `sd` of the per-sentence differences (normal approximation: (z_{1-alpha/2} + z_power)
    sd / sqrt(n)); inf when n is below `min_sentences`."""
    from scipy.stats import norm

    if n < min_sentences(alpha) or not math.isfinite(sd):
        return math.inf
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(n))


def sentences_needed(effect: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Sentences a paired run needs to detect a difference of `effect` standard deviations of the per-sentence
    differences (e.g. 0.5: 32 sentences)."""
    from scipy.stats import norm

    n = math.ceil(((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / effect) ** 2)
    return max(n, min_sentences(alpha))


# ----------------------------------------------------------------------------------------------------------
# Differences
# ----------------------------------------------------------------------------------------------------------
def _at_least(stats: np.ndarray, observed: float) -> int:
    """How many |stats| reach |observed|, with a tolerance so ties are not lost to float rounding."""
    bound = abs(observed) - 1e-9 * max(1.0, abs(observed))
    return int(np.count_nonzero(np.abs(stats) >= bound))


def sign_flip_p(differences: Sequence[float], seed: int = 0, n_perm: int = N_PERM) -> tuple[float, bool]:
    """Two-sided p-value of "mean difference is 0" and whether it is exact.

    Under no effect each pair's difference is as likely positive as negative, so the observed sum is compared
    with the sums under every sign pattern: all 2**n when n <= EXACT_MAX_PAIRS, else `n_perm` random ones
    (p = (1 + hits) / (1 + n_perm), which is never 0).
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan, False
    observed = float(d.sum())
    if n <= EXACT_MAX_PAIRS:
        patterns = np.arange(2**n)[:, None] >> np.arange(n) & 1  # (2**n, n) bits
        return _at_least((2 * patterns - 1) @ d, observed) / 2**n, True
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ELEMENTS // n)
    hits = 0
    for start in range(0, n_perm, batch):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(batch, n_perm - start), n))
        hits += _at_least(signs @ d, observed)
    return (1 + hits) / (1 + n_perm), False


def paired_delta(base: Mapping[Hashable, float | None], tuned: Mapping[Hashable, float | None],
                 seed: int = 0, n_boot: int = N_BOOT) -> Delta:
    """`tuned - base` over the keys finite in both, with the SENTENCE as the unit: a key `(sentence_id, sample)`
    belongs to sentence `sentence_id` (any other key is its own unit). The pair differences are averaged per
    sentence; the mean, its BCa CI and the sign-flip p-value are over those sentence means."""
    keys = sorted((k for k in base if k in tuned and _is_finite(base[k]) and _is_finite(tuned[k])), key=repr)
    d = np.array([float(tuned[k]) - float(base[k]) for k in keys], dtype=float)
    if len(d) == 0:
        return Delta(0, math.nan, math.nan, math.nan, math.nan, False)
    units = _cluster_means([k[0] if isinstance(k, tuple) else k for k in keys], d)
    mean = float(units.mean())
    low, high = bca_interval(units, seed, n_boot)
    p, exact = sign_flip_p(units, seed)
    sd = float(units.std(ddof=1)) if len(units) > 1 else math.nan
    return Delta(len(d), mean, low, high, p, exact, True, len(d), len(d), len(units),
                 detectable_difference(sd, len(units)))


def unpaired_delta(base: Iterable[float | None], tuned: Iterable[float | None], seed: int = 0,
                   n_boot: int = N_BOOT, n_perm: int = N_PERM) -> Delta:
    """Difference of means when samples do not pair (runs on different sentences).

    CI: each side resampled on its own. p: Monte Carlo label-shuffling test of the difference of means.
    """
    a, b = finite(base), finite(tuned)
    if len(a) == 0 or len(b) == 0:
        return Delta(0, math.nan, math.nan, math.nan, math.nan, False, False, len(a), len(b))
    rng = np.random.default_rng(seed)
    mean = float(b.mean() - a.mean())
    low, high = _interval(_bootstrap_means(b, rng, n_boot) - _bootstrap_means(a, rng, n_boot))
    pooled = np.concatenate([a, b])
    batch = max(1, _BATCH_ELEMENTS // len(pooled))
    hits = 0
    for start in range(0, n_perm, batch):
        shuffled = rng.permuted(np.tile(pooled, (min(batch, n_perm - start), 1)), axis=1)
        hits += _at_least(shuffled[:, len(a):].mean(axis=1) - shuffled[:, :len(a)].mean(axis=1), mean)
    return Delta(0, mean, low, high, (1 + hits) / (1 + n_perm), False, False, len(a), len(b))


def _is_finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


# ----------------------------------------------------------------------------------------------------------
# Result rows
# ----------------------------------------------------------------------------------------------------------
def metric_value(row: SampleResult, metric: str) -> float | None:
    """One number per sample: the field itself, or the mean of a per-chunk list (e.g. `chunk_compute`)."""
    value = getattr(row, metric)
    if isinstance(value, (list, tuple)):
        chunks = finite(value)
        return float(chunks.mean()) if len(chunks) else None
    return None if value is None else float(value)


def model_order(models: Iterable[str], sides: Sequence[str] = ("base", "tuned")) -> list[str]:
    """The run's sides in their order (A, then B; "base" and "tuned" by default), then the rest sorted: the order
    every table and plot uses."""
    rank = {side: i for i, side in enumerate(sides)}
    return sorted(set(models), key=lambda m: (rank.get(m, len(rank)), m))


def summarize(rows: Iterable[SampleResult], metric_names: Sequence[str], seed: int = 0,
              n_boot: int = N_BOOT, sides: Sequence[str] = ("base", "tuned")) -> dict[str, ModelSummary]:
    """Per model: ok/failed counts and a Summary per metric over the successful samples only (CI over
    sentences)."""
    rows = list(rows)
    out: dict[str, ModelSummary] = {}
    for model in model_order((r.model for r in rows), sides):
        mine = [r for r in rows if r.model == model]
        ok = [r for r in mine if r.ok]
        sentences = [r.sentence_id for r in ok]
        metrics = {m: describe([metric_value(r, m) for r in ok], seed, n_boot, sentences) for m in metric_names}
        out[model] = ModelSummary(model, len(ok), len(mine) - len(ok), metrics)
    return out


def per_sample(rows: Iterable[SampleResult], model: str, metric: str) -> dict[tuple[str, int], float | None]:
    """`(sentence_id, sample) -> value` of one model's successful samples: the pairing key of base vs tuned."""
    return {(r.sentence_id, r.sample): metric_value(r, metric) for r in rows if r.model == model and r.ok}


def deltas(rows: Iterable[SampleResult], metric_names: Sequence[str], base: str = "base", tuned: str = "tuned",
           paired: bool = True, seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Delta]:
    """`tuned - base` per metric: paired by (sentence_id, sample), or unpaired when `paired` is False."""
    rows = list(rows)
    out: dict[str, Delta] = {}
    for metric in metric_names:
        a, b = per_sample(rows, base, metric), per_sample(rows, tuned, metric)
        if paired:
            out[metric] = paired_delta(a, b, seed, n_boot)
        else:
            out[metric] = unpaired_delta(a.values(), b.values(), seed, n_boot)
    return out
