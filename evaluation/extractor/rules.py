"""The rules of the RadGraph-style extractor: tokens -> entities -> certainty -> relations."""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field

from evaluation.caches import memoize
from evaluation.extractor import lexicon as lx

ANAT = "ANAT-DP"
OBS_DP = "OBS-DP"
OBS_U = "OBS-U"
OBS_DA = "OBS-DA"

# Tokens: runs of word characters, or single other non-space characters.
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

_HYPHEN_COMPOUNDS = {
    w
    for w in lx.ANATOMY | lx.ANATOMY_POSITION | lx.OBS_MODIFIER | lx.FINDING | lx.STATE
    if "-" in w
}
_MAX_COMPOUND = max(len(TOKEN_PATTERN.findall(w)) for w in _HYPHEN_COMPOUNDS)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into RadGraph-style tokens: words, and every punctuation mark on its own.

    >>> tokenize("Right-sided effusion, 4.5 cm.")
    ['Right', '-', 'sided', 'effusion', ',', '4', '.', '5', 'cm', '.']
    """
    return TOKEN_PATTERN.findall(text)


@dataclass(slots=True)
class Unit:
    """One candidate entity: a token span with a lexical category."""

    start: int
    end: int  # inclusive
    word: str  # lower-cased text, hyphen compounds joined without spaces
    kind: str  # anat | desc | pos | finding | state | mod | degree
    label: str = ANAT
    relations: list[tuple[str, int]] = field(default_factory=list)  # (type, unit index)
    certainty_set: bool = False


def _build_kinds() -> dict[str, str]:
    kinds: dict[str, str] = {}
    # later assignments lose: the first category listed wins for words in several lists
    for words, kind in (
        (lx.DEGREE, "degree"), (lx.STATE, "state"), (lx.OBS_MODIFIER, "mod"),
        (lx.FINDING, "finding"), (lx.ANATOMY, "anat"), (lx.ANATOMY_DESCRIPTOR, "desc"),
        (lx.ANATOMY_POSITION, "pos"),
    ):
        for word in words:
            kinds[word] = kind
    return kinds


_KINDS = _build_kinds()
_kind = _KINDS.get


def _units(lower: list[str]) -> tuple[list[Unit], list[int]]:
    """Entity candidates and, for every token, the index of its unit (-1 when none)."""
    units: list[Unit] = []
    owner = [-1] * len(lower)
    i = 0
    n = len(lower)
    while i < n:
        matched = False
        if i + 2 < n and lower[i + 1] == "-":
            for size in range(_MAX_COMPOUND, 2, -2):
                if i + size <= n:
                    word = "".join(lower[i : i + size])
                    if word in _HYPHEN_COMPOUNDS:
                        kind = _kind(word)
                        if kind:
                            units.append(Unit(i, i + size - 1, word, kind))
                            for j in range(i, i + size):
                                owner[j] = len(units) - 1
                            i += size
                            matched = True
                            break
        if matched:
            continue
        word = lower[i]
        kind = _kind(word)
        if kind == "pos" and word == "soft" and not (
            i + 1 < n and lower[i + 1].startswith("tissue")
        ):
            kind = None
        if kind == "finding" and word in (
            "change", "changes", "air", "lead", "line", "findings", "finding"
        ):
            kind = _contextual_finding(lower, i)
        if kind is not None and word in ("chest", "lateral") and _is_view_word(lower, i):
            kind = None
        if word in ("venous", "picc", "arterial") and i + 1 < n and lower[i + 1] in _DEVICE_HEADS:
            kind = "mod"
        if word == "central" and not (
            i + 1 < n and (lower[i + 1] in _DEVICE_HEADS or lower[i + 1] == "venous")
        ):
            kind = "pos"  # "central airways", "central vascular congestion"
        if kind == "state" and word == "clear" and i + 1 < n and lower[i + 1] == "of":
            kind = None
        if kind:
            units.append(Unit(i, i, word, kind))
            owner[i] = len(units) - 1
        i += 1
    return units, owner


_DEVICE_HEADS = frozenset("catheter catheters line lines access port tube".split())
_REPORTING_WORDS = frozenset(
    "were was are is discussed communicated reported called conveyed relayed d".split()
)
_VIEW_AFTER = frozenset(
    """radiograph radiographs radiography film films x xray study studies view views exam
    examination compared images image""".split()
)
_VIEW_BEFORE = frozenset("pa ap and portable upright supine frontal semi single".split())


def _is_view_word(lower: list[str], i: int) -> bool:
    """"chest" / "lateral" naming the examination ("PA and lateral chest radiographs")."""
    nxt = lower[i + 1] if i + 1 < len(lower) else ""
    prev = lower[i - 1] if i else ""
    if lower[i] == "lateral":
        return prev in _VIEW_BEFORE or nxt in _VIEW_AFTER or nxt == "chest"
    if i >= 3 and lower[i - 2 : i] == ["of", "the"] and lower[i - 3] in _VIEW_AFTER:
        return True  # "two views of the chest"
    return nxt in _VIEW_AFTER or prev in ("lateral", "portable", "ap", "pa", "frontal", "upright")


def _contextual_finding(lower: list[str], i: int) -> str | None:
    """Ambiguous finding words count only in their radiological sense."""
    word = lower[i]
    prev = lower[i - 1] if i else ""
    nxt = lower[i + 1] if i + 1 < len(lower) else ""
    if word in ("change", "changes"):
        return "finding"
    if word in ("finding", "findings"):
        # "findings were discussed with ..." is about the report, not the patient
        return None if nxt in _REPORTING_WORDS else "finding"
    if word == "air":
        return "finding" if prev in ("free", "no", "intraperitoneal", "subdiaphragmatic") else None
    if word == "fluid":
        return "finding" if prev in ("pleural", "no", "of") or nxt == "collection" else None
    if word in ("lead", "line"):
        return "finding" if nxt not in ("of", "with") else None
    return None


_SENTENCE_BREAK = frozenset(". ; : ? !".split())


MAX_CLAUSE_TOKENS = 120  # longer runs without a break (degenerate generated text) are cut


def _clauses(lower: list[str], breaks: frozenset[str] = lx.CLAUSE_BREAK) -> list[tuple[int, int]]:
    """Token ranges [start, end) of clauses: sentences cut at "but", "which", ";" ....

    A clause longer than ``MAX_CLAUSE_TOKENS`` is cut into pieces of that length, which keeps
    extraction linear in the text length whatever the text.
    """
    bounds: list[tuple[int, int]] = []
    start = 0
    for i, tok in enumerate(lower):
        if tok in breaks:
            if (tok == "." and 0 < i < len(lower) - 1
                    and lower[i - 1].isdigit() and lower[i + 1].isdigit()):
                continue  # a decimal point, not a sentence end
            if i > start:
                bounds.append((start, i))
            start = i + 1
    if start < len(lower):
        bounds.append((start, len(lower)))
    if any(hi - lo > MAX_CLAUSE_TOKENS for lo, hi in bounds):
        bounds = [
            (a, min(a + MAX_CLAUSE_TOKENS, hi))
            for lo, hi in bounds
            for a in range(lo, hi, MAX_CLAUSE_TOKENS)
        ]
    return bounds


def _unit_range(units: list[Unit], lo: int, hi: int) -> range:
    """Indices of the units starting in tokens [lo, hi) (units are in token order)."""
    return range(bisect_left(units, lo, key=_START), bisect_left(units, hi, key=_START))


def _START(u: Unit) -> int:  # noqa: N802 - used as a sort key
    return u.start


def _by_first_word(
    pairs: list[tuple[tuple[str, ...], object]],
) -> dict[str, list[tuple[tuple[str, ...], object]]]:
    table: dict[str, list[tuple[tuple[str, ...], object]]] = {}
    for phrase, value in pairs:
        table.setdefault(phrase[0], []).append((phrase, value))
    return table


# Backward cues by first word, uncertainty before negation (the first that matches wins).
_AFTER_BY_FIRST = _by_first_word(
    [(p, OBS_U) for p in lx.UNCERTAIN_AFTER] + [(p, OBS_DA) for p in lx.NEGATION_AFTER]
)
_SUGGESTIVE_BY_FIRST = _by_first_word(list(lx.SUGGESTIVE.items()))
_CANNOT_FIRST = frozenset(p[0] for p in lx.CANNOT_EXCLUDE_BEFORE)


def _is_comma_break(lower: list[str], i: int) -> bool:
    """True when the comma at ``i`` starts a new assertion (ends a cue's scope)."""
    j = i + 1
    if j < len(lower) and lower[j] == "and":
        j += 1
    return j < len(lower) and lower[j] in lx.COMMA_BREAK


def _match_at(lower: list[str], i: int, phrase: tuple[str, ...]) -> bool:
    return tuple(lower[i : i + len(phrase)]) == phrase


def _assign_certainty(
    lower: list[str], units: list[Unit], owner: list[int], lo: int, hi: int
) -> None:
    """Label the observations of clause [lo, hi) definitely present, uncertain or absent."""
    obs = [k for k in _unit_range(units, lo, hi) if units[k].kind not in ("anat", "desc", "pos")]
    if not obs:
        return
    status: dict[int, str] = {}
    # Forward cues: from the cue to the end of its scope.
    i = lo
    while i < hi:
        tok = lower[i]
        cue: str | None = None
        width = 1
        for phrase in lx.CANNOT_EXCLUDE_BEFORE if tok in _CANNOT_FIRST else ():
            if _match_at(lower, i, phrase):
                cue, width = OBS_U, len(phrase)
        if cue is None:
            if tok in lx.NEGATION_BEFORE_1 and owner[i] < 0:
                cue = OBS_DA
                if tok == "not" and i + 1 < hi and lower[i + 1] in ("excluded", "be"):
                    cue = None
            elif i + 1 < hi and (tok, lower[i + 1]) in lx.NEGATION_BEFORE_2:
                cue, width = OBS_DA, 2
            elif tok in lx.UNCERTAIN_BEFORE_1 and owner[i] < 0:
                cue = OBS_U
        if cue is None:
            i += 1
            continue
        j = i + width
        while j < hi:
            t = lower[j]
            if t == "," and _is_comma_break(lower, j):
                break
            if cue == OBS_DA and t in lx.COPULA and j > i + width:
                break
            if t in ("there",):
                break
            k = owner[j]
            if k >= 0 and units[k].kind not in ("anat", "desc", "pos"):
                if k not in status or cue == OBS_U and status[k] == OBS_DA and lower[i] == "cannot":
                    status[k] = cue
                if cue == OBS_DA and units[k].word in ("change", "changes"):
                    j += 1
                    break
            j += 1
        i = max(j if cue == OBS_DA and lower[i] == "no" else i + width, i + 1)
    # Backward cues: everything of the clause before the cue, up to a comma.
    for i in range(lo, hi):
        candidates = _AFTER_BY_FIRST.get(lower[i])
        if candidates is None:
            continue
        for hit, cue in candidates:
            if not _match_at(lower, i, hit):
                continue
            if (cue == OBS_DA and hit == ("no", "longer") and i > lo
                    and lower[i - 1] not in lx.COPULA):
                continue
            j = i - 1
            while j >= lo and lower[j] != ",":
                k = owner[j]
                if k >= 0 and units[k].kind not in ("anat", "desc", "pos"):
                    if cue == OBS_U or k not in status:
                        status[k] = cue
                j -= 1
            break
    for k in obs:
        units[k].label = status.get(k, OBS_DP)


def _anatomy_phrases(
    units: list[Unit], idx: list[int], lower: list[str]
) -> list[tuple[list[int], int]]:
    """Runs of adjacent anatomy units in a clause and the head of each run.

    The head is the last organ word of the run ("lobe" in "left lower lobe", "lung" in "left lung
    base"); failing one, its last word. Position words and other organ words modify the head;
    descriptors ("silhouette", "bases", "size") modify it too.
    """
    runs: list[list[int]] = []
    for k in idx:
        u = units[k]
        if u.kind not in ("anat", "desc", "pos"):
            continue
        if runs and units[runs[-1][-1]].end == u.start - 1:
            prev = units[runs[-1][-1]]
            # "right lung base": descriptor after organ stays in the run; "lung apex" too.
            descriptor_then_organ = (
                prev.kind == "desc" and u.kind in ("anat", "pos") and prev.word not in ("size",)
            )
            if not descriptor_then_organ:
                runs[-1].append(k)
                continue
        runs.append([k])
    out = []
    for run in runs:
        organs = [k for k in run if units[k].kind == "anat"]
        head = organs[-1] if organs else run[-1]
        if not organs and any(units[k].kind == "desc" for k in run):
            head = next(k for k in reversed(run) if units[k].kind == "desc")
        out.append((run, head))
    return out


def _relate_clause(lower: list[str], units: list[Unit], owner: list[int], lo: int, hi: int) -> None:
    idx = list(_unit_range(units, lo, hi))
    if not idx:
        return
    phrases = _anatomy_phrases(units, idx, lower)
    head_of: dict[int, int] = {}
    for run, head in phrases:
        for k in run:
            head_of[k] = head
            if k != head:
                units[k].relations.append(("modify", head))
    # The anatomy a predicate describes: anatomy phrases before the first copula of the clause.
    copula = next((i for i in range(lo, hi) if lower[i] in lx.COPULA), None)
    subjects = [h for run, h in phrases if copula is not None and units[run[-1]].end < copula]
    obs = [k for k in idx if units[k].kind in ("finding", "state", "mod", "degree")]
    findings = [k for k in obs if units[k].kind == "finding"]
    # Modifiers: the next finding; else the previous finding; else they are predicates.
    standalone: list[int] = []
    for k in obs:
        u = units[k]
        if u.kind == "degree":
            nxt = next((m for m in obs if units[m].start > u.end), None)
            if nxt is not None:
                u.relations.append(("modify", nxt))
            continue
        if u.kind in ("mod", "state"):
            target = _next_finding(lower, units, findings, u)
            if target is None and (u.kind == "mod" or copula is not None and u.start > copula):
                target = next((m for m in reversed(findings) if units[m].end < u.start), None)
                if target is None and u.kind == "mod" and copula is not None and u.start > copula:
                    # "heart size is mildly enlarged, unchanged": the predicate before it
                    target = next(
                        (m for m in reversed(obs)
                         if units[m].end < u.start and units[m].kind == "state"
                         and not units[m].relations),
                        None,
                    )
            if target is not None:
                u.relations.append(("modify", target))
            else:
                standalone.append(k)
    # Locations of findings and of predicate observations.
    for k in findings + standalone:
        u = units[k]
        loc = _location(lower, units, owner, phrases, head_of, u, hi)
        if loc:
            for h in loc:
                u.relations.append(("located_at", h))
        elif units[k].kind != "finding":
            # verbless predicate ("heart size within normal limits"): anatomy before it
            before = subjects if copula is not None else [
                h for run, h in phrases if units[run[-1]].end < u.start
            ]
            for h in before:
                u.relations.append(("located_at", h))


def _next_finding(lower: list[str], units: list[Unit], findings: list[int], u: Unit) -> int | None:
    """The finding a modifier describes: the next one in its noun phrase."""
    for m in findings:
        f = units[m]
        if f.start <= u.end:
            continue
        between = lower[u.end + 1 : f.start]
        if u.word in lx.CHANGE_NOUN:
            between = [t for t in between if t not in ("in", "of", "size")]
        # "low lung volumes and ... effusions": the modifier describes an anatomy descriptor
        if u.word not in lx.CHANGE_NOUN and any(
            kind == "desc" for kind in _kinds_between(units, u.end + 1, f.start)
        ):
            return None
        if any(t in lx.COPULA or t in lx.PREPOSITION or t in (",", "with", "without", "there")
               for t in between):
            return None
        return m
    return None


def _kinds_between(units: list[Unit], start: int, end: int) -> list[str]:
    return [v.kind for v in units if start <= v.start < end]


def _location(
    lower: list[str],
    units: list[Unit],
    owner: list[int],
    phrases: list[tuple[list[int], int]],
    head_of: dict[int, int],
    u: Unit,
    hi: int,
) -> list[int]:
    """Anatomy heads an observation is located at."""
    # 1. an anatomy phrase directly before, inside the same noun phrase ("pleural effusion").
    j = u.start - 1
    floor = max(0, u.start - _NP_REACH)
    while j >= floor and owner[j] >= 0 and units[owner[j]].kind in ("mod", "degree"):
        j = units[owner[j]].start - 1
    if j < floor:
        j = -1
    if j >= 0 and owner[j] >= 0 and owner[j] in head_of and u.kind != "mod":
        # A predicate state before its anatomy ("normal heart size") is handled below.
        return [head_of[owner[j]]]
    # 2. a state word before its anatomy: "normal heart size", "clear lungs", "enlarged heart".
    j = u.end + 1
    if u.kind in ("state", "mod"):
        hi = min(hi, u.end + 1 + _NP_REACH)
        while j < hi and owner[j] >= 0 and units[owner[j]].kind in ("mod", "degree"):
            j = units[owner[j]].end + 1
        if j < hi and owner[j] >= 0 and owner[j] in head_of:
            return [head_of[owner[j]]]
        return []
    # 3. a prepositional phrase after a finding: "opacity in the left lower lobe",
    #    "tube terminates 4 cm above the carina".
    j = u.end + 1
    while j < hi and lower[j] in _PLACEMENT_VERBS:
        j += 1
    steps = 0
    while j < hi and steps < 5 and (lower[j] in _PP_FILLER or lower[j].isdigit()):
        j += 1
        steps += 1
    if j > u.end + 1 and (lower[j - 1] in lx.PREPOSITION or lower[j - 1] in lx.DETERMINER):
        while j < hi and owner[j] >= 0 and units[owner[j]].kind in ("mod", "degree"):
            j += 1
        if j < hi and owner[j] >= 0 and owner[j] in head_of:
            heads = [head_of[owner[j]]]
            # coordinated anatomy: "in the right upper lobe and lingula"
            k = units[owner[j]].end + 1
            while k < hi and owner[k] >= 0 and owner[k] in head_of:
                k = units[owner[k]].end + 1
            # the anatomy belongs to another finding's noun phrase: "change in the pleural effusion"
            m = k
            while m < hi and owner[m] >= 0 and units[owner[m]].kind in ("mod", "degree"):
                m += 1
            if m < hi and owner[m] >= 0 and units[owner[m]].kind == "finding":
                return []
            if k + 1 < hi and lower[k] == "and":
                k2 = k + 1
                while k2 < hi and lower[k2] in lx.DETERMINER:
                    k2 += 1
                if k2 < hi and owner[k2] >= 0 and owner[k2] in head_of:
                    h2 = head_of[owner[k2]]
                    if h2 not in heads:
                        heads.append(h2)
            return heads
    return []


_NP_REACH = 12  # the most tokens of modifiers between an observation and its anatomy
_PLACEMENT_VERBS = frozenset(
    """is are projects project terminates terminate ends end courses extends overlies seen noted
    lies tip coils coiled loops passes remains remain""".split()
)
_PP_FILLER = lx.PREPOSITION | lx.DETERMINER | {
    "cm", "mm", ".", "approximately", "about", "expected", "region", "level"
}


def _suggestive(lower: list[str], units: list[Unit], lo: int, hi: int) -> None:
    """``X may represent Y``: X suggestive_of Y (Y uncertain unless the cue is definite).

    Works over a sentence, not a clause: "blunting ... which may reflect a small effusion".
    """
    sentence_units = _unit_range(units, lo, hi)
    findings = [k for k in sentence_units if units[k].kind == "finding"]
    if not findings:
        return
    starts = [units[k].start for k in findings]
    modifiers: dict[int, list[int]] = {}
    for k in sentence_units:
        for rel, target in units[k].relations:
            if rel == "modify":
                modifiers.setdefault(target, []).append(k)
    i = lo
    while i < hi:
        candidates = _SUGGESTIVE_BY_FIRST.get(lower[i])
        if candidates is None:
            i += 1
            continue
        hit = None
        for phrase, uncertain in candidates:
            if (hit is None or len(phrase) > len(hit[0])) and _match_at(lower, i, phrase):
                hit = (phrase, bool(uncertain))
        if hit is None:
            i += 1
            continue
        phrase, uncertain = hit
        p = bisect_left(starts, i)
        while p > 0 and units[findings[p - 1]].end >= i:
            p -= 1
        source = findings[p - 1] if p > 0 else None
        if source is None:
            source = next(
                (m for m in reversed(_unit_range(units, lo, i))
                 if units[m].end < i and units[m].kind in ("state", "mod")
                 and not any(r == "modify" for r, _ in units[m].relations)),
                None,
            )
        # targets: the first finding after the cue and those coordinated with it by "or" / "and"
        chosen: list[int] = []
        for q in range(bisect_left(starts, i + len(phrase)), len(findings)):
            m = findings[q]
            if chosen:
                between = lower[units[chosen[-1]].end + 1 : units[m].start]
                if not between or not set(between) & {"or", "and", ",", "versus", "vs"} or (
                    set(between) & lx.COPULA
                ):
                    break
            chosen.append(m)
        if (source is not None and chosen and len(phrase) == 1
                and phrase[0] in ("likely", "possibly")):
            # bare "likely": only when it sits between two findings ("opacity, likely atelectasis")
            if not any(t == "," for t in lower[units[source].end + 1 : i]):
                chosen = []
        if source is not None and chosen and phrase in (("may", "be"), ("could", "be")):
            if i > 0 and lower[i - 1] not in (",",) and units[source].end != i - 1:
                chosen = []
        for m in chosen:
            if source is not None and ("suggestive_of", m) not in units[source].relations:
                units[source].relations.append(("suggestive_of", m))
            if uncertain and units[m].label != OBS_DA:
                units[m].label = OBS_U
                for mod in modifiers.get(m, ()):
                    if units[mod].label != OBS_DA and units[mod].kind != "degree":
                        units[mod].label = OBS_U
        i += len(phrase)


def _or_uncertainty(
    lower: list[str], units: list[Unit], owner: list[int], lo: int, hi: int
) -> None:
    """"atelectasis or pneumonia": both alternatives are uncertain (unless negated).

    The left alternative ends right before "or"; the right one starts within 4 tokens after it.
    """
    for i in range(lo + 1, hi):
        if lower[i] != "or":
            continue
        left = owner[i - 1]
        if left < 0 or units[left].kind != "finding" or units[left].start < lo:
            continue
        right = None
        for j in range(i + 1, min(i + 5, hi)):
            k = owner[j]
            if k >= 0 and units[k].kind == "finding" and units[k].start == j:
                right = k
                break
        if right is None:
            continue
        if units[left].label == OBS_DA or units[right].label == OBS_DA:
            continue
        for k in (left, right):
            units[k].label = OBS_U


def sentence_spans(lower: list[str]) -> list[tuple[int, int]]:
    """Token ranges [start, end) of sentences (between ". ; : ? !", "4.5" kept whole)."""
    return _clauses(lower, _SENTENCE_BREAK)


#: (start, end, word, kind, label, ((relation, target unit index), ...)) per unit of a sentence
SentenceUnits = tuple[tuple[int, int, str, str, str, tuple[tuple[str, int], ...]], ...]


@memoize("extractor sentences", maxsize=131072)
def extract_sentence(sentence: tuple[str, ...]) -> SentenceUnits:
    """Units of one sentence (lower-cased tokens), with sentence-relative indices.

    Every rule works inside one sentence, so each distinct sentence is extracted once per process
    (cached: reports repeat sentences such as "No pneumothorax." a lot).
    """
    lower = list(sentence)
    units, owner = _units(lower)
    if not units:
        return ()
    for lo, hi in _clauses(lower):
        _assign_certainty(lower, units, owner, lo, hi)
        _or_uncertainty(lower, units, owner, lo, hi)
    for lo, hi in _clauses(lower):
        _relate_clause(lower, units, owner, lo, hi)
    for lo, hi in _clauses(lower, _SENTENCE_BREAK):
        _suggestive(lower, units, lo, hi)
    # modifiers share the certainty of the observation they modify
    for u in units:
        if u.kind in ("mod", "degree", "state"):
            target = next((t for r, t in u.relations if r == "modify"), None)
            if (target is not None and units[target].kind != "anat"
                    and units[target].label in (OBS_U, OBS_DA)):
                if u.label == OBS_DP:
                    u.label = units[target].label
    for u in units:
        if u.kind in ("anat", "desc", "pos"):
            u.label = ANAT
    # a degree word with nothing to grade is no entity ("not well evaluated")
    dropped = {k for k, u in enumerate(units) if u.kind == "degree" and not u.relations}
    if dropped:
        keep = [k for k in range(len(units)) if k not in dropped]
        new_index = {old: new for new, old in enumerate(keep)}
        kept = [units[k] for k in keep]
        for u in kept:
            u.relations = [(r, new_index[t]) for r, t in u.relations if t in new_index]
        units = kept
    return tuple((u.start, u.end, u.word, u.kind, u.label, tuple(u.relations)) for u in units)
