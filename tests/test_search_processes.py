"""Search pages filled in search processes (node.toml ``[limits] search_processes``) are the
pages the node's own process fills: same records, same order, same decision, the same keys
left out; a search process that dies costs no answer; the processes end with the node.

A search alone in progress is answered in the node's process; the tests hold one of its
search lanes (as a search in progress there would) to send theirs to the search processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from exchange.config import Limits
from exchange.core.identity import Identity, Principal, Role
from exchange.core.marking import within_clearance
from exchange.node.reads import fill_page, held_record
from exchange.node.searchpool import Page, answer_page
from exchange.node.server import Node
from exchange.records import textindex
from exchange.store import SearchFilter
from exchange.store.search import search
from exchange.v1 import query_pb2, records_pb2
from tests.federation import Federation, UserClient
from tests.fill import fill

AGENCY = "JPN-NPA"
UP_SECONDS = 60.0  # spawning a search process imports the node: seconds on a busy machine


def _node_with_processes(federation: Federation, tmp_path: Path) -> Node:
    node = federation.start_node(AGENCY, tmp_path / "jpn", limits=Limits(search_processes=2, search_lanes=2))
    for classification in ("RESTRICTED", "CONFIDENTIAL", "SECRET"):
        marking = records_pb2.Marking(classification=classification, releasable_to=["USA-DTSF"], tlp="GREEN")
        fill(node.store, federation.manifest, federation.pki_dir, AGENCY, 40, marking=marking)
    deadline = time.monotonic() + UP_SECONDS
    while not node.searches.in_processes:
        assert time.monotonic() < deadline, "no search process came up"
        time.sleep(0.05)
    return node


def _criteria(clearance: str, **fields: object) -> SearchFilter:
    return SearchFilter(audience_of=AGENCY, classifications=within_clearance(clearance), **fields)  # type: ignore[arg-type]


def _in_this_process(node: Node, criteria: SearchFilter, caller: Principal, size: int,
                     after: tuple[int, int] | None = None) -> Page:
    return answer_page(node.store, criteria, after, size, caller, node.manifest)


def _refs(page: Page) -> list[tuple[str, str, int]]:
    """The records of a rendered page, read back from its bytes (what the caller receives)."""
    return [(h.envelope.key_id, records_pb2.Record.FromString(h.envelope.payload).ref.record_id,
             records_pb2.Record.FromString(h.envelope.payload).version)
            for h in query_pb2.SearchResponse.FromString(page.records).records]


def test_pages_from_search_processes_are_the_pages_of_the_node(federation: Federation, tmp_path: Path) -> None:
    node = _node_with_processes(federation, tmp_path)
    word = "迂回調達"
    for clearance in ("RESTRICTED", "CONFIDENTIAL", "SECRET"):
        caller = Principal(Identity(AGENCY, "someone"), Role.LIAISON, clearance)
        for criteria in (
            _criteria(clearance),
            _criteria(clearance, observables=(("hs_code", "854231"),)),
            _criteria(clearance, text=word, text_terms=tuple(textindex.query_terms(word))),
        ):
            for size in (1, 7, 50):
                after = None
                shown: list[tuple[str, str, int]] = []
                while True:
                    before = node.searches.pages_in_processes
                    with node.searches.lane:  # another search is in progress here
                        page = node.searches.page(criteria, after, size, caller, node.manifest)
                    assert node.searches.pages_in_processes == before + 1  # filled in a search process
                    assert page == _in_this_process(node, criteria, caller, size, after)
                    assert [ref[1:] for ref in page.shown] == [ref[1:] for ref in _refs(page)]
                    shown += page.shown
                    if not page.more:
                        break
                    after = page.last
                levels = {"RESTRICTED": 1, "CONFIDENTIAL": 2, "SECRET": 3}[clearance]
                assert len(shown) == len(set(shown)) == 40 * levels


def test_a_key_marked_compromised_is_left_out_by_the_search_processes(federation: Federation,
                                                                      tmp_path: Path) -> None:
    node = _node_with_processes(federation, tmp_path)
    caller = Principal(Identity(AGENCY, "someone"), Role.LIAISON, "SECRET")
    with node.searches.lane:  # another search is in progress here: these go to the search processes
        page = node.searches.page(_criteria("SECRET"), None, 50, caller, node.manifest)
        assert page.shown
        key_ids = {key_id for key_id, _, _ in _refs(page)}
        node.store.distrust(key_ids)  # as adopting a manifest that marks the node's signing key compromised does
        hidden = node.searches.page(_criteria("SECRET"), None, 50, caller, node.manifest)
        assert (hidden.shown, hidden.more, _refs(hidden)) == ((), False, [])
        node.store.distrust(())
        assert node.searches.page(_criteria("SECRET"), None, 50, caller, node.manifest).shown
    assert node.searches.pages_in_processes == 3


def test_a_page_is_sent_as_the_records_held(federation: Federation, tmp_path: Path) -> None:
    """The rendered page (envelopes as stored, wrapped field by field) parses to exactly the
    records ``held_record`` builds as messages."""
    node = _node_with_processes(federation, tmp_path)
    caller = Principal(Identity(AGENCY, "someone"), Role.LIAISON, "SECRET")
    criteria = _criteria("SECRET")
    records, _ = fill_page(search(node.store, criteria, first_chunk=51), AGENCY, node.manifest, caller, 50)
    assert len(records) == 50
    page = answer_page(node.store, criteria, None, 50, caller, node.manifest)
    expected = query_pb2.SearchResponse(records=[held_record(r) for r in records])  # no sightings here
    assert query_pb2.SearchResponse.FromString(page.records) == expected
    assert [h.envelope.SerializeToString() for h in expected.records] == [r.envelope for r in records]


def test_a_row_edited_in_the_database_is_not_shown_by_a_search_process(federation: Federation,
                                                                      tmp_path: Path) -> None:
    """A database writer lowers a SECRET record to RESTRICTED: the search process checks the
    row's seal with its own copy of the node's key, and a RESTRICTED user never sees it."""
    node = _node_with_processes(federation, tmp_path)
    caller = Principal(Identity(AGENCY, "someone"), Role.LIAISON, "RESTRICTED")
    with node.store.engine.connect() as conn:
        rid = conn.execute(text("SELECT rid FROM records WHERE classification = 'SECRET' LIMIT 1")).scalar_one()
    with node.store.engine.begin() as conn:
        conn.execute(text("UPDATE records SET classification = 'RESTRICTED' WHERE rid = :rid"), {"rid": rid})
    with node.searches.lane:  # another search is in progress here: this one goes to a search process
        before = node.searches.pages_in_processes
        page = node.searches.page(_criteria("RESTRICTED"), None, 500, caller, node.manifest)
        assert node.searches.pages_in_processes == before + 1
    assert len(page.shown) == 40  # the 40 RESTRICTED records, not the edited one
    with node.store.engine.connect() as conn:
        edited = conn.execute(text("SELECT record_id FROM records WHERE rid = :rid"), {"rid": rid}).scalar_one()
    assert edited not in {record_id for _, record_id, _ in page.shown}


def test_a_search_alone_is_answered_in_the_node_process(federation: Federation, tmp_path: Path) -> None:
    node = _node_with_processes(federation, tmp_path)
    caller = Principal(Identity(AGENCY, "someone"), Role.LIAISON, "SECRET")
    page = node.searches.page(_criteria("SECRET"), None, 50, caller, node.manifest)
    assert len(page.shown) == 50 and node.searches.pages_in_processes == 0


def test_a_search_process_that_dies_costs_no_answer_and_they_end_with_the_node(
    federation: Federation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = _node_with_processes(federation, tmp_path)
    client = UserClient.of(federation.user_channel(node, AGENCY, "suzuki"))
    request = query_pb2.SearchRequest(observable=query_pb2.ObservableQuery(type="hs_code", value="8542.31"),
                                      page_size=500)
    assert len(client.query.Search(request, timeout=30).records) == 120
    pids = node.searches.process_ids()
    assert len(pids) == 2 and os.getpid() not in pids
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.5)
    # The search that meets the dead process is answered from the node's process, as is every later one.
    with node.searches.lane:  # another search is in progress here: the calls go to the search processes
        for _ in range(3):
            assert len(client.query.Search(request, timeout=30).records) == 120
    assert not node.searches.in_processes
    assert "a search process died" in caplog.text
    node.stop(grace=0)
    federation.nodes.remove(node)
    assert not any(_alive(pid) for pid in pids)


def test_the_processes_end_when_the_node_stops(federation: Federation, tmp_path: Path) -> None:
    node = _node_with_processes(federation, tmp_path)
    pids = node.searches.process_ids()
    assert len(pids) == 2
    node.stop(grace=0)
    federation.nodes.remove(node)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child not yet reaped still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
