"""The metric registry: one spec per metric family, read by everything that names a metric.

A :class:`MetricFamily` declares its corpus metrics (:class:`Metric`: key, short label,
description of the variant, and whether it is a headline metric, a summary metric and bounded in
[0, 1]), its per-report keys (and which of them report.html shows beside an example), its scoring
options with their defaults, a function giving corpus and per-report values, a function giving
bootstrap statistics (:mod:`evaluation.stats`), its conventions and its colour in plots.

Readers: :func:`evaluation.score`, :func:`evaluation.score_per_report`,
:func:`evaluation.report_statistics` and :func:`evaluation.conventions`; `radreport evaluate`
(results.json, report.html, the console table: :func:`headline_keys`, descriptions, colours); the
fine-tuning run's validation and held-out logs, `radreport finetune` and `finetune.plot`
(:func:`summary_keys`, labels); the run's `checkpoint.best_metric` (:func:`metric`). A key that no
family declares raises :class:`UnknownMetricError`; a family whose functions return undeclared
keys raises :class:`MetricSpecError`.

Built in, in this order: ``nlg`` (:mod:`evaluation.nlg`), ``radgraph``
(:mod:`evaluation.radgraph`), ``chexpert`` (:mod:`evaluation.clinical`).

Adding a metric is one :func:`register` call plus its function. A metric that is the mean of a
per-report value needs only that value:

>>> def exact(hypotheses, references, options):
...     return [float(h == r) for h, r in zip(hypotheses, references, strict=True)]
>>> register(MetricFamily.mean_of("exact", Metric("exact_match", "exact match",
...                                                "1 when the texts are identical"), exact))
>>> import evaluation
>>> evaluation.score(["No effusion.", "Clear."], ["No effusion.", "Edema."], metrics=["exact"])
{'exact_match': 0.5, 'conventions': {...}}
>>> unregister("exact").name
'exact'

A family whose corpus value is not a mean of per-report values (corpus BLEU, micro F1) gives its
own `score` and `statistics` functions, as the built-in families below do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation import clinical, nlg, radgraph
from evaluation.stats import MetricStatistic, bleu_statistic, f1_statistics, mean_statistic
from evaluation.tokenize import tokenize

__all__ = [
    "Metric",
    "MetricFamily",
    "MetricSpecError",
    "UnknownMetricError",
    "default_options",
    "families",
    "family",
    "family_of",
    "headline_keys",
    "metric",
    "register",
    "resolve_options",
    "select",
    "summarize",
    "summary_keys",
    "unregister",
]

Texts = Sequence[str]
Options = Mapping[str, Any]
#: ({corpus key: value}, {per-report key: [value per pair]})
FamilyScores = tuple[dict[str, float], dict[str, list[float]]]
Statistics = dict[str, MetricStatistic]


class UnknownMetricError(ValueError):
    """A requested metric or family name does not exist."""


class MetricSpecError(ValueError):
    """A metric family's spec is inconsistent: a key declared twice, an undeclared key returned."""


@dataclass(frozen=True)
class Metric:
    """One corpus metric of a family.

    `description` names the variant (it may use the scoring options, e.g. ``{uncertain}``);
    `label` is the short name for plots. A headline metric comes first in results.json and is
    shown in the tables of `radreport evaluate` and report.html's CI plot (variants such as
    ``chexpert_micro_f1_5_uncertain_positive`` are not headline); a summary metric is also in the
    one-line summaries of training logs and `radreport finetune` and, when bounded, on the
    learning curve; a bounded metric lies in [0, 1] (CIDEr-D does not).
    """

    key: str
    label: str
    description: str
    headline: bool = True
    bounded: bool = True
    summary: bool = False

    def describe(self, options: Options) -> str:
        """The description with the scoring options filled in."""
        return self.description.format(**options)


@dataclass(frozen=True)
class MetricFamily:
    """A family of metrics computed together from paired texts, and everything said about them.

    `score(hypotheses, references, options)` returns ({key: corpus value} for every key of
    `metrics`, {key: [value per pair]} for every key of `per_report`); `statistics(...)` returns
    {key: :class:`evaluation.stats.MetricStatistic`} whose `value()` equals the corpus value;
    `conventions(options)` returns the entries this family adds to a result's ``"conventions"``.
    `options` are the scoring options the family reads, with their defaults. `examples` are the
    per-report keys report.html prints beside each of its worst examples; `colour` is the
    family's colour in plots.
    """

    name: str
    metrics: tuple[Metric, ...]
    per_report: tuple[str, ...]
    score: Callable[[Texts, Texts, Options], FamilyScores]
    statistics: Callable[[Texts, Texts, Options], Statistics]
    options: Mapping[str, Any] = field(default_factory=dict)
    conventions: Callable[[Options], dict[str, Any]] = lambda options: {}
    examples: tuple[str, ...] = ()
    colour: str = "#7f7f7f"

    @property
    def keys(self) -> tuple[str, ...]:
        """Every corpus key, in result order."""
        return tuple(m.key for m in self.metrics)

    @classmethod
    def mean_of(
        cls,
        name: str,
        metric: Metric,
        per_report: Callable[[Texts, Texts, Options], Sequence[float]],
        **spec: Any,
    ) -> MetricFamily:
        """A one-metric family whose corpus value is the mean of `per_report(h, r, options)`."""

        def values(hypotheses: Texts, references: Texts, options: Options) -> list[float]:
            return [float(v) for v in per_report(hypotheses, references, options)]

        def score(hypotheses: Texts, references: Texts, options: Options) -> FamilyScores:
            scores = values(hypotheses, references, options)
            return {metric.key: float(np.mean(scores)) if scores else 0.0}, {metric.key: scores}

        def statistics(hypotheses: Texts, references: Texts, options: Options) -> Statistics:
            return {metric.key: mean_statistic(metric.key, values(hypotheses, references, options))}

        return cls(name, (metric,), (metric.key,), score, statistics, **spec)

    def check(self) -> None:
        """Raise :class:`MetricSpecError` when the spec contradicts itself."""
        keys = [*self.keys, *(k for k in self.per_report if k not in self.keys)]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise MetricSpecError(f"metric family {self.name!r} declares {twice} twice")
        unknown = [k for k in self.examples if k not in self.per_report]
        if unknown:
            raise MetricSpecError(
                f"metric family {self.name!r} shows per-report keys {unknown} beside examples "
                f"but its per-report keys are {list(self.per_report)}"
            )


# ---------------------------------------------------------------------------------------------
# The registry

_FAMILIES: dict[str, MetricFamily] = {}
_KEYS: dict[str, MetricFamily] = {}  # every corpus and per-report key -> its family
_METRICS: dict[str, Metric] = {}


def register(family: MetricFamily) -> None:
    """Add a metric family; its name, keys and option defaults must not clash with another's."""
    family.check()
    if family.name in _FAMILIES or family.name in _KEYS:
        raise MetricSpecError(f"a metric family or key named {family.name!r} is registered already")
    keys = [*family.keys, *(k for k in family.per_report if k not in family.keys)]
    for key in keys:
        if key in _KEYS or key in _FAMILIES:
            raise MetricSpecError(
                f"metric key {key!r} of family {family.name!r} is declared twice "
                "(or names a family)"
            )
    defaults = default_options()
    for option, value in family.options.items():
        if option in defaults and defaults[option] != value:
            raise MetricSpecError(
                f"option {option!r} of family {family.name!r} defaults to {value!r}, another "
                f"family's to {defaults[option]!r}"
            )
    _FAMILIES[family.name] = family
    _KEYS.update(dict.fromkeys(keys, family))
    _METRICS.update({m.key: m for m in family.metrics})


def unregister(name: str) -> MetricFamily:
    """Remove a metric family (by name) and return it."""
    removed = family(name)
    del _FAMILIES[name]
    for key in [k for k, owner in _KEYS.items() if owner is removed]:
        del _KEYS[key]
        _METRICS.pop(key, None)
    return removed


def families() -> tuple[MetricFamily, ...]:
    """The registered families, in registration order."""
    return tuple(_FAMILIES.values())


def _unknown(name: str) -> UnknownMetricError:
    return UnknownMetricError(
        f"unknown metric {name!r}; families are {sorted(_FAMILIES)}, keys are {headline_keys()} "
        "(with their variants, see evaluation.registry)"
    )


def family(name: str) -> MetricFamily:
    """The family registered under `name`."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise _unknown(name) from None


def family_of(key: str) -> MetricFamily:
    """The family that computes the corpus or per-report metric `key`."""
    try:
        return _KEYS[key]
    except KeyError:
        raise _unknown(key) from None


def metric(key: str) -> Metric:
    """The spec of the corpus metric `key`."""
    try:
        return _METRICS[key]
    except KeyError:
        raise _unknown(key) from None


def headline_keys() -> list[str]:
    """The headline corpus keys of every family, in result order."""
    return [m.key for f in _FAMILIES.values() for m in f.metrics if m.headline]


def summary_keys() -> list[str]:
    """The corpus keys of one-line summaries (training logs, `radreport finetune`, learning
    curves)."""
    return [m.key for f in _FAMILIES.values() for m in f.metrics if m.summary]


def summarize(scores: Mapping[str, Any]) -> str:
    """``key=value`` of every summary metric that `scores` holds, on one line.

    >>> summarize({"bleu4": 0.25, "radgraph_partial": 0.5, "radgraph_simple": 0.6})
    'bleu4=0.250 radgraph_partial=0.500'
    """
    return " ".join(f"{key}={scores[key]:.3f}" for key in summary_keys() if key in scores)


def select(metrics: Iterable[str] | None = None) -> list[MetricFamily]:
    """The families that compute the named families or keys (all when None), in registry order."""
    if metrics is None:
        return list(_FAMILIES.values())
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = {name if name in _FAMILIES else family_of(name).name for name in metrics}
    return [f for f in _FAMILIES.values() if f.name in chosen]


def default_options() -> dict[str, Any]:
    """Every scoring option with its default."""
    return {k: v for f in _FAMILIES.values() for k, v in f.options.items()}


def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults updated with `options`; an option no family reads is a TypeError."""
    defaults = default_options()
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown scoring options {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **options}


# ---------------------------------------------------------------------------------------------
# NLG: BLEU-1..4, ROUGE-L, CIDEr-D (pycocoevalcap 1.2 definitions)


def _nlg_score(hypotheses: Texts, references: Texts, options: Options) -> FamilyScores:
    corpus, per_report = nlg.nlg_scores(hypotheses, references, tokenizer=options["tokenizer"])
    return dict(corpus), {k: [float(x) for x in v] for k, v in per_report.items()}


def _nlg_statistics(hypotheses: Texts, references: Texts, options: Options) -> Statistics:
    tokens = tokenize(list(hypotheses) + list(references), options["tokenizer"])
    hyp_tokens, ref_tokens = tokens[: len(hypotheses)], tokens[len(hypotheses) :]
    matrix = nlg.bleu_statistics(hyp_tokens, ref_tokens).as_matrix()
    out = {f"bleu{n}": bleu_statistic(f"bleu{n}", matrix, n) for n in range(1, nlg.MAX_N + 1)}
    out["rougeL"] = mean_statistic("rougeL", nlg.rouge_l(hyp_tokens, ref_tokens)[1])
    out["cider"] = mean_statistic("cider", nlg.cider_d(hyp_tokens, ref_tokens)[1])
    return out


def _nlg_conventions(options: Options) -> dict[str, Any]:
    return {
        "tokenizer": options["tokenizer"],
        "tokenizer_note": "NLG texts tokenized with evaluation.tokenize (ptb: Stanford PTB rules, "
        "lower-cased, pycocoevalcap punctuation removed); scorers equal to pycocoevalcap 1.2",
        "cider_note": "CIDEr-D IDF is computed from the references of the scored set",
        "meteor": "not computed (pycocoevalcap's METEOR jar cannot be reproduced exactly)",
    }


_BLEU = "pycocoevalcap 1.2 corpus BLEU (closest reference length)"
NLG = MetricFamily(
    name="nlg",
    metrics=(
        *(Metric(f"bleu{n}", f"BLEU-{n}", _BLEU, summary=n == nlg.MAX_N)
          for n in range(1, nlg.MAX_N + 1)),
        Metric("rougeL", "ROUGE-L", "pycocoevalcap 1.2 ROUGE-L, beta 1.2, mean over reports",
               summary=True),
        Metric("cider", "CIDEr-D",
               "pycocoevalcap 1.2 CIDEr-D, sigma 6, IDF from this set's references", bounded=False,
               summary=True),
    ),
    per_report=nlg.NLG_METRICS,
    score=_nlg_score,
    statistics=_nlg_statistics,
    options={"tokenizer": "ptb"},
    conventions=_nlg_conventions,
    examples=("bleu4", "rougeL"),
    colour="#6c8ebf",
)


# ---------------------------------------------------------------------------------------------
# RadGraph-style F1: the `radgraph` package's reward levels and Yu et al.'s variants


def _radgraph_key(name: str) -> str:
    return f"radgraph_{name}_f1" if name in ("entity", "relation") else f"radgraph_{name}"


def _radgraph_values(
    hypotheses: Texts, references: Texts, options: Options
) -> dict[str, tuple[float, list[float]]]:
    results = radgraph.f1_from_texts(
        hypotheses, references, options["lowercase"], options["extractor"]
    )
    return {_radgraph_key(name): result for name, result in results.items()}


def _radgraph_score(hypotheses: Texts, references: Texts, options: Options) -> FamilyScores:
    results = _radgraph_values(hypotheses, references, options)
    corpus = {k: mean for k, (mean, _) in results.items()}
    return corpus, {k: values for k, (_, values) in results.items()}


def _radgraph_statistics(hypotheses: Texts, references: Texts, options: Options) -> Statistics:
    results = _radgraph_values(hypotheses, references, options)
    return {k: mean_statistic(k, values) for k, (_, values) in results.items()}


def _radgraph_conventions(options: Options) -> dict[str, Any]:
    lowercase = options["lowercase"]
    return {
        "radgraph_extractor": options["extractor"] or radgraph.default_backend_name(),
        "radgraph_lowercase": lowercase,
        "radgraph_case_note": (
            "entity tokens lower-cased (radgraph GitHub HEAD b5ab8d0)" if lowercase
            else "radgraph 0.1.18 case handling (case-sensitive except relation tuples)"
        ),
        "radgraph_aggregation":
            "mean of per-report F1 over all pairs; empty text or graph scores 0",
    }


RADGRAPH = MetricFamily(
    name="radgraph",
    metrics=(
        Metric("radgraph_simple", "RadGraph-style F1 (simple)",
               "RG_E (radgraph reward_level='simple')"),
        Metric("radgraph_partial", "RadGraph-style F1 (partial)",
               "RG_ER (radgraph reward_level='partial')", summary=True),
        Metric("radgraph_complete", "RadGraph-style F1 (complete)",
               "RG_ER-bar (radgraph reward_level='complete')"),
        Metric("radgraph_entity_f1", "RadGraph-style entity F1", "Yu et al. entity F1"),
        Metric("radgraph_relation_f1", "RadGraph-style relation F1", "Yu et al. relation F1"),
        Metric("radgraph_combined", "RadGraph-style F1 (combined)",
               "Yu et al. radgraph_combined = (entity F1 + relation F1) / 2"),
    ),
    per_report=("radgraph_simple", "radgraph_partial", "radgraph_complete", "radgraph_entity_f1",
                "radgraph_relation_f1", "radgraph_combined"),
    score=_radgraph_score,
    statistics=_radgraph_statistics,
    options={"lowercase": True, "extractor": None},
    conventions=_radgraph_conventions,
    examples=("radgraph_partial", "radgraph_complete"),
    colour="#82b366",
)


# ---------------------------------------------------------------------------------------------
# CheXpert-style F1: micro / macro over the 14 and the 5 findings, both uncertain policies

_SIZES = (14, 5)


def _chexpert_metrics() -> tuple[Metric, ...]:
    def one(kind: str, size: int, policy: str | None) -> Metric:
        key = f"chexpert_{kind}_f1_{size}" + (f"_uncertain_{policy}" if policy else "")
        label = f"CheXpert-style {kind}-F1 ({size}" + (f", uncertain as {policy}" if policy else "")
        description = f"CheXpert-style {kind} F1 over {size} findings, uncertain as "
        return Metric(key, label + ")", description + (policy or "{uncertain}"),
                      headline=policy is None, summary=(kind, size, policy) == ("micro", 5, None))

    headline = [one(kind, size, None) for size in _SIZES for kind in ("micro", "macro")]
    variants = [one(kind, size, policy) for policy in clinical.UNCERTAIN_POLICIES for size in _SIZES
                for kind in ("micro", "macro")]
    return (*headline, *variants)


def _chexpert_policy(options: Options) -> str:
    policy = options["uncertain"]
    if policy not in clinical.UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {clinical.UNCERTAIN_POLICIES}, not {policy!r}")
    return policy


def _chexpert_score(hypotheses: Texts, references: Texts, options: Options) -> FamilyScores:
    chosen = _chexpert_policy(options)
    names = dict(zip(_SIZES, clinical.finding_names(), strict=True))
    hyp_labels, ref_labels = clinical.label_many(hypotheses), clinical.label_many(references)
    variants: dict[str, float] = {}
    for policy in clinical.UNCERTAIN_POLICIES:
        for size in _SIZES:
            result = clinical.clinical_f1(hyp_labels, ref_labels, names[size], policy)
            variants[f"chexpert_micro_f1_{size}_uncertain_{policy}"] = result.micro_f1
            variants[f"chexpert_macro_f1_{size}_uncertain_{policy}"] = result.macro_f1
    headline = [m.key for m in CHEXPERT.metrics if m.headline]  # they carry the chosen policy
    corpus = {key: variants[f"{key}_uncertain_{chosen}"] for key in headline}
    corpus.update(variants)
    per_report = {
        f"chexpert_example_f1_{size}": [
            float(v) for v in clinical.example_f1(hyp_labels, ref_labels, names[size], chosen)
        ]
        for size in _SIZES
    }
    return corpus, per_report


def _chexpert_statistics(hypotheses: Texts, references: Texts, options: Options) -> Statistics:
    chosen = _chexpert_policy(options)
    names = dict(zip(_SIZES, clinical.finding_names(), strict=True))
    hyp_labels, ref_labels = clinical.label_many(hypotheses), clinical.label_many(references)
    out: dict[str, MetricStatistic] = {}
    for policy in clinical.UNCERTAIN_POLICIES:
        for size in _SIZES:
            hyp = clinical.presence_matrix(hyp_labels, names[size], policy)
            ref = clinical.presence_matrix(ref_labels, names[size], policy)
            for suffix in [f"_uncertain_{policy}"] + ([""] if policy == chosen else []):
                for statistic in f1_statistics(f"chexpert_micro_f1_{size}{suffix}",
                                               f"chexpert_macro_f1_{size}{suffix}", hyp, ref):
                    out[statistic.name] = statistic
    return out


def _chexpert_conventions(options: Options) -> dict[str, Any]:
    policy = options["uncertain"]
    return {
        "chexpert_uncertain": policy,
        "chexpert_note": "labels from evaluation.chexpert on both sides; present = positive"
        + (" or uncertain" if policy == "positive" else " only (uncertain as negative)")
        + "; macro = mean per-finding F1, a finding absent on both sides scores 0",
    }


CHEXPERT = MetricFamily(
    name="chexpert",
    metrics=_chexpert_metrics(),
    per_report=tuple(f"chexpert_example_f1_{size}" for size in _SIZES),
    score=_chexpert_score,
    statistics=_chexpert_statistics,
    options={"uncertain": "negative"},
    conventions=_chexpert_conventions,
    examples=("chexpert_example_f1_14",),
    colour="#d79b00",
)

register(NLG)
register(RADGRAPH)
register(CHEXPERT)
