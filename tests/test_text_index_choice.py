"""Why Exchange indexes its own terms: SQLite's tokenizers miss two-character CJK words.

Run against the SQLite this machine has, so the reason stays true or the test says otherwise.
"""

from __future__ import annotations

import sqlite3

from exchange.records import textindex

TITLE = "先端技術の流出手口"
KOREAN = "투자 완료 전에 반도체 설계 자료의 공개를 요구한다"


def _fts(tokenizer: str, text: str, query: str) -> int:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(body, tokenize='{tokenizer}')")
    conn.execute("INSERT INTO t VALUES (?)", (text,))
    return int(conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (f'"{query}"',)).fetchone()[0])


def test_fts5_default_tokenizer_does_not_segment_japanese() -> None:
    assert _fts("unicode61", TITLE, "技術") == 0


def test_trigram_tokenizer_misses_two_character_words() -> None:
    assert _fts("trigram", TITLE, "技術") == 0
    assert _fts("trigram", TITLE, "技術の") == 1  # three characters: found


def test_bigram_terms_find_two_character_words() -> None:
    for text, word in ((TITLE, "技術"), (KOREAN, "투자"), (KOREAN, "반도체")):
        assert set(textindex.query_terms(word)) <= textindex.index_terms(text)
        assert textindex.matches(word, text)
