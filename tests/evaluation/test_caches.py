"""The in-process caches: one per concern, each text computed once, all emptied by clear_caches."""

from __future__ import annotations

import pytest

import evaluation
from evaluation import chexpert, radgraph
from evaluation.caches import TextCache, cache_sizes

TEXTS = ["Mild cardiomegaly. No pneumothorax.", "Small left pleural effusion. No pneumothorax."]
CONCERNS = {"chexpert labels", "chexpert sentences", "radgraph graphs", "extractor sentences"}


def test_scoring_fills_one_cache_per_concern_and_clear_caches_empties_them():
    evaluation.clear_caches()
    evaluation.score(TEXTS, TEXTS[::-1], metrics=["radgraph", "chexpert"])
    sizes = cache_sizes()
    assert CONCERNS <= set(sizes)
    assert sizes["chexpert labels"] == sizes["radgraph graphs"] == len(TEXTS)
    assert sizes["chexpert sentences"] == sizes["extractor sentences"] == 3  # distinct sentences
    evaluation.clear_caches()
    assert set(cache_sizes().values()) == {0}


def test_a_text_cache_computes_each_missing_key_once_and_keeps_the_order():
    cache: TextCache[str, str] = TextCache("test upper", limit=10)
    asked: list[list[str]] = []

    def upper(keys: list[str]) -> list[str]:
        asked.append(keys)
        return [key.upper() for key in keys]

    assert cache.get_many(["a", "b", "a"], upper) == ["A", "B", "A"]
    assert cache.get_many(["b", "c", "a"], upper) == ["B", "C", "A"]
    assert asked == [["a", "b"], ["c"]]


def test_a_full_text_cache_starts_over_and_still_answers():
    cache: TextCache[int, int] = TextCache("test square", limit=3)
    assert cache.get_many([1, 2, 3], lambda keys: [k * k for k in keys]) == [1, 4, 9]
    assert cache.get_many([3, 4], lambda keys: [k * k for k in keys]) == [9, 16]
    assert len(cache) == 1  # the held 3 went with the rest; only the new 4 is kept


def test_a_concern_has_one_cache():
    with pytest.raises(ValueError, match="exists already"):
        TextCache("chexpert labels")


def test_labels_and_graphs_of_a_text_are_computed_once_and_shared():
    first = chexpert.label_many(TEXTS)
    assert chexpert.label_many(TEXTS[:1])[0] is first[0]
    assert radgraph.extract_many(TEXTS)[1] is radgraph.extract(TEXTS[1])


def test_label_returns_a_copy_the_caller_may_change():
    labels = chexpert.label(TEXTS[0])
    labels["Cardiomegaly"] = None
    assert chexpert.label(TEXTS[0])["Cardiomegaly"] == chexpert.POSITIVE
