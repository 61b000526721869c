"""Helpers of the service tests: settings for an in-process API, small synthetic DICOM files.

The DICOM files carry fake patients and tiny images.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.core.config import Settings

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: `POSTGRES_ADMIN` as a libpq connection string (creates and drops the tests' schemas).
POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
#: Nothing listens here: enqueueing fails fast, and the database keeps the truth.
DEAD_REDIS = "redis://127.0.0.1:9/0"


def postgres_available() -> bool:
    """Whether PostgreSQL answers at 127.0.0.1:5432 (database test)."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


def api_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an in-process API without workers."""
    values = dict(database_url=database_url, redis_url=DEAD_REDIS, storage_dir=tmp_path / "store",
                  broker_timeout_s=0.5, reconcile_interval_s=0,
                  auth_attempts_per_minute=10_000)  # many tests share one client address
    values.update(overrides)
    return Settings(**values)


DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def make_dicom(
    *,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-000",
    view: str = "PA",
    size: int = 64,
    description: str = "CHEST PA",
    sop_class: str = DX_PRESENTATION,
    seed: int = 0,
    preamble: bytes = b"",
    with_pixels: bool = True,
    study_date: str | None = None,
    issuer_of_patient_id: str | None = None,
) -> bytes:
    """A Part 10 DX chest image with a fake patient; `preamble` lets tests plant bytes there."""
    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyDescription = description
    if study_date is not None:
        ds.StudyDate = study_date
    if issuer_of_patient_id is not None:
        ds.IssuerOfPatientID = issuer_of_patient_id
    ds.Modality = "DX"
    ds.ViewPosition = view
    if with_pixels:
        ds.Rows = size
        ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if preamble:
        data = preamble.ljust(128, b"\0")[:128] + data[128:]
    return data


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive of the given members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def multipart_related(parts: list[bytes], *, boundary: str = "dicomBoundary42", quoted: bool = True,
                      part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A STOW-RS body and its Content-Type (type parameter quoted or not)."""
    body = b""
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    type_param = '"application/dicom"' if quoted else "application/dicom"
    return body, f"multipart/related; type={type_param}; boundary={boundary}"


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


SENTENCES = [
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.",
    "IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "IMPRESSION: Right lower lobe opacity concerning for pneumonia.",
    "The heart size is normal. The mediastinum is unremarkable. No focal consolidation.",
    "Support devices: endotracheal tube terminates above the carina.",
    "There is mild pulmonary edema. Degenerative changes of the thoracic spine.",
]


def build_tiny_bundle(out_dir, *, preset: str = "tiny", max_new_tokens: int = 8, seed: int = 0):
    """A random-weight model bundle of a tiny preset with a small SentencePiece tokenizer."""
    from pathlib import Path

    import jax

    import modeling
    from modeling.bundle import save_bundle
    from modeling.tokenizer import train_tokenizer

    out_dir = Path(out_dir)
    config = modeling.PRESETS[preset]
    tokenizer = train_tokenizer(SENTENCES * 20, out_dir / "work" / "tokenizer.model",
                                vocab_size=min(400, config.text.vocab_size))
    # Random weights straight from the abstract shapes: init_params compiles per leaf (slow on CPU).
    rng = np.random.default_rng(seed)
    shapes = modeling.abstract_params(config)
    params = jax.tree_util.tree_map(
        lambda leaf: (rng.standard_normal(leaf.shape) * 0.02).astype(np.float32), shapes)
    return save_bundle(out_dir / "bundle", config, params, tokenizer,
                       metadata={"source": "random init for tests", "preset": preset},
                       generation={"max_new_tokens": max_new_tokens}, prompt="describe findings")
