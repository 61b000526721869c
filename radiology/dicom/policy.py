"""What `radiology.dicom` accepts: the limits and rules of one read (`ReadPolicy`).

Its limits bound memory before anything is allocated: ``max_bytes`` bounds an instance's bytes,
also after a deflated data set is inflated (a deflate bomb is refused at the limit, not after),
and ``max_pixels`` bounds the decoded frame, checked from the header and from the codestream's
own declared size before a decoder runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_POLICY", "MIB", "PROJECTION_MODALITIES", "ReadPolicy"]

MIB = 1024 * 1024

#: Modalities accepted by default: projection X-ray (plain film, digital, mammography, dental,
#: fluoroscopy, angiography) and OT, which secondary captures of digitised films carry.
PROJECTION_MODALITIES: frozenset[str] = frozenset(
    {"CR", "DX", "DR", "RG", "MG", "IO", "PX", "RF", "XA", "OT"}
)


@dataclass(frozen=True)
class ReadPolicy:
    """What :func:`read` accepts and how it resolves ambiguous headers.

    ``modalities=None`` accepts every modality. ``max_pixels`` bounds the decoded frame
    (rows x columns x samples), checked from the header before decoding, so a small compressed
    file claiming a huge image is refused without allocating it.
    """

    modalities: frozenset[str] | None = PROJECTION_MODALITIES
    accept_missing_modality: bool = True
    max_bytes: int = 256 * MIB
    max_pixels: int = 64 * 1024 * 1024
    multiframe: Literal["first", "reject"] = "first"
    #: "photometric": polarity comes from Photometric Interpretation alone, a contradicting
    #: Presentation LUT Shape is noted and ignored; "honor": INVERSE always inverts the output.
    presentation_lut: Literal["photometric", "honor"] = "photometric"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.multiframe not in ("first", "reject"):
            raise ValueError(
                f"ReadPolicy.multiframe must be 'first' or 'reject', not {self.multiframe!r}"
            )
        if self.presentation_lut not in ("photometric", "honor"):
            raise ValueError(
                "ReadPolicy.presentation_lut must be 'photometric' or 'honor', "
                f"not {self.presentation_lut!r}"
            )
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(
                "ReadPolicy.percentiles must satisfy 0 <= low < high <= 100, "
                f"got {self.percentiles}"
            )
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("ReadPolicy limits must be positive")


DEFAULT_POLICY = ReadPolicy()


DEFAULT_POLICY = ReadPolicy()
