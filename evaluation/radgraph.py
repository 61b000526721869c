"""RadGraph F1 from two graphs, as the `radgraph` package and Yu et al. compute it, with
pluggable extractors.

Graphs use the `radgraph` package's JSON form::

    {"text": "...", "entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3,
                                        "end_ix": 3, "relations": [["located_at", "2"]]}, ...}}

Labels are compared as strings: RadGraph v1 labels (ANAT-DP, OBS-DP, OBS-U, OBS-DA) and RadGraph-XL
labels (`Anatomy::definitely present`, `Observation::uncertain`, ...) are accepted as they are;
`labels="v1"` maps XL labels onto v1 codes first (see :data:`XL_TO_V1`) so graphs of both schemes
can be compared.

Reward levels (`radgraph/rewards.py` of Stanford-AIMI/radgraph, function `compute_reward`):

- ``simple`` (RG_E): the set of ``(tokens, label)`` of every entity.
- ``partial`` (RG_ER, the most reported): ``(tokens, label)`` for an entity without relations,
  ``(tokens, label, True)`` for one with at least one relation.
- ``complete`` (RG_ER-bar): ``(tokens, label)`` without relations, else one
  ``(tokens, label, relation_type, target_tokens)`` per relation.

Per pair: P = |H ∩ R| / |H|, R = |H ∩ R| / |R|, F1 = 2PR / (P + R), 0 when undefined; a pair in
which either graph has no entity scores 0 at every level; the corpus value is the mean over all
pairs (`F1RadGraph.forward`), pairs with an empty text included as 0.

Case (`lowercase`):

- ``True`` (default): every token string is lower-cased, as on the package's GitHub HEAD after
  commit b5ab8d0 (PR #15, "Fix case-sensitivity bug ..."); the version number was not changed.
- ``False``: exactly PyPI `radgraph` 0.1.18 (commit 35c64b9): `simple` and `partial` compare
  tokens case-sensitively; `complete` lower-cases the tokens of relation tuples only.

Yu et al. (`rajpurkarlab/CXR-Report-Metric`, `CXRMetric/radgraph_evaluate_model.py`,
`parse_entity_relation` and `compute_f1`): entities ``(tokens, label)``, relations
``((tokens, label), (target_tokens, target_label), type)``; per report entity F1 and relation F1
(0 for empty sets), `radgraph_combined` = their mean. Case-sensitive in the original;
`lowercase=True` lower-cases here too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evaluation.caches import TextCache

__all__ = [
    "REWARD_LEVELS",
    "XL_TO_V1",
    "ExtractorBackend",
    "ExtractorUnavailableError",
    "GraphFormatError",
    "GraphSets",
    "available_backends",
    "default_backend_name",
    "extract",
    "extract_many",
    "f1_from_graphs",
    "f1_from_texts",
    "get_backend",
    "graph_sets",
    "register_backend",
    "set_default_backend",
    "sets_of_texts",
    "yu_f1_from_graphs",
]

REWARD_LEVELS = ("simple", "partial", "complete")

#: RadGraph-XL entity labels mapped onto RadGraph v1 codes (used with ``labels="v1"``).
XL_TO_V1 = {
    "Anatomy::definitely present": "ANAT-DP",
    "Anatomy::measurement::definitely present": "ANAT-DP",
    "Observation::definitely present": "OBS-DP",
    "Observation::measurement::definitely present": "OBS-DP",
    "Observation::uncertain": "OBS-U",
    "Observation::definitely absent": "OBS-DA",
    "Anatomy::uncertain": "ANAT-U",
    "Anatomy::definitely absent": "ANAT-DA",
}


class GraphFormatError(ValueError):
    """A graph is not in the radgraph JSON form (missing keys, a relation to an unknown entity)."""


class ExtractorUnavailableError(RuntimeError):
    """The chosen extractor backend cannot run here (unknown name, missing package or weights)."""


Graph = Mapping[str, Any]


@dataclass(frozen=True)
class GraphSets:
    """The tuple sets every reward of one graph is computed from."""

    num_entities: int
    simple: frozenset
    partial: frozenset
    complete: frozenset
    yu_entities: frozenset
    yu_relations: frozenset


def _entities(graph: Graph) -> Mapping[str, Mapping[str, Any]]:
    try:
        entities = graph["entities"]
    except (KeyError, TypeError):
        raise GraphFormatError(
            "a graph must be a mapping with an 'entities' mapping (the radgraph JSON form)"
        ) from None
    if not isinstance(entities, Mapping):
        raise GraphFormatError("'entities' must map entity ids to entities")
    return entities


def _format_error(entity_id: str, missing: str) -> GraphFormatError:
    return GraphFormatError(
        f"entity {entity_id!r} is missing or lacks {missing!r}; relations must point to entity ids "
        "of the same graph and entities need 'tokens' and 'label'"
    )


def graph_sets(graph: Graph, lowercase: bool = True, labels: str = "as_is") -> GraphSets:
    """Build the reward tuple sets of one graph (see the module docstring for the conventions)."""
    if labels not in ("as_is", "v1"):
        raise ValueError(f"labels must be 'as_is' or 'v1', not {labels!r}")
    entities = _entities(graph)
    # One pass: (tokens, compared tokens, label) per entity id.
    named: dict[str, tuple[str, str, str]] = {}
    for entity_id, entity in entities.items():
        try:
            tokens, label = entity["tokens"], entity["label"]
        except KeyError as error:
            raise _format_error(entity_id, error.args[0]) from None
        if not isinstance(tokens, str):  # a token list instead of the package's joined string
            tokens = " ".join(map(str, tokens))
        if labels == "v1":
            label = XL_TO_V1.get(label, label)
        named[entity_id] = (tokens, tokens.lower() if lowercase else tokens, label)
    simple, partial, complete, relations_yu = set(), set(), set(), set()
    for entity_id, entity in entities.items():
        tokens, key, label = named[entity_id]
        entity_key = (key, label)
        simple.add(entity_key)
        relations = entity.get("relations")
        if not relations:
            partial.add(entity_key)
            complete.add(entity_key)
            continue
        partial.add((key, label, True))
        lowered = tokens.lower()
        for relation in relations:
            target = named.get(str(relation[1]))
            if target is None:
                raise _format_error(str(relation[1]), "tokens")
            # rewards.py lower-cases relation tuples at every version.
            complete.add((lowered, label, relation[0], target[0].lower()))
            relations_yu.add((entity_key, (target[1], target[2]), relation[0]))
    simple_set = frozenset(simple)
    return GraphSets(
        num_entities=len(entities),
        simple=simple_set,
        partial=frozenset(partial),
        complete=frozenset(complete),
        yu_entities=simple_set,
        yu_relations=frozenset(relations_yu),
    )


def _set_f1(hypothesis: frozenset, reference: frozenset) -> float:
    """F1 of two tuple sets as `rewards.py` computes it (0 when a side is empty)."""
    if not hypothesis or not reference:
        return 0.0
    common = len(hypothesis & reference)
    precision = common / len(hypothesis)
    recall = common / len(reference)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def pair_rewards(hypothesis: GraphSets, reference: GraphSets) -> dict[str, float]:
    """simple / partial / complete F1 and Yu et al.'s entity / relation / combined F1 of one
    pair."""
    if hypothesis.num_entities == 0 or reference.num_entities == 0:
        levels = {level: 0.0 for level in REWARD_LEVELS}
    else:
        levels = {
            "simple": _set_f1(hypothesis.simple, reference.simple),
            "partial": _set_f1(hypothesis.partial, reference.partial),
            "complete": _set_f1(hypothesis.complete, reference.complete),
        }
    entity = _set_f1(hypothesis.yu_entities, reference.yu_entities)
    relation = _set_f1(hypothesis.yu_relations, reference.yu_relations)
    levels.update(entity=entity, relation=relation, combined=(entity + relation) / 2)
    return levels


def _check_pairs(hypotheses: Sequence[Any], references: Sequence[Any]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} references; "
            "they must pair one to one"
        )


def f1_from_graphs(
    hypothesis_graphs: Sequence[Graph],
    reference_graphs: Sequence[Graph],
    reward_level: str = "partial",
    lowercase: bool = True,
    labels: str = "as_is",
) -> tuple[float | tuple[float, float, float], list[float] | tuple[list[float], ...]]:
    """RadGraph F1 (mean, per-report list) from paired graphs, as `F1RadGraph` of `radgraph`.

    `reward_level` is "simple", "partial", "complete" or "all" (then both results are 3-tuples in
    that order, like the package). An empty graph list gives a mean of 0.0.

    >>> hyp = {"entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "relations": []}}}
    >>> f1_from_graphs([hyp], [hyp])
    (1.0, [1.0])
    """
    _check_pairs(hypothesis_graphs, reference_graphs)
    levels = REWARD_LEVELS if reward_level == "all" else (reward_level,)
    if any(level not in REWARD_LEVELS for level in levels):
        raise ValueError(
            f"reward_level must be one of {REWARD_LEVELS + ('all',)}, not {reward_level!r}"
        )
    per_level: dict[str, list[float]] = {level: [] for level in levels}
    for hypothesis, reference in zip(hypothesis_graphs, reference_graphs, strict=True):
        rewards = pair_rewards(
            graph_sets(hypothesis, lowercase, labels), graph_sets(reference, lowercase, labels)
        )
        for level in levels:
            per_level[level].append(rewards[level])
    means = {
        level: float(np.mean(values)) if values else 0.0 for level, values in per_level.items()
    }
    if reward_level == "all":
        return tuple(means[level] for level in levels), tuple(per_level[level] for level in levels)
    return means[reward_level], per_level[reward_level]


def yu_f1_from_graphs(
    hypothesis_graphs: Sequence[Graph], reference_graphs: Sequence[Graph], lowercase: bool = False
) -> dict[str, tuple[float, list[float]]]:
    """Yu et al.'s entity, relation and combined RadGraph F1: {name: (mean, per-report list)}.

    The default `lowercase=False` is the original's case-sensitive comparison.
    """
    _check_pairs(hypothesis_graphs, reference_graphs)
    out: dict[str, list[float]] = {"entity": [], "relation": [], "combined": []}
    for hypothesis, reference in zip(hypothesis_graphs, reference_graphs, strict=True):
        rewards = pair_rewards(graph_sets(hypothesis, lowercase), graph_sets(reference, lowercase))
        for name in out:
            out[name].append(rewards[name])
    return {name: (float(np.mean(v)) if v else 0.0, v) for name, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Extractor backends


@runtime_checkable
class ExtractorBackend(Protocol):
    """Turns report texts into graphs in the radgraph JSON form."""

    name: str

    def extract_many(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One graph per text, in order."""
        ...


class RulesBackend:
    """The offline lexicon-and-rules extractor, :func:`evaluation.extractor.extract_graph`."""

    name = "rules"

    def __init__(self) -> None:
        from evaluation.extractor import extract_graph  # noqa: PLC0415 - loaded on first use

        self._extract = extract_graph

    def extract_many(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Run the rules on every text."""
        return [self._extract(text) for text in texts]


class RadGraphPackageBackend:
    """The learned extractor of the `radgraph` package, with weights the user already has.

    Set `RADGRAPH_MODEL_TYPE` ("radgraph" for v1, "radgraph-xl", ...) and `RADGRAPH_MODEL_DIR`
    (a folder holding `<model_type>/` with `config.json`, `vocabulary/`, `weights.th`, as the
    package unpacks them); nothing is downloaded when that folder is filled.
    """

    name = "radgraph"

    def __init__(self, model_type: str | None = None, model_dir: str | None = None) -> None:
        try:
            import radgraph  # noqa: PLC0415 - optional, heavy
        except ImportError as error:
            raise ExtractorUnavailableError(
                "extractor 'radgraph' needs the radgraph package (pip install radgraph==0.1.18) "
                "and its model weights; the default extractor 'rules' needs neither"
            ) from error
        model_type = model_type or os.environ.get("RADGRAPH_MODEL_TYPE", "radgraph")
        model_dir = model_dir or os.environ.get("RADGRAPH_MODEL_DIR")
        if not model_dir or not os.path.isdir(os.path.join(model_dir, model_type)):
            raise ExtractorUnavailableError(
                f"extractor 'radgraph' needs its weights in RADGRAPH_MODEL_DIR/{model_type}/ "
                "(config.json, vocabulary/, weights.th); "
                "set RADGRAPH_MODEL_DIR to that folder's parent"
            )
        self.model_type = model_type
        self._model = radgraph.RadGraph(model_type=model_type, model_cache_dir=model_dir)

    def extract_many(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Run the package model (one report at a time, as the package does)."""
        if not texts:
            return []
        output = self._model(list(texts))
        # The package skips a report whose post-processing fails: it then has no entities.
        return [output.get(str(i), {"text": text, "entities": {}}) for i, text in enumerate(texts)]


_FACTORIES: dict[str, Callable[[], ExtractorBackend]] = {
    "rules": RulesBackend,
    "radgraph": RadGraphPackageBackend,
}
_INSTANCES: dict[str, ExtractorBackend] = {}
_LOCK = threading.Lock()
_DEFAULT = {"name": os.environ.get("RADREPORT_EXTRACTOR", "rules")}


@dataclass
class _Extraction:
    """What is cached per (extractor, text): the graph and its reward sets per case handling."""

    graph: dict[str, Any]
    sets: dict[bool, GraphSets] = field(default_factory=dict)


_EXTRACTIONS: TextCache[tuple[str, str], _Extraction] = TextCache("radgraph graphs")


def register_backend(name: str, factory: Callable[[], ExtractorBackend]) -> None:
    """Make an extractor available by name (replacing one of the same name)."""
    with _LOCK:
        _FACTORIES[name] = factory
        _INSTANCES.pop(name, None)
        _EXTRACTIONS.clear()


def available_backends() -> list[str]:
    """Names of the registered extractor backends."""
    return sorted(_FACTORIES)


def set_default_backend(name: str) -> None:
    """Choose the extractor used when none is named (default "rules", or $RADREPORT_EXTRACTOR)."""
    if name not in _FACTORIES:
        raise ExtractorUnavailableError(
            f"unknown extractor {name!r}; choose one of {available_backends()}"
        )
    _DEFAULT["name"] = name


def default_backend_name() -> str:
    """The extractor used when none is named."""
    return _DEFAULT["name"]


def get_backend(name: str | None = None) -> ExtractorBackend:
    """The (shared) instance of the named extractor backend."""
    name = name or _DEFAULT["name"]
    with _LOCK:
        if name not in _INSTANCES:
            try:
                factory = _FACTORIES[name]
            except KeyError:
                raise ExtractorUnavailableError(
                    f"unknown extractor {name!r}; choose one of {available_backends()}"
                ) from None
            _INSTANCES[name] = factory()
        return _INSTANCES[name]


def _extractions(texts: Sequence[str], backend: str | None) -> list[_Extraction]:
    name = backend or _DEFAULT["name"]
    extractor = get_backend(name)

    def run(missing: list[tuple[str, str]]) -> list[_Extraction]:
        return [_Extraction(g) for g in extractor.extract_many([text for _, text in missing])]

    return _EXTRACTIONS.get_many([(name, text) for text in texts], run)


def extract_many(texts: Iterable[str], backend: str | None = None) -> list[dict[str, Any]]:
    """Graphs of many texts; each distinct text is extracted once and cached per backend.

    The returned graphs are shared with the cache: treat them as read-only.
    """
    return [extraction.graph for extraction in _extractions(list(texts), backend)]


def extract(text: str, backend: str | None = None) -> dict[str, Any]:
    """The graph of one report text in the radgraph JSON form (default backend: the rules)."""
    return extract_many([text], backend)[0]


def f1_from_texts(
    hypotheses: Sequence[str],
    references: Sequence[str],
    lowercase: bool = True,
    backend: str | None = None,
) -> dict[str, tuple[float, list[float]]]:
    """Every RadGraph variant from texts: {simple, partial, complete, entity, relation, combined}.

    As `F1RadGraph.forward`, a pair whose hypothesis or reference is the empty string is not
    extracted and scores 0 at every level, and stays in the mean.
    """
    _check_pairs(hypotheses, references)
    non_empty = [i for i, (h, r) in enumerate(zip(hypotheses, references, strict=True)) if h and r]
    sets = sets_of_texts(
        [hypotheses[i] for i in non_empty] + [references[i] for i in non_empty], lowercase, backend
    )
    names = (*REWARD_LEVELS, "entity", "relation", "combined")
    per_report = {name: [0.0] * len(hypotheses) for name in names}
    count = len(non_empty)
    for k, index in enumerate(non_empty):
        rewards = pair_rewards(sets[k], sets[count + k])
        for name in names:
            per_report[name][index] = rewards[name]
    return {
        name: (float(np.mean(values)) if values else 0.0, values)
        for name, values in per_report.items()
    }


def sets_of_texts(
    texts: Sequence[str], lowercase: bool = True, backend: str | None = None
) -> list[GraphSets]:
    """Reward tuple sets of many texts, extracted and built once per distinct text (cached)."""
    out = []
    for extraction in _extractions(texts, backend):
        sets = extraction.sets.get(lowercase)
        if sets is None:
            sets = extraction.sets[lowercase] = graph_sets(extraction.graph, lowercase)
        out.append(sets)
    return out
