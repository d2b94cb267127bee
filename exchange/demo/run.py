"""`exchange demo`: docs/scenarios.md's story on a four-node federation, on real parts.

Makes a throwaway federation PKI, starts the node of every agency in nodes/
(JPN-NPA, USA-DTSF, KOR-KNPA, GBR-NPSA) as a separate process with the
``[[peers]]`` of its node.toml, and has each agency's analyst submit the
samples of nodes/<AGENCY>/samples over gRPC. The nodes' own pull schedules
move the records; the demo only watches, through each liaison officer's
queries, until every agency holds exactly what its markings allow, then does
the same for a revision and a retraction, and shows what each liaison sees.

It stops every process it started (SIGTERM, then SIGKILL after a timeout)
however it ends, Ctrl-C and SIGTERM included, and ends with one JSON line
summarising who holds what, for scripts and tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from exchange.client import Client
from exchange.core.manifest import node_dns_name
from exchange.demo.federation import Federation, find_nodes_dir, shielded_from_signals, sigterm_interrupts
from exchange.demo.story import (
    PLAN,
    RETRACTED,
    RETRACTION_REASON,
    REVIEWED,
    REVISED,
    TRANSLATED,
    Holdings,
    Names,
    Sample,
    expected_holdings,
    name_of,
    search_all,
    wait_for,
)
from exchange.drafts import read_draft
from exchange.errors import ExchangeError, NotFound, TransportError
from exchange.render import Shown, banner, combined_marking, record_lines, table_lines
from exchange.store.migrate import database_errors
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, query_pb2, records_pb2, review_pb2, submission_pb2

__all__ = ["run_demo"]

SYNC_TIMEOUT = 20.0  # seconds for the schedules to deliver one round of changes everywhere
SIGHTED = "sns-approach"  # the JPN-NPA record USA-DTSF reports a sighting on
SIGHTING_NOTE = "the same recruiter approached an engineer at a US materials maker (fictional)"
JUNIOR = ("JPN-NPA", "ito")  # a liaison cleared below what the node holds
HANDLE = "@HIRO_TalentBridge"  # the fake recruiter that JPN-NPA and GBR-NPSA both saw


def say(text: str = "") -> None:
    print(text, flush=True)


def _framed(shown: list[Shown], indent: str = "     ") -> None:
    """A table of records between the banners of the most sensitive one, as classified systems print."""
    top = banner(s.record for s in shown)
    for line in [top, *table_lines(shown), top] if shown else [top]:
        say(indent + line)


@dataclass
class Outcome:
    holdings: Holdings = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    junior_sees: list[str] = field(default_factory=list)


class Story:
    """The steps, in order; each says what is enforced and why."""

    def __init__(self, federation: Federation, nodes_dir: Path, stack: ExitStack) -> None:
        self.fed = federation
        self.nodes_dir = nodes_dir
        self.stack = stack
        self.names: Names = {}
        self.refs: dict[str, records_pb2.RecordRef] = {}
        self.liaisons: dict[str, Client] = {}
        self.analysts: dict[str, Client] = {}
        self.held: dict[str, submission_pb2.Receipt] = {}  # sample name -> receipt of a draft held for review
        self.outcome = Outcome()

    def tell(self) -> Outcome:
        self.make_pki()
        self.start_nodes()
        self.submit_samples()
        say("4. Nobody calls pull: each node's own schedule pulls its peers every ~1 s (set by the demo).")
        if self.sync("Waiting until every liaison officer sees exactly what the markings allow", changed=False):
            self.revise_and_retract()
            self.approve_held()
            self.sync("Waiting for the schedules to carry the new versions", changed=True)
        self.show_liaison_views()
        self.show_translation()
        self.show_clearance()
        self.show_handle_search()
        self.show_feedback()
        self.show_expiry()
        return self.outcome

    def make_pki(self) -> None:
        say("Exchange demo: four agencies share indicators of technology-transfer circumvention, in the")
        say('spirit of the NPA\'s "See, Stop, Share" (よく見る・立ち止まる・共有する): early, and only with')
        say("the right partners. Every name, address and account below is fictional.")
        say()
        say(f"1. A throwaway federation PKI in {self.fed.pki}: one CA per agency, node and user")
        say("   certificates, an Ed25519 record-signing key per agency, and the manifest every node trusts.")
        self.fed.make_pki()

    def start_nodes(self) -> None:
        say("2. Four nodes start, each its own `exchange node serve` process: gRPC over mutual TLS on")
        say("   loopback, SQLite. Nodes pull, never push; each pulls the partners listed in its node.toml:")
        self.fed.start()
        for agency, node in self.fed.nodes.items():
            pid = node.process.pid if node.process else "-"
            say(f"     {agency:<9} pid {pid!s:<7} port {node.port:<6} accredited {node.accreditation:<13} "
                f"pulls from {', '.join(node.peers) or 'no one'}")
        self.fed.wait_until_serving()
        for agency, node in self.fed.nodes.items():
            self.liaisons[agency] = self.stack.enter_context(self.fed.client(agency, node.liaison))
        say("   All four answer. A partner serves a puller only what the puller may hold; a node relays a")
        say("   partner's record only if its marking allows relay (not ORCON, TLP:RED or TLP:AMBER+STRICT).")

    def _analyst(self, agency: str) -> Client:
        if agency not in self.analysts:
            client = self.fed.client(agency, self.fed.nodes[agency].analyst)
            self.analysts[agency] = self.stack.enter_context(client)
        return self.analysts[agency]

    def submit_samples(self) -> None:
        say("3. Analysts submit records to their own node, which signs each as its agency. The marking")
        say("   (classification, release list, TLP, caveats) is inside the signed bytes: no relay can alter it.")
        for agency in self.fed.nodes:
            samples = [s for s in PLAN if s.agency == agency]
            if samples:
                say(f"   {agency}'s analyst {self.fed.nodes[agency].analyst}:")
                analyst = self._analyst(agency)
                for sample in samples:
                    self._submit(analyst, sample)

    def _sample_path(self, agency: str, file_name: str) -> Path:
        return self.nodes_dir / agency / "samples" / file_name

    def _submit(self, analyst: Client, sample: Sample) -> None:
        draft, reference = read_draft(str(self._sample_path(sample.agency, f"{sample.name}.json")))
        receipt = analyst.call(analyst.submit, submission_pb2.SubmitRequest(draft=draft, reference=reference)).receipt
        self.names[(receipt.ref.originator, receipt.ref.record_id)] = sample.name
        self.refs[sample.name] = receipt.ref
        marking = combined_marking([records_pb2.Record(ref=receipt.ref, content=draft)])
        reach = ", ".join(sorted(sample.reach)) or "no partner"
        say(f"     {sample.name} ({receipt.ref.record_id[:8]}): {draft.title}")
        say(f"         {marking.text() if marking is not None else '-'}")
        if receipt.held_draft_id:
            self.held[sample.name] = receipt
            say(f"         HELD for release review as draft {receipt.held_draft_id[:8]}: no partner gets it until a")
            say(f"         disclosure officer approves it. Then expected at {reach}. Why: {sample.why}")
            return
        say(f"         expected at {reach}. Why: {sample.why}")

    def sync(self, waiting: str, *, changed: bool) -> bool:
        """Watch the schedules deliver; False (after saying what is missing where) if they do not in time."""
        say(f"   {waiting}...")
        expected = expected_holdings(self.fed.nodes, changed=changed)
        try:
            holdings, problems, seconds = wait_for(expected, self.liaisons, self.names, SYNC_TIMEOUT)
        except TransportError:
            self.fed.check_alive()  # a node that died says so, rather than "unreachable"
            raise
        self.outcome.holdings, self.outcome.problems = holdings, problems
        if problems:
            say(f"   NOT CONVERGED after {seconds:.1f} s:")
            for problem in problems:
                say(f"     {problem}")
            return False
        counts = ", ".join(f"{agency} {len(held)}" for agency, held in holdings.items())
        say(f"   Reached in {seconds:.1f} s, and nothing more arrived over the next pull rounds: {counts} records.")
        return True

    def revise_and_retract(self) -> None:
        say("5. Versions travel too, by the same schedules. Only the originator issues versions:")
        jpn, usa = self._analyst("JPN-NPA"), self._analyst("USA-DTSF")
        draft, _ = read_draft(str(self._sample_path("JPN-NPA", f"{REVISED}.v2.json")))
        revised = jpn.call(jpn.revise, submission_pb2.ReviseRequest(ref=self.refs[REVISED], base_version=1,
                                                                    draft=draft)).receipt
        say(f"   JPN-NPA revises {REVISED} to v{revised.version}: a third platform account paid through the same")
        say("   bank account. A revision names the version it revises, so two revisions can never both win.")
        retracted = usa.call(usa.retract, submission_pb2.RetractRequest(ref=self.refs[RETRACTED], base_version=1,
                                                                        reason=RETRACTION_REASON)).receipt
        say(f'   USA-DTSF retracts {RETRACTED} (v{retracted.version}): "{RETRACTION_REASON}".')
        say("   A retraction is a signed version without content, and a signed withdrawal tells every")
        say("   earlier holder, relays included, to purge the earlier payload.")

    def approve_held(self) -> None:
        """JPN-NPA's disclosure officer approves the draft held since step 3 (it stayed unserved meanwhile)."""
        receipt = self.held.get(REVIEWED)
        if receipt is None:
            raise ExchangeError(f"{REVIEWED} was not held for review: check JPN-NPA's [review] pre-approvals")
        node = self.fed.nodes[receipt.ref.originator]
        with self.fed.client(receipt.ref.originator, node.officer) as officer:
            draft = officer.call(officer.get_draft, review_pb2.GetDraftRequest(draft_id=receipt.held_draft_id)).draft
            answer = officer.call(officer.approve_draft, review_pb2.ApproveDraftRequest(draft_id=draft.draft_id))
        say(f"   Release review: {REVIEWED} stayed held through those pull rounds (nobody, not even JPN-NPA's own")
        say(f"   liaison, was served it). JPN-NPA's disclosure officer {node.officer} reviews it ({draft.rule}) and")
        say(f"   approves: released as v{answer.draft.released_version}, signed now, audited with who approved it.")
        say("   (The analyst cannot approve their own draft; widening a released marking needs two officers.)")

    def show_translation(self) -> None:
        agency, name = TRANSLATED
        reader = "USA-DTSF"
        say()
        say(f"   A Korean record with an English translation: {agency}'s analyst added it, signed with the record;")
        say(f"   {reader}'s liaison reads it in English (`exchange get --lang en`), the original beside it:")
        client = self.liaisons[reader]
        shown = Shown.from_held(client.call(client.get, query_pb2.GetRequest(ref=self.refs[name])).record)
        for line in record_lines(shown, "en"):
            if line.startswith(("Title", "Translations")):
                say(f"     {line}")

    def show_liaison_views(self) -> None:
        say("6. What each agency's liaison officer sees (`exchange query --include-retracted`). Each table is")
        say("   framed by the banner of the most sensitive record in it; `never here` says what the node was")
        say("   not given, and why. `relayed` records came from a partner other than their originator.")
        for agency, client in self.liaisons.items():
            node = self.fed.nodes[agency]
            shown = self._sorted(search_all(client, query_pb2.SearchRequest(include_retracted=True, page_size=500)))
            say()
            say(f"   {agency}: {node.liaison} (liaison, node accredited {node.accreditation}), {len(shown)} records")
            _framed(shown)
            self._explain(agency, shown)

    def _sorted(self, shown: list[Shown]) -> list[Shown]:
        return sorted(shown, key=lambda s: (s.record.ref.originator, name_of(s, self.names)))

    def _explain(self, agency: str, shown: list[Shown]) -> None:
        for s in shown:
            origin, via = s.record.ref.originator, s.received_from
            if via and via not in (agency, origin):
                say(f"     relayed: {name_of(s, self.names)} ({origin}'s) came from {via}, whose node may pass it on")
            if s.record.status == records_pb2.STATUS_RETRACTED:
                name = name_of(s, self.names)
                say(f"     retracted: {name} is kept as a content-free tombstone at v{s.record.version}")
        missing = [s for s in PLAN if agency != s.agency and agency not in s.reach]
        for sample in missing:
            say(f"     never here: {sample.name} ({sample.agency}'s): {sample.why}")
        if not missing:
            say(f"     never here: nothing; every record in the story was released to {agency}")

    def show_clearance(self) -> None:
        agency, handle = JUNIOR
        clearance = self.fed.nodes[agency].config.users[handle].clearance
        say()
        say(f"7. Clearance applies to people too. {agency}'s {handle} is cleared {clearance} only; on the same")
        say("   node, the same query shows them:")
        with self.fed.client(agency, handle) as junior:
            shown = self._sorted(search_all(junior, query_pb2.SearchRequest(include_retracted=True, page_size=500)))
            self.outcome.junior_sees = sorted(name_of(s, self.names) for s in shown)
            _framed(shown)
            try:
                junior.call(junior.get, query_pb2.GetRequest(ref=self.refs["sns-approach"]))
            except NotFound as error:
                say(f"   Asking for the CONFIDENTIAL sns-approach by id answers as if it did not exist: {error}.")
            else:
                raise ExchangeError(f"{handle}, cleared {clearance}, was shown a CONFIDENTIAL record")

    def show_handle_search(self) -> None:
        say(f'8. "Has anyone seen this handle?" Each liaison searches {HANDLE} (any type; case and')
        say("   full-width forms are folded). JPN-NPA finds its own record and GBR-NPSA's, which a partner relayed;")
        say("   GBR-NPSA finds only its own: JPN-NPA's is not released to it, and the answer does not hint it exists.")
        request = query_pb2.SearchRequest(observable=query_pb2.ObservableQuery(value=HANDLE))
        for agency in ("JPN-NPA", "GBR-NPSA"):
            shown = search_all(self.liaisons[agency], request)
            say(f"   {agency}'s {self.fed.nodes[agency].liaison}: {len(shown)} record(s)")
            _framed(shown)


    def _sightings(self, client: Client, ref: records_pb2.RecordRef) -> list[records_pb2.Sighting]:
        stub = liaison_pb2_grpc.LiaisonServiceStub(client.channel)  # type: ignore[no-untyped-call]
        return list(client.call(stub.Sightings, liaison_pb2.SightingsRequest(ref=ref)).sightings)

    def show_feedback(self) -> None:
        say(f"9. Feedback goes back to the originator. USA-DTSF's liaison saw {SIGHTED}'s fake recruiter in a")
        say("   US case and reports it (`exchange sighting RECORD --verdict seen`). USA-DTSF's node signs the")
        say("   sighting; JPN-NPA's node pulls it on its schedule. KOR-KNPA holds the record too, but is not told.")
        ref = self.refs[SIGHTED]
        usa = self.liaisons["USA-DTSF"]
        stub = liaison_pb2_grpc.LiaisonServiceStub(usa.channel)  # type: ignore[no-untyped-call]
        usa.call(stub.ReportSighting, liaison_pb2.ReportSightingRequest(
            ref=ref, verdict=records_pb2.VERDICT_SEEN, note=SIGHTING_NOTE))
        deadline = time.monotonic() + SYNC_TIMEOUT
        arrived: list[records_pb2.Sighting] = []
        while time.monotonic() < deadline and not arrived:
            arrived = self._sightings(self._analyst("JPN-NPA"), ref)
            time.sleep(0.3)
        if not arrived:
            self.outcome.problems.append(f"the sighting on {SIGHTED} did not reach JPN-NPA")
            say(f"   NOT ARRIVED after {SYNC_TIMEOUT:.0f} s: JPN-NPA holds no sighting on {SIGHTED}.")
            return
        for s in arrived:
            by = f"{s.reporter}'s {s.reported_by}" if s.reported_by else s.reporter
            say(f'   JPN-NPA\'s analyst sees, next to {SIGHTED}: seen by {by}: "{s.note}"')
        if self._sightings(self.liaisons["KOR-KNPA"], ref):
            self.outcome.problems.append(f"KOR-KNPA holds a sighting on {SIGHTED} that was not released to it")
            say("   KOR-KNPA HOLDS IT TOO: a sighting leaked.")
        else:
            say("   KOR-KNPA's liaison asks for the sightings on the same record: none.")
        self._show_relayed_holders()

    def _show_relayed_holders(self) -> None:
        """Who holds dprk-it-workers through a relay: USA-DTSF's node reported it when it served it."""
        name = "dprk-it-workers"
        liaison = self.liaisons["JPN-NPA"]
        stub = liaison_pb2_grpc.LiaisonServiceStub(liaison.channel)  # type: ignore[no-untyped-call]
        answer = liaison.call(stub.Disclosures, liaison_pb2.DisclosuresRequest(ref=self.refs[name]))
        direct = {d.partner for d in answer.disclosures}
        pulled = ", ".join(sorted(direct)) or "nobody"
        # Partners also pass copies to agencies that pulled from JPN-NPA too (kept once there):
        # those are listed as well, but the news is who holds it *only* through a partner.
        relayed = ", ".join(f"{r.holder} via {r.via} ({'reported by ' + r.via if r.source == 'reported' else 'audit'})"
                            for r in answer.relayed if r.holder not in direct) or "none reported yet"
        say(f"   Relays are reported the same way: `exchange disclosures {name}` at JPN-NPA lists who pulled it")
        say(f"   from JPN-NPA ({pulled}) and who holds it only through a partner: {relayed}.")

    def show_expiry(self) -> None:
        say("10. Records outlive their validity. JPN-NPA's analyst files an old case valid for 2020-2021 only")
        say("   (kept at home: released to no partner). A search leaves it out; --include-expired shows it,")
        say("   labelled expired.")
        analyst = self._analyst("JPN-NPA")
        draft = records_pb2.RecordDraft(
            kind=records_pb2.KIND_ACTOR, title="旧フロント企業（2021年に解散）",
            summary="2020年から2021年にかけて半導体製造装置の部品を迂回輸出していたフロント企業。",
            countries=["JPN"], sectors=["semiconductors"], confidence=60,
            observables=[records_pb2.Observable(type="company_name", value="Old Harbour Trading KK")],
            marking=records_pb2.Marking(classification="RESTRICTED", tlp="AMBER"),
        )
        draft.validity.not_before.FromJsonString("2020-01-01T00:00:00Z")
        draft.validity.not_after.FromJsonString("2021-12-31T23:59:59Z")
        receipt = analyst.call(analyst.submit, submission_pb2.SubmitRequest(draft=draft)).receipt
        query = query_pb2.SearchRequest(observable=query_pb2.ObservableQuery(value="Old Harbour Trading KK"))
        hidden = search_all(self.liaisons["JPN-NPA"], query)
        query.include_expired = True
        shown = search_all(self.liaisons["JPN-NPA"], query)
        found = [s for s in shown if s.record.ref.record_id == receipt.ref.record_id]
        say(f"   Without --include-expired: {len(hidden)} record(s). With it:")
        _framed(shown)
        if hidden or not found or not found[0].expired:
            self.outcome.problems.append("the expired record was not hidden, or not labelled expired")


def _exchange_command() -> str:
    beside = Path(sys.executable).with_name("exchange")
    return str(beside) if beside.exists() else "exchange"


def _buf_command() -> str:
    installed = Path("node_modules/.bin/buf")  # by `make install`, in the repository the demo runs from
    return str(installed) if installed.exists() else "buf"


def _how_to_use(fed: Federation) -> None:
    command = _exchange_command()
    say()
    say("The federation keeps running (--keep-running). From another terminal, query it as a liaison:")
    for agency, node in fed.nodes.items():
        say(f"  {command} query --profile {fed.profile(agency, node.liaison)} --include-retracted")
    gbr = fed.profile("GBR-NPSA", fed.nodes["GBR-NPSA"].liaison)
    say(f"  {command} query --profile {gbr} --value @kenta_dev_tokyo    # a platform handle, relayed to GBR-NPSA")
    say("or submit as an analyst (drafts like nodes/*/samples/*.json):")
    say(f"  {command} submit --profile {fed.profile('KOR-KNPA', fed.nodes['KOR-KNPA'].analyst)} FILE.json")
    jpn, pki = fed.nodes["JPN-NPA"], fed.pki / "JPN-NPA"
    say("or list its services (then call them) with buf curl, through gRPC server reflection:")
    say(f"  {_buf_command()} curl --protocol grpc --servername {node_dns_name('JPN-NPA')} --cacert {pki / 'ca.crt'}"
        f" --cert {pki / 'users' / jpn.liaison}.crt --key {pki / 'users' / jpn.liaison}.key"
        f" --list-services https://127.0.0.1:{jpn.port}")
    say(f"Node logs: {fed.work}/<AGENCY>.log. Stop everything with Ctrl-C here, or: kill {os.getpid()}")


def wait_until_stopped(fed: Federation) -> None:
    """--keep-running: say how to use the running federation, then wait for Ctrl-C or SIGTERM."""
    try:  # from the first line on: a signal right after the instructions must not count as an interruption
        _how_to_use(fed)
        while True:
            fed.check_alive()
            time.sleep(1.0)
    except KeyboardInterrupt:
        say()


def _summary(fed: Federation, outcome: Outcome, seconds: float) -> str:
    holdings = {agency: {name: vars(seen) for name, seen in sorted(held.items())}
                for agency, held in outcome.holdings.items()}
    nodes = {agency: {"pid": node.process.pid if node.process else None, "port": node.port,
                      "exit_code": node.process.returncode if node.process else None}
             for agency, node in fed.nodes.items()}
    return json.dumps({"converged": not outcome.problems, "problems": outcome.problems, "holdings": holdings,
                       "junior_sees": {"/".join(JUNIOR): outcome.junior_sees}, "nodes": nodes,
                       "seconds": round(seconds, 1)}, ensure_ascii=False)


def _run(fed: Federation, nodes_dir: Path, keep_running: bool) -> Outcome:
    """The story, then (with --keep-running) the wait; the nodes are stopped however it ends."""
    with sigterm_interrupts():
        stack = ExitStack()  # the story's gRPC channels
        try:
            outcome = Story(fed, nodes_dir, stack).tell()
            if keep_running:
                wait_until_stopped(fed)
        finally:
            with shielded_from_signals():
                stack.close()  # channels first, so no call is in flight while the nodes drain
                say(f"11. Stopping the {len(fed.nodes)} node processes (SIGTERM; SIGKILL after a timeout)...")
                fed.stop()
                codes = ", ".join(f"{a} {n.process.returncode}" for a, n in fed.nodes.items() if n.process)
                say(f"   All stopped (exit codes: {codes}).")
    return outcome


def run_demo(
    nodes: str | None = None, keep: bool = False, keep_running: bool = False, postgres: str | None = None
) -> int:
    """Tell the story; 0 when every agency ended up holding exactly what it should, else 1.

    ``postgres``: a PostgreSQL URL; each node's database is a schema of its own there."""
    nodes_dir = find_nodes_dir(nodes)
    work = Path(tempfile.mkdtemp(prefix="exchange-demo-"))
    started = time.monotonic()
    keep_work = keep
    fed: Federation | None = None
    try:
        with database_errors(postgres or ""):
            fed = Federation(nodes_dir, work, postgres)
        outcome = _run(fed, nodes_dir, keep_running)
        keep_work = keep or bool(outcome.problems)
    except Exception:
        keep_work = True  # the error names a node log in the folder; Ctrl-C (not an Exception) cleans up
        raise
    finally:
        if keep_work:
            schemas = f" and PostgreSQL schemas {', '.join(fed.schemas)}" if fed and fed.schemas else ""
            say(f"   Kept {work} (PKI, databases, node logs){schemas}.")
        else:
            shutil.rmtree(work, ignore_errors=True)
            if fed is not None:
                fed.drop_schemas()
    if outcome.problems:
        say("The federation did not converge: see NOT CONVERGED above for which agency misses what.")
    say("Summary (JSON):")
    say(_summary(fed, outcome, time.monotonic() - started))
    return 1 if outcome.problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
