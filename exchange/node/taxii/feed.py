"""What a TAXII collection holds for one caller: pages of STIX objects, oldest added first.

Every record shown has passed :func:`exchange.core.policy.decide` for the caller (through
``exchange.node.reads.visible``, as Search), its objects are exactly what ``exchange export
--format stix21`` writes for it (exchange/stix), and every page that shows a record is
written to the audit log as a disclosure.

**Date added** is the receipt time of the record's current log entry: receipt times rise
strictly with the log's sequence numbers (``exchange.store.rows.next_received_at``), which
commit in order, so "added after T" is "current entry after the last seq received by T"
and a page walks ``ix_records_seq`` from where the last one stopped. A page reads what it
shows (plus at most a bounded scan past records the caller may not see), whatever the
collection holds; records added meanwhile land after every position already handed out,
so ``added_after`` + ``next`` never skip or repeat an object. A revised record moves to the
end as its new version, which is how TAXII orders versions too.

The shared objects (Exchange's identity and marking extension, the OASIS TLP 2.0 markings,
the federation's agencies) lead every collection, dated at the epoch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select

from exchange.config import TaxiiCollection
from exchange.core.identity import Principal
from exchange.core.manifest import Manifest
from exchange.core.marking import within_clearance
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, NotFound
from exchange.node.reads import audit_disclosure, visible
from exchange.node.taxii import ids as stix_index
from exchange.node.tokens import PageTokens
from exchange.stix.common import TLP_IDS, StixObject, shared_objects
from exchange.stix.mapping import main_id, record_objects
from exchange.store import Store, StoredRecord
from exchange.store.current import current_record, select_current, to_record
from exchange.store.schema import log, records
from exchange.store.search import user_prefilter
from exchange.v1 import records_pb2

__all__ = ["AUDIT_ACTION", "MAX_LIMIT", "Feed", "Item", "Page", "Query", "parse_timestamp", "timestamp"]

AUDIT_ACTION = "taxii"  # audit action of a TAXII answer that showed records
MAX_LIMIT = 1000  # objects in one answer at most (a larger limit is lowered, as TAXII allows)
DEFAULT_LIMIT = 100
CHUNK = 200  # rows fetched per round trip while filling a page
SHARED_SEQ = 0  # the position of the shared objects: before every log entry
_WHOLE = 2**31  # "skip every object of the record at this position"


def timestamp(microseconds: int) -> str:
    """A TAXII timestamp, to the microsecond (a date_added must tell entries apart)."""
    when = datetime.fromtimestamp(microseconds // 1_000_000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{microseconds % 1_000_000:06d}Z"


def parse_timestamp(value: str, name: str) -> int:
    """Microseconds since the epoch from an RFC 3339 UTC timestamp (``...Z``)."""
    text = value.strip()
    if not text.endswith(("Z", "z")):
        raise InvalidInput(name, f"expected a UTC timestamp such as 2026-01-31T12:00:00.000Z, got {value[:64]!r}")
    base, _, fraction = text[:-1].partition(".")
    try:
        when = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        if fraction and (not fraction.isdigit() or len(fraction) > 9):
            raise ValueError(fraction)
    except ValueError:
        raise InvalidInput(name, f"expected a UTC timestamp such as 2026-01-31T12:00:00.000Z, got {value[:64]!r}") \
            from None
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return int(when.timestamp()) * 1_000_000 + micros


@dataclass(frozen=True)
class Query:
    """What a request asks of a collection, besides the page (validated)."""

    added_after: int | None = None  # microseconds, exclusive
    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset({"last"})  # last, first, all, or timestamps (as given)
    version_times: frozenset[int] = frozenset()
    spec_versions: frozenset[str] = frozenset()

    def context(self, caller: Principal, collection: str, endpoint: str) -> bytes:
        """Binds a next token to who asked, where, and with which filters."""
        canonical = json.dumps([collection, endpoint, self.added_after, sorted(self.ids), sorted(self.types),
                                sorted(self.versions), sorted(self.spec_versions)])
        digest = hashlib.sha256(b"taxii\x00" + canonical.encode("utf-8")).digest()
        return caller.identity.uri.encode("utf-8") + b"\x00" + digest

    def matches(self, obj: StixObject, added: int) -> bool:
        if self.ids and obj["id"] not in self.ids:
            return False
        if self.types and obj["type"] not in self.types:
            return False
        if self.spec_versions and obj.get("spec_version", "2.1") not in self.spec_versions:
            return False
        if self.versions & {"last", "first", "all"}:
            return True  # a node serves one version of each object: the current one
        return parse_timestamp(version_of(obj, added), "version") in self.version_times


def version_of(obj: StixObject, added: int) -> str:
    """An object's version as TAXII lists it: modified, else created, else date added (SCOs)."""
    return str(obj.get("modified") or obj.get("created") or timestamp(added))


@dataclass(frozen=True)
class Item:
    obj: StixObject
    added: int  # date added, microseconds


@dataclass
class Page:
    items: list[Item] = field(default_factory=list)
    more: bool = False
    next: str = ""


@dataclass(frozen=True)
class _Held:
    seq: int
    record: StoredRecord | None  # None: the shared objects


class Feed:
    """The collections of one node, read through the disclosure decision."""

    def __init__(self, agency: str, store: Store, trust: Trust, tokens: PageTokens,
                 collections: tuple[TaxiiCollection, ...]) -> None:
        self.agency = agency
        self.store = store
        self.trust = trust  # read at every call: the manifest may be replaced while the node runs
        self.tokens = tokens
        self.collections = {c.id: c for c in collections}
        self._shared_for: tuple[frozenset[str], list[StixObject]] | None = None

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def _shared(self) -> list[StixObject]:
        """The objects every collection starts with, for the federation's agencies now (a
        partner may join or leave while the node runs): made again only when they change."""
        agencies = self.manifest.agencies
        if self._shared_for is None or self._shared_for[0] != agencies:
            self._shared_for = (agencies, shared_objects(set(TLP_IDS), set(agencies)))
        return self._shared_for[1]

    def collection(self, collection_id: str) -> TaxiiCollection:
        found = self.collections.get(collection_id)
        if found is None:
            raise NotFound("collection")
        return found

    # --- pages -------------------------------------------------------------------------------

    def page(self, collection_id: str, caller: Principal, query: Query, limit: int, next_token: str,
             endpoint: str = "objects") -> Page:
        """One page of the objects ``query`` selects, at most ``limit``, oldest added first."""
        collection = self.collection(collection_id)
        context = query.context(caller, collection_id, endpoint)
        if next_token:
            start, skip = self.tokens.decode(next_token, context)
        else:
            start = SHARED_SEQ if query.added_after is None else self.last_seq_by(query.added_after) + 1
            skip = 0
        page = Page()
        shown: list[StoredRecord] = []
        budget = 10 * limit + 1000  # rows a page may read past what it shows (see _walk)
        walked = self._walk(collection, caller, start, budget, self._by_id(query.ids))
        for held, scanned in walked:
            if held is None:  # the scan budget is spent: a shorter page, and the place to go on
                page.more, page.next = True, self.tokens.encode((scanned, 0), context)
                break
            chosen = [(i, item) for i, item in enumerate(self._items(held, caller))
                      if not (held.seq == start and i < skip) and query.matches(item.obj, item.added)]
            if not chosen:
                continue
            if len(page.items) + len(chosen) > limit:
                # A record is not split across pages unless it alone is more than a page.
                cut = chosen[0][0] if page.items else chosen[limit - len(page.items)][0]
                if not page.items:
                    page.items += [item for _, item in chosen[:limit]]
                    if held.record is not None:
                        shown.append(held.record)
                page.more, page.next = True, self.tokens.encode((held.seq, cut), context)
                break
            page.items += [item for _, item in chosen]
            if held.record is not None:
                shown.append(held.record)
            if len(page.items) == limit:
                # "More" only if another object is there for this caller: look for it (bounded).
                page.more = self._any_after(walked, query, caller)
                if page.more:
                    page.next = self.tokens.encode((held.seq, _WHOLE), context)
                break
        if shown:
            audit_disclosure(self.store, caller, AUDIT_ACTION, shown)
        return page

    def object_items(self, collection_id: str, caller: Principal, object_id: str, query: Query) -> list[Item]:
        """Every version this node serves of one object (one: the current), or NotFound.

        The id is looked up in ``stix_ids`` (exchange/node/taxii/ids.py): one record is read."""
        collection = self.collection(collection_id)
        wanted = Query(query.added_after, frozenset({object_id}), query.types, query.versions, query.version_times,
                       query.spec_versions)
        start = SHARED_SEQ if query.added_after is None else self.last_seq_by(query.added_after) + 1
        found: list[Item] = []
        shown: list[StoredRecord] = []
        for held, _ in self._walk(collection, caller, start, None, self._by_id(wanted.ids)):
            if held is None:
                break
            for item in self._items(held, caller):
                if wanted.matches(item.obj, item.added):
                    found.append(item)
                    if held.record is not None:
                        shown.append(held.record)
        if shown:
            audit_disclosure(self.store, caller, AUDIT_ACTION, shown)
        if not found:
            raise NotFound("object")  # absent and not yours look the same
        return found

    def _any_after(self, walked: Iterator[tuple[_Held | None, int]], query: Query, caller: Principal) -> bool:
        for held, _ in walked:
            if held is None:
                return True  # not known within the budget: say more, the next page will tell
            if any(query.matches(i.obj, i.added) for i in self._items(held, caller)):
                return True
        return False

    # --- the walk ----------------------------------------------------------------------------

    def last_seq_by(self, at: int) -> int:
        """The last log seq received at or before ``at`` (0 if none): a binary search over
        the log's primary key, as receipt times rise with seq (a few point reads)."""
        with self.store.engine.connect() as conn:
            lo, hi = 0, int(conn.execute(select(func.coalesce(func.max(log.c.seq), 0))).scalar_one())
            while lo < hi:
                mid = (lo + hi + 1) // 2
                row = conn.execute(select(log.c.seq, log.c.received_at).where(log.c.seq >= mid)
                                   .order_by(log.c.seq).limit(1)).one()
                if row.received_at <= at:
                    lo = int(row.seq)
                else:
                    hi = mid - 1
        return lo

    def _conditions(self, collection: TaxiiCollection, caller: Principal) -> list[ColumnElement[bool]]:
        conditions = user_prefilter(caller.agency, within_clearance(caller.clearance))  # narrows; decide() judges
        conditions.append(records.c.status == "active")  # a retraction has no content to map
        if collection.originators:
            conditions.append(records.c.originator.in_(collection.originators))
        if collection.from_partners:
            conditions.append(records.c.originator != self.agency)
        return conditions

    def _by_id(self, wanted: frozenset[str]) -> list[ColumnElement[bool]]:
        """``match[id]`` as SQL: only the records those ids come from (none: no condition)."""
        if not wanted:
            return []
        stix_index.catch_up(self.store)
        return [records.c.rid.in_(sorted(stix_index.rids_of(self.store, wanted)))]

    def _walk(self, collection: TaxiiCollection, caller: Principal, start: int,
              budget: int | None, extra: list[ColumnElement[bool]]) -> Iterator[tuple[_Held | None, int]]:
        """The records at or after log position ``start`` the caller may see, in log order.

        After ``budget`` rows read (None: no bound) it yields ``(None, position)`` once: the
        position to go on from, so a caller who may see little of a large collection gets
        shorter pages instead of one long scan."""
        if start <= SHARED_SEQ:
            yield _Held(SHARED_SEQ, None), SHARED_SEQ
        base = select_current(self.store).where(*self._conditions(collection, caller), *extra)
        position = max(start, SHARED_SEQ + 1)
        read = 0
        while True:
            chunk = CHUNK if budget is None else max(1, min(CHUNK, budget - read))
            query = base.where(records.c.seq >= position).order_by(records.c.seq).limit(chunk)
            with self.store.walk() as conn:
                rows = conn.execute(query).all()
            read += len(rows)
            for row in rows:
                # integrity: an edited row is never served (reported once by the seal)
                if not self.store.seal.served(row.originator, row.record_id, self.store.seal.current_problem(row)):
                    continue
                record = to_record(row)
                if visible(self.agency, self.manifest, record, caller):
                    yield _Held(int(row.seq), record), int(row.seq)
            if len(rows) < chunk:
                return
            position = int(rows[-1].seq) + 1
            if budget is not None and read >= budget:
                yield None, position
                return

    # --- objects -----------------------------------------------------------------------------

    def _items(self, held: _Held, caller: Principal) -> list[Item]:
        if held.record is None:
            return [Item(obj, 0) for obj in self._shared()]
        envelope = records_pb2.Envelope.FromString(held.record.envelope)
        record = records_pb2.Record.FromString(envelope.payload)
        added = held.record.received_at
        return [Item(obj, added) for obj in record_objects(record, envelope, self._resolver(caller))]

    def _resolver(self, caller: Principal) -> Any:
        """A link becomes a relationship only to a record the caller may see (as in an export,
        where only records in the bundle are resolved); the rest stay in the extension."""
        def resolve(originator: str, record_id: str) -> str | None:
            target = current_record(self.store, originator, record_id)
            if target is None or target.status != "active" or not visible(self.agency, self.manifest, target,
                                                                            caller):
                return None
            envelope = records_pb2.Envelope.FromString(target.envelope)
            return main_id(records_pb2.Record.FromString(envelope.payload))
        return resolve
