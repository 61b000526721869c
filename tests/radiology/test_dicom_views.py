"""View position and laterality come from the header by a documented order of sources."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radiology.dicom import read, read_header
from tests.helpers.dicom_factory import base_dataset, chest_like, to_bytes

ARR = chest_like(rows=32, cols=32)


def _view(**attrs) -> str | None:
    view = attrs.pop("ViewPosition", None)
    return read(to_bytes(base_dataset(ARR, view=view, **attrs))).view


@pytest.mark.parametrize(
    ("value", "expected"),
    [("PA", "PA"), ("AP", "AP"), ("LL", "LL"), ("LATERAL", "LATERAL"), ("RL", "LATERAL"),
     ("AP AXIAL", "AP"), ("PA LLD", "PA"), ("XTABLE LATERAL", "LATERAL"), ("LAO", None),
     ("", None)],
)
def test_view_position_values(value: str, expected: str | None):
    assert _view(ViewPosition=value) == expected


def _code(value: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = meaning
    return Sequence([item])


@pytest.mark.parametrize(
    ("value", "meaning", "expected"),
    [("R-10214", "postero-anterior", "PA"), ("R-10206", "antero-posterior", "AP"),
     ("R-10232", "left lateral", "LL"), ("R-10236", "right lateral", "LATERAL")],
)
def test_view_code_sequence_when_view_position_is_missing(value, meaning, expected):
    assert _view(ViewCodeSequence=_code(value, meaning)) == expected


@pytest.mark.parametrize(
    ("description", "expected"),
    [("CHEST PA", "PA"), ("Chest AP portable", "AP"), ("CHEST LAT", "LATERAL"),
     ("Thorax p.a.", "PA"), ("CHEST PA AND LAT", None), ("PORTABLE CHEST", "AP")],
)
def test_series_description_fallback_only_when_unambiguous(description: str, expected: str | None):
    assert _view(SeriesDescription=description) == expected


def test_view_position_wins_over_text():
    assert _view(ViewPosition="AP", SeriesDescription="CHEST PA") == "AP"


def test_laterality_from_image_laterality_then_laterality():
    assert read(to_bytes(base_dataset(ARR, ImageLaterality="L"))).laterality == "L"
    assert read(to_bytes(base_dataset(ARR, Laterality="R"))).laterality == "R"
    assert read(to_bytes(base_dataset(ARR))).laterality is None


def test_read_header_gives_view_and_order_keys_without_decoding():
    ds = base_dataset(ARR, view="LL", InstanceNumber=3, SeriesNumber=2, AcquisitionDate="20250102",
                      AcquisitionTime="101502")
    header = read_header(to_bytes(ds))
    assert (header.view, header.instance_number, header.series_number) == ("LL", 3, 2)
    assert header.acquisition_datetime == "20250102101502"
    assert (header.rows, header.columns, header.has_pixels) == (32, 32, True)
