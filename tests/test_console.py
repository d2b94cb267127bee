"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, against
real nodes of a running test federation (mutual TLS, sync on a schedule), the console itself
serving on 127.0.0.1 exactly as ``exchange console`` does.

Nothing is downloaded: Playwright launches /usr/bin/chromium (.ci/run installs it with apt).
One federation for the module; each test signs a console in once (its link works once).
``EXCHANGE_SCREENSHOTS=docs/screenshots`` saves the main pages' screenshots there (the README
shows them); otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Playwright, sync_playwright

from exchange.client import load_profile
from exchange.console.app import templates
from exchange.console.i18n import MESSAGES
from exchange.console.run import console_settings
from exchange.console.serve import ConsoleThread
from exchange.console.views import Banner, Row
from exchange.errors import ConfigError, NotFound
from exchange.node.server import Node
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.backends import Backend
from tests.federation import Federation, UserClient, draft, free_port, make_federation

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1366, "height": 768}
PACKAGE = Path(__file__).resolve().parent.parent / "exchange" / "console"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "<script>alert(document.cookie)</script>"
# The colours agencies use, as the browser computes them (exchange/console/static/console.css).
BLUE, GREEN, RED = "rgb(0, 51, 160)", "rgb(0, 122, 51)", "rgb(200, 16, 46)"


# Translations are signed with the record once the protocol has them (RecordDraft.translations).
HAS_TRANSLATIONS = "translations" in records_pb2.RecordDraft.DESCRIPTOR.fields_by_name
TRANSLATION_TITLE = "Circumvention procurement of semiconductor manufacturing technology"
TRANSLATED: dict[str, object] = (
    {"translations": [getattr(records_pb2, "Translation")(language="en", title=TRANSLATION_TITLE,  # noqa: B009
                                                          summary="ABC Shoji buys tools via a third country.")]}
    if HAS_TRANSLATIONS else {}
)


@dataclass
class World:
    fed: Federation
    jpn: Node
    usa: Node
    kor: Node
    refs: dict[str, records_pb2.RecordRef]
    screenshots: Path


def _marking(classification: str, releasable: list[str], tlp: str = "AMBER") -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=releasable, tlp=tlp)


def _submit(fed: Federation, node: Node, agency: str, handle: str, **fields: object) -> records_pb2.RecordRef:
    user = UserClient.of(fed.user_channel(node, agency, handle))
    receipt = user.submission.Submit(submission_pb2.SubmitRequest(draft=draft(**fields))).receipt
    user.channel.close()
    return receipt.ref


def _held_by(fed: Federation, node: Node, agency: str, handle: str, ref: records_pb2.RecordRef,
             timeout: float = 30.0) -> records_pb2.HeldRecord:
    """The record once ``node`` holds it (sync runs on a schedule)."""
    user = UserClient.of(fed.user_channel(node, agency, handle))
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return user.query.Get(query_pb2.GetRequest(ref=ref)).record  # type: ignore[no-any-return]
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        user.channel.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console")
    fed = make_federation(root)
    fed.backend = Backend("sqlite")  # the console is a client: its tests need no second back end
    kor = fed.start_node("KOR-KNPA", root / "kor")
    # A hostile partner: its analyst signs titles that are markup (valid records all the same).
    refs = {
        "img": _submit(fed, kor, "KOR-KNPA", "kimjh", title=HOSTILE_IMG, summary='<script>alert("summary")</script>',
                       marking=_marking("UNCLASSIFIED", ["JPN-NPA"], "GREEN")),
        "script": _submit(fed, kor, "KOR-KNPA", "kimjh", title=HOSTILE_SCRIPT,
                          observables=[records_pb2.Observable(type="platform_handle", value="@Recruit_Tanaka"),
                                       records_pb2.Observable(type="domain", value="x.example")],
                          marking=_marking("UNCLASSIFIED", ["JPN-NPA"], "GREEN")),
    }
    jpn = fed.start_node("JPN-NPA", root / "jpn", peers=("KOR-KNPA",), schedule=True)
    usa = fed.start_node("USA-DTSF", root / "usa", peers=("JPN-NPA",), schedule=True)
    refs["confidential"] = _submit(
        fed, jpn, "JPN-NPA", "sato", title="半導体製造技術の迂回調達", **TRANSLATED,
        summary="ABC商事が第三国経由で半導体製造装置を調達。\n반도체 장비 우회 조달 투자.\n"
                "Front company buys lithography parts.",
        observables=[records_pb2.Observable(type="company_name", value="ABC商事"),
                     records_pb2.Observable(type="email", value="sales@abc-shoji.example")],
        marking=_marking("CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"]),
    )
    refs["secret"] = _submit(fed, jpn, "JPN-NPA", "sato", title="量子技術研究者への接触", kind=records_pb2.KIND_ACTOR,
                             marking=_marking("SECRET", []))
    for key in ("img", "script"):
        _held_by(fed, jpn, "JPN-NPA", "suzuki", refs[key])
    _held_by(fed, usa, "USA-DTSF", "rchen", refs["confidential"])  # so the record has a disclosure
    shots = Path(os.environ.get("EXCHANGE_SCREENSHOTS", "") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    yield World(fed, jpn, usa, kor, refs, shots)
    fed.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


ConsoleFactory = Callable[..., ConsoleThread]


@pytest.fixture
def consoles(world: World, tmp_path: Path) -> Iterator[ConsoleFactory]:
    """Start a console for ``handle`` of JPN-NPA (settings as ``exchange console`` makes them)."""
    started: list[ConsoleThread] = []

    def start(handle: str, **overrides: object) -> ConsoleThread:
        path = world.fed.pki_dir / "JPN-NPA" / "users" / f"{handle}.profile.toml"
        settings = console_settings(load_profile(path), path)
        settings = dataclasses.replace(settings, state_file=tmp_path / f"{handle}.json", **overrides)  # type: ignore[arg-type]
        console = ConsoleThread(settings).start()
        started.append(console)
        return console

    yield start
    for console in started:
        console.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    opened: list[BrowserContext] = []

    def make(**options: object) -> BrowserContext:
        ctx = browser.new_context(viewport=LAPTOP, **options)  # type: ignore[arg-type]
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        ctx.close()


def sign_in(page: Page, console: ConsoleThread, timezone: str = "UTC") -> None:
    response = page.goto(console.console.guard.login_url)
    assert response is not None and response.ok, response and response.status
    assert page.url.endswith("/search")
    # console.js tells the console the browser's zone and shows the page once more in it.
    page.wait_for_selector(f'html[data-tz="{timezone}"]', state="attached")


def banners(page: Page) -> list[tuple[str, str]]:
    """(text, background colour) of the top and bottom banners."""
    found = []
    for where in ("top", "bottom"):
        banner = page.locator(f'[data-banner="{where}"]')
        found.append((banner.inner_text(), banner.evaluate("e => getComputedStyle(e).backgroundColor")))
    return found


def shot(page: Page, world: World, name: str) -> None:
    page.screenshot(path=str(world.screenshots / f"{name}.png"), full_page=True)


def quickest_load(page: Page, url: str, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        page.goto(url)
        best = min(best, time.perf_counter() - started)
    return best


# --- the liaison officer ------------------------------------------------------------------------


def test_liaison_officer_finds_records_by_japanese_text_and_full_width_observable(world, consoles, context):
    console = consoles("suzuki")
    page = context(locale="ja-JP", timezone_id="Asia/Tokyo").new_page()
    sign_in(page, console, "Asia/Tokyo")
    assert page.locator("h1").inner_text() == MESSAGES["ja"]["search.title"]  # the browser's language

    # Keyboard only: the search box has the focus; type and press Enter.
    page.keyboard.type("技術")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/search\?"))
    titles = page.locator("table.records tbody a").all_inner_texts()
    assert "半導体製造技術の迂回調達" in titles and "量子技術研究者への接触" in titles
    # The banner covers the most sensitive record on the page, at the top and the bottom.
    for text, colour in banners(page):
        assert text.startswith("SECRET"), text
        assert colour == RED
    shot(page, world, "search")

    page.goto(f"{console.console.guard.base_url}/search?value=ＡＢＣ商事")  # full-width, normalised by the node
    titles = page.locator("table.records tbody a").all_inner_texts()
    assert titles == ["半導体製造技術の迂回調達"]
    page.get_by_role("link", name="半導体製造技術の迂回調達").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/record/JPN-NPA/"))
    ref = world.refs["confidential"]
    assert page.url.endswith(f"/record/{ref.originator}/{ref.record_id}")
    for text, colour in banners(page):
        assert text == "CONFIDENTIAL // REL TO JPN-NPA, KOR-KNPA, USA-DTSF // TLP:AMBER"
        assert colour == BLUE
    assert page.locator("#classification").inner_text() == "CONFIDENTIAL"
    assert page.locator("#originator").inner_text() == "JPN-NPA"
    assert page.locator("#key-id").inner_text().startswith("JPN-NPA/")
    assert MESSAGES["ja"]["record.verified_ok"] in page.locator("#verified").inner_text()
    assert "반도체 장비 우회 조달" in page.locator("#summary").inner_text()
    assert "JST" in page.locator("#versions").inner_text()  # the browser's time zone
    if HAS_TRANSLATIONS:
        assert TRANSLATION_TITLE in page.locator("#translations").inner_text()
        assert page.locator("#translations [lang=en]").count() == 1
    else:  # the protocol has no translations yet: the page says nothing of them
        assert page.locator("#translations").count() == 0
    shot(page, world, "record")

    page.get_by_role("link", name=MESSAGES["ja"]["record.disclosures"]).click()
    assert page.locator("table.records tbody td").first.inner_text() == "USA-DTSF"
    assert banners(page)[0][1] == BLUE
    shot(page, world, "disclosures")

    # Readable on a laptop screen: nothing wider than the window.
    for url in (f"{console.console.guard.base_url}/search?text=技術", page.url):
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), url

    # Everyday quality: a page under 300 ms on this data (the best of three loads: the machine is shared).
    base = console.console.guard.base_url
    for url in (f"{base}/search?text=技術", f"{base}/record/{ref.originator}/{ref.record_id}", f"{base}/watch"):
        assert quickest_load(page, url) < 0.3, url


def test_watch_list_shows_unseen_hits_once(world, consoles, context):
    console = consoles("suzuki", language="en")  # the profile's language wins over the browser's
    page = context(locale="ja-JP").new_page()
    sign_in(page, console)
    page.goto(f"{console.console.guard.base_url}/watch")
    assert page.locator("h1").inner_text() == "Watch list"
    page.select_option("select[name=type]", "platform_handle")
    page.fill("input[name=value]", "＠recruit_tanaka")  # full width and another case: normalised by the node
    page.get_by_role("button", name="Watch").click()
    assert "Watching it as entry #" in page.locator(".done").inner_text()
    entry = page.locator("table.records").first.locator("tbody tr").first.locator("td")
    assert entry.nth(3).inner_text() == "platform_handle=recruit_tanaka"  # what the node matches on
    rows = page.locator("table.records").nth(1).locator("tbody tr")
    assert rows.count() == 2  # both of the hostile partner's records carry the handle
    assert HOSTILE_SCRIPT in rows.all_inner_texts()[0] + rows.all_inner_texts()[1]
    assert page.locator("#unseen").inner_text() == "2 unseen"
    shot(page, world, "watch")
    page.reload()
    assert page.locator("#unseen").count() == 0  # seen now
    assert page.locator("tr.new").count() == 0


# --- the analyst --------------------------------------------------------------------------------


def test_analyst_submits_through_the_form_and_the_record_reaches_a_partner(world, consoles, context):
    console = consoles("sato")
    page = context(locale="en-GB", timezone_id="Europe/London").new_page()
    sign_in(page, console, "Europe/London")
    page.get_by_role("link", name="Submit").click()
    assert banners(page)[0][0] == "NO RECORDS SHOWN"
    # Keyboard: the first Tab reaches "Skip to content", and every field is reachable by its label.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for label in ("Kind", "Title", "Summary", "Classification", "TLP", "Confidence (0-100)", "Valid until"):
        assert page.get_by_label(label, exact=True).count() == 1, label

    # A bad record: each field's problem is named next to it, and nothing is stored.
    page.select_option("#f-kind", "technique")
    page.fill("#f-title", "")
    page.fill("#f-confidence", "150")
    page.fill("#f-countries", "japan")
    page.select_option("#f-classification", "CONFIDENTIAL")
    page.select_option("#f-tlp", "AMBER")
    page.get_by_role("button", name="Sign and submit").click()
    errors = page.locator(".field-error").all_inner_texts()
    assert any(e.startswith("Confidence (0-100): expected a whole number from 0 to 100") for e in errors), errors
    assert any(e.startswith("Title: missing") for e in errors), errors
    assert page.locator("#f-title").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-countries").input_value() == "japan"  # what was typed is kept
    shot(page, world, "submit-errors")

    page.fill("#f-title", "工作機械の迂回輸出")
    page.fill("#f-confidence", "60")
    page.get_by_role("button", name="Sign and submit").click()
    errors = page.locator(".field-error").all_inner_texts()
    assert errors == ["Countries (ISO 3166-1 alpha-3, separated by commas): expected an ISO 3166-1 alpha-3 code, "
                      "got 'japan'"], errors

    page.fill("#f-countries", "CHN, RUS")
    page.fill("#f-observables", "company_name: 東亜精機\nemail: buyer@toa-seiki.example")
    page.check("input[name=releasable_to][value=USA-DTSF]")
    page.fill("#f-valid_until", "2099-12-31T18:00")
    page.get_by_role("button", name="Sign and submit").click()
    page.wait_for_url(re.compile(r"/record/JPN-NPA/[0-9a-f-]{36}\?done=submitted"))
    assert page.locator(".done").inner_text() == MESSAGES["en"]["done.submitted"]
    assert page.locator("h1").inner_text().startswith("工作機械の迂回輸出")
    assert banners(page)[0] == ("CONFIDENTIAL // REL TO JPN-NPA, USA-DTSF // TLP:AMBER", BLUE)
    record_id = page.url.split("/")[-1].split("?")[0]
    ref = records_pb2.RecordRef(originator="JPN-NPA", record_id=record_id)

    # The partner's node pulls it on its schedule; the signed validity is the one typed, in London time.
    held = _held_by(world.fed, world.usa, "USA-DTSF", "rchen", ref)
    record = records_pb2.Record.FromString(held.envelope.payload)
    assert record.content.title == "工作機械の迂回輸出"
    assert record.content.validity.not_after.ToJsonString() == "2099-12-31T18:00:00Z"  # GMT in December
    assert list(record.content.countries) == ["CHN", "RUS"]

    # Revise it: the form comes filled in, the node stores version 2.
    page.get_by_role("link", name="Revise").click()
    assert page.locator("#f-title").input_value() == "工作機械の迂回輸出"
    page.fill("#f-title", "工作機械の迂回輸出（改訂）")
    page.get_by_role("button", name="Sign and store the revision").click()
    page.wait_for_url(re.compile(r"done=revised&v=2"))
    assert page.locator("h1").inner_text().startswith("工作機械の迂回輸出（改訂）")


def test_without_a_manifest_the_nodes_refusal_names_the_field(world, consoles, context):
    console = consoles("kato", manifest=None)  # nothing to check here: the node's own check answers
    page = context().new_page()
    sign_in(page, console)
    page.goto(f"{console.console.guard.base_url}/submit")
    page.select_option("#f-kind", "actor")
    page.fill("#f-title", "Intermediary in a third country")
    page.fill("#f-countries", "CHN, japan")
    page.select_option("#f-classification", "UNCLASSIFIED")
    page.select_option("#f-tlp", "GREEN")
    response_status = []
    page.on("response", lambda r: response_status.append(r.status) if r.request.method == "POST" else None)
    page.get_by_role("button", name="Sign and submit").click()
    assert response_status == [400]
    assert page.locator(".field-error").all_inner_texts() == [
        "Countries (ISO 3166-1 alpha-3, separated by commas): expected an ISO 3166-1 alpha-3 code, got 'japan'"]
    ref = world.refs["confidential"]
    page.goto(f"{console.console.guard.base_url}/record/{ref.originator}/{ref.record_id}")
    assert page.locator("#verified").inner_text() == MESSAGES["en"]["record.verified_node"]


# --- hostile content ----------------------------------------------------------------------------


def test_markup_from_a_hostile_partner_is_text_and_no_script_runs(world, consoles, context):
    console = consoles("suzuki")
    page = context().new_page()
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    sign_in(page, console)
    page.goto(f"{console.console.guard.base_url}/search?from_partners=on&originator=KOR-KNPA")
    titles = page.locator("table.records tbody a").all_inner_texts()
    assert sorted(titles) == sorted([HOSTILE_IMG, HOSTILE_SCRIPT])
    for text, colour in banners(page):
        assert text.startswith("UNCLASSIFIED") and colour == GREEN

    ref = world.refs["img"]
    page.goto(f"{console.console.guard.base_url}/record/{ref.originator}/{ref.record_id}")
    assert page.locator("h1").inner_text().strip() == HOSTILE_IMG
    assert page.locator("#summary").inner_text() == '<script>alert("summary")</script>'
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1  # console.js, from the package
    assert page.locator("script").get_attribute("src") == "/static/console.js"
    shot(page, world, "hostile-record")
    page.wait_for_timeout(300)
    assert dialogs == []
    assert console.console.csp_reports == []  # nothing even tried to run

    # The policy is live and reports here: markup forced into the page still cannot run its handler.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=alert(1)>')")
    deadline = time.monotonic() + 10
    while not console.console.csp_reports and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert console.console.csp_reports, "the browser reported no CSP violation"
    report = console.console.csp_reports[0]["csp-report"]
    assert report["effective-directive"].startswith("script-src")
    assert dialogs == []


# --- who may talk to the console ----------------------------------------------------------------


def _request(console: ConsoleThread, method: str, path: str, headers: dict[str, str],
             body: str = "") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", console.console.guard.port, timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


def _message(html: str) -> str:
    match = re.search(r'<p class="error" role="alert" id="message">(.*?)</p>', html, re.S)
    assert match, html
    return match.group(1)


def test_requests_without_the_session_from_another_host_or_origin_are_refused(world, consoles, context, browser):
    console = consoles("suzuki")
    guard = console.console.guard
    assert console.sock.getsockname()[0] == "127.0.0.1"
    host = f"127.0.0.1:{guard.port}"

    status, html = _request(console, "GET", "/search", {"Host": host})
    assert status == 403 and "no console session" in _message(html)
    assert "JPN-NPA" not in html and "suzuki" not in html  # a refusal tells nothing about the console
    status, html = _request(console, "GET", "/login?token=wrong", {"Host": host})
    assert status == 403 and "sign-in link is wrong or was used already" in _message(html)

    ctx = context()
    page = ctx.new_page()
    sign_in(page, console)
    cookie = next(c for c in ctx.cookies() if c["name"] == guard.cookie_name)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    session = f"{guard.cookie_name}={cookie['value']}"
    csrf = page.goto(f"{guard.base_url}/watch") and page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf

    # The link works once.
    status, _ = _request(console, "GET", f"/login?token={guard.login_token}", {"Host": host})
    assert status == 403
    # DNS rebinding: a page of another name that resolves to 127.0.0.1 names its own host.
    status, html = _request(console, "GET", "/search", {"Host": f"evil.example:{guard.port}", "Cookie": session})
    assert status == 403 and "answers only at" in _message(html)
    status, _ = _request(console, "GET", "/search", {"Host": host, "Cookie": session})
    assert status == 200
    form = {"Host": host, "Cookie": session, "Content-Type": "application/x-www-form-urlencoded"}
    body = f"csrf={csrf}&type=&value=refused.example"
    # Cross-origin POSTs: another site's Origin, none at all, or the right origin without the form's token.
    status, html = _request(console, "POST", "/watch/add", {**form, "Origin": "http://evil.example"}, body)
    assert status == 403 and "another web site" in _message(html)
    status, _ = _request(console, "POST", "/watch/add", form, body)
    assert status == 403
    status, html = _request(console, "POST", "/watch/add", {**form, "Origin": guard.base_url}, "type=&value=x.example")
    assert status == 403 and "security token" in _message(html)

    # A real cross-origin form in the browser (a page of another origin posting to the console).
    evil = ctx.new_page()
    evil.set_content(f'<form method="post" action="{guard.base_url}/watch/add"><input name="value" value="x">'
                     '<button>go</button></form>')
    with evil.expect_navigation():
        evil.click("button")
    assert "another web site" in evil.locator("#message").inner_text()
    # None of the refused requests reached the node.
    page.goto(f"{guard.base_url}/watch")
    assert "refused.example" not in page.content()


def test_a_record_not_yours_to_see_looks_like_one_that_does_not_exist(world, consoles, context):
    console = consoles("ito")  # a liaison officer cleared to RESTRICTED: the SECRET record is not hers
    page = context().new_page()
    sign_in(page, console)
    base = console.console.guard.base_url
    secret = world.refs["secret"]
    hidden = page.goto(f"{base}/record/{secret.originator}/{secret.record_id}")
    hidden_html = page.content()
    missing = page.goto(f"{base}/record/JPN-NPA/{uuid.uuid4()}")
    missing_html = page.content()
    assert hidden is not None and missing is not None
    assert hidden.status == missing.status == 404
    assert hidden_html == missing_html
    assert page.locator("#message").inner_text() == MESSAGES["en"]["error.not_found"]
    # The disclosures page of it, and a search for it, say no more.
    hidden_disclosures = page.goto(f"{base}/record/{secret.originator}/{secret.record_id}/disclosures")
    assert hidden_disclosures is not None and hidden_disclosures.status == 404
    assert page.content() == missing_html
    page.goto(f"{base}/search?text=技術")
    titles = page.locator("table.records tbody a").all_inner_texts()
    assert titles == [HOSTILE_SCRIPT]  # the one record under 技術 within her clearance (its summary has it)


def test_search_results_come_a_page_at_a_time(world, consoles, context):
    console = consoles("suzuki")
    console.console.page_size = 2
    page = context().new_page()
    sign_in(page, console)
    page.goto(f"{console.console.guard.base_url}/search?text=技術")
    first = page.locator("table.records tbody a").all_inner_texts()
    assert len(first) == 2
    page.get_by_role("link", name="Next page").click()
    second = page.locator("table.records tbody a").all_inner_texts()
    assert len(second) == 1 and not set(first) & set(second)
    assert page.get_by_role("link", name="Next page").count() == 0
    page.get_by_role("link", name="First page").click()
    assert page.locator("table.records tbody a").all_inner_texts() == first


def test_an_unreachable_node_is_one_sentence(world, consoles, context):
    profile = load_profile(world.fed.pki_dir / "JPN-NPA" / "users" / "suzuki.profile.toml")
    console = consoles("suzuki", profile=dataclasses.replace(profile, node=f"127.0.0.1:{free_port(set())}"))
    page = context().new_page()
    response = page.goto(console.console.guard.login_url)
    assert response is not None and response.status == 502
    message = page.locator("#message").inner_text()
    assert message.startswith("Node at 127.0.0.1:") and " is unreachable: " in message and message.endswith(".")
    assert "\n" not in message and "Traceback" not in page.content()


def test_errors_are_one_sentence_on_the_page(world, consoles, context):
    console = consoles("sato")  # an analyst: the watch list is the liaison officer's
    page = context().new_page()
    sign_in(page, console)
    base = console.console.guard.base_url
    response = page.goto(f"{base}/watch")
    assert response is not None and response.status == 403
    assert page.locator("#message").inner_text() == "Your node refused: analyst may not call WatchList."
    response = page.goto(f"{base}/no/such/page")
    assert response is not None and response.status == 404
    assert page.locator("#message").inner_text() == MESSAGES["en"]["error.page"]
    response = page.goto(f"{base}/search?min_confidence=lots")
    assert response is not None and response.status == 200
    assert page.locator(".error").inner_text() == "Minimum confidence: expected a whole number from 0 to 100."
    assert "Traceback" not in page.content()


def test_stix_export_of_what_search_released(world, consoles, context):
    console = consoles("suzuki")
    ctx = context(accept_downloads=True)
    page = ctx.new_page()
    sign_in(page, console)
    page.get_by_role("link", name="Export").click()
    page.fill("#search-text", "技術")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download STIX 2.1 bundle").click()
    import json

    bundle = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert bundle["type"] == "bundle"
    names = {o.get("name") for o in bundle["objects"]}
    assert {"半導体製造技術の迂回調達", "量子技術研究者への接触"} <= names


# --- the command and the package ----------------------------------------------------------------


def test_exchange_console_prints_a_one_time_link_on_loopback_and_stops_on_sigterm(world):
    profile = world.fed.pki_dir / "JPN-NPA" / "users" / "suzuki.profile.toml"
    env = {**os.environ, "XDG_STATE_HOME": str(world.screenshots.parent / "state")}
    process = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli.main", "console", "--profile", str(profile), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        link = re.search(r"(http://127\.0\.0\.1:(\d+)/login\?token=\S+)", lines[1])
        assert link, lines
        port = int(link.group(2))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", link.group(1).split(str(port), 1)[1], headers={"Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        assert response.status == 303 and response.getheader("Location") == "/search"
        assert "HttpOnly" in (response.getheader("Set-Cookie") or "")
        assert "default-src 'self'" in (response.getheader("Content-Security-Policy") or "")
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "Traceback" not in err


def test_exchange_console_refuses_a_bad_setting_in_one_line(world):
    profile = world.fed.pki_dir / "JPN-NPA" / "users" / "suzuki.profile.toml"
    result = subprocess.run(
        [sys.executable, "-m", "exchange.cli.main", "console", "--profile", str(profile), "--no-browser",
         "--timezone", "Mars/Olympus"], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["exchange: console timezone: unknown time zone 'Mars/Olympus'"]


def test_both_languages_have_every_message():
    assert MESSAGES["en"].keys() == MESSAGES["ja"].keys()


def test_no_template_turns_escaping_off():
    """Autoescape is the guarantee that partner text stays text: no template may opt out."""
    for template in (PACKAGE / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert "|safe" not in text.replace(" ", "") and "autoescape" not in text, template.name
        assert "<script>" not in text and "style=" not in text and "<style" not in text, template.name


def test_not_found_is_never_distinguished():
    # The console maps the node's NOT_FOUND to one page, whatever the node said.
    from exchange.console.app import _refusal

    assert _refusal(NotFound(), MESSAGES["en"]) == _refusal(NotFound("watch entry #3"), MESSAGES["en"])


def test_the_profile_console_table_sets_language_zone_and_manifest(world, tmp_path):
    users = world.fed.pki_dir / "JPN-NPA" / "users"
    profile_path = users / "kato.profile.toml"
    text = profile_path.read_text(encoding="utf-8")
    written = users / "kato-console.profile.toml"
    written.write_text(text + '\n[console]\nlanguage = "ja"\ntimezone = "Asia/Seoul"\n'
                       'manifest = "../../manifest.toml"\n', encoding="utf-8")
    settings = console_settings(load_profile(written), written)
    assert (settings.language, settings.timezone) == ("ja", "Asia/Seoul")
    assert settings.manifest is not None and "KOR-KNPA" in settings.manifest.agencies
    # Flags win over the profile.
    flagged = console_settings(load_profile(written), written, language="en", timezone="UTC")
    assert (flagged.language, flagged.timezone) == ("en", "UTC")
    written.write_text(text + '\n[console]\nlanguage = "fr"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="console language: expected one of en, ja, got 'fr'"):
        console_settings(load_profile(written), written)
    written.unlink()


class _Parsed(HTMLParser):
    """Every start tag of a page, and the text inside its result links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.links: list[str] = []
        self._in_link = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "a" and (dict(attrs).get("href") or "").startswith("/record/"):
            self._in_link = True
            self.links.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_link = False

    def handle_data(self, data: str) -> None:
        if self._in_link:
            self.links[-1] += data


SEARCH_PAGE_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "a", "div", "header", "span", "nav",
                    "main", "h1", "form", "label", "input", "select", "option", "fieldset", "legend", "button",
                    "section", "h2", "table", "thead", "tr", "th", "tbody", "td", "p"}


@settings(max_examples=150, deadline=None)
@given(title=st.text(st.characters(blacklist_categories=("Cs", "Cc"))), originator=st.text(max_size=12))
def test_any_partner_text_is_rendered_as_that_text(title, originator):
    """Whatever a partner signs (markup, quotes, entities), the page shows it as text and gains no tag."""
    words = MESSAGES["en"]
    row = Row(originator=originator, record_id="0" * 8, version=1, kind="actor", classification=originator,
              tlp=title, title=title, issued="-", received_from=originator, state="", equivocated=False,
              banner_css="level-unknown")
    html = templates().get_template("search.html").render(
        t=lambda key, **fields: words[key].format(**fields), lang="en", tz="UTC", tz_source="default", csrf="c",
        banner=Banner(title, "banner-unknown", title), agency="JPN-NPA", user="u", path="/search", nav=[],
        reloadable=True, bare=False, values={"text": title, "value": title, "type": "", "kinds": [],
        "originator": "", "classification": "", "from_partners": False, "include_expired": False,
        "include_retracted": False, "min_confidence": ""}, rows=[row], error="", hidden=0, next_query=None,
        first_query=None, agencies=["JPN-NPA"], classifications=["SECRET"], kinds=["actor"],
        observable_types=["email"],
    )
    parsed = _Parsed()
    parsed.feed(html)
    parsed.close()
    assert parsed.tags <= SEARCH_PAGE_TAGS
    expected = title or row.record_id
    # HTML reads a carriage return as a line feed; everything else comes back exactly.
    assert parsed.links == [expected.replace("\r\n", "\n").replace("\r", "\n")]
