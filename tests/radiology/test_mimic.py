"""MIMIC-CXR trees: the layout check and reading studies into examples (with skip reasons)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from radiology.mimic import (
    CHEXPERT_LABELS,
    MimicError,
    check_layout,
    read_dataset,
    read_table,
    report_path,
    study_folder,
)
from radiology.synth import write_dataset

STUDIES = 8


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("mimic") / "dcm", STUDIES, seed=5, workers=1,
                         size=(192, 160), progress=False)


@pytest.fixture
def tree(source, tmp_path) -> Path:
    """A private copy each test may damage."""
    return Path(shutil.copytree(source, tmp_path / "tree"))


def _rows(root: Path, name: str) -> list[dict[str, str]]:
    return read_table(root / f"mimic-cxr-2.0.0-{name}.csv.gz")[1]


def _rewrite(root: Path, name: str, text: str) -> None:
    (root / f"mimic-cxr-2.0.0-{name}.csv.gz").write_bytes(gzip.compress(text.encode()))


def test_reads_every_study_with_its_split_report_sections_and_labels(source):
    dataset = read_dataset(source)
    assert len(dataset) + sum(dataset.skipped.values()) == STUDIES
    chexpert = {r["study_id"]: r for r in _rows(source, "chexpert")}
    splits = {r["study_id"]: r["split"] for r in _rows(source, "split")}
    for example in dataset:
        assert example.split == splits[str(example.study_id)]
        assert example.view in ("PA", "AP")
        assert example.frontal_path.is_file() and example.frontal_path.suffix == ".dcm"
        assert example.impression and example.target
        assert example.target == (example.findings or example.impression)
        row = chexpert[str(example.study_id)]
        for name in CHEXPERT_LABELS:
            expected = float(row[name]) if row[name] else None
            assert example.labels[name] == expected


def test_split_filter_keeps_only_that_split(source):
    everything = read_dataset(source)
    for split in ("train", "validate", "test"):
        part = read_dataset(source, split)
        assert all(example.split == split for example in part)
        assert len(part) == sum(example.split == split for example in everything)
    with pytest.raises(ValueError, match="split must be one of"):
        read_dataset(source, "dev")


def test_load_image_decodes_the_frontal_dicom(source):
    example = read_dataset(source)[0]
    pixels = example.load_image()
    assert pixels.dtype == np.float32 and pixels.shape == (192, 160)
    assert 0.0 <= pixels.min() < pixels.max() <= 1.0


def test_lateral_is_kept_as_a_second_image_when_the_study_has_one(source):
    examples = list(read_dataset(source))
    with_lateral = [e for e in examples if e.lateral_path is not None]
    assert with_lateral, "the seed should give at least one PA + lateral study"
    for example in with_lateral:
        assert example.lateral_path.is_file() and example.lateral_path != example.frontal_path
        assert example.load_lateral().ndim == 2


def test_study_without_a_report_is_skipped_as_no_report(tree):
    first = _rows(tree, "split")[0]
    report_path(tree, first["subject_id"], first["study_id"]).unlink()
    dataset = read_dataset(tree)
    assert dataset.skipped["no report"] == 1
    assert int(first["study_id"]) not in {e.study_id for e in dataset}


def test_study_whose_frontal_file_is_gone_is_skipped_as_missing_file(tree):
    example = read_dataset(tree)[0]
    example.frontal_path.unlink()
    dataset = read_dataset(tree)
    assert dataset.skipped["missing file"] == 1
    assert example.study_id not in {e.study_id for e in dataset}


def test_report_without_findings_is_skipped_only_when_findings_are_required(tree):
    example = read_dataset(tree)[0]
    path = report_path(tree, example.subject_id, example.study_id)
    path.write_text(" FINAL REPORT\n INDICATION: Cough.\n\n IMPRESSION: No acute process.\n")
    relaxed = {e.study_id: e for e in read_dataset(tree)}
    assert relaxed[example.study_id].target == "No acute process."
    strict = read_dataset(tree, require_findings=True)
    assert strict.skipped["no findings"] >= 1
    assert example.study_id not in {e.study_id for e in strict}


def test_study_with_only_a_lateral_is_skipped_as_no_frontal(tree):
    meta = _rows(tree, "metadata")
    target = meta[0]["study_id"]
    header = ",".join(meta[0])
    lines = [header]
    for row in meta:
        if row["study_id"] == target:
            row = {**row, "ViewPosition": "LATERAL"}
        lines.append(",".join(row.values()))
    _rewrite(tree, "metadata", "\n".join(lines) + "\n")
    dataset = read_dataset(tree)
    assert dataset.skipped["no frontal"] == 1
    assert int(target) not in {e.study_id for e in dataset}


def test_reading_a_folder_without_tables_names_the_missing_table(tmp_path):
    with pytest.raises(MimicError, match="mimic-cxr-2.0.0-split.csv"):
        read_dataset(tmp_path)


def test_jpg_variant_reads_jpeg_images_with_the_same_tables(tmp_path):
    root = write_dataset(tmp_path / "jpg", 3, seed=2, workers=1, image_format="jpg",
                         size=(128, 128), progress=False)
    assert check_layout(root) == []
    dataset = read_dataset(root)
    assert len(dataset) == 3
    example = dataset[0]
    assert example.frontal_path.suffix == ".jpg"
    pixels = example.load_image()
    assert pixels.dtype == np.float32 and pixels.shape == (128, 128) and pixels.max() <= 1.0


def test_jpg_tree_can_take_its_reports_from_another_tree(source, tmp_path):
    images = Path(shutil.copytree(source, tmp_path / "images"))
    for report in (images / "files").rglob("s*.txt"):
        report.unlink()
    assert read_dataset(images).skipped["no report"] == STUDIES
    assert len(read_dataset(images, reports_root=source)) == STUDIES


# --- layout check ------------------------------------------------------------------------------


def test_layout_check_accepts_the_tree(source):
    assert check_layout(source) == []


def test_layout_check_reports_a_missing_table(tree):
    (tree / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    problems = check_layout(tree)
    assert any("missing table mimic-cxr-2.0.0-chexpert" in p for p in problems)


def test_layout_check_reports_wrong_columns(tree):
    _rewrite(tree, "split", "dicom_id,study,subject_id,split\n")
    assert any("mimic-cxr-2.0.0-split.csv.gz has columns" in p for p in check_layout(tree))


def test_layout_check_reports_an_unknown_split_value(tree):
    rows = _rows(tree, "split")
    lines = ["dicom_id,study_id,subject_id,split"] + [
        f"{r['dicom_id']},{r['study_id']},{r['subject_id']},{'dev' if i == 0 else r['split']}"
        for i, r in enumerate(rows)]
    _rewrite(tree, "split", "\n".join(lines) + "\n")
    assert any("train/validate/test: dev" in p for p in check_layout(tree))


def test_layout_check_reports_a_missing_image_and_a_stray_file(tree):
    row = _rows(tree, "split")[0]
    folder = study_folder(tree, row["subject_id"], row["study_id"])
    (folder / f"{row['dicom_id']}.dcm").rename(folder / "renamed.dcm")
    problems = check_layout(tree)
    assert any(p.startswith("images listed in the split table but not on disk") for p in problems)
    assert any(p.startswith("files in files/ that are not listed") and "renamed.dcm" in p
               for p in problems)


def test_layout_check_reports_a_study_without_report(tree):
    row = _rows(tree, "split")[0]
    report_path(tree, row["subject_id"], row["study_id"]).unlink()
    assert any(p.startswith("studies without a report") for p in check_layout(tree))
    assert check_layout(tree, check_reports=False) == []


def test_layout_check_reports_an_invalid_chexpert_value(tree):
    rows = _rows(tree, "chexpert")
    header = ["subject_id", "study_id", *CHEXPERT_LABELS]
    lines = [",".join(header)]
    for i, row in enumerate(rows):
        values = [row[k] for k in header]
        if i == 0:
            values[2] = "2.0"
        lines.append(",".join(values))
    _rewrite(tree, "chexpert", "\n".join(lines) + "\n")
    assert any("CheXpert values other than" in p and "2.0" in p for p in check_layout(tree))


def test_table_times_without_leading_zeros_sort_in_time_order():
    from radiology.mimic import _acquired

    morning, evening = _acquired("21800506", "84935.0"), _acquired("21800506", "213014.531")
    assert morning < evening
    assert _acquired(None, "1.0") is None
