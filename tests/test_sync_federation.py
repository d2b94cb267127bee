"""Four nodes in a chain, a ring and a full mesh converge to exactly what each may hold.

The expected holdings are written out by hand below, from the markings and the topology:
not computed with the decision function.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.node.server import Node
from exchange.store.current import current_record
from exchange.store.log import log_entries
from exchange.v1 import records_pb2, submission_pb2
from tests.federation import AGENCIES, Federation, UserClient, draft

J, U, K, G = "JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA"
ANALYSTS = {J: "sato", U: "jmiller", K: "kimjh", G: "hwright"}

# title: (originator, classification, releasable_to, tlp, caveats)
RECORDS = {
    "R1": (J, "RESTRICTED", [U, K, G], "GREEN", []),
    "R2": (J, "CONFIDENTIAL", [U, K], "AMBER", []),
    "R3": (U, "SECRET", [J], "AMBER", ["ORCON"]),
    "R4": (K, "UNCLASSIFIED", [J, U, G], "GREEN", []),
    "R5": (U, "SECRET", [J, K, G], "GREEN", []),  # GBR-NPSA is accredited CONFIDENTIAL only
    "R6": (J, "RESTRICTED", [U, K, G], "AMBER+STRICT", []),  # served only by its originator
    "R7": (K, "CONFIDENTIAL", [G], "RED", []),  # served only by its originator
}

# Links: both ends pull from each other.
TOPOLOGIES = {
    "chain": [(J, U), (U, K), (K, G)],
    "ring": [(J, U), (U, K), (K, G), (G, J)],
    "mesh": [(J, U), (J, K), (J, G), (U, K), (U, G), (K, G)],
}

# Who ends up holding each record, by hand: entitled, and reachable through nodes that may relay it.
EXPECTED = {
    "chain": {
        J: {"R1", "R2", "R3", "R4", "R5", "R6"},
        U: {"R1", "R2", "R3", "R4", "R5", "R6"},
        K: {"R1", "R2", "R4", "R5", "R7"},  # R6 would need USA-DTSF to relay AMBER+STRICT
        G: {"R1", "R4", "R7"},  # R1 relayed by KOR-KNPA; R5 above its accreditation
    },
    "ring": {
        J: {"R1", "R2", "R3", "R4", "R5", "R6"},
        U: {"R1", "R2", "R3", "R4", "R5", "R6"},
        K: {"R1", "R2", "R4", "R5", "R7"},
        G: {"R1", "R4", "R6", "R7"},  # R6 now straight from JPN-NPA
    },
    "mesh": {
        J: {"R1", "R2", "R3", "R4", "R5", "R6"},
        U: {"R1", "R2", "R3", "R4", "R5", "R6"},
        K: {"R1", "R2", "R4", "R5", "R6", "R7"},
        G: {"R1", "R4", "R6", "R7"},
    },
}


def _peers(topology: str, agency: str) -> tuple[str, ...]:
    links = TOPOLOGIES[topology]
    return tuple(b for a, b in links if a == agency) + tuple(a for a, b in links if b == agency)


def _converge(nodes: dict[str, Node], topology: str, rounds: int = 8) -> int:
    """Pull along every link until a full round changes nothing; returns the rounds taken."""
    for n in range(1, rounds + 1):
        changed = 0
        for agency, node in nodes.items():
            for peer in _peers(topology, agency):
                report = node.puller.pull(peer)
                assert report.error == "", report
                assert report.applied.refused == 0, report  # honest peers never serve what we may not hold
                changed += report.applied.stored + report.applied.withdrawals
        if changed == 0:
            return n
    raise AssertionError(f"no convergence after {rounds} rounds")


def _holdings(node: Node, titles: dict[tuple[str, str], str]) -> dict[str, tuple[int, str]]:
    """title -> (version, status) of every record the node's database holds."""
    with node.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT originator, record_id, version, status FROM records").all()
    return {titles[(originator, record_id)]: (version, status) for originator, record_id, version, status in rows}


def _unpurged_versions(node: Node, ref: records_pb2.RecordRef) -> list[int]:
    return [e.version for e in log_entries(node.store, ref.originator, ref.record_id)
            if e.envelope and e.payload_type.endswith("record.v1+protobuf")]


@pytest.mark.parametrize("topology", ["chain", "ring", "mesh"])
def test_federation_converges_to_the_expected_holdings(
    federation: Federation, tmp_path: Path, topology: str
) -> None:
    nodes = {a: federation.start_node(a, tmp_path / a) for a in AGENCIES}
    analysts = {a: UserClient.of(federation.user_channel(nodes[a], a, ANALYSTS[a])) for a in AGENCIES}
    refs: dict[str, records_pb2.RecordRef] = {}
    titles: dict[tuple[str, str], str] = {}
    for title, (originator, classification, rel, tlp, caveats) in RECORDS.items():
        marking = records_pb2.Marking(classification=classification, releasable_to=rel, tlp=tlp, caveats=caveats)
        receipt = analysts[originator].submission.Submit(
            submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking)), timeout=10).receipt
        refs[title] = receipt.ref
        titles[(receipt.ref.originator, receipt.ref.record_id)] = title

    _converge(nodes, topology)
    for agency, node in nodes.items():
        assert set(_holdings(node, titles)) == EXPECTED[topology][agency], (topology, agency)

    # A revision reaches every holder.
    analysts[J].submission.Revise(submission_pb2.ReviseRequest(
        ref=refs["R1"], base_version=1, draft=draft(title="R1", summary="revised", marking=records_pb2.Marking(
            classification="RESTRICTED", releasable_to=[U, K, G], tlp="GREEN"))), timeout=10)
    # A narrowing revision: R2 no longer releasable to KOR-KNPA.
    analysts[J].submission.Revise(submission_pb2.ReviseRequest(
        ref=refs["R2"], base_version=1, draft=draft(title="R2", marking=records_pb2.Marking(
            classification="CONFIDENTIAL", releasable_to=[U], tlp="AMBER"))), timeout=10)
    # A retraction of KOR-KNPA's R4.
    analysts[K].submission.Retract(submission_pb2.RetractRequest(
        ref=refs["R4"], base_version=1, reason="duplicate of another report"), timeout=10)
    _converge(nodes, topology)

    for agency, node in nodes.items():
        held = _holdings(node, titles)
        expected = set(EXPECTED[topology][agency]) - ({"R2"} if agency == K else set())
        assert set(held) == expected, (topology, agency)
        if "R1" in held:
            assert held["R1"] == (2, "active")
        if "R2" in held:
            assert held["R2"] == (2, "active") and agency in (J, U)
        assert held["R4"] == (2, "retracted")
        if agency != K:  # holders purge the retracted record's earlier payload; its originator keeps it
            assert _unpurged_versions(node, refs["R4"]) == [2], agency
    # KOR-KNPA lost R2's audience: its earlier payload is purged and not served to anyone.
    assert _unpurged_versions(nodes[K], refs["R2"]) == []
    assert current_record(nodes[K].store, J, refs["R2"].record_id) is None
