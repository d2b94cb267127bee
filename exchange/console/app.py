"""The console's web application: its pages (served by ``exchange.console.serve``).

Each page asks the user's node (``NodeCalls``), shapes the answer (``views``, ``forms``) and
renders a template with autoescaping on. Every failure becomes one sentence on a page with
the right status, never a traceback; a bug's traceback goes to the console's log only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from exchange.client import Profile
from exchange.console.forms import KINDS, RecordForm, form_from_record, keep_unshown, node_error
from exchange.console.guard import CSP_REPORT_PATH, Guard
from exchange.console.i18n import MESSAGES, choose_language
from exchange.console.node import NodeCalls
from exchange.console.review import VERDICTS, draft_records, draft_rows, marking_changes, sighting_rows, state_key
from exchange.console.views import (
    Banner,
    banner_for,
    extra_fields,
    fmt_time,
    marking_record,
    record_rows,
    shown_of,
    translations,
    verification,
)
from exchange.core.identity import Role
from exchange.core.manifest import Manifest
from exchange.core.marking import CAVEATS, CLASSIFICATIONS
from exchange.errors import (
    Conflict,
    ExchangeError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TransportError,
)
from exchange.node.rpc import ROLES
from exchange.records.normalize import OBSERVABLE_TYPES
from exchange.records.validate import validate_ref
from exchange.render import TLP_ORDER, Shown
from exchange.stix.bundle import make_bundle
from exchange.v1 import liaison_pb2, query_pb2, records_pb2, review_pb2, submission_pb2

__all__ = ["Console", "Settings", "templates"]

log = logging.getLogger("exchange.console")

PACKAGE = Path(__file__).resolve().parent
PAGE_SIZE = 25
HITS_PAGE = 50
EXPORT_LIMIT = 10_000  # records in one bundle; a larger export is the CLI's (`exchange export`)
MAX_CSP_REPORTS = 100
MAX_BODY = 1024 * 1024
TZ_COOKIE = "exchange_tz"
# The node's refusal of a method to a role (exchange/node/rpc.py's Guard): the console learns
# the user's role from it, to offer only what that role may use (the node decides anyway).
_ROLE_REFUSAL = re.compile(r"^(?P<role>[a-z_]+) may not call (?P<method>[A-Za-z]+)$")
_SERVICE = "/exchange.v1."
# The navigation: (path, label, the method its page needs).
NAV = (
    ("/search", "nav.search", _SERVICE + "QueryService/Search"),
    ("/watch", "nav.watch", _SERVICE + "LiaisonService/WatchList"),
    ("/submit", "nav.submit", _SERVICE + "SubmissionService/Submit"),
    ("/export", "nav.export", _SERVICE + "QueryService/Search"),
    ("/review", "nav.review", _SERVICE + "ReviewService/ListDrafts"),
)
APPROVE = _SERVICE + "ReviewService/ApproveDraft"
REPORT_SIGHTING = _SERVICE + "LiaisonService/ReportSighting"


def templates() -> jinja2.Environment:
    """The console's templates, autoescaping every value: partner text is escaped unless a template
    says otherwise, and none does (tests/test_console.py checks there is no |safe or autoescape)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class Settings:
    """Who the console acts for and how it shows things."""

    profile: Profile
    manifest: Manifest | None = None  # to verify signatures here and list partners; optional
    language: str | None = None       # "en" or "ja"; None: the browser's
    timezone: str | None = None       # an IANA zone; None: the browser's
    state_file: Path | None = None    # where "seen" watch hits are remembered; None: in memory
    timeout: float = 30.0             # deadline of each call to the node, seconds


@dataclass
class Context:
    """Per request: language, time zone and the session's CSRF token."""

    lang: str
    zone: ZoneInfo
    zone_source: str  # profile, browser or default
    csrf: str


@dataclass
class Console:
    settings: Settings
    guard: Guard
    calls: NodeCalls
    csp_reports: list[dict[str, Any]] = field(default_factory=list)
    seen_hits: float = 0.0  # received_at (POSIX seconds) of the newest hit the user has seen
    page_size: int = PAGE_SIZE
    role: Role | None = None  # learned from the node's refusals; None: not known yet
    env: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = templates()
        self.seen_hits = self._load_seen()

    # --- state ------------------------------------------------------------------------------

    def _load_seen(self) -> float:
        path = self.settings.state_file
        if path is None:
            return 0.0
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return float(data.get("seen_hits", 0.0))
        except (OSError, ValueError, AttributeError, TypeError):
            return 0.0

    def _save_seen(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"seen_hits": self.seen_hits}), encoding="utf-8")
        except OSError as exc:
            log.warning("cannot remember seen watch hits in %s: %s", path, exc.strerror)

    # --- the user's role ---------------------------------------------------------------------

    def may(self, method: str) -> bool:
        """Whether the user's role may call ``method`` (True while the role is not known)."""
        return self.role is None or self.role in ROLES.get(method, frozenset())

    def _learn(self, error: ExchangeError) -> None:
        """Remember the role a refusal names ("liaison may not call ListDrafts")."""
        match = _ROLE_REFUSAL.match(str(error)) if isinstance(error, PermissionDenied) else None
        if match is not None:
            with contextlib.suppress(ValueError):  # a role this console does not know: learn nothing
                self.role = Role(match["role"])

    # --- the application --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware(self._refused), self._errors],
                              client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/login", self.login)
        r.add_get("/", self.home)
        r.add_get("/search", self.search)
        r.add_get("/record/{originator}/{record_id}", self.record)
        r.add_get("/record/{originator}/{record_id}/disclosures", self.disclosures)
        r.add_get("/record/{originator}/{record_id}/revise", self.revise_form)
        r.add_post("/record/{originator}/{record_id}/revise", self.revise)
        r.add_get("/record/{originator}/{record_id}/stix", self.record_stix)
        r.add_get("/watch", self.watch)
        r.add_post("/watch/add", self.watch_add)
        r.add_post("/watch/remove", self.watch_remove)
        r.add_get("/submit", self.submit_form)
        r.add_post("/submit", self.submit)
        r.add_get("/export", self.export_form)
        r.add_get("/export/stix", self.export_stix)
        r.add_post("/record/{originator}/{record_id}/sighting", self.report_sighting)
        r.add_get("/review", self.review_list)
        r.add_get("/review/{draft_id}", self.review_draft)
        r.add_post("/review/{draft_id}/approve", self.review_approve)
        r.add_post("/review/{draft_id}/reject", self.review_reject)
        r.add_post(CSP_REPORT_PATH, self.csp_report)
        r.add_static("/static", PACKAGE / "static", append_version=False)
        return app

    def context(self, request: web.Request) -> Context:
        lang = choose_language(self.settings.language, request.headers.get("Accept-Language", ""))
        zone, source = _zone(self.settings.timezone, "profile")
        if source != "profile":
            zone, source = _zone(unquote(request.cookies.get(TZ_COOKIE, "")), "browser")
        session = self.guard.session_of(request)
        return Context(lang, zone, source, session.csrf if session is not None else "")

    def page(self, request: web.Request, template: str, banner: Banner | None = None, *, status: int = 200,
             bare: bool = False, **values: Any) -> web.Response:
        """``template`` rendered; ``bare`` leaves out who the console is for (refusals to strangers)."""
        started = time.perf_counter()
        ctx = self.context(request)
        words = MESSAGES[ctx.lang]

        def t(key: str, **fields: object) -> str:
            return words[key].format(**fields) if fields else words[key]

        profile = self.settings.profile
        nav = [(href, t(label)) for href, label, method in NAV if self.may(method)]
        html = self.env.get_template(template).render(
            t=t, nav=nav, lang=ctx.lang, tz=ctx.zone.key, tz_source=ctx.zone_source, csrf=ctx.csrf,
            banner=banner or banner_for([], words["no_records"]), agency=profile.agency,
            user=profile.cert.stem, path=request.path, bare=bare, reloadable=request.method == "GET", **values,
        )
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    def _refused(self, request: web.Request, reason: str) -> web.Response:
        return self.page(request, "error.html", status=403, bare=True, message=reason)

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            words = MESSAGES[self.context(request).lang]
            message = words["error.page"] if exc.status == 404 else f"Refused: {exc.reason}."
            return self.page(request, "error.html", status=exc.status, message=message)
        except ExchangeError as exc:
            self._learn(exc)
            status, message = _refusal(exc, MESSAGES[self.context(request).lang])
            return self.page(request, "error.html", status=status, message=message)
        except Exception:
            log.exception("console page %s failed", request.path)
            words = MESSAGES[self.context(request).lang]
            return self.page(request, "error.html", status=500, message=words["error.internal"])
        response.headers["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    async def _form(self, request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
        """A POSTed form, its CSRF token checked; (single values, every value by name)."""
        posted = await request.post()
        single = {k: v for k, v in posted.items() if isinstance(v, str)}
        if not self.guard.csrf_ok(request, single.get("csrf", "")):
            raise web.HTTPForbidden(reason="the form's security token does not match this session")
        multi: dict[str, list[str]] = {}
        for key, value in posted.items():
            if isinstance(value, str):
                multi.setdefault(key, []).append(value)
        return single, multi

    # --- sign-in ----------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        session = self.guard.sign_in(request.query.get("token", ""))
        if session is None:
            return self._refused(request, "Refused: this sign-in link is wrong or was used already; "
                                          "start `exchange console` again for a new one.")
        redirect = web.HTTPSeeOther("/search")
        redirect.set_cookie(self.guard.cookie_name, session.id, httponly=True, samesite="Strict", path="/")
        raise redirect

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(self._start())

    def _start(self) -> str:
        """The first page for this role: search, or the review queue for a disclosure officer."""
        if not self.may(NAV[0][2]) and self.may(NAV[-1][2]):
            return "/review"
        return "/search"

    # --- search and export ------------------------------------------------------------------

    def _filters(self, request: web.Request) -> tuple[query_pb2.SearchRequest, dict[str, Any], str]:
        """The search request from the query string, the values to show again, and an error."""
        q = request.query
        values: dict[str, Any] = {
            "text": q.get("text", ""), "value": q.get("value", ""), "type": q.get("type", ""),
            "kinds": [k for k in q.getall("kind", []) if k in KINDS],
            "originator": q.get("originator", ""), "classification": q.get("classification", ""),
            "from_partners": q.get("from_partners") == "on", "include_expired": q.get("include_expired") == "on",
            "include_retracted": q.get("include_retracted") == "on", "min_confidence": q.get("min_confidence", ""),
        }
        search = query_pb2.SearchRequest(
            kinds=[KINDS[k] for k in values["kinds"]], text=values["text"].strip(),
            from_partners=values["from_partners"], include_expired=values["include_expired"],
            include_retracted=values["include_retracted"],
        )
        if values["originator"]:
            search.originators.append(values["originator"])
        if values["value"].strip():
            search.observable.CopyFrom(query_pb2.ObservableQuery(
                type=values["type"] if values["type"] in OBSERVABLE_TYPES else "", value=values["value"].strip()))
        error = ""
        confidence = values["min_confidence"].strip()
        if confidence:
            if confidence.isdigit() and int(confidence) <= 100:
                search.min_confidence = int(confidence)
            else:
                error = "Minimum confidence: expected a whole number from 0 to 100."
        return search, values, error

    def _form_choices(self) -> dict[str, Any]:
        manifest = self.settings.manifest
        agencies = sorted(manifest.agencies) if manifest is not None else [self.settings.profile.agency]
        return {"agencies": agencies, "classifications": CLASSIFICATIONS, "kinds": list(KINDS),
                "observable_types": sorted(OBSERVABLE_TYPES), "tlps": list(TLP_ORDER), "caveats": sorted(CAVEATS)}

    async def search(self, request: web.Request) -> web.StreamResponse:
        search, values, error = self._filters(request)
        shown: list[Shown] = []
        next_token, hidden = "", 0
        if not error:
            search.page_size = self.page_size
            search.page_token = request.query.get("page", "")
            try:
                answer = await self.calls(self.calls.client.search, search)
            except PermissionDenied as exc:
                self._learn(exc)
                if self._start() != "/search":
                    raise web.HTTPSeeOther(self._start()) from None  # a disclosure officer signing in
                raise
            shown = [shown_of(h, self.calls.client.address) for h in answer.records]
            next_token = answer.next_page_token
            if values["classification"]:
                # The protocol's Search has no classification filter: this page's records are filtered here.
                kept = [s for s in shown if s.record.content.marking.classification == values["classification"]]
                hidden, shown = len(shown) - len(kept), kept
        zone = self.context(request).zone
        words = MESSAGES[self.context(request).lang]
        query = [(k, v) for k, v in request.query.items() if k != "page"]
        return self.page(
            request, "search.html", banner_for([s.record for s in shown], words["no_records"]),
            values=values, rows=record_rows(shown, zone), error=error, hidden=hidden,
            next_query=[*query, ("page", next_token)] if next_token else None,
            first_query=query if request.query.get("page") else None,
            **self._form_choices(),
        )

    async def export_form(self, request: web.Request) -> web.StreamResponse:
        _, values, _ = self._filters(request)
        return self.page(request, "export.html", values=values, **self._form_choices())

    async def export_stix(self, request: web.Request) -> web.StreamResponse:
        search, values, error = self._filters(request)
        if error:
            raise InvalidInput("", error)
        signed: list[tuple[records_pb2.Record, records_pb2.Envelope]] = []
        search.page_size = 0
        while len(signed) < EXPORT_LIMIT:
            answer = await self.calls(self.calls.client.search, search)
            for held in answer.records:
                record = shown_of(held, self.calls.client.address).record
                wanted = not values["classification"] or record.content.marking.classification == values[
                    "classification"]
                if record.status == records_pb2.STATUS_ACTIVE and wanted:
                    signed.append((record, held.envelope))
            if not answer.next_page_token:
                break
            search.page_token = answer.next_page_token
        return _bundle_response(make_bundle(signed[:EXPORT_LIMIT]), "exchange-export")

    # --- one record -------------------------------------------------------------------------

    def _ref(self, request: web.Request) -> records_pb2.RecordRef:
        ref = records_pb2.RecordRef(originator=request.match_info["originator"],
                                    record_id=request.match_info["record_id"])
        try:
            validate_ref(ref, "ref")
        except InvalidInput:
            raise NotFound() from None  # a malformed reference looks like any record not held
        return ref

    async def _get(self, request: web.Request) -> tuple[records_pb2.HeldRecord, Shown]:
        answer = await self.calls(self.calls.client.get, query_pb2.GetRequest(ref=self._ref(request)))
        return answer.record, shown_of(answer.record, self.calls.client.address)

    async def record(self, request: web.Request) -> web.StreamResponse:
        held, shown = await self._get(request)
        ctx = self.context(request)
        r = shown.record
        status, reason = verification(held.envelope, self.settings.manifest)
        done = _done(request, MESSAGES[ctx.lang])
        own = r.ref.originator == self.settings.profile.agency
        return self.page(
            request, "record.html", banner_for([r], ""), sightings=await self._sightings(r.ref, ctx.zone),
            may_report=not own and r.status == records_pb2.STATUS_ACTIVE and self.may(REPORT_SIGHTING),
            verdicts=list(VERDICTS), counts=held.sightings if held.HasField("sightings") else None,
            r=r, c=r.content, row=record_rows([shown], ctx.zone)[0],
            key_id=held.envelope.key_id, verified=status, verify_reason=reason,
            received_at=fmt_time(held.received_at, ctx.zone), created=fmt_time(r.created_at, ctx.zone),
            issued=fmt_time(r.issued_at, ctx.zone), not_before=fmt_time(r.content.validity.not_before, ctx.zone),
            not_after=fmt_time(r.content.validity.not_after, ctx.zone),
            extras=extra_fields([held, r, r.content]), own=own,
            translations=translations(r.content),
            equivocated=shown.equivocated, received_from=shown.received_from, done=done,
        )

    async def _sightings(self, ref: records_pb2.RecordRef, zone: ZoneInfo) -> list[Any] | None:
        """What partners reported on the record (None when the node answers nothing for this user)."""
        try:
            answer = await self.calls(self.calls.sightings, liaison_pb2.SightingsRequest(ref=ref))
        except (NotFound, PermissionDenied) as exc:
            self._learn(exc)
            return None  # the record page stands without them
        return list(sighting_rows(answer, zone))

    async def report_sighting(self, request: web.Request) -> web.StreamResponse:
        single, _ = await self._form(request)
        ref = self._ref(request)
        verdict = single.get("verdict", "")
        if verdict not in VERDICTS:
            raise InvalidInput("verdict", "choose seen, confirmed or false positive")
        await self.calls(self.calls.report_sighting, liaison_pb2.ReportSightingRequest(
            ref=ref, verdict=VERDICTS[verdict], note=single.get("note", "").replace("\r\n", "\n").strip()))
        raise web.HTTPSeeOther(f"/record/{ref.originator}/{ref.record_id}?done=sighted#sightings")

    async def record_stix(self, request: web.Request) -> web.StreamResponse:
        held, shown = await self._get(request)
        if shown.record.status != records_pb2.STATUS_ACTIVE:
            raise InvalidInput("", "a retracted record has no content to export")
        name = f"{shown.record.ref.originator}-{shown.record.ref.record_id}"
        return _bundle_response(make_bundle([(shown.record, held.envelope)]), name)

    async def disclosures(self, request: web.Request) -> web.StreamResponse:
        ref = self._ref(request)
        answer = await self.calls(self.calls.disclosures, liaison_pb2.DisclosuresRequest(ref=ref))
        zone = self.context(request).zone
        rows = [{"partner": d.partner, "version": d.version, "withdrawal": d.withdrawal,
                 "at": fmt_time(d.at, zone), "audit_seq": d.audit_seq} for d in answer.disclosures]
        return self.page(request, "disclosures.html", banner_for([marking_record(ref.originator, answer.marking)], ""),
                         ref=ref, rows=rows, truncated=answer.truncated, current_version=answer.current_version)

    # --- submit and revise ------------------------------------------------------------------

    def _form_page(self, request: web.Request, form: RecordForm, *, status: int = 200,
                   revising: records_pb2.Record | None = None, page_error: str = "") -> web.Response:
        words = MESSAGES[self.context(request).lang]
        banner = banner_for([revising], "") if revising is not None else banner_for([], words["no_records"])
        return self.page(request, "form.html", banner, status=status, form=form, revising=revising,
                         page_error=page_error, **self._form_choices())

    async def submit_form(self, request: web.Request) -> web.StreamResponse:
        form = RecordForm(values={"classification": "", "tlp": "", "kind": "", "confidence": "50"})
        return self._form_page(request, form)

    def _checked_draft(self, request: web.Request, form: RecordForm) -> records_pb2.RecordDraft | None:
        draft = form.draft(self.context(request).zone)
        manifest = self.settings.manifest
        form.check(draft, manifest.agencies if manifest is not None else None)
        return None if form.errors else draft

    async def submit(self, request: web.Request) -> web.StreamResponse:
        single, multi = await self._form(request)
        form = RecordForm.from_post(single, multi)
        draft = self._checked_draft(request, form)
        if draft is None:
            return self._form_page(request, form, status=400)
        try:
            answer = await self.calls(self.calls.client.submit,
                                      submission_pb2.SubmitRequest(draft=draft, reference=form.values["reference"]))
        except InvalidInput as exc:
            return self._node_refused(request, form, str(exc))
        _held_redirect(answer.receipt)
        ref = answer.receipt.ref
        raise web.HTTPSeeOther(f"/record/{ref.originator}/{ref.record_id}?done=submitted")

    def _node_refused(self, request: web.Request, form: RecordForm, message: str,
                      revising: records_pb2.Record | None = None) -> web.Response:
        name, problem = node_error(message)
        if name:
            form.error(name, problem)
            return self._form_page(request, form, status=400, revising=revising)
        return self._form_page(request, form, status=400, revising=revising, page_error=_sentence(problem))

    async def revise_form(self, request: web.Request) -> web.StreamResponse:
        _, shown = await self._get(request)
        return self._form_page(request, form_from_record(shown.record, self.context(request).zone),
                               revising=shown.record)

    async def revise(self, request: web.Request) -> web.StreamResponse:
        single, multi = await self._form(request)
        _, shown = await self._get(request)
        form = RecordForm.from_post(single, multi)
        base = single.get("base_version", "")
        draft = self._checked_draft(request, form)
        if draft is None:
            return self._form_page(request, form, status=400, revising=shown.record)
        if not base.isdigit():
            raise InvalidInput("", "the form lost the version it revises; open the record again")
        keep_unshown(draft, shown.record.content)
        revise = submission_pb2.ReviseRequest(ref=shown.record.ref, base_version=int(base), draft=draft)
        try:
            answer = await self.calls(self.calls.client.revise, revise)
        except InvalidInput as exc:
            return self._node_refused(request, form, str(exc), shown.record)
        _held_redirect(answer.receipt)
        ref = answer.receipt.ref
        raise web.HTTPSeeOther(f"/record/{ref.originator}/{ref.record_id}?done=revised&v={answer.receipt.version}")

    # --- release review ---------------------------------------------------------------------

    async def review_list(self, request: web.Request) -> web.StreamResponse:
        ctx = self.context(request)
        every = request.query.get("all") == "on"
        drafts = (await self.calls(self.calls.client.list_drafts, review_pb2.ListDraftsRequest(all=every))).drafts
        words = MESSAGES[ctx.lang]
        return self.page(request, "review.html", banner_for(draft_records(drafts), words["no_records"]),
                         rows=draft_rows(drafts, ctx.zone), every=every)

    def _draft_id(self, request: web.Request) -> str:
        draft_id = request.match_info["draft_id"]
        if not re.fullmatch(r"[0-9a-f-]{1,36}", draft_id):
            raise NotFound()  # a malformed id looks like any draft not held
        return draft_id

    def _draft_page(self, request: web.Request, draft: review_pb2.HeldDraft, *, status: int = 200,
                    page_error: str = "", reason: str = "") -> web.Response:
        ctx = self.context(request)
        return self.page(
            request, "draft.html", banner_for(draft_records([draft]), ""), status=status, d=draft,
            row=draft_rows([draft], ctx.zone)[0], state=state_key(draft), changes=marking_changes(draft),
            has_released=draft.HasField("released_marking"), translations=translations(draft.draft),
            approvals=[(a.officer.rsplit(":", 1)[-1], fmt_time(a.at, ctx.zone)) for a in draft.approvals],
            may_review=self.may(APPROVE) and draft.state == review_pb2.DRAFT_STATE_HELD,
            done=_done(request, MESSAGES[ctx.lang]), page_error=page_error, reason=reason,
        )

    async def _held_draft(self, draft_id: str) -> review_pb2.HeldDraft:
        return (await self.calls(self.calls.client.get_draft, review_pb2.GetDraftRequest(draft_id=draft_id))).draft

    async def review_draft(self, request: web.Request) -> web.StreamResponse:
        return self._draft_page(request, await self._held_draft(self._draft_id(request)))

    async def _refused_review(self, request: web.Request, draft_id: str, exc: ExchangeError,
                              reason: str = "") -> web.Response:
        """The draft's page again with the node's refusal as one sentence (own draft, clearance, stale base)."""
        self._learn(exc)
        if isinstance(exc, NotFound):
            raise exc  # the same page as any draft not held
        status, message = _refusal(exc, MESSAGES[self.context(request).lang])
        if isinstance(exc, Conflict):
            message = _sentence(f"your node refused: {exc}")
        return self._draft_page(request, await self._held_draft(draft_id), status=status, page_error=message,
                                reason=reason)

    async def review_approve(self, request: web.Request) -> web.StreamResponse:
        await self._form(request)
        draft_id = self._draft_id(request)
        try:
            answer = await self.calls(self.calls.client.approve_draft,
                                      review_pb2.ApproveDraftRequest(draft_id=draft_id))
        except (PermissionDenied, Conflict, InvalidInput, NotFound) as exc:
            return await self._refused_review(request, draft_id, exc)
        if answer.draft.state == review_pb2.DRAFT_STATE_RELEASED:
            raise web.HTTPSeeOther(f"/review/{draft_id}?done=released&v={answer.draft.released_version}")
        raise web.HTTPSeeOther(f"/review/{draft_id}?done=approved")

    async def review_reject(self, request: web.Request) -> web.StreamResponse:
        single, _ = await self._form(request)
        draft_id = self._draft_id(request)
        reason = single.get("reason", "").replace("\r\n", "\n").strip()
        words = MESSAGES[self.context(request).lang]
        if not reason:
            return self._draft_page(request, await self._held_draft(draft_id), status=400,
                                    page_error=words["review.no_reason"])
        try:
            await self.calls(self.calls.client.reject_draft,
                             review_pb2.RejectDraftRequest(draft_id=draft_id, reason=reason))
        except (PermissionDenied, Conflict, InvalidInput, NotFound) as exc:
            return await self._refused_review(request, draft_id, exc, reason)
        raise web.HTTPSeeOther(f"/review/{draft_id}?done=rejected")

    # --- watch list -------------------------------------------------------------------------

    async def watch(self, request: web.Request) -> web.StreamResponse:
        ctx = self.context(request)
        entries = (await self.calls(self.calls.watch_list, liaison_pb2.WatchListRequest())).entries
        hits_answer = await self.calls(self.calls.watch_hits, liaison_pb2.WatchHitsRequest(
            page_size=HITS_PAGE, include_expired=request.query.get("include_expired") == "on"))
        hits = [(shown_of(h.record, self.calls.client.address), h) for h in hits_answer.hits]
        seen = self.seen_hits
        rows = [{"row": record_rows([s], ctx.zone)[0], "received": fmt_time(h.record.received_at, ctx.zone),
                 "new": _seconds(h.record.received_at) > seen, "watch_ids": list(h.watch_ids)} for s, h in hits]
        newest = max((_seconds(h.record.received_at) for _, h in hits), default=seen)
        if newest > seen:
            self.seen_hits = newest
            self._save_seen()
        entry_rows = [{"id": e.id, "type": e.type, "value": e.value, "created": fmt_time(e.created_at, ctx.zone),
                       "matches": ", ".join(f"{k.type}={k.value}" for k in e.keys)} for e in entries]
        words = MESSAGES[ctx.lang]
        return self.page(request, "watch.html", banner_for([s.record for s, _ in hits], words["no_records"]),
                         entries=entry_rows, hits=rows, unseen=sum(1 for r in rows if r["new"]),
                         more=bool(hits_answer.next_page_token), done=_done(request, words),
                         include_expired=request.query.get("include_expired") == "on",
                         observable_types=sorted(OBSERVABLE_TYPES))

    async def watch_add(self, request: web.Request) -> web.StreamResponse:
        single, _ = await self._form(request)
        kind = single.get("type", "")
        added = await self.calls(self.calls.watch_add, liaison_pb2.WatchAddRequest(
            type=kind if kind in OBSERVABLE_TYPES else "", value=single.get("value", "").strip()))
        raise web.HTTPSeeOther(f"/watch?done=watching&id={added.entry.id}")

    async def watch_remove(self, request: web.Request) -> web.StreamResponse:
        single, _ = await self._form(request)
        entry = single.get("id", "")
        if not entry.isdigit():
            raise InvalidInput("", "no watch entry was chosen")
        await self.calls(self.calls.watch_remove, liaison_pb2.WatchRemoveRequest(id=int(entry)))
        raise web.HTTPSeeOther(f"/watch?done=removed&id={entry}")

    # --- CSP reports ------------------------------------------------------------------------

    async def csp_report(self, request: web.Request) -> web.StreamResponse:
        body = await request.content.read(64 * 1024)
        try:
            report = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            report = {"unparsed": body[:200].decode("utf-8", "replace")}
        if len(self.csp_reports) < MAX_CSP_REPORTS:
            self.csp_reports.append(report if isinstance(report, dict) else {"report": report})
        # Only what was blocked, never the sample or the page's address: those may hold record text.
        details = report.get("csp-report", {}) if isinstance(report, dict) else {}
        details = details if isinstance(details, dict) else {}
        log.warning("the browser reported a content security policy violation",
                    extra={"directive": str(details.get("effective-directive", ""))[:64],
                           "blocked": str(details.get("blocked-uri", ""))[:64]})
        return web.Response(status=204)


# --- helpers --------------------------------------------------------------------------------


def _zone(name: str | None, source: str) -> tuple[ZoneInfo, str]:
    if name:
        try:
            return ZoneInfo(name), source
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC"), "default"


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def _refusal(exc: ExchangeError, words: Any) -> tuple[int, str]:
    if isinstance(exc, NotFound):
        # The same page for "not held" and "not yours to see": nothing of the request is echoed.
        return 404, words["error.not_found"]
    if isinstance(exc, PermissionDenied):
        return 403, _sentence(f"your node refused: {exc}")
    if isinstance(exc, InvalidInput):
        return 400, _sentence(str(exc))
    if isinstance(exc, Conflict):
        return 409, _sentence(f"{exc} (someone stored a newer version; open the record again)")
    if isinstance(exc, TransportError):
        return 502, _sentence(str(exc))
    return 400, _sentence(str(exc))


def _done(request: web.Request, words: Any) -> str:
    """The confirmation named in the query string (fixed messages only; numbers checked)."""
    what = request.query.get("done", "")
    number = request.query.get("v", request.query.get("id", ""))
    if what in ("submitted", "approved", "rejected", "sighted"):
        return str(words["done." + what])
    if what in ("revised", "watching", "removed", "released", "held") and number.isdigit():
        return str(words["done." + what].format(version=number, id=number, n=number))
    return ""


def _held_redirect(receipt: submission_pb2.Receipt) -> None:
    """A submission the node holds for release review goes to the draft's page (no record exists yet)."""
    if receipt.held_draft_id:
        raise web.HTTPSeeOther(f"/review/{receipt.held_draft_id}?done=held&v={receipt.approvals_needed}")


def _bundle_response(bundle: dict[str, Any], name: str) -> web.Response:
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    response = web.Response(body=json.dumps(bundle, ensure_ascii=False, indent=1).encode("utf-8"),
                            content_type="application/stix+json")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}-{day}.stix.json"'
    return response
