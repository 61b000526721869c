"""Multipart bodies streamed to disk: each part is written to a temporary file while it is hashed,
so a request holds at most one network chunk of a body in memory whatever its size.

`spool_multipart` serves both upload routes (`multipart/form-data` for POST /v1/studies,
`multipart/related` for STOW-RS). It enforces the limits while the bytes arrive: a part over
`max_part_bytes` is marked `too_large` and its file dropped (the rest of the body is still read, so
the other parts can be answered); a body over `max_total_bytes` or with more than `max_parts`
parts is refused with 413; a body that stops before its closing boundary (a transfer cut short) is
refused with 400, so a truncated part is never mistaken for a whole one.

Files live in a `Spool`, a private folder under `STORAGE_DIR/tmp` (the same file system as the
blob store, so a checked file moves into the store by rename), removed when the request ends;
`sweep` removes the folders of a crashed process when the API starts.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from service.core.errors import ServiceError

#: Bytes of a part held back before it is written, so `head` can rewrite them (the DICOM preamble
#: and its 'DICM' marker).
HEAD_BYTES = 132
#: Largest header block of one part (its Content-Type, Content-Disposition, ...).
MAX_PART_HEADER_BYTES = 8 * 1024


class SpoolError(ServiceError):
    """A multipart body refused as a whole (400 malformed or cut short, 413 over a limit)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)


def text(value: bytes | str) -> str:
    """A header token as text (python-multipart gives bytes or str by version)."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """`type/subtype` in lower case and the parameters (names lower case, quotes removed) of a
    Content-Type or Content-Disposition header."""
    value, params = parse_options_header(header)
    options = {text(k).lower(): text(v).strip().strip('"') for k, v in params.items()}
    return text(value).strip().lower(), options


@dataclass
class SpooledPart:
    """One part of a body: its headers, and its bytes in `path` (None once refused or empty).

    `sha256` and `size` cover the bytes as written (after `head`); `too_large` marks a part that
    passed `max_part_bytes` (its bytes were dropped as they came).
    """

    headers: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    too_large: bool = False

    @property
    def content_type(self) -> str:
        """The part's media type in lower case ('' when it has none)."""
        return media_type(self.headers.get("content-type", ""))[0]

    @property
    def disposition(self) -> dict[str, str]:
        """The Content-Disposition parameters (`name`, `filename`) of a form-data part."""
        return media_type(self.headers.get("content-disposition", ""))[1]

    def read(self) -> bytes:
        """The part's bytes (b'' for a refused part): only for small parts."""
        return self.path.read_bytes() if self.path is not None else b""


class Spool:
    """A private temporary folder for one request's files; `close` (or `with`) removes it."""

    def __init__(self, storage_dir: Path) -> None:
        self.root = Path(storage_dir) / "tmp" / uuid.uuid4().hex
        self.root.mkdir(parents=True)
        self.count = 0

    def new_path(self) -> Path:
        """A fresh file name in the spool."""
        self.count += 1
        return self.root / f"{self.count:05d}"

    def add(self, chunks: Iterable[bytes], head: Callable[[bytes], bytes] | None = None
            ) -> SpooledPart:
        """A part written from `chunks` (e.g. a zip member as it is extracted; the caller bounds
        its size), its first HEAD_BYTES rewritten by `head` as in `spool_multipart`."""
        part = SpooledPart()
        writer = _Writer(part, self.new_path(), head)
        try:
            for chunk in chunks:
                part.size += len(chunk)
                writer.write(chunk)
        except BaseException:
            writer.drop()
            raise
        writer.finish()
        return part

    def close(self) -> None:
        """Remove the folder and whatever is left in it."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def sweep(storage_dir: Path, older_than_s: float = 24 * 3600) -> int:
    """Remove spool folders left by a crashed process (older than `older_than_s`); returns how
    many. Run at API start; a live request's folder is never that old."""
    root = Path(storage_dir) / "tmp"
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    stale = [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime < cutoff]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


class _Writer:
    """The part being written: holds back its first HEAD_BYTES, then writes and hashes."""

    def __init__(self, part: SpooledPart, path: Path,
                 head: Callable[[bytes], bytes] | None) -> None:
        self.part, self.path, self.head = part, path, head
        self.pending = b""
        self.handle: BinaryIO | None = None
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        if self.handle is None:
            self.pending += data
            if len(self.pending) < HEAD_BYTES:
                return
            data, self.pending = self._opened(), b""
        self.digest.update(data)
        self.handle.write(data)

    def _opened(self) -> bytes:
        self.handle = open(self.path, "wb")  # noqa: SIM115 - closed by finish or drop
        return self.head(self.pending) if self.head is not None else self.pending

    def finish(self) -> None:
        if self.handle is None:
            if not self.pending:
                return
            data = self._opened()
            self.digest.update(data)
            self.handle.write(data)
        self.handle.close()
        self.part.path, self.part.sha256 = self.path, self.digest.hexdigest()

    def drop(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.path.unlink(missing_ok=True)
        self.pending = b""


async def spool_multipart(
    stream: AsyncIterator[bytes], boundary: str, spool: Spool, *, max_part_bytes: int,
    max_parts: int, max_total_bytes: int, head: Callable[[bytes], bytes] | None = None,
) -> list[SpooledPart]:
    """Write every part of a multipart body to a file of `spool` as the body streams in.

    `head`, when given, rewrites the first HEAD_BYTES of each part (or all of a shorter part)
    before they are written and hashed. Raises SpoolError: 413 over `max_total_bytes` or
    `max_parts`, 400 for a malformed body, one without parts, or one cut before its closing
    boundary.
    """
    parts: list[SpooledPart] = []
    state: dict[str, Any] = {"field": b"", "value": b"", "header_bytes": 0, "ended": False}
    writer: list[_Writer] = []

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise SpoolError(413, "too_many_parts", f"the request holds more than {max_parts} "
                             "parts (MAX_INSTANCES_PER_UPLOAD)")
        parts.append(SpooledPart())
        state["header_bytes"] = 0
        writer[:] = [_Writer(parts[-1], spool.new_path(), head)]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.size += end - start
        if part.too_large:
            return
        if part.size > max_part_bytes:
            part.too_large = True
            writer[0].drop()
            return
        writer[0].write(bytes(data[start:end]))

    def on_part_end() -> None:
        if not parts[-1].too_large:
            writer[0].finish()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]
        header_bytes(end - start)

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]
        header_bytes(end - start)

    def header_bytes(count: int) -> None:
        state["header_bytes"] += count
        if state["header_bytes"] > MAX_PART_HEADER_BYTES:
            raise SpoolError(400, "bad_multipart", "a part's headers exceed "
                             f"{MAX_PART_HEADER_BYTES} bytes")

    def on_header_end() -> None:
        name = state["field"].decode("latin-1").strip().lower()
        parts[-1].headers[name] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, callbacks={
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_end": on_end,
    })
    total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > max_total_bytes:
                raise SpoolError(413, "too_large", f"the request body exceeds {max_total_bytes} "
                                 "bytes (MAX_UPLOAD_BYTES)")
            parser.write(chunk)
        parser.finalize()
    except ServiceError:
        raise
    except Exception as error:  # python-multipart raises MultipartParseError and friends
        raise SpoolError(400, "bad_multipart", "the multipart body is malformed "
                         f"({type(error).__name__})") from None
    finally:
        for open_writer in writer:
            if open_writer.handle is not None and not state["ended"]:
                open_writer.drop()
    if not parts:
        raise SpoolError(400, "bad_multipart", "the multipart body holds no parts")
    if not state["ended"]:
        raise SpoolError(400, "cut_short", "the multipart body ends before its closing boundary: "
                         "the transfer was cut short, and nothing of it was stored. Send it again.")
    return parts
