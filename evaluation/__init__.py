"""Report scoring: NLG, RadGraph-style and CheXpert-style metrics of (hypothesis, reference) texts.

>>> from evaluation import score
>>> result = score(["No pleural effusion."], ["No pleural effusion."], metrics=["nlg"])
>>> round(result["bleu1"], 6), result["conventions"]["tokenizer"]
(1.0, 'ptb')

Metric families (``metrics=`` takes family names or single keys), declared in
:mod:`evaluation.registry`, the one place every consumer of metric keys reads:

- ``"nlg"``: bleu1..bleu4, rougeL, cider (pycocoevalcap 1.2 definitions, :mod:`evaluation.nlg`).
- ``"radgraph"``: radgraph_simple (RG_E), radgraph_partial (RG_ER), radgraph_complete (RG_ER-bar)
  as the `radgraph` package; radgraph_entity_f1, radgraph_relation_f1, radgraph_combined
  (Yu et al.) (:mod:`evaluation.radgraph`).
- ``"chexpert"``: chexpert_{micro,macro}_f1_{14,5} under the chosen uncertain policy, plus the same
  keys suffixed ``_uncertain_negative`` and ``_uncertain_positive`` (:mod:`evaluation.clinical`).

An unknown metric key raises :class:`UnknownMetricError`. Every result carries a
``"conventions"`` entry naming tokenizer, case handling, extractor and uncertain policy, so a
number never travels without the choices behind it. :func:`report_statistics` gives the
bootstrap's sufficient statistics (:mod:`evaluation.stats`); :mod:`evaluation.run` writes a
whole evaluation (results.json, per_report.csv, report.html). Extraction and labelling results
are cached per process (:mod:`evaluation.caches`); :func:`clear_caches` forgets them.

Adding a metric is one :func:`register` call with a :class:`MetricFamily` (its keys, its
function, its bootstrap statistic, its descriptions); every consumer above, `radreport evaluate`
and the fine-tuning logs and plots then know it (example in :mod:`evaluation.registry`).
"""

from __future__ import annotations

from evaluation.caches import clear_caches
from evaluation.registry import (
    Metric,
    MetricFamily,
    MetricSpecError,
    UnknownMetricError,
    families,
    family_of,
    headline_keys,
    metric,
    register,
    summarize,
    summary_keys,
    unregister,
)
from evaluation.scoring import conventions, report_statistics, score, score_per_report

__all__ = [
    "Metric",
    "MetricFamily",
    "MetricSpecError",
    "UnknownMetricError",
    "clear_caches",
    "conventions",
    "families",
    "family_of",
    "headline_keys",
    "metric",
    "register",
    "report_statistics",
    "score",
    "score_per_report",
    "summarize",
    "summary_keys",
    "unregister",
]
