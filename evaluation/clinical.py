"""Clinical-efficacy F1 from CheXpert-style labels: micro and macro over the 14 and over the 5.

Conventions (CheXbert-style evaluation as in LLaVA-Rad's `rrg_eval` and R2Gen's `compute_ce.py`):

- Labels of both the hypothesis and the reference come from the same labeler
  (:func:`evaluation.chexpert.label`): 1.0 positive, 0.0 negative, -1.0 uncertain, None not
  mentioned. A finding counts as present when its label is 1.0; negative and not-mentioned count
  as absent; uncertain follows the policy:
  ``"negative"`` (default, "U-zeros": the headline `Micro/Macro-F1-14/-5` of LLaVA-Rad and MAIRA-2)
  or ``"positive"`` ("U-ones": the `f1chexbert` package default, LLaVA-Rad's `F1-14+`).
- Micro F1 pools true/false positives and false negatives over every (report, finding) cell;
  macro F1 is the unweighted mean of the per-finding F1, where a finding with no positive in
  either side scores 0 (scikit-learn's `zero_division` default that those scripts inherit).
- The 14 include "No Finding"; the 5 are Atelectasis, Cardiomegaly, Consolidation, Edema,
  Pleural Effusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.chexpert import CHEXPERT_5, CHEXPERT_14, label_many

__all__ = [
    "UNCERTAIN_POLICIES",
    "ClinicalF1",
    "clinical_f1",
    "example_f1",
    "finding_names",
    "label_many",
    "presence_matrix",
]

UNCERTAIN_POLICIES = ("negative", "positive")
Labels = Mapping[str, float | None]


def finding_names() -> tuple[list[str], list[str]]:
    """The 14 CheXpert finding names and the 5-finding subset (from the labeler)."""
    return list(CHEXPERT_14), list(CHEXPERT_5)


def presence_matrix(
    labels: Sequence[Labels], names: Sequence[str], uncertain: str = "negative"
) -> np.ndarray:
    """Boolean [reports, findings]: present under the uncertain policy."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}, not {uncertain!r}")
    positive = {1.0, -1.0} if uncertain == "positive" else {1.0}
    return np.array(
        [[row.get(name) in positive for name in names] for row in labels], dtype=bool
    ).reshape(len(labels), len(names))


@dataclass(frozen=True)
class ClinicalF1:
    """Micro and macro F1 with the per-finding precision, recall, F1 and reference support."""

    micro_f1: float
    macro_f1: float
    per_finding: dict[str, dict[str, float]]
    uncertain: str


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def clinical_f1(
    hypothesis_labels: Sequence[Labels],
    reference_labels: Sequence[Labels],
    names: Sequence[str],
    uncertain: str = "negative",
) -> ClinicalF1:
    """Micro / macro F1 of hypothesis labels against reference labels over the named findings.

    >>> hyp = [{"Edema": 1.0, "Cardiomegaly": -1.0}]
    >>> ref = [{"Edema": 1.0, "Cardiomegaly": 1.0}]
    >>> clinical_f1(hyp, ref, ["Edema", "Cardiomegaly"]).micro_f1
    0.6666666666666666
    >>> clinical_f1(hyp, ref, ["Edema", "Cardiomegaly"], uncertain="positive").micro_f1
    1.0
    """
    if len(hypothesis_labels) != len(reference_labels):
        raise ValueError(
            f"got {len(hypothesis_labels)} hypothesis label sets but {len(reference_labels)} "
            "reference label sets; they must pair one to one"
        )
    hyp = presence_matrix(hypothesis_labels, names, uncertain)
    ref = presence_matrix(reference_labels, names, uncertain)
    tp = (hyp & ref).sum(0).astype(np.float64)
    fp = (hyp & ~ref).sum(0).astype(np.float64)
    fn = (~hyp & ref).sum(0).astype(np.float64)
    per_f1 = _f1(tp, fp, fn)
    micro = float(_f1(tp.sum(), fp.sum(), fn.sum()))
    macro = float(per_f1.mean()) if len(names) else 0.0
    per_finding = {
        name: {
            "precision": float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0,
            "recall": float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0,
            "f1": float(per_f1[i]),
            "support": int(tp[i] + fn[i]),
        }
        for i, name in enumerate(names)
    }
    return ClinicalF1(micro, macro, per_finding, uncertain)


def example_f1(
    hypothesis_labels: Sequence[Labels], reference_labels: Sequence[Labels], names: Sequence[str],
    uncertain: str = "negative",
) -> np.ndarray:
    """Per-report F1 over the named findings (1.0 when both sides have none present)."""
    hyp = presence_matrix(hypothesis_labels, names, uncertain)
    ref = presence_matrix(reference_labels, names, uncertain)
    tp = (hyp & ref).sum(1)
    denominator = hyp.sum(1) + ref.sum(1)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 1.0)
