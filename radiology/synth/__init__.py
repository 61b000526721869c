"""Synthetic MIMIC-CXR: procedurally drawn chest radiographs with matching reports and labels.

`generate_study` makes one study in memory; `write_dataset` writes a whole tree in the MIMIC-CXR
layout (DICOM or JPEG images, reports, split / metadata / CheXpert tables).
"""

from radiology.synth.dataset import (
    IMAGE_SIZES,
    SyntheticImage,
    SyntheticStudy,
    generate_study,
    study_dir,
    write_dataset,
)
from radiology.synth.findings import (
    CHEXPERT_FINDINGS,
    CORE_FINDINGS,
    PREVALENCE,
    Finding,
    StudySpec,
    sample_spec,
)

__all__ = [
    "CHEXPERT_FINDINGS",
    "CORE_FINDINGS",
    "IMAGE_SIZES",
    "PREVALENCE",
    "Finding",
    "StudySpec",
    "SyntheticImage",
    "SyntheticStudy",
    "generate_study",
    "sample_spec",
    "study_dir",
    "write_dataset",
]
