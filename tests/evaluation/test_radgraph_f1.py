"""RadGraph F1 from hand-built graph pairs, with expected values derived from the reference code.

References read (Stanford-AIMI/radgraph):
- `radgraph/rewards.py` at v0.1.18 (commit 35c64b9): `exact_entity_token_match_reward` (simple),
  `exact_entity_token_if_rel_exists_reward` (partial), `exact_entity_token_if_all_match_reward`
  (complete), `compute_reward` (a graph without entities scores 0 at every level).
- `radgraph/rewards.py` at commit b5ab8d0 (PR #15): the same functions with every entity token
  string lower-cased (our `lowercase=True`).
- `radgraph/radgraph.py`, `F1RadGraph.forward`: empty texts score 0 and stay in `np.mean`.
- rajpurkarlab/CXR-Report-Metric `CXRMetric/radgraph_evaluate_model.py`: `parse_entity_relation`,
  `compute_f1`, `add_radgraph_results_to_csv` (radgraph_combined = (entity + relation) / 2).
"""

from __future__ import annotations

import pytest

from evaluation import radgraph
from evaluation.radgraph import GraphFormatError, f1_from_graphs, yu_f1_from_graphs


def graph(*entities: tuple[str, str, list[tuple[str, int]]]) -> dict:
    """A graph from (tokens, label, [(relation, target index 1-based)]) triples."""
    return {
        "text": " ".join(e[0] for e in entities),
        "entities": {
            str(i): {"tokens": tokens, "label": label, "start_ix": i, "end_ix": i,
                     "relations": [[rel, str(target)] for rel, target in relations]}
            for i, (tokens, label, relations) in enumerate(entities, start=1)
        },
    }


# Reference: "mild pulmonary edema . small left effusion"
REFERENCE = graph(
    ("mild", "OBS-DP", [("modify", 3)]),
    ("pulmonary", "ANAT-DP", []),
    ("edema", "OBS-DP", [("located_at", 2)]),
    ("effusion", "OBS-DP", [("located_at", 5)]),
    ("left", "ANAT-DP", []),
)
# Hypothesis: "pulmonary edema . small right effusion . no pneumothorax"
HYPOTHESIS = graph(
    ("pulmonary", "ANAT-DP", []),
    ("edema", "OBS-DP", [("located_at", 1)]),
    ("effusion", "OBS-DP", [("located_at", 4)]),
    ("right", "ANAT-DP", []),
    ("pneumothorax", "OBS-DA", []),
)


def test_simple_reward_matches_entity_text_and_label():
    """simple: H = {pulmonary, edema, effusion, right, pneumothorax}, R = {mild, pulmonary, edema,
    effusion, left}; |H∩R| = 3 -> P = R = 3/5 -> F1 = 0.6."""
    mean, per_report = f1_from_graphs([HYPOTHESIS], [REFERENCE], reward_level="simple")
    assert per_report == [pytest.approx(0.6)]
    assert mean == pytest.approx(0.6)


def test_partial_reward_adds_the_has_a_relation_flag():
    """partial: H = {(pulmonary), (edema,True), (effusion,True), (right), (pneumothorax)};
    R = {(mild,True), (pulmonary), (edema,True), (effusion,True), (left)}: |H∩R| = 3 -> 0.6.
    The hypothesis's effusion points at 'right', the reference's at 'left': partial does not
    look."""
    mean, _ = f1_from_graphs([HYPOTHESIS], [REFERENCE], reward_level="partial")
    assert mean == pytest.approx(0.6)


def test_complete_reward_checks_relation_type_and_target_text():
    """complete: H = {pulmonary, (edema,located_at,pulmonary), (effusion,located_at,right), right,
    pneumothorax}; R = {(mild,modify,edema), pulmonary, (edema,located_at,pulmonary),
    (effusion,located_at,left), left}: |H∩R| = 2 -> P = R = 2/5 -> F1 = 0.4."""
    mean, _ = f1_from_graphs([HYPOTHESIS], [REFERENCE], reward_level="complete")
    assert mean == pytest.approx(0.4)


def test_all_returns_the_three_levels_in_package_order():
    means, per_report = f1_from_graphs([HYPOTHESIS], [REFERENCE], reward_level="all")
    assert means == pytest.approx((0.6, 0.6, 0.4))
    assert [lst[0] for lst in per_report] == pytest.approx([0.6, 0.6, 0.4])


def test_sets_count_repeated_entities_once():
    """rewards.py builds `set(candidate)`: a hypothesis naming 'effusion' three times has
    |H| = 1."""
    hypothesis = graph(*[("effusion", "OBS-DP", [])] * 3)
    reference = graph(("effusion", "OBS-DP", []), ("edema", "OBS-DP", []))
    mean, _ = f1_from_graphs([hypothesis], [reference], reward_level="simple")
    # P = 1/1, R = 1/2 -> F1 = 2/3
    assert mean == pytest.approx(2 / 3)


def test_a_graph_without_entities_scores_zero_and_stays_in_the_mean():
    """compute_reward returns 0 when either side has no entity; F1RadGraph averages over all
    pairs."""
    empty = {"text": "", "entities": {}}
    mean, per_report = f1_from_graphs([REFERENCE, empty], [REFERENCE, REFERENCE],
                                      reward_level="partial")
    assert per_report == [1.0, 0.0]
    assert mean == pytest.approx(0.5)


def test_label_must_match_uncertain_is_not_present():
    hypothesis = graph(("pneumonia", "OBS-U", []))
    reference = graph(("pneumonia", "OBS-DP", []))
    assert f1_from_graphs([hypothesis], [reference], reward_level="simple")[0] == 0.0


def test_lowercase_true_follows_the_github_fix():
    """b5ab8d0 lower-cases entity tokens at every level: 'Effusion' == 'effusion'."""
    hypothesis = graph(("Effusion", "OBS-DP", []))
    reference = graph(("effusion", "OBS-DP", []))
    assert f1_from_graphs([hypothesis], [reference], "simple", lowercase=True)[0] == 1.0


def test_lowercase_false_is_pypi_0_1_18_case_sensitive_for_simple_and_partial():
    hypothesis = graph(("Effusion", "OBS-DP", []))
    reference = graph(("effusion", "OBS-DP", []))
    assert f1_from_graphs([hypothesis], [reference], "simple", lowercase=False)[0] == 0.0
    assert f1_from_graphs([hypothesis], [reference], "partial", lowercase=False)[0] == 0.0


def test_lowercase_false_still_lowercases_relation_tuples_in_complete():
    """0.1.18's exact_entity_token_if_all_match_reward lower-cases (tokens, target) of relation
    tuples but not entities without relations: Edema->Lung matches, the lone 'Mild' does not."""
    hypothesis = graph(("Edema", "OBS-DP", [("located_at", 2)]), ("Lung", "ANAT-DP", []),
                       ("Mild", "OBS-DP", []))
    reference = graph(("edema", "OBS-DP", [("located_at", 2)]), ("lung", "ANAT-DP", []),
                      ("mild", "OBS-DP", []))
    # H = {(edema,OBS-DP,located_at,lung), (Lung,ANAT-DP), (Mild,OBS-DP)};
    # R lower-case: 1 shared of 3.
    case_sensitive = f1_from_graphs([hypothesis], [reference], "complete", lowercase=False)[0]
    assert case_sensitive == pytest.approx(1 / 3)
    assert f1_from_graphs([hypothesis], [reference], "complete", lowercase=True)[0] == 1.0


def test_radgraph_xl_labels_are_compared_as_they_are():
    xl = graph(
        ("effusion", "Observation::definitely present", [("located_at", 2)]),
        ("pleural", "Anatomy::definitely present", []),
    )
    assert f1_from_graphs([xl], [xl], "complete")[0] == 1.0
    v1 = graph(("effusion", "OBS-DP", [("located_at", 2)]), ("pleural", "ANAT-DP", []))
    assert f1_from_graphs([xl], [v1], "partial")[0] == 0.0
    assert f1_from_graphs([xl], [v1], "partial", labels="v1")[0] == 1.0


def test_yu_combined_is_the_mean_of_entity_and_relation_f1():
    """compute_f1 on entity sets {(tokens,label)} and relation sets {((tok,lab),(tok,lab),type)}:
    entities 3 of 5 both ways -> 0.6; relations H = {edema->pulmonary, effusion->right},
    R = {mild->edema, edema->pulmonary, effusion->left}: TP 1, P 1/2, R 1/3 -> 0.4; combined 0.5."""
    results = yu_f1_from_graphs([HYPOTHESIS], [REFERENCE])
    assert results["entity"][0] == pytest.approx(0.6)
    assert results["relation"][0] == pytest.approx(0.4)
    assert results["combined"][0] == pytest.approx(0.5)


def test_yu_relation_f1_is_zero_when_neither_report_has_a_relation():
    lone = graph(("cardiomegaly", "OBS-DP", []))
    results = yu_f1_from_graphs([lone], [lone])
    assert results["entity"][0] == 1.0
    assert results["relation"][0] == 0.0
    assert results["combined"][0] == 0.5


def test_yu_is_case_sensitive_by_default_like_the_original():
    scores = yu_f1_from_graphs([graph(("Edema", "OBS-DP", []))], [graph(("edema", "OBS-DP", []))])
    assert scores["entity"][0] == 0.0


def test_relation_to_an_unknown_entity_is_a_format_error():
    broken = graph(("edema", "OBS-DP", [("located_at", 9)]))
    with pytest.raises(GraphFormatError, match="relations must point"):
        f1_from_graphs([broken], [broken], "complete")


def test_a_graph_without_entities_key_is_a_format_error():
    with pytest.raises(GraphFormatError, match="entities"):
        f1_from_graphs([{"text": "x"}], [REFERENCE])


def test_registered_backend_replaces_the_extractor_for_text_scoring():
    """A backend is anything with `name` and `extract_many`; texts are extracted once each."""
    calls: list[str] = []

    class WordBackend:
        name = "words-for-test"

        def extract_many(self, texts):
            calls.extend(texts)
            return [graph(*((w, "OBS-DP", []) for w in t.split())) for t in texts]

    radgraph.register_backend("words-for-test", WordBackend)
    results = radgraph.f1_from_texts(
        ["edema effusion", "edema", ""], ["edema", "edema", "edema"], backend="words-for-test"
    )
    assert results["simple"][1] == pytest.approx([2 / 3, 1.0, 0.0])
    assert results["simple"][0] == pytest.approx((2 / 3 + 1.0) / 3)
    assert sorted(calls) == ["edema", "edema effusion"]
    assert radgraph.extract("a b", backend="words-for-test")["entities"]["2"]["tokens"] == "b"


def test_unknown_backend_names_the_choices():
    with pytest.raises(radgraph.ExtractorUnavailableError, match="choose one of"):
        radgraph.extract("x", backend="no-such-extractor")


def test_radgraph_package_backend_explains_what_it_needs():
    with pytest.raises(radgraph.ExtractorUnavailableError, match="radgraph"):
        radgraph.RadGraphPackageBackend(model_dir="/nonexistent")
