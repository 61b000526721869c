"""Radiology report text: split it into sections, normalize it, write MIMIC-CXR-style text.

The parser is a pure function over strings. It recognises a section header as a known label
followed by a colon, either at the start of a line (any case: ``Findings:``) or in the middle of
a line when written in capitals (``... normal. IMPRESSION: No acute process.``). Text under a
header runs until the next header. Worked example::

    >>> r = parse("FINAL REPORT\\n INDICATION: ___M with cough.\\n FINDINGS:\\n Lungs are\\n"
    ...           " clear.\\n IMPRESSION: No acute process.")
    >>> r.indication, r.findings, r.impression
    ('___M with cough.', 'Lungs are clear.', 'No acute process.')

Rules that matter for training targets and metrics:

- A label alone on its line in capitals (``FINDINGS`` with no colon) is a header too.
- Labels are grouped: INDICATION / HISTORY / CLINICAL HISTORY / REASON FOR EXAM(INATION) /
  CLINICAL INFORMATION -> ``indication``; COMPARISON(S) -> ``comparison``; TECHNIQUE ->
  ``technique``; FINDINGS -> ``findings``; IMPRESSION / CONCLUSION -> ``impression``.
- ``FINDINGS AND IMPRESSION:`` (or ``FINDINGS/IMPRESSION:``, ``IMPRESSION AND FINDINGS:``) fills
  both ``findings`` and ``impression`` with the same text and sets ``combined=True``.
- An addendum (a line starting with ``ADDENDUM``) ends the main report; its text is kept in
  ``addendum`` and never merged into findings or impression.
- Other known headers (EXAMINATION, WET READ, NOTIFICATION, RECOMMENDATION(S), ...) end the
  previous section; their text is kept in ``sections`` only. ``FINAL REPORT`` banners are dropped.
- When one label occurs twice, the texts are joined in order.
- Every section text goes through :func:`normalize`; empty sections become ``None``.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from dataclasses import dataclass, field

__all__ = ["Report", "parse", "normalize", "format_report", "SECTION_ALIASES"]

# label (upper case, single spaces) -> canonical section name
SECTION_ALIASES: dict[str, str] = {
    "INDICATION": "indication",
    "INDICATIONS": "indication",
    "CLINICAL INDICATION": "indication",
    "HISTORY": "indication",
    "CLINICAL HISTORY": "indication",
    "MEDICAL HISTORY": "indication",
    "REASON FOR EXAM": "indication",
    "REASON FOR EXAMINATION": "indication",
    "REASON FOR STUDY": "indication",
    "REASON FOR REQUEST": "indication",
    "CLINICAL INFORMATION": "indication",
    "CLINICAL INFO": "indication",
    "CLINICAL DATA": "indication",
    "CLINICAL NOTES": "indication",
    "COMPARISON": "comparison",
    "COMPARISONS": "comparison",
    "COMPARISON STUDY": "comparison",
    "COMPARISON STUDIES": "comparison",
    "COMPARISON EXAM": "comparison",
    "PRIOR STUDIES": "comparison",
    "TECHNIQUE": "technique",
    "TECHNIQUES": "technique",
    "FINDINGS": "findings",
    "FINDING": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "CONCLUSIONS": "impression",
    "FINDINGS AND IMPRESSION": "findings_impression",
    "FINDINGS AND IMPRESSIONS": "findings_impression",
    "FINDINGS/IMPRESSION": "findings_impression",
    "FINDINGS / IMPRESSION": "findings_impression",
    "IMPRESSION AND FINDINGS": "findings_impression",
    "IMPRESSION/FINDINGS": "findings_impression",
    "EXAMINATION": "examination",
    "EXAM": "examination",
    "PROCEDURE": "examination",
    "STUDY": "examination",
    "TYPE OF EXAMINATION": "examination",
    "WET READ": "wet_read",
    "PROVISIONAL FINDINGS IMPRESSION (PFI)": "wet_read",
    "NOTIFICATION": "notification",
    "NOTIFICATIONS": "notification",
    "RECOMMENDATION": "recommendation",
    "RECOMMENDATIONS": "recommendation",
    "RECOMMENDATION(S)": "recommendation",
    "ADDENDUM": "addendum",
}

_LABELS = sorted(SECTION_ALIASES, key=len, reverse=True)


def _label_pattern(label: str) -> str:
    words = [re.escape(w) for w in re.split(r"\s+", label)]
    return r"\s+".join(words).replace(r"/", r"\s*/\s*")


_LABEL_ALT = "|".join(_label_pattern(label) for label in _LABELS)
# A header at the start of a line: any case, optional leading whitespace, a colon after the label.
_LINE_HEADER = re.compile(rf"^[ \t]*(?P<label>{_LABEL_ALT})[ \t]*:", re.IGNORECASE | re.MULTILINE)
# A header in the middle of a line: must be written in capitals, after a sentence end or start.
_INLINE_HEADER = re.compile(
    rf"(?:(?<=[.!?;])|(?<=[.!?;]\s)|(?<=\s\s))[ \t]*(?P<label>{_LABEL_ALT}):"
)
# A label alone on its line, in capitals, without a colon ("FINDINGS\n Lungs are clear.").
_BARE_HEADER = re.compile(rf"^[ \t]*(?P<label>{_LABEL_ALT})[ \t]*$", re.MULTILINE)
# An addendum starts a line with the word ADDENDUM, colon optional
# ("ADDENDUM: ...", "ADDENDUM ___").
_ADDENDUM = re.compile(r"^[ \t]*(?P<label>ADDENDUM)\b[ \t]*:?", re.IGNORECASE | re.MULTILINE)
_BANNER = re.compile(
    r"^[ \t]*(?:FINAL|PRELIMINARY|ADDENDUM TO)?[ \t]*REPORT[ \t]*$|^[ \t]*FINAL ADDENDUM[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)

_BLANK = re.compile(r"_{2,}|\bX{3,}\b")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:!?)])")


def normalize(text: str | None) -> str:
    """The one normalization of report text, shared by training targets and metrics.

    NFKC unicode; anonymization blanks (``___``, IU-style ``XXXX``) become ``___``; runs of
    whitespace (line wraps included) become one space; no space before ``. , ; : ! ? )``; stripped.
    Case and wording are kept. Idempotent: ``normalize(normalize(t)) == normalize(t)``.

    >>> normalize("  No  acute\\n process .  Seen on XXXX.")
    'No acute process. Seen on ___.'
    """
    if not text:
        return ""
    out = unicodedata.normalize("NFKC", text)
    out = _BLANK.sub("___", out)
    out = _SPACE.sub(" ", out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    return out.strip()


@dataclass(frozen=True)
class Report:
    """Sections of one report; each is normalized text or None when absent or empty."""

    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    findings: str | None = None
    impression: str | None = None
    examination: str | None = None
    addendum: str | None = None
    preamble: str | None = None
    combined: bool = False
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def has_sections(self) -> bool:
        """True when at least one header was recognised."""
        return bool(self.sections)


def _headers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, canonical name) of every header, in order, non-overlapping."""
    found: dict[int, tuple[int, int, str]] = {}
    for rx in (_LINE_HEADER, _INLINE_HEADER, _BARE_HEADER, _ADDENDUM):
        for m in rx.finditer(text):
            label = _SPACE.sub(" ", m.group("label").upper()).replace(" / ", "/")
            label = re.sub(r"\s*/\s*", "/", label)
            name = SECTION_ALIASES.get(label) or SECTION_ALIASES.get(label.replace("/", " / "))
            if name is None:
                continue
            start = m.start("label")
            if start not in found:
                found[start] = (start, m.end(), name)
    ordered = sorted(found.values())
    kept: list[tuple[int, int, str]] = []
    for h in ordered:
        if kept and h[0] < kept[-1][1]:
            continue
        kept.append(h)
    return kept


def parse(text: str | None) -> Report:
    """Split report text into sections (see the module docstring for the rules)."""
    if not text:
        return Report()
    body = _BANNER.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    headers = _headers(body)
    raw: dict[str, list[str]] = {}
    preamble = body[: headers[0][0]] if headers else body
    in_addendum = False
    for i, (_, end, name) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(body)
        chunk = body[end:stop]
        if name == "addendum":
            in_addendum = True
        target = "addendum" if in_addendum else name
        if in_addendum and name != "addendum":
            # keep the addendum's own structure readable: "FINDINGS: ..." inside it stays labelled
            chunk = f"{name.upper().replace('_', ' ')}: {chunk}"
        raw.setdefault(target, []).append(chunk)
    sections = {k: normalize(" ".join(v)) for k, v in raw.items()}
    sections = {k: v for k, v in sections.items() if v}

    def get(name: str) -> str | None:
        return sections.get(name) or None

    combined = get("findings_impression")
    findings = get("findings")
    impression = get("impression")
    if combined:
        findings = f"{findings} {combined}" if findings else combined
        impression = f"{impression} {combined}" if impression else combined
    return Report(
        indication=get("indication"),
        comparison=get("comparison"),
        technique=get("technique"),
        findings=findings,
        impression=impression,
        examination=get("examination"),
        addendum=get("addendum"),
        preamble=normalize(preamble) or None,
        combined=combined is not None,
        sections=sections,
    )


def _block(label: str, text: str, width: int) -> str:
    wrapped = textwrap.fill(
        normalize(text),
        width=width,
        initial_indent=" ",
        subsequent_indent=" ",
        break_on_hyphens=False,
    )
    return f" {label}:\n \n{wrapped}\n"


def format_report(
    findings: str | None,
    impression: str | None,
    indication: str | None = None,
    *,
    comparison: str | None = None,
    technique: str | None = None,
    examination: str | None = "CHEST (PA AND LAT)",
    width: int = 78,
) -> str:
    """MIMIC-CXR-style report text that :func:`parse` reads back section for section.

    >>> r = parse(format_report("Lungs are clear.", "No acute process.", "Cough."))
    >>> (r.findings, r.impression, r.indication)
    ('Lungs are clear.', 'No acute process.', 'Cough.')
    """
    parts = [f"{'FINAL REPORT':>45}"]
    if examination:
        parts.append(f" EXAMINATION:  {normalize(examination)}\n")
    for label, value in (
        ("INDICATION", indication),
        ("TECHNIQUE", technique),
        ("COMPARISON", comparison),
    ):
        if value and normalize(value):
            parts.append(f" {label}:  {normalize(value)}\n")
    if findings and normalize(findings):
        parts.append(_block("FINDINGS", findings, width))
    if impression and normalize(impression):
        parts.append(_block("IMPRESSION", impression, width))
    return "\n".join(parts)
