"""MIMIC-CXR on disk: check a tree's layout and read it into training examples.

Layout (the real releases; `radreport synth` writes the same)::

    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.dcm   (or .jpg)
    files/p10/p10000032/s50414267.txt                                               (report)
    mimic-cxr-2.0.0-split.csv(.gz)      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-metadata.csv(.gz)   dicom_id, subject_id, study_id, ViewPosition, Rows, ...
    mimic-cxr-2.0.0-chexpert.csv(.gz)   subject_id, study_id and the 14 CheXpert labels

MIMIC-CXR-JPG has `.jpg` images and the same tables; its reports come from MIMIC-CXR, so
`read_dataset(..., reports_root=...)` may point at another tree. A study becomes one `Example`
(frontal image chosen by `radiology.studies.choose_views`, optional lateral, report sections,
target text, split, labels); studies that cannot are counted in `Dataset.skipped` by reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiology.images import read_image
from radiology.labels import CHEXPERT_14

TABLE_STEMS = {
    "split": "mimic-cxr-2.0.0-split",
    "metadata": "mimic-cxr-2.0.0-metadata",
    "chexpert": "mimic-cxr-2.0.0-chexpert",
}
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning",
)
CHEXPERT_LABELS = CHEXPERT_14
CHEXPERT_COLUMNS = ("subject_id", "study_id", *CHEXPERT_LABELS)
SPLITS = ("train", "validate", "test")
TARGETS = ("findings", "impression", "findings_impression")

_SUBJECT = re.compile(r"^[1-9]\d{7}$")
_STUDY = re.compile(r"^[1-9]\d{7}$")
_DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
_LABEL_VALUES = {"", "1.0", "0.0", "-1.0", "1", "0", "-1"}


class MimicError(Exception):
    """A MIMIC-CXR tree cannot be read; the message says what is missing and where."""


# --- paths and tables -----------------------------------------------------------------------------


def study_folder(root: str | Path, subject_id: int | str, study_id: int | str) -> Path:
    """`root/files/pNN/pNNNNNNNN/sNNNNNNNN` (the image folder of one study)."""
    subject = str(subject_id)
    return Path(root) / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}"


def report_path(root: str | Path, subject_id: int | str, study_id: int | str) -> Path:
    """`root/files/pNN/pNNNNNNNN/sNNNNNNNN.txt` (the report of one study)."""
    return study_folder(root, subject_id, study_id).with_suffix(".txt")


def table_path(root: str | Path, name: str) -> Path | None:
    """The `.csv.gz` or `.csv` file of table `name` ("split", "metadata", "chexpert"), if any."""
    stem = TABLE_STEMS[name]
    for candidate in (Path(root) / f"{stem}.csv.gz", Path(root) / f"{stem}.csv"):
        if candidate.is_file():
            return candidate
    return None


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts of strings) of a `.csv` or `.csv.gz` table."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise MimicError(
                f"{path.name} is not a valid gzip file ({exc}); download it again."
            ) from exc
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _label(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


# --- examples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One study ready for training: frontal image (optional lateral), sections, target, labels."""

    subject_id: int
    study_id: int
    dicom_id: str
    frontal_path: Path
    view: str | None
    lateral_path: Path | None
    split: str | None
    indication: str | None
    comparison: str | None
    findings: str | None
    impression: str | None
    target: str
    labels: dict[str, float | None] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """The frontal image: float32 H×W in [0, 1], bright = dense (DICOM or JPEG)."""
        return read_image(self.frontal_path)

    def load_lateral(self) -> np.ndarray | None:
        """The lateral image, or None when the study has none."""
        return None if self.lateral_path is None else read_image(self.lateral_path)


class Dataset(Sequence[Example]):
    """The examples of a MIMIC-CXR tree (a sized, indexable iterable) and why others were
    skipped."""

    def __init__(self, root: Path, examples: list[Example], skipped: Counter[str]):
        self.root = root
        self.examples = examples
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index):  # type: ignore[override]
        return self.examples[index]

    def __repr__(self) -> str:
        return f"Dataset({len(self)} examples, skipped={dict(self.skipped)})"


@dataclass(frozen=True)
class _Instance:
    """A table row shaped like `radiology.studies.InstanceLike`, for the shared view rule."""

    sop_uid: str
    view: str | None
    rows: int
    columns: int
    acquisition_datetime: str | None
    study_uid: str | None = None
    series_number: int | None = None
    instance_number: int | None = None


def _int(value: str | None) -> int:
    try:
        return int(float(value)) if value not in (None, "") else 0
    except ValueError:
        return 0


def _acquired(date: str | None, time: str | None) -> str | None:
    """'YYYYMMDDHHMMSS.fff' from the tables' StudyDate and StudyTime (a float that lost its
    leading zeros: 84935.0 is 08:49:35), so that the strings sort in time order."""
    if not date:
        return None
    try:
        clock = f"{float(time):010.3f}" if time else ""
    except ValueError:
        clock = ""
    return f"{int(float(date)):08d}{clock}"


def _image_suffix(root: Path, first_folder: Path | None, image_format: str) -> str:
    if image_format in ("dcm", "jpg"):
        return image_format
    if image_format != "auto":
        raise ValueError(f"image_format must be 'auto', 'dcm' or 'jpg', not {image_format!r}")
    if first_folder is not None and first_folder.is_dir():
        for child in first_folder.iterdir():
            if child.suffix in (".dcm", ".jpg"):
                return child.suffix[1:]
    return "dcm"


def _target(sections, target: str) -> str:
    findings, impression = sections.findings, sections.impression
    if target == "findings":
        return findings or impression or ""
    if target == "impression":
        return impression or ""
    return " ".join(x for x in (findings, impression) if x)


def read_dataset(
    root: str | Path,
    split: str | None = None,
    *,
    require_findings: bool = False,
    require_frontal: bool = True,
    target: str = "findings",
    image_format: str = "auto",
    reports_root: str | Path | None = None,
    check_files: bool = True,
    limit: int | None = None,
) -> Dataset:
    """Read the studies of a MIMIC-CXR (or MIMIC-CXR-JPG) tree as training examples.

    `split` keeps one of "train", "validate", "test". `target` is the text a model learns to
    write: "findings" (the FINDINGS section, or the IMPRESSION when there is none and
    `require_findings` is False), "impression", or "findings_impression". A study is skipped,
    and counted in `Dataset.skipped` under its reason, when it has no report ("no report"),
    no FINDINGS section while `require_findings` ("no findings"), no text for the target
    ("no target text"), no frontal image while `require_frontal` ("no frontal"), or when its
    chosen image is not on disk ("missing file").
    """
    from radiology.reports import parse
    from radiology.studies import choose_views

    root = Path(root)
    reports_root = Path(reports_root) if reports_root is not None else root
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    split_file = table_path(root, "split")
    if split_file is None:
        raise MimicError(
            f"No mimic-cxr-2.0.0-split.csv(.gz) in {root}: this is not a MIMIC-CXR tree, or the "
            "tables were not downloaded next to the files/ folder.")
    _, split_rows = read_table(split_file)
    meta_file = table_path(root, "metadata")
    metadata = {r["dicom_id"]: r for r in read_table(meta_file)[1]} if meta_file else {}
    chex_file = table_path(root, "chexpert")
    labels_by_study: dict[str, dict[str, float | None]] = {}
    if chex_file is not None:
        for row in read_table(chex_file)[1]:
            labels_by_study[row["study_id"]] = {k: _label(row.get(k)) for k in CHEXPERT_LABELS}

    studies: dict[tuple[str, str], list[dict[str, str]]] = {}
    split_of: dict[tuple[str, str], str] = {}
    for row in split_rows:
        if split is not None and row["split"] != split:
            continue
        key = (row["subject_id"], row["study_id"])
        studies.setdefault(key, []).append(row)
        split_of[key] = row["split"]

    first = next(iter(studies), None)
    suffix = _image_suffix(root, study_folder(root, *first) if first else None, image_format)
    skipped: Counter[str] = Counter()
    examples: list[Example] = []
    for (subject, study), rows in studies.items():
        if limit is not None and len(examples) >= limit:
            break
        instances = []
        for row in rows:
            meta = metadata.get(row["dicom_id"], {})
            view = (meta.get("ViewPosition") or "").strip().upper() or None
            when = _acquired(meta.get("StudyDate"), meta.get("StudyTime"))
            instances.append(_Instance(row["dicom_id"], view, _int(meta.get("Rows")),
                                       _int(meta.get("Columns")), when))
        frontal, lateral, known = choose_views(instances)
        if frontal is None or (require_frontal and not known):
            skipped["no frontal"] += 1
            continue
        report_file = report_path(reports_root, subject, study)
        if not report_file.is_file():
            skipped["no report"] += 1
            continue
        sections = parse(report_file.read_text(errors="replace"))
        if require_findings and not sections.findings:
            skipped["no findings"] += 1
            continue
        text = _target(sections, target)
        if not text:
            skipped["no target text"] += 1
            continue
        folder = study_folder(root, subject, study)
        frontal_path = folder / f"{frontal.sop_uid}.{suffix}"
        if check_files and not frontal_path.is_file():
            skipped["missing file"] += 1
            continue
        lateral_path = folder / f"{lateral.sop_uid}.{suffix}" if lateral is not None else None
        if lateral_path is not None and check_files and not lateral_path.is_file():
            lateral_path = None
        examples.append(Example(
            subject_id=int(subject), study_id=int(study), dicom_id=frontal.sop_uid,
            frontal_path=frontal_path, view=frontal.view, lateral_path=lateral_path,
            split=split_of[(subject, study)], indication=sections.indication,
            comparison=sections.comparison, findings=sections.findings,
            impression=sections.impression, target=text,
            labels=labels_by_study.get(study, dict.fromkeys(CHEXPERT_LABELS)),
        ))
    return Dataset(root, examples, skipped)


# --- layout check ---------------------------------------------------------------------------------


def check_layout(root: str | Path, *, max_listed: int = 5, check_reports: bool = True) -> list[str]:
    """Problems that keep `root` from being a MIMIC-CXR(-JPG) tree; empty when it is one.

    Checks the three tables (present, exact columns of the release, valid values and ids), that
    every image listed in the split table is at `files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.dcm`
    (or `.jpg`), that each study has its report `sNNNNNNNN.txt` (unless `check_reports` is
    False, e.g. for a MIMIC-CXR-JPG tree without reports), that the tables agree on their ids,
    and that nothing else lies in `files/`. At most `max_listed` examples per kind are named.
    """
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root} is not a directory"]

    def listed(kind: str, items: list[str]) -> None:
        if items:
            more = f" (and {len(items) - max_listed} more)" if len(items) > max_listed else ""
            problems.append(f"{kind}: {', '.join(items[:max_listed])}{more}")

    tables: dict[str, list[dict[str, str]]] = {}
    expected = {"split": SPLIT_COLUMNS, "metadata": METADATA_COLUMNS, "chexpert": CHEXPERT_COLUMNS}
    for name, columns in expected.items():
        path = table_path(root, name)
        if path is None:
            problems.append(f"missing table {TABLE_STEMS[name]}.csv.gz (or .csv)")
            continue
        try:
            header, rows = read_table(path)
        except (MimicError, UnicodeDecodeError, csv.Error) as exc:
            problems.append(f"{path.name} cannot be read: {exc}")
            continue
        if tuple(header) != columns:
            problems.append(f"{path.name} has columns {header}, expected {list(columns)}")
            continue
        tables[name] = rows

    split_rows = tables.get("split", [])
    listed("split values other than train/validate/test",
           sorted({r["split"] for r in split_rows} - set(SPLITS)))
    listed("malformed subject_id", [r["subject_id"] for r in split_rows
                                    if not _SUBJECT.match(r["subject_id"])])
    listed("malformed study_id", [r["study_id"] for r in split_rows
                                  if not _STUDY.match(r["study_id"])])
    listed("malformed dicom_id", [r["dicom_id"] for r in split_rows
                                  if not _DICOM_ID.match(r["dicom_id"])])
    bad_labels = [f"{r['study_id']}:{k}={r[k]!r}" for r in tables.get("chexpert", [])
                  for k in CHEXPERT_LABELS if r[k].strip() not in _LABEL_VALUES]
    listed("CheXpert values other than 1.0/0.0/-1.0/blank", bad_labels)

    if "metadata" in tables and split_rows:
        in_meta = {r["dicom_id"] for r in tables["metadata"]}
        listed("images in the split table but not in the metadata table",
               sorted({r["dicom_id"] for r in split_rows} - in_meta))
        listed("empty ViewPosition or size in the metadata table",
               [r["dicom_id"] for r in tables["metadata"]
                if _int(r["Rows"]) <= 0 or _int(r["Columns"]) <= 0])
    studies = {(r["subject_id"], r["study_id"]) for r in split_rows}
    if "chexpert" in tables:
        labelled = {(r["subject_id"], r["study_id"]) for r in tables["chexpert"]}
        listed("studies in the CheXpert table but not in the split table",
               sorted(f"s{s}" for _, s in labelled - studies))

    files = root / "files"
    if not files.is_dir():
        problems.append(f"missing folder {files}")
        return problems
    expected_paths: set[Path] = set()
    missing_images: list[str] = []
    missing_reports: list[str] = []
    first_folder = study_folder(root, *next(iter(studies))) if studies else None
    suffix = _image_suffix(root, first_folder, "auto")
    for row in split_rows:
        folder = study_folder(root, row["subject_id"], row["study_id"])
        path = folder / f"{row['dicom_id']}.{suffix}"
        expected_paths.add(path)
        if not path.is_file():
            missing_images.append(path.relative_to(root).as_posix())
    for subject, study in sorted(studies):
        report = report_path(root, subject, study)
        expected_paths.add(report)
        if check_reports and not report.is_file():
            missing_reports.append(report.relative_to(root).as_posix())
    listed("images listed in the split table but not on disk", missing_images)
    listed("studies without a report", missing_reports)
    stray = [p.relative_to(root).as_posix() for p in sorted(files.rglob("*"))
             if p.is_file() and p not in expected_paths]
    listed("files in files/ that are not listed in the tables", stray)
    return problems
