"""Confidence intervals and paired significance tests for every corpus metric.

Every corpus metric is written as a function of per-report *sufficient statistics* summed over the
reports (a :class:`MetricStatistic`): a mean metric sums its per-report values; corpus BLEU sums
clipped matches, n-gram counts and lengths (so a resample's BLEU is the true corpus BLEU of the
resample, not a mean of sentence BLEU); CheXpert micro / macro F1 sum true positives, false
positives and false negatives per finding. A resample is a row-weight vector, so 500 resamples cost
one matrix product.

CIDEr-D is resampled from per-report values computed with the IDF of the full set (the IDF is not
recomputed inside a resample); this is stated in :data:`NOTES`.

- :func:`bootstrap` : percentile bootstrap CIs (default 500 resamples, seed 0, 95 %).
- :func:`paired_test` : two systems on the same studies: the difference, its paired-bootstrap CI
  and a two-sided approximate-randomization p-value (each study's outputs swapped at random).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.nlg import bleu_from_sums

__all__ = [
    "NOTES",
    "MetricStatistic",
    "bleu_statistic",
    "bootstrap",
    "f1_statistics",
    "mean_statistic",
    "paired_test",
]

NOTES = {
    "bootstrap": "percentile bootstrap over reports; corpus metrics recomputed from summed "
    "per-report sufficient statistics (BLEU from clipped counts and lengths, CheXpert F1 from "
    "TP/FP/FN); CIDEr-D per-report values use the IDF of the full set",
    "paired_test": "delta = system B - system A; CI by paired bootstrap; p-value by two-sided "
    "approximate randomization (per-study swap of the two systems' outputs)",
}


@dataclass(frozen=True)
class MetricStatistic:
    """A corpus metric as `reduce(sum of rows of table)`; `reduce` maps [..., d] to [...]."""

    name: str
    table: np.ndarray  # [reports, d]
    reduce: Callable[[np.ndarray, int], np.ndarray]

    def value(self) -> float:
        """The metric on all reports."""
        return float(self.reduce(self.table.sum(axis=0, keepdims=True), len(self.table))[0])

    def resampled(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row-weight vector ([resamples, reports] -> [resamples])."""
        return np.asarray(self.reduce(weights @ self.table, len(self.table)), dtype=np.float64)


def mean_statistic(name: str, values: Sequence[float]) -> MetricStatistic:
    """A metric that is the mean of per-report values."""
    table = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return MetricStatistic(name, table, lambda sums, n: sums[..., 0] / max(n, 1))


def bleu_statistic(name: str, matrix: np.ndarray, order: int) -> MetricStatistic:
    """Corpus BLEU-`order` from per-report BLEU statistics (`BleuStatistics.as_matrix()` rows)."""
    return MetricStatistic(name, matrix, lambda sums, n: bleu_from_sums(sums)[..., order - 1])


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)


def f1_statistics(
    micro: str, macro: str, hyp: np.ndarray, ref: np.ndarray
) -> list[MetricStatistic]:
    """Micro and macro F1 (named `micro`, `macro`) from boolean presence matrices
    [reports, findings]."""
    count = hyp.shape[1]
    table = np.concatenate([hyp & ref, hyp & ~ref, ~hyp & ref], axis=1).astype(np.float64)

    def micro_f1(sums: np.ndarray, n: int) -> np.ndarray:
        return _f1(sums[..., :count].sum(-1), sums[..., count : 2 * count].sum(-1),
                   sums[..., 2 * count :].sum(-1))

    def macro_f1(sums: np.ndarray, n: int) -> np.ndarray:
        return _f1(sums[..., :count], sums[..., count : 2 * count], sums[..., 2 * count :]).mean(-1)

    return [MetricStatistic(micro, table, micro_f1), MetricStatistic(macro, table, macro_f1)]


def _resample_weights(reports: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, reports] multiplicities of bootstrap samples drawn with replacement."""
    draws = rng.integers(0, reports, size=(resamples, reports))
    weights = np.zeros((resamples, reports), dtype=np.float64)
    np.add.at(weights, (np.repeat(np.arange(resamples), reports), draws.ravel()), 1.0)
    return weights


def bootstrap(
    statistics: Mapping[str, MetricStatistic],
    resamples: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """{metric: {value, low, high, std, resamples, level, seed}} by the percentile bootstrap."""
    if not statistics:
        return {}
    reports = len(next(iter(statistics.values())).table)
    if reports == 0:
        raise ValueError("cannot bootstrap an empty set of reports")
    weights = _resample_weights(reports, resamples, np.random.default_rng(seed))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, statistic in statistics.items():
        samples = statistic.resampled(weights)
        out[name] = {
            "value": statistic.value(),
            "low": float(np.percentile(samples, tail)),
            "high": float(np.percentile(samples, 100 - tail)),
            "std": float(samples.std(ddof=1)) if resamples > 1 else 0.0,
            "resamples": resamples,
            "level": level,
            "seed": seed,
        }
    return out


def paired_test(
    system_a: Mapping[str, MetricStatistic],
    system_b: Mapping[str, MetricStatistic],
    resamples: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Compare two systems scored on the same studies in the same order (B minus A).

    Returns {metric: {a, b, delta, low, high, p_value}} for the metrics both have.
    """
    names = [name for name in system_a if name in system_b]
    if not names:
        return {}
    reports = len(system_a[names[0]].table)
    if any(len(system_b[n].table) != reports for n in names):
        raise ValueError(
            "the two systems must be scored on the same studies (same number of reports)"
        )
    rng = np.random.default_rng(seed)
    weights = _resample_weights(reports, resamples, rng)
    swaps = (rng.random((resamples, reports)) < 0.5).astype(np.float64)
    tail = (1 - level) / 2 * 100
    out = {}
    for name in names:
        a, b = system_a[name], system_b[name]
        if a.table.shape != b.table.shape:
            raise ValueError(f"metric {name!r} has different statistics shapes in the two systems")
        delta = b.value() - a.value()
        boot = b.resampled(weights) - a.resampled(weights)
        # Approximate randomization: swap each study's rows between the systems with p = 1/2.
        moved = swaps @ (b.table - a.table)
        swapped_a = a.table.sum(axis=0) + moved
        swapped_b = b.table.sum(axis=0) - moved
        permuted = a.reduce(swapped_b, reports) - a.reduce(swapped_a, reports)
        extreme = np.sum(np.abs(permuted) >= abs(delta) - 1e-12)
        out[name] = {
            "a": a.value(),
            "b": b.value(),
            "delta": delta,
            "low": float(np.percentile(boot, tail)),
            "high": float(np.percentile(boot, 100 - tail)),
            "p_value": float((extreme + 1) / (resamples + 1)),
            "resamples": resamples,
            "seed": seed,
        }
    return out
