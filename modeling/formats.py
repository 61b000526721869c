"""File formats without full copies: memory-mapped safetensors and `.npz`, and their writers.

Readers return numpy memmaps (bfloat16 via ml_dtypes), so a loader touches one tensor at a time
and never holds a float32 copy of a whole checkpoint.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_ST_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class FormatError(ValueError):
    """A checkpoint file is malformed or uses an unsupported encoding."""


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Name -> read-only memmap for every tensor of one .safetensors file."""
    path = Path(path)
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise FormatError(f"{path.name}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = _ST_DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - start != int(np.prod(shape)) * dtype.itemsize:
            raise FormatError(f"{path.name}: tensor {name} byte size does not match its shape")
        if end == start:
            out[name] = np.zeros(shape, dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape)
    return out


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write tensors (numpy, bfloat16 allowed) as one .safetensors file."""
    header: dict[str, object] = {}
    offset = 0
    arrays = {}
    for name, value in tensors.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype not in _ST_NAMES:
            raise FormatError(f"cannot write {name}: dtype {arr.dtype} unsupported")
        header[name] = {"dtype": _ST_NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays[name] = arr
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays.values():
            f.write(arr.tobytes())


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Name -> array for a `.npz`; stored (uncompressed) members are memory-mapped.

    big_vision stores bfloat16 as raw 2-byte void ('|V2'); those come back as bfloat16.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, path.open("rb") as raw:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                local = raw.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                data_start = info.header_offset + 30 + name_len + extra_len
                raw.seek(data_start)
                version = np.lib.format.read_magic(raw)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(raw)
                arr = np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape,
                                order="F" if fortran else "C") if np.prod(shape) else np.zeros(shape, dtype)
            else:
                with zf.open(info) as member:
                    arr = np.lib.format.read_array(member)
            if arr.dtype.kind == "V" and arr.dtype.itemsize == 2:
                arr = arr.view(ml_dtypes.bfloat16)
            out[name] = arr
    return out


def write_npz(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Uncompressed .npz with big_vision's encoding (bfloat16 as '|V2')."""
    def encode(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a.view("V2") if a.dtype == ml_dtypes.bfloat16 else a

    np.savez(path, **{k: encode(v) for k, v in tensors.items()})


def flatten(tree: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    """Yield ('a/b/c', leaf) pairs of a nested dict."""
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name)
        else:
            yield name, value


def unflatten(items: Mapping[str, object]) -> dict[str, object]:
    """Inverse of `flatten`."""
    tree: dict[str, object] = {}
    for name, value in items.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = value
    return tree
