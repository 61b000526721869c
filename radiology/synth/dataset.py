"""Synthetic MIMIC-CXR: one study in memory (`generate_study`) or a whole tree on disk.

The tree has the layout and tables of the real release::

    files/p10/p10000032/s50414267/<dicom_id>.dcm      (or .jpg for the MIMIC-CXR-JPG variant)
    files/p10/p10000032/s50414267.txt                 the report
    mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, ViewPosition, Rows, ...
    mimic-cxr-2.0.0-chexpert.csv.gz    subject_id, study_id, the 14 CheXpert labels
    cxr-record-list.csv.gz, cxr-study-list.csv.gz

Every study draws from its own random stream, seeded by (seed, study index), so the output does
not depend on the number of worker processes.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiology.mimic import CHEXPERT_COLUMNS, METADATA_COLUMNS, SPLIT_COLUMNS
from radiology.synth.chest import render_frontal, render_lateral
from radiology.synth.dicomfile import choose_encoding, encode_image, fake_patient, uid
from radiology.synth.findings import StudySpec, sample_spec
from radiology.synth.report import Labels, write_report

#: Frontal image sizes (rows, columns) and how often each is drawn.
IMAGE_SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((512, 512), 0.4),
    ((576, 480), 0.2),
    ((640, 544), 0.2),
    ((768, 640), 0.12),
    ((1024, 864), 0.08),
)
SPLIT_FRACTIONS = {"train": 0.8, "validate": 0.1, "test": 0.1}



@dataclass
class SyntheticImage:
    """One image of a study: pixels (float32 H×W in [0, 1], bright = dense) and its file."""

    dicom_id: str
    view: str  # PA, AP, LATERAL or LL
    pixels: np.ndarray
    dicom: bytes | None = None


@dataclass
class SyntheticStudy:
    """A generated study: what it shows, its images, its report and CheXpert labels."""

    subject_id: int
    study_id: int
    spec: StudySpec
    report: str
    labels: Labels
    images: list[SyntheticImage] = field(default_factory=list)
    study_date: str = ""
    study_time: str = ""
    procedure: str = ""

    @property
    def frontal(self) -> SyntheticImage:
        """The frontal (PA or AP) image."""
        return next(im for im in self.images if im.view in ("PA", "AP"))


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(rng.integers(0, 2**32)):08x}" for _ in range(5))


def choose_size(rng: np.random.Generator) -> tuple[int, int]:
    """A frontal image size (rows, columns) drawn from `IMAGE_SIZES`."""
    sizes, weights = zip(*IMAGE_SIZES, strict=True)
    w = np.asarray(weights)
    return sizes[int(rng.choice(len(sizes), p=w / w.sum()))]


def _procedure(report: str) -> str:
    for line in report.splitlines():
        if line.strip().startswith("EXAMINATION:"):
            return line.split(":", 1)[1].strip()
    return "CHEST (PA AND LAT)"


def generate_study(
    rng: np.random.Generator | int,
    *,
    subject_id: int = 10000000,
    study_id: int = 50000000,
    size: tuple[int, int] | None = None,
    dicom: bool = True,
    lateral: bool | None = None,
    prevalence: dict[str, float] | None = None,
    spec: StudySpec | None = None,
) -> SyntheticStudy:
    """Generate one study in memory: images (and their DICOM bytes), report text and labels.

    `rng` is a numpy Generator or an integer seed. `size` fixes the frontal image size (rows,
    columns); by default one of `IMAGE_SIZES` is drawn. `lateral` forces a lateral image on or
    off (default: as the drawn study says). `spec` renders given findings instead of drawing them.

    >>> study = generate_study(0, size=(256, 256), dicom=False)
    >>> study.frontal.pixels.shape, sorted(study.labels)[:2]
    ((256, 256), ['Atelectasis', 'Cardiomegaly'])
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    # Separate streams, so that changing the image code does not change the report, etc.
    spec_rng, report_rng, image_rng, header_rng = rng.spawn(4)
    if spec is None:
        spec = sample_spec(spec_rng, prevalence)
    report, labels = write_report(spec, report_rng)
    drawn_size = choose_size(header_rng)
    size = drawn_size if size is None else size
    with_lateral = spec.with_lateral if lateral is None else lateral
    year = int(header_rng.integers(2110, 2206))
    month, day = int(header_rng.integers(1, 13)), int(header_rng.integers(1, 29))
    study_date = f"{year:04d}{month:02d}{day:02d}"
    study_time = (f"{int(header_rng.integers(0, 24)):02d}{int(header_rng.integers(0, 60)):02d}"
                  f"{int(header_rng.integers(0, 60)):02d}.{int(header_rng.integers(0, 1000)):03d}")
    study = SyntheticStudy(subject_id, study_id, spec, report, labels, [], study_date, study_time,
                           _procedure(report))
    study.images.append(SyntheticImage(_dicom_id(header_rng), spec.view,
                                       render_frontal(spec, image_rng, size)))
    if with_lateral:
        lat_size = (size[0], size[0]) if header_rng.random() < 0.5 else size
        lat_view = "LL" if header_rng.random() < 0.15 else "LATERAL"
        study.images.append(SyntheticImage(_dicom_id(header_rng), lat_view,
                                           render_lateral(spec, image_rng, lat_size)))
    if dicom:
        patient = fake_patient(header_rng, spec.sex, spec.age, year)
        study_uid = uid("study", subject_id, study_id, study_date, study_time)
        accession = f"SYN{int(header_rng.integers(10**7, 10**8))}"
        for number, image in enumerate(study.images, 1):
            image.dicom = encode_image(
                image.pixels, rng=header_rng, encoding=choose_encoding(header_rng),
                patient=patient, view=image.view, study_uid=study_uid,
                series_uid=uid("series", study_uid, number), sop_uid=uid("sop", image.dicom_id),
                study_date=study_date, study_time=study_time, accession=accession,
                instance_number=number, procedure=study.procedure, erect=spec.view == "PA")
    return study


# --- the tree on disk --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    index: int
    seed: int
    subject_id: int
    study_id: int
    split: str
    out: str
    image_format: str
    prevalence: tuple[tuple[str, float], ...] | None
    size: tuple[int, int] | None


def _plan(studies: int, seed: int) -> list[tuple[int, int, str]]:
    """(subject_id, study_id, split) for each study: 1-3 studies per subject, split by subject."""
    rng = np.random.default_rng([seed, 0x5EED])
    subjects = 10000000 + rng.choice(10000000, size=studies, replace=False)
    study_ids = 50000000 + rng.choice(10000000, size=studies, replace=False)
    names = list(SPLIT_FRACTIONS)
    p = np.array(list(SPLIT_FRACTIONS.values()))
    out = []
    i = 0
    s = 0
    while i < studies:
        n = min(studies - i, int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])))
        split = names[int(rng.choice(len(names), p=p))]
        for _ in range(n):
            out.append((int(subjects[s]), int(study_ids[i]), split))
            i += 1
        s += 1
    return out


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    """`files/pNN/pNNNNNNNN/sNNNNNNNN` under `root`."""
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _to_jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(
        buffer, format="JPEG", quality=95)
    return buffer.getvalue()


_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral",
                 "LL": "left lateral"}


def _write_one(job: _Job) -> dict[str, list[dict]]:
    rng = np.random.default_rng([job.seed, job.index])
    study = generate_study(
        rng, subject_id=job.subject_id, study_id=job.study_id,
        dicom=job.image_format == "dcm", size=job.size,
        prevalence=dict(job.prevalence) if job.prevalence else None)
    root = Path(job.out)
    folder = study_dir(root, job.subject_id, job.study_id)
    folder.mkdir(parents=True, exist_ok=True)
    folder.with_suffix(".txt").write_text(study.report)
    rows: dict[str, list[dict]] = {"metadata": [], "split": [], "records": []}
    for image in study.images:
        path = folder / f"{image.dicom_id}.{job.image_format}"
        data = image.dicom if job.image_format == "dcm" else _to_jpeg(image.pixels)
        assert data is not None
        path.write_bytes(data)
        rows["metadata"].append({
            "dicom_id": image.dicom_id, "subject_id": job.subject_id, "study_id": job.study_id,
            "PerformedProcedureStepDescription": study.procedure,
            "ViewPosition": image.view, "Rows": image.pixels.shape[0],
            "Columns": image.pixels.shape[1], "StudyDate": int(study.study_date),
            "StudyTime": float(study.study_time),
            "ProcedureCodeSequence_CodeMeaning": study.procedure,
            "ViewCodeSequence_CodeMeaning": _VIEW_MEANING[image.view],
            "PatientOrientationCodeSequence_CodeMeaning": "Erect" if study.spec.view == "PA"
            else "Recumbent",
        })
        rows["split"].append({"dicom_id": image.dicom_id, "study_id": job.study_id,
                              "subject_id": job.subject_id, "split": job.split})
        rows["records"].append({"subject_id": job.subject_id, "study_id": job.study_id,
                                "dicom_id": image.dicom_id,
                                "path": path.relative_to(root).as_posix()})
    rows["chexpert"] = [{"subject_id": job.subject_id, "study_id": job.study_id, **study.labels}]
    rows["studies"] = [{"subject_id": job.subject_id, "study_id": job.study_id,
                        "path": folder.with_suffix(".txt").relative_to(root).as_posix()}]
    return rows


def _write_table(path: Path, columns: Iterable[str], rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    text = frame.to_csv(index=False)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.encode())


def _run(jobs: list[_Job], workers: int, progress: bool) -> Iterator[dict[str, list[dict]]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="study", desc="synthetic studies", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield _write_one(job)
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for rows in pool.map(_write_one, jobs, chunksize=4):
                    yield rows
                    bar.update()
    finally:
        bar.close()


def write_dataset(
    out: str | os.PathLike,
    studies: int,
    seed: int = 0,
    workers: int | None = None,
    *,
    image_format: str = "dcm",
    prevalence: dict[str, float] | None = None,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic MIMIC-CXR tree of `studies` studies under `out`; return its root.

    `image_format` is "dcm" (MIMIC-CXR) or "jpg" (the MIMIC-CXR-JPG variant). `workers`
    processes render in parallel (default: all CPUs); the result is the same for any number.
    `size` fixes every frontal image's (rows, columns) instead of drawing from `IMAGE_SIZES`;
    `prevalence` overrides the probability of chosen findings (see `findings.PREVALENCE`).
    """
    if image_format not in ("dcm", "jpg"):
        raise ValueError(f"image_format must be 'dcm' or 'jpg', not {image_format!r}")
    if studies < 1:
        raise ValueError("studies must be at least 1")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 1 if workers is None else workers
    frozen_prev = tuple(sorted(prevalence.items())) if prevalence else None
    jobs = [_Job(i, seed, subj, study, split, str(root), image_format, frozen_prev, size)
            for i, (subj, study, split) in enumerate(_plan(studies, seed))]
    tables: dict[str, list[dict]] = {"metadata": [], "split": [], "records": [], "chexpert": [],
                                     "studies": []}
    for rows in _run(jobs, workers, progress):
        for key, value in rows.items():
            tables[key].extend(value)
    _write_table(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_COLUMNS, tables["metadata"])
    _write_table(root / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, tables["split"])
    _write_table(root / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT_COLUMNS, tables["chexpert"])
    _write_table(root / "cxr-record-list.csv.gz", ("subject_id", "study_id", "dicom_id", "path"),
                 tables["records"])
    _write_table(root / "cxr-study-list.csv.gz", ("subject_id", "study_id", "path"),
                 tables["studies"])
    (root / "SYNTHETIC.txt").write_text(
        "Synthetic chest radiographs and reports in the MIMIC-CXR layout, made by "
        f"`radreport synth` (studies={studies}, seed={seed}, format={image_format}).\n"
        "No real patient data: every name, identifier, date and image is generated.\n")
    return root
