"""Reports per second of each metric family on one core; NLG side by side with pycocoevalcap.

    .venv/bin/python bench/metrics.py [--reports 2000] [--repeat 3]

(with the project installed, as `make setup` does, or `PYTHONPATH=.` from the repository root).

Texts are synthetic MIMIC-CXR-style FINDINGS sections (radiology.synth), scored in pairs.
"Cold" runs clear every extraction and labelling cache first (`evaluation.clear_caches`) and use
distinct texts, so each report is extracted / labelled once; "warm" runs score the same pairs
again (what a training loop's periodic validation sees). The best of `--repeat` runs is printed.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"):
    os.environ.setdefault(_variable, "1" if _variable != "XLA_FLAGS" else "")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402


def synthetic_pairs(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` (hypothesis, reference) FINDINGS texts of distinct synthetic studies."""
    from radiology.reports import parse
    from radiology.synth.findings import sample_spec
    from radiology.synth.report import write_report

    rng = np.random.default_rng(seed)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < 2 * count:
        text, _ = write_report(sample_spec(rng), rng)
        findings = parse(text).findings or ""
        if findings and findings not in seen:
            seen.add(findings)
            texts.append(findings)
    return texts[0::2], texts[1::2]


def best_rate(
    work: Callable[[], object],
    reports: int,
    repeat: int,
    before: Callable[[], None] | None = None,
) -> float:
    """Reports per second of the fastest of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return reports / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from evaluation import clear_caches, report_statistics, score
    from evaluation.nlg import bleu, cider_d, rouge_l
    from evaluation.stats import bootstrap
    from evaluation.tokenize import tokenize

    hypotheses, references = synthetic_pairs(args.reports)
    n = len(hypotheses)
    hyp_tokens = tokenize(hypotheses, "ptb")
    ref_tokens = tokenize(references, "ptb")
    rows: list[tuple[str, float, float | None, str]] = []

    def ours_nlg() -> None:
        bleu(hyp_tokens, ref_tokens)
        rouge_l(hyp_tokens, ref_tokens)
        cider_d(hyp_tokens, ref_tokens)

    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        gts = {i: [r] for i, r in enumerate(ref_tokens)}
        res = {i: [h] for i, h in enumerate(hyp_tokens)}

        def reference_nlg() -> None:
            Bleu(4).compute_score(gts, res, verbose=0)
            Rouge().compute_score(gts, res)
            Cider().compute_score(gts, res)

        reference_rate: float | None = best_rate(reference_nlg, n, args.repeat)
    except ImportError:
        reference_rate = None
    rows.append(("NLG scorers: BLEU-1..4 + ROUGE-L + CIDEr-D", best_rate(ours_nlg, n, args.repeat),
                 reference_rate, "pycocoevalcap 1.2 Bleu+Rouge+Cider, same tokens"))
    for name, scorer, reference in (
        ("  BLEU-1..4", lambda: bleu(hyp_tokens, ref_tokens), "Bleu"),
        ("  ROUGE-L", lambda: rouge_l(hyp_tokens, ref_tokens), "Rouge"),
        ("  CIDEr-D", lambda: cider_d(hyp_tokens, ref_tokens), "Cider"),
    ):
        ref_rate = None
        if reference_rate is not None:
            klass = {"Bleu": lambda: Bleu(4).compute_score(gts, res, verbose=0),
                     "Rouge": lambda: Rouge().compute_score(gts, res),
                     "Cider": lambda: Cider().compute_score(gts, res)}[reference]
            ref_rate = best_rate(klass, n, args.repeat)
        rows.append((name, best_rate(scorer, n, args.repeat), ref_rate,
                     f"pycocoevalcap {reference}"))

    texts = hypotheses + references
    java_rate = None
    try:
        start = time.perf_counter()
        tokenize(texts, "ptb-java")
        java_rate = len(texts) / (time.perf_counter() - start) / 2
    except Exception:  # noqa: BLE001 - Java missing: no reference column
        java_rate = None
    rows.append(("PTB tokenization (pairs)",
                 best_rate(lambda: tokenize(texts, "ptb"), n, args.repeat),
                 java_rate, "Stanford PTBTokenizer via java (incl. start-up)"))

    from evaluation.chexpert import label as chexpert_label
    from evaluation.extractor import extract_graph

    rows.append(("  rules extractor alone (texts/s, cold)",
                 best_rate(lambda: [extract_graph(t) for t in texts], len(texts), args.repeat,
                           before=clear_caches), None, "a radgraph pair needs 2 texts"))
    rows.append(("  CheXpert labeler alone (texts/s, cold)",
                 best_rate(lambda: [chexpert_label(t) for t in texts], len(texts), args.repeat,
                           before=clear_caches), None, "a chexpert pair needs 2 texts"))
    for label, metrics in (("RadGraph F1, all levels (cold)", ["radgraph"]),
                           ("CheXpert F1 14/5 (cold)", ["chexpert"]),
                           ("RadGraph + CheXpert together (cold)", ["radgraph", "chexpert"])):
        rate = best_rate(lambda m=metrics: score(hypotheses, references, metrics=m), n,
                         args.repeat, before=clear_caches)
        rows.append((label, rate, None, "target >= 1000 reports/s"))
    score(hypotheses, references, metrics=["radgraph", "chexpert"])
    rows.append(("RadGraph + CheXpert together (warm cache)",
                 best_rate(lambda: score(hypotheses, references, metrics=["radgraph", "chexpert"]),
                           n, args.repeat), None, ""))
    rows.append(("score(): every metric (cold)",
                 best_rate(lambda: score(hypotheses, references), n, args.repeat,
                           before=clear_caches), None, ""))
    statistics = report_statistics(hypotheses, references)
    rows.append(("bootstrap, 500 resamples, every metric",
                 best_rate(lambda: bootstrap(statistics, resamples=500), n, args.repeat), None, ""))

    print(f"{n} synthetic report pairs, one core (pid {os.getpid()} pinned), best of {args.repeat}")
    print("rates are report pairs per second unless marked texts/s")
    print(f"{'metric family':46} {'ours rep/s':>12} {'reference':>12} {'ratio':>8}  reference")
    for name, ours, reference, note in rows:
        ref_text = f"{reference:12,.0f}" if reference else f"{'-':>12}"
        ratio = f"{ours / reference:7.1f}x" if reference else f"{'':>8}"
        print(f"{name:46} {ours:12,.0f} {ref_text} {ratio}  {note}")


if __name__ == "__main__":
    main()
