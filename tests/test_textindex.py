"""Text index terms for Japanese, Korean and English: known answers and properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from exchange.errors import InvalidInput
from exchange.records.textindex import fold, index_terms, matches, query_terms, query_words


def fullwidth(text: str) -> str:
    """The full-width form Japanese and Korean input methods produce for ASCII."""
    return "".join(
        "\u3000" if ch == " " else chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text
    )


def found(query: str, text: str) -> bool:
    """What the store does: index lookup by every query term, then the post-filter."""
    return set(query_terms(query)) <= index_terms(text) and matches(query, text)


# --- fold -------------------------------------------------------------------


def test_fold_nfkc_casefold_and_spaces() -> None:
    assert fold("  " + fullwidth("AI") + "\u3000技術\t\nExport  ") == "ai 技術 export"
    assert fold("ﾄｳｷｮｳ") == "トウキョウ"
    assert fold("STRASSE Straße") == "strasse strasse"


# --- index terms ------------------------------------------------------------


def test_cjk_runs_become_bigrams_and_words_stay_whole() -> None:
    assert index_terms("AI技術") == {"ai", "技術"}
    assert index_terms("先端技術の輸出") == {"先端", "端技", "技術", "術の", "の輸", "輸出"}
    assert index_terms("Export-Control list") == {"export", "control", "list"}


def test_single_cjk_character_is_its_own_term() -> None:
    assert index_terms("株") == {"株"}
    assert index_terms("A社") == {"a", "社"}


def test_iteration_mark_and_prolonged_sound_mark_stay_in_the_run() -> None:
    assert index_terms("佐々木") == {"佐々", "々木"}
    assert index_terms("サーバー") == {"サー", "ーバ", "バー"}


def test_katakana_middle_dot_and_punctuation_separate() -> None:
    assert query_words("マイクロ・ソフト、技術。") == ["マイクロ", "ソフト", "技術"]


def test_long_words_are_truncated_the_same_way_in_index_and_query() -> None:
    word = "x" * 100
    assert index_terms(word) == {"x" * 64}
    assert query_terms(word) == ["x" * 64]
    assert found(word, f"see {word} here")


# --- queries ----------------------------------------------------------------


def test_japanese_title_found_by_two_character_word() -> None:
    title = "半導体製造技術の不正輸出に関する注意喚起"
    assert "技術" in index_terms(title)
    assert query_terms("技術") == ["技術"]
    assert found("技術", title)
    assert found("不正輸出", title)
    assert not found("技術者", title)


def test_korean_summary_found_by_words() -> None:
    summary = "사전 투자 단계에서 지식재산 공개를 요구"
    assert found("투자", summary)
    assert found("지식재산", summary)
    assert found("투자 공개", summary)
    assert not found("투자자", summary)


def test_bigrams_alone_over_match_and_matches_filters() -> None:
    text = "技術の移転と研究者、術者"
    # Every bigram of 技術者 is indexed ...
    assert set(query_terms("技術者")) <= index_terms(text)
    # ... but the word itself is not in the text.
    assert not matches("技術者", text)
    assert matches("技術", text)


def test_english_is_case_insensitive() -> None:
    text = "Export Controls on Dual-Use Items"
    assert found("export", text)
    assert found("DUAL use", text)
    assert found(fullwidth("export"), text)
    assert not found("imports", text)


def test_mixed_script_query() -> None:
    assert query_terms("AI技術") == ["ai", "技術"]
    assert found("AI技術", "生成AI技術の流出")


def test_halfwidth_katakana_query_finds_fullwidth_text() -> None:
    assert found("ｻｰﾊﾞｰ", "サーバー攻撃の報告")


def test_alnum_terms_are_whole_words() -> None:
    # The index holds whole words (stemmed), so a word fragment is not a term of it, and
    # the post-filter compares stems, not substrings.
    assert "exp" not in index_terms("export")
    assert not matches("exp", "export")


@pytest.mark.parametrize(("query", "text"), [
    ("microcontroller", "Front company buying microcontrollers"),
    ("microcontrollers", "one microcontroller"),
    ("FPGA", "FPGAs and ASICs"),
    ("FPGAs", "an FPGA"),
    ("ASIC", "FPGAs and ASICs"),
    ("investing", "investments were investigated"),
])
def test_english_word_forms_meet(query: str, text: str) -> None:
    assert found(query, text)


def test_stems_do_not_join_unrelated_words() -> None:
    assert not found("bus", "GPUs")  # a lower-case word ending in s is not an acronym's plural
    assert not found("technology", "technical")
    assert query_terms("FPGAs") == query_terms("FPGA") == ["fpga"]


def test_query_terms_deduplicated_in_order() -> None:
    assert query_terms("技術 AI 技術 ai 技術者") == ["技術", "ai", "術者"]
    assert query_words("技術 AI 技術 ai 技術者") == ["技術", "ai", "技術者"]


def test_single_cjk_character_query_is_rejected() -> None:
    with pytest.raises(InvalidInput) as info:
        query_terms("技 AI")
    assert info.value.field == "text"
    assert "at least two characters" in info.value.problem
    with pytest.raises(InvalidInput):
        query_terms("투")


@pytest.mark.parametrize("query", ["", "   ", "、。!?", "\u3000・"])
def test_query_without_terms_is_rejected(query: str) -> None:
    with pytest.raises(InvalidInput) as info:
        query_terms(query)
    assert info.value.field == "text"


def test_query_with_too_many_terms_is_rejected() -> None:
    assert len(query_terms(" ".join(f"w{i}" for i in range(64)))) == 64
    with pytest.raises(InvalidInput) as info:
        query_terms(" ".join(f"w{i}" for i in range(65)))
    assert "64" in info.value.problem


# --- properties -------------------------------------------------------------

_HIRAGANA = "あいうえおかがきくけこさしすせそただちつてとなにのはばぱまみむめもやゆよらりるれろわをんっゃー"
_KATAKANA = "アイウエオカガキクケコサシスセソタダチツテトナニノハバパマミムメモヤユヨラリルレロワヲンッャー"
_KANJI = "技術者輸出管理先端半導体製造研究開発投資知識財産公開要求事業会社日本韓国米英佐々木"
_HANGUL = "사전투자단계에서지식재산공개를요구기술수출관리한국미국일본영국"
_HALFWIDTH_KANA = "ｱｲｳｶｷｸｻｼｽﾀﾁﾂｰ"
_ASCII = "abcdefgXYZ0123456789"
_FULLWIDTH_ASCII = fullwidth("ABCabc012")
_SEPARATORS = " \u3000、。・,.!?-()「」\t"

_CJK = set(_HIRAGANA + _KATAKANA + _KANJI + _HANGUL + fold(_HALFWIDTH_KANA))

_TEXT = st.text(
    st.sampled_from(
        _HIRAGANA + _KATAKANA + _KANJI + _HANGUL + _HALFWIDTH_KANA + _ASCII + _FULLWIDTH_ASCII + _SEPARATORS
    ),
    max_size=80,
)


def runs_of(folded: str) -> list[tuple[str, bool]]:
    """Runs of folded test text, by an independent classifier for the test alphabets."""
    runs: list[tuple[str, bool]] = []
    current, current_cjk = "", False
    for ch in folded:
        kind = True if ch in _CJK else False if ch.isascii() and ch.isalnum() else None
        if current and kind != current_cjk:
            runs.append((current, current_cjk))
            current = ""
        if kind is not None:
            current, current_cjk = current + ch, kind
    if current:
        runs.append((current, current_cjk))
    return runs


@given(_TEXT, st.data())
def test_any_word_of_a_text_finds_it(text: str, data: st.DataObject) -> None:
    runs = runs_of(fold(text))
    assume(runs)
    run, is_cjk = data.draw(st.sampled_from(runs), label="run")
    if is_cjk:
        # Any two or more consecutive CJK characters: words are not delimited.
        assume(len(run) >= 2)
        start = data.draw(st.integers(0, len(run) - 2), label="start")
        end = data.draw(st.integers(start + 2, len(run)), label="end")
        word = run[start:end]
    else:
        # Alphanumeric words are indexed whole.
        word = run
    try:
        terms = query_terms(word)
    except InvalidInput:
        assume(False)
        return
    assert set(terms) <= index_terms(text)
    assert matches(word, text)


@given(_TEXT)
def test_a_text_finds_itself(text: str) -> None:
    try:
        terms = query_terms(text)
    except InvalidInput:
        assume(False)
        return
    assert set(terms) <= index_terms(text)
    assert matches(text, text)


@given(st.one_of(st.text(), _TEXT))
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@given(st.one_of(st.text(), _TEXT))
def test_terms_are_short_and_without_spaces(text: str) -> None:
    for term in index_terms(text):
        assert 1 <= len(term) <= 64
        assert not any(ch.isspace() for ch in term)
    assert all(" " not in word and word for word in query_words(text))


@given(_TEXT, _TEXT)
def test_cjk_matches_imply_indexed_bigrams(query: str, text: str) -> None:
    # Whenever the post-filter accepts a CJK query word, the index already
    # returned the text: a CJK word inside the text lies inside one CJK run.
    cjk_words = [run for run, is_cjk in runs_of(fold(query)) if is_cjk and len(run) >= 2]
    for word in cjk_words:
        if matches(word, text):
            assert set(query_terms(word)) <= index_terms(text)


# --- the fast index_terms is the definition ---------------------------------


_MIXED = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from("技術半導体のをーヽ々〆ㄱ가힣ｱｲ・、。 -_x9ABß\u3000\U00020000"),
    ),
    max_size=80,
)


@given(_MIXED)
def test_index_terms_equals_the_run_by_run_definition(text: str) -> None:
    from exchange.records.textindex import _index_terms_by_runs

    assert index_terms(text) == _index_terms_by_runs(text)
    long = text + " " + "y" * 70 + "技" + "z" * 65
    assert index_terms(long) == _index_terms_by_runs(long)
