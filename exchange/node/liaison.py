"""Liaison service: who received a record, and a watch list over what partners share.

- ``Disclosures`` answers "which partners received this record, and when" from
  the audit log's pull entries (through their side index, ``exchange.store.watch``).
  The caller must be allowed to see the record itself, or the answer is
  NOT_FOUND, exactly as for Get. Only pulls are listed: the own agency's
  get/search disclosures are in the audit log too, but not indexed per record.
- ``WatchAdd``/``WatchRemove``/``WatchList`` keep a per-user list of
  observables (one type, or a value under any type), stored with their
  normalised keys, so full-width, half-width and case variants match.
- ``WatchHits`` lists records received from partners that carry a watched
  observable, newest received first. Every record passes
  :func:`exchange.core.policy.decide` for the caller, pages are cut and tokens
  made after the decision, and each page is audited as a disclosure.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.config import Limits
from exchange.core.identity import Principal
from exchange.core.manifest import Manifest
from exchange.core.marking import within_clearance
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, NotFound, TooLarge, clip
from exchange.node.reads import audit_disclosure, fill_page, held_record, page_size, token_context, visible
from exchange.node.rpc import Method
from exchange.node.sightings import held_on
from exchange.node.tokens import PageTokens
from exchange.records.normalize import OBSERVABLE_TYPES, normalize, normalize_any
from exchange.records.validate import validate_ref, validate_timestamp
from exchange.store import Store, StoredRecord, watch
from exchange.store.current import current_record
from exchange.store.rows import timestamp_of, timestamp_us
from exchange.store.store import now_us
from exchange.v1 import liaison_pb2, records_pb2

__all__ = ["HITS_ACTION", "MAX_DISCLOSURES", "MAX_WATCHES", "LiaisonService"]

HITS_ACTION = "watch_hits"  # audit action of a page of watch hits
MAX_WATCHES = 1000  # entries on one user's watch list
MAX_DISCLOSURES = 1000  # disclosures in one answer (newest first; the rest is flagged)



def _entry(entry: watch.Watch) -> liaison_pb2.WatchEntry:
    return liaison_pb2.WatchEntry(
        id=entry.id,
        type=entry.type,
        value=entry.value,
        keys=[records_pb2.Observable(type=t, value=v) for t, v in entry.keys],
        created_at=timestamp_of(entry.created_at),
        notify=entry.notify,
    )


@dataclass
class LiaisonService:
    agency: str
    store: Store
    trust: Trust  # read at every call: the manifest may be replaced while the node runs
    limits: Limits
    tokens: PageTokens
    notify_targets: frozenset[str] = frozenset()  # names of node.toml's [[notify]] targets

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def methods(self) -> list[Method]:
        return [
            Method("Disclosures", liaison_pb2.DisclosuresRequest, self.disclosures),
            Method("WatchAdd", liaison_pb2.WatchAddRequest, self.watch_add),
            Method("WatchRemove", liaison_pb2.WatchRemoveRequest, self.watch_remove),
            Method("WatchList", liaison_pb2.WatchListRequest, self.watch_list),
            Method("WatchHits", liaison_pb2.WatchHitsRequest, self.watch_hits),
            Method("WatchSeen", liaison_pb2.WatchSeenRequest, self.watch_seen),
        ]

    def _allowed(self, record: StoredRecord, caller: Principal) -> bool:
        return visible(self.agency, self.manifest, record, caller)

    # --- Disclosures ------------------------------------------------------------------------

    def disclosures(
        self, request: liaison_pb2.DisclosuresRequest, caller: Principal
    ) -> liaison_pb2.DisclosuresResponse:
        validate_ref(request.ref, "ref")
        originator, record_id = request.ref.originator, request.ref.record_id
        record = current_record(self.store, originator, record_id)
        if record is None or not self._allowed(record, caller):
            raise NotFound()  # the same answer whether absent or not the caller's to see
        found, truncated = watch.disclosures(self.store, originator, record_id, limit=MAX_DISCLOSURES)
        return liaison_pb2.DisclosuresResponse(
            disclosures=[
                liaison_pb2.Disclosure(
                    partner=d.partner, version=d.version, at=timestamp_of(d.at), withdrawal=d.withdrawal,
                    audit_seq=d.audit_seq,
                )
                for d in found
            ],
            truncated=truncated,
            relayed=self._relayed(record, found),
            current_version=record.version,
            marking=records_pb2.Marking(
                classification=record.marking.classification,
                releasable_to=sorted(record.marking.releasable_to),
                tlp=record.marking.tlp,
                caveats=sorted(record.marking.caveats),
            ),
        )

    def _relayed(self, record: StoredRecord, found: list[watch.Disclosed]) -> list[liaison_pb2.RelayedHolder]:
        """Holders the record reached through a partner, first time each, and how this node knows:
        "reported" (the relaying partner's signed report, exchange/node/sightings.py) or "audit"
        (this node relayed a partner's record itself; its own pull disclosures say to whom)."""
        first: dict[tuple[str, str, str], int] = {}
        for row, report in held_on(self.store, self.manifest, record.originator, record.record_id, relayed=True):
            if row.received_from == self.agency:
                continue  # this node's own relay reports are derived from its audit log below
            at = report.reported_at.ToMicroseconds()
            key = (report.holder, report.reporter, "reported")
            first[key] = min(first.get(key, at), at)
        if record.originator != self.agency:
            for d in found:
                if not d.withdrawal and d.partner != record.originator:
                    key = (d.partner, self.agency, "audit")
                    first[key] = min(first.get(key, d.at), d.at)
        return [liaison_pb2.RelayedHolder(holder=h, via=v, source=src, at=timestamp_of(at))
                for (h, v, src), at in sorted(first.items())]

    # --- the watch list ---------------------------------------------------------------------

    def watch_add(self, request: liaison_pb2.WatchAddRequest, caller: Principal) -> liaison_pb2.WatchAddResponse:
        obs_type, value = request.type, request.value
        if obs_type and obs_type not in OBSERVABLE_TYPES:
            raise InvalidInput("type", f"unknown observable type {clip(obs_type)!r}; expected one of "
                               + ", ".join(sorted(OBSERVABLE_TYPES)) + ", or none for any type")
        if not value.strip():
            raise InvalidInput("value", "required: the observable value to watch")
        if obs_type:
            keys = [(obs_type, normalize(obs_type, value, field="value"))]
        else:
            keys = sorted(normalize_any(value).items())
            if not keys:
                raise InvalidInput("value", "not a valid value of any observable type")
        if request.notify and request.notify not in self.notify_targets:
            known = ", ".join(sorted(self.notify_targets)) or "none configured"
            raise InvalidInput("notify", f"unknown notify target {clip(request.notify)!r}; this node has: {known}")
        owner = caller.identity.uri
        if watch.count_watches(self.store, owner) >= MAX_WATCHES:
            raise TooLarge(f"a watch list holds at most {MAX_WATCHES} entries; remove some first")
        entry, created = watch.add_watch(self.store, owner, obs_type, value, keys, notify=request.notify)
        return liaison_pb2.WatchAddResponse(entry=_entry(entry), created=created)

    def watch_remove(
        self, request: liaison_pb2.WatchRemoveRequest, caller: Principal
    ) -> liaison_pb2.WatchRemoveResponse:
        if request.id == 0:
            raise InvalidInput("id", "required: the id of one of your watch entries (see WatchList)")
        if not watch.remove_watch(self.store, caller.identity.uri, request.id):
            raise NotFound("watch entry")
        return liaison_pb2.WatchRemoveResponse()

    def watch_list(self, request: liaison_pb2.WatchListRequest, caller: Principal) -> liaison_pb2.WatchListResponse:
        return liaison_pb2.WatchListResponse(
            entries=[_entry(e) for e in watch.list_watches(self.store, caller.identity.uri)]
        )

    def watch_hits(self, request: liaison_pb2.WatchHitsRequest, caller: Principal) -> liaison_pb2.WatchHitsResponse:
        size = page_size(request.page_size, self.limits.default_page_size, self.limits.max_page_size)
        if request.HasField("received_after"):
            validate_timestamp(request.received_after, "received_after")
        received_after = timestamp_us(request.received_after) if request.HasField("received_after") else None
        context = token_context(b"watch hits", request, caller)
        after = self.tokens.decode(request.page_token, context) if request.page_token else None
        owner = caller.identity.uri
        candidates = watch.watch_hits(
            self.store, owner, after=after, received_after=received_after,
            audience_of=caller.agency, classifications=within_clearance(caller.clearance),
            expired_before=None if request.include_expired else now_us(),  # the token binds include_expired
            unseen=request.unseen,
        )
        page, more = fill_page(candidates, self.agency, self.manifest, caller, size)
        matched = watch.matched_watches(self.store, owner, [r.rid for r in page])
        seen = watch.seen_versions(self.store, owner, [(r.originator, r.record_id) for r in page])
        audit_disclosure(self.store, caller, HITS_ACTION, page)
        last = page[-1] if page else None
        return liaison_pb2.WatchHitsResponse(
            hits=[liaison_pb2.WatchHit(record=held_record(r), watch_ids=matched.get(r.rid, []),
                                       seen=(r.originator, r.record_id, r.version) in seen) for r in page],
            next_page_token=(
                self.tokens.encode((last.received_at, last.rid), context) if more and last is not None else ""
            ),
        )

    def watch_seen(self, request: liaison_pb2.WatchSeenRequest, caller: Principal) -> liaison_pb2.WatchSeenResponse:
        """Mark hits seen: the current versions of the records named (each must be a hit the
        caller may see, or NOT_FOUND), or with ``all`` every current hit."""
        owner = caller.identity.uri
        if request.all == bool(request.refs):
            raise InvalidInput("refs", "name the hits to mark seen, or ask for all")
        if request.all:
            hits = watch.watch_hits(self.store, owner, audience_of=caller.agency,
                                    classifications=within_clearance(caller.clearance))
            shown = [r for r in hits if self._allowed(r, caller)]
        else:
            shown = []
            matched_any = watch.hit_rids(self.store, owner)
            for i, ref in enumerate(request.refs):
                validate_ref(ref, f"refs[{i}]")
                record = current_record(self.store, ref.originator, ref.record_id)
                if record is None or not self._allowed(record, caller) or record.rid not in matched_any:
                    raise NotFound()  # the same answer whether absent, not a hit, or not the caller's
                shown.append(record)
        marked = watch.mark_seen(self.store, owner, [(r.originator, r.record_id, r.version) for r in shown])
        return liaison_pb2.WatchSeenResponse(marked=marked)
