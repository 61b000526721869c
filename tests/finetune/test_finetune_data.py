"""Training data: prompt/target text, the image cache, host sharding and resumable iteration."""

from __future__ import annotations

import numpy as np

from finetune import data
from finetune.config import DataSection


class _Study:
    def __init__(self, study_id: int, value: float) -> None:
        self.study_id = study_id
        self.value = value
        self.loads = 0

    def load_image(self) -> np.ndarray:
        self.loads += 1
        return np.full((20, 30), self.value, np.float32)


def _resize(image01: np.ndarray, size: int) -> np.ndarray:
    from modeling.preprocess import preprocess_image

    return preprocess_image(image01, size)


def test_the_paper_target_names_both_sections_and_the_community_one_only_findings() -> None:
    assert data.format_target("findings_impression", " Lungs clear. ", "Normal.") == (
        "FINDINGS: Lungs clear. IMPRESSION: Normal.")
    assert data.format_target("findings_impression", None, "Normal.") == "IMPRESSION: Normal."
    assert data.format_target("findings", "Lungs clear.", "Normal.") == "Lungs clear."


def test_the_prompt_carries_the_indication() -> None:
    assert data.format_prompt("INDICATION: {indication}", " Cough,\n fever. ") == (
        "INDICATION: Cough, fever.")
    assert data.format_prompt("describe en", "Cough.") == "describe en"


def test_images_are_decoded_once_into_the_cache(tmp_path) -> None:
    studies = [_Study(1, 0.0), _Study(2, 1.0), _Study(3, 0.5)]
    first = data.image_cache(studies, 8, tmp_path, _resize, "train")
    again = data.image_cache(studies, 8, tmp_path, _resize, "train")
    assert [s.loads for s in studies] == [1, 1, 1]
    assert first.shape == (3, 8, 8) and first.dtype == np.uint8
    assert again[1].min() == 255 and again[0].max() == 0 and abs(int(again[2, 0, 0]) - 128) <= 1
    pixels = data.to_pixels(np.asarray(again))
    assert pixels.shape == (3, 8, 8, 3) and pixels.min() == -1.0 and pixels.max() == 1.0


def test_a_different_split_or_size_builds_a_new_cache(tmp_path) -> None:
    studies = [_Study(1, 0.0), _Study(2, 1.0)]
    data.image_cache(studies, 8, tmp_path, _resize, "train")
    data.image_cache(studies[:1], 8, tmp_path, _resize, "train")
    data.image_cache(studies, 4, tmp_path, _resize, "train")
    assert len(list(tmp_path.glob("train-*.npy"))) == 3


def _source(n: int = 10) -> data.ExampleSource:
    images = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    tokens = {"input_ids": np.arange(n, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32)}
    return data.ExampleSource(images, tokens)


def _ids(iterator, batches: int) -> list[list[int]]:
    return [next(iterator)["input_ids"][:, 0].tolist() for _ in range(batches)]


def test_hosts_read_disjoint_shards_that_cover_the_data() -> None:
    seen = []
    for host in range(2):
        it = data.TrainIterator(data.train_dataset(_source(), 5, 0, host, 2, False))
        seen.append(set(_ids(it, 1)[0]))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(10))


def test_hosts_together_read_the_batches_one_host_reads_each_host_its_own_block() -> None:
    one = _ids(data.TrainIterator(data.train_dataset(_source(), 4, 3, 0, 1, False)), 5)
    hosts = [_ids(data.TrainIterator(data.train_dataset(_source(), 2, 3, h, 2, False)), 5)
             for h in range(2)]
    assert [a + b for a, b in zip(*hosts, strict=True)] == one


def test_each_epoch_is_a_new_permutation_and_the_order_is_deterministic() -> None:
    make = lambda: data.TrainIterator(data.train_dataset(_source(), 5, 7, 0, 1, False))  # noqa: E731
    a, b = _ids(make(), 4), _ids(make(), 4)
    assert a == b
    assert sorted(a[0] + a[1]) == list(range(10)) and sorted(a[2] + a[3]) == list(range(10))
    assert a[:2] != a[2:]


def test_an_iterator_restored_from_its_state_continues_the_same_stream() -> None:
    dataset = data.train_dataset(_source(), 3, 1, 0, 1, True)
    it = data.TrainIterator(dataset)
    _ids(it, 2)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    resumed = data.TrainIterator(dataset)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(got["image"], want["image"])  # augmentation included


def test_augmentation_keeps_the_image_shape_and_dtype() -> None:
    row = {"image": np.full((16, 16), 100, np.uint8)}
    out = data.augment(row, np.random.default_rng(0))
    assert out["image"].shape == (16, 16) and out["image"].dtype == np.uint8


def test_split_reading_keeps_studies_with_a_target(synth_tree) -> None:
    config = DataSection(root=str(synth_tree), target="findings")
    examples = data.read_split(config, "train")
    pairs = data.text_pairs(config, examples)
    assert pairs and all(p.target for p in pairs)
    assert all(p.prefix.startswith("INDICATION:") for p in pairs)
    assert [p.study_id for p in pairs] == sorted(p.study_id for p in pairs)
