"""CheXpert-style labeler: 14 chest X-ray observations as positive / negative / uncertain / blank.

A rule-based re-implementation (our own code and phrase lists) of the conventions of the
Stanford CheXpert labeler (Irvin et al. 2019, ``stanfordmlgroup/chexpert-labeler``): mention
extraction by phrase matching, then classification of each mention as negated, uncertain or
positive, then aggregation per report. The CheXpert labeler classifies mentions with NegBio
dependency-graph patterns; we approximate those patterns with clause-scoped regular expressions
(no parser), which keeps labeling at thousands of reports per second on one core.

Values: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, ``None`` not mentioned.

Conventions (CheXpert's unless marked *ours*):

* Text is lower-cased; ``and/or`` becomes ``or`` and ``a/b`` becomes ``a or b``.
* A mention is classified in this order (first hit wins), as in CheXpert's
  ``ModifiedDetector``: *pre-negation uncertainty* ("cannot be excluded", "not excluded",
  "cannot rule out", "no new ...") -> *negation* ("no", "without", "negative for", "free of",
  "resolution of", "has resolved", "not seen", "removed", "normal"/"unremarkable"/"within normal
  limits" for heart and mediastinum mentions, "rule out", "history of", ...) -> *post-negation
  uncertainty* ("possible", "probable", "questionable", "suspicious for", "concerning for",
  "may", "could", "versus", "X or Y", "vascular congestion", "indistinctness",
  "stable/unchanged/similar heart or mediastinal silhouette", "borderline heart size", ...)
  -> positive. "likely" alone is **not** an uncertainty cue (CheXpert has only "less likely");
  "suggestive of" / "suggests" are (*ours*: CheXpert has "suggestion of").
* Scopes are clauses: a cue before a mention reaches it unless a terminator lies between
  ("but", "however", "although", "which", "except", ";", "there is", "is seen", or a comma
  followed by a new assertion such as ", possible" / ", mild" / ", the").
* Heart and mediastinum mentions ("heart size", "cardiac silhouette", "mediastinal contours", ...)
  take their value from the words describing them in the same clause: normal -> 0,
  borderline -> -1, enlarged/prominent/widened -> 1, stable/unchanged alone -> -1.
  *Ours*: a bare "heart" counts (CheXpert needs "the heart"); "heart failure" is not a heart
  mention; "size and contour" is not a mediastinum mention; "pneumonitis" is a Pneumonia mention
  and "granulomatous infection" is not; "consideration" / "in the differential" are uncertainty
  cues; "vascular engorgement" and "fluid overload" are uncertain Edema mentions, like
  "vascular congestion".
* Aggregation per observation over its mentions: positive beats uncertain beats negative
  (CheXpert's ``Aggregator.dict_to_vec``). A positive or uncertain "chf" / "heart failure" adds an
  uncertain Cardiomegaly mention.
* No Finding is ``1.0`` when no mention of any category other than Support Devices is positive or
  uncertain -- including CheXpert's list of other findings (emphysema, scoliosis, granuloma,
  calcification, hernia, ...) -- and ``None`` otherwise (never ``0.0``). A report with no mention
  at all, the empty string included, is therefore No Finding ``1.0``, as in CheXpert.
* The whole text is labelled (CheXpert labels the impression only; pass the section you want).
* *Ours*: a cue reaches at most ``SCOPE_CHARS`` (250) characters, so degenerate generated text
  without punctuation is labelled in linear time. "Other findings" that block No Finding also
  include tortuosity, spondylosis and hiatal (hernia).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from evaluation.caches import TextCache, memoize
from radiology.labels import CHEXPERT_5, CHEXPERT_14

__all__ = [
    "CHEXPERT_14",
    "CHEXPERT_5",
    "NEGATIVE",
    "POSITIVE",
    "UNCERTAIN",
    "label",
    "label_many",
]

POSITIVE = 1.0
NEGATIVE = 0.0
SCOPE_CHARS = 250  # the farthest a negation / uncertainty cue reaches, in characters
UNCERTAIN = -1.0


_OTHER = "_other finding"  # blocks No Finding, produces no label of its own

# Mention phrases per observation, as regular expressions over lower-cased text.
_MENTIONS: dict[str, list[str]] = {
    "Atelectasis": [r"atelecta\w*", r"collapsed?"],
    "Cardiomegaly": [
        r"cardiomegaly",
        r"heart(?! failure)",
        r"cardiac (?:enlargement|size|shadow|contours?|silhouettes?)",
        r"cardiac (?:and|,) ?(?:the )?mediastinal (?:silhouettes?|contours?)",
        r"enlarged heart",
    ],
    "Consolidation": [r"consolidat\w*"],
    "Edema": [
        r"edema",
        r"congestive heart failure",
        r"heart failure",
        r"chf",
        r"vascular congestion",
        r"pulmonary congestion",
        r"indistinctness",
        r"vascular prominence",
        r"vascular engorgement",
        r"fluid overload",
    ],
    "Enlarged Cardiomediastinum": [
        r"mediastinum",
        r"cardiomediastinum",
        r"cardiomediastinal (?:silhouettes?|contours?|shadow|size)",
        r"contours?",
        r"mediastinal (?:configuration|silhouettes?|widening)",
        r"pericardial silhouette",
        r"cardiac silhouette and vascularity",
    ],
    "Fracture": [r"fractures?d?"],
    "Lung Lesion": [
        r"mass(?:es)?",
        r"nodular (?:density|densities|opacity|opacities|opacification)",
        r"nodules?",
        r"lump",
        r"cavitary lesions?",
        r"carcinoma",
        r"neoplasms?",
        r"tumou?rs?",
    ],
    "Lung Opacity": [
        r"opaci\w*",
        r"decreased translucency",
        r"increased density",
        r"air[- ]?space (?:disease|process)",
        r"infiltrat\w*",
        r"interstitial (?:markings?|pattern|lung)",
        r"reticular (?:pattern|markings?)",
        r"reticulation",
        r"parenchymal scarring",
        r"peribronchial thickening",
        r"wall thickening",
        r"scar(?:s|ring)?",
    ],
    "Pleural Effusion": [r"pleural fluid", r"effusions?", r"hydropneumothorax"],
    "Pleural Other": [
        r"pleural thickening",
        r"fibrosis",
        r"fibrothorax",
        r"pleural scar(?:ring)?",
        r"pleural[- ]parenchymal scar(?:ring)?",
        r"pleuro[- ]?parenchymal scar(?:ring)?",
        r"pleuro[- ]?pericardial scar(?:ring)?",
    ],
    "Pneumonia": [r"pneumonias?", r"pneumonitis", r"infection", r"infectious(?: process)?"],
    "Pneumothorax": [r"pneumothorax", r"pneumothoraces", r"hydropneumothorax"],
    "Support Devices": [
        r"pacer",
        r"lines?",
        r"picc",
        r"tubes?",
        r"valves?",
        r"catheters?",
        r"pacemakers?",
        r"hardware",
        r"arthroplast\w*",
        r"markers?",
        r"icd",
        r"defib\w*",
        r"devices?",
        r"drains?",
        r"plates?",
        r"screws?",
        r"cannula",
        r"apparatus",
        r"coils?",
        r"support",
        r"equipment",
        r"mediport",
        r"port[- ]a[- ]cath",
        r"leads",
        r"stents?",
        r"sternotomy wires",
    ],
    _OTHER: [
        r"emphysema",
        r"blunt\w*",
        r"density",
        r"densities",
        r"elevat\w*",
        r"eventration",
        r"scoliosis",
        r"degenera\w*",
        r"calcifi\w*",
        r"hyperinflat\w*",
        r"bronchospasm",
        r"asthma",
        r"hernia",
        r"copd",
        r"plaques?",
        r"osteophyt\w*",
        r"aortic disease",
        r"bronchiolitis",
        r"airways? disease",
        r"thickening",
        r"cephalization",
        r"aspiration",
        r"bullae",
        r"contusion",
        r"atherosclero\w*",
        r"osteopeni\w*",
        r"metasta\w*",
        r"granulomas?",
        r"granulomatous",
        r"pneumomediastinum",
        r"pneumoperitoneum",
        r"osteodystrophy",
        r"cuffing",
        r"irregular lucency",
        r"inflam\w*",
        r"hypertension",
        r"prominen\w*",
        r"kyphosis",
        r"hyperexpan\w*",
        r"bullet",
        r"reticula\w*",
        r"thoracentesis",
        r"bronchitis",
        r"volume loss",
        r"deformit\w*",
        r"hemorrhage",
        r"hematoma",
        r"radiopaque",
        r"aerophagia",
        r"arthropathy",
        r"tracheostomy",
        r"tortu\w*",
        r"spondylo\w*",
        r"hiatal",
    ],
}

# Phrases whose overlap cancels a mention of the observation ("unmention" in CheXpert).
_POSITIONAL = r"(?:over|overly|overlying|in|projecting over|behind) the(?: superior| left| right)?"
_UNMENTIONS: dict[str, str] = {
    "Lung Lesion": r"calcified nodul\w*|massive|mass effect",
    "Lung Opacity": r"pleural scar\w*",
    "Pleural Effusion": r"pericardial effusions?",
    "Pneumonia": r"granulomatous (?:infection|disease|process)|tubercul\w* infection",
    "Cardiomegaly": _POSITIONAL + r" (?:heart|cardiac \w+)",
    "Enlarged Cardiomediastinum": _POSITIONAL + r" (?:mediastinum|\w+ contours?|\w+ silhouettes?)"
    r"|\b(?:size|shape|configuration),? (?:and|or) contours?\b"
    r"|\bcontours? (?:and|or) (?:size|shape)\b",
    "Support Devices": r"lines? of|septal lines|kerley|line of|midline"
    r"|\w+ lines? (?:is|are) (?:normal|seen)",
    _OTHER: r"heart failure",
}

# Heart and mediastinum mentions: their value comes from the words that describe them.
_ANATOMY_MENTION = {"Cardiomegaly", "Enlarged Cardiomediastinum"}
_ANATOMY_EXCEPT = re.compile(
    r"cardiomegaly|enlarged heart|cardiac enlargement|mediastinal widening"
)

# Phrase lookup by the first three letters of a word: each word start of a sentence tries only
# the phrases that can begin there (much faster than one scan per observation).
_PHRASES_BY_PREFIX: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _obs, _phrases in _MENTIONS.items():
    for _phrase in _phrases:
        if not re.match(r"[a-z]{3}", _phrase):
            raise ValueError(f"mention phrase must start with three letters: {_phrase}")
        _PHRASES_BY_PREFIX.setdefault(_phrase[:3], []).append((_obs, re.compile(_phrase + r"\b")))
_WORD_START = re.compile(r"\b[a-z]")
_COMPILED_UNMENTIONS = {obs: re.compile(p) for obs, p in _UNMENTIONS.items()}

# ---- cue patterns ---------------------------------------------------------------------------
# Terminators close the scope of a cue: a cue and a mention in different clauses do not interact.
_TERMINATOR = re.compile(
    r";|\b(?:but|however|although|though|whereas|while|which|except|aside from|apart from"
    r"|there (?:is|are|has|have|was|were)"
    r"|(?:is|are|was|were) (?:again )?(?:seen|noted|present|identified|demonstrated))\b"
    r"|,\s*(?=(?:and )?(?:possible|possibly|probable|likely|new|stable|unchanged|persistent"
    r"|there|the|with|a|an|which|but|although|concerning|may|could|representing|consistent"
    r"|compatible|suggest\w*|worrisome)\b)"
    r"|,\s*(?=(?:and )?(?:mild|mildly|minimal|small|moderate|large|severe)\b"
    r"(?![^,;.]*\b(?:or|nor)\b))"
)
_PRE_NEG_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:cannot|can ?not|could not|can't) (?:be )?(?:exclude|excluded|rule out|ruled out)\b"
    r"|\bno new\b|\bno evidence to rule out\b|\bnot (?:be )?(?:excluded|ruled out)\b"
)
_PRE_NEG_UNCERTAIN_AFTER = re.compile(
    r"^[^;]*?\b(?:(?:cannot|can ?not|could not|can't|may not|not) (?:be |been )?"
    r"(?:entirely |completely |totally )?(?:excluded|ruled out))\b"
)
_NEG_BEFORE = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|resolution of|resolved|resolving"
    r"|rather than|clear of|clearing of|removal of|history of|rule out|ruled out|r/o|exclude"
    r"|excluded|disappearance of|drainage of|no longer|lack of|interval resolution of|nor"
    r"|neither)\b"
)
_NEG_AFTER = re.compile(
    r"^[^,;]*?\b(?:(?:is|are|was|were|has|have been|has been) )?(?:not (?:seen|identified|present"
    r"|visualized|demonstrated|evident|noted|visible|detected|enlarged|widened)"
    r"|(?:has |have )?(?:resolved|cleared|been removed|been resolved)"
    r"|absent|removed|no longer (?:seen|present|visualized|evident|identified|visible))\b"
)
_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:possible|possibly|presumably|presumed|probable|questionable|question of|questioned"
    r"|suspect|suspected|suspicious|suspicion|concern|concerning|worrisome|suggestion|suggestive"
    r"|suggests?|suggesting|may|might|could|would|versus|vs|differential|correlate|equivocal"
    r"|less likely|obscur\w+|cannot|can not|borderline|indeterminate|uncertain|not exclude"
    r"|correlation for|consideration|considered)\b"
)
_UNCERTAIN_AFTER = re.compile(
    r"^[^,;]*?\b(?:(?:is|are) )?(?:(?:is|are|was|were) )?(?:possible|suspected|questioned|"
    r"(?:may|might|could|can) (?:be )?(?:present|seen|appear)"
    r"|not (?:well )?(?:seen|visualized|evaluated)"
    r"|poorly (?:seen|visualized|evaluated)|incompletely (?:seen|visualized|evaluated)"
    r"|not clearly seen|not appreciated|obscured|less likely|versus|vs"
    r"|(?:is |be |as )?(?:a |another )?(?:consideration|considered)|in the differential)\b"
)
_OR_COORDINATION_BEFORE = re.compile(r"\b(?:or|and/or)\s+(?:[\w-]+\s+){0,2}$")
_OR_COORDINATION_AFTER = re.compile(r"^\s*(?:[\w-]+\s+)?,?\s*or\b")
_EDEMA_UNCERTAIN = re.compile(
    r"vascular congestion|pulmonary congestion|indistinctness|vascular prominence"
    r"|vascular engorgement|fluid overload"
)
_NO_CHANGE = re.compile(r"\bno (?:significant |substantial |interval |appreciable )*change\b")

# Words describing heart and mediastinum mentions.
_STATE_NEGATIVE = re.compile(
    r"\b(?:normal|unremarkable|within (?:the )?normal limits"
    r"|not (?:\w+ )?(?:enlarged|widened|dilated|prominent)"
    r"|upper limits? of normal|no (?:cardiomegaly|enlargement|widening))\b"
)
_STATE_BORDERLINE = re.compile(r"\b(?:borderline|top[- ]normal|upper[- ]normal)\b")
_STATE_POSITIVE = re.compile(
    r"\b(?:enlarg\w*|prominen\w*|widen\w*|large|increased|cardiomegaly|dilat\w*|globular|massive)\b"
)
_STATE_STABLE = re.compile(
    r"\b(?:stable|unchanged|similar|no (?:significant |substantial |interval )*change|not changed"
    r"|grossly unchanged)\b"
)
_ANATOMY_WINDOW_STOP = re.compile(
    r",|;|\b(?:and|with|without|but|however|although|though|which|while|whereas|there)\b"
)
_PREDICATE_STOP = re.compile(
    r",|;|\b(?:with|without|but|however|although|though|which|while|whereas|there)\b"
    r"|\band (?=the |there |no |\w+ (?:is|are|was|were|appears?|remains?)\b)"
)

_COORDINATION_GAP = re.compile(
    r"(?:\s*(?!(?:is|are|was|were|appears?|remains?|has|have)\b)[\w-]+)?"
    r"[\s,]*(?:and|or)?[\s,]*(?:the )?"
    r"(?:(?!(?:is|are|was|were|appears?|remains?|has|have)\b)[\w-]+\s+){0,2}"
)
_SENTENCE_SPLIT = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s)|[\n?!:]")
_SLASH = re.compile(r"(?<=[a-z])/(?=[a-z])")
_SPACES = re.compile(r"\s+")


def _clean(text: str) -> str:
    text = text.lower().replace("and/or", "or")
    text = _SLASH.sub(" or ", text)
    return _SPACES.sub(" ", text)


def _clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """Character range of the clause around ``sentence[start:end]`` (terminators excluded).

    A clause reaches at most ``SCOPE_CHARS`` characters either side of the mention, so text
    without punctuation (a generator repeating itself) is labelled in linear time.
    """
    left = max(0, start - SCOPE_CHARS)
    # endpos past the mention: the comma rule looks ahead ("..., large effusion or pneumothorax")
    for m in _TERMINATOR.finditer(sentence, left, min(len(sentence), end + SCOPE_CHARS)):
        if m.end() > start:
            break
        left = m.end()
    limit = min(len(sentence), end + SCOPE_CHARS)
    m = _TERMINATOR.search(sentence, end, limit)
    return left, (m.start() if m else limit)


def _classify_finding(sentence: str, start: int, end: int, observation: str) -> float:
    """Negated / uncertain / positive for a finding-type mention at ``sentence[start:end]``."""
    left, right = _clause_bounds(sentence, start, end)
    before = sentence[left:start]
    after = sentence[end:right]
    before_masked = _NO_CHANGE.sub(" ", before)
    # 1. pre-negation uncertainty
    if _PRE_NEG_UNCERTAIN_BEFORE.search(before_masked) or _PRE_NEG_UNCERTAIN_AFTER.search(after):
        return UNCERTAIN
    # 2. negation
    if _NEG_BEFORE.search(before_masked) or _NEG_AFTER.search(after):
        return NEGATIVE
    # 3. post-negation uncertainty
    if _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_AFTER.search(after):
        return UNCERTAIN
    if _OR_COORDINATION_BEFORE.search(before) or _OR_COORDINATION_AFTER.search(after):
        return UNCERTAIN
    if observation == "Edema" and _EDEMA_UNCERTAIN.fullmatch(sentence[start:end]):
        return UNCERTAIN
    return POSITIVE


def _classify_anatomy(sentence: str, window: str, start: int, end: int, observation: str) -> float:
    """Value of a heart / mediastinum mention from the words describing it."""
    text = sentence[start:end]
    if _ANATOMY_EXCEPT.search(text):
        return _classify_finding(sentence, start, end, observation)
    left, right = _clause_bounds(sentence, start, end)
    before = sentence[left:start]
    if _PRE_NEG_UNCERTAIN_BEFORE.search(before):
        return UNCERTAIN
    if _STATE_NEGATIVE.search(window):
        return NEGATIVE
    if _NEG_BEFORE.search(_NO_CHANGE.sub(" ", before)) and not _STATE_POSITIVE.search(window):
        return NEGATIVE
    if _STATE_BORDERLINE.search(window):
        return UNCERTAIN
    if _STATE_POSITIVE.search(window):
        if _UNCERTAIN_BEFORE.search(window) or _UNCERTAIN_BEFORE.search(before):
            return UNCERTAIN
        return POSITIVE
    if _STATE_STABLE.search(window):
        return UNCERTAIN
    if _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_AFTER.search(sentence[end:right]):
        return UNCERTAIN
    return POSITIVE


def _anatomy_windows(
    sentence: str, spans: list[tuple[int, int]]
) -> list[str]:
    """For each heart/mediastinum mention span, the words that describe it.

    Mentions joined only by "and" / "," / "the" share one description ("heart size and
    mediastinal contours are normal"). A description runs from the previous stop word to the
    next one around the group.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    groups: list[list[int]] = []
    for i in order:
        if groups:
            prev_end = spans[groups[-1][-1]][1]
            gap = sentence[prev_end : spans[i][0]]
            if spans[i][0] < prev_end or _COORDINATION_GAP.fullmatch(gap):
                groups[-1].append(i)
                continue
        groups.append([i])
    windows = [""] * len(spans)
    for group in groups:
        g_start = spans[group[0]][0]
        g_end = max(spans[i][1] for i in group)
        left = max(0, g_start - SCOPE_CHARS)
        for m in _ANATOMY_WINDOW_STOP.finditer(sentence, left, g_start):
            left = m.end()
        right_text = _predicate_after(sentence, g_end)
        window = sentence[left:g_start] + " " + right_text
        for i in group:
            windows[i] = window
    return windows


def _predicate_after(sentence: str, end: int) -> str:
    """The words after a heart / mediastinum mention that describe it.

    With a verb ahead ("heart size and pulmonary vascularity appear normal"), the predicate after
    the first verb, up to the next stop word; with no verb ("heart size and vascularity normal"),
    the rest of the clause; otherwise up to the next stop word.
    """
    reach = min(len(sentence), end + SCOPE_CHARS)
    verb = _PREDICATE_VERB.search(sentence, end, reach)
    clause_end = _TERMINATOR.search(sentence, end, reach)
    limit = clause_end.start() if clause_end else reach
    if verb and verb.start() < limit:
        between = sentence[end : verb.start()]
        if _describes(between):
            # "heart size normal and lungs are clear": the verb belongs to the next clause
            stop = _ANATOMY_WINDOW_STOP.search(sentence, end, reach)
            return sentence[end : stop.start() if stop else reach]
        if not _BETWEEN_STOP.search(between):
            stop = _PREDICATE_STOP.search(sentence, verb.end(), reach)
            return sentence[verb.start() : stop.start() if stop else reach]
    elif not verb or verb.start() >= limit:
        rest = sentence[end:limit]
        if not _BETWEEN_STOP.search(rest):
            return rest
    stop = _ANATOMY_WINDOW_STOP.search(sentence, end, reach)
    return sentence[end : stop.start() if stop else reach]


def _describes(text: str) -> bool:
    """True when ``text`` holds a word that describes a heart / mediastinum mention."""
    return bool(
        _STATE_NEGATIVE.search(text) or _STATE_POSITIVE.search(text)
        or _STATE_BORDERLINE.search(text) or _STATE_STABLE.search(text)
    )


_PREDICATE_VERB = re.compile(r"\b(?:is|are|was|were|appears?|remains?|seems?|looks?|has|have)\b")
_BETWEEN_STOP = re.compile(r"\b(?:with|without|but|however|although|which|there|no|not)\b|;")


@memoize("chexpert sentences", maxsize=131072)
def _sentence_mentions(sentence: str) -> tuple[tuple[str, float, str], ...]:
    """(observation, value, mention text) for every mention in one sentence.

    Cached per distinct sentence: reports repeat sentences ("No pneumothorax.") a lot.
    """
    found: list[tuple[str, int, int]] = []
    last_end: dict[str, int] = {}
    blocked: dict[str, list[tuple[int, int]]] = {}
    for w in _WORD_START.finditer(sentence):
        start = w.start()
        candidates = _PHRASES_BY_PREFIX.get(sentence[start : start + 3])
        if not candidates:
            continue
        for observation, pattern in candidates:
            if last_end.get(observation, -1) > start:
                continue  # one observation's mentions do not overlap (as in one regex scan)
            m = pattern.match(sentence, start)
            if m is None:
                continue
            e = m.end()
            if observation not in blocked:
                unmention = _COMPILED_UNMENTIONS.get(observation)
                blocked[observation] = (
                    [u.span() for u in unmention.finditer(sentence)] if unmention else []
                )
            if any(start < be and e > bs for bs, be in blocked[observation]):
                continue
            found.append((observation, start, e))
            last_end[observation] = e
    if not found:
        return ()
    anatomy = [
        (s, e)
        for obs, s, e in found
        if obs in _ANATOMY_MENTION and not _ANATOMY_EXCEPT.search(sentence[s:e])
    ]
    windows = dict(zip(anatomy, _anatomy_windows(sentence, anatomy), strict=True))
    out: list[tuple[str, float, str]] = []
    for observation, s, e in found:
        if (s, e) in windows and observation in _ANATOMY_MENTION:
            value = _classify_anatomy(sentence, windows[(s, e)], s, e, observation)
        else:
            value = _classify_finding(sentence, s, e, observation)
        out.append((observation, value, sentence[s:e]))
    return tuple(out)


def _label_text(text: str) -> dict[str, float | None]:
    mentions: dict[str, list[float]] = {}
    no_finding = True
    for sentence in _SENTENCE_SPLIT.split(_clean(text)):
        if not sentence.strip():
            continue
        for observation, value, mention in _sentence_mentions(sentence):
            if observation != "Support Devices" and value != NEGATIVE:
                no_finding = False
            heart_failure = mention in ("chf", "heart failure", "congestive heart failure")
            if value != NEGATIVE and heart_failure:
                mentions.setdefault("Cardiomegaly", []).append(UNCERTAIN)
            mentions.setdefault(observation, []).append(value)
    values: dict[str, float | None] = {}
    for observation in CHEXPERT_14:
        if observation == "No Finding":
            values[observation] = POSITIVE if no_finding else None
            continue
        found = mentions.get(observation)
        if not found:
            values[observation] = None
        elif POSITIVE in found:
            values[observation] = POSITIVE
        elif UNCERTAIN in found:
            values[observation] = UNCERTAIN
        else:
            values[observation] = NEGATIVE
    return values


_LABELS: TextCache[str, dict[str, float | None]] = TextCache("chexpert labels")


def label(text: str) -> dict[str, float | None]:
    """Label one report: the 14 CheXpert observations -> 1.0 / 0.0 / -1.0 / None.

    >>> label("No pleural effusion or pneumothorax. Mild cardiomegaly.")["Pleural Effusion"]
    0.0
    """
    return dict(label_many([text])[0])


def label_many(texts: Iterable[str]) -> list[dict[str, float | None]]:
    """Label many reports; each distinct text is labelled once per process (cached).

    The returned label mappings are shared with the cache: treat them as read-only.
    """
    return _LABELS.get_many(list(texts), lambda missing: [_label_text(t) for t in missing])
