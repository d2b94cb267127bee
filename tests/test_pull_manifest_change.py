"""A Pull stream is served under the manifest it began with, and no longer.

The decision for each entry reads the caller's accreditation as the manifest stated it when
the call began. A long stream (an initial pull runs for minutes) must not go on disclosing by
an accreditation the federation has since lowered: once the node adopts another manifest,
the stream ends before its next batch, and the partner pulls again under the new one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from exchange.config import Limits
from exchange.core.identity import Principal, Role, parse_identity_uri
from exchange.core.manifest import Manifest
from exchange.store import audit
from exchange.store.watch import PULL_ACTION
from exchange.v1 import records_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation
from tests.fill import fill

# The partner's channel: no window growth and little read-ahead, so the node can hand it
# only a batch or two before its send waits for the partner to read (tests/test_fair_serving.py).
SMALL_WINDOW = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024))
RECORDS = 40
BATCH = 4


@pytest.mark.parametrize("change", ["lowered", "removed"])
def test_a_partner_lowered_or_removed_during_its_pull_gets_no_batch_after_the_change(
    federation: Federation, tmp_path: Path, change: str
) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "usa", limits=Limits(pull_batch_entries=BATCH))
    # SECRET records for KOR-KNPA, accredited SECRET; about 54 KB each, so a batch is more than
    # the partner's flow-control window and the node cannot run ahead of what is read.
    secret = records_pb2.Marking(classification="SECRET", releasable_to=["KOR-KNPA"], tlp="GREEN")
    fill(usa.store, federation.manifest, federation.pki_dir, "USA-DTSF", RECORDS, marking=secret,
         summary="迂回" * 9000)
    kor = sync_pb2_grpc.SyncServiceStub(federation.node_channel(usa, "KOR-KNPA", options=SMALL_WINDOW))  # type: ignore[no-untyped-call]
    stream = kor.Pull(sync_pb2.PullRequest(max_entries=BATCH), timeout=60)
    first = next(stream)
    received, cursors = len(first.entries), [first.cursor]
    assert received == BATCH

    # Manifest version 2 accredits KOR-KNPA for CONFIDENTIAL only (none of these records is its
    # now), or leaves it out of the federation altogether.
    partners = dict(federation.manifest.partners)
    if change == "lowered":
        partners["KOR-KNPA"] = dataclasses.replace(partners["KOR-KNPA"], accreditation="CONFIDENTIAL")
    else:
        del partners["KOR-KNPA"]
    usa.adopt(Manifest(version=federation.manifest.version + 1, partners=partners))

    with pytest.raises(grpc.RpcError) as ended:
        for batch in stream:  # what the node had made before the change may still arrive
            received += len(batch.entries)
            cursors.append(batch.cursor)
    # Ended by the stream itself before its next batch (ABORTED, "manifest changed:"), by the
    # admission's check before a message is sent (UNAUTHENTICATED), or by its watchdog
    # (CANCELLED), whichever comes first.
    assert ended.value.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.CANCELLED)
    if ended.value.code() == grpc.StatusCode.ABORTED:
        assert (ended.value.details() or "").startswith("manifest changed:")
    assert received < RECORDS
    # No batch was decided after the change: every batch the node audited was sent, but for
    # at most the one in gRPC's hands when the stream was cut (docs/design.md, "Audit").
    assert len(cursors) <= len(audit.read_entries(usa.store, PULL_ACTION)) <= len(cursors) + 1

    # Pulling again from the last cursor: the new manifest decides, and nothing more is released
    # (a partner no longer in the federation is not even let in).
    if change == "lowered":
        again = list(kor.Pull(sync_pb2.PullRequest(cursor=cursors[-1]), timeout=60))
        assert sum(len(b.entries) for b in again) == 0
    else:
        with pytest.raises(grpc.RpcError) as refused:
            list(kor.Pull(sync_pb2.PullRequest(cursor=cursors[-1]), timeout=60))
        assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                        grpc.StatusCode.UNAVAILABLE)


def test_a_partner_re_accredited_since_its_call_was_admitted_is_no_longer_served_by_that_call(
    federation: Federation, tmp_path: Path
) -> None:
    """The admission's recheck of open streams (every message, and the watchdog) compares the
    caller with the principal it was admitted as: a lowered accreditation ends the call, while
    a new call is served under the new one."""
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    cert = (federation.pki_dir / "KOR-KNPA" / "node.crt").read_bytes()
    admitted = Principal(parse_identity_uri("urn:exchange:KOR-KNPA:node"), Role.NODE, "SECRET")
    recheck = usa.admission.recheck
    assert recheck is not None and recheck(cert, admitted) is None
    partners = dict(federation.manifest.partners)
    partners["KOR-KNPA"] = dataclasses.replace(partners["KOR-KNPA"], accreditation="CONFIDENTIAL")
    usa.adopt(Manifest(version=federation.manifest.version + 1, partners=partners))
    why = recheck(cert, admitted)
    assert why is not None and "CONFIDENTIAL" in why and "SECRET" in why
    assert recheck(cert, dataclasses.replace(admitted, clearance="CONFIDENTIAL")) is None
    assert recheck(cert, None) is None  # still a partner
