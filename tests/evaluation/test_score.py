"""The public `evaluation.score` API: keys, conventions, options, per-report values."""

from __future__ import annotations

import pytest

from evaluation import UnknownMetricError, conventions, score, score_per_report

REQUIRED = {
    "bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider",
    "radgraph_simple", "radgraph_partial", "radgraph_complete",
    "chexpert_micro_f1_14", "chexpert_macro_f1_14", "chexpert_micro_f1_5", "chexpert_macro_f1_5",
}
REPORTS = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No pneumothorax. The lungs are clear.",
    "Right lower lobe consolidation, likely pneumonia.",
]


def test_score_returns_every_required_metric_between_zero_and_one_except_cider():
    result = score(REPORTS[::-1], REPORTS)
    assert REQUIRED <= set(result)
    for name in REQUIRED - {"cider"}:
        assert 0.0 <= result[name] <= 1.0, name
    assert result["cider"] >= 0.0


def test_identical_reports_score_perfectly_on_overlap_metrics():
    result = score(REPORTS, REPORTS)
    for name in ("bleu1", "bleu4", "rougeL",
                 "radgraph_simple", "radgraph_partial", "radgraph_complete"):
        assert result[name] == pytest.approx(1.0), name


def test_every_result_states_its_conventions():
    result = score(REPORTS, REPORTS, metrics=["chexpert"], uncertain="positive")
    assert result["conventions"]["chexpert_uncertain"] == "positive"
    assert result["conventions"]["tokenizer"] == "ptb"
    assert "not computed" in result["conventions"]["meteor"]
    assert conventions()["chexpert_uncertain"] == "negative"
    assert conventions()["radgraph_lowercase"] is True


def test_uncertain_policy_selects_which_variant_the_headline_keys_carry():
    hypotheses = ["Possible pleural effusion."]
    references = ["Pleural effusion."]
    negative = score(hypotheses, references, metrics=["chexpert"])
    positive = score(hypotheses, references, metrics=["chexpert"], uncertain="positive")
    assert negative["chexpert_micro_f1_5"] == negative["chexpert_micro_f1_5_uncertain_negative"]
    assert positive["chexpert_micro_f1_5"] == positive["chexpert_micro_f1_5_uncertain_positive"]
    assert positive["chexpert_micro_f1_5"] > negative["chexpert_micro_f1_5"]


def test_metrics_selects_families_or_single_keys():
    result = score(REPORTS, REPORTS, metrics=["bleu4"])
    assert "bleu1" in result
    assert "radgraph_partial" not in result and "chexpert_micro_f1_14" not in result


def test_unknown_metric_is_refused_with_the_choices():
    with pytest.raises(UnknownMetricError, match="families are"):
        score(REPORTS, REPORTS, metrics=["meteor"])


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="unknown scoring options"):
        score(REPORTS, REPORTS, beta=2)


def test_single_strings_are_refused():
    with pytest.raises(TypeError, match="lists of report texts"):
        score("a report", "a report")


def test_per_report_values_average_to_the_corpus_mean_metrics():
    hypotheses = REPORTS[::-1]
    per_report = score_per_report(hypotheses, REPORTS)
    corpus = score(hypotheses, REPORTS)
    for name in ("rougeL", "cider", "radgraph_partial", "radgraph_combined"):
        assert sum(per_report[name]) / len(REPORTS) == pytest.approx(corpus[name]), name
    assert len(per_report["chexpert_example_f1_14"]) == len(REPORTS)


def test_empty_hypothesis_scores_zero_on_radgraph():
    per_report = score_per_report(["", REPORTS[0]], [REPORTS[0], REPORTS[0]], metrics=["radgraph"])
    assert per_report["radgraph_partial"] == [0.0, 1.0]
