"""Ingest throughput: DICOM bytes -> model-ready arrays (224 and 448 px), by transfer syntax and
image size.

Two paths over the same bytes in the same run:

- ``radiology``: ``radiology.dicom.read`` (validation, decode, Modality LUT, VOI / percentile
  window, polarity) then ``modeling.preprocess.preprocess_image`` at 224 and 448 (falls back to
  a scikit-image resize when modeling is absent, and says so);
- ``plain``: ``pydicom.dcmread`` + ``pixel_array`` + pydicom's ``apply_modality_lut`` /
  ``apply_voi_lut`` + min-max scaling + ``skimage.transform.resize`` (anti-aliased) at 224 and 448.

A study is two instances (frontal + lateral) of the given size and encoding; studies/s counts both
images through both output sizes. The breakdown (read / decode / LUT / resize) is measured on the
radiology path by running its stages one by one. Images are procedural (smooth anatomy-like field
plus detector noise), so compressed sizes are realistic rather than trivially small.

Run: ``python bench/ingest.py [--repeats 3] [--sizes 1024x1024,2500x3000]``. Needs the test extras
(pyjpegls, python-gdcm) to write JPEG-LS and JPEG lossless inputs; syntaxes whose encoder is
missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from rich.console import Console
from rich.table import Table

from radiology.dicom import DEFAULT_POLICY, check_image, read, read_dataset
from radiology.dicom.decode import decode_frame
from radiology.dicom.pixels import to_unit_range

try:
    from modeling.preprocess import preprocess_image

    RESIZE_NOTE = "modeling.preprocess.preprocess_image (Pillow bilinear, antialiased)"
except ImportError:  # pragma: no cover - modeling not installed
    from skimage.transform import resize as _sk_resize

    def preprocess_image(image: np.ndarray, size: int) -> np.ndarray:
        out = _sk_resize(image, (size, size), anti_aliasing=True, preserve_range=True)
        out = out.astype(np.float32)
        return np.repeat(out[..., None] * 2 - 1, 3, axis=-1)

    RESIZE_NOTE = "local scikit-image resize (modeling.preprocess not found)"

SYNTAXES = [
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEGLSLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGBaseline8Bit,
]
OUT_SIZES = (224, 448)
SHORT = {
    uid.ExplicitVRLittleEndian: "Explicit VR LE",
    uid.DeflatedExplicitVRLittleEndian: "Deflated",
    uid.RLELossless: "RLE",
    uid.JPEG2000Lossless: "J2K lossless",
    uid.JPEG2000: "J2K lossy",
    uid.JPEGLSLossless: "JPEG-LS lossless",
    uid.JPEGLosslessSV1: "JPEG lossless SV1",
    uid.JPEGBaseline8Bit: "JPEG baseline 8-bit",
}


def procedural_image(rows: int, cols: int, bits: int, seed: int) -> np.ndarray:
    """Smooth chest-like density with ribs-like bands and Poisson-like noise, in ``bits`` bits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    yn, xn = y / rows, x / cols
    body = np.exp(-(((xn - 0.5) / 0.38) ** 2 + ((yn - 0.5) / 0.45) ** 2))
    lungs = np.exp(-(((np.abs(xn - 0.5) - 0.2) / 0.12) ** 2 + ((yn - 0.45) / 0.25) ** 2))
    ribs = 0.05 * np.sin(yn * 60 + 8 * np.abs(xn - 0.5)) * lungs
    img = 0.2 + 0.7 * body - 0.35 * lungs + ribs
    img += 0.015 * rng.standard_normal((rows, cols)).astype(np.float32)
    img = (img - img.min()) / (img.max() - img.min())
    return np.rint(img * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)


def _dataset(arr: np.ndarray, bits: int, view: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID = uid.generate_uid()
    ds.SeriesInstanceUID = uid.generate_uid()
    ds.Modality = "DX"
    ds.ViewPosition = view
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.set_pixel_data(arr, "MONOCHROME2", bits)
    ds.WindowCenter = 2**bits * 0.5
    ds.WindowWidth = 2**bits * 0.9
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    return ds


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _gdcm_encode(ds: Dataset, ts: uid.UID) -> bytes:
    import tempfile

    import gdcm

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        src.write_bytes(_to_bytes(ds))
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("GDCM could not encode")
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        writer.SetFileName(str(dst))
        writer.Write()
        return dst.read_bytes()


def encode(rows: int, cols: int, ts: uid.UID, view: str, seed: int) -> bytes:
    """One instance of the given size in transfer syntax ``ts``."""
    bits = 8 if ts == uid.JPEGBaseline8Bit else 12
    ds = _dataset(procedural_image(rows, cols, bits, seed), bits, view)
    if ts in (uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = ts
        return _to_bytes(ds)
    if ts == uid.JPEGLosslessSV1:
        return _gdcm_encode(ds, ts)
    if ts == uid.JPEGBaseline8Bit:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array, mode="L").save(buf, format="JPEG", quality=90)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = ts
        return _to_bytes(ds)
    kwargs = {"j2k_cr": [10]} if ts == uid.JPEG2000 else {}
    ds.compress(ts, **kwargs)
    return _to_bytes(ds)


# ------------------------------------------------------------------------------------------------
# the two paths


def radiology_path(data: bytes) -> list[np.ndarray]:
    image = read(data)
    return [preprocess_image(image.pixels, s) for s in OUT_SIZES]


def radiology_stages(data: bytes, clock: dict[str, float]) -> None:
    """The radiology path stage by stage (same work as ``read``), adding seconds into ``clock``."""
    t0 = time.perf_counter()
    ds, notes = read_dataset(data)
    t1 = time.perf_counter()
    geo = check_image(ds, DEFAULT_POLICY, notes)
    frame, _ = decode_frame(ds, uid.UID(str(ds.file_meta.TransferSyntaxUID)), geo)
    t2 = time.perf_counter()
    image, _ = to_unit_range(frame, ds, geo.photometric, DEFAULT_POLICY, notes)
    t3 = time.perf_counter()
    for s in OUT_SIZES:
        preprocess_image(image, s)
    t4 = time.perf_counter()
    stages = (("read", t1 - t0), ("decode", t2 - t1), ("lut", t3 - t2), ("resize", t4 - t3))
    for key, value in stages:
        clock[key] = clock.get(key, 0.0) + value


def radiology_unit(data: bytes) -> np.ndarray:
    """Bytes -> float32 [0, 1] image (no resize)."""
    return read(data).pixels


def plain_unit(data: bytes) -> np.ndarray:
    """The plain path up to a [0, 1] image: pydicom decode + its LUT functions + min-max."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(io.BytesIO(data))
    arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    img = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        img = 1.0 - img
    return img


def plain_path(data: bytes) -> list[np.ndarray]:
    """The plain path: ``plain_unit`` then an anti-aliased scikit-image resize per output size."""
    from skimage.transform import resize

    img = plain_unit(data)
    outs = []
    for s in OUT_SIZES:
        small = resize(img, (s, s), anti_aliasing=True, preserve_range=True).astype(np.float32)
        outs.append(np.repeat(small[..., None] * 2 - 1, 3, axis=-1))
    return outs


def _best_seconds(fn: Callable[[bytes], object], items: list[bytes], repeats: int) -> float:
    """Best-of-``repeats`` wall time to push every item through ``fn`` once."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for data in items:
            fn(data)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1024x1024,2500x3000",
                        help="rows x columns, comma separated")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    console = Console(width=150)
    console.print(
        f"[bold]bench/ingest.py[/] python {platform.python_version()}, "
        f"pydicom {pydicom.__version__}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
        f"resize: {RESIZE_NOTE}; "
        f"study = 2 instances (PA + LATERAL) -> {OUT_SIZES} px; best of {args.repeats}"
    )
    table = Table(title="DICOM bytes -> model-ready arrays (studies/s, higher is better)")
    for col in ("syntax", "size", "MB/inst", "radiology st/s", "plain st/s", "ratio",
                "to [0,1] ms radiology", "to [0,1] ms plain", "read", "decode", "LUT", "resize"):
        table.add_column(col, justify="right" if col not in ("syntax",) else "left")
    ratios = []
    for rows, cols in sizes:
        for ts in SYNTAXES:
            try:
                items = [encode(rows, cols, ts, view, seed)
                         for seed, view in enumerate(("PA", "LATERAL"))]
            except Exception as exc:  # an encoder missing from this installation
                console.print(f"[yellow]skip {SHORT[ts]} {rows}x{cols}: "
                              f"{type(exc).__name__}: {exc}[/]")
                continue
            for data in items:  # warm-up and a correctness check of both paths
                ours, plain = radiology_path(data), plain_path(data)
                assert ours[0].shape == plain[0].shape == (224, 224, 3)
            # interleaved, best of N each, so that load from other processes hits both paths alike
            best = {"ours": [], "plain": [], "u_ours": [], "u_plain": []}
            for _ in range(args.repeats):
                best["ours"].append(_best_seconds(radiology_path, items, 1))
                best["plain"].append(_best_seconds(plain_path, items, 1))
                best["u_ours"].append(_best_seconds(radiology_unit, items, 1))
                best["u_plain"].append(_best_seconds(plain_unit, items, 1))
            t_ours, t_plain = min(best["ours"]), min(best["plain"])
            u_ours, u_plain = min(best["u_ours"]) / len(items), min(best["u_plain"]) / len(items)
            clock: dict[str, float] = {}
            for data in items:
                radiology_stages(data, clock)
            total = sum(clock.values())
            share = {k: f"{100 * v / total:.0f}%" for k, v in clock.items()}
            ratio = t_plain / t_ours
            ratios.append(ratio)
            table.add_row(
                SHORT[ts],
                f"{rows}x{cols}",
                f"{statistics.mean(len(d) for d in items) / 1e6:.2f}",
                f"{1 / t_ours:.2f}",
                f"{1 / t_plain:.2f}",
                f"{ratio:.2f}x",
                f"{1000 * u_ours:.0f}",
                f"{1000 * u_plain:.0f}",
                share["read"],
                share["decode"],
                share["lut"],
                share["resize"],
            )
    console.print(table)
    if ratios:
        console.print(
            "radiology / plain throughput ratio: geometric mean "
            f"{statistics.geometric_mean(ratios):.2f}x (min {min(ratios):.2f}x, "
            f"max {max(ratios):.2f}x). 'to [0,1] ms' = per instance, bytes to "
            "a [0, 1] image without resizing. Breakdown = share of the radiology path's time per "
            "stage (read = parse bytes; decode = codec; LUT = modality + VOI/window + polarity; "
            "resize = both output sizes)."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
