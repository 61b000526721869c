"""Rule-based RadGraph-style extractor: report text -> entities and relations, offline and fast.

Evaluation: ``evaluation/data/heldout*.jsonl`` hold hand-annotated held-out sentences (notation in
:mod:`evaluation.extractor.annotations`), kept apart from the development sentences
(``evaluation/data/dev_sentences.txt``) the rules were written on;
``tests/evaluation/test_extractor.py`` prints entity and relation F1 on them.

``extract_graph(text)`` returns a graph in the ``radgraph`` package's JSON form::

    {"text": text,
     "entities": {"1": {"tokens": "pleural", "label": "ANAT-DP", "start_ix": 1, "end_ix": 1,
                        "relations": []},
                  "2": {"tokens": "effusion", "label": "OBS-DA", "start_ix": 2, "end_ix": 2,
                        "relations": [["located_at", "1"]]}}}

for ``"No pleural effusion."``. It needs no model and labels thousands of reports per second.

Tokens (``tokenize``): the regular expression ``\\w+|[^\\w\\s]`` -- runs of letters, digits and
underscores, and every other non-space character as a token of its own ("right-sided" ->
``right``, ``-``, ``sided``; "4.5" -> ``4``, ``.``, ``5``). This is NLTK's ``wordpunct_tokenize``
(used by RadGraph-XL) except that a run of punctuation ("),") gives one token per mark, as
RadGraph v1's splitting does. ``start_ix`` / ``end_ix`` are inclusive indices over these tokens;
``tokens`` is the entity's tokens joined by one space, case preserved.

Annotation conventions (after the RadGraph scheme of Jain et al. 2021; the annotated sets in
``evaluation/data/`` follow exactly these):

* Entities are single words, except hyphen compounds kept whole ("right - sided",
  "mild - to - moderate", "ill - defined"). Anatomy is always ``ANAT-DP``; observations
  are ``OBS-DP``, ``OBS-U`` or ``OBS-DA``.
* Anatomy: organs and regions (lung, lobe, pleural, heart, cardiac, hilar, mediastinal, ...),
  position and laterality words (left, right, bilateral, upper, lower, ...) and descriptor
  nouns (silhouette, contours, size, volumes, bases, apex, angle, ...) are each an ``ANAT-DP``
  entity. In a run of adjacent anatomy words the *head* is the last organ word ("lobe" in
  "left lower lobe", "lung" in "lung bases", "heart" in "heart size", "cardiac" in "cardiac
  silhouette", "vascular" in "pulmonary vascular"); every other word of the run ``modify`` the
  head.
* Observations: findings and devices (effusion, opacity, atelectasis, edema, pneumothorax,
  fracture, process, tube, catheter, pacemaker, ...), predicate states (normal, clear,
  unremarkable, enlarged, intact, tortuous, ...), modifiers (small, mild, acute, new, stable,
  increased, focal, patchy, calcified, endotracheal, ...) and degree words (mildly, markedly,
  well, ...). "within normal limits" -> only "normal" is an entity.
* ``modify``: a modifier -> the next finding in its noun phrase ("small left pleural effusion":
  small -> effusion), else the finding before it in the clause ("effusion is unchanged");
  a degree word -> the next observation word ("mildly enlarged": mildly -> enlarged); a
  modifier after the verb with no finding before it -> the predicate state before it ("heart
  size is mildly enlarged, unchanged": unchanged -> enlarged); a change noun (improvement,
  increase, decrease, progression) -> the finding it is about, across "in" / "of" ("interval
  increase in size of the effusion"). A modifier before an anatomy descriptor describes that
  anatomy ("low lung volumes": low located_at lung). A modifier or state with nothing to modify
  is a predicate and takes a location instead. A degree word with nothing to grade ("not well
  evaluated") is no entity. Device type words (endotracheal, nasogastric, picc, central venous)
  modify the device.
* ``located_at``: a finding -> the head of the anatomy phrase directly before it ("pleural
  effusion", "left lower lobe pneumonia") or, failing that, after a preposition ("opacity in
  the left lower lobe", coordinated heads too); a state -> the anatomy it precedes ("normal
  heart size", "clear lungs") or the subject anatomy of its clause, all coordinated subjects
  ("the heart and mediastinum are normal": normal -> heart, normal -> mediastinum); in a
  clause without a verb, the anatomy before it ("heart size within normal limits"). A device
  -> the anatomy where it lies or ends ("tube terminates 4 cm above the carina", "tube coils in
  the stomach"), unless an anatomy phrase precedes it ("right internal jugular catheter").
* ``suggestive_of``: "X may represent / likely reflects / suggestive of / concerning for /
  consistent with / compatible with / , likely Y" -> X suggestive_of Y (and every Y
  coordinated by "or" / "and"). Y is ``OBS-U`` except after "consistent with", "compatible
  with", "representing", "represents" and "reflecting".
* Negation (``OBS-DA``): NegEx-style cues before a scope ("no", "not", "without", "free of",
  "negative for", "absence of", "resolution of", "resolved", "rather than", "no longer") or
  after it ("is not seen", "has resolved", "is absent", "removed"). A forward scope runs to the
  end of the clause and covers lists ("No pleural effusion or pneumothorax" negates both); it
  stops at a clause break ("but", "however", "although", "which", ".", ";"), at a verb ("is",
  "are", "has", ...), at "there", and at a comma that starts a new assertion (", mild ...",
  ", possible ...", ", the ..."). "no ... change" negates only "change" ("No change in the
  small effusion": the effusion stays present). A backward scope runs back to the previous
  comma. Modifiers take the certainty of what they modify.
* Uncertainty (``OBS-U``): "possible", "probable", "likely", "questionable", "suspected",
  "suspicious", "concerning", "may", "could", "suggestive", "borderline", "versus", before;
  "cannot be excluded", "not excluded", "is suspected", "is possible", after; "cannot exclude"
  and "cannot be excluded" win over negation; "X or Y" makes both alternatives uncertain
  unless negated.
* Anatomy is never negated or uncertain.
* Bounds: a clause longer than 120 tokens is cut into 120-token pieces and a modifier reaches its
  anatomy across at most 12 tokens, so extraction stays linear in the text length.
* "chest" / "lateral" naming the examination ("PA and lateral chest radiographs") and
  "findings" about the report ("findings were discussed") are no entities.
"""

from __future__ import annotations

from typing import Any

from evaluation.extractor.rules import (
    ANAT,
    OBS_DA,
    OBS_DP,
    OBS_U,
    extract_sentence,
    sentence_spans,
    tokenize,
)

__all__ = ["ANAT", "OBS_DA", "OBS_DP", "OBS_U", "LABELS", "RELATIONS", "extract_graph", "tokenize"]

LABELS: tuple[str, ...] = (ANAT, OBS_DP, OBS_U, OBS_DA)
RELATIONS: tuple[str, ...] = ("modify", "located_at", "suggestive_of")


def extract_graph(text: str) -> dict[str, Any]:
    """Entities and relations of one report, in the ``radgraph`` package's JSON form.

    Sentences are extracted one by one, each distinct sentence once per process; whole reports
    are cached by :func:`evaluation.radgraph.extract_many`.

    >>> g = extract_graph("No pleural effusion.")
    >>> [(e["tokens"], e["label"], e["relations"]) for e in g["entities"].values()]
    [('pleural', 'ANAT-DP', []), ('effusion', 'OBS-DA', [['located_at', '1']])]
    """
    tokens = tokenize(text)
    lower = [t.lower() for t in tokens]
    entities: dict[str, dict[str, Any]] = {}
    for lo, hi in sentence_spans(lower):
        base = len(entities)
        for k, (start, end, _word, _kind, label, relations) in enumerate(
            extract_sentence(tuple(lower[lo:hi]))
        ):
            rels: list[list[str]] = []
            for rel, target in relations:
                pair = [rel, str(base + target + 1)]
                if target != k and pair not in rels:
                    rels.append(pair)
            entities[str(len(entities) + 1)] = {
                "tokens": " ".join(tokens[start + lo : end + lo + 1]),
                "label": label,
                "start_ix": start + lo,
                "end_ix": end + lo,
                "relations": rels,
            }
    return {"text": text, "entities": entities}
