"""Hand annotations in a compact notation, turned into ``radgraph``-form graphs and CheXpert labels.

The held-out sets in ``evaluation/data/`` are written by hand in this notation (``*.ann.txt``)
and compiled to JSONL with ``python -m evaluation.extractor.annotations SRC DST``. One block per
sentence::

    S: Small left pleural effusion, no pneumothorax.
    G: Small:P>mod:effusion; left:A>mod:pleural; pleural:A; effusion:P>loc:pleural; pneumothorax:N
    C: EFF=1 PTX=0

``G`` lists entities ``word:LABEL`` (``A`` ANAT-DP, ``P`` OBS-DP, ``U`` OBS-U, ``N`` OBS-DA);
``word#2`` is the second occurrence of that word (case-insensitive), hyphen compounds are
written as in the text ("right-sided"). ``>mod:``, ``>loc:``, ``>sug:`` add modify /
located_at / suggestive_of relations to another listed entity. ``G: -`` means no entity.
``C`` gives CheXpert values (1, 0, -1) by code; unlisted observations are not mentioned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from evaluation.extractor.rules import tokenize

LABEL_CODES = {"A": "ANAT-DP", "P": "OBS-DP", "U": "OBS-U", "N": "OBS-DA"}
RELATION_CODES = {"mod": "modify", "loc": "located_at", "sug": "suggestive_of"}
CHEXPERT_CODES = {
    "ATL": "Atelectasis",
    "CMG": "Cardiomegaly",
    "CON": "Consolidation",
    "EDE": "Edema",
    "ECM": "Enlarged Cardiomediastinum",
    "FRA": "Fracture",
    "LES": "Lung Lesion",
    "OPA": "Lung Opacity",
    "NOF": "No Finding",
    "EFF": "Pleural Effusion",
    "PLO": "Pleural Other",
    "PNA": "Pneumonia",
    "PTX": "Pneumothorax",
    "DEV": "Support Devices",
}


class AnnotationError(ValueError):
    """A hand annotation that does not fit its sentence (says which sentence and word)."""


def _find_span(tokens: list[str], ref: str, text: str) -> tuple[int, int]:
    word, _, nth = ref.partition("#")
    occurrence = int(nth) if nth else 1
    want = [t.lower() for t in tokenize(word)]
    lower = [t.lower() for t in tokens]
    seen = 0
    for i in range(len(lower) - len(want) + 1):
        if lower[i : i + len(want)] == want:
            seen += 1
            if seen == occurrence:
                return i, i + len(want) - 1
    raise AnnotationError(f"'{ref}' not found in sentence: {text}")


def parse_graph(text: str, spec: str) -> dict[str, Any]:
    """A ``radgraph``-form graph from a sentence and its ``G:`` line."""
    tokens = tokenize(text)
    spec = spec.strip()
    if spec in ("", "-"):
        return {"text": text, "entities": {}}
    items = [s.strip() for s in spec.split(";") if s.strip()]
    parsed = []
    for item in items:
        head, *rels = item.split(">")
        ref, _, code = head.rpartition(":")
        if code not in LABEL_CODES:
            raise AnnotationError(f"bad label in '{item}' of: {text}")
        parsed.append((ref.strip(), LABEL_CODES[code], [r.strip() for r in rels]))
    spans = {ref: _find_span(tokens, ref, text) for ref, _, _ in parsed}
    order = sorted(parsed, key=lambda p: spans[p[0]])
    ids = {ref: str(n + 1) for n, (ref, _, _) in enumerate(order)}
    entities: dict[str, dict[str, Any]] = {}
    for ref, label, rels in order:
        start, end = spans[ref]
        relations = []
        for rel in rels:
            kind, _, target = rel.partition(":")
            if kind not in RELATION_CODES or target not in ids:
                raise AnnotationError(f"bad relation '{rel}' of '{ref}' in: {text}")
            relations.append([RELATION_CODES[kind], ids[target]])
        entities[ids[ref]] = {
            "tokens": " ".join(tokens[start : end + 1]),
            "label": label,
            "start_ix": start,
            "end_ix": end,
            "relations": relations,
        }
    return {"text": text, "entities": entities}


def parse_labels(spec: str) -> dict[str, float | None]:
    """CheXpert values from a ``C:`` line (all 14 keys; unlisted ones ``None``)."""
    labels: dict[str, float | None] = {name: None for name in CHEXPERT_CODES.values()}
    for item in spec.split():
        code, _, value = item.partition("=")
        if code not in CHEXPERT_CODES or value not in ("1", "0", "-1"):
            raise AnnotationError(f"bad CheXpert item '{item}'")
        labels[CHEXPERT_CODES[code]] = float(value)
    return labels


def parse_file(path: Path) -> list[dict[str, Any]]:
    """Records ``{"id", "text", "graph", "chexpert"}`` from an ``*.ann.txt`` file."""
    records: list[dict[str, Any]] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if not current:
            return
        text = current["S"]
        record: dict[str, Any] = {"id": f"{path.stem}-{len(records) + 1}", "text": text}
        if "G" in current:
            record["graph"] = parse_graph(text, current["G"])
        if "C" in current:
            record["chexpert"] = parse_labels(current["C"])
        records.append(record)
        current.clear()

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(":")
        if key == "S":
            flush()
        if key not in ("S", "G", "C"):
            raise AnnotationError(f"unknown line in {path.name}: {line}")
        current[key] = value.strip()
    flush()
    return records


def main(argv: list[str]) -> None:
    """Compile ``SRC.ann.txt`` into ``DST.jsonl``."""
    src, dst = Path(argv[0]), Path(argv[1])
    records = parse_file(src)
    with dst.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"{len(records)} annotated sentences -> {dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
