"""DICOMweb STOW-RS: a streaming multipart/related parser with size limits, and the PS3.18 response.

The Store Instances Response (PS3.18 Annex I) is returned as DICOM JSON: ReferencedSOPSequence
(0008,1199) for stored instances and FailedSOPSequence (0008,1198) with FailureReason (0008,1197).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from service.core.errors import ServiceError

DICOM_MEDIA_TYPE = "application/dicom"


class StowError(ServiceError):
    """A STOW-RS request refused as a whole (HTTP status and an actionable message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


@dataclass
class Part:
    """One message part: its headers and body (None when refused during streaming)."""

    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False

    @property
    def content_type(self) -> str:
        value, _ = parse_options_header(self.headers.get("content-type", ""))
        return value.decode("latin-1").lower() if isinstance(value, bytes) else str(value).lower()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def boundary_of(content_type: str | None) -> str:
    """The boundary of a `multipart/related; type="application/dicom"` request (type quoted or not).

    Raises StowError(415) for any other media type.
    """
    if not content_type:
        raise StowError(415, "Content-Type must be multipart/related; type=\"application/dicom\"")
    media, params = parse_options_header(content_type)
    media_text = media.decode("latin-1").lower() if isinstance(media, bytes) else str(media).lower()
    options = {
        (k.decode("latin-1") if isinstance(k, bytes) else k).lower(): (v.decode("latin-1") if isinstance(v, bytes) else v)
        for k, v in params.items()
    }
    part_type = options.get("type", "").strip().strip('"').lower()
    if media_text != "multipart/related" or part_type not in ("", DICOM_MEDIA_TYPE):
        raise StowError(415, "only multipart/related with type=\"application/dicom\" (PS3.10 instances) is supported")
    boundary = options.get("boundary", "").strip().strip('"')
    if not boundary or len(boundary) > 200:
        raise StowError(400, "the multipart/related Content-Type has no usable boundary")
    return boundary


async def parse_parts(
    stream: AsyncIterator[bytes], boundary: str, *, max_part_bytes: int, max_parts: int, max_total_bytes: int
) -> list[Part]:
    """Parse a multipart body as it streams in, keeping at most `max_part_bytes` of any part."""
    parts: list[Part] = []
    state: dict[str, Any] = {"field": b"", "value": b""}
    total = 0

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise StowError(413, f"the request holds more than {max_parts} instances")
        parts.append(Part())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.size += end - start
        if part.size > max_part_bytes:
            part.too_large = True
            part.chunks.clear()
        elif not part.too_large:
            part.chunks.append(data[start:end])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1].headers[state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
        },
    )
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > max_total_bytes:
                raise StowError(413, f"the request exceeds {max_total_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except StowError:
        raise
    except Exception as error:  # python-multipart raises MultipartParseError and friends
        raise StowError(400, f"the multipart/related body is malformed ({type(error).__name__})") from None
    if not parts:
        raise StowError(400, "the multipart/related body holds no parts")
    return parts


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_response(referenced: list[dict[str, Any]], failed: list[dict[str, Any]], retrieve_url: str | None) -> dict[str, Any]:
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
