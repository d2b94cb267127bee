"""Search terms for titles and summaries in Japanese, Korean and English.

SQLite FTS5's default tokenizer does not segment CJK text, and its trigram
tokenizer cannot find two-character words (技術, 투자), which are most of the
vocabulary. So the store indexes the terms computed here instead:

* CJK text (Han, Hiragana, Katakana, Hangul) has no spaces between words, so
  every run of it is indexed as overlapping character bigrams. Any query word
  of two or more characters is then a set of bigrams that all occur in a
  matching text.
* Other letters and digits (English, romanised names, part numbers) are
  indexed as whole words, each reduced to its English Snowball stem (Porter2) at
  indexing and at query alike, so word forms meet: "microcontrollers" and
  "microcontroller" are both ``microcontrol``, "FPGAs" and "FPGA" both ``fpga``.
  A stem is a term, never shown; a part number or a name stems to itself or to
  the same stem at both ends. Porter2 keeps the "s" after a vowel (FPGAs, GPUs),
  so an acronym's plural as written (capitals, then a lower-case s) is read as the
  acronym first (``_singular_acronyms``).

Bigram AND-matching over-matches (技術者 matches a text with 技術 and 術者
apart), so the store confirms each candidate with ``matches``: a substring test
on the folded text for CJK words, the stems of the text's words for the others.
Japanese and Korean get no stemmer: their bigrams already find an inflected form
through its stem's characters (投資 in 投資した, 투자 in 투자했다).

Pure functions: no I/O, no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache

import snowballstemmer

from exchange.errors import InvalidInput

__all__ = ["fold", "index_terms", "matches", "query_terms", "query_words"]

MAX_TERM_CHARS = 64
MAX_QUERY_TERMS = 64

# Code point ranges treated as CJK: segmented into bigrams, never into words.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x3005, 0x3007),  # 々 〆 and ideographic zero: parts of Japanese words
    (0x303B, 0x303B),  # 〻 vertical ideographic iteration mark
    (0x3041, 0x309F),  # Hiragana (incl. ゝ ゞ iteration marks)
    (0x30A1, 0x30FA),  # Katakana letters
    (0x30FC, 0x30FF),  # ー prolonged sound mark, ヽ ヾ iteration marks, ヿ
    (0x3131, 0x318E),  # Hangul Compatibility Jamo (NFKC maps most to U+11xx)
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7AF),  # Hangul Syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs (the few NFKC keeps)
    (0x20000, 0x323AF),  # CJK Unified Ideographs Extensions B-H, compatibility supplement
)
# U+30FB KATAKANA MIDDLE DOT (・) is left out on purpose: it separates words
# (マイクロ・ソフト), like punctuation.


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _nfkc_casefold(text: str) -> str:
    """NFKC then casefold, repeated to a fixed point.

    Case folding can produce text that is no longer NFKC, so one pass of each
    is not always idempotent; ``fold`` must be, because the store folds text
    that may already be folded. ASCII text (NFKC leaves it alone, casefold is
    lower) takes a shortcut: this runs for every record stored.
    """
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", text)
    for _ in range(4):
        folded = text.casefold()
        if folded == text:
            break
        folded = unicodedata.normalize("NFKC", folded)
        if folded == text:
            break
        text = folded
    return text


def fold(text: str) -> str:
    """Canonical form of text for indexing and for substring matching."""
    return " ".join(_nfkc_casefold(text).split())


_CJK_CLASS = "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _CJK_RANGES)
# A run of CJK characters, or a run of other letters/digits ([^\W_] is str.isalnum).
_RUN_RE = re.compile(f"([{_CJK_CLASS}]+)|((?:(?![{_CJK_CLASS}])[^\\W_])+)")


def _runs(folded: str) -> Iterator[tuple[str, bool]]:
    """Maximal runs of folded text as ``(run, is_cjk)``.

    A run is all CJK or all other letters/digits; anything else (spaces,
    punctuation, symbols) ends a run, and so does a change between the two
    kinds, so "ai技術" gives "ai" and "技術". (One regular expression: this is
    on the path of every record stored.)
    """
    for match in _RUN_RE.finditer(folded):
        cjk = match.group(1)
        yield (cjk, True) if cjk else (match.group(2), False)


_STEMMER = snowballstemmer.stemmer("english")
# An acronym's plural as English writes it: two or more capitals (digits allowed inside),
# then a lower-case "s", as a whole word: FPGAs, GPUs, ASICs, PCs. Read before folding,
# which loses the case that tells "GPUs" from "bus".
_ACRONYM_PLURAL_RE = re.compile(r"(?<![^\W_])([A-Z][A-Z0-9]*[A-Z])s(?![^\W_])")


def _singular_acronyms(text: str) -> str:
    return _ACRONYM_PLURAL_RE.sub(r"\1", text) if "s" in text else text


@lru_cache(maxsize=65536)
def _word_term(word: str) -> str:
    """The index term of a folded non-CJK word: its English stem, at most 64 characters.

    Cached: a vocabulary repeats across records, and this is on the path of every
    record stored. Truncation after stemming, in the one place, keeps index and query
    consistent."""
    return (_STEMMER.stemWord(word) or word)[:MAX_TERM_CHARS]


def _bigrams(run: str) -> list[str]:
    # A lone CJK character is its own term so one-character texts (e.g. a
    # title "株") are still indexed; queries never produce such terms.
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _terms_of_run(run: str, is_cjk: bool) -> list[str]:
    # Truncation here, used by both index and query, keeps the two consistent.
    return _bigrams(run) if is_cjk else [_word_term(run)]


# The same terms as ``_runs`` + ``_terms_of_run`` (``_index_terms_by_runs``), with the
# scanning done in C: this is on the path of every record stored, received ones included.
_WORD_RE = re.compile(f"[^\\W_{_CJK_CLASS}]+")  # a maximal run of non-CJK letters/digits
_CJK_RUN_RE = re.compile(f"[{_CJK_CLASS}]+")


def index_terms(text: str) -> set[str]:
    """All terms to index for ``text``."""
    folded = fold(_singular_acronyms(text))
    terms = {_word_term(word) for word in set(_WORD_RE.findall(folded))}
    if not folded.isascii():
        for run in _CJK_RUN_RE.findall(folded):
            if len(run) == 1:
                terms.add(run)
            else:
                terms.update([run[i : i + 2] for i in range(len(run) - 1)])
    return terms


def _index_terms_by_runs(text: str) -> set[str]:
    """``index_terms`` as the definition reads, run by run (tests compare the two)."""
    terms: set[str] = set()
    for run, is_cjk in _runs(fold(_singular_acronyms(text))):
        terms.update(_terms_of_run(run, is_cjk))
    return terms


def query_terms(query: str) -> list[str]:
    """Terms every text matching ``query`` contains, deduplicated, in order.

    Raises ``InvalidInput("text", ...)`` for a query with no terms, a
    one-character CJK word (its term would find only texts where that
    character stands alone), or more than 64 terms.
    """
    terms: dict[str, None] = {}
    for run, is_cjk in _runs(fold(_singular_acronyms(query))):
        if is_cjk and len(run) == 1:
            raise InvalidInput(
                "text", "a Japanese, Chinese or Korean search word needs at least two characters"
            )
        terms.update(dict.fromkeys(_terms_of_run(run, is_cjk)))
    if not terms:
        raise InvalidInput("text", "search text has no letters or digits to search for")
    if len(terms) > MAX_QUERY_TERMS:
        raise InvalidInput("text", f"search text is too long; it may have at most {MAX_QUERY_TERMS} terms")
    return list(terms)


def query_words(query: str) -> list[str]:
    """The folded query's runs (whole words, not bigrams), deduplicated, in order."""
    return list(dict.fromkeys(run for run, _ in _runs(fold(_singular_acronyms(query)))))


def matches(query: str, text: str) -> bool:
    """True when every word of ``query`` occurs in ``text`` (after folding both): a CJK
    word as a substring, any other word as a word of the same stem.

    A query with no words matches everything; ``query_terms`` refuses such a
    query before the store gets this far.
    """
    folded = fold(_singular_acronyms(text))
    stems: set[str] | None = None
    for run, is_cjk in dict.fromkeys(_runs(fold(_singular_acronyms(query)))):
        if is_cjk:
            if run not in folded:
                return False
            continue
        if stems is None:
            stems = {_word_term(word) for word in _WORD_RE.findall(folded)}
        if _word_term(run) not in stems:
            return False
    return True
