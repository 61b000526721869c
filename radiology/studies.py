"""Studies: group instances by StudyInstanceUID, order them, and choose the images a model sees.

Works on anything with the attributes of :class:`radiology.dicom.InstanceHeader` (``read_header``,
no pixel decoding) or :class:`radiology.dicom.DicomImage` (``read``), so views can be chosen before
any pixels are decoded.

Order inside a study: acquisition date/time (missing last), then Series Number, Instance Number,
SOP Instance UID (missing numbers last; the UID makes the order total and reproducible).

View rule:

- frontal: a PA image if there is one, else an AP image. Among several of the chosen view, the
  *latest* acquired wins (a repeat exposure replaces a rejected one), then the larger image, then
  the SOP Instance UID. When no image is labelled PA or AP, the first unlabelled image (view None)
  is used and ``frontal_view_known`` is False; labelled laterals are never used as frontal.
- lateral (optional second image): LL (the standard left lateral) over LATERAL, then the same
  tie-breaks as frontal. None when the study has no lateral.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = [
    "Study",
    "InstanceLike",
    "group_studies",
    "order_instances",
    "choose_views",
    "FRONTAL_RANK",
    "LATERAL_RANK",
]

FRONTAL_RANK = {"PA": 0, "AP": 1}
LATERAL_RANK = {"LL": 0, "LATERAL": 1}


class InstanceLike(Protocol):
    """The attributes this module reads."""

    @property
    def study_uid(self) -> str | None: ...
    @property
    def sop_uid(self) -> str | None: ...
    @property
    def view(self) -> str | None: ...
    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def series_number(self) -> int | None: ...
    @property
    def instance_number(self) -> int | None: ...
    @property
    def acquisition_datetime(self) -> str | None: ...


T = TypeVar("T", bound=InstanceLike)
_LAST = float("inf")


@dataclass(frozen=True)
class Study(Generic[T]):
    """One study: its ordered instances and the chosen frontal / lateral images."""

    study_uid: str | None
    instances: tuple[T, ...]
    frontal: T | None
    lateral: T | None
    frontal_view_known: bool

    @property
    def model_images(self) -> tuple[T, ...]:
        """Frontal first, then the lateral when present (what a model consumes)."""
        return tuple(x for x in (self.frontal, self.lateral) if x is not None)


def _order_key(item: InstanceLike) -> tuple:
    when = item.acquisition_datetime
    return (
        when is None,
        when or "",
        _LAST if item.series_number is None else item.series_number,
        _LAST if item.instance_number is None else item.instance_number,
        item.sop_uid or "",
    )


def order_instances(items: Iterable[T]) -> list[T]:
    """Instances in acquisition order (see the module docstring)."""
    return sorted(items, key=_order_key)


def _best(items: list[T], rank: dict[str | None, int]) -> T | None:
    candidates = [x for x in items if x.view in rank]
    if not candidates:
        return None

    def key(x: T) -> tuple:
        when = x.acquisition_datetime or ""
        return (rank[x.view], _neg(when), -(x.rows * x.columns), x.sop_uid or "")

    return min(candidates, key=key)


def _neg(text: str) -> tuple[int, ...]:
    """Sort key that orders strings descending (latest first) inside an ascending sort."""
    return tuple(-ord(c) for c in text) + (1,)


def choose_views(items: Iterable[T]) -> tuple[T | None, T | None, bool]:
    """(frontal, lateral, frontal_view_known) by the documented rule."""
    ordered = order_instances(items)
    frontal = _best(ordered, FRONTAL_RANK)  # type: ignore[arg-type]
    known = frontal is not None
    if frontal is None:
        unlabelled = [x for x in ordered if x.view is None]
        frontal = unlabelled[0] if unlabelled else None
    lateral = _best(ordered, LATERAL_RANK)  # type: ignore[arg-type]
    return frontal, lateral, known


def group_studies(items: Iterable[T]) -> list[Study[T]]:
    """Group by StudyInstanceUID (instances without one form a study of their own UID None).

    Studies come back in the order of their first instance.
    """
    groups: dict[str | None, list[T]] = {}
    for item in items:
        groups.setdefault(item.study_uid, []).append(item)
    studies = []
    for uid, members in groups.items():
        ordered = order_instances(members)
        frontal, lateral, known = choose_views(ordered)
        studies.append(Study(uid, tuple(ordered), frontal, lateral, known))
    studies.sort(key=lambda s: _order_key(s.instances[0]))
    return studies
