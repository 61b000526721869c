"""Bootstrap confidence intervals and the paired test between two systems."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import report_statistics, score
from evaluation.stats import MetricStatistic, bootstrap, paired_test

REFERENCES = [
    "No pleural effusion or pneumothorax. Heart size is normal.",
    "Mild cardiomegaly. Small left pleural effusion.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Moderate pulmonary edema with bilateral effusions.",
    "The lungs are clear. No acute cardiopulmonary process.",
    "Endotracheal tube terminates 4 cm above the carina. Left basilar atelectasis.",
] * 5
GOOD = [
    "No pleural effusion or pneumothorax. The heart is normal in size.",
    "Mild cardiomegaly with a small left pleural effusion.",
    "Right lower lobe consolidation, possibly pneumonia.",
    "Moderate pulmonary edema. Bilateral pleural effusions.",
    "Lungs are clear. No acute process.",
    "ET tube 4 cm above the carina. Atelectasis at the left base.",
] * 5
POOR = ["The lungs are clear. No acute cardiopulmonary process."] * len(REFERENCES)


def mean_statistic(values: list[float]) -> MetricStatistic:
    sums = np.asarray(values, float).reshape(-1, 1)
    return MetricStatistic("m", sums, lambda s, n: s[..., 0] / n)


def test_full_sample_values_equal_score():
    statistics = report_statistics(GOOD, REFERENCES)
    scores = score(GOOD, REFERENCES)
    for name, statistic in statistics.items():
        assert statistic.value() == pytest.approx(scores[name], abs=1e-12), name
    assert {"bleu4", "cider", "radgraph_partial", "chexpert_micro_f1_14"} <= set(statistics)


def test_bootstrap_interval_contains_the_value_and_is_seeded():
    statistics = report_statistics(GOOD, REFERENCES, metrics=["nlg", "chexpert"])
    first = bootstrap(statistics, resamples=200, seed=7)
    again = bootstrap(statistics, resamples=200, seed=7)
    other = bootstrap(statistics, resamples=200, seed=8)
    assert first == again
    assert first["bleu1"] != other["bleu1"]
    for name, ci in first.items():
        assert ci["low"] <= ci["value"] + 1e-9 and ci["value"] - 1e-9 <= ci["high"], name
        assert ci["resamples"] == 200


def test_bootstrap_of_a_mean_matches_the_textbook_standard_error():
    rng = np.random.default_rng(0)
    values = rng.random(400)
    ci = bootstrap({"m": mean_statistic(list(values))}, resamples=2000, seed=1)["m"]
    assert ci["std"] == pytest.approx(values.std() / np.sqrt(len(values)), rel=0.1)


def test_bootstrap_default_is_500_resamples():
    ci = bootstrap({"m": mean_statistic([0.0, 1.0, 1.0])})["m"]
    assert ci["resamples"] == 500 and ci["seed"] == 0 and ci["level"] == 0.95


def test_paired_test_finds_a_real_difference():
    a = report_statistics(POOR, REFERENCES, metrics=["nlg"])
    b = report_statistics(GOOD, REFERENCES, metrics=["nlg"])
    result = paired_test(a, b, resamples=300, seed=0)
    assert result["bleu1"]["delta"] > 0
    assert result["bleu1"]["low"] > 0
    assert result["bleu1"]["p_value"] < 0.01


def test_paired_test_of_identical_systems_is_not_significant():
    a = report_statistics(GOOD, REFERENCES, metrics=["nlg"])
    result = paired_test(a, a, resamples=200, seed=0)
    assert result["rougeL"]["delta"] == 0.0
    assert result["rougeL"]["p_value"] == 1.0


def test_paired_test_on_pure_noise_is_rarely_significant():
    rng = np.random.default_rng(3)
    rejections = 0
    for _ in range(40):
        x, y = rng.random(60), rng.random(60)
        result = paired_test({"m": mean_statistic(list(x))}, {"m": mean_statistic(list(y))},
                             resamples=199, seed=int(rng.integers(1 << 30)))
        rejections += result["m"]["p_value"] < 0.05
    assert rejections <= 6  # about 2 expected at the 5 % level


def test_paired_test_needs_the_same_studies():
    with pytest.raises(ValueError, match="same studies"):
        paired_test({"m": mean_statistic([1.0, 0.0])}, {"m": mean_statistic([1.0])})
