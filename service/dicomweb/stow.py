"""DICOMweb STOW-RS: the request's media type and boundary, and the PS3.18 response (the body
itself is streamed to disk by `service.core.spool`).

The Store Instances Response (PS3.18 Annex I) is returned as DICOM JSON: ReferencedSOPSequence
(0008,1199) for stored instances and FailedSOPSequence (0008,1198) with FailureReason (0008,1197).
"""

from __future__ import annotations

from typing import Any

from python_multipart.multipart import parse_options_header

from service.core.errors import ServiceError

DICOM_MEDIA_TYPE = "application/dicom"


class StowError(ServiceError):
    """A STOW-RS request refused as a whole (HTTP status and an actionable message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


def _text(value: str | bytes) -> str:
    """A header parameter as text (the multipart parser may hand back bytes)."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def boundary_of(content_type: str | None) -> str:
    """The boundary of a `multipart/related; type="application/dicom"` request (type quoted or not).

    Raises StowError(415) for any other media type.
    """
    if not content_type:
        raise StowError(415, "Content-Type must be multipart/related; type=\"application/dicom\"")
    media, params = parse_options_header(content_type)
    media_text = media.decode("latin-1").lower() if isinstance(media, bytes) else str(media).lower()
    options = {_text(k).lower(): _text(v) for k, v in params.items()}
    part_type = options.get("type", "").strip().strip('"').lower()
    if media_text != "multipart/related" or part_type not in ("", DICOM_MEDIA_TYPE):
        raise StowError(415, "only multipart/related with type=\"application/dicom\" "
                        "(PS3.10 instances) is supported")
    boundary = options.get("boundary", "").strip().strip('"')
    if not boundary or len(boundary) > 200:
        raise StowError(400, "the multipart/related Content-Type has no usable boundary")
    return boundary


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(referenced: list[dict[str, Any]], failed: list[dict[str, Any]],
                   retrieve_url: str | None) -> dict[str, Any]:
    """The Store Instances Response Module in DICOM JSON.

    `referenced` items: {sop_class_uid, sop_uid, retrieve_url?, warning?}; `failed` items:
    {sop_class_uid?, sop_uid?, reason}.
    """
    body: dict[str, Any] = {}
    if retrieve_url:
        body["00081190"] = {"vr": "UR", "Value": [retrieve_url]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _ui(item.get("sop_class_uid")), "00081155": _ui(item.get("sop_uid")),
             "00081197": {"vr": "US", "Value": [item["reason"]]}}
            for item in failed
        ]}
    if referenced:
        items = []
        for item in referenced:
            entry = {"00081150": _ui(item["sop_class_uid"]), "00081155": _ui(item["sop_uid"])}
            if item.get("retrieve_url"):
                entry["00081190"] = {"vr": "UR", "Value": [item["retrieve_url"]]}
            if item.get("warning") is not None:
                entry["00081196"] = {"vr": "US", "Value": [item["warning"]]}
            items.append(entry)
        body["00081199"] = {"vr": "SQ", "Value": items}
    return body


def status_code_for(stored: int, failed: int, warnings: int) -> int:
    """PS3.18 10.5.3: 200 all stored, 202 some stored with failures or warnings, 409 none stored."""
    if stored == 0:
        return 409
    if failed or warnings:
        return 202
    return 200
