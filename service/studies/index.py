"""The search index of stored instances (QIDO-RS, WADO-RS metadata): one `IndexedInstance` per
instance, written at intake from the bytes that are stored.

`header_json` is the instance's header in DICOM JSON (PS3.18 F.2) without pixel data; top-level
binary values larger than a few kilobytes are left out, each replaced by a relative BulkDataURI
`bulkdata/<tag>` that WADO-RS makes absolute (`service.dicomweb.wado.with_bulkdata_uris`) and
serves, so metadata stays small and never carries images.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.models import IndexedInstance, Instance
from service.core.storage import BlobStore

#: Binary values (OB, OW, UN, ...) longer than this are left out of the indexed header.
MAX_INLINE_BINARY = 4096
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _text(ds: Dataset, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()[:limit]


def _number(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def header_json(ds: Dataset) -> dict[str, Any]:
    """The header of `ds` as DICOM JSON, without pixel data; large binary values are relative
    BulkDataURIs (`bulkdata/<tag>`)."""
    kept, left_out = Dataset(), {}
    for element in ds:
        if element.VR in BINARY_VRS and len(element.value or b"") > MAX_INLINE_BINARY:
            left_out[f"{element.tag:08X}"] = {"vr": element.VR,
                                              "BulkDataURI": f"bulkdata/{element.tag:08X}"}
            continue
        kept.add(element)
    return {**kept.to_json_dict(bulk_data_threshold=MAX_INLINE_BINARY,
                                suppress_invalid_tags=True), **left_out}


def index_instance(session: Session, instance: Instance, data: bytes | Path) -> IndexedInstance:
    """Add (or return the existing) index row of a stored instance from its Part 10 bytes (or
    its stored file, read up to the pixel data)."""
    existing = session.scalar(select(IndexedInstance)
                              .where(IndexedInstance.instance_id == instance.id))
    if existing is not None:
        return existing
    ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data,
                         stop_before_pixels=True)
    header = header_json(ds)
    row = IndexedInstance(
        instance_id=instance.id, study_id=instance.study_id,
        study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        patient_id=_text(ds, "PatientID", 64), patient_name=_text(ds, "PatientName", 200),
        study_date=_text(ds, "StudyDate", 8), study_time=_text(ds, "StudyTime", 16),
        accession_number=_text(ds, "AccessionNumber", 16),
        study_description=_text(ds, "StudyDescription", 64),
        modality=_text(ds, "Modality", 16), series_number=_number(ds, "SeriesNumber"),
        instance_number=_number(ds, "InstanceNumber"), header=header,
    )
    session.add(row)
    return row


def reindex(session: Session, store: BlobStore, *, limit: int = 1000) -> int:
    """Index up to `limit` stored instances that have no index row (those stored before the index
    existed); returns how many were indexed."""
    missing = session.scalars(
        select(Instance).outerjoin(IndexedInstance, IndexedInstance.instance_id == Instance.id)
        .where(IndexedInstance.id.is_(None)).order_by(Instance.id).limit(limit)).all()
    for instance in missing:
        index_instance(session, instance, store.get(instance.sha256))
    return len(missing)
