"""Report scoring: NLG, RadGraph-style and CheXpert-style metrics over (hypothesis, reference) texts.

>>> from evaluation import score
>>> result = score(["No pleural effusion."], ["No pleural effusion."], metrics=["nlg"])
>>> round(result["bleu1"], 6), result["conventions"]["tokenizer"]
(1.0, 'ptb')

Metric families (``metrics=`` takes family names or single keys):

- ``"nlg"``: bleu1..bleu4, rougeL, cider (pycocoevalcap 1.2 definitions, :mod:`evaluation.nlg`).
- ``"radgraph"``: radgraph_simple (RG_E), radgraph_partial (RG_ER), radgraph_complete (RG_ER-bar)
  as the `radgraph` package; radgraph_entity_f1, radgraph_relation_f1, radgraph_combined
  (Yu et al.) (:mod:`evaluation.radgraph`).
- ``"chexpert"``: chexpert_{micro,macro}_f1_{14,5} under the chosen uncertain policy, plus the same
  keys suffixed ``_uncertain_negative`` and ``_uncertain_positive`` (:mod:`evaluation.clinical`).

Every result carries a ``"conventions"`` entry naming tokenizer, case handling, extractor and
uncertain policy, so a number never travels without the choices behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["FAMILIES", "conventions", "score", "score_per_report"]

FAMILIES: dict[str, tuple[str, ...]] = {
    "nlg": ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider"),
    "radgraph": (
        "radgraph_simple", "radgraph_partial", "radgraph_complete",
        "radgraph_entity_f1", "radgraph_relation_f1", "radgraph_combined",
    ),
    "chexpert": (
        "chexpert_micro_f1_14", "chexpert_macro_f1_14", "chexpert_micro_f1_5", "chexpert_macro_f1_5",
    ),
}
_DEFAULTS = {"tokenizer": "ptb", "lowercase": True, "uncertain": "negative", "extractor": None}


class UnknownMetricError(ValueError):
    """A requested metric or family name does not exist."""


def _families(metrics: Iterable[str] | None) -> set[str]:
    if metrics is None:
        return set(FAMILIES)
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = set()
    for name in metrics:
        family = name if name in FAMILIES else next(
            (f for f, keys in FAMILIES.items() if name in keys or name.startswith(f"{f}_")), None
        )
        if family is None:
            raise UnknownMetricError(
                f"unknown metric {name!r}; families are {sorted(FAMILIES)}, keys are "
                f"{[k for keys in FAMILIES.values() for k in keys]}"
            )
        chosen.add(family)
    return chosen


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown scoring options {sorted(unknown)}; known: {sorted(_DEFAULTS)}")
    return {**_DEFAULTS, **options}


def conventions(**options: Any) -> dict[str, Any]:
    """The conventions a :func:`score` call with these options uses, in words and values."""
    from evaluation import radgraph  # noqa: PLC0415

    chosen = _options(options)
    extractor = chosen["extractor"] or radgraph.default_backend_name()
    return {
        "tokenizer": chosen["tokenizer"],
        "tokenizer_note": "NLG texts tokenized with evaluation.tokenize (ptb: Stanford PTB rules, "
        "lower-cased, pycocoevalcap punctuation removed); scorers equal to pycocoevalcap 1.2",
        "cider_note": "CIDEr-D IDF is computed from the references of the scored set",
        "meteor": "not computed (pycocoevalcap's METEOR jar cannot be reproduced exactly)",
        "radgraph_extractor": extractor,
        "radgraph_lowercase": chosen["lowercase"],
        "radgraph_case_note": (
            "entity tokens lower-cased (radgraph GitHub HEAD b5ab8d0)" if chosen["lowercase"]
            else "radgraph 0.1.18 case handling (case-sensitive except relation tuples)"
        ),
        "radgraph_aggregation": "mean of per-report F1 over all pairs; empty text or graph scores 0",
        "chexpert_uncertain": chosen["uncertain"],
        "chexpert_note": "labels from evaluation.chexpert on both sides; present = positive"
        + (" or uncertain" if chosen["uncertain"] == "positive" else " only (uncertain as negative)")
        + "; macro = mean per-finding F1, a finding absent on both sides scores 0",
    }


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("pass lists of report texts, not single strings")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; they must pair one to one"
        )
    for text in (*hypotheses, *references):
        if not isinstance(text, str):
            raise TypeError(f"report texts must be strings, got {type(text).__name__}")


def _compute(hypotheses: Sequence[str], references: Sequence[str], families: set[str], chosen: dict):
    corpus: dict[str, float] = {}
    per_report: dict[str, list[float]] = {}
    if "nlg" in families:
        from evaluation.nlg import nlg_scores  # noqa: PLC0415

        nlg_corpus, nlg_reports = nlg_scores(hypotheses, references, tokenizer=chosen["tokenizer"])
        corpus.update(nlg_corpus)
        per_report.update({k: [float(x) for x in v] for k, v in nlg_reports.items()})
    if "radgraph" in families:
        from evaluation.radgraph import f1_from_texts  # noqa: PLC0415

        results = f1_from_texts(hypotheses, references, chosen["lowercase"], chosen["extractor"])
        for name, (mean, values) in results.items():
            key = f"radgraph_{name}" if name in ("simple", "partial", "complete", "combined") else (
                f"radgraph_{name}_f1"
            )
            corpus[key], per_report[key] = mean, values
    if "chexpert" in families:
        from evaluation.clinical import clinical_f1, example_f1, finding_names, label_many  # noqa: PLC0415

        names_14, names_5 = finding_names()
        hyp_labels, ref_labels = label_many(hypotheses), label_many(references)
        variants: dict[str, float] = {}
        for policy in ("negative", "positive"):
            for names, size in ((names_14, 14), (names_5, 5)):
                result = clinical_f1(hyp_labels, ref_labels, names, policy)
                suffix = f"_uncertain_{policy}"
                variants[f"chexpert_micro_f1_{size}{suffix}"] = result.micro_f1
                variants[f"chexpert_macro_f1_{size}{suffix}"] = result.macro_f1
        for key in FAMILIES["chexpert"]:  # the headline keys carry the chosen policy
            corpus[key] = variants[f"{key}_uncertain_{chosen['uncertain']}"]
        corpus.update(variants)
        for names, size in ((names_14, 14), (names_5, 5)):
            values = example_f1(hyp_labels, ref_labels, names, chosen["uncertain"])
            per_report[f"chexpert_example_f1_{size}"] = [float(v) for v in values]
    return corpus, per_report


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
    _check(hypotheses, references)
    chosen = _options(options)
    corpus, _ = _compute(hypotheses, references, _families(metrics), chosen)
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
    _check(hypotheses, references)
    chosen = _options(options)
    _, per_report = _compute(hypotheses, references, _families(metrics), chosen)
    return per_report
