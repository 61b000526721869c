"""The CheXpert observations: one list of names for the MIMIC-CXR tables, labeler and metrics.

Label codes follow `mimic-cxr-2.0.0-chexpert.csv`: 1.0 positive, 0.0 negative, -1.0 uncertain,
blank (None) not mentioned.
"""

from __future__ import annotations

#: The 14 CheXpert observations, in the column order of `mimic-cxr-2.0.0-chexpert.csv`.
CHEXPERT_14: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The five findings that report-generation papers score with CheXpert-style F1.
CHEXPERT_5: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
