"""The Python PTB tokenizer follows the Stanford PTBTokenizer that pycocoevalcap runs."""

from __future__ import annotations

import json
import shutil

import pytest

from evaluation.tokenize import PTB_PUNCTUATION, TokenizerError, ptb_tokenize, tokenize


def test_lowercases_and_drops_pycocoevalcap_punctuation():
    assert ptb_tokenize("Heart size is normal; no effusion, or edema!") == (
        "heart size is normal no effusion or edema"
    )


def test_keeps_hyphenated_slashed_and_decimal_words_whole():
    assert ptb_tokenize("Left-sided 1.5 cm AP/PA opacity, 10,000 units.") == (
        "left-sided 1.5 cm ap/pa opacity 10,000 units"
    )


def test_splits_a_number_from_a_glued_unit():
    assert ptb_tokenize("a 2.5cm nodule") == "a 2.5 cm nodule"


def test_splits_clitics_as_the_penn_treebank_does():
    tokens = ptb_tokenize("The patient's heart isn't enlarged.")
    assert tokens == "the patient 's heart is n't enlarged"


def test_keeps_the_period_of_abbreviations_and_single_letters():
    assert ptb_tokenize("Dr. Smith at 3 p.m. reviewed hepatitis C. The end.") == (
        "dr. smith at 3 p.m. reviewed hepatitis c. the end"
    )


def test_brackets_stay_as_lowercase_ptb_codes_as_in_pycocoevalcap():
    """pycocoevalcap removes '-LRB-' but the lexer writes '-lrb-' under -lowerCase: it stays."""
    assert ptb_tokenize("effusion (small)") == "effusion -lrb- small -rrb-"


def test_whitespace_tokenizer_only_normalises_spaces():
    assert tokenize(["  No  effusion. "], "whitespace") == ["No effusion."]


def test_unknown_tokenizer_is_refused_with_the_choices():
    with pytest.raises(TokenizerError, match="choose one of"):
        tokenize(["x"], "nltk")


def _java_lines(texts: list[str]) -> list[str]:
    if shutil.which("java") is None:
        pytest.skip("java is not installed: cannot compare with the Stanford tokenizer")
    pytest.importorskip("pycocoevalcap")
    return tokenize(texts, "ptb-java")


def test_agrees_with_the_java_tokenizer_on_report_sentences():
    texts = [
        "No focal consolidation, pleural effusion, or pneumothorax.",
        "Heart size is normal. Mediastinal contours are within normal limits.",
        "Right IJ catheter tip in the mid SVC (unchanged).",
        "1. Mild pulmonary edema. 2. Small bilateral effusions.",
        "Compared with the prior study, the left-sided effusion has decreased.",
        'Findings are "stable"; no new opacity.',
        "The ET tube terminates 4.5 cm above the carina... NG tube in stomach.",
        "There's a 1.2 cm nodule in the R upper lobe -- likely a granuloma.",
    ]
    java = _java_lines(texts)
    assert [ptb_tokenize(t) for t in texts] == java
    assert not any(token in PTB_PUNCTUATION for line in java for token in line.split())


def test_agrees_with_the_java_tokenizer_on_iu_xray_reports(iu_xray_reports):
    texts = []
    with iu_xray_reports.open() as handle:
        for line in handle:
            record = json.loads(line)
            texts.extend(t for t in (record["findings"], record["impression"]) if t)
    java = _java_lines(texts)
    same = sum(ptb_tokenize(t) == j for t, j in zip(texts, java, strict=True))
    agreement = same / len(texts)
    print(f"\nPTB tokenizer: {same}/{len(texts)} iu-xray texts identical to Java ({agreement:.4%})")
    assert agreement >= 0.999


def test_agrees_with_the_java_tokenizer_on_synthetic_reports():
    import numpy as np

    from radiology.synth.findings import sample_spec
    from radiology.synth.report import write_report

    rng = np.random.default_rng(0)
    texts = [write_report(sample_spec(rng), rng)[0] for _ in range(150)]
    java = _java_lines(texts)
    mismatches = [t for t, j in zip(texts, java, strict=True) if ptb_tokenize(t) != j]
    identical = len(texts) - len(mismatches)
    print(f"\nPTB tokenizer: {identical}/{len(texts)} synthetic reports identical to Java")
    assert not mismatches
