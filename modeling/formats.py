"""File formats without full copies: memory-mapped safetensors and `.npz`, and their writers.

Readers return read-only numpy views of one memory map per file (bfloat16 via ml_dtypes), so a
loader touches one tensor at a time and never holds a float32 copy of a whole checkpoint. Pages
a process has read from a mapping count in its resident set for as long as the mapping lives;
`release_pages` drops them (the page cache keeps the data, a later read maps it back in), so a
loader that calls it after each parameter holds at most one parameter's source pages.
"""

from __future__ import annotations

import json
import mmap
import struct
import zipfile
from collections.abc import Iterable, Iterator, Mapping
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


def _map(path: Path) -> mmap.mmap:
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _view(mapped: mmap.mmap, dtype: np.dtype, offset: int, shape: tuple[int, ...],
          fortran: bool = False) -> np.ndarray:
    """A read-only array over `mapped` (its `.base` chain ends at the mmap, see release_pages)."""
    count = int(np.prod(shape))
    flat = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


def mapping_of(a: np.ndarray) -> mmap.mmap | None:
    """The memory map an array returned by `read_safetensors` / `read_npz` reads from (None for
    an array in ordinary memory)."""
    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def release_pages(arrays: Iterable[np.ndarray]) -> None:
    """Drop this process's resident pages of the memory maps behind `arrays` (see `mapping_of`;
    other arrays are ignored). The arrays stay valid: a later read faults the pages back in
    from the page cache or the file."""
    if not hasattr(mmap, "MADV_DONTNEED"):  # not Linux/macOS: pages stay until unmapped
        return
    maps = {id(m): m for m in map(mapping_of, arrays) if m is not None}
    for mapped in maps.values():
        mapped.madvise(mmap.MADV_DONTNEED)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Name -> read-only array mapped from the file (one memory map per file, nothing read yet)
    for every tensor of one .safetensors file."""
    path = Path(path)
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    mapped = _map(path) if path.stat().st_size > base else None
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
            out[name] = _view(mapped, dtype, base + start, shape)  # type: ignore[arg-type]
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
    mapped: mmap.mmap | None = None
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
                if np.prod(shape):
                    mapped = mapped or _map(path)
                    arr = _view(mapped, dtype, raw.tell(), shape, fortran)
                else:
                    arr = np.zeros(shape, dtype)
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
