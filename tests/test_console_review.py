"""The console's release review, translations and sightings in a real browser (Debian's headless
Chromium via Playwright), against real nodes: JPN-NPA reviews its analysts' drafts
(``start_node(review=...)``) and syncs with USA-DTSF on a schedule, both ways.

One federation for the module (see tests/test_console.py for the browser and console set-up).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from exchange.client import load_profile
from exchange.console.run import console_settings
from exchange.console.serve import ConsoleThread
from exchange.core.review import Preapproval, ReviewPolicy
from exchange.node.server import Node
from exchange.v1 import query_pb2, records_pb2, review_pb2, review_pb2_grpc, submission_pb2
from tests.backends import Backend
from tests.federation import Federation, UserClient, draft, make_federation
from tests.test_console import CHROMIUM, LAPTOP, _launch, banners

pytestmark = pytest.mark.slow

# Only UNCLASSIFIED//TLP:CLEAR is released without review; anything else waits for an officer.
POLICY = ReviewPolicy((Preapproval(frozenset({"*"}), "UNCLASSIFIED", frozenset({"CLEAR"})),))
ENGLISH_TITLE = "Procurement through a front company in a third country"


@dataclass
class World:
    fed: Federation
    jpn: Node
    usa: Node
    released: records_pb2.RecordRef  # JPN-NPA's record, released at once, with a translation
    screenshots: Path


def _user(fed: Federation, node: Node, agency: str, handle: str) -> UserClient:
    return UserClient.of(fed.user_channel(node, agency, handle))


def _held(fed: Federation, node: Node, agency: str, handle: str, ref: records_pb2.RecordRef) -> bool:
    user = _user(fed, node, agency, handle)
    try:
        user.query.Get(query_pb2.GetRequest(ref=ref), timeout=10)
        return True
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False
    finally:
        user.channel.close()


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("not within the time allowed")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console-review")
    fed = make_federation(root)
    fed.backend = Backend("sqlite")  # the console is a client: its tests need no second back end
    jpn = fed.start_node("JPN-NPA", root / "jpn", peers=("USA-DTSF",), schedule=True, review=POLICY)
    usa = fed.start_node("USA-DTSF", root / "usa", peers=("JPN-NPA",), schedule=True)
    sato = _user(fed, jpn, "JPN-NPA", "sato")
    released = sato.submission.Submit(submission_pb2.SubmitRequest(draft=draft(
        title="第三国のフロント企業を通じた調達", summary="ABC商事が第三国経由で装置を調達。",
        translations=[records_pb2.Translation(language="en", title=ENGLISH_TITLE,
                                              summary="ABC Shoji buys tools via a third country.")],
        marking=records_pb2.Marking(classification="UNCLASSIFIED", releasable_to=["USA-DTSF"], tlp="CLEAR"),
    )), timeout=10).receipt
    sato.channel.close()
    assert not released.held_draft_id  # pre-approved: released at once
    shots = Path(os.environ.get("EXCHANGE_SCREENSHOTS", "") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    yield World(fed, jpn, usa, released.ref, shots)
    fed.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    with sync_playwright() as playwright:
        yield _launch(playwright)


@pytest.fixture
def open_console(world: World, browser: Browser, tmp_path: Path) -> Iterator[Callable[[str, str], Page]]:
    """A signed-in browser page on a console for ``handle`` of ``agency``."""
    started: list[tuple[ConsoleThread, BrowserContext]] = []

    def start(agency: str, handle: str) -> Page:
        path = world.fed.pki_dir / agency / "users" / f"{handle}.profile.toml"
        settings = console_settings(load_profile(path), path)
        settings = dataclasses.replace(settings, state_file=tmp_path / f"{handle}.json")
        console = ConsoleThread(settings).start()
        context = browser.new_context(viewport={"width": LAPTOP["width"], "height": LAPTOP["height"]},
                                      timezone_id="UTC", locale="en-GB")
        started.append((console, context))
        page = context.new_page()
        response = page.goto(console.console.guard.login_url)
        assert response is not None and response.ok, response and response.status
        page.wait_for_selector('html[data-tz="UTC"]', state="attached")
        return page

    yield start
    for console, context in started:
        context.close()
        console.stop()
    # No page of these tests broke the content security policy (the browser would have reported it).
    assert [c.console.csp_reports for c, _ in started] == [[] for _ in started]


def nav(page: Page) -> list[str]:
    return [a.inner_text() for a in page.locator("header nav a").all()]


def _submit_form(page: Page, title: str, *, translation: tuple[str, str, str] | None = None) -> None:
    page.goto(_base(page) + "/submit")
    page.get_by_label("Kind").select_option("technique")
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Summary", exact=True).fill("第三国経由の調達。")
    page.get_by_label("Classification").select_option("CONFIDENTIAL")
    page.get_by_label("TLP").select_option("AMBER")
    page.locator('input[name="releasable_to"][value="USA-DTSF"]').check()
    if translation is not None:
        language, english, summary = translation
        page.get_by_label("Translation language").fill(language)
        page.get_by_label("Translated title").fill(english)
        page.get_by_label("Translated summary").fill(summary)
    page.get_by_role("button", name="Sign and submit").click()


def _base(page: Page) -> str:
    return "/".join(page.url.split("/")[:3])


def _draft_id(page: Page) -> str:
    match = re.search(r"/review/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match[1]


def test_a_draft_is_held_the_author_cannot_approve_it_and_an_officer_releases_it(world, open_console):
    analyst = open_console("JPN-NPA", "sato")
    _submit_form(analyst, "保留される迂回調達", translation=("en", "Held procurement", "Held until approved."))
    # Held: the draft's page, not a record's; CONFIDENTIAL in the banner; no partner has it.
    assert "/review/" in analyst.url and "done=held" in analyst.url
    draft_id = _draft_id(analyst)
    assert analyst.locator("#state").inner_text() == "held"
    assert "Held for review: 1 disclosure officer approval(s)" in analyst.locator(".done").inner_text()
    assert banners(analyst)[0][0].startswith("CONFIDENTIAL")
    assert analyst.locator("#approvals").inner_text() == "0 of 1"
    assert analyst.locator("#translations").get_by_text("en: Held procurement").is_visible()
    originator, record_id = analyst.locator("#record-ref").inner_text().split("/")
    ref = records_pb2.RecordRef(originator=originator, record_id=record_id)
    time.sleep(1.0)  # several scheduled pulls by USA-DTSF
    assert not _held(world.fed, world.usa, "USA-DTSF", "rchen", ref)

    # The author (an analyst) tries to approve: one sentence, and the draft stays held.
    analyst.get_by_role("button", name="Approve").click()
    assert analyst.locator("#message").inner_text() == "Your node refused: analyst may not call ApproveDraft."
    assert analyst.locator("#state").inner_text() == "held"
    # The console learned the role: no approve button, no watch list; the drafts page stays.
    assert analyst.get_by_role("button", name="Approve").count() == 0
    assert nav(analyst) == ["Search", "Submit", "Export", "Review"]

    officer = open_console("JPN-NPA", "tanaka")
    assert officer.url.endswith("/review")  # a disclosure officer starts at the queue
    assert nav(officer) == ["Review"]
    row = officer.locator("#drafts tbody tr", has_text="保留される迂回調達")
    assert "sato" in row.inner_text() and "held · 0 of 1" in row.inner_text()
    officer.screenshot(path=str(world.screenshots / "review-queue.png"), full_page=True)
    row.get_by_role("link").click()
    assert officer.locator("#author").inner_text() == "sato"
    assert "CONFIDENTIAL" in officer.locator("#marking-change").inner_text()
    assert officer.locator("#rule").inner_text()  # the rule that says how many approvals it needs
    officer.screenshot(path=str(world.screenshots / "review-draft.png"), full_page=True)
    officer.get_by_role("button", name="Approve").click()
    assert officer.locator(".done").inner_text() == "Approved and released as version 1."
    assert officer.locator("#state").inner_text() == "released"
    assert officer.locator("#approved-by").inner_text().startswith("tanaka")
    _eventually(lambda: _held(world.fed, world.usa, "USA-DTSF", "rchen", ref))  # reaches the partner by sync
    # The analyst's own list says released.
    analyst.goto(_base(analyst) + f"/review/{draft_id}")
    assert analyst.locator("#state").inner_text() == "released"


def test_a_rejection_says_why_to_the_analyst_and_needs_a_reason(world, open_console):
    sato = _user(world.fed, world.jpn, "JPN-NPA", "sato")
    held = sato.submission.Submit(submission_pb2.SubmitRequest(draft=draft(
        title="却下される下書き",
        marking=records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER"))),
        timeout=10).receipt
    sato.channel.close()
    officer = open_console("JPN-NPA", "yamada")
    base = _base(officer)
    officer.goto(f"{base}/review/{held.held_draft_id}")
    officer.get_by_role("button", name="Reject").click()
    assert officer.locator("#message").inner_text() == "Give a reason for the rejection: the analyst sees it."
    officer.get_by_label("Reason").fill("出典が不明確です <b>要確認</b>")
    officer.get_by_role("button", name="Reject").click()
    assert officer.locator(".done").inner_text() == "Rejected; the analyst sees your reason."
    assert officer.get_by_role("button", name="Approve").count() == 0  # nothing left to decide

    analyst = open_console("JPN-NPA", "sato")
    base = _base(analyst)
    analyst.goto(f"{base}/review?all=on")
    row = analyst.locator("#drafts tbody tr", has_text="却下される下書き")
    assert "rejected: 出典が不明確です <b>要確認</b>" in row.inner_text()  # markup is text
    row.get_by_role("link").click()
    assert analyst.locator("#reason").inner_text() == "Rejected: 出典が不明確です <b>要確認</b>"


def test_a_draft_above_the_officers_clearance_looks_like_none(world, open_console):
    sato = _user(world.fed, world.jpn, "JPN-NPA", "sato")
    held = sato.submission.Submit(submission_pb2.SubmitRequest(draft=draft(
        title="機密の下書き",
        marking=records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER"))),
        timeout=10).receipt
    sato.channel.close()
    assert held.held_draft_id
    officer = open_console("JPN-NPA", "mori")  # cleared to RESTRICTED only
    base = _base(officer)
    assert officer.locator("#drafts", has_text="機密の下書き").count() == 0
    seen = officer.goto(f"{base}/review/{held.held_draft_id}")
    assert seen is not None and seen.status == 404
    unseen = officer.locator("#message").inner_text()
    missing = officer.goto(f"{base}/review/00000000-0000-4000-8000-000000000000")
    assert missing is not None and missing.status == 404
    assert officer.locator("#message").inner_text() == unseen
    # A forged approval (no session token) is refused before it reaches the node.
    response = officer.request.post(f"{base}/review/{held.held_draft_id}/approve",
                                    headers={"Origin": base}, form={"csrf": "wrong"})
    assert response.status == 403


def test_translation_beside_the_original_and_a_partners_sighting_reach_the_originator(world, open_console):
    ref = world.released
    path = f"/record/{ref.originator}/{ref.record_id}"
    # The partner's liaison officer reports a sighting through the console of USA-DTSF.
    _eventually(lambda: _held(world.fed, world.usa, "USA-DTSF", "rchen", ref))
    partner = open_console("USA-DTSF", "rchen")
    base = _base(partner)
    partner.goto(base + path)
    partner.locator("#report-sighting").get_by_label("Verdict").select_option("confirmed")
    partner.get_by_label("Note").fill("Same front company in our case 2026-114.")
    partner.get_by_role("button", name="Report to the originator").click()
    assert partner.locator(".done").inner_text() == "Sighting reported; the originator receives it at its next pull."

    analyst = open_console("JPN-NPA", "sato")
    base = _base(analyst)
    analyst.goto(base + path)
    translations = analyst.locator("#translations")
    assert "Original: 第三国のフロント企業を通じた調達" in translations.inner_text()
    assert translations.locator('[lang="en"]').inner_text().startswith(f"en: {ENGLISH_TITLE}")
    assert analyst.locator("#report-sighting").count() == 0  # no sighting on the own record

    def arrived() -> bool:
        analyst.reload()
        return analyst.locator("#sightings-table").count() == 1

    _eventually(arrived)
    row = analyst.locator("#sightings-table tbody tr").first.inner_text()
    assert "USA-DTSF · rchen" in row and "confirmed" in row and "case 2026-114" in row
    assert "confirmed 1" in analyst.locator("#sighting-counts").inner_text()  # HeldRecord.sightings
    analyst.screenshot(path=str(world.screenshots / "record-sightings.png"), full_page=True)


def test_a_bad_translation_is_named_on_the_form(world, open_console):
    analyst = open_console("JPN-NPA", "sato")
    _submit_form(analyst, "翻訳の誤り", translation=("not a tag!", "Title", ""))
    assert "/submit" in analyst.url
    assert analyst.locator("#err-translation_language").is_visible()


def test_approving_a_draft_whose_base_is_no_longer_current_is_one_sentence(world, open_console):
    sato = _user(world.fed, world.jpn, "JPN-NPA", "sato")
    secret = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=[], tlp="AMBER")
    first = sato.submission.Submit(submission_pb2.SubmitRequest(draft=draft(title="古い版", marking=secret)),
                                   timeout=10).receipt
    assert not first.held_draft_id  # shared with no partner: nothing to review

    def widen(partner: str) -> str:
        wider = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=[partner], tlp="AMBER")
        revise = submission_pb2.ReviseRequest(ref=first.ref, base_version=1, draft=draft(title="古い版", marking=wider))
        receipt = sato.submission.Revise(revise, timeout=10).receipt
        assert receipt.held_draft_id
        return str(receipt.held_draft_id)

    released, stale = widen("USA-DTSF"), widen("KOR-KNPA")
    sato.channel.close()
    officers = [review_pb2_grpc.ReviewServiceStub(world.fed.user_channel(world.jpn, "JPN-NPA", h))
                for h in ("tanaka", "yamada")]
    for officer in officers:
        officer.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=released), timeout=10)  # now version 2
    officers[0].ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=stale), timeout=10)
    page = open_console("JPN-NPA", "yamada")
    page.goto(_base(page) + f"/review/{stale}")
    assert page.locator("#approvals").inner_text() == "1 of 2"
    page.get_by_role("button", name="Approve").click()
    assert page.locator("#message").inner_text() == (
        "Your node refused: version 1 is not current (the current version is 2).")
    assert page.locator("#state").inner_text() == "held"
