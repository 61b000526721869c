"""The metric registry: every consumer reads it, unknown keys are errors, a metric is one entry."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import evaluation
from evaluation import (
    Metric,
    MetricFamily,
    MetricSpecError,
    UnknownMetricError,
    registry,
    report_statistics,
    score,
    score_per_report,
)
from evaluation.run import WORST_BY, evaluate_texts
from evaluation.stats import bootstrap

REFERENCES = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No pneumothorax. The lungs are clear.",
    "Right lower lobe consolidation, likely pneumonia.",
    "Heart size is normal. No pleural effusion or pneumothorax.",
]
HYPOTHESES = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No pneumothorax. Lungs are clear.",
    "Left lower lobe consolidation.",
    "Heart size is normal. No pleural effusion or pneumothorax.",
]


def word_ratio(hypotheses: Sequence[str], references: Sequence[str], options: Any) -> list[float]:
    """Words of the hypothesis per word of the reference."""
    pairs = zip(hypotheses, references, strict=True)
    return [len(h.split()) / max(len(r.split()), 1) for h, r in pairs]


RATIOS = word_ratio(HYPOTHESES, REFERENCES, {})
MEAN_RATIO = sum(RATIOS) / len(RATIOS)


@pytest.fixture
def length_family() -> Iterator[MetricFamily]:
    """A "length" family (one entry plus its function), registered for one test only."""
    family = MetricFamily.mean_of(
        "length",
        Metric("length_ratio", "length ratio", "hypothesis words / reference words, mean",
               bounded=False, summary=True),
        word_ratio,
        examples=("length_ratio",),
        colour="#9673a6",
    )
    evaluation.register(family)
    yield family
    evaluation.unregister("length")


def test_a_registered_family_is_scored_by_score_and_score_per_report(length_family):
    assert score(HYPOTHESES, REFERENCES)["length_ratio"] == pytest.approx(MEAN_RATIO)
    only = score(HYPOTHESES, REFERENCES, metrics=["length_ratio"])
    assert only.keys() == {"length_ratio", "conventions"}
    per_report = score_per_report(HYPOTHESES, REFERENCES, metrics=["length"])
    assert per_report["length_ratio"] == RATIOS


def test_a_registered_family_gets_bootstrap_statistics(length_family):
    statistics = report_statistics(HYPOTHESES, REFERENCES)
    assert statistics["length_ratio"].value() == pytest.approx(MEAN_RATIO)
    interval = bootstrap(statistics, resamples=50)["length_ratio"]
    assert interval["low"] <= MEAN_RATIO <= interval["high"]


def test_a_registered_family_is_in_the_evaluation_report(length_family, tmp_path):
    ids = [f"s{i}" for i in range(len(HYPOTHESES))]
    results = evaluate_texts(ids, HYPOTHESES, REFERENCES, tmp_path, resamples=50)
    assert results["metrics"]["length_ratio"]["value"] == pytest.approx(MEAN_RATIO)
    stored = json.loads((tmp_path / "results.json").read_text())["metrics"]["length_ratio"]
    assert stored["family"] == "length"
    assert stored["variant"] == "hypothesis words / reference words, mean"
    html = (tmp_path / "report.html").read_text()
    assert "<tr><td>length_ratio</td>" in html  # the metrics table
    assert html.count(", length_ratio ") == len(ids)  # beside each of the worst examples
    with (tmp_path / "per_report.csv").open() as handle:
        assert "length_ratio" in next(csv.reader(handle))


def test_a_registered_summary_metric_is_in_the_one_line_summary(length_family):
    summary = evaluation.summarize(score(HYPOTHESES, REFERENCES))
    assert summary.endswith(f"length_ratio={MEAN_RATIO:.3f}")


def test_an_unregistered_family_is_gone_everywhere(length_family):
    evaluation.unregister("length")
    try:
        assert "length_ratio" not in score(HYPOTHESES, REFERENCES)
        assert "length_ratio" not in report_statistics(HYPOTHESES, REFERENCES)
        assert "length_ratio" not in evaluation.summary_keys()
        with pytest.raises(UnknownMetricError):
            score(HYPOTHESES, REFERENCES, metrics=["length_ratio"])
    finally:
        evaluation.register(length_family)


def test_every_key_score_returns_is_declared_by_its_family_in_order():
    corpus = score(HYPOTHESES, REFERENCES)
    declared = [key for family in evaluation.families() for key in family.keys]
    assert [key for key in corpus if key != "conventions"] == declared
    per_report = score_per_report(HYPOTHESES, REFERENCES)
    assert list(per_report) == [k for family in evaluation.families() for k in family.per_report]


def test_built_in_families_are_nlg_radgraph_chexpert():
    assert [family.name for family in evaluation.families()] == ["nlg", "radgraph", "chexpert"]


@pytest.mark.parametrize("name", ["meteor", "bleu5", "radgraph_partal", "chexpert_micro_f1_15"])
def test_a_key_no_family_declares_is_refused_everywhere(name):
    with pytest.raises(UnknownMetricError, match=f"unknown metric '{name}'; families are"):
        score(HYPOTHESES, REFERENCES, metrics=[name])
    with pytest.raises(UnknownMetricError):
        report_statistics(HYPOTHESES, REFERENCES, metrics=[name])
    with pytest.raises(UnknownMetricError):
        evaluation.metric(name)
    with pytest.raises(UnknownMetricError):
        evaluation.family_of(name)


def test_a_per_report_key_selects_its_family():
    scores = score(HYPOTHESES, REFERENCES, metrics=["chexpert_example_f1_14"])
    assert "chexpert_micro_f1_5" in scores


def test_descriptions_name_the_chosen_uncertain_policy():
    positive = registry.resolve_options({"uncertain": "positive"})
    assert evaluation.metric("chexpert_micro_f1_5").describe(positive) == (
        "CheXpert-style micro F1 over 5 findings, uncertain as positive"
    )
    assert evaluation.metric("chexpert_macro_f1_14_uncertain_negative").describe(positive) == (
        "CheXpert-style macro F1 over 14 findings, uncertain as negative"
    )


def test_only_the_policy_variants_are_not_headline_and_only_cider_is_unbounded():
    metrics = [m for family in evaluation.families() for m in family.metrics]
    assert {m.key for m in metrics if not m.headline} == {
        f"chexpert_{kind}_f1_{size}_uncertain_{policy}"
        for kind in ("micro", "macro") for size in (14, 5) for policy in ("negative", "positive")
    }
    assert [m.key for m in metrics if not m.bounded] == ["cider"]


def test_the_summary_metrics_are_one_headline_metric_per_clinical_family_and_bleu_rouge_cider():
    assert evaluation.summary_keys() == [
        "bleu4", "rougeL", "cider", "radgraph_partial", "chexpert_micro_f1_5",
    ]
    assert all(evaluation.metric(key).headline for key in evaluation.summary_keys())


def test_report_html_orders_its_examples_by_per_report_metrics_of_the_registry():
    for key in WORST_BY:
        assert key in evaluation.family_of(key).per_report


def test_an_example_key_that_is_no_per_report_key_is_refused():
    family = MetricFamily.mean_of("odd", Metric("odd_f1", "x", "x"), word_ratio,
                                  examples=("odd_f2",))
    with pytest.raises(MetricSpecError, match=r"shows per-report keys \['odd_f2'\]"):
        evaluation.register(family)


def test_a_key_declared_twice_is_refused(length_family):
    clash = MetricFamily.mean_of("other", Metric("length_ratio", "x", "x"), word_ratio)
    with pytest.raises(MetricSpecError, match="'length_ratio' of family 'other' is declared twice"):
        evaluation.register(clash)
    assert "other" not in [family.name for family in evaluation.families()]


def test_an_option_default_that_contradicts_another_familys_is_refused():
    family = MetricFamily.mean_of("odd", Metric("odd_f1", "x", "x"), word_ratio,
                                  options={"uncertain": "positive"})
    with pytest.raises(MetricSpecError, match="option 'uncertain'"):
        evaluation.register(family)


def test_a_family_returning_a_key_it_does_not_declare_is_refused():
    def scores(hypotheses, references, options):
        return {"sloppy": 1.0, "sloppy_extra": 0.5}, {}

    def statistics(hypotheses, references, options):
        return {}

    sloppy = MetricFamily("sloppy", (Metric("sloppy", "x", "x"),), (), scores, statistics)
    evaluation.register(sloppy)
    try:
        with pytest.raises(MetricSpecError, match=r"does not declare \['sloppy_extra'\]"):
            score(HYPOTHESES, REFERENCES, metrics=["sloppy"])
    finally:
        evaluation.unregister("sloppy")


def test_options_of_the_families_are_the_scoring_options():
    assert registry.default_options() == {
        "tokenizer": "ptb", "lowercase": True, "extractor": None, "uncertain": "negative",
    }
    with pytest.raises(TypeError, match="unknown scoring options"):
        score(HYPOTHESES, REFERENCES, beta=2)
