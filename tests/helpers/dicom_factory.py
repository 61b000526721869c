"""Test helper: write small chest-radiograph DICOM files in every transfer syntax the reader
accepts.

Encoders: pydicom (native, deflated, RLE), pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS),
Pillow (JPEG baseline; the same 8-bit stream relabelled SOF1 for 8-bit JPEG extended), imagecodecs
(libjpeg-turbo: 12-bit JPEG extended, optional), GDCM (JPEG lossless
process 14 and its selection value 1). Each writer returns Part-10 bytes.
"""

from __future__ import annotations

import copy
import io
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"

NATIVE = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.DeflatedExplicitVRLittleEndian,
)
LOSSLESS = (
    uid.RLELossless,
    uid.JPEG2000Lossless,
    uid.JPEGLSLossless,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
)
LOSSY = (uid.JPEG2000, uid.JPEGLSNearLossless, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit)


def chest_like(
    rows: int = 96, cols: int = 80, bits: int = 12, signed: bool = False, seed: int = 0
) -> np.ndarray:
    """A smooth synthetic radiograph-like array with noise, using the full stored range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    body = np.exp(-(((x - cols / 2) / (cols / 2.6)) ** 2 + ((y - rows / 2) / (rows / 2.2)) ** 2))
    lungs = np.exp(-(((np.abs(x - cols / 2) - cols / 5) / (cols / 9)) ** 2
                     + ((y - rows / 2) / (rows / 4)) ** 2))
    img = 0.15 + 0.75 * body - 0.35 * lungs + 0.02 * rng.standard_normal((rows, cols))
    img = (img - img.min()) / (img.max() - img.min())
    top = 2**bits - 1
    values = np.rint(img * top)
    if signed:
        values = values - 2 ** (bits - 1)
        return values.astype(np.int16 if bits > 8 else np.int8)
    return values.astype(np.uint16 if bits > 8 else np.uint8)


def base_dataset(
    arr: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    view: str | None = "PA",
    study_uid: str | None = None,
    **attrs: object,
) -> Dataset:
    """A DX/CR instance with realistic (fake) patient attributes and the given pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = DX_STORAGE if modality == "DX" else CR_STORAGE
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID = study_uid or uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN0012345"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC778899"
    ds.StudyDate = "20250102"
    ds.StudyTime = "101500"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.Manufacturer = "FakeVendor"
    ds.BodyPartExamined = "CHEST"
    if view is not None:
        ds.ViewPosition = view
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.set_pixel_data(arr, photometric, bits_stored)
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes of a dataset in its file meta transfer syntax."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _native(ds: Dataset, ts: uid.UID) -> bytes:
    ds = copy.deepcopy(ds)
    if ts == uid.ExplicitVRBigEndian and ds.BitsAllocated > 8:
        arr = np.frombuffer(ds.PixelData, dtype="<u2")
        ds.PixelData = arr.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _copy(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def _pydicom_compress(ds: Dataset, ts: uid.UID, **kwargs: object) -> bytes:
    ds = _copy(ds)
    ds.compress(ts, **kwargs)
    return to_bytes(ds)


def _imagecodecs_jpeg12(ds: Dataset) -> bytes:
    """A genuine 12-bit extended sequential (SOF1) stream, from libjpeg-turbo via imagecodecs."""
    import imagecodecs

    ds = _copy(ds)
    if ds.BitsStored != 12 or ds.PixelRepresentation != 0:
        raise ValueError("12-bit JPEG extended is written for unsigned 12-bit data only")
    stream = imagecodecs.jpeg8_encode(ds.pixel_array, level=95, bitspersample=12)
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = uid.JPEGExtended12Bit
    ds.LossyImageCompression = "01"
    return to_bytes(ds)


def _pillow_jpeg(ds: Dataset, ts: uid.UID) -> bytes:
    ds = _copy(ds)
    arr = ds.pixel_array
    if ts == uid.JPEGExtended12Bit and ds.BitsAllocated != 8:
        return _imagecodecs_jpeg12(ds)
    if ds.BitsAllocated != 8:
        raise ValueError("Pillow writes 8-bit JPEG only")
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="JPEG", quality=92)
    stream = buf.getvalue()
    if ts == uid.JPEGExtended12Bit:  # an 8-bit extended sequential stream: baseline with SOF1
        at = stream.find(b"\xff\xc0")
        stream = stream[:at] + b"\xff\xc1" + stream[at + 2 :]
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    ds.LossyImageCompression = "01"
    return to_bytes(ds)


def _gdcm(ds: Dataset, ts: uid.UID) -> bytes:
    import gdcm

    names = {uid.JPEGLosslessSV1: "JPEGLosslessProcess14_1",
             uid.JPEGLossless: "JPEGLosslessProcess14"}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(_native(ds, uid.ExplicitVRLittleEndian))
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError("GDCM could not read the source file")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, names[ts])))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {ts.name}")
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        writer.SetFileName(str(dst))
        if not writer.Write():
            raise RuntimeError("GDCM could not write the file")
        return dst.read_bytes()


def encode(ds: Dataset, ts: uid.UID) -> bytes:
    """Part-10 bytes of ``ds`` encoded in transfer syntax ``ts``."""
    if ts in NATIVE:
        return _native(ds, ts)
    if ts == uid.RLELossless:
        return _pydicom_compress(ds, ts, encoding_plugin="pydicom")
    if ts == uid.JPEG2000Lossless:
        return _pydicom_compress(ds, ts)
    if ts == uid.JPEG2000:
        return _pydicom_compress(ds, ts, j2k_cr=[15])
    if ts == uid.JPEGLSLossless:
        return _pydicom_compress(ds, ts)
    if ts == uid.JPEGLSNearLossless:
        return _pydicom_compress(ds, ts, jls_error=2)
    if ts in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit):
        return _pillow_jpeg(ds, ts)
    if ts in (uid.JPEGLossless, uid.JPEGLosslessSV1):
        return _gdcm(ds, ts)
    raise ValueError(f"no test encoder for {ts}")


def raw_dataset_bytes(ds: Dataset, *, implicit: bool = True) -> bytes:
    """The data set alone, without preamble, 'DICM' or file meta (as some old archives store it)."""
    buf = io.BytesIO()
    ds = copy.deepcopy(ds)
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(buf, ds, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    data = buf.getvalue()
    if data[128:132] == b"DICM":  # pydicom wrote a file meta after all: strip it
        raise AssertionError("expected a bare data set")
    return data


def deflated_bomb(inflated_pixel_bytes: int = 1 << 30) -> bytes:
    """A Deflated Explicit VR Little Endian DX header whose Pixel Data (zeros) inflates to
    `inflated_pixel_bytes`; about a thousandth of that compressed. Made without holding it."""
    ds = base_dataset(chest_like(64, 64))
    del ds.PixelData
    head = DicomBytesIO()
    head.is_implicit_VR, head.is_little_endian = False, True  # the inflated body's encoding
    write_dataset(head, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(head.getvalue() + b"\xe0\x7f\x10\x00OB\x00\x00"
                               + inflated_pixel_bytes.to_bytes(4, "little"))]
    zeros = bytes(1 << 24)
    for _ in range(inflated_pixel_bytes // len(zeros)):
        parts.append(deflater.compress(zeros))
    parts.append(deflater.flush())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(bytes(128) + b"DICM")
    write_file_meta_info(out, meta)
    return out.getvalue() + b"".join(parts)
