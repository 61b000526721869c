"""What a synthetic study shows: the 14 CheXpert findings, how often each occurs, and where.

A `StudySpec` is drawn first; the image renderer and the report writer both read it, so the
picture and the text describe the same chest. The five findings that report-generation papers
score (atelectasis, cardiomegaly, consolidation, edema, pleural effusion) are drawn
independently, each present in roughly a quarter to a third of studies, so a model must look at
the image to name them; about one study in six shows no finding at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radiology.labels import CHEXPERT_5, CHEXPERT_14

CHEXPERT_FINDINGS = CHEXPERT_14  # the names used across the synthetic generator
CORE_FINDINGS = CHEXPERT_5

#: Probability that a study shows each finding (drawn independently, except Pneumonia, which
#: is only drawn for studies with consolidation or lung opacity).
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.30,
    "Cardiomegaly": 0.30,
    "Consolidation": 0.25,
    "Edema": 0.25,
    "Pleural Effusion": 0.30,
    "Enlarged Cardiomediastinum": 0.07,
    "Fracture": 0.06,
    "Lung Lesion": 0.08,
    "Lung Opacity": 0.10,
    "Pleural Other": 0.05,
    "Pneumothorax": 0.07,
    "Support Devices": 0.20,
}
PNEUMONIA_GIVEN_CONSOLIDATION = 0.45

SIDES = ("right", "left", "bilateral")
SEVERITIES = ("mild", "moderate", "severe")


@dataclass(frozen=True)
class Finding:
    """One abnormality: its CheXpert name, side, severity and kind-specific details.

    `side` is the patient's side ("right" shows on the viewer's left of a frontal image).
    `severity` is one of "mild", "moderate", "severe" (small / moderate / large for effusions
    and pneumothoraces). `detail` names a sub-type, e.g. a lobe, "nodule" vs "mass", or a device.
    """

    name: str
    side: str = "right"
    severity: str = "moderate"
    detail: str = ""
    uncertain: bool = False


@dataclass(frozen=True)
class StudySpec:
    """The findings of one study plus how it was acquired (view, portable or not)."""

    findings: tuple[Finding, ...]
    view: str  # "PA" or "AP" (the frontal view)
    with_lateral: bool
    sex: str  # "M" or "F"
    age: int
    devices: tuple[str, ...] = field(default_factory=tuple)

    def has(self, name: str) -> bool:
        """True when the study shows the finding `name`."""
        return any(f.name == name for f in self.findings)

    def get(self, name: str) -> Finding | None:
        """The finding called `name`, or None when the study does not show it."""
        return next((f for f in self.findings if f.name == name), None)


_LOBES_RIGHT = ("right upper lobe", "right middle lobe", "right lower lobe")
_LOBES_LEFT = ("left upper lobe", "lingula", "left lower lobe")
DEVICES = ("endotracheal tube", "enteric tube", "central venous catheter", "pacemaker", "picc")


def _side(rng: np.random.Generator, p_bilateral: float) -> str:
    if rng.random() < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _severity(rng: np.random.Generator, weights: tuple[float, float, float]) -> str:
    return str(rng.choice(SEVERITIES, p=np.asarray(weights) / sum(weights)))


def sample_spec(
    rng: np.random.Generator, prevalence: dict[str, float] | None = None
) -> StudySpec:
    """Draw the findings and acquisition of one synthetic study.

    >>> spec = sample_spec(np.random.default_rng(0))
    >>> spec.view in ("PA", "AP")
    True
    """
    p = dict(PREVALENCE, **(prevalence or {}))
    present = {name: bool(rng.random() < prob) for name, prob in p.items()}
    findings: list[Finding] = []
    devices: tuple[str, ...] = ()

    if present["Cardiomegaly"]:
        findings.append(Finding("Cardiomegaly", "bilateral", _severity(rng, (0.4, 0.4, 0.2))))
    if present["Enlarged Cardiomediastinum"]:
        findings.append(Finding("Enlarged Cardiomediastinum", "bilateral",
                                _severity(rng, (0.3, 0.5, 0.2))))
    if present["Pleural Effusion"]:
        findings.append(Finding("Pleural Effusion", _side(rng, 0.35),
                                _severity(rng, (0.35, 0.45, 0.2))))
    if present["Edema"]:
        findings.append(Finding("Edema", "bilateral", _severity(rng, (0.35, 0.45, 0.2))))
    if present["Atelectasis"]:
        findings.append(Finding("Atelectasis", _side(rng, 0.4), _severity(rng, (0.4, 0.4, 0.2))))
    consolidation = None
    if present["Consolidation"]:
        side = _side(rng, 0.15)
        lobes = {"right": _LOBES_RIGHT, "left": _LOBES_LEFT}
        lobe = (str(rng.choice(lobes[side])) if side != "bilateral" else "bilateral lower lobes")
        consolidation = Finding("Consolidation", side, _severity(rng, (0.3, 0.5, 0.2)), lobe)
        findings.append(consolidation)
    opacity = None
    if present["Lung Opacity"]:
        opacity = Finding("Lung Opacity", _side(rng, 0.2), _severity(rng, (0.4, 0.4, 0.2)),
                          str(rng.choice(("upper", "mid", "lower"))))
        findings.append(opacity)
    basis = consolidation or opacity
    if basis is not None and rng.random() < PNEUMONIA_GIVEN_CONSOLIDATION:
        findings.append(Finding("Pneumonia", basis.side, basis.severity, basis.detail,
                                uncertain=bool(rng.random() < 0.6)))
    if present["Pneumothorax"]:
        findings.append(Finding("Pneumothorax", "right" if rng.random() < 0.5 else "left",
                                _severity(rng, (0.45, 0.35, 0.2))))
    if present["Lung Lesion"]:
        kind = "mass" if rng.random() < 0.35 else "nodule"
        zone = str(rng.choice(("upper", "mid", "lower")))
        findings.append(Finding("Lung Lesion", "right" if rng.random() < 0.5 else "left",
                                "severe" if kind == "mass" else "mild", f"{kind} {zone}",
                                uncertain=bool(rng.random() < 0.2)))
    if present["Fracture"]:
        kind = "clavicle" if rng.random() < 0.3 else "rib"
        findings.append(Finding("Fracture", "right" if rng.random() < 0.5 else "left",
                                "moderate", kind))
    if present["Pleural Other"]:
        findings.append(Finding("Pleural Other", _side(rng, 0.3), "mild",
                                str(rng.choice(("apical thickening", "lateral thickening",
                                                "calcified plaques")))))
    if present["Support Devices"]:
        n = 1 + int(rng.random() < 0.45)
        choice = rng.choice(DEVICES, size=n, replace=False,
                            p=np.array([0.25, 0.25, 0.2, 0.18, 0.12]))
        devices = tuple(sorted(str(d) for d in choice))
        findings.append(Finding("Support Devices", "bilateral", "moderate", ",".join(devices)))

    # Intubated or line-bearing patients are imaged portable (AP) more often.
    p_ap = 0.75 if devices else 0.3
    view = "AP" if rng.random() < p_ap else "PA"
    with_lateral = view == "PA" and rng.random() < 0.8
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(np.clip(rng.normal(62, 16), 19, 97))
    return StudySpec(tuple(findings), view, with_lateral, sex, age, devices)
