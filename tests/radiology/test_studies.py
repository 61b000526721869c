"""Studies group instances by StudyInstanceUID and choose a frontal view (PA over AP) and an
optional lateral."""

from __future__ import annotations

from dataclasses import dataclass

from radiology.dicom import read, read_header
from radiology.studies import choose_views, group_studies, order_instances
from tests.helpers.dicom_factory import base_dataset, chest_like, to_bytes


@dataclass(frozen=True)
class Inst:
    sop_uid: str
    view: str | None
    study_uid: str | None = "s1"
    rows: int = 100
    columns: int = 100
    series_number: int | None = None
    instance_number: int | None = None
    acquisition_datetime: str | None = None


def test_grouped_by_study_uid_in_order_of_first_acquisition():
    items = [Inst("a", "PA", "s2", acquisition_datetime="20250103"),
             Inst("b", "PA", "s1", acquisition_datetime="20250101"),
             Inst("c", "LL", "s2", acquisition_datetime="20250103")]
    studies = group_studies(items)
    assert [s.study_uid for s in studies] == ["s1", "s2"]
    assert [i.sop_uid for i in studies[1].instances] == ["a", "c"]


def test_order_is_time_then_series_then_instance_then_uid():
    items = [Inst("d", None, series_number=2, instance_number=1),
             Inst("c", None, series_number=1, instance_number=2),
             Inst("b", None, series_number=1, instance_number=1),
             Inst("a", None, acquisition_datetime="20250101")]
    assert [i.sop_uid for i in order_instances(items)] == ["a", "b", "c", "d"]


def test_pa_is_preferred_over_ap():
    views = [Inst("ap", "AP"), Inst("pa", "PA"), Inst("lat", "LATERAL")]
    frontal, lateral, known = choose_views(views)
    assert (frontal.sop_uid, lateral.sop_uid, known) == ("pa", "lat", True)


def test_ap_is_used_when_there_is_no_pa():
    frontal, lateral, _ = choose_views([Inst("ap", "AP")])
    assert frontal.sop_uid == "ap" and lateral is None


def test_latest_repeat_wins_then_larger_image():
    items = [Inst("pa1", "PA", acquisition_datetime="20250101100000"),
             Inst("pa2", "PA", acquisition_datetime="20250101100500"),
             Inst("pa3", "PA", acquisition_datetime="20250101100500", rows=200)]
    assert choose_views(items)[0].sop_uid == "pa3"


def test_left_lateral_preferred_over_lateral():
    _, lateral, _ = choose_views([Inst("pa", "PA"), Inst("lat", "LATERAL"), Inst("ll", "LL")])
    assert lateral.sop_uid == "ll"


def test_unlabelled_image_is_the_frontal_fallback_and_says_so():
    frontal, lateral, known = choose_views([Inst("lat", "LL"), Inst("x", None)])
    assert (frontal.sop_uid, lateral.sop_uid, known) == ("x", "lat", False)


def test_lateral_only_study_has_no_frontal():
    frontal, lateral, known = choose_views([Inst("lat", "LL")])
    assert frontal is None and lateral.sop_uid == "lat" and not known


def test_model_images_frontal_first():
    study = group_studies([Inst("ll", "LL"), Inst("pa", "PA")])[0]
    assert [i.sop_uid for i in study.model_images] == ["pa", "ll"]


def test_works_on_headers_and_decoded_images_from_real_files():
    arr = chest_like(rows=24, cols=24)
    files = [to_bytes(base_dataset(arr, view=v, study_uid="1.2.3.4")) for v in ("LL", "AP", "PA")]
    headers = [read_header(f) for f in files]
    images = [read(f) for f in files]
    for items in (headers, images):
        study = group_studies(items)[0]
        assert (study.frontal.view, study.lateral.view, len(study.instances)) == ("PA", "LL", 3)
