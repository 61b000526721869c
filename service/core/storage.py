"""Content-addressed file store: blobs named by SHA-256, atomic writes, DICOM preamble zeroed."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np


class BlobStore:
    """Blobs under `root/ab/cd/<sha256>`; writing the same content twice stores it once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not exist)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store bytes; returns their SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def put_file(self, source: Path, sha256: str) -> str:
        """Move a file whose SHA-256 the caller computed while writing it (a spooled upload) into
        the store, without reading it into memory; returns `sha256`. A blob already stored is
        kept and `source` is left alone."""
        target = self.path(sha256)
        if target.exists():
            return sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)
        return sha256

    def get(self, sha256: str) -> bytes:
        """The bytes of a blob; raises FileNotFoundError if absent."""
        return self.path(sha256).read_bytes()

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored."""
        return self.path(sha256).exists()

    def put_array(self, array: np.ndarray) -> str:
        """Store a NumPy array (`.npy` bytes, no pickle)."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        return self.put(buffer.getvalue())

    def get_array(self, sha256: str) -> np.ndarray:
        """Load an array stored with `put_array`."""
        return np.load(io.BytesIO(self.get(sha256)), allow_pickle=False)
