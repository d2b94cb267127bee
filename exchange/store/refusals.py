"""What one partner's refused entries can leave behind: bounded, whatever it sends.

A hostile partner can serve any number of bad entries (a million bad signatures
cost it nothing); what they cost this node must not grow with that number, or
the flood buries the alerts an operator watches for.

- **Events.** Refusals are aggregated: one security event per (kind, reason,
  relay) per pull, with the count and the first ``refusal_hashes_per_event``
  content hashes, updated as later batches of the same pull add to it. A pull
  raises at most ``max_refusal_reasons_per_pull`` of them; refusals for further
  reasons (a reason can quote a value) are counted in one "other reasons" event
  per kind, so the number of events per pull is fixed by configuration.
- **Quarantine.** At most ``max_quarantine_per_peer`` rows per partner. Past it
  the partner's oldest rows are dropped for new ones: the newest refusals are
  what an operator looking now needs, while an earlier flood's size and first
  hashes stay in its events, which are never dropped. One pull writes at most
  that many rows (more would only push each other out).

Equivocation evidence is capped in ``exchange.store.received``: envelopes past
``max_equivocation_envelopes`` for one version are refused through here. An
originator can equivocate on any number of its own records, so equivocation
events are bounded the same way: one per version up to
``max_refusal_reasons_per_pull`` in a pull, then one more counts the rest.

The tally of a pull lives in memory across its batches; :meth:`RefusalTally.transaction`
undoes what a rolled-back batch noted, so the events always match what committed.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from exchange.config import Limits
from exchange.store.schema import quarantine, security_events
from exchange.store.store import now_us
from exchange.v1 import records_pb2

MAX_REASON_CHARS = 300  # a reason can quote what the partner sent; the event keeps a prefix
OTHER_REASONS = "other reasons (over the limit of distinct reasons in one pull)"
MORE_EQUIVOCATIONS = "more equivocating versions (over the limit of events in one pull)"


@dataclass(frozen=True)
class Refusal:
    """An entry refused on receipt: only its hash and the reason are kept."""

    content_hash: bytes
    reason: str
    violation: bool  # the partner served something we may not hold: a rule broken
    relay: str = ""  # the node that relayed a record whose marking forbids relay
    excess_evidence: bool = False  # an equivocating envelope past the cap of those kept

    @property
    def kind(self) -> str:
        if self.relay:
            return "refused-relayed"
        if self.excess_evidence:
            return "refused-excess-evidence"
        return "refused-not-holdable" if self.violation else "refused-invalid"


def excess_evidence(content_hash: bytes, ref: records_pb2.RecordRef, version: int, kept: int) -> Refusal:
    """An equivocating envelope past the ``kept`` already held for its version: two prove the
    originator signed two contents, and an originator (or a thief of its key) could sign a million."""
    return Refusal(content_hash, f"equivocation: {ref.originator}/{ref.record_id} version {version} already has "
                   f"{kept} signed contents kept as evidence", violation=True, excess_evidence=True)


@dataclass
class _Event:
    """One aggregated event: written when its first refusal commits, then updated."""

    kind: str
    reason: str
    relay: str
    count: int = 0
    hashes: list[str] = field(default_factory=list)
    event_id: int | None = None

    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"reason": self.reason, "count": self.count, "content_hashes": self.hashes}
        if self.relay:
            detail["relay"] = self.relay  # the node that served it against its marking
        return detail


class RefusalTally:
    """The refusals of one pull so far (every batch of it, repair pulls included)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._events: dict[tuple[str, str, str], _Event] = {}
        self.quarantined = 0  # rows this pull wrote
        self.equivocations = 0  # equivocation events this pull wrote one by one
        self.more_equivocations = _Event("equivocation", MORE_EQUIVOCATIONS, "")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Forget what was noted here if the transaction around it rolls back."""
        saved = copy.deepcopy({k: v for k, v in vars(self).items() if k != "limits"})
        try:
            yield
        except BaseException:
            vars(self).update(saved)
            raise

    def event_for(self, refusal: Refusal) -> _Event:
        reason = refusal.reason[:MAX_REASON_CHARS]
        key = (refusal.kind, reason, refusal.relay)
        found = self._events.get(key)
        if found is None:
            distinct = sum(1 for e in self._events.values() if e.reason != OTHER_REASONS)
            if distinct >= self.limits.max_refusal_reasons_per_pull:
                key = (refusal.kind, OTHER_REASONS, "")
                found = self._events.get(key)
            if found is None:
                found = self._events[key] = _Event(refusal.kind, key[1], key[2])
        return found

    @property
    def events(self) -> int:
        return len(self._events)


def record_refusals(
    conn: Connection, peer: str, refusals: Sequence[Refusal], tally: RefusalTally
) -> Counter[str]:
    """Quarantine (bounded) and count ``refusals`` in their pull's events; how many of each kind."""
    if not refusals:
        return Counter()
    limits = tally.limits
    touched: dict[int, _Event] = {}
    rows: list[dict[str, Any]] = []
    now = now_us()
    for refusal in refusals:
        event = tally.event_for(refusal)
        event.count += 1
        if len(event.hashes) < limits.refusal_hashes_per_event:
            event.hashes.append(refusal.content_hash.hex())
        touched[id(event)] = event
        if tally.quarantined < limits.max_quarantine_per_peer:
            rows.append({"at": now, "peer": peer, "content_hash": refusal.content_hash,
                         "reason": refusal.reason[:MAX_REASON_CHARS]})
            tally.quarantined += 1
    if rows:
        conn.execute(insert(quarantine), rows)
        _trim_quarantine(conn, peer, limits.max_quarantine_per_peer)
    for event in touched.values():
        _write_event(conn, peer, event)
    return Counter(refusal.kind for refusal in refusals)


def record_equivocation(conn: Connection, peer: str, detail: dict[str, Any], content_hash: bytes,
                        tally: RefusalTally) -> None:
    """The security event for an equivocating version (``detail``), or past the limit of a pull,
    a count in one more event that names the first hashes."""
    if tally.equivocations < tally.limits.max_refusal_reasons_per_pull:
        tally.equivocations += 1
        conn.execute(insert(security_events).values(
            at=now_us(), kind="equivocation", peer=peer, detail=json.dumps(detail, ensure_ascii=False, sort_keys=True)))
        return
    event = tally.more_equivocations
    event.count += 1
    if len(event.hashes) < tally.limits.refusal_hashes_per_event:
        event.hashes.append(content_hash.hex())
    _write_event(conn, peer, event)


def _write_event(conn: Connection, peer: str, event: _Event) -> None:
    detail = json.dumps(event.detail(), ensure_ascii=False, sort_keys=True)
    if event.event_id is None:
        result = conn.execute(insert(security_events).values(at=now_us(), kind=event.kind, peer=peer, detail=detail))
        key = result.inserted_primary_key
        if key is None:  # every back end this store supports returns it
            raise RuntimeError("the database did not return the new security event's id")
        event.event_id = int(key[0])
    else:
        conn.execute(update(security_events).where(security_events.c.id == event.event_id).values(detail=detail))


def _trim_quarantine(conn: Connection, peer: str, keep: int) -> None:
    """Drop ``peer``'s oldest quarantine rows beyond the newest ``keep``."""
    count = conn.execute(select(func.count()).select_from(quarantine).where(quarantine.c.peer == peer)).scalar_one()
    if count <= keep:
        return
    oldest = select(quarantine.c.id).where(quarantine.c.peer == peer).order_by(quarantine.c.id).limit(count - keep)
    conn.execute(delete(quarantine).where(quarantine.c.id.in_(oldest)))
