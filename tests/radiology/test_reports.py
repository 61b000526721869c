"""Report text splits into sections robustly; one normalization; MIMIC-style text round-trips."""

from __future__ import annotations

import json
import random
import re
import textwrap
from pathlib import Path

import pytest

from radiology.reports import SECTION_ALIASES, format_report, normalize, parse

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiothoracic process.
"""


def test_mimic_style_report_sections():
    r = parse(MIMIC_STYLE)
    assert r.indication == "___F with new onset ascites // eval for infection"
    assert r.technique == "Chest PA and lateral"
    assert r.comparison == "None."
    assert r.examination == "CHEST (PA AND LAT)"
    assert r.findings.startswith(
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral"
    )
    assert r.findings.endswith("The cardiomediastinal silhouette is normal.")
    assert r.impression == "No acute cardiothoracic process."
    assert r.preamble is None  # the FINAL REPORT banner is dropped


def test_wrapped_lines_are_joined_with_single_spaces():
    r = parse("FINDINGS:\n  Lungs are\n   clear.\n\n  Heart is   normal.")
    assert r.findings == "Lungs are clear. Heart is normal."


@pytest.mark.parametrize("label", ["findings", "Findings", "FINDINGS", "  Findings  "])
def test_header_case_and_indent_variants(label: str):
    assert parse(f"{label}: Clear lungs.").findings == "Clear lungs."


@pytest.mark.parametrize(
    "label", ["INDICATION", "HISTORY", "Clinical history", "REASON FOR EXAM",
              "Reason for examination", "CLINICAL INFORMATION"],
)
def test_indication_aliases(label: str):
    assert parse(f"{label}: Cough.\nFINDINGS: Clear.").indication == "Cough."


@pytest.mark.parametrize("label", ["FINDINGS AND IMPRESSION", "Findings and impression",
                                   "FINDINGS/IMPRESSION", "IMPRESSION AND FINDINGS"])
def test_findings_and_impression_fills_both(label: str):
    r = parse(f"INDICATION: Fever.\n{label}: No pneumonia.")
    assert r.findings == r.impression == "No pneumonia."
    assert r.combined


def test_capital_label_alone_on_a_line_is_a_header():
    r = parse("FINDINGS\n Lungs are clear.\nIMPRESSION\n Normal.")
    assert (r.findings, r.impression) == ("Lungs are clear.", "Normal.")
    assert parse("Findings\nLungs clear.").findings is None  # not capitals, no colon: plain text


def test_wet_read_and_provisional_impression_stay_out_of_the_final_sections():
    text = ("WET READ: ___ ___ 3:17 PM\n PROVISIONAL FINDINGS IMPRESSION (PFI): no pneumonia\n"
            + MIMIC_STYLE)
    r = parse(text)
    assert r.impression == "No acute cardiothoracic process."
    assert "no pneumonia" in r.sections["wet_read"]
    assert "pneumonia" not in (r.findings or "")


def test_conclusion_is_an_impression():
    assert parse("FINDINGS: Clear.\nCONCLUSION: Normal.").impression == "Normal."


def test_missing_sections_are_none():
    r = parse("IMPRESSION: No acute process.")
    assert (r.findings, r.indication, r.comparison, r.technique) == (None, None, None, None)
    assert parse("FINDINGS:\n\nIMPRESSION: x").findings is None  # empty section


def test_inline_capital_header_splits_the_line():
    r = parse("FINDINGS: Lungs clear. IMPRESSION: Normal chest.")
    assert (r.findings, r.impression) == ("Lungs clear.", "Normal chest.")


def test_lowercase_words_inside_text_are_not_headers():
    r = parse("FINDINGS: No trauma. Prior history: none. The impression: stable.")
    assert r.findings == "No trauma. Prior history: none. The impression: stable."
    assert (r.indication, r.impression) == (None, None)


def test_addendum_is_kept_apart_from_the_impression():
    text = (MIMIC_STYLE + "\n ADDENDUM: Findings discussed with Dr. ___ at 3pm."
            "\n IMPRESSION: Also a rib fracture.")
    r = parse(text)
    assert r.impression == "No acute cardiothoracic process."
    assert r.addendum.startswith("Findings discussed with Dr. ___ at 3pm.")
    assert "rib fracture" in r.addendum


def test_anonymization_blanks_are_one_token():
    r = parse("INDICATION: ____ year old with XXXX.\nFINDINGS: Compared to __ .")
    assert r.indication == "___ year old with ___."
    assert r.findings == "Compared to ___."


def test_other_headers_end_the_previous_section():
    r = parse("IMPRESSION: Normal.\nRECOMMENDATION(S): Follow-up CT.\n"
              "NOTIFICATION: Called Dr. ___.")
    assert r.impression == "Normal."
    assert r.sections["recommendation"] == "Follow-up CT."


def test_repeated_section_is_joined_in_order():
    assert parse("FINDINGS: A.\nIMPRESSION: B.\nFINDINGS: C.").findings == "A. C."


def test_report_without_headers_is_all_preamble():
    r = parse("Lungs are clear.\nNo effusion.")
    assert r.findings is None and not r.has_sections
    assert r.preamble == "Lungs are clear. No effusion."


def test_empty_input():
    assert parse("").findings is None and parse(None).impression is None


def test_windows_line_endings():
    assert parse("FINDINGS:\r\nClear.\r\nIMPRESSION:\r\nNormal.").impression == "Normal."


def test_normalize_rules():
    messy = "  No  acute\n process .\tSeen on XXXX , ok"
    assert normalize(messy) == "No acute process. Seen on ___, ok"
    assert normalize("ﬁndings") == "findings"  # NFKC ligature
    assert normalize(None) == ""


def test_format_report_round_trips_and_wraps():
    findings = "The lungs are well-expanded and clear. " * 6
    text = format_report(findings, "No acute process.", "Cough.", comparison="Prior from ___.",
                         technique="PA and lateral")
    assert max(len(line) for line in text.splitlines()) <= 78
    r = parse(text)
    expected = (normalize(findings), "No acute process.", "Cough.")
    assert (r.findings, r.impression, r.indication) == expected
    assert (r.comparison, r.technique) == ("Prior from ___.", "PA and lateral")


def test_format_report_omits_empty_sections():
    r = parse(format_report(None, "Normal.", None))
    assert r.findings is None and r.indication is None and r.impression == "Normal."


# ---- real reports (Indiana University collection), read from ../shared when present ----------

_LABEL_INSIDE = re.compile(
    r"\b(" + "|".join(re.escape(k) for k in SECTION_ALIASES) + r")\s*:", re.IGNORECASE
)
FIELDS = ("findings", "impression", "indication", "comparison")


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _clean(rows: list[dict]) -> list[dict]:
    """Reports whose field text does not itself contain a section label and colon."""
    return [r for r in rows if not any(_LABEL_INSIDE.search(r[f] or "") for f in FIELDS)]


def _mismatches(rows: list[dict], compose) -> int:
    bad = 0
    for row in rows:
        parsed = parse(compose(row))
        bad += any((getattr(parsed, f) or "") != normalize(row[f]) for f in FIELDS)
    return bad


def test_real_reports_round_trip_through_mimic_style_text(iu_xray_reports: Path):
    rows = _load(iu_xray_reports)
    clean = _clean(rows)
    assert len(clean) > 0.99 * len(rows)

    def compose(r: dict) -> str:
        return format_report(r["findings"], r["impression"], r["indication"],
                             comparison=r["comparison"])

    assert _mismatches(clean, compose) == 0


def test_real_reports_parse_from_messy_layouts(iu_xray_reports: Path):
    rng = random.Random(0)

    def compose(r: dict) -> str:
        parts = []
        if r["indication"]:
            label = rng.choice(["History", "HISTORY", "Reason for exam", "CLINICAL INFORMATION"])
            parts.append(label + ": " + r["indication"])
        if r["comparison"]:
            label = rng.choice(["Comparison", "COMPARISON", "comparisons"])
            parts.append(label + ":\n" + r["comparison"])
        if r["findings"]:
            body = textwrap.fill(r["findings"], rng.randint(30, 70), break_on_hyphens=False)
            label = rng.choice(["Findings", "FINDINGS", "findings"])
            indent = " " * rng.randint(0, 3)
            parts.append(label + ":\n" + textwrap.indent(body, indent))
        if r["impression"]:
            body = textwrap.fill(r["impression"], rng.randint(30, 70), break_on_hyphens=False)
            parts.append(rng.choice(["Impression", "IMPRESSION", "Conclusion"]) + ":  " + body)
        head = rng.choice(["", "FINAL REPORT\n", "   FINAL REPORT  \n\n"])
        return head + rng.choice(["\n\n", "\n"]).join(parts)

    assert _mismatches(_clean(_load(iu_xray_reports)), compose) == 0


def test_normalize_is_idempotent_on_real_text(iu_xray_reports: Path):
    for row in _load(iu_xray_reports):
        for f in FIELDS:
            once = normalize(row[f])
            assert normalize(once) == once
