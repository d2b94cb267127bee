"""Search terms for titles and summaries in Japanese, Korean and English.

SQLite FTS5's default tokenizer does not segment CJK text, and its trigram
tokenizer cannot find two-character words (技術, 투자), which are most of the
vocabulary. So the store indexes the terms computed here instead:

* CJK text (Han, Hiragana, Katakana, Hangul) has no spaces between words, so
  every run of it is indexed as overlapping character bigrams. Any query word
  of two or more characters is then a set of bigrams that all occur in a
  matching text.
* Other letters and digits (English, romanised names, part numbers) are
  indexed as whole words.

Bigram AND-matching over-matches (技術者 matches a text with 技術 and 術者
apart), so the store confirms each candidate with ``matches``, a substring test
on the folded text.

Pure functions: no I/O, no database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

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


def _bigrams(run: str) -> list[str]:
    # A lone CJK character is its own term so one-character texts (e.g. a
    # title "株") are still indexed; queries never produce such terms.
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


def _terms_of_run(run: str, is_cjk: bool) -> list[str]:
    # Truncation here, used by both index and query, keeps the two consistent.
    return _bigrams(run) if is_cjk else [run[:MAX_TERM_CHARS]]


# The same terms as ``_runs`` + ``_terms_of_run`` (``_index_terms_by_runs``), with the
# scanning done in C: this is on the path of every record stored, received ones included.
_WORD_RE = re.compile(f"[^\\W_{_CJK_CLASS}]+")  # a maximal run of non-CJK letters/digits
_CJK_RUN_RE = re.compile(f"[{_CJK_CLASS}]+")


def index_terms(text: str) -> set[str]:
    """All terms to index for ``text``."""
    folded = fold(text)
    terms = set(_WORD_RE.findall(folded))
    if any(len(word) > MAX_TERM_CHARS for word in terms):
        terms = {word[:MAX_TERM_CHARS] for word in terms}
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
    for run, is_cjk in _runs(fold(text)):
        terms.update(_terms_of_run(run, is_cjk))
    return terms


def query_terms(query: str) -> list[str]:
    """Terms every text matching ``query`` contains, deduplicated, in order.

    Raises ``InvalidInput("text", ...)`` for a query with no terms, a
    one-character CJK word (its term would find only texts where that
    character stands alone), or more than 64 terms.
    """
    terms: dict[str, None] = {}
    for run, is_cjk in _runs(fold(query)):
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
    return list(dict.fromkeys(run for run, _ in _runs(fold(query))))


def matches(query: str, text: str) -> bool:
    """True when every word of ``query`` occurs in ``text`` (after folding both).

    A query with no words matches everything; ``query_terms`` refuses such a
    query before the store gets this far.
    """
    folded = fold(text)
    return all(word in folded for word in query_words(query))
