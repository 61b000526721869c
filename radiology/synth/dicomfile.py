"""DICOM files for synthetic images: CR or DX objects with realistic headers and fake patients.

Names and identifiers are obviously synthetic yet shaped like real ones ("Mockley^Margaret^A",
patient ID "SYN4821937"), so tests elsewhere can assert that they never reach a log line.
Pixel encodings vary on purpose (12/16 bits stored, MONOCHROME1/2, six transfer syntaxes) so
that every decoding path of `radiology.dicom` sees synthetic data.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

CR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation

#: Transfer syntaxes written, with the probability of each.
TRANSFER_SYNTAXES: dict[UID, float] = {
    ExplicitVRLittleEndian: 0.3,
    ImplicitVRLittleEndian: 0.15,
    RLELossless: 0.2,
    JPEG2000Lossless: 0.2,
    JPEGLSLossless: 0.1,
    DeflatedExplicitVRLittleEndian: 0.05,
}
_ENCODERS = {RLELossless: "pylibjpeg", JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls"}

_FAMILY_HEAD = ("Mock", "Synth", "Fake", "Test", "Sample", "Faux", "Proxy", "Dummy", "Placebo")
_FAMILY_TAIL = ("ley", "worth", "ington", "son", "berg", "field", "stead", "ford", "wick", "more")
_GIVEN = {
    "F": ("Margaret", "Alice", "Rosa", "Helen", "Grace", "Nadia", "Irene", "Lucia", "June", "Mei"),
    "M": ("Arthur", "Victor", "Tomas", "Walter", "Henry", "Omar", "Felix", "Louis", "Ray", "Ken"),
}
_VENDORS = (
    ("FUJIFILM Corporation", "FCR PROFECT CS", "CR"),
    ("Agfa", "CR 85-X", "CR"),
    ("Carestream Health", "DRX-Revolution", "DX"),
    ("GE Healthcare", "Definium 8000", "DX"),
    ("Philips Medical Systems", "DigitalDiagnost", "DX"),
)


@dataclass(frozen=True)
class Patient:
    """A fake patient: realistic-looking, never a real person."""

    name: str
    patient_id: str
    sex: str
    birth_date: str  # YYYYMMDD, in the same shifted calendar as the study dates


def fake_patient(rng: np.random.Generator, sex: str, age: int, study_year: int) -> Patient:
    """Draw a fake patient of the given sex, whose age at `study_year` is `age`."""
    family = str(rng.choice(_FAMILY_HEAD)) + str(rng.choice(_FAMILY_TAIL))
    given = str(rng.choice(_GIVEN[sex]))
    initial = chr(ord("A") + int(rng.integers(26)))
    birth = f"{study_year - age:04d}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return Patient(f"{family}^{given}^{initial}", f"SYN{int(rng.integers(10**6, 10**7))}", sex,
                   birth)


@dataclass(frozen=True)
class Encoding:
    """How one image is stored."""

    modality: str  # CR or DX
    photometric: str  # MONOCHROME1 or MONOCHROME2
    bits_stored: int  # 12 or 16
    transfer_syntax: UID
    with_window: bool
    manufacturer: str
    model: str


def choose_encoding(rng: np.random.Generator) -> Encoding:
    """Draw modality, vendor, bit depth, photometric interpretation and transfer syntax."""
    manufacturer, model, modality = _VENDORS[int(rng.integers(len(_VENDORS)))]
    syntaxes = list(TRANSFER_SYNTAXES)
    p = np.array(list(TRANSFER_SYNTAXES.values()))
    ts = syntaxes[int(rng.choice(len(syntaxes), p=p / p.sum()))]
    return Encoding(
        modality=modality,
        photometric="MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2",
        bits_stored=12 if rng.random() < 0.5 else 16,
        transfer_syntax=ts,
        with_window=bool(rng.random() < 0.75),
        manufacturer=manufacturer,
        model=model,
    )


_VIEW_CODES = {
    "PA": ("R-44D2A", "postero-anterior"),
    "AP": ("R-44D2C", "antero-posterior"),
    "LATERAL": ("R-10232", "lateral"),
    "LL": ("R-10236", "left lateral"),
}


def encode_image(
    image: np.ndarray,
    *,
    rng: np.random.Generator,
    encoding: Encoding,
    patient: Patient,
    view: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    study_date: str,
    study_time: str,
    accession: str,
    instance_number: int,
    procedure: str,
    erect: bool,
) -> bytes:
    """A Part-10 DICOM file holding `image` (float32 [0, 1], bright = dense) as `view`."""
    maxval = (1 << encoding.bits_stored) - 1
    lo = rng.uniform(0.0, 0.08) * maxval
    hi = rng.uniform(0.7, 1.0) * maxval
    stored = np.round(lo + image.astype(np.float64) * (hi - lo))
    if encoding.photometric == "MONOCHROME1":
        stored = maxval - stored
    pixels = np.clip(stored, 0, maxval).astype(np.uint16)

    ds = Dataset()
    sop_class = CR_STORAGE if encoding.modality == "CR" else DX_STORAGE
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if encoding.modality == "CR" else ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
    ds.AccessionNumber = accession
    ds.Modality = encoding.modality
    ds.Manufacturer = encoding.manufacturer
    ds.InstitutionName = "Synthetic General Hospital"
    ds.ReferringPhysicianName = "Fakeworth^Robin"
    ds.StudyDescription = procedure
    ds.SeriesDescription = {"PA": "CHEST PA", "AP": "CHEST AP PORTABLE",
                            "LATERAL": "CHEST LATERAL", "LL": "CHEST LATERAL"}[view]
    ds.ManufacturerModelName = encoding.model
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = ["A", "F"] if view in ("LATERAL", "LL") else (
        ["L", "F"] if view == "PA" else ["R", "F"])
    code, meaning = _VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = meaning
    ds.ViewCodeSequence = [item]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = accession[-6:]
    ds.SeriesNumber = instance_number
    ds.InstanceNumber = instance_number
    if encoding.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PositionerType = "NONE"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = encoding.photometric
    ds.Rows, ds.Columns = pixels.shape
    spacing = round(float(rng.uniform(380, 430)) / max(pixels.shape), 4)
    ds.PixelSpacing = [spacing, spacing]
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = encoding.bits_stored
    ds.HighBit = encoding.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if encoding.with_window:
        ds.WindowCenter = round((pixels.min() + float(pixels.max())) / 2)
        ds.WindowWidth = max(2, int(pixels.max()) - int(pixels.min()))
    ds.PatientOrientationCodeSequence = [_code("F-10440" if erect else "F-10450",
                                               "Erect" if erect else "Recumbent")]
    ds.PixelData = pixels.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta

    ts = encoding.transfer_syntax
    if ts in _ENCODERS:
        ds.compress(ts, pixels, encoding_plugin=_ENCODERS[ts], generate_instance_uid=False)
    else:
        meta.TransferSyntaxUID = ts
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = meaning
    return item


def uid(*parts: object) -> str:
    """A deterministic UID (2.25 form) derived from `parts`."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"
