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


def test_a_partner_accreditation_lowered_during_its_pull_ends_the_stream_before_the_next_batch(
    federation: Federation, tmp_path: Path
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

    # Manifest version 2 accredits KOR-KNPA for CONFIDENTIAL only: none of these records is its now.
    partners = dict(federation.manifest.partners)
    partners["KOR-KNPA"] = dataclasses.replace(partners["KOR-KNPA"], accreditation="CONFIDENTIAL")
    usa.adopt(Manifest(version=federation.manifest.version + 1, partners=partners))

    with pytest.raises(grpc.RpcError) as ended:
        for batch in stream:  # what the node had made before the change may still arrive
            received += len(batch.entries)
            cursors.append(batch.cursor)
    assert ended.value.code() == grpc.StatusCode.ABORTED
    assert (ended.value.details() or "").startswith("manifest changed:")
    assert received < RECORDS
    # Every batch the node audited was sent: the stream ended before the next was decided,
    # so none was audited (or disclosed) under the old accreditation after the change.
    assert len(audit.read_entries(usa.store, PULL_ACTION)) == len(cursors)

    # Pulling again from the last cursor: the new manifest decides, and nothing more is released.
    again = list(kor.Pull(sync_pb2.PullRequest(cursor=cursors[-1]), timeout=60))
    assert sum(len(b.entries) for b in again) == 0
