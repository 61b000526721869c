"""NLG metrics (BLEU-1..4, ROUGE-L, CIDEr-D) equal to pycocoevalcap 1.2's scorers, vectorised.

Definitions are those of pycocoevalcap 1.2 (`bleu/bleu_scorer.py`, `rouge/rouge.py`,
`cider/cider_scorer.py`), re-implemented over integer n-gram ids with numpy:

- BLEU-n: clipped n-gram matches (clip = max count over a segment's references) and candidate
  n-gram counts summed over the corpus; brevity penalty from the summed "closest" reference length
  (ties to the shorter); smoothing `(matches + 1e-15) / (guesses + 1e-9)`; cumulative geometric
  mean. Per-report BLEU uses the same formula on one segment.
- ROUGE-L: longest common subsequence on space-split tokens, P and R maximised over references
  separately, F = (1 + β²)PR / (R + β²P) with β = 1.2; the corpus value is the mean over reports.
  (pycocoevalcap splits on `" "`, so an empty text is one empty token; kept.)
- CIDEr-D: n = 1..4, TF-IDF with document frequency counted over the references of the scored set
  (so the value depends on the set), clipped similarity `Σ min(h, r)·r / (|h||r|)`, Gaussian length
  penalty with σ = 6 on the bigram-count difference, mean over n and references, × 10.

METEOR is not provided: pycocoevalcap runs the METEOR 1.5 Java jar (stemming, synonyms,
paraphrase tables and its own aggregation), which cannot be reproduced exactly here.

All functions take texts that are already tokenized (space-joined tokens); :func:`nlg_scores`
tokenizes first with a tokenizer from :mod:`evaluation.tokenize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.tokenize import tokenize

__all__ = [
    "BleuStatistics",
    "NGramTable",
    "bleu",
    "bleu_from_sums",
    "bleu_statistics",
    "cider_d",
    "nlg_scores",
    "rouge_l",
    "lcs_length",
]

BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9
ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
MAX_N = 4

References = Sequence[str] | Sequence[Sequence[str]]


def _as_reference_lists(references: References, count: int) -> list[list[str]]:
    if len(references) != count:
        raise ValueError(
            f"got {count} hypotheses but {len(references)} references; they must pair one to one"
        )
    lists = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not refs for refs in lists):
        raise ValueError("every hypothesis needs at least one reference text")
    return lists


@dataclass(frozen=True)
class NGramTable:
    """Distinct n-gram counts of many texts, as parallel integer arrays.

    `text[k]` holds an n-gram `gram[k]` (a dense id unique across orders) of order `order[k]`
    (1..4) `count[k]` times; rows are sorted by (text, gram). `length[t]` is text t's token count.
    """

    text: np.ndarray
    gram: np.ndarray
    order: np.ndarray
    count: np.ndarray
    length: np.ndarray
    num_grams: int

    @classmethod
    def build(cls, texts: Sequence[str], max_n: int = MAX_N) -> NGramTable:
        """Count the 1..max_n-grams of every whitespace-split text."""
        vocabulary: dict[str, int] = {}
        token_lists = [t.split() for t in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        flat = [vocabulary.setdefault(tok, len(vocabulary)) for toks in token_lists for tok in toks]
        ids = np.asarray(flat, dtype=np.int64)
        owner = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        ends = np.repeat(np.cumsum(lengths), lengths)  # exclusive end of each token's text
        positions = np.arange(ids.size, dtype=np.int64)
        vocab_size = max(len(vocabulary), 1)

        texts_out, grams_out, orders_out = [], [], []
        gram_ids = ids  # dense ids of the (n)-grams starting at `starts`
        starts = positions
        next_gram = 0
        for n in range(1, max_n + 1):
            if n > 1:
                keep = starts + n <= ends[starts] if starts.size else starts.astype(bool)
                starts = starts[keep]
                pair = gram_ids[keep] * vocab_size + ids[starts + n - 1]
                _, gram_ids = np.unique(pair, return_inverse=True)
                gram_ids = gram_ids.reshape(-1).astype(np.int64)
            texts_out.append(owner[starts])
            grams_out.append(gram_ids + next_gram)
            orders_out.append(np.full(starts.size, n, dtype=np.int64))
            next_gram += int(gram_ids.max()) + 1 if gram_ids.size else 0
        all_text = np.concatenate(texts_out)
        all_gram = np.concatenate(grams_out)
        all_order = np.concatenate(orders_out)
        span = max(next_gram, 1)
        keys, first, counts = np.unique(
            all_text * span + all_gram, return_index=True, return_counts=True
        )
        return cls(
            text=keys // span,
            gram=keys % span,
            order=all_order[first],
            count=counts.astype(np.int64),
            length=lengths,
            num_grams=span,
        )


@dataclass(frozen=True)
class _Pairs:
    """Hypotheses and their references counted together."""

    table: NGramTable
    num_hyps: int
    ref_owner: np.ndarray  # hypothesis index of every reference text

    @classmethod
    def build(cls, hypotheses: Sequence[str], references: References) -> _Pairs:
        ref_lists = _as_reference_lists(references, len(hypotheses))
        flat_refs = [r for refs in ref_lists for r in refs]
        owner = np.repeat(np.arange(len(ref_lists)), [len(r) for r in ref_lists])
        return cls(NGramTable.build(list(hypotheses) + flat_refs), len(hypotheses), owner)

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """Row masks of the table: hypothesis rows, reference rows."""
        is_hyp = self.table.text < self.num_hyps
        return is_hyp, ~is_hyp


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[k] where sorted_keys[k] == query, else 0."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=values.dtype)
    where = np.searchsorted(sorted_keys, queries)
    where = np.minimum(where, sorted_keys.size - 1)
    found = sorted_keys[where] == queries
    return np.where(found, values[where], 0)


@dataclass(frozen=True)
class BleuStatistics:
    """Per-report sufficient statistics of BLEU: summed over reports they give corpus BLEU.

    `correct[i, k]`: clipped (k+1)-gram matches of report i; `guess[i, k]`: its (k+1)-gram count;
    `test_length[i]`, `reference_length[i]`: its token count and "closest" reference length.
    """

    correct: np.ndarray
    guess: np.ndarray
    test_length: np.ndarray
    reference_length: np.ndarray

    def as_matrix(self) -> np.ndarray:
        """[reports, 2*max_n + 2] columns: correct, guess, test length, reference length."""
        return np.column_stack([self.correct, self.guess, self.test_length, self.reference_length])


def bleu_from_sums(sums: np.ndarray, max_n: int = MAX_N) -> np.ndarray:
    """BLEU-1..max_n from summed statistics rows ([..., 2*max_n + 2], see `BleuStatistics`)."""
    sums = np.asarray(sums, dtype=np.float64)
    correct, guess = sums[..., :max_n], sums[..., max_n : 2 * max_n]
    test_len, ref_len = sums[..., 2 * max_n], sums[..., 2 * max_n + 1]
    exponents = 1.0 / np.arange(1, max_n + 1)
    scores = np.cumprod((correct + BLEU_TINY) / (guess + BLEU_SMALL), axis=-1) ** exponents
    ratio = (test_len + BLEU_TINY) / (ref_len + BLEU_SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return scores * brevity[..., None]


def bleu_statistics(
    hypotheses: Sequence[str], references: References, max_n: int = MAX_N
) -> BleuStatistics:
    """Clipped matches, guesses and lengths of every report, as pycocoevalcap's `cook_test`."""
    pairs = _Pairs.build(hypotheses, references)
    table, num = pairs.table, pairs.num_hyps
    is_hyp, is_ref = pairs.split()
    span = table.num_grams
    # Clip counts: the max count of each n-gram over the references of the same hypothesis.
    ref_keys = pairs.ref_owner[table.text[is_ref] - num] * span + table.gram[is_ref]
    order = np.argsort(ref_keys, kind="stable")
    ref_keys, ref_counts = ref_keys[order], table.count[is_ref][order]
    unique_keys, starts = np.unique(ref_keys, return_index=True)
    max_counts = np.maximum.reduceat(ref_counts, starts) if ref_counts.size else ref_counts
    hyp_text = table.text[is_hyp]
    clipped = np.minimum(
        table.count[is_hyp], _lookup(unique_keys, max_counts, hyp_text * span + table.gram[is_hyp])
    )
    correct = np.bincount(
        hyp_text * max_n + table.order[is_hyp] - 1, weights=clipped, minlength=num * max_n
    ).reshape(num, max_n)
    test_len = table.length[:num].astype(np.float64)
    guess = np.maximum(test_len[:, None] - np.arange(max_n)[None, :], 0.0)
    # "closest" reference length, ties to the shorter one.
    ref_len = table.length[num:].astype(np.float64)
    closest = np.lexsort((ref_len, np.abs(ref_len - test_len[pairs.ref_owner]), pairs.ref_owner))
    first_of_owner = np.unique(pairs.ref_owner[closest], return_index=True)[1]
    return BleuStatistics(correct, guess, test_len, ref_len[closest[first_of_owner]])


def bleu(
    hypotheses: Sequence[str], references: References, max_n: int = MAX_N
) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..max_n and per-report BLEU (shape [reports, max_n]) as pycocoevalcap.

    >>> corpus, per_report = bleu(["the heart is normal"], ["the heart is normal"])
    >>> [round(b, 6) for b in corpus]
    [1.0, 1.0, 1.0, 1.0]
    """
    statistics = bleu_statistics(hypotheses, references, max_n).as_matrix()
    per_report = bleu_from_sums(statistics, max_n)
    corpus = bleu_from_sums(statistics.sum(axis=0), max_n)
    return [float(b) for b in corpus], per_report


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, exact).

    >>> lcs_length("a b c d".split(), "a c d e".split())
    3
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        match = masks.get(token)
        if match:
            u = row & match
            row = ((row + u) | (row - u)) & full
    return len(b) - row.bit_count()


def rouge_l(
    hypotheses: Sequence[str], references: References, beta: float = ROUGE_BETA
) -> tuple[float, np.ndarray]:
    """Corpus ROUGE-L (mean over reports) and per-report ROUGE-L as pycocoevalcap.

    >>> round(rouge_l(["no acute process"], ["no acute cardiopulmonary process"])[0], 6)
    0.835616
    """
    ref_lists = _as_reference_lists(references, len(hypotheses))
    scores = np.zeros(len(hypotheses), dtype=np.float64)
    for index, (hypothesis, refs) in enumerate(zip(hypotheses, ref_lists, strict=True)):
        candidate = hypothesis.split(" ")
        precision = recall = 0.0
        for reference in refs:
            tokens = reference.split(" ")
            common = lcs_length(tokens, candidate)
            precision = max(precision, common / float(len(candidate)))
            recall = max(recall, common / float(len(tokens)))
        if precision != 0 and recall != 0:
            scores[index] = ((1 + beta**2) * precision * recall) / float(
                recall + beta**2 * precision
            )
    return float(np.mean(scores)) if scores.size else 0.0, scores


def cider_d(
    hypotheses: Sequence[str], references: References, sigma: float = CIDER_SIGMA
) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D (mean over reports) and per-report CIDEr-D as pycocoevalcap's `Cider`.

    The IDF comes from the references of this set of reports, so a report's score depends on the
    others scored with it (as in pycocoevalcap).
    """
    pairs = _Pairs.build(hypotheses, references)
    table, num = pairs.table, pairs.num_hyps
    if num == 0:
        return 0.0, np.zeros(0)
    is_hyp, is_ref = pairs.split()
    span = table.num_grams
    # Document frequency: in how many reports' reference sets each n-gram appears.
    owner_gram = np.unique(pairs.ref_owner[table.text[is_ref] - num] * span + table.gram[is_ref])
    doc_freq = np.bincount(owner_gram % span, minlength=span).astype(np.float64)
    log_n = np.log(float(num))
    idf = log_n - np.log(np.maximum(1.0, doc_freq))
    weight = table.count * idf[table.gram]
    # Norms per (text, order).
    norm_index = table.text * MAX_N + table.order - 1
    norms = np.sqrt(np.bincount(norm_index, weights=weight**2, minlength=len(table.length) * MAX_N))
    norms = norms.reshape(-1, MAX_N)
    # Clipped dot product per (reference, order): sum over shared n-grams of min(h, r) * r.
    hyp_keys = table.text[is_hyp] * span + table.gram[is_hyp]
    ref_text = table.text[is_ref]
    ref_weight = weight[is_ref]
    ref_keys = pairs.ref_owner[ref_text - num] * span + table.gram[is_ref]
    hyp_weight = _lookup(hyp_keys, weight[is_hyp], ref_keys)
    num_refs = len(table.length) - num
    dots = np.bincount(
        (ref_text - num) * MAX_N + table.order[is_ref] - 1,
        weights=np.minimum(hyp_weight, ref_weight) * ref_weight,
        minlength=num_refs * MAX_N,
    ).reshape(-1, MAX_N)
    hyp_norm = norms[pairs.ref_owner]
    ref_norm = norms[num:]
    both = (hyp_norm != 0) & (ref_norm != 0)
    similarity = np.where(both, dots / np.where(both, hyp_norm * ref_norm, 1.0), dots)
    bigrams = np.maximum(table.length - 1, 0).astype(np.float64)
    delta = bigrams[pairs.ref_owner] - bigrams[num:]
    similarity = similarity * np.exp(-(delta**2) / (2 * sigma**2))[:, None]
    per_ref = similarity.mean(axis=1)
    refs_per_hyp = np.bincount(pairs.ref_owner, minlength=num).astype(np.float64)
    per_report = np.bincount(pairs.ref_owner, weights=per_ref, minlength=num) / refs_per_hyp * 10.0
    return float(np.mean(per_report)), per_report


NLG_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rougeL", "cider")


def nlg_scores(
    hypotheses: Sequence[str], references: References, tokenizer: str = "ptb"
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """All NLG metrics: (corpus values, per-report arrays), keyed as in :data:`NLG_METRICS`."""
    ref_lists = _as_reference_lists(references, len(hypotheses))
    flat = [r for refs in ref_lists for r in refs]
    tokens = tokenize(list(hypotheses) + flat, tokenizer)
    hyp_tokens = tokens[: len(hypotheses)]
    ref_tokens: list[list[str]] = []
    position = len(hypotheses)
    for refs in ref_lists:
        ref_tokens.append(tokens[position : position + len(refs)])
        position += len(refs)
    bleu_corpus, bleu_reports = bleu(hyp_tokens, ref_tokens)
    rouge_corpus, rouge_reports = rouge_l(hyp_tokens, ref_tokens)
    cider_corpus, cider_reports = cider_d(hyp_tokens, ref_tokens)
    corpus = {f"bleu{n}": bleu_corpus[n - 1] for n in range(1, MAX_N + 1)}
    corpus.update(rougeL=rouge_corpus, cider=cider_corpus)
    per_report = {f"bleu{n}": bleu_reports[:, n - 1] for n in range(1, MAX_N + 1)}
    per_report.update(rougeL=rouge_reports, cider=cider_reports)
    return corpus, per_report
