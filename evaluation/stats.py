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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NOTES", "MetricStatistic", "bootstrap", "paired_test", "report_statistics"]

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


def _mean_statistic(name: str, values: Sequence[float]) -> MetricStatistic:
    table = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return MetricStatistic(name, table, lambda sums, n: sums[..., 0] / max(n, 1))


def _bleu_statistic(name: str, matrix: np.ndarray, order: int) -> MetricStatistic:
    from evaluation.nlg import bleu_from_sums  # noqa: PLC0415

    return MetricStatistic(name, matrix, lambda sums, n: bleu_from_sums(sums)[..., order - 1])


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)


def _chexpert_statistics(prefix: str, hyp: np.ndarray, ref: np.ndarray) -> list[MetricStatistic]:
    """Micro and macro F1 statistics from boolean presence matrices [reports, findings]."""
    count = hyp.shape[1]
    table = np.concatenate([hyp & ref, hyp & ~ref, ~hyp & ref], axis=1).astype(np.float64)

    def micro(sums: np.ndarray, n: int) -> np.ndarray:
        return _f1(sums[..., :count].sum(-1), sums[..., count : 2 * count].sum(-1), sums[..., 2 * count :].sum(-1))

    def macro(sums: np.ndarray, n: int) -> np.ndarray:
        return _f1(sums[..., :count], sums[..., count : 2 * count], sums[..., 2 * count :]).mean(-1)

    return [
        MetricStatistic(prefix.format(kind="micro"), table, micro),
        MetricStatistic(prefix.format(kind="macro"), table, macro),
    ]


def report_statistics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, MetricStatistic]:
    """Sufficient statistics of every corpus metric :func:`evaluation.score` reports.

    `statistics[name].value()` equals `score(...)[name]`.
    """
    from evaluation import _check, _families, _options  # noqa: PLC0415

    _check(hypotheses, references)
    chosen = _options(options)
    families = _families(metrics)
    out: dict[str, MetricStatistic] = {}
    if "nlg" in families:
        from evaluation.nlg import bleu_statistics, cider_d, rouge_l  # noqa: PLC0415
        from evaluation.tokenize import tokenize  # noqa: PLC0415

        tokens = tokenize(list(hypotheses) + list(references), chosen["tokenizer"])
        hyp_tokens, ref_tokens = tokens[: len(hypotheses)], tokens[len(hypotheses) :]
        matrix = bleu_statistics(hyp_tokens, ref_tokens).as_matrix()
        for order in range(1, 5):
            out[f"bleu{order}"] = _bleu_statistic(f"bleu{order}", matrix, order)
        out["rougeL"] = _mean_statistic("rougeL", rouge_l(hyp_tokens, ref_tokens)[1])
        out["cider"] = _mean_statistic("cider", cider_d(hyp_tokens, ref_tokens)[1])
    if "radgraph" in families:
        from evaluation.radgraph import f1_from_texts  # noqa: PLC0415

        results = f1_from_texts(hypotheses, references, chosen["lowercase"], chosen["extractor"])
        for name, (_, values) in results.items():
            key = f"radgraph_{name}" if name in ("simple", "partial", "complete", "combined") else (
                f"radgraph_{name}_f1"
            )
            out[key] = _mean_statistic(key, values)
    if "chexpert" in families:
        from evaluation.clinical import finding_names, label_many, presence_matrix  # noqa: PLC0415

        names_14, names_5 = finding_names()
        hyp_labels, ref_labels = label_many(hypotheses), label_many(references)
        for policy in ("negative", "positive"):
            for names, size in ((names_14, 14), (names_5, 5)):
                hyp = presence_matrix(hyp_labels, names, policy)
                ref = presence_matrix(ref_labels, names, policy)
                suffixes = [f"_uncertain_{policy}"] + ([""] if policy == chosen["uncertain"] else [])
                for suffix in suffixes:
                    for statistic in _chexpert_statistics(f"chexpert_{{kind}}_f1_{size}{suffix}", hyp, ref):
                        out[statistic.name] = statistic
    return out


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
        raise ValueError("the two systems must be scored on the same studies (same number of reports)")
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
