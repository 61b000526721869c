"""Agreement of the rule-based extractor with graphs made by another extractor on the same texts.

    python -m evaluation.extractor_agreement GRAPHS.json

``GRAPHS.json`` holds graphs in the ``radgraph`` package's JSON form, for example the output of
``radgraph.RadGraph`` (RadGraph-XL) saved by the user: a list of graphs, a list of
``{"0": graph}`` items (as in the radgraph repository's test files), a dict of graphs keyed by
id, or JSON lines. Each graph's ``text`` is re-extracted by
:func:`evaluation.extractor.extract_graph`; RadGraph-XL labels are mapped to the RadGraph v1
names (``Anatomy::*`` -> ANAT-DP, ``Observation::definitely present`` -> OBS-DP, ...). Printed:
entity F1 (exact token span and label, pooled), relation F1 (source span, type, target span,
pooled), and RadGraph F1 at the three reward levels with the other graphs as references.

The texts should be tokenized the way the other extractor saw them (RadGraph-XL's ``text`` field
is already space-separated tokens), otherwise token indices cannot agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from evaluation.extractor import extract_graph
from evaluation.radgraph import f1_from_graphs

XL_TO_V1 = {
    "Anatomy::definitely present": "ANAT-DP",
    "Anatomy::uncertain": "ANAT-DP",
    "Anatomy::definitely absent": "ANAT-DP",
    "Anatomy::measurement::definitely present": "ANAT-DP",
    "Observation::definitely present": "OBS-DP",
    "Observation::measurement::definitely present": "OBS-DP",
    "Observation::uncertain": "OBS-U",
    "Observation::definitely absent": "OBS-DA",
}


def load_graphs(path: Path) -> list[dict[str, Any]]:
    """Graphs from any of the layouts listed in the module docstring, labels in v1 names."""
    raw = path.read_text(encoding="utf-8")
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in raw.splitlines() if line.strip()]
    if isinstance(data, dict):
        data = list(data.values())
    graphs = []
    for item in data:
        graph = item if "entities" in item else next(iter(item.values()))
        entities = {
            k: {**e, "label": XL_TO_V1.get(e["label"], e["label"])}
            for k, e in graph["entities"].items()
        }
        graphs.append({"text": graph["text"], "entities": entities})
    return graphs


def _spans(graph: dict[str, Any]) -> tuple[set, set]:
    ents = graph["entities"]
    entities = {(e["start_ix"], e["end_ix"], e["label"]) for e in ents.values()}
    relations = {
        ((e["start_ix"], e["end_ix"]), rel, (ents[t]["start_ix"], ents[t]["end_ix"]))
        for e in ents.values()
        for rel, t in e["relations"]
        if t in ents
    }
    return entities, relations


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def compare(references: list[dict[str, Any]]) -> dict[str, float]:
    """Entity and relation P/R/F1 and RadGraph F1 of our graphs against ``references``."""
    ours = [extract_graph(g["text"]) for g in references]
    counts = [0, 0, 0, 0, 0, 0]
    for hyp, ref in zip(ours, references, strict=True):
        he, hr = _spans(hyp)
        re_, rr = _spans(ref)
        for i, (h, r) in enumerate(((he, re_), (hr, rr))):
            counts[3 * i] += len(h & r)
            counts[3 * i + 1] += len(h)
            counts[3 * i + 2] += len(r)
    out: dict[str, float] = {"reports": float(len(references))}
    for name, (tp, n_pred, n_gold) in (("entity", counts[:3]), ("relation", counts[3:])):
        p, r, f = _prf(tp, n_pred, n_gold)
        out[f"{name}_precision"], out[f"{name}_recall"], out[f"{name}_f1"] = p, r, f
    for level in ("simple", "partial", "complete"):
        out[f"radgraph_{level}"] = f1_from_graphs(ours, references, reward_level=level)[0]
    return out


def main(argv: list[str]) -> None:
    """Print the agreement with the graphs in ``argv[0]``."""
    result = compare(load_graphs(Path(argv[0])))
    for key, value in result.items():
        print(f"{key:20s} {value:.3f}" if key != "reports" else f"{key:20s} {int(value)}")


if __name__ == "__main__":
    main(sys.argv[1:])
