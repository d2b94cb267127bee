"""STIX 2.1 export and offline verification, through the real command against real nodes:
the bundle passes stix2-validator strictly, ids are stable across exports and nodes, a
liaison's bundle holds only what the decision released, and `exchange verify` accepts the
export and refuses it after one changed byte (a title, a marking, the envelope).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from stix2validator import ValidationOptions, validate_instance

from exchange.cli.main import main
from exchange.node.server import Node
from exchange.stix.common import EXTENSION_ID, TLP_IDS
from exchange.v1 import records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft

REPO = Path(__file__).resolve().parent.parent
FAILURE = 1
# Values a pattern must escape: quotes and a backslash.
AWKWARD_URL = "https://example.net/a'b"
AWKWARD_HANDLE = "@o'neil\\dev"
# Strict: every "SHOULD" is an error, but one: uuid-check (103) wants random UUIDv4 ids for
# SDOs and SROs, and Exchange's ids are UUIDv5 by design, so every node exports the same
# ids for a record (README, "STIX 2.1 export").
STRICT = ValidationOptions(version="2.1", strict=True, disabled=["uuid-check"])


def _profile(federation: Federation, agency: str, handle: str) -> list[str]:
    return ["--profile", str(federation.pki_dir / agency / "users" / f"{handle}.profile.toml")]


def _manifest(federation: Federation) -> list[str]:
    return ["--manifest", str(federation.pki_dir / "manifest.toml")]


def _submit(node: Node, federation: Federation, **fields: Any) -> records_pb2.RecordRef:
    analyst = UserClient.of(federation.user_channel(node, node.config.agency, "sato"))
    request = submission_pb2.SubmitRequest(draft=draft(**fields))
    return analyst.submission.Submit(request, timeout=10).receipt.ref


def _marking(classification: str, tlp: str, rel: tuple[str, ...] = ("USA-DTSF",)) -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=list(rel), tlp=tlp)


def _obs(*pairs: tuple[str, str]) -> list[records_pb2.Observable]:
    return [records_pb2.Observable(type=t, value=v) for t, v in pairs]


def _validity() -> records_pb2.Validity:
    validity = records_pb2.Validity()
    validity.not_before.FromSeconds(1_767_225_600)  # 2026-01-01
    validity.not_after.FromSeconds(1_924_992_000)  # 2031-01-01
    return validity


def _seed(node: Node, federation: Federation) -> dict[str, records_pb2.RecordRef]:
    """One record of each kind, linked, under mixed markings; one SECRET."""
    actor = _submit(node, federation, kind=records_pb2.KIND_ACTOR, title="Front company \"ABC\" 商事",
                    observables=_obs(("company_name", "ABC Trading Co."), ("domain", "abc-trading.example"),
                                     ("phone", "+81 3 1234 5678")),
                    marking=_marking("RESTRICTED", "GREEN"),
                    translations=[records_pb2.Translation(language="en", title="Front company \"ABC\" Shoji",
                                                          summary="A trading company fronting for procurement."),
                                  records_pb2.Translation(language="ko", title="위장 회사 \"ABC\" 상사")])
    technique = _submit(node, federation, related=[actor], marking=_marking("CONFIDENTIAL", "AMBER+STRICT"))
    iocs = _submit(node, federation, kind=records_pb2.KIND_OBSERVABLE_SET, title="Recruiter lures",
                   observables=_obs(("email", "obrien.recruit@example.net"), ("url", AWKWARD_URL),
                                    ("ip", "192.0.2.7"), ("platform_handle", AWKWARD_HANDLE)),
                   related=[actor], tags=["recruitment"], validity=_validity(),
                   marking=records_pb2.Marking(classification="RESTRICTED", releasable_to=["USA-DTSF"],
                                               tlp="CLEAR", caveats=["ORCON"]))
    secret = _submit(node, federation, title="秘 source reporting", marking=_marking("SECRET", "RED"))
    return {"actor": actor, "technique": technique, "iocs": iocs, "secret": secret}


def _export(federation: Federation, out: Path, agency: str, handle: str) -> dict[str, Any]:
    assert main(["export", "--format", "stix21", "--out", str(out), *_profile(federation, agency, handle)]) == 0
    bundle: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return bundle


def _record_ids(bundle: dict[str, Any]) -> set[str]:
    return {o["extensions"][EXTENSION_ID]["record_id"] for o in bundle["objects"]
            if EXTENSION_ID in o.get("extensions", {})}


def test_the_bundle_is_strictly_valid_stix_with_stable_ids_and_the_published_extension(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    refs = _seed(jpn, federation)
    first = _export(federation, tmp_path / "a.json", "JPN-NPA", "suzuki")
    result = validate_instance(first, STRICT)
    assert result.is_valid, sorted({str(e).partition(": ")[2] for e in result.errors})
    assert [str(w) for w in result.warnings or []] == []
    second = _export(federation, tmp_path / "b.json", "JPN-NPA", "suzuki")
    assert second == first  # same ids, same objects: nothing depends on the export's time

    by_type: dict[str, list[dict[str, Any]]] = {}
    for obj in first["objects"]:
        by_type.setdefault(obj["type"], []).append(obj)
    assert _record_ids(first) == {r.record_id for r in refs.values()}
    assert {o["name"] for o in by_type["threat-actor"]} == {"Front company \"ABC\" 商事"}
    assert len(by_type["attack-pattern"]) == 2  # the technique and the SECRET one (a technique by default)
    patterns = {o["pattern"] for o in by_type["indicator"]}
    lures = next(p for p in patterns if p.startswith("[email-addr"))
    assert lures.startswith("[email-addr:value = 'obrien.recruit@example.net'] OR "
                            "[url:value = 'https://example.net/a\\'b'] OR [ipv4-addr:value = '192.0.2.7'] OR "
                            "[user-account:account_login = '")
    assert lures.endswith("o\\'neil\\\\dev']")
    assert "[domain-name:value = 'abc-trading.example']" in patterns  # the actor's indicator
    assert {o["value"] for o in by_type["url"]} == {AWKWARD_URL}
    # TLP 2.0 as the OASIS marking definitions; the rest of the marking in Exchange's extension.
    assert {o["id"] for o in by_type["marking-definition"]} == {TLP_IDS[t] for t in ("GREEN", "AMBER+STRICT",
                                                                                   "CLEAR", "RED")}
    indicator = next(o for o in by_type["indicator"] if o["name"] == "Recruiter lures")
    assert indicator["object_marking_refs"] == [TLP_IDS["CLEAR"]]
    ext = indicator["extensions"][EXTENSION_ID]
    assert (ext["classification"], ext["releasable_to"], ext["caveats"]) == ("RESTRICTED", ["USA-DTSF"], ["ORCON"])
    # Links between records in the bundle are relationships; the rest stays in the extension.
    related = {(o["source_ref"], o["target_ref"]) for o in by_type["relationship"]
               if o["relationship_type"] == "related-to"}
    actor_id = by_type["threat-actor"][0]["id"]
    assert (indicator["id"], actor_id) in related and len(related) == 2
    # Translations: one language-content on the record's main object, per language its title and summary.
    translated = by_type["language-content"]
    assert [(o["object_ref"], o["object_modified"]) for o in translated] == [
        (actor_id, by_type["threat-actor"][0]["modified"])]
    assert translated[0]["contents"] == {
        "en": {"name": "Front company \"ABC\" Shoji", "description": "A trading company fronting for procurement."},
        "ko": {"name": "위장 회사 \"ABC\" 상사"}}
    assert translated[0]["object_marking_refs"] == [TLP_IDS["GREEN"]]
    # The extension-definition in every export is the one published in the repository.
    published = json.loads((REPO / "docs" / "stix" / "extension-definition.json").read_text(encoding="utf-8"))
    assert by_type["extension-definition"] == [published]
    schema = json.loads((REPO / "docs" / "stix" / "exchange-marking.schema.json").read_text(encoding="utf-8"))
    assert set(ext) <= set(schema["properties"]) and set(schema["required"]) <= set(ext)


def test_a_record_has_the_same_ids_on_every_node_and_a_liaison_gets_only_what_the_decision_allows(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    refs = _seed(jpn, federation)
    report = usa.puller.pull("JPN-NPA")
    assert report.error == "" and report.applied.refused == 0

    at_jpn = _export(federation, tmp_path / "jpn.json", "JPN-NPA", "suzuki")
    at_usa = _export(federation, tmp_path / "usa.json", "USA-DTSF", "rchen")  # SECRET: releasable ones
    jpn_objects = {o["id"]: o for o in at_jpn["objects"]}
    assert _record_ids(at_usa) == {r.record_id for r in refs.values()}
    assert all(jpn_objects[o["id"]] == o for o in at_usa["objects"])  # same ids, same objects

    low = _export(federation, tmp_path / "ito.json", "JPN-NPA", "ito")  # RESTRICTED clearance
    assert _record_ids(low) == {refs["actor"].record_id, refs["iocs"].record_id}
    assert TLP_IDS["RED"] not in {o["id"] for o in low["objects"]}
    assert "秘" not in (tmp_path / "ito.json").read_text(encoding="utf-8")
    assert main(["verify", str(tmp_path / "ito.json"), *_manifest(federation)]) == 0


def _flip(text: str, needle: str, replacement: str) -> str:
    assert text.count(needle) >= 1, needle
    return text.replace(needle, replacement, 1)


def test_verify_accepts_the_export_and_refuses_one_changed_byte(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    refs = _seed(jpn, federation)
    out = tmp_path / "export.json"
    _export(federation, out, "JPN-NPA", "suzuki")
    capsys.readouterr()
    assert main(["verify", str(out), *_manifest(federation)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[-1] == "verified: 4 ok, 0 failed"
    assert {line.split()[1] for line in lines[:-1]} == {f"JPN-NPA/{r.record_id}" for r in refs.values()}
    assert all(line.startswith("ok   ") for line in lines[:-1])

    text = out.read_text(encoding="utf-8")
    envelope = json.loads(text)["objects"]
    signed = next(o for o in envelope if o.get("name") == "Recruiter lures")["extensions"][EXTENSION_ID]["envelope"]
    raw = bytearray(base64.b64decode(signed))
    raw[-1] ^= 1  # one bit of the signature
    tampered = {
        "title": _flip(text, "Recruiter lures", "Recruiter lureS"),
        "marking": _flip(text, '"USA-DTSF"', '"USA-DTSG"'),
        # The reference to TLP:CLEAR on an object (the definition's own id is followed by a comma).
        "tlp": _flip(text, TLP_IDS["CLEAR"] + '"\n', TLP_IDS["CLEAR"][:-1] + '8"\n'),
        "envelope": text.replace(signed, base64.b64encode(bytes(raw)).decode("ascii")),
    }
    for what, changed in tampered.items():
        assert changed != text, what
        bad = tmp_path / f"{what}.json"
        bad.write_text(changed, encoding="utf-8")
        assert main(["verify", str(bad), *_manifest(federation)]) == FAILURE, what
        printed = capsys.readouterr().out.splitlines()
        assert printed[-1].startswith("FAILED: ") and any(line.startswith("FAIL ") for line in printed), what
    # Not JSON: one line, usage error, no traceback.
    (tmp_path / "cut.json").write_text(text[:-40], encoding="utf-8")
    assert main(["verify", str(tmp_path / "cut.json"), *_manifest(federation)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exchange: FILE: ") and err.count("\n") == 1


# --- import ----------------------------------------------------------------------------------


def _comparable(bundle: dict[str, Any]) -> list[Any]:
    """The bundle's objects without what names the originator, the record or the time."""
    names = {o["id"]: o.get("name") for o in bundle["objects"]}
    out = []
    for obj in bundle["objects"]:
        if obj["type"] == "identity":
            continue
        kept = {k: v for k, v in obj.items() if k not in ("id", "created_by_ref", "created", "modified",
                                                          "valid_from", "object_refs", "source_ref", "target_ref",
                                                          "object_ref", "object_modified")}
        if "extensions" in obj and EXTENSION_ID in obj["extensions"]:
            ext = {k: v for k, v in obj["extensions"][EXTENSION_ID].items()
                   if k not in ("originator", "record_id", "envelope", "related")}
            kept["extensions"] = {**obj["extensions"], EXTENSION_ID: ext}
        if obj["type"] == "relationship":
            kept["ends"] = (names[obj["source_ref"]], names[obj["target_ref"]])
        if obj["type"] == "language-content":  # on the main object of the same name, as modified then
            kept["translates"] = names[obj["object_ref"]]
            kept["as_modified"] = obj["object_modified"] == next(
                o["modified"] for o in bundle["objects"] if o["id"] == obj["object_ref"])
        out.append(json.dumps(kept, sort_keys=True, ensure_ascii=False))
    return sorted(out)


def test_export_import_into_a_fresh_node_export_gives_the_same_objects_and_markings(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    federation.start_node("KOR-KNPA", tmp_path / "kor")
    _seed(jpn, federation)
    exported = _export(federation, tmp_path / "jpn.json", "JPN-NPA", "suzuki")
    kimjh = _profile(federation, "KOR-KNPA", "kimjh")
    capsys.readouterr()
    assert main(["import", "--format", "stix21", str(tmp_path / "jpn.json"), *kimjh]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("4 imported (4 new, 0 already imported), 0 refused, ")
    assert sum(line.startswith("imported ") for line in printed) == 4
    # Not records: the shared objects, each listed with its reason.
    assert "not imported marking-definition--" in "\n".join(printed)

    again = _export(federation, tmp_path / "kor.json", "KOR-KNPA", "kimjh")
    assert _record_ids(again).isdisjoint(_record_ids(exported))
    assert {o["extensions"][EXTENSION_ID]["originator"] for o in again["objects"]
            if EXTENSION_ID in o.get("extensions", {})} == {"KOR-KNPA"}
    assert _comparable(again) == _comparable(exported)
    assert validate_instance(again, STRICT).is_valid

    # A rerun imports nothing twice.
    assert main(["import", "--format", "stix21", str(tmp_path / "jpn.json"), *kimjh]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("4 imported (0 new, 4 already imported)")


def test_import_never_invents_a_marking_and_says_what_it_left_out(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("KOR-KNPA", tmp_path / "kor")
    actor = "threat-actor--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
    indicator = "indicator--a932fcc6-e032-476c-826f-cb970a5a1ade"
    stamp = "2026-11-02T03:04:05.000Z"
    bundle = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
        {"type": "threat-actor", "spec_version": "2.1", "id": actor, "created": stamp, "modified": stamp,
         "name": "Kestrel procurement network"},
        {"type": "indicator", "spec_version": "2.1", "id": indicator, "created": stamp, "modified": stamp,
         "name": "Kestrel domains", "pattern_type": "stix", "valid_from": stamp,
         "pattern": "[domain-name:value = 'kestrel.example'] OR [email-addr:value = 'sales@kestrel.example']",
         "object_marking_refs": [TLP_IDS["GREEN"]]},
        {"type": "relationship", "spec_version": "2.1", "id": "relationship--2f9a4b8e-7c41-4d3e-9b6a-1c2d3e4f5a6b",
         "created": stamp, "modified": stamp, "relationship_type": "related-to", "source_ref": indicator,
         "target_ref": actor},
        {"type": "malware", "spec_version": "2.1", "id": "malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061",
         "created": stamp, "modified": stamp, "name": "dropper", "is_family": False},
    ]}
    path = tmp_path / "misp.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    kimjh = _profile(federation, "KOR-KNPA", "kimjh")
    assert main(["import", "--format", "stix21", str(path), *kimjh]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert f"not imported {actor}: no Exchange marking (classification, releasable_to): give --marking" in printed
    assert "not imported malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061: no Exchange kind for malware" in printed
    assert printed[-1].startswith("0 imported")

    marking = "RESTRICTED // REL TO USA-DTSF // TLP:AMBER"
    assert main(["import", "--format", "stix21", str(path), "--marking", marking, *kimjh]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("2 imported (2 new, 0 already imported), 0 refused, 1 other object not imported")
    again = _export(federation, tmp_path / "kor.json", "KOR-KNPA", "kimjh")
    tlp = {o.get("name"): o.get("object_marking_refs") for o in again["objects"] if o["type"] != "marking-definition"}
    # The indicator keeps its own TLP:GREEN; the actor takes --marking's TLP:AMBER.
    assert tlp["Kestrel domains"] == [TLP_IDS["GREEN"]] and tlp["Kestrel procurement network"] == [TLP_IDS["AMBER"]]
    assert any(o["type"] == "relationship" and o["relationship_type"] == "related-to" for o in again["objects"])


def test_verify_names_the_record_whose_signature_fails_and_any_object_no_record_accounts_for(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    refs = _seed(jpn, federation)
    bundle = _export(federation, tmp_path / "export.json", "JPN-NPA", "suzuki")
    main_of = next(o for o in bundle["objects"] if o.get("name") == "Recruiter lures")
    ext = main_of["extensions"][EXTENSION_ID]
    envelope = records_pb2.Envelope.FromString(base64.b64decode(ext["envelope"]))
    envelope.key_id = "USA-DTSF/" + envelope.key_id.partition("/")[2]  # claims another agency's key
    ext["envelope"] = base64.b64encode(envelope.SerializeToString()).decode("ascii")
    stray = {"type": "indicator", "spec_version": "2.1", "id": "indicator--3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b",
             "created": "2026-12-01T00:00:00.000Z", "modified": "2026-12-01T00:00:00.000Z", "pattern_type": "stix",
             "pattern": "[domain-name:value = 'evil.example']", "valid_from": "2026-12-01T00:00:00.000Z"}
    bundle["objects"].append(stray)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    capsys.readouterr()
    assert main(["verify", str(path), *_manifest(federation)]) == FAILURE
    lines = capsys.readouterr().out.splitlines()
    failed = [line for line in lines if line.startswith("FAIL ")]
    assert failed[0].startswith(f"FAIL JPN-NPA/{refs['iocs'].record_id}: ")
    assert f"FAIL {stray['id']}: is not part of any verified record" in failed
    # The forged record's own objects are not listed again; TLP:CLEAR only it used is unneeded.
    assert len(failed) == 3 and failed[1].startswith(f"FAIL {TLP_IDS['CLEAR']}: ")
    assert sum(line.startswith("ok   ") for line in lines) == 3 and lines[-1] == "FAILED: 3 ok, 3 failed"


def _record(kind: records_pb2.Kind, *observables: tuple[str, str]) -> tuple[records_pb2.Record, records_pb2.Envelope]:
    record = records_pb2.Record(
        ref=records_pb2.RecordRef(originator="GBR-NPSA", record_id="6b1f4c1e-3d0a-4c53-9a55-0e8d2b7c4f10"),
        version=3, status=records_pb2.STATUS_ACTIVE,
        content=draft(kind=kind, observables=_obs(*observables), tags=["a", "b"], countries=["RUS", "CHN"],
                      validity=_validity(), translations=[
                          records_pb2.Translation(language="ja", title="翻訳された題名", summary="翻訳された要約"),
                          records_pb2.Translation(language="en-GB", title="Translated title only"),
                          records_pb2.Translation(language="ko", summary="요약만")]),
    )
    record.created_at.FromSeconds(1_780_000_000)
    record.issued_at.FromMicroseconds(1_790_000_000_123_456)
    return record, records_pb2.Envelope(payload_type="x", payload=record.SerializeToString(), key_id="GBR-NPSA/k")


@pytest.mark.parametrize(("kind", "observables", "main_type"), [
    (records_pb2.KIND_OBSERVABLE_SET, [("ip", "2001:db8::7"), ("phone", "+44 20 7946 0000")], "indicator"),
    (records_pb2.KIND_OBSERVABLE_SET, [("phone", "+44 20 7946 0000"), ("hs_code", "8542.31")], "note"),
    (records_pb2.KIND_ACTOR, [("wallet", "bc1qexample"), ("domain", "kestrel.example")], "threat-actor"),
])
def test_each_kind_maps_to_valid_stix_and_back_to_the_same_draft(
    kind: records_pb2.Kind, observables: list[tuple[str, str]], main_type: str
) -> None:
    from exchange.stix.bundle import make_bundle
    from exchange.stix.intake import read_bundle

    record, envelope = _record(kind, *observables)
    bundle = make_bundle([(record, envelope)])
    result = validate_instance(bundle, STRICT)
    assert result.is_valid, sorted({str(e) for e in result.errors})
    main = next(o for o in bundle["objects"] if "envelope" in o.get("extensions", {}).get(EXTENSION_ID, {}))
    assert main["type"] == main_type and main["modified"] == "2026-09-21T14:13:20.123456Z"
    assert main["created"] == "2026-05-28T20:26:40.000Z"
    intake = read_bundle(bundle, None)
    assert len(intake.drafts) == 1 and intake.drafts[0].stix_id == main["id"]
    back = intake.drafts[0].draft
    assert sorted((o.type, o.value) for o in back.observables) == sorted(observables)
    back.ClearField("observables")
    expected = records_pb2.RecordDraft()
    expected.CopyFrom(record.content)
    expected.ClearField("observables")
    assert back == expected


def test_a_misp_stix_bundle_imports_what_maps_and_says_why_for_the_rest(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("GBR-NPSA", tmp_path / "gbr")
    path = REPO / "tests" / "data" / "misp-stix-fake-recruiter.json"
    objects = json.loads(path.read_text(encoding="utf-8"))["objects"]
    hwright = _profile(federation, "GBR-NPSA", "hwright")
    marking = ["--marking", "RESTRICTED // REL TO USA-DTSF, JPN-NPA // TLP:GREEN"]
    assert main(["import", "--format", "stix21", str(path), *marking, *hwright]) == 0
    printed = capsys.readouterr().out.splitlines()
    imported = {line.split()[1] for line in printed if line.startswith("imported ")}
    assert imported == {o["id"] for o in objects if o["type"] in ("indicator", "attack-pattern")}
    reasons = {line.split()[2].rstrip(":"): line.partition(": ")[2] for line in printed if line.startswith("not ")}
    # Every other object has a line saying why.
    assert set(reasons) == {o["id"] for o in objects} - imported
    assert reasons["x-misp-attribute--6d8a1b2c-3e4f-4a5b-8c7d-9e0f1a2b3c4d"] == "no Exchange kind for x-misp-attribute"
    summary = f"5 imported (5 new, 0 already imported), 0 refused, {len(reasons)} other objects not imported"
    assert printed[-1] == summary

    bundle = _export(federation, tmp_path / "gbr.json", "GBR-NPSA", "hwright")
    patterns = sorted(o["pattern"] for o in bundle["objects"] if o["type"] == "indicator")
    assert patterns == ["[domain-name:value = 'talentbridge-careers.example']",
                        "[email-addr:value = 'hiro.talentbridge@example.net']",
                        "[ipv4-addr:value = '198.51.100.23']",
                        "[url:value = 'https://talentbridge-careers.example/apply']"]
    assert {o.get("name") for o in bundle["objects"] if o["type"] == "attack-pattern"} == {"Phishing for Information"}


def test_bad_files_and_flags_are_one_line_errors(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    _submit(jpn, federation, title="one record")
    suzuki = _profile(federation, "JPN-NPA", "suzuki")
    # To standard output: the bundle alone on stdout, the banner on stderr.
    assert main(["export", "--format", "stix21", "--out", "-", *suzuki]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["type"] == "bundle" and "exported 1 record to standard output" in err
    assert main(["export", "--format", "stix21", "--out", str(tmp_path / "x.jsonl"), *suzuki]) == 2
    assert "does not end in .json" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    for argv, problem in [
        (["verify", str(tmp_path / "missing.json"), *_manifest(federation)], "FILE: cannot read"),
        (["verify", str(tmp_path / "list.json"), "--manifest", str(tmp_path / "none.toml")], "cannot read"),
        (["import", "--format", "stix21", str(tmp_path / "list.json"), *suzuki], "is not a STIX bundle"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("exchange: ") and err.count("\n") == 1 and problem in err, err
    assert main(["verify", str(tmp_path / "list.json"), *_manifest(federation)]) == FAILURE
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "FAIL bundle: not a STIX bundle (an object of type 'bundle' with 'objects')"


def test_objects_of_the_wrong_shape_are_reported_not_a_traceback(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn")  # the analyst's node, for the import
    bundle = {"type": "bundle", "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d", "objects": [
        {"type": "threat-actor", "spec_version": "2.1", "id": "threat-actor--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
         "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z", "name": "Shape",
         "confidence": "high", "description": [1], "object_marking_refs": [{}]},
        {"type": "threat-actor", "spec_version": "2.1", "id": "threat-actor--1e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
         "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z", "name": "Odd",
         "extensions": "not a mapping"},
    ]}
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    sato = _profile(federation, "JPN-NPA", "sato")
    assert main(["import", "--format", "stix21", str(path), *sato,
                 "--marking", "UNCLASSIFIED // REL TO USA-DTSF // TLP:GREEN"]) in (0, FAILURE)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "malformed (" in captured.out + captured.err
    assert main(["verify", str(path), *_manifest(federation)]) == FAILURE
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out.startswith("FAIL ")


def test_another_tools_language_content_imports_as_translations() -> None:
    from exchange.stix.intake import read_bundle

    indicator = {"type": "indicator", "spec_version": "2.1", "id": "indicator--0b7d3f6a-1c2e-4f5a-8b9c-0d1e2f3a4b5c",
                 "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
                 "name": "Lure domains", "pattern": "[domain-name:value = 'lure.example']", "pattern_type": "stix",
                 "valid_from": "2026-01-01T00:00:00.000Z"}
    content = {"type": "language-content", "spec_version": "2.1",
               "id": "language-content--5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
               "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
               "object_ref": indicator["id"], "object_modified": "2026-01-01T00:00:00.000Z",
               "contents": {"ja": {"name": "おとりドメイン"}, "english": {"name": "not a tag"},
                            "ko": {"description": "유인 도메인"}}}
    stray = {**content, "id": "language-content--6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e",
             "object_ref": "malware--7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"}
    marking = records_pb2.Marking(classification="RESTRICTED", releasable_to=["USA-DTSF"], tlp="GREEN")
    intake = read_bundle({"type": "bundle", "id": "bundle--1", "objects": [indicator, content, stray]}, marking)
    assert [(t.language, t.title, t.summary) for t in intake.drafts[0].draft.translations] == [
        ("ja", "おとりドメイン", ""), ("ko", "", "유인 도메인")]
    assert any("'english' is not a BCP 47 language tag" in n for n in intake.drafts[0].notes)
    assert (stray["id"], "translates an object that is not imported") in intake.skipped
