"""Translations of title and summary: signed with the record, validated, released with it,
searchable on every node that holds it, shown in the language a liaison officer asks for."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.main import main
from exchange.errors import VerificationError
from exchange.node.server import Node
from exchange.records.envelope import open_record
from exchange.records.translations import translation_for, well_formed
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft

KOREAN_TITLE = "반도체 장비 우회 수출 중개인"
KOREAN_SUMMARY = "제3국 중개인이 반도체 장비를 투자 형태로 우회 수출한다."
ENGLISH = records_pb2.Translation(
    language="en", title="Broker diverting semiconductor equipment",
    summary="A third-country broker diverts semiconductor equipment through microcontrollers orders.",
)
JAPANESE = records_pb2.Translation(language="ja", title="半導体装置の迂回輸出仲介者", summary="第三国の仲介者。")


def _korean_draft(*translations: records_pb2.Translation) -> records_pb2.RecordDraft:
    marking = records_pb2.Marking(classification="RESTRICTED", releasable_to=["JPN-NPA", "USA-DTSF"], tlp="GREEN")
    return draft(title=KOREAN_TITLE, summary=KOREAN_SUMMARY, marking=marking, translations=list(translations))


@pytest.fixture
def pair(federation: Federation, tmp_path: Path) -> tuple[Node, Node, records_pb2.RecordRef]:
    """KOR-KNPA's record with English and Japanese translations, pulled by USA-DTSF."""
    kor = federation.start_node("KOR-KNPA", tmp_path / "kor")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    analyst = UserClient.of(federation.user_channel(kor, "KOR-KNPA", "kimjh"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(draft=_korean_draft(ENGLISH, JAPANESE)),
                                        timeout=10).receipt
    report = usa.puller.pull("KOR-KNPA")
    assert report.error == "" and report.applied.stored == 1
    return kor, usa, receipt.ref


def _search(federation: Federation, node: Node, agency: str, handle: str, text: str) -> list[str]:
    client = UserClient.of(federation.user_channel(node, agency, handle))
    found = client.query.Search(query_pb2.SearchRequest(text=text), timeout=10)
    return [records_pb2.Record.FromString(h.envelope.payload).ref.record_id for h in found.records]


def test_a_translation_is_signed_with_the_record(
    federation: Federation, pair: tuple[Node, Node, records_pb2.RecordRef]
) -> None:
    _, usa, ref = pair
    client = UserClient.of(federation.user_channel(usa, "USA-DTSF", "rchen"))
    held = client.query.Get(query_pb2.GetRequest(ref=ref), timeout=10).record
    record = open_record(held.envelope, federation.manifest)  # verifies over the received bytes
    assert [(t.language, t.title) for t in record.content.translations] == [
        ("en", ENGLISH.title), ("ja", JAPANESE.title)]
    # One changed byte inside the English translation: the signature no longer holds.
    payload = bytearray(held.envelope.payload)
    at = bytes(payload).index(b"diverting")
    payload[at] ^= 0x20
    tampered = records_pb2.Envelope()
    tampered.CopyFrom(held.envelope)
    tampered.payload = bytes(payload)
    assert records_pb2.Record.FromString(tampered.payload).content.translations[0].title.startswith("Broker Diverting")
    with pytest.raises(VerificationError):
        open_record(tampered, federation.manifest)


def test_translations_are_searchable_on_every_node_that_holds_the_record(
    federation: Federation, pair: tuple[Node, Node, records_pb2.RecordRef]
) -> None:
    kor, usa, ref = pair
    rid = ref.record_id
    # English word forms (stems) in the translation; the Korean original; the Japanese translation.
    assert _search(federation, usa, "USA-DTSF", "rchen", "microcontroller") == [rid]
    assert _search(federation, usa, "USA-DTSF", "rchen", "diverts broker") == [rid]
    assert _search(federation, usa, "USA-DTSF", "rchen", "투자") == [rid]  # a 2-character Korean word
    assert _search(federation, usa, "USA-DTSF", "rchen", "迂回") == [rid]  # a 2-character Japanese word
    assert _search(federation, kor, "KOR-KNPA", "parksy", "semiconductor equipment") == [rid]
    assert _search(federation, usa, "USA-DTSF", "rchen", "equipment smuggling") == []  # all words must occur


def test_the_liaison_officer_reads_the_translation_beside_the_original(
    federation: Federation, pair: tuple[Node, Node, records_pb2.RecordRef], capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, _, ref = pair
    profile_path = federation.pki_dir / "USA-DTSF" / "users" / "rchen.profile.toml"
    profile = ["--profile", str(profile_path)]
    name = f"{ref.originator}/{ref.record_id}"
    assert main(["get", name, "--lang", "en", *profile]) == 0
    out = capsys.readouterr().out
    assert f"Title [en]:    {ENGLISH.title}" in out and f"Title:         {KOREAN_TITLE}" in out
    assert "Summary [en]:" in out and "Summary (original):" in out and KOREAN_SUMMARY in out
    assert main(["get", name, "--lang", "fr", *profile]) == 0  # none in French: the original, said so
    out = capsys.readouterr().out
    assert "none into fr" in out and f"Title:         {KOREAN_TITLE}" in out and "Title [" not in out
    # The profile's language is the default; en-US finds the "en" translation.
    with_language = tmp_path / "rchen.profile.toml"
    text = profile_path.read_text(encoding="utf-8")
    base = profile_path.parent
    text = text.replace('cert = "', f'cert = "{base}/').replace('key = "', f'key = "{base}/')
    text = text.replace('ca = "', f'ca = "{base}/')
    with_language.write_text('language = "en-US"\n' + text, encoding="utf-8")
    assert main(["query", "--text", "투자", "--json", "--profile", str(with_language)]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["translation"]["title"] == ENGLISH.title and shown["content"]["title"] == KOREAN_TITLE
    assert main(["query", "--text", "투자", "--profile", str(with_language)]) == 0
    assert f"[en] {ENGLISH.title}"[:30] in capsys.readouterr().out
    assert main(["get", name, "--lang", "en_US", *profile]) == 2
    assert "BCP 47" in capsys.readouterr().err


@pytest.mark.parametrize(("translations", "field", "problem"), [
    ([records_pb2.Translation(language="english", title="x")], "draft.translations[0].language", "BCP 47"),
    ([records_pb2.Translation(language="en_US", title="x")], "draft.translations[0].language", "BCP 47"),
    ([records_pb2.Translation(title="x")], "draft.translations[0].language", "missing"),
    ([records_pb2.Translation(language="en", title="a"), records_pb2.Translation(language="EN", title="b")],
     "draft.translations[1].language", "second translation"),
    ([records_pb2.Translation(language="en")], "draft.translations[0]", "neither"),
    ([records_pb2.Translation(language="en", title="x" * 301)], "draft.translations[0].title", "over the limit"),
    ([records_pb2.Translation(language="en", title="bad\x07bell")], "draft.translations[0].title", "control"),
    ([records_pb2.Translation(language=f"x-l{i}", title="t") for i in range(17)], "draft.translations",
     "over the limit"),
])
def test_a_bad_translation_is_refused_naming_it(
    federation: Federation, tmp_path: Path, translations: list[records_pb2.Translation], field: str, problem: str
) -> None:
    kor = federation.start_node("KOR-KNPA", tmp_path / "kor")
    analyst = UserClient.of(federation.user_channel(kor, "KOR-KNPA", "kimjh"))
    with pytest.raises(grpc.RpcError) as refused:
        analyst.submission.Submit(submission_pb2.SubmitRequest(draft=_korean_draft(*translations)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith(field + ":") and problem in details
    assert _search(federation, kor, "KOR-KNPA", "parksy", "반도체") == []  # nothing stored


@pytest.mark.parametrize("tag", ["en", "ja", "ko", "en-GB", "zh-Hant-TW", "sr-Latn-RS", "es-419", "de-CH-1996",
                                 "x-private", "en-US-x-twain", "KO-kr"])
def test_well_formed_language_tags(tag: str) -> None:
    assert well_formed(tag)


@pytest.mark.parametrize("tag", ["", "e", "english", "en_US", "en-", "-en", "en--GB", "123", "en-GB-" + "x" * 40])
def test_malformed_language_tags(tag: str) -> None:
    assert not well_formed(tag)


@given(st.lists(st.sampled_from(["en", "en-GB", "ja", "ko", "fr"]), unique_by=str.lower, max_size=4),
       st.sampled_from(["en", "EN", "en-US", "en-GB", "ja", "ko-KR", "fr", "de"]))
def test_a_translation_found_is_one_of_the_language_asked_for(tags: list[str], asked: str) -> None:
    content = records_pb2.RecordDraft(translations=[records_pb2.Translation(language=t, title=t) for t in tags])
    found = translation_for(content, asked)
    same = [t for t in tags if t.split("-")[0].lower() == asked.split("-")[0].lower()]
    assert (found is None) == (not same)
    if found is not None:
        exact = [t for t in tags if t.lower() == asked.lower()]
        assert found.language == (exact[0] if exact else same[0])
