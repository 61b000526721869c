"""Tokenizers for the NLG metrics: a Python PTB tokenizer after pycocoevalcap's, and plain
whitespace.

pycocoevalcap's `COCOEvalCap.evaluate()` runs Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines
-lowerCase` (Java) and then drops the tokens in :data:`PTB_PUNCTUATION`. The scorers themselves
(`Bleu`, `Rouge`, `Cider`) only split on spaces, so the numbers depend on the tokens they are given.

Three tokenizers are selectable by name (:data:`TOKENIZERS`):

``"ptb"`` (default)
    A Python re-implementation of the PTB lexer rules that matter for report text: lower-casing;
    splitting off , ; : ? ! ( ) [ ] { } quotes, `...`, `--`, `%`, `$`, `*`; a sentence period split
    off unless the word is an abbreviation (single letters, dotted acronyms such as `p.m.`, titles
    such as `dr.`, US-state abbreviations such as `ct.`/`pa.` as the Java lexer does); clitics
    (`'s`, `n't`, `'re`, ...) split off; hyphenated, slashed and dotted words (`left-sided`,
    `ap/pa`, `limits.the`) and numbers (`1.5`, `10,000`) kept whole; a number glued to a unit is
    split (`2.5cm` -> `2.5 cm`) as the lexer does; brackets become `-lrb-`, `-rsb-`, ... Then the
    pycocoevalcap punctuation list is removed. That list is upper case (`-LRB-`), the lexer output
    is lower case, so `-lrb-`/`-rrb-` stay in the text: a pycocoevalcap quirk kept on purpose.
    Agreement with the Java tokenizer is measured in `tests/evaluation/test_tokenize.py`.
``"ptb-java"``
    The real Stanford tokenizer through `java` and the jar shipped with pycocoevalcap (exact, needs
    Java and the test extra installed; about a second of start-up per call).
``"whitespace"``
    `text.split()` re-joined by single spaces: no case change, punctuation kept.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PTB_PUNCTUATION", "TOKENIZERS", "TokenizerError", "ptb_tokenize", "tokenize"]

#: Tokens pycocoevalcap's `PTBTokenizer.tokenize` removes after the Java tokenizer ran.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
     ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


class TokenizerError(ValueError):
    """A tokenizer name is unknown or the tokenizer cannot run here."""


# Abbreviations the PTB lexer keeps with their period (titles, US states, months, etc.).
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof gen rep sen gov lt sgt capt col st mt jr sr rev hon messrs mme mlle
    ala ariz ark calif colo conn ct dak del fla ga ill ind kan kans ky la md mich minn miss mo
    mont neb nev okla ore pa penn tenn tex va vt wis wisc wyo
    jan feb mar apr jun jul aug sep sept oct nov dec
    inc co corp ltd cos bros plc vs etc al seq""".split()
)
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "fig", "figs", "art", "pp", "ca"})

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ll|'ve|'m|'d)$")
_SPECIAL_SPLITS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                   "wanna": ("wan", "na"), "gimme": ("gim", "me"), "lemme": ("lem", "me")}

# One token at the front of the rest of a whitespace chunk, tried in this order (first match wins).
_PIECES = [
    ("acronym", re.compile(r"(?:[A-Za-z]\.){2,}(?:[A-Za-z](?![A-Za-z0-9]))?")),
    ("number_word", re.compile(r"\d+(?:[.,]\d+)+(?:-[A-Za-z0-9]+)+")),
    ("number", re.compile(r"[-+]?(?:\d+(?:[.,:]\d+)+|[.,]\d+(?:[.,]\d+)*)(?![A-Za-z0-9])")),
    ("number_unit", re.compile(r"[-+]?\d+(?:[.,]\d+)+(?=[A-Za-z])")),
    ("dotted", re.compile(r"[A-Za-z]+(?:\.[A-Za-z]+)+")),
    ("word", re.compile(r"[A-Za-z0-9@#^]+(?:(?:[-/&]|'(?=[A-Za-z]))[A-Za-z0-9@#^]+)*")),
    ("punct", re.compile(r"\.\.\.|--|_+|[.,;:?!()\[\]{}\"'`$%*~|&+=<>/\\-]")),
]


def _split_word(word: str) -> list[str]:
    """Split one lexer word: clitics, special contractions, and an abbreviation's period."""
    lower = word.lower()
    if lower in _SPECIAL_SPLITS:
        return list(_SPECIAL_SPLITS[lower])
    match = _CLITIC.match(word)
    if match:
        return [match.group(1), match.group(2)]
    return [word]


def _next_piece(rest: str) -> tuple[str, str]:
    """The kind and text of the first token of `rest` (a character no rule names stands alone)."""
    for kind, pattern in _PIECES:
        match = pattern.match(rest)
        if match and match.end() > 0:
            return kind, match.group(0)
    return "other", rest[0]


def _lex_chunk(chunk: str, next_chunk: str, open_quote: bool) -> tuple[list[str], bool]:
    tokens: list[str] = []
    position = 0
    while position < len(chunk):
        rest = chunk[position:]
        kind, text = _next_piece(rest)
        after = rest[len(text):]
        if kind == "word":
            lower = text.lower()
            keeps_period = after.startswith(".") and not after.startswith("..") and (
                len(after) == 1 or not after[1].isalnum()
            ) and (
                len(text) == 1 and text.isalpha()
                or lower in _ABBREVIATIONS
                or (lower in _NUMBER_ABBREVIATIONS and next_chunk[:1].isdigit())
            )
            if keeps_period:
                text += "."
            pieces = _split_word(text)
            tokens.extend(pieces)
        elif kind in ("acronym", "number_word"):
            tokens.append(text)
        elif kind == "punct":
            if text == '"':
                tokens.append("''" if open_quote else "``")
                open_quote = not open_quote
            elif text == "'":
                opening = position == 0 or not chunk[position - 1].isalnum()
                tokens.append("`" if opening and after else "'")
            elif text in _BRACKETS:
                tokens.append(_BRACKETS[text])
            else:
                tokens.append(text)
        else:
            tokens.append(text)
        position += len(text)
    return tokens, open_quote


def _ptb_tokens(text: str) -> list[str]:
    chunks = html.unescape(text.replace("\n", " ")).split()
    tokens: list[str] = []
    open_quote = False
    for index, chunk in enumerate(chunks):
        following = chunks[index + 1] if index + 1 < len(chunks) else ""
        chunk_tokens, open_quote = _lex_chunk(chunk, following, open_quote)
        tokens.extend(chunk_tokens)
    return tokens


def ptb_tokenize(text: str) -> str:
    """PTB-style tokens of `text`, lower-cased, pycocoevalcap punctuation removed, space-joined.

    >>> ptb_tokenize("Heart size is normal. No effusion (see CT).")
    'heart size is normal no effusion -lrb- see ct -rrb-'
    """
    lowered = (tok.lower() for tok in _ptb_tokens(text))
    return " ".join(t for t in lowered if t not in PTB_PUNCTUATION)


def whitespace_tokenize(text: str) -> str:
    """Whitespace tokens of `text`, unchanged, joined by single spaces."""
    return " ".join(text.split())


def _java_jar() -> Path:
    try:
        import pycocoevalcap.tokenizer as java_tokenizer  # noqa: PLC0415 - optional test extra
    except ImportError as error:
        raise TokenizerError(
            "tokenizer 'ptb-java' needs the pycocoevalcap package (install radreport[test])"
        ) from error
    jar = Path(next(iter(java_tokenizer.__path__))) / "stanford-corenlp-3.4.1.jar"
    if not jar.exists() or shutil.which("java") is None:
        raise TokenizerError(
            "tokenizer 'ptb-java' needs `java` on PATH and pycocoevalcap's CoreNLP jar"
        )
    return jar


def ptb_java_tokenize_many(texts: Sequence[str]) -> list[str]:
    """Tokenize with the real Stanford PTBTokenizer exactly as pycocoevalcap does (needs Java)."""
    if not texts:
        return []
    jar = _java_jar()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "lines.txt"
        source.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
        completed = subprocess.run(
            ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
             "-lowerCase", str(source)],
            capture_output=True, check=True,
        )
    lines = completed.stdout.decode("utf-8").split("\n")
    return [
        " ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION)
        for line, _ in zip(lines, texts, strict=False)
    ] + [""] * max(0, len(texts) - len(lines))


def _many(single: Callable[[str], str]) -> Callable[[Sequence[str]], list[str]]:
    def run(texts: Sequence[str]) -> list[str]:
        cache: dict[str, str] = {}
        out = []
        for text in texts:
            tokens = cache.get(text)
            if tokens is None:
                tokens = cache[text] = single(text)
            out.append(tokens)
        return out

    return run


#: Tokenizer name -> function from a list of texts to a list of space-joined token strings.
TOKENIZERS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "ptb": _many(ptb_tokenize),
    "ptb-java": ptb_java_tokenize_many,
    "whitespace": _many(whitespace_tokenize),
}


def tokenize(texts: Sequence[str], tokenizer: str = "ptb") -> list[str]:
    """Tokenize every text with the named tokenizer (see :data:`TOKENIZERS`)."""
    try:
        run = TOKENIZERS[tokenizer]
    except KeyError:
        raise TokenizerError(
            f"unknown tokenizer {tokenizer!r}; choose one of {sorted(TOKENIZERS)}"
        ) from None
    return run(list(texts))
