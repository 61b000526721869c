"""WADO-RS frames and bulk data (PS3.18 10.4), what OHIF / Cornerstone read images with: frames
as stored or uncompressed, in every transfer syntax the service stores, checked against the
decoded pixels, read with dicomweb-client and compared with what Orthanc's DICOMweb plugin
answers for the same files.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom import uid
from pydicom.encaps import encapsulate, get_frame

from service.auth.api_keys import create_api_key
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Role
from tests.helpers.dicom_factory import base_dataset, chest_like, encode, to_bytes
from tests.helpers.live_api import LiveAPI
from tests.helpers.orthanc import Orthanc, orthanc_installed
from tests.helpers.service import bearer, multipart_related

SYNTAXES = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian,
            uid.DeflatedExplicitVRLittleEndian, uid.RLELossless, uid.JPEG2000Lossless,
            uid.JPEGLSLossless, uid.JPEGBaseline8Bit)
MEDIA = {uid.RLELossless: "image/dicom-rle", uid.JPEG2000Lossless: "image/jp2",
         uid.JPEGLSLossless: "image/jls", uid.JPEGBaseline8Bit: "image/jpeg"}
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
PRIVATE_BLOB = 0x00091010


@dataclass
class Served:
    client: TestClient
    settings: Settings
    token: str
    files: dict[str, bytes]  # by transfer syntax, plus "multiframe"

    def path(self, key: str) -> str:
        ds = pydicom.dcmread(io.BytesIO(self.files[key]), stop_before_pixels=True)
        return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/"
                f"instances/{ds.SOPInstanceUID}")

    def get(self, path: str, accept: str | None = None):  # noqa: ANN201
        headers = {**bearer(self.token), **({"Accept": accept} if accept else {})}
        return self.client.get(path, headers=headers)


def instances() -> dict[str, bytes]:
    files = {}
    for ts in SYNTAXES:
        bits = 8 if ts == uid.JPEGBaseline8Bit else 12
        ds = base_dataset(chest_like(64, 48, bits=bits, seed=len(files)), bits_stored=bits)
        if ts == uid.ExplicitVRLittleEndian:  # a large private binary value: bulk data
            ds.private_block(0x0009, "RADREPORT TEST", create=True).add_new(
                0x10, "OB", bytes(range(256)) * 40)
        files[ts] = encode(ds, ts)
    frames = np.stack([chest_like(32, 40, seed=s) for s in range(3)])
    multi = base_dataset(frames)
    files["multiframe"] = encode(multi, uid.RLELossless)
    files["hostile"] = second_frame_lies_about_its_size()
    return files


def second_frame_lies_about_its_size() -> bytes:
    """Two JPEG-LS frames under a 32 x 40 header; the second stream declares 320 x 400 (intake
    checks the first frame's stream, so this file is stored)."""
    small, large = (pydicom.dcmread(io.BytesIO(encode(base_dataset(chest_like(r, c)),
                                                      uid.JPEGLSLossless)))
                    for r, c in ((32, 40), (320, 400)))
    frames = [get_frame(ds.PixelData, 0, number_of_frames=1) for ds in (small, large)]
    small.PixelData = encapsulate(frames)
    small.NumberOfFrames = 2
    return to_bytes(small)


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    from service.app import create_app

    with session_scope(settings.database_url) as session:
        uploader = create_api_key(session, name="t-up", role=Role.uploader)
        viewer = create_api_key(session, name="t-view", role=Role.viewer)
    files = instances()
    with TestClient(create_app(settings, run_reconciler=False)) as client:
        for data in files.values():
            body, content_type = multipart_related([data])
            response = client.post("/dicomweb/studies", content=body, headers={
                "Content-Type": content_type, **bearer(uploader)})
            assert response.status_code == 200, response.text
        yield Served(client, settings, viewer, files)


def parts(response) -> list[tuple[str, bytes]]:  # noqa: ANN001
    """(Content-Type, body) of each part of a multipart/related answer."""
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    out = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        content_type = head.decode().split(":", 1)[1].strip()
        out.append((content_type, body[:-2]))
    return out


def pixels_le(data: bytes, index: int = 0) -> bytes:
    """Frame `index` decoded by pydicom, as little-endian bytes."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values = ds.pixel_array
    values = values[index] if int(ds.get("NumberOfFrames") or 1) > 1 else values
    return values.astype(values.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("ts", SYNTAXES)
def test_a_frame_comes_as_stored_or_uncompressed_as_the_accept_header_asks(served, ts):
    data = served.files[ts]
    path = f"{served.path(ts)}/frames/1"
    answer = served.get(path, AS_STORED)
    assert answer.headers["cache-control"] == "private, max-age=3600"  # never a shared cache
    [(media, frame)] = parts(answer)
    if ts in MEDIA:
        assert media == f"{MEDIA[ts]}; transfer-syntax={ts}"
        ds = pydicom.dcmread(io.BytesIO(data))
        assert frame == get_frame(ds.PixelData, 0, number_of_frames=1)
    else:
        assert media == f"application/octet-stream; transfer-syntax={uid.ExplicitVRLittleEndian}"
        assert frame == pixels_le(data)
    response = served.get(path, UNCOMPRESSED)
    assert response.status_code == 200, response.text
    [(media, frame)] = parts(response)
    assert media.startswith("application/octet-stream")
    assert frame == pixels_le(data)  # decoded with pydicom's codecs, little endian


def test_frames_of_a_multiframe_instance_come_in_the_order_asked(served):
    data = served.files["multiframe"]
    got = parts(served.get(f"{served.path('multiframe')}/frames/3,1", UNCOMPRESSED))
    assert [frame for _, frame in got] == [pixels_le(data, 2), pixels_le(data, 0)]
    stored = parts(served.get(f"{served.path('multiframe')}/frames/2", AS_STORED))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert stored[0][1] == get_frame(ds.PixelData, 1, number_of_frames=3)
    assert served.get(f"{served.path('multiframe')}/frames/4", AS_STORED).status_code == 404
    for bad in ("0", "1,x", ""):
        assert served.get(f"{served.path('multiframe')}/frames/{bad}").status_code in (400, 404)
    assert served.get(f"{served.path('multiframe')}/frames/0").status_code == 400


def test_a_bare_media_type_asks_for_a_single_part_answer(served):
    jls = served.get(f"{served.path(uid.JPEGLSLossless)}/frames/1", "image/jls")
    ds = pydicom.dcmread(io.BytesIO(served.files[uid.JPEGLSLossless]))
    assert jls.headers["content-type"] == f"image/jls; transfer-syntax={uid.JPEGLSLossless}"
    assert jls.content == get_frame(ds.PixelData, 0, number_of_frames=1)
    decoded = served.get(f"{served.path(uid.JPEGLSLossless)}/frames/1", "application/octet-stream")
    assert decoded.headers["content-type"].startswith("application/octet-stream")
    assert decoded.content == pixels_le(served.files[uid.JPEGLSLossless])
    # native Pixel Data as one part is the whole value (OHIF's `singlepart: "bulkdata"`)
    native = served.get(f"{served.path('multiframe')}/bulkdata/7FE00010",
                        "application/octet-stream")
    assert native.content == b"".join(pixels_le(served.files["multiframe"], i) for i in range(3))
    several = served.get(f"{served.path('multiframe')}/frames/1,2", "image/dicom-rle")
    assert several.status_code == 406  # compressed frames come one per part
    blob = served.get(f"{served.path(uid.ExplicitVRLittleEndian)}/bulkdata/{PRIVATE_BLOB:08X}",
                      "application/octet-stream")
    assert blob.content == bytes(range(256)) * 40
    assert served.get(f"{served.path(uid.ExplicitVRLittleEndian)}/bulkdata/"
                      f"{PRIVATE_BLOB:08X}", "image/jpeg").status_code == 406


def test_a_media_type_the_frames_are_not_offered_in_is_406_naming_what_is(served):
    path = f"{served.path(uid.JPEGLSLossless)}/frames/1"
    response = served.get(path, 'multipart/related; type="image/jp2"')
    assert response.status_code == 406
    assert "image/jls" in response.text and "transfer-syntax=*" in response.text
    native = f"{served.path(uid.ExplicitVRLittleEndian)}/frames/1"
    assert served.get(native, 'multipart/related; type="image/jpeg"').status_code == 406
    assert served.get(path, 'multipart/related; type="image/jls"').status_code == 200


def test_a_frame_whose_stream_contradicts_the_header_is_409_never_decoded(served):
    path = f"{served.path('hostile')}/frames"
    assert served.get(f"{path}/1", UNCOMPRESSED).status_code == 200
    refused = served.get(f"{path}/2", UNCOMPRESSED)
    assert refused.status_code == 409 and "size other than the header" in refused.text
    assert served.get(f"{path}/2", AS_STORED).status_code == 200  # as stored: no decoder runs


def test_metadata_names_bulk_data_uris_that_answer_pixel_data_and_large_values(served):
    ts = uid.ExplicitVRLittleEndian
    [metadata] = served.get(f"{served.path(ts)}/metadata").json()
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    blob_uri = metadata[f"{PRIVATE_BLOB:08X}"]["BulkDataURI"]
    assert pixel_uri.endswith(f"{served.path(ts)}/bulkdata/7FE00010")
    [(_, frame)] = parts(served.get(pixel_uri, AS_STORED))
    assert frame == pixels_le(served.files[ts])
    [(media, blob)] = parts(served.get(blob_uri))
    assert media == "application/octet-stream" and blob == bytes(range(256)) * 40
    # QIDO with includefield=all names the same absolute URIs at instance level
    ds = pydicom.dcmread(io.BytesIO(served.files[ts]), stop_before_pixels=True)
    [found] = served.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/instances?includefield=all"
                         ).json()
    assert found[f"{PRIVATE_BLOB:08X}"]["BulkDataURI"] == blob_uri
    [study] = served.get(f"/dicomweb/studies?StudyInstanceUID={ds.StudyInstanceUID}"
                         "&includefield=all").json()
    assert f"{PRIVATE_BLOB:08X}" not in study  # one instance's bulk data, not the study's
    assert served.get(f"{served.path(ts)}/bulkdata/00100010").status_code == 404
    assert served.get(f"{served.path(ts)}/bulkdata/nothex!").status_code == 400


def test_frame_and_bulk_data_reads_are_audited_per_study(served):
    from sqlalchemy import select

    from service.core.models import AuditEvent

    served.get(f"{served.path(uid.RLELossless)}/frames/1", AS_STORED)
    served.get(f"{served.path(uid.RLELossless)}/frames/9", AS_STORED)  # 404: no read
    served.get(f"{served.path(uid.RLELossless)}/bulkdata/7FE00010", AS_STORED)
    with session_scope(served.settings.database_url) as session:
        details = [e.details for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "study.read"))]
    assert details == [{"view": "wado-rs frames", "instances": 1},
                       {"view": "wado-rs bulkdata", "instances": 1}]


def test_dicomweb_client_retrieves_frames_and_bulk_data(served):
    from dicomweb_client.api import DICOMwebClient

    with LiveAPI(served.settings) as api:
        client = DICOMwebClient(f"{api.url}/dicomweb", headers=bearer(served.token))
        for ts in (uid.JPEGLSLossless, uid.ExplicitVRBigEndian):
            ds = pydicom.dcmread(io.BytesIO(served.files[ts]))
            [frame] = client.retrieve_instance_frames(
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1],
                media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))
            assert frame == pixels_le(served.files[ts])
        ds = pydicom.dcmread(io.BytesIO(served.files["multiframe"]))
        frames = client.retrieve_instance_frames(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1, 2],
            media_types=(("image/dicom-rle", uid.RLELossless),))
        assert frames == [get_frame(ds.PixelData, i, number_of_frames=3) for i in (0, 1)]
        metadata = client.retrieve_instance_metadata(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        pixel_data = client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"],
                                              media_types=(("image/dicom-rle", "*"),))
        assert len(pixel_data) == 3 and pixel_data[2] == get_frame(ds.PixelData, 2,
                                                                   number_of_frames=3)


#: What Orthanc 1.10's DICOMweb plugin answers 500 to: as-stored frames of big-endian and
#: deflated files, and JPEG 2000 decoded (its core has no JPEG 2000 decoder).
ORTHANC_CANNOT = {(uid.ExplicitVRBigEndian, "*"), (uid.DeflatedExplicitVRLittleEndian, "*"),
                  (uid.JPEG2000Lossless, uid.ExplicitVRLittleEndian)}


@pytest.mark.skipif(not orthanc_installed(),
                    reason="Orthanc is not installed: scripts/ensure_pacs.sh")
def test_frames_equal_what_orthanc_serves_for_the_same_files(served, tmp_path):
    from dicomweb_client.api import DICOMwebClient
    from requests import HTTPError

    compared = []
    with LiveAPI(served.settings) as api, Orthanc(tmp_path / "pacs") as pacs:
        ours = DICOMwebClient(f"{api.url}/dicomweb", headers=bearer(served.token))
        theirs = DICOMwebClient(pacs.dicomweb_url)
        for key in (*SYNTAXES, "multiframe"):
            pacs.upload(served.files[key])
            ds = pydicom.dcmread(io.BytesIO(served.files[key]))
            ids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            numbers = [1, 3] if key == "multiframe" else [1]
            for syntax in (uid.ExplicitVRLittleEndian, "*"):
                media_types = (("application/octet-stream", syntax),)
                try:
                    expected = theirs.retrieve_instance_frames(*ids, frame_numbers=numbers,
                                                               media_types=media_types)
                except HTTPError:
                    if (key, syntax) in ORTHANC_CANNOT:
                        continue
                    raise
                got = ours.retrieve_instance_frames(*ids, frame_numbers=numbers,
                                                    media_types=media_types)
                assert got == expected, (key, syntax)
                compared.append((key, syntax))
    assert len(compared) >= 2 * (len(SYNTAXES) + 1) - len(ORTHANC_CANNOT)


@pytest.mark.parametrize("ts", SYNTAXES)
def test_an_instance_asked_for_in_explicit_little_endian_comes_decompressed(served, ts):
    explicit = uid.ExplicitVRLittleEndian
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={explicit}'
    [(media, body)] = parts(served.get(served.path(ts), accept))
    assert media == f"application/dicom; transfer-syntax={explicit}"
    got, original = (pydicom.dcmread(io.BytesIO(data)) for data in (body, served.files[ts]))
    assert got.file_meta.TransferSyntaxUID == explicit
    assert np.array_equal(got.pixel_array, original.pixel_array)
    assert (got.SOPInstanceUID, got.PatientID, got.Rows) == (
        original.SOPInstanceUID, original.PatientID, original.Rows)
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    if ts != uid.JPEGBaseline8Bit:
        refused = served.get(served.path(ts), jpeg)
        assert refused.status_code == 406 and explicit in refused.text


def test_dicomweb_client_retrieves_a_compressed_study_decompressed(served):
    from dicomweb_client.api import DICOMwebClient

    with LiveAPI(served.settings) as api:
        client = DICOMwebClient(f"{api.url}/dicomweb", headers=bearer(served.token))
        original = pydicom.dcmread(io.BytesIO(served.files["multiframe"]))
        [got] = client.retrieve_study(
            original.StudyInstanceUID,
            media_types=(("application/dicom", uid.ExplicitVRLittleEndian),))
        assert got.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
        assert np.array_equal(got.pixel_array, original.pixel_array)  # all 3 frames
