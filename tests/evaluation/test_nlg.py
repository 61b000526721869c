"""BLEU / ROUGE-L / CIDEr-D agree with pycocoevalcap 1.2's scorers to 1e-9, corpus and per
report."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from evaluation.nlg import bleu, cider_d, lcs_length, nlg_scores, rouge_l
from evaluation.tokenize import tokenize

Bleu = pytest.importorskip("pycocoevalcap.bleu.bleu").Bleu
Rouge = pytest.importorskip("pycocoevalcap.rouge.rouge").Rouge
Cider = pytest.importorskip("pycocoevalcap.cider.cider").Cider

TOLERANCE = 1e-9

_FINDINGS = [
    "the heart is {size}", "heart size is {size}",
    "there is {degree} {finding} in the {side} {zone}",
    "no {finding}", "no evidence of {finding} or {finding}", "{degree} {finding} is {change}",
    "the lungs are clear", "{side} {zone} {finding} , likely {finding}",
    "the {device} terminates in the {place}",
    "mediastinal contours are {size}", "there is no {finding} .",
    "{finding} has {change} since the prior study",
]
_WORDS = {
    "size": ["normal", "enlarged", "mildly enlarged", "top normal", "within normal limits"],
    "degree": ["mild", "moderate", "small", "large", "trace", "minimal"],
    "finding": ["pleural effusion", "pneumothorax", "atelectasis", "consolidation", "edema",
                "opacity", "cardiomegaly", "pneumonia", "nodule", "fracture", "scarring"],
    "side": ["left", "right", "bilateral"],
    "zone": ["lower lobe", "upper lobe", "lung base", "apex", "perihilar region"],
    "change": ["improved", "worsened", "unchanged", "resolved", "increased"],
    "device": ["endotracheal tube", "right ij catheter", "nasogastric tube", "pacemaker lead"],
    "place": ["mid svc", "stomach", "right atrium", "cavoatrial junction"],
}


def synthetic_reports(count: int, seed: int) -> list[str]:
    """Report-like texts of 0..6 sentences drawn from templates (some empty)."""
    rng = random.Random(seed)

    def sentence() -> str:
        template = rng.choice(_FINDINGS)
        while "{" in template:
            start = template.index("{")
            key = template[start + 1 : template.index("}")]
            word = rng.choice(_WORDS[key])
            template = template[:start] + word + template[template.index("}") + 1 :]
        return template

    return [" ".join(sentence() for _ in range(rng.randint(0, 6))) for _ in range(count)]


def pycoco(
    hypotheses: list[str], references: list[list[str]]
) -> dict[str, tuple[float, np.ndarray]]:
    gts = {i: refs for i, refs in enumerate(references)}
    res = {i: [h] for i, h in enumerate(hypotheses)}
    bleu_corpus, bleu_reports = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu{n + 1}": (bleu_corpus[n], np.asarray(bleu_reports[n])) for n in range(4)}
    out["rougeL"] = Rouge().compute_score(gts, res)
    out["cider"] = Cider().compute_score(gts, res)
    return out


def ours(hypotheses: list[str], references: list[list[str]]) -> dict[str, tuple[float, np.ndarray]]:
    bleu_corpus, bleu_reports = bleu(hypotheses, references)
    out = {f"bleu{n + 1}": (bleu_corpus[n], bleu_reports[:, n]) for n in range(4)}
    out["rougeL"] = rouge_l(hypotheses, references)
    out["cider"] = cider_d(hypotheses, references)
    return out


def assert_same(expected: dict, actual: dict) -> None:
    for name, (corpus, per_report) in expected.items():
        assert actual[name][0] == pytest.approx(corpus, abs=TOLERANCE), name
        np.testing.assert_allclose(actual[name][1], per_report, rtol=0, atol=TOLERANCE,
                                   err_msg=name)


def test_single_reference_synthetic_reports_match_pycocoevalcap():
    hypotheses = tokenize(synthetic_reports(300, seed=1), "whitespace")
    references = [[r] for r in tokenize(synthetic_reports(300, seed=2), "whitespace")]
    assert_same(pycoco(hypotheses, references), ours(hypotheses, references))


def test_several_references_per_report_match_pycocoevalcap():
    rng = random.Random(3)
    hypotheses = synthetic_reports(200, seed=4)
    pool = synthetic_reports(600, seed=5)
    references = [rng.sample(pool, rng.randint(1, 4)) for _ in hypotheses]
    assert_same(pycoco(hypotheses, references), ours(hypotheses, references))


def test_paraphrased_hypotheses_with_high_overlap_match_pycocoevalcap():
    """Hypotheses that copy most of their reference exercise the long n-gram and LCS paths."""
    rng = random.Random(6)
    references = [r for r in synthetic_reports(250, seed=7) if r]
    hypotheses = []
    for ref in references:
        tokens = ref.split()
        kept = [t for t in tokens if rng.random() > 0.15]
        hypotheses.append(" ".join(kept + rng.sample(tokens, min(2, len(tokens)))))
    references_lists = [[r] for r in references]
    assert_same(pycoco(hypotheses, references_lists), ours(hypotheses, references_lists))


def test_empty_hypotheses_and_references_score_as_pycocoevalcap():
    hypotheses = ["", "", "no pleural effusion", "the heart is normal"]
    references = [[""], ["the lungs are clear"], [""], ["the heart is normal"]]
    assert_same(pycoco(hypotheses, references), ours(hypotheses, references))


def test_iu_xray_reports_match_pycocoevalcap(iu_xray_reports):
    """Real reports (read, never stored): findings scored against the same study's impression."""
    pairs = []
    with iu_xray_reports.open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["findings"] and record["impression"]:
                pairs.append((record["findings"], record["impression"]))
            if len(pairs) == 400:
                break
    tokens = tokenize([p[0] for p in pairs] + [p[1] for p in pairs], "ptb")
    hypotheses, references = tokens[: len(pairs)], [[r] for r in tokens[len(pairs) :]]
    assert_same(pycoco(hypotheses, references), ours(hypotheses, references))


def test_lcs_length_is_the_longest_common_subsequence():
    assert lcs_length("no acute cardiopulmonary process".split(), "no acute process".split()) == 3
    assert lcs_length("a b c".split(), "c b a".split()) == 1
    assert lcs_length([], "a".split()) == 0


def test_nlg_scores_tokenizes_before_scoring():
    corpus, per_report = nlg_scores(["No effusion."], ["no effusion"], tokenizer="ptb")
    assert corpus["bleu1"] == pytest.approx(1.0)
    assert corpus["rougeL"] == pytest.approx(1.0)
    assert per_report["bleu2"][0] == pytest.approx(1.0)
    whitespace, _ = nlg_scores(["No effusion."], ["no effusion"], tokenizer="whitespace")
    assert whitespace["bleu1"] < 0.01


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="pair one to one"):
        bleu(["a"], ["a", "b"])


def test_score_with_ptb_tokens_equals_pycocoevalcap_tokenizer_then_scorers():
    """The literature's pipeline: pycocoevalcap's PTBTokenizer (Java) then Bleu / Rouge / Cider."""
    import shutil

    if shutil.which("java") is None:
        pytest.skip("java is not installed: pycocoevalcap's PTBTokenizer cannot run")
    PTBTokenizer = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer").PTBTokenizer
    from radiology.synth.findings import sample_spec
    from radiology.synth.report import write_report

    rng = np.random.default_rng(11)
    texts = [write_report(sample_spec(rng), rng)[0] for _ in range(200)]
    hypotheses, references = texts[:100], texts[100:]
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({i: [{"caption": h}] for i, h in enumerate(hypotheses)})
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})
    expected = pycoco([res[i][0] for i in range(100)], [gts[i] for i in range(100)])
    for name in ("ptb", "ptb-java"):
        corpus, per_report = nlg_scores(hypotheses, references, tokenizer=name)
        for metric, (value, reports) in expected.items():
            assert corpus[metric] == pytest.approx(value, abs=TOLERANCE), (name, metric)
            np.testing.assert_allclose(per_report[metric], reports, rtol=0, atol=TOLERANCE)
