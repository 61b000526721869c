"""Byte-mutation fuzz of the upload parsers: multipart bodies of real DICOM files (native, deflated,
RLE, JPEG, JPEG 2000, and pydicom's own test files) with bytes overwritten, slices removed or the
tail cut. The spool parser only ever raises SpoolError, and the API never answers 5xx."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid

from service.core.spool import Spool, SpoolError, spool_multipart
from service.studies.intake import sanitize_head
from tests.helpers.dicom_factory import base_dataset, chest_like, encode
from tests.helpers.service import bearer, multipart_related

BOUNDARY = "fuzzBoundary"


def _real_files() -> list[bytes]:
    files = [encode(base_dataset(chest_like(40, 32)), ts) for ts in (
        uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian, uid.RLELossless,
        uid.JPEG2000Lossless)]
    files.append(encode(base_dataset(chest_like(40, 32, bits=8), bits_stored=8),
                        uid.JPEGBaseline8Bit))
    base = Path(pydicom.data.__file__).parent / "test_files"
    files += [(base / name).read_bytes() for name in ("CT_small.dcm", "image_dfl.dcm")
              if (base / name).exists()]
    return files


FILES = _real_files()


def form_body(parts: list[bytes]) -> bytes:
    body = b""
    for index, data in enumerate(parts):
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
                 f"filename=\"f{index}.dcm\"\r\nContent-Type: application/dicom\r\n\r\n").encode()
        body += data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


@st.composite
def mutated_body(draw: st.DrawFn, kind: str) -> bytes:
    """A multipart body of 1-3 real files, then a few bytes overwritten (headers and boundaries
    included), a slice removed, or its tail cut."""
    parts = draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=3))
    body = bytearray(form_body(parts) if kind == "form"
                     else multipart_related(parts, boundary=BOUNDARY)[0])
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(body) - 1))
        del body[start: start + draw(st.integers(1, 200))]
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return bytes(body)


FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_body("related"))
def test_the_spool_parser_only_ever_raises_a_spool_error(tmp_path_factory, body: bytes):
    root = tmp_path_factory.mktemp("spool")

    async def chunks():
        for at in range(0, len(body), 4096):
            yield body[at: at + 4096]

    with Spool(root) as spool:
        try:
            parts = asyncio.run(spool_multipart(chunks(), BOUNDARY, spool, max_part_bytes=1 << 20,
                                                max_parts=8, max_total_bytes=8 << 20,
                                                head=sanitize_head))
        except SpoolError as error:
            assert error.status in (400, 413)
        else:
            assert all(p.path is None or p.path.stat().st_size == p.size for p in parts)
    assert not spool.root.exists()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("kind", ["related", "form"])
def test_mutated_uploads_never_get_a_5xx(client, tokens, kind):
    path, content_type = (("/dicomweb/studies", f'multipart/related; type="application/dicom"; '
                           f"boundary={BOUNDARY}") if kind == "related"
                          else ("/v1/studies", f"multipart/form-data; boundary={BOUNDARY}"))

    @FUZZ
    @given(mutated_body(kind))
    def check(body: bytes) -> None:
        response = client.post(path, content=body, headers={**bearer(tokens["uploader"]),
                                                            "Content-Type": content_type})
        assert response.status_code < 500, response.text

    check()
