"""What ``exchange demo`` submits, what it expects where, and how it watches records travel.

The expectations are written out by hand, one line of reasoning per record,
rather than computed with the disclosure decision: the demo checks the running
federation against what a person reading docs/design.md would predict, so a bug in
the decision cannot make its own expectations agree with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exchange.client import Client
from exchange.render import Shown
from exchange.v1 import query_pb2, records_pb2

__all__ = [
    "PLAN",
    "RETRACTED",
    "RETRACTION_REASON",
    "REVIEWED",
    "REVISED",
    "TRANSLATED",
    "Holdings",
    "Names",
    "Sample",
    "Seen",
    "differences",
    "expected_holdings",
    "name_of",
    "observe",
    "search_all",
    "wait_for",
]

JPN, USA, KOR, GBR = "JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA"
SETTLE = 2.5  # seconds the holdings must stay as expected: over two pull intervals, so a leak would show
POLL = 0.3  # seconds between two rounds of liaison queries


@dataclass(frozen=True)
class Sample:
    """A sample record of nodes/<agency>/samples/<name>.json, and where it should end up."""

    agency: str
    name: str
    reach: frozenset[str]  # the partners whose nodes should hold it (the originator always does)
    why: str  # why exactly those: shown to the newcomer, and where it is missing
    # Held for release review at submission (its marking is above the pre-approved ones):
    # no node, not even the originator's search, holds it until the disclosure officer
    # approves it in step 5.
    reviewed: bool = False


PLAN: tuple[Sample, ...] = (
    Sample(JPN, "sns-approach", frozenset({USA, KOR}),
           "released to USA-DTSF and KOR-KNPA only"),
    Sample(JPN, "dprk-it-workers", frozenset({USA, KOR, GBR}),
           "released to all; GBR-NPSA gets it relayed by USA-DTSF (TLP:GREEN allows relay)"),
    Sample(JPN, "insider-email", frozenset(),
           "TLP:RED, released to no partner; it never leaves JPN-NPA"),
    Sample(JPN, "lithography-parts", frozenset({USA}),
           "SECRET to USA-DTSF, above JPN-NPA's pre-approved markings: held until a disclosure officer approved it",
           reviewed=True),
    Sample(USA, "front-company", frozenset({JPN}),
           "released to JPN-NPA only, and ORCON: JPN-NPA may not pass it on"),
    Sample(USA, "procurement-agent", frozenset({JPN, KOR}),
           "SECRET; GBR-NPSA is on the list, but its node is accredited only up to CONFIDENTIAL"),
    Sample(USA, "forwarder-domain", frozenset({JPN, KOR, GBR}),
           "released to all; retracted later, and the retraction travels the same way"),
    Sample(KOR, "ip-disclosure-demand", frozenset({JPN, USA, GBR}),
           "released to all; GBR-NPSA gets it relayed by USA-DTSF (TLP:GREEN allows relay)"),
    Sample(KOR, "headhunter-approach", frozenset({JPN, USA}),
           "TLP:AMBER+STRICT: only KOR-KNPA may serve it, and GBR-NPSA pulls only from USA-DTSF"),
    Sample(GBR, "fake-recruiter-uk", frozenset({USA, JPN, KOR}),
           "released to the trilateral partners; only USA-DTSF pulls from GBR-NPSA, the others get it relayed"),
)
REVIEWED = "lithography-parts"  # approved by JPN-NPA's disclosure officer in step 5
TRANSLATED = ("KOR-KNPA", "ip-disclosure-demand")  # a Korean record with an English translation
REVISED = "dprk-it-workers"  # version 2 is nodes/JPN-NPA/samples/dprk-it-workers.v2.json
RETRACTED = "forwarder-domain"
RETRACTION_REASON = "misattributed: the domain belongs to an unrelated, legitimate forwarder"


@dataclass(frozen=True)
class Seen:
    """One record as a liaison officer sees it."""

    version: int
    status: str  # active or retracted
    received_from: str

    def state(self) -> tuple[int, str]:
        return self.version, self.status


Names = dict[tuple[str, str], str]  # (originator, record id) -> sample name, from the receipts
Holdings = dict[str, dict[str, Seen]]  # agency -> sample name -> what its liaison sees
Expected = dict[str, dict[str, tuple[int, str]]]  # agency -> sample name -> (version, status)


def expected_holdings(agencies: Iterable[str], *, changed: bool) -> Expected:
    """What each agency's node should hold: before (``changed=False``) or after the revision and retraction."""
    expected: Expected = {agency: {} for agency in agencies}
    for sample in PLAN:
        if sample.reviewed and not changed:
            continue  # held for review: served to no one, not even the originator's own search
        state = (1, "active")
        if changed and sample.name == REVISED:
            state = (2, "active")
        elif changed and sample.name == RETRACTED:
            state = (2, "retracted")
        for agency in {sample.agency, *sample.reach}:
            expected[agency][sample.name] = state
    return expected


def search_all(client: Client, query: query_pb2.SearchRequest) -> list[Shown]:
    """Every page of a search (``query`` itself is left as it was)."""
    request = query_pb2.SearchRequest()
    request.CopyFrom(query)
    shown: list[Shown] = []
    while True:
        response = client.call(client.search, request)
        shown.extend(Shown.from_held(h) for h in response.records)
        if not response.next_page_token:
            return shown
        request.page_token = response.next_page_token


def name_of(shown: Shown, names: Names) -> str:
    ref = shown.record.ref
    return names.get((ref.originator, ref.record_id), f"{ref.originator}/{ref.record_id}")


def observe(client: Client, names: Names) -> dict[str, Seen]:
    """What this liaison officer sees, retracted records included, by sample name."""
    everything = query_pb2.SearchRequest(include_retracted=True, page_size=500)
    return {name_of(s, names): seen(s) for s in search_all(client, everything)}


def seen(shown: Shown) -> Seen:
    retracted = shown.record.status == records_pb2.STATUS_RETRACTED
    return Seen(shown.record.version, "retracted" if retracted else "active", shown.received_from)


def differences(observed: Holdings, expected: Expected) -> list[str]:
    """Each way the federation differs from the expectation, one line each; empty when it matches."""
    problems: list[str] = []
    for agency, wanted in expected.items():
        held = observed.get(agency, {})
        for name, (version, status) in sorted(wanted.items()):
            seen = held.get(name)
            if seen is None:
                problems.append(f"{agency} misses {name} (v{version}, {status})")
            elif seen.state() != (version, status):
                problems.append(f"{agency} holds {name} v{seen.version} {seen.status}, not v{version} {status}")
        problems.extend(f"{agency} holds {name}, which should never reach it" for name in sorted(held.keys() - wanted))
    return problems


def wait_for(
    expected: Expected, clients: Mapping[str, Client], names: Names, timeout: float
) -> tuple[Holdings, list[str], float]:
    """Poll every liaison until the holdings match and stay matched for SETTLE seconds, or time out.

    Returns the last holdings seen, what still differs (empty on success) and
    the seconds it took. Staying matched matters: a record that must *not*
    arrive would arrive by the next scheduled pull, so matching once proves little.
    """
    start = time.monotonic()
    matched_since: float | None = None
    while True:
        observed = {agency: observe(client, names) for agency, client in clients.items()}
        problems = differences(observed, expected)
        now = time.monotonic()
        if problems:
            matched_since = None
        elif matched_since is None:
            matched_since = now
        elif now - matched_since >= SETTLE:
            return observed, [], matched_since - start
        if now - start > timeout:
            return observed, problems, now - start
        time.sleep(POLL)
