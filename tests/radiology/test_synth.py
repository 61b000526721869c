"""Synthetic MIMIC-CXR: layout, reports, labels, DICOM encodings, determinism, visible findings."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

from radiology.dicom import read
from radiology.mimic import CHEXPERT_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS, check_layout
from radiology.reports import parse
from radiology.synth import (
    CHEXPERT_FINDINGS,
    CORE_FINDINGS,
    Finding,
    StudySpec,
    generate_study,
    sample_spec,
    write_dataset,
)
from radiology.synth.chest import render_frontal
from radiology.synth.dataset import choose_size
from radiology.synth.dicomfile import TRANSFER_SYNTAXES, Encoding, choose_encoding
from radiology.synth.report import write_report

STUDIES = 6


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth") / "mimic", STUDIES, seed=11, workers=2,
                         size=(256, 224), progress=False)


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def test_tree_passes_the_mimic_layout_check(tree):
    assert check_layout(tree) == []


def test_tables_have_the_release_columns_and_one_chexpert_row_per_study(tree):
    split_header, split_rows = _table(tree / "mimic-cxr-2.0.0-split.csv.gz")
    meta_header, meta_rows = _table(tree / "mimic-cxr-2.0.0-metadata.csv.gz")
    chex_header, chex_rows = _table(tree / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert tuple(split_header) == SPLIT_COLUMNS
    assert tuple(meta_header) == METADATA_COLUMNS
    assert tuple(chex_header) == CHEXPERT_COLUMNS
    assert len(chex_rows) == STUDIES
    assert len(meta_rows) == len(split_rows) >= STUDIES
    assert {row[4] for row in meta_rows} <= {"PA", "AP", "LATERAL", "LL"}


def test_reports_parse_into_sections(tree):
    reports = sorted((tree / "files").rglob("s*.txt"))
    assert len(reports) == STUDIES
    for path in reports:
        sections = parse(path.read_text())
        assert sections.indication and sections.comparison and sections.impression
        assert "FINDINGS" not in (sections.impression or "")


def test_every_dicom_file_decodes_with_radiology_dicom(tree):
    files = sorted((tree / "files").rglob("*.dcm"))
    assert len(files) >= STUDIES
    for path in files:
        image = read(path)
        assert image.pixels.dtype == np.float32 and image.pixels.ndim == 2
        assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
        assert image.view in ("PA", "AP", "LATERAL", "LL")


@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES), ids=lambda s: s.name)
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("bits", [12, 16])
def test_each_encoding_decodes_to_the_drawn_image(syntax, photometric, bits, monkeypatch):
    import radiology.synth.dataset as dataset

    encoding = Encoding("DX" if bits == 16 else "CR", photometric, bits, syntax, True, "Agfa", "X")
    monkeypatch.setattr(dataset, "choose_encoding", lambda rng: encoding)
    study = generate_study(5, size=(128, 112), lateral=False)
    decoded = read(study.frontal.dicom).pixels
    drawn = study.frontal.pixels
    assert decoded.shape == drawn.shape
    # Bright = dense after decoding, whatever the photometric interpretation.
    assert np.corrcoef(decoded.ravel(), drawn.ravel())[0, 1] > 0.999


def test_image_sizes_vary_between_studies():
    rng = np.random.default_rng(0)
    sizes = {choose_size(rng) for _ in range(200)}
    assert len(sizes) >= 4 and all(min(size) >= 448 for size in sizes)


def test_radreport_synth_writes_a_checked_tree(tmp_path):
    from typer.testing import CliRunner

    from radreport.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "cli"), "--studies", "2",
                                      "--seed", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "layout check: ok" in result.output
    assert len(list((tmp_path / "cli" / "files").rglob("s*.txt"))) == 2


def test_encodings_cover_cr_dx_bit_depths_photometrics_and_syntaxes():
    rng = np.random.default_rng(0)
    drawn = [choose_encoding(rng) for _ in range(300)]
    assert {e.modality for e in drawn} == {"CR", "DX"}
    assert {e.bits_stored for e in drawn} == {12, 16}
    assert {e.photometric for e in drawn} == {"MONOCHROME1", "MONOCHROME2"}
    assert {e.transfer_syntax for e in drawn} == set(TRANSFER_SYNTAXES)


def test_headers_carry_obviously_fake_patients():
    study = generate_study(3, size=(96, 96), lateral=False)
    from io import BytesIO

    from pydicom import dcmread

    ds = dcmread(BytesIO(study.frontal.dicom))
    assert ds.PatientID.startswith("SYN") and ds.InstitutionName == "Synthetic General Hospital"
    assert re.fullmatch(r"[A-Z][a-z]+\^[A-Z][a-z]+\^[A-Z]", str(ds.PatientName))
    assert ds.StudyInstanceUID.startswith("2.25.")


def test_same_seed_gives_the_same_study():
    a = generate_study(42, size=(128, 128))
    b = generate_study(42, size=(128, 128))
    c = generate_study(43, size=(128, 128))
    assert a.report == b.report and a.labels == b.labels
    assert [im.dicom for im in a.images] == [im.dicom for im in b.images]
    assert a.report != c.report


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "SYNTHETIC.txt"}


def test_tree_is_the_same_for_any_number_of_workers(tree, tmp_path):
    again = write_dataset(tmp_path / "again", STUDIES, seed=11, workers=1, size=(256, 224),
                          progress=False)
    assert _digest(again) == _digest(tree)


# --- reports and labels ------------------------------------------------------------------------

# An independent reading of the reports: the words that name each finding.
TERMS = {
    "Atelectasis": r"atelectasis",
    "Cardiomegaly": (
        r"cardiomegaly|heart (?:size )?is (?:\w+ly )?enlarged"
        r"|enlarge\w* (?:of )?the cardiac silhouette|cardiac silhouette is (?:\w+ )?enlarged"
        r"|heart size is enlarged"
    ),
    "Consolidation": r"consolidation",
    "Edema": r"edema",
    "Pleural Effusion": r"pleural effusion",
}
NEGATION = r"\b(no|without)\b[^.]*?"


def _reports(n: int):
    for i in range(n):
        rng = np.random.default_rng([7, i])
        spec = sample_spec(rng)
        text, labels = write_report(spec, rng)
        yield spec, parse(text), labels


def test_labels_agree_with_the_report_text():
    for spec, sections, labels in _reports(300):
        text = " ".join(x for x in (sections.findings, sections.impression) if x).lower()
        for name, pattern in TERMS.items():
            mentioned = re.search(pattern, text) is not None
            if labels[name] == 1.0:
                assert spec.has(name) and mentioned, (name, text)
            elif labels[name] == 0.0:
                assert not spec.has(name)
                negated = re.search(NEGATION + f"(?:{pattern})", text) or (
                    name == "Cardiomegaly" and re.search(r"normal|not widened", text))
                assert negated, (name, text)
            else:
                assert not spec.has(name) and not mentioned, (name, text)


def test_labels_follow_the_chexpert_no_finding_rule():
    for _, _, labels in _reports(300):
        abnormal = any(labels[n] in (1.0, -1.0) for n in CHEXPERT_FINDINGS
                       if n not in ("No Finding", "Support Devices"))
        assert labels["No Finding"] == (None if abnormal else 1.0)
        assert set(labels) == set(CHEXPERT_FINDINGS)


def test_core_findings_are_common_independent_and_often_negated():
    specs, labels = [], []
    for spec, _, lab in _reports(1500):
        specs.append(spec)
        labels.append(lab)
    present = np.array([[s.has(n) for n in CORE_FINDINGS] for s in specs], float)
    rate = present.mean(0)
    assert ((rate > 0.2) & (rate < 0.4)).all(), dict(zip(CORE_FINDINGS, rate, strict=True))
    joint = present.T @ present / len(present)
    assert np.abs(joint - np.outer(rate, rate))[~np.eye(5, dtype=bool)].max() < 0.03
    normal = np.mean([lab["No Finding"] == 1.0 for lab in labels])
    assert 0.08 < normal < 0.3
    negated = np.array([[lab[n] == 0.0 for n in CORE_FINDINGS] for lab in labels]).mean(0)
    assert (negated > 0.35).all(), dict(zip(CORE_FINDINGS, negated, strict=True))


def test_reports_are_varied():
    sentences = [s for _, sections, _ in _reports(400)
                 for s in re.split(r"(?<=\.)\s+", sections.findings or "")]
    distinct = len(set(sentences))
    assert distinct > 250
    most_common = max(sentences.count(s) for s in set(sentences)) / len(sentences)
    assert most_common < 0.08


# --- the picture shows the finding ---------------------------------------------------------------

def _render(findings: tuple[Finding, ...], seed: int) -> np.ndarray:
    spec = StudySpec(findings, "PA", False, "M", 60)
    image = render_frontal(spec, np.random.default_rng(seed), (320, 320))
    return resize(image, (224, 224), anti_aliasing=True)


REGION = {  # rows, columns of a 224 px image where the finding must brighten the picture
    "Cardiomegaly": (slice(110, 160), slice(140, 200)),
    "Pleural Effusion": (slice(120, 170), slice(20, 90)),  # the patient's right base
    "Edema": (slice(70, 130), slice(40, 100)),
    "Consolidation": (slice(100, 160), slice(30, 100)),
    "Atelectasis": (slice(110, 160), slice(20, 100)),
}
CASES = {
    "Cardiomegaly": Finding("Cardiomegaly", "bilateral", "mild"),
    "Pleural Effusion": Finding("Pleural Effusion", "right", "mild"),
    "Edema": Finding("Edema", "bilateral", "mild"),
    "Consolidation": Finding("Consolidation", "right", "mild", "right lower lobe"),
    "Atelectasis": Finding("Atelectasis", "right", "mild"),
}


@pytest.mark.parametrize("name", CORE_FINDINGS)
def test_mild_core_findings_brighten_their_region_at_224_px(name):
    rows, cols = REGION[name]
    gains = []
    for seed in range(3):
        with_finding = _render((CASES[name],), seed)
        without = _render((), seed)
        gains.append(float((with_finding - without)[rows, cols].mean()))
    assert min(gains) > 0.03, gains


def test_labels_equal_what_the_project_chexpert_labeler_reads_from_the_report():
    chexpert = pytest.importorskip("evaluation.chexpert", reason="evaluation package not present")
    for _, sections, labels in _reports(300):
        text = " ".join(x for x in (sections.findings, sections.impression) if x)
        assert chexpert.label(text) == labels, text
