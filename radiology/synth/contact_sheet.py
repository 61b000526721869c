"""A contact sheet of synthetic studies: one per finding, with the report sentence naming it.

    python -m radiology.synth.contact_sheet docs/synthetic_contact_sheet.png

Lets a person check at a glance that every finding is visible where its report says it is.
"""

from __future__ import annotations

import io
import re
import sys
import textwrap
from pathlib import Path

import numpy as np

from radiology.synth.dataset import generate_study
from radiology.synth.findings import Finding, StudySpec

#: One example per finding (moderate, one-sided where the finding has a side).
EXAMPLES: tuple[tuple[str, tuple[Finding, ...], tuple[str, ...]], ...] = (
    ("No Finding", (), ()),
    ("Cardiomegaly", (Finding("Cardiomegaly", "bilateral", "moderate"),), ()),
    ("Pleural Effusion", (Finding("Pleural Effusion", "right", "moderate"),), ()),
    ("Edema", (Finding("Edema", "bilateral", "moderate"),), ()),
    ("Consolidation", (Finding("Consolidation", "right", "moderate", "right lower lobe"),), ()),
    ("Atelectasis", (Finding("Atelectasis", "left", "moderate"),), ()),
    ("Pneumothorax", (Finding("Pneumothorax", "right", "moderate"),), ()),
    ("Lung Opacity", (Finding("Lung Opacity", "left", "moderate", "mid"),), ()),
    ("Pneumonia", (Finding("Consolidation", "left", "moderate", "left lower lobe"),
                   Finding("Pneumonia", "left", "moderate", "left lower lobe")), ()),
    ("Lung Lesion", (Finding("Lung Lesion", "right", "severe", "mass mid"),), ()),
    ("Enlarged Cardiomediastinum",
     (Finding("Enlarged Cardiomediastinum", "bilateral", "severe"),), ()),
    ("Fracture", (Finding("Fracture", "left", "moderate", "clavicle"),), ()),
    ("Pleural Other", (Finding("Pleural Other", "right", "mild", "apical thickening"),), ()),
    ("Support Devices", (Finding("Support Devices", "bilateral", "moderate",
                                 "endotracheal tube,enteric tube,pacemaker"),),
     ("endotracheal tube", "enteric tube", "pacemaker")),
)

_KEYWORDS = {
    "No Finding": r"no acute|normal chest|no evidence",
    "Cardiomegaly": r"cardiomegaly|heart|cardiac silhouette",
    "Pleural Effusion": r"pleural effusion",
    "Edema": r"edema",
    "Consolidation": r"consolidation",
    "Atelectasis": r"atelectasis",
    "Pneumothorax": r"pneumothorax",
    "Lung Opacity": r"opacity",
    "Pneumonia": r"pneumonia",
    "Lung Lesion": r"nodule|mass",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Fracture": r"fracture",
    "Pleural Other": r"pleural thickening",
    "Support Devices": r"tube|pacemaker|line",
}


def report_line(report: str, name: str) -> str:
    """The first FINDINGS/IMPRESSION sentence of `report` that names finding `name` positively."""
    from radiology.reports import parse

    sections = parse(report)
    text = " ".join(x for x in (sections.findings, sections.impression) if x)
    sentences = re.split(r"(?<=\.)\s+", text)
    for sentence in sentences:
        if re.search(_KEYWORDS[name], sentence, re.I) and (
            name == "No Finding" or not re.match(r"(there is )?no\b", sentence, re.I)):
            return sentence
    return sentences[0] if sentences else ""


def make_contact_sheet(out: str | Path, seed: int = 3, size: int = 512) -> Path:
    """Render one study per finding with its report sentence into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radiology.reports import parse

    cols = 5
    rows = int(np.ceil(len(EXAMPLES) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.0, rows * 3.9))
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, (name, findings, devices)) in enumerate(zip(axes.flat, EXAMPLES, strict=False)):
        view = "AP" if devices else "PA"
        spec = StudySpec(findings, view, False, "M", 64, devices)
        for attempt in range(10):  # a report with a FINDINGS section reads best here
            study = generate_study(np.random.default_rng([seed, i, attempt]), spec=spec,
                                   size=(size, size), dicom=False, lateral=False)
            if parse(study.report).findings:
                break
        ax.imshow(study.frontal.pixels, cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        ax.set_title(name, fontsize=10, fontweight="bold")
        caption = "\n".join(textwrap.wrap(report_line(study.report, name), 44)[:3])
        ax.text(0.5, -0.02, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    fig.suptitle("Synthetic MIMIC-CXR studies, one per CheXpert finding (patient's right on the "
                 "viewer's left), with the report sentence naming it", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72)
    plt.close(fig)
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as image:  # grayscale PNG: a third of the size of RGBA
        image.convert("L").save(out, optimize=True)
    return out


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/synthetic_contact_sheet.png"
    print(make_contact_sheet(out))
