"""The check processes (exchange.sync.checkpool) decide exactly as the pulling process would,
refuse what it would refuse, and a pool that dies leaves the checks to the pulling process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from exchange.node.server import Node, load_signer
from exchange.records.envelope import RECORD_TYPE
from exchange.store.received import Incoming
from exchange.store.refusals import Refusal
from exchange.sync.checkpool import POOL_MIN_ENTRIES, CheckPool
from exchange.v1 import records_pb2
from tests.federation import Federation
from tests.fill import fill, make_record


def _envelopes(federation: Federation) -> list[records_pb2.Envelope]:
    """Records of JPN-NPA for USA-DTSF: most fine, some tampered, some not USA's to hold."""
    signer = load_signer("JPN-NPA", federation.pki_dir / "JPN-NPA" / "signing.key", federation.manifest)
    shared = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER")
    hidden = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["KOR-KNPA"], tlp="AMBER")
    envelopes = []
    for i in range(POOL_MIN_ENTRIES + 16):
        record = make_record("JPN-NPA", i, hidden if i % 10 == 3 else shared)
        envelope = signer.seal(RECORD_TYPE, record.SerializeToString())
        if i % 10 == 7:  # one byte of the signed payload changed after signing
            payload = bytearray(envelope.payload)
            payload[-1] ^= 1
            envelope.payload = bytes(payload)
        envelopes.append(envelope)
    return envelopes


def _same(a: Incoming | Refusal, b: Incoming | Refusal) -> bool:
    if isinstance(a, Refusal) or isinstance(b, Refusal):
        return a == b
    return (a.envelope is b.envelope and a.content_hash == b.content_hash and a.audience == b.audience
            and a.record == b.record and a.withdrawal == b.withdrawal and a.index == b.index)


def _checks(node: Node) -> CheckPool:
    return node.puller.checks


def test_check_processes_decide_as_the_pulling_process(federation: Federation, tmp_path: Path) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    envelopes = _envelopes(federation)
    checks = _checks(usa)
    assert checks.ready(timeout=120)
    in_pool = checks.check(envelopes, "JPN-NPA")
    assert checks.in_processes
    here = [checks.verifier.check(e, "JPN-NPA") for e in envelopes]
    assert len(in_pool) == len(here) == len(envelopes)
    assert all(_same(a, b) for a, b in zip(in_pool, here, strict=True))
    reasons = [r.reason for r in in_pool if isinstance(r, Refusal)]
    assert sum("bad signature" in r for r in reasons) == 8
    assert sum("may not hold" in r for r in reasons) == 8
    assert len(reasons) == 16


def test_a_dead_check_process_leaves_the_checks_to_the_pulling_process(
    federation: Federation, tmp_path: Path
) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    envelopes = _envelopes(federation)
    checks = _checks(usa)
    assert checks.ready(timeout=120)
    checks.check(envelopes, "JPN-NPA")
    started = checks.process_ids()  # this node's own (other tests' may still be ending)
    assert started
    for pid in started:
        os.kill(pid, signal.SIGKILL)
    checked = checks.check(envelopes, "JPN-NPA")
    here = [checks.verifier.check(e, "JPN-NPA") for e in envelopes]
    assert all(_same(a, b) for a, b in zip(checked, here, strict=True))
    assert not checks.in_processes


def test_a_large_pull_through_the_check_processes_stores_everything(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    refs = fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 300)
    assert _checks(usa).ready(timeout=120)
    report = usa.puller.pull("JPN-NPA")
    assert report.error == "" and report.applied.stored == 300 and report.applied.refused == 0
    assert _checks(usa).in_processes
    with usa.store.engine.connect() as conn:
        held = {(o, r) for o, r in conn.exec_driver_sql("SELECT originator, record_id FROM records")}
        indexed = conn.exec_driver_sql(
            "SELECT count(DISTINCT rid) FROM observables WHERE type = 'hs_code' AND value = '854231'").scalar_one()
    assert held == {(r.originator, r.record_id) for r in refs}
    assert indexed == 300


def test_the_check_processes_end_with_the_node_even_while_starting(federation: Federation, tmp_path: Path) -> None:
    """A node stopped while its check processes are still starting (importing) does not wait for
    them to come up: they are stopped with it (runtime.end_pool)."""
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    checks = _checks(usa)
    checks.ready(timeout=0)  # spawned; not waited for
    started = time.monotonic()
    while not checks.process_ids():
        assert time.monotonic() - started < 30, "no check process was spawned"
        time.sleep(0.01)
    pids = checks.process_ids()
    usa.stop(grace=0)
    federation.nodes.remove(usa)
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
