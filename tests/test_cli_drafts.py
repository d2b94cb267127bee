"""The command line's pure parts: JSON drafts, classification banners, table widths."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.drafts import draft_from_json, read_draft
from exchange.errors import InvalidInput
from exchange.render import (
    NO_RECORDS,
    Shown,
    banner,
    display_width,
    fit,
    record_lines,
    table_lines,
    truncate,
)
from exchange.v1 import records_pb2

GOOD: dict[str, Any] = {
    "kind": "technique",
    "title": "SNS recruitment of materials engineers",
    "summary": "先端素材の技術者をSNSで勧誘する手口",
    "countries": ["CHN"],
    "sectors": ["advanced-materials"],
    "observables": [
        {"type": "platform_handle", "value": "@tanaka_recruit"},
        {"type": "email", "value": "hr@example.com"},
        {"type": "domain", "value": "example.com"},
    ],
    "related": [{"originator": "JPN-NPA", "record_id": "0b6f0d5e-3f1c-4a8e-9a57-1f0e2d3c4b5a"}],
    "confidence": 70,
    "validity": {"not_before": "2025-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00+09:00"},
    "tags": ["sns"],
    "reference": "CASE-2025-001",
    "marking": {
        "classification": "CONFIDENTIAL",
        "releasable_to": ["USA-DTSF", "KOR-KNPA"],
        "tlp": "AMBER",
        "caveats": [],
    },
}


def bad(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


# --- drafts ----------------------------------------------------------------------------------


def test_good_draft_converts_every_field() -> None:
    draft, reference = draft_from_json(GOOD)
    assert reference == "CASE-2025-001"
    assert draft.kind == records_pb2.KIND_TECHNIQUE
    assert draft.summary == GOOD["summary"]
    assert list(draft.countries) == ["CHN"]
    assert list(draft.sectors) == ["advanced-materials"]
    assert (draft.observables[0].type, draft.observables[0].value) == ("platform_handle", "@tanaka_recruit")
    assert draft.related[0].originator == "JPN-NPA"
    assert draft.confidence == 70
    assert draft.validity.not_before.ToJsonString() == "2025-01-01T00:00:00Z"
    assert draft.validity.not_after.ToJsonString() == "2025-12-31T15:00:00Z"  # converted to UTC
    assert list(draft.tags) == ["sns"]
    assert draft.marking.classification == "CONFIDENTIAL"
    assert list(draft.marking.releasable_to) == ["USA-DTSF", "KOR-KNPA"]
    assert draft.marking.tlp == "AMBER"


def test_minimal_draft_needs_kind_title_and_marking_only() -> None:
    draft, reference = draft_from_json(
        {"kind": "actor", "title": "x", "marking": {"classification": "UNCLASSIFIED", "tlp": "CLEAR"}}
    )
    assert reference == ""
    assert draft.kind == records_pb2.KIND_ACTOR
    assert not draft.HasField("validity")
    assert draft.HasField("marking")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["not", "an", "object"], "expected a JSON object at the top level"),
        (bad(marking=None), "marking: missing"),
        (bad(kind="person"), "kind: expected one of actor, technique, observable_set"),
        (bad(kind=None), "kind: missing"),
        (bad(title=7), "title: expected a string"),
        (bad(colour="red"), "colour: unknown field"),
        (bad(countries="CHN"), "countries: expected a list"),
        (bad(sectors=["ai", 3]), "sectors[1]: expected a string"),
        (bad(confidence=True), "confidence: expected a non-negative whole number"),
        (bad(confidence=-1), "confidence: expected a non-negative whole number"),
        (bad(confidence=70.5), "confidence: expected a non-negative whole number"),
        (bad(related=[{"originator": "JPN-NPA"}]), "related[0].record_id: missing"),
        (bad(validity={"not_before": "yesterday"}), "validity.not_before: expected an ISO 8601 time"),
        (bad(validity={"not_after": "2026-01-01T00:00:00"}), "validity.not_after: time without a timezone"),
        (bad(validity={"from": "2026-01-01T00:00:00Z"}), "validity.from: unknown field"),
        (bad(marking={"classification": "SECRET"}), "marking.tlp: missing"),
        (bad(marking={"classification": "SECRET", "tlp": "RED", "releasable_to": "USA-DTSF"}),
         "marking.releasable_to: expected a list"),
        (bad(marking={"classification": "SECRET", "tlp": "RED", "rel": []}), "marking.rel: unknown field"),
        (bad(reference=12), "reference: expected a string"),
    ],
)
def test_bad_drafts_name_the_json_path(data: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        draft_from_json(data)
    assert str(caught.value).startswith(message)


def test_bad_observable_type_names_its_index() -> None:
    observables = [*GOOD["observables"][:2], {"type": 5, "value": "x"}]
    with pytest.raises(InvalidInput, match=r"^observables\[2\]\.type: expected a string$"):
        draft_from_json(bad(observables=observables))


def test_bad_json_file_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "draft.json"
    path.write_text('{\n  "kind": "actor",\n  "title": oops\n}\n', encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        read_draft(str(path))
    assert str(caught.value).startswith(f"{path}: invalid JSON at line 3 column 12")
    assert "\n" not in str(caught.value)


def test_draft_file_errors_carry_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(bad(marking=None)), encoding="utf-8")
    with pytest.raises(InvalidInput, match=r": marking: missing$") as caught:
        read_draft(str(path))
    assert str(caught.value).startswith(str(path))


def test_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "draft.json"
    text = json.dumps(GOOD)[:-1] + ', "marking": {"classification": "UNCLASSIFIED", "tlp": "CLEAR"}}'
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput, match="duplicate key 'marking'"):
        read_draft(str(path))


def test_cli_reports_a_bad_draft_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "draft.json"
    path.write_text(json.dumps(bad(kind="person")), encoding="utf-8")
    # The draft is read before any profile or node is needed.
    status = main(["submit", str(path), "--node", "127.0.0.1:1", "--agency", "JPN-NPA"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"exchange: {path}: kind: expected one of actor, technique, observable_set\n"


def test_cli_reports_a_missing_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["submit", str(tmp_path / "nope.json")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("exchange: ") and "nope.json" in err


def test_cli_without_a_profile_says_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EXCHANGE_PROFILE", raising=False)
    status = main(["get", "JPN-NPA/0b6f0d5e-3f1c-4a8e-9a57-1f0e2d3c4b5a"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("exchange: no profile: pass --profile FILE or set EXCHANGE_PROFILE")


# --- banners ---------------------------------------------------------------------------------


def record(
    originator: str,
    classification: str,
    releasable_to: list[str],
    tlp: str,
    caveats: list[str] | None = None,
    title: str = "t",
) -> records_pb2.Record:
    marking = records_pb2.Marking(
        classification=classification, releasable_to=releasable_to, tlp=tlp, caveats=caveats or []
    )
    return records_pb2.Record(
        ref=records_pb2.RecordRef(originator=originator, record_id="0b6f0d5e-3f1c-4a8e-9a57-1f0e2d3c4b5a"),
        version=1,
        status=records_pb2.STATUS_ACTIVE,
        content=records_pb2.RecordDraft(kind=records_pb2.KIND_ACTOR, title=title, marking=marking),
    )


def test_banner_of_one_record_includes_its_originator() -> None:
    one = record("JPN-NPA", "CONFIDENTIAL", ["USA-DTSF"], "AMBER")
    assert banner([one]) == "==== CONFIDENTIAL // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ===="


def test_banner_of_several_records_is_the_most_restrictive_combination() -> None:
    records = [
        record("JPN-NPA", "CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA", "GBR-NPSA"], "GREEN"),
        record("USA-DTSF", "SECRET", ["JPN-NPA", "KOR-KNPA"], "AMBER"),
        record("KOR-KNPA", "RESTRICTED", ["JPN-NPA", "USA-DTSF"], "AMBER+STRICT", ["ORCON"]),
        record("JPN-NPA", "UNCLASSIFIED", ["USA-DTSF", "KOR-KNPA"], "CLEAR"),
    ]
    # Audiences: {JPN,USA,KOR,GBR} ∩ {USA,JPN,KOR} ∩ {KOR,JPN,USA} ∩ {JPN,USA,KOR} = {JPN,KOR,USA}.
    assert banner(records) == (
        "==== SECRET // ORCON // REL TO JPN-NPA, KOR-KNPA, USA-DTSF // TLP:AMBER+STRICT ===="
    )


def test_banner_takes_red_over_amber_strict_and_unions_caveats() -> None:
    records = [
        record("JPN-NPA", "TOP SECRET", [], "RED", ["ORCON"]),
        record("JPN-NPA", "SECRET", ["USA-DTSF"], "AMBER+STRICT"),
    ]
    assert banner(records) == "==== TOP SECRET // ORCON // REL TO JPN-NPA // TLP:RED ===="


def test_an_unknown_marking_value_never_lowers_the_banner() -> None:
    records = [record("JPN-NPA", "SECRET", [], "RED"), record("JPN-NPA", "COSMIC", [], "PURPLE")]
    assert banner(records) == "==== COSMIC // REL TO JPN-NPA // TLP:PURPLE ===="


def test_no_records_has_no_banner() -> None:
    assert banner([]) == NO_RECORDS


# --- widths ----------------------------------------------------------------------------------


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("abc") == 3
    assert display_width("技術流出") == 8
    assert display_width("\uff21\uff22") == 4  # full-width Latin AB
    assert display_width("ｶﾀｶﾅ") == 4  # half-width katakana
    assert display_width("경찰청") == 6


def test_truncate_never_splits_a_wide_character_past_the_width() -> None:
    cut = truncate("経済安全保障に関する技術流出", 9)
    assert display_width(cut) <= 9
    assert cut == "経済安..."
    assert truncate("short", 9) == "short"


def test_fit_pads_japanese_to_the_same_columns_as_latin() -> None:
    assert display_width(fit("技術", 10)) == 10
    assert fit("技術", 10) == "技術      "
    assert display_width(fit("経済安全保障に関する技術流出", 10)) == 10


def test_table_columns_line_up_with_mixed_scripts() -> None:
    rows = [
        Shown(record("JPN-NPA", "SECRET", [], "RED", title="技術者の勧誘"), "JPN-NPA", False),
        Shown(record("USA-DTSF", "SECRET", ["JPN-NPA"], "AMBER", title="Front company"), "USA-DTSF", True),
        Shown(record("KOR-KNPA", "RESTRICTED", [], "GREEN", title="반도체 기술 유출"), "KOR-KNPA", False),
    ]
    lines = table_lines(rows)
    header, body = lines[0], lines[1:4]
    issued_column = display_width(header[: header.index("ISSUED")])
    for line in body:
        # The issued date is the last column: it starts at the same terminal column on every line.
        assert display_width(line) - len("-") == issued_column
    assert lines[-1].startswith("! equivocated")


def test_record_lines_neutralise_terminal_escapes() -> None:
    shown = Shown(record("JPN-NPA", "SECRET", [], "RED", title="evil\x1b[2Jtitle"), "USA-DTSF", True)
    text = "\n".join(record_lines(shown))
    assert "\x1b" not in text
    assert "Received from: USA-DTSF" in text
    assert "equivocated" in text


# --- profiles --------------------------------------------------------------------------------


def test_parsing_uses_the_client_defaults() -> None:
    from exchange import client
    from exchange.cli import options

    assert options.DEFAULT_TIMEOUT == client.DEFAULT_TIMEOUT
    assert options.PROFILE_ENV == client.PROFILE_ENV


def test_profile_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    from exchange.client import load_profile
    from exchange.pki import write_profile

    path = tmp_path / "JPN-NPA" / "users" / "sato.profile.toml"
    write_profile(path, "JPN-NPA", "127.0.0.1:50101", "sato")
    profile = load_profile(path)
    assert profile.node == "127.0.0.1:50101"
    assert profile.agency == "JPN-NPA"
    assert profile.cert == path.parent / "sato.crt"
    assert profile.ca == path.parent / "../ca.crt"


def test_flags_override_the_profile_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange.client import resolve_profile
    from exchange.pki import write_profile

    path = tmp_path / "sato.profile.toml"
    write_profile(path, "JPN-NPA", "127.0.0.1:50101", "sato")
    monkeypatch.setenv("EXCHANGE_PROFILE", str(path))
    profile = resolve_profile(None, "10.0.0.1:9000", None, "other.key", None, None)
    assert profile.node == "10.0.0.1:9000"
    assert profile.key == Path("other.key")
    assert profile.cert == tmp_path / "sato.crt"


def test_a_bad_profile_field_is_named(tmp_path: Path) -> None:
    from exchange.client import load_profile
    from exchange.errors import ConfigError

    path = tmp_path / "p.toml"
    path.write_text('node = "127.0.0.1:1"\nagency = "JPN-NPA"\ncert = "a"\nkey = "b"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p\.toml: ca: missing$"):
        load_profile(path)


def test_connect_names_an_unreadable_certificate(tmp_path: Path) -> None:
    from exchange.client import Profile, connect
    from exchange.errors import ConfigError

    profile = Profile("127.0.0.1:1", "JPN-NPA", tmp_path / "no.crt", tmp_path / "no.key", tmp_path / "ca.crt")
    with pytest.raises(ConfigError, match=r"^cannot read certificate .*no\.crt: No such file"):
        connect(profile)
