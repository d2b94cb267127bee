"""Query service: the node's own users read what it holds, through the decision.

Every record returned has passed :func:`exchange.core.policy.decide`; page
tokens are made after the decision from the last record shown, so neither a
page nor a token says anything about records the caller may not see. Each
answer is written to the audit log as a disclosure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exchange.config import Limits
from exchange.core.identity import AGENCY_RE, Principal
from exchange.core.manifest import Manifest
from exchange.core.marking import within_clearance
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, NotFound, clip
from exchange.node.reads import audit_disclosure, audit_shown, held_records_wire, page_size, token_context, visible
from exchange.node.rpc import Method
from exchange.node.searchpool import Searches
from exchange.node.tokens import PageTokens
from exchange.records import textindex
from exchange.records.normalize import normalize, normalize_any
from exchange.records.validate import validate_ref, validate_timestamp
from exchange.store import SearchFilter, Store, StoredRecord
from exchange.store.current import current_record
from exchange.store.rows import kind_name, timestamp_us
from exchange.store.store import now_us
from exchange.v1 import query_pb2, records_pb2


@dataclass
class QueryService:
    agency: str
    store: Store
    trust: Trust  # read at every call: the manifest may be replaced while the node runs
    limits: Limits
    tokens: PageTokens
    database_url: str = ""  # what search processes open (limits.search_processes > 0)
    pki_dir: Path = Path()
    searches: Searches = field(init=False)

    def __post_init__(self) -> None:
        self.searches = Searches(self.store, lanes=self.limits.search_lanes, processes=self.limits.search_processes,
                                 database_url=self.database_url, pki_dir=self.pki_dir)

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def methods(self) -> list[Method]:
        return [
            Method("Get", query_pb2.GetRequest, self.get),
            Method("Search", query_pb2.SearchRequest, self.search),
        ]

    def _allowed(self, record: StoredRecord, caller: Principal) -> bool:
        return visible(self.agency, self.manifest, record, caller)

    def get(self, request: query_pb2.GetRequest, caller: Principal) -> bytes:
        validate_ref(request.ref, "ref")
        record = current_record(self.store, request.ref.originator, request.ref.record_id)
        if record is None or not self._allowed(record, caller):
            raise NotFound()  # the same answer whether absent or not releasable
        audit_disclosure(self.store, caller, "get", [record])
        return held_records_wire(self.store, self.agency, [record])  # a GetResponse, serialised

    def search(self, request: query_pb2.SearchRequest, caller: Principal) -> bytes:
        """The answer, serialised: its records come serialised from where the page was filled
        (exchange/node/searchpool.py), and only the page token is added here."""
        criteria = self._criteria(request, caller)
        size = page_size(request.page_size, self.limits.default_page_size, self.limits.max_page_size)
        context = token_context(b"search", request, caller)
        after = self.tokens.decode(request.page_token, context) if request.page_token else None
        page = self.searches.page(criteria, after, size, caller, self.manifest)
        audit_shown(self.store, caller, "search", page.shown)  # committed before anything is answered
        token = self.tokens.encode(page.last, context) if page.more and page.last is not None else ""
        # Two serialised messages of one type, concatenated, are one message with both's fields.
        return page.records + query_pb2.SearchResponse(next_page_token=token).SerializeToString()

    def _criteria(self, request: query_pb2.SearchRequest, caller: Principal) -> SearchFilter:
        kinds = []
        for i, kind in enumerate(request.kinds):
            if kind not in (records_pb2.KIND_ACTOR, records_pb2.KIND_TECHNIQUE, records_pb2.KIND_OBSERVABLE_SET):
                raise InvalidInput(f"kinds[{i}]", "expected actor, technique or observable_set")
            kinds.append(kind_name(kind))
        for i, code in enumerate(request.originators):
            if not AGENCY_RE.match(code):
                raise InvalidInput(f"originators[{i}]", f"malformed agency code {clip(code)!r}")
        observables: tuple[tuple[str, str], ...] = ()
        if request.HasField("observable"):
            obs = request.observable
            if obs.type:
                observables = ((obs.type, normalize(obs.type, obs.value, field="observable")),)
            else:
                observables = tuple(normalize_any(obs.value).items())
                if not observables:
                    raise InvalidInput("observable.value", "not a valid value of any observable type")
        text = request.text.strip()
        for name in ("issued_after", "issued_before"):
            if request.HasField(name):
                validate_timestamp(getattr(request, name), name)
        after = timestamp_us(request.issued_after) if request.HasField("issued_after") else None
        before = timestamp_us(request.issued_before) if request.HasField("issued_before") else None
        if after is not None and before is not None and before <= after:
            raise InvalidInput("issued_before", "must be later than issued_after")
        if request.min_confidence > 100:
            raise InvalidInput("min_confidence", "expected 0 to 100")
        return SearchFilter(
            kinds=tuple(kinds),
            originators=tuple(request.originators),
            # "Has any partner reported this?": the own agency's records left out.
            exclude_originators=(self.agency,) if request.from_partners else (),
            countries=tuple(c.upper() for c in request.countries),
            sectors=tuple(s.lower() for s in request.sectors),
            observables=observables,
            text=text,
            text_terms=tuple(textindex.query_terms(text)) if text else (),
            issued_after=after,
            issued_before=before,
            include_retracted=request.include_retracted,
            # Expired: validity ended before now (the token binds include_expired, so a page
            # of a search without it never continues one with it).
            expired_before=None if request.include_expired else now_us(),
            min_confidence=request.min_confidence,
            audience_of=caller.agency,
            classifications=within_clearance(caller.clearance),
        )
