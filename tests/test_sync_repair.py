"""Repair by digest: a restored server, a lost cursor, a manifest change — no full re-pull."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import text

from exchange.core.manifest import Manifest
from exchange.node.server import Node
from exchange.store.current import current_record
from exchange.v1 import records_pb2
from tests.federation import Federation
from tests.fill import fill


def _held(node: Node) -> set[tuple[str, str]]:
    with node.store.engine.connect() as conn:
        return {(o, r) for o, r in conn.exec_driver_sql("SELECT originator, record_id FROM records").all()}


def _restart(federation: Federation, node: Node, tmp: Path, manifest: Manifest | None = None) -> Node:
    agency = node.config.agency
    node.stop(grace=0)
    federation.nodes.remove(node)
    if manifest is None:
        return federation.start_node(agency, tmp / agency)
    restarted = Node(dataclasses.replace(node.config), manifest=manifest, schedule=False)
    restarted.start()
    federation.nodes.append(restarted)
    return restarted


def test_restored_server_stale_cursor_is_repaired_without_full_repull(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    first = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 200)
    assert usa.puller.pull("JPN-NPA").applied.stored == 200
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    federation.backend.backup(tmp_path / "JPN-NPA", tmp_path / "backup")
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    later = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 100)
    assert usa.puller.pull("JPN-NPA").applied.stored == 100

    # JPN-NPA is restored from the older backup and then takes 10 new records (reusing sequence numbers).
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    federation.backend.restore(tmp_path / "JPN-NPA", tmp_path / "backup")
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    new = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 10)

    report = usa.puller.pull("JPN-NPA")
    assert report.stale_cursor and report.repaired and report.error == ""
    assert report.applied.stored == 10
    assert report.received <= 20, report  # the 10 it lacked, not the 210 the server holds
    held = _held(usa)
    assert {("JPN-NPA", r.record_id) for r in first + later + new} <= held  # nothing it held is lost
    # Back to normal: an incremental pull from the digest's cursor, nothing stale.
    again = usa.puller.pull("JPN-NPA")
    assert not again.stale_cursor and again.received == 0
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3)
    assert usa.puller.pull("JPN-NPA").applied.stored == 3


def test_lost_cursor_is_repaired_not_repulled(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 300)
    assert usa.puller.pull("JPN-NPA").applied.stored == 300
    with usa.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM peers")  # the cursor is lost
    extra = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 5)
    report = usa.puller.pull("JPN-NPA")
    assert report.repaired and report.applied.stored == 5 and report.received <= 10, report
    assert {("JPN-NPA", r.record_id) for r in extra} <= _held(usa)


def test_a_cursor_the_partner_cannot_open_is_repaired_and_the_link_heals(
    federation: Federation, tmp_path: Path
) -> None:
    """A garbage cursor planted in the database (the partner answers INVALID_ARGUMENT) is
    repaired by digest like a stale one, so records only their originator may serve (ORCON)
    still arrive, instead of the same refusal being retried for ever."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    orcon = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER",
                                caveats=["ORCON"])
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 20)
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 5, marking=orcon)
    assert usa.puller.pull("JPN-NPA").applied.stored == 25
    missing = (fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3)
               + fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 4, marking=orcon))
    with usa.store.engine.begin() as conn:  # the insider's edit
        conn.execute(text("UPDATE peers SET cursor = :garbage WHERE agency = 'JPN-NPA'"),
                     {"garbage": b"planted" * 9})

    report = usa.puller.pull("JPN-NPA")
    assert report.stale_cursor and report.repaired and report.error == "", report
    assert report.applied.stored == 7 and report.received <= 14, report  # what it lacked, not all again
    assert {("JPN-NPA", r.record_id) for r in missing} <= _held(usa)
    # The link is whole again: the next pull resumes from a cursor the partner issued.
    again = usa.puller.pull("JPN-NPA")
    assert not again.stale_cursor and again.error == "" and again.received == 0
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 2, marking=orcon)
    assert usa.puller.pull("JPN-NPA").applied.stored == 2


def test_manifest_change_entitling_more_is_picked_up_by_repair(federation: Federation, tmp_path: Path) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    # GBR-NPSA is accredited CONFIDENTIAL and pulls from USA-DTSF.
    gbr = federation.start_node("GBR-NPSA", tmp_path / "GBR-NPSA", peers=("USA-DTSF",))
    open_ = fill(usa.store, federation.manifest, federation.pki_dir, "USA-DTSF", 40,
                 marking=records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["GBR-NPSA"], tlp="GREEN"))
    secret = fill(usa.store, federation.manifest, federation.pki_dir, "USA-DTSF", 25,
                  marking=records_pb2.Marking(classification="SECRET", releasable_to=["GBR-NPSA"], tlp="GREEN"))
    assert gbr.puller.pull("USA-DTSF").applied.stored == 40
    assert _held(gbr) == {("USA-DTSF", r.record_id) for r in open_}

    # Manifest version 2 accredits GBR-NPSA for SECRET; both nodes restart with it.
    partners = dict(federation.manifest.partners)
    partners["GBR-NPSA"] = dataclasses.replace(partners["GBR-NPSA"], accreditation="SECRET")
    upgraded = Manifest(version=federation.manifest.version + 1, partners=partners)
    usa = _restart(federation, usa, tmp_path, upgraded)
    gbr = _restart(federation, gbr, tmp_path, upgraded)
    report = gbr.puller.pull("USA-DTSF")
    assert report.repaired and report.applied.stored == 25, report
    assert report.received <= 30, report  # the newly entitled 25, not all 65 again
    assert _held(gbr) == {("USA-DTSF", r.record_id) for r in open_ + secret}


def test_manifest_change_narrowing_drops_what_may_no_longer_be_held(federation: Federation, tmp_path: Path) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    kor = federation.start_node("KOR-KNPA", tmp_path / "KOR-KNPA", peers=("USA-DTSF",))  # accredited SECRET
    fill(usa.store, federation.manifest, federation.pki_dir, "USA-DTSF", 10,
         marking=records_pb2.Marking(classification="SECRET", releasable_to=["KOR-KNPA"], tlp="GREEN"))
    assert kor.puller.pull("USA-DTSF").applied.stored == 10
    partners = dict(federation.manifest.partners)
    partners["KOR-KNPA"] = dataclasses.replace(partners["KOR-KNPA"], accreditation="CONFIDENTIAL")
    lowered = Manifest(version=federation.manifest.version + 1, partners=partners)
    kor = _restart(federation, kor, tmp_path, lowered)
    assert _held(kor) == set()
    with kor.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM log").scalar_one() == 0


def test_entries_signed_with_a_key_marked_compromised_are_neither_shown_nor_served(
    federation: Federation, tmp_path: Path
) -> None:
    """docs/design.md: a compromised key invalidates every signature it made, whatever its timestamp."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "JPN-NPA")
    usa = federation.start_node("USA-DTSF", tmp_path / "USA-DTSF")
    refs = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3,
                marking=records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF", "KOR-KNPA"],
                                            tlp="GREEN"))
    assert usa.puller.pull("JPN-NPA").applied.stored == 3
    assert current_record(usa.store, "JPN-NPA", refs[0].record_id) is not None

    partners = dict(federation.manifest.partners)
    jpn_keys = tuple(dataclasses.replace(k, compromised_since=k.not_before) for k in partners["JPN-NPA"].keys)
    partners["JPN-NPA"] = dataclasses.replace(partners["JPN-NPA"], keys=jpn_keys)
    compromised = Manifest(version=federation.manifest.version + 1, partners=partners)
    usa = _restart(federation, usa, tmp_path, compromised)
    assert current_record(usa.store, "JPN-NPA", refs[0].record_id) is None  # not shown to USA-DTSF's users
    federation.backend.migrated(tmp_path / "KOR-KNPA")
    kor = Node(federation.node_config("KOR-KNPA", tmp_path / "KOR-KNPA"), manifest=compromised, schedule=False)
    kor.start()
    federation.nodes.append(kor)
    report = kor.puller.pull("USA-DTSF")  # nor relayed to KOR-KNPA
    assert report.error == "" and report.received == 0
    assert _held(kor) == set()
