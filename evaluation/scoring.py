"""Scoring paired report texts with every registered metric family (:mod:`evaluation.registry`).

- :func:`score`: corpus values plus a ``"conventions"`` entry;
- :func:`score_per_report`: per-report values;
- :func:`report_statistics`: the sufficient statistics the bootstrap resamples
  (:mod:`evaluation.stats`); `statistics[key].value()` equals `score(...)[key]`;
- :func:`conventions`: the choices behind the numbers, in words and values.

`metrics=` takes family names or single keys (a key selects its whole family); options go to the
families that read them (:func:`evaluation.registry.default_options`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from evaluation import registry
from evaluation.stats import MetricStatistic

__all__ = ["conventions", "report_statistics", "score", "score_per_report"]


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("pass lists of report texts, not single strings")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; "
            "they must pair one to one"
        )
    for text in (*hypotheses, *references):
        if not isinstance(text, str):
            raise TypeError(f"report texts must be strings, got {type(text).__name__}")


def _declared(family: registry.MetricFamily, what: str, got: Iterable[str], declared: Sequence[str],
              exact: bool) -> None:
    got = list(got)
    extra = [k for k in got if k not in declared]
    missing = [k for k in declared if k not in got] if exact else []
    if extra or missing:
        raise registry.MetricSpecError(
            f"metric family {family.name!r} returned {what} it does not declare {extra} "
            f"and lacks declared ones {missing}"
        )


def _scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str] | None,
    options: dict[str, Any],
) -> tuple[dict[str, float], dict[str, list[float]]]:
    _check(hypotheses, references)
    chosen = registry.resolve_options(options)
    corpus: dict[str, float] = {}
    per_report: dict[str, list[float]] = {}
    for family in registry.select(metrics):
        values, rows = family.score(hypotheses, references, chosen)
        _declared(family, "corpus keys", values, family.keys, exact=True)
        _declared(family, "per-report keys", rows, family.per_report, exact=True)
        corpus.update(values)
        per_report.update(rows)
    return corpus, per_report


def conventions(**options: Any) -> dict[str, Any]:
    """The conventions a :func:`score` call with these options uses, in words and values."""
    chosen = registry.resolve_options(options)
    out: dict[str, Any] = {}
    for family in registry.families():
        out.update(family.conventions(chosen))
    return out


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Corpus metrics of paired report texts, plus a ``"conventions"`` entry.

    Options: ``tokenizer`` ("ptb" default, "whitespace", "ptb-java"), ``lowercase`` (RadGraph
    case handling, default True), ``uncertain`` ("negative" default, "positive"), ``extractor``
    (RadGraph backend name, default "rules").
    """
    corpus, _ = _scores(hypotheses, references, metrics, options)
    return {**corpus, "conventions": conventions(**options)}


def score_per_report(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, list[float]]:
    """Per-report values of every metric that has one: {metric: [value per pair]}.

    CheXpert micro/macro F1 are corpus-only; their per-report companion is the example-based F1
    over the 14 and the 5 findings (``chexpert_example_f1_14`` / ``_5``; 1.0 when neither side
    has a finding present).
    """
    _, per_report = _scores(hypotheses, references, metrics, options)
    return per_report


def report_statistics(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Iterable[str] | None = None,
    **options: Any,
) -> dict[str, MetricStatistic]:
    """Sufficient statistics of every corpus metric :func:`score` reports, for the bootstrap.

    `statistics[name].value()` equals `score(...)[name]`.
    """
    _check(hypotheses, references)
    chosen = registry.resolve_options(options)
    out: dict[str, MetricStatistic] = {}
    for family in registry.select(metrics):
        statistics = family.statistics(hypotheses, references, chosen)
        _declared(family, "statistics", statistics, family.keys, exact=False)
        out.update(statistics)
    return out
