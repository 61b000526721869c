"""Clinical-efficacy F1 (micro / macro, uncertain policies) on hand-built CheXpert label sets."""

from __future__ import annotations

import pytest

from evaluation.clinical import clinical_f1, example_f1, presence_matrix

NAMES = ["Atelectasis", "Cardiomegaly", "Edema"]
# Three reports. Reference: ate+, card+, edema uncertain | card+ | nothing mentioned.
REFERENCE = [
    {"Atelectasis": 1.0, "Cardiomegaly": 1.0, "Edema": -1.0},
    {"Cardiomegaly": 1.0, "Edema": 0.0},
    {"Atelectasis": None},
]
# Hypothesis: ate+, edema+ | card uncertain | ate+.
HYPOTHESIS = [
    {"Atelectasis": 1.0, "Cardiomegaly": 0.0, "Edema": 1.0},
    {"Cardiomegaly": -1.0},
    {"Atelectasis": 1.0},
]


def test_uncertain_as_negative_counts_only_positive_labels():
    """Present cells: ref {(0,A),(0,C),(1,C)}, hyp {(0,A),(0,E),(2,A)}: TP 1, FP 2, FN 2.
    micro = 2/(2+2+2) = 1/3; per finding A: TP1 FP1 -> 2/3, C: FN2 -> 0, E: FP1 -> 0; macro 2/9."""
    result = clinical_f1(HYPOTHESIS, REFERENCE, NAMES, uncertain="negative")
    assert result.micro_f1 == pytest.approx(1 / 3)
    assert result.macro_f1 == pytest.approx(2 / 9)
    assert result.per_finding["Atelectasis"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )


def test_uncertain_as_positive_counts_uncertain_labels_as_present():
    """ref adds (0,E); hyp adds (1,C): TP 3 (0A,0E,1C), FP 1 (2A), FN 1 (0C): micro 6/8.
    A: 2/3, C: TP1 FN1 -> 2/3, E: TP1 -> 1; macro 7/9."""
    result = clinical_f1(HYPOTHESIS, REFERENCE, NAMES, uncertain="positive")
    assert result.micro_f1 == pytest.approx(0.75)
    assert result.macro_f1 == pytest.approx(7 / 9)


def test_a_finding_absent_on_both_sides_scores_zero_in_the_macro_average():
    labels = [{"Edema": 1.0}]
    result = clinical_f1(labels, labels, NAMES)
    assert result.per_finding["Atelectasis"]["f1"] == 0.0
    assert result.micro_f1 == 1.0
    assert result.macro_f1 == pytest.approx(1 / 3)


def test_example_f1_is_per_report_and_one_when_both_sides_are_empty():
    values = example_f1(HYPOTHESIS, REFERENCE, NAMES)
    # report 0: hyp {A,E}, ref {A,C} -> 2*1/4 = 0.5; report 1: hyp {}, ref {C} -> 0;
    # report 2: hyp {A}, ref {} -> 0
    assert list(values) == pytest.approx([0.5, 0.0, 0.0])
    assert list(example_f1([{}], [{"Edema": 0.0}], NAMES)) == [1.0]


def test_unknown_uncertain_policy_is_refused():
    with pytest.raises(ValueError, match="uncertain must be one of"):
        presence_matrix(REFERENCE, NAMES, uncertain="ignore")


def test_unpaired_label_lists_are_refused():
    with pytest.raises(ValueError, match="pair one to one"):
        clinical_f1(HYPOTHESIS, REFERENCE[:2], NAMES)
