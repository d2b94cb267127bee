"""The liaison officer's storage: the pull-disclosure index and per-user watch lists.

Functions over a :class:`~exchange.store.store.Store`, like the rest of the package.
As everywhere in ``exchange.store``, reads return *candidates*: whether a caller may
see a record is decided by the service through ``exchange.core.policy``, never here.

- **Pull disclosures.** Each pull batch a partner node received is one audit
  entry (action ``pull``) and, in the same transaction, one row per record
  version in ``disclosure_index``, so "which partners received this record,
  and when" is an indexed lookup instead of a scan of the whole audit log. The
  audit entry stays the record of the disclosure: the index is derived from it
  and joined back to it for the time.
- **Watch lists.** An entry keeps the value as entered and the normalised keys
  it matches (one for a typed value, one per valid type for a value of any
  type); hits are found by joining those keys with the ``observables`` index,
  so every spelling the normalisation folds together matches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from exchange.errors import Conflict
from exchange.store import audit as audit_log
from exchange.store import integrity
from exchange.store.bulk import insert_many
from exchange.store.current import StoredRecord, sealed, select_current
from exchange.store.schema import (
    audit,
    disclosure_index,
    log,
    observables,
    records,
    watch_entries,
    watch_keys,
    watch_seen,
)
from exchange.store.search import newest_first, shown_prefilter, user_prefilter
from exchange.store.store import Store, now_us

__all__ = [
    "PULL_ACTION",
    "Disclosed",
    "RelayPosition",
    "Relayed",
    "Watch",
    "add_watch",
    "audit_pull",
    "count_watches",
    "disclosures",
    "first_relays",
    "hit_records",
    "hit_rids",
    "list_watches",
    "log_top",
    "mark_seen",
    "matched_watches",
    "new_hits",
    "notifying_watches",
    "remove_watch",
    "seen_versions",
    "watch_hits",
]

PULL_ACTION = "pull"

VersionRef = tuple[str, str, int]  # (originator, record_id, version)


# --- pull disclosures ---------------------------------------------------------------------


@dataclass(frozen=True)
class Disclosed:
    """One pull batch that carried a version of a record (or its withdrawal) to a partner."""

    audit_seq: int
    at: int  # microseconds since the epoch
    partner: str
    version: int
    withdrawal: bool


def audit_pull(
    store: Store, *, actor: str, partner: str, sent: Sequence[VersionRef], withdrawals: Sequence[VersionRef]
) -> int:
    """Audit one served pull batch and index it, in one write transaction; returns the audit seq.

    ``sent`` are the record versions in the batch, ``withdrawals`` the withdrawals
    (each names the version below which earlier versions are withdrawn).
    """
    detail = {
        "partner": partner,
        "records": [list(ref) for ref in sent],
        "withdrawals": [list(ref) for ref in withdrawals],
    }
    # One row per distinct version: both envelopes of an equivocated version are one disclosure.
    rows = {(o, r, v, False) for o, r, v in sent} | {(o, r, v, True) for o, r, v in withdrawals}
    with store.write(audit_only=True) as conn:
        seq = audit_log.append(conn, at=now_us(), actor=actor, action=PULL_ACTION, detail=detail)
        seal = integrity.of(conn)  # integrity: each row sealed, and checked against this entry by verify
        # Plain tuples in one executemany: a pull batch is hundreds of rows.
        insert_many(conn, disclosure_index, ("originator", "record_id", "audit_seq", "version", "withdrawal",
                                             "partner", "mac"),
                    [(o, r, seq, v, w, partner, seal.disclosure_mac(o, r, seq, v, w, partner))
                     for o, r, v, w in sorted(rows)])
    return seq


def disclosures(store: Store, originator: str, record_id: str, *, limit: int) -> tuple[list[Disclosed], bool]:
    """Pull disclosures of a record, newest first: at most ``limit``, and whether more exist."""
    query = (
        select(
            disclosure_index.c.audit_seq, audit.c.at, disclosure_index.c.partner, disclosure_index.c.version,
            disclosure_index.c.withdrawal, disclosure_index.c.mac,
        )
        .join(audit, audit.c.seq == disclosure_index.c.audit_seq)
        .where(disclosure_index.c.originator == originator, disclosure_index.c.record_id == record_id)
        .order_by(disclosure_index.c.audit_seq.desc(), disclosure_index.c.version.desc(),
                  disclosure_index.c.withdrawal.desc())
        .limit(limit + 1)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    # integrity: an edited row is left out (and reported); a deleted one, by `exchange audit verify`.
    found = [Disclosed(int(r.audit_seq), int(r.at), r.partner, int(r.version), bool(r.withdrawal)) for r in rows
             if store.seal.served(originator, record_id, store.seal.disclosure_problem(
                 originator, record_id, r.audit_seq, r.version, r.withdrawal, r.partner, r.mac))]
    return found[:limit], len(found) > limit


@dataclass(frozen=True)
class Relayed:
    """A partner's record this node passed on to a third agency: the first pull that carried it there."""

    audit_seq: int
    at: int  # microseconds since the epoch
    record_id: str
    version: int
    partner: str  # the agency whose node received it


RelayPosition = tuple[int, str, int]  # (audit_seq, record_id, version): where a listing of relays resumes


def first_relays(store: Store, originator: str, *, after: RelayPosition, limit: int
                 ) -> tuple[list[Relayed], RelayPosition]:
    """``originator``'s records this node served to agencies other than ``originator``, each
    (record, agency) once, at its first pull disclosure, after position ``after``, oldest first;
    at most ``limit`` rows read. Returns them and the position to resume from."""
    earlier = disclosure_index.alias("earlier")
    seq, record_id, version = after
    later = or_(disclosure_index.c.audit_seq > seq, and_(
        disclosure_index.c.audit_seq == seq,
        or_(disclosure_index.c.record_id > record_id,
            and_(disclosure_index.c.record_id == record_id, disclosure_index.c.version > version))))
    query = (
        select(disclosure_index.c.audit_seq, audit.c.at, disclosure_index.c.record_id, disclosure_index.c.version,
               disclosure_index.c.partner, disclosure_index.c.withdrawal, disclosure_index.c.mac)
        .join(audit, audit.c.seq == disclosure_index.c.audit_seq)
        .where(disclosure_index.c.originator == originator, disclosure_index.c.partner != originator,
               disclosure_index.c.withdrawal.is_(False), later,
               ~select(earlier.c.audit_seq).where(
                   earlier.c.originator == disclosure_index.c.originator,
                   earlier.c.record_id == disclosure_index.c.record_id,
                   earlier.c.partner == disclosure_index.c.partner, earlier.c.withdrawal.is_(False),
                   earlier.c.audit_seq < disclosure_index.c.audit_seq).exists())
        .order_by(disclosure_index.c.audit_seq, disclosure_index.c.record_id, disclosure_index.c.version)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    position = (int(rows[-1].audit_seq), rows[-1].record_id, int(rows[-1].version)) if rows else after
    # integrity: an edited row is left out (and reported), as in ``disclosures``.
    return [Relayed(int(r.audit_seq), int(r.at), r.record_id, int(r.version), r.partner) for r in rows
            if store.seal.served(originator, r.record_id, store.seal.disclosure_problem(
                originator, r.record_id, r.audit_seq, r.version, r.withdrawal, r.partner, r.mac))], position


# --- watch lists --------------------------------------------------------------------------


@dataclass(frozen=True)
class Watch:
    """One entry of a user's watch list."""

    id: int
    type: str  # empty: any type
    value: str  # as entered
    keys: tuple[tuple[str, str], ...]  # (type, normalised value), sorted
    created_at: int
    notify: str = ""  # the notify target hits are pushed to; empty: none


def _keys(conn: Connection, owner: str, ids: Sequence[int]) -> dict[int, tuple[tuple[str, str], ...]]:
    found: dict[int, list[tuple[str, str]]] = {}
    if ids:
        rows = conn.execute(
            select(watch_keys.c.watch_id, watch_keys.c.type, watch_keys.c.value)
            .where(watch_keys.c.owner == owner, watch_keys.c.watch_id.in_(ids))
            .order_by(watch_keys.c.watch_id, watch_keys.c.type, watch_keys.c.value)
        )
        for row in rows:
            found.setdefault(int(row.watch_id), []).append((row.type, row.value))
    return {i: tuple(keys) for i, keys in found.items()}


def _watches(conn: Connection, owner: str, ids: Sequence[int] | None = None) -> list[Watch]:
    query = select(watch_entries).where(watch_entries.c.owner == owner).order_by(watch_entries.c.id)
    if ids is not None:
        query = query.where(watch_entries.c.id.in_(ids))
    rows = conn.execute(query).all()
    keys = _keys(conn, owner, [int(r.id) for r in rows])
    return [Watch(int(r.id), r.type, r.value, keys.get(int(r.id), ()), int(r.created_at), r.notify or "")
            for r in rows]


def list_watches(store: Store, owner: str) -> list[Watch]:
    with store.engine.connect() as conn:
        return _watches(conn, owner)


def notifying_watches(store: Store) -> dict[str, list[Watch]]:
    """Every user's entries that push their hits to a notify target, by owner."""
    with store.engine.connect() as conn:
        owners = sorted({r.owner for r in conn.execute(
            select(watch_entries.c.owner).where(watch_entries.c.notify.is_not(None)))})
        return {owner: [w for w in _watches(conn, owner) if w.notify] for owner in owners}


def count_watches(store: Store, owner: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(watch_entries).where(watch_entries.c.owner == owner))
            .scalar_one()
        )


def add_watch(
    store: Store, owner: str, obs_type: str, value: str, keys: Sequence[tuple[str, str]], *, notify: str = "",
) -> tuple[Watch, bool]:
    """Add an entry (``keys`` already normalised); returns it and whether it is new.

    An entry of the same type with the same keys is the same watch: it is
    returned instead of a duplicate.
    """
    wanted = tuple(sorted(set(keys)))
    try:
        with store.write() as conn:
            for existing in _watches(conn, owner):
                if existing.type == obs_type and existing.keys == wanted:
                    if notify and existing.notify != notify:  # the same watch, now pushed
                        conn.execute(update(watch_entries).where(
                            watch_entries.c.owner == owner, watch_entries.c.id == existing.id).values(notify=notify))
                        return _watches(conn, owner, [existing.id])[0], False
                    return existing, False
            next_id = int(
                conn.execute(
                    select(func.coalesce(func.max(watch_entries.c.id), 0)).where(watch_entries.c.owner == owner)
                ).scalar_one()
            ) + 1
            conn.execute(
                insert(watch_entries).values(owner=owner, id=next_id, type=obs_type, value=value,
                                             created_at=now_us(), notify=notify or None)
            )
            conn.execute(
                insert(watch_keys),
                [{"owner": owner, "watch_id": next_id, "type": t, "value": v} for t, v in wanted],
            )
            return _watches(conn, owner, [next_id])[0], True
    except IntegrityError:
        # Two adds by one user at once on a database without a write lock at BEGIN.
        raise Conflict("the watch list changed at the same time; try again") from None


def remove_watch(store: Store, owner: str, watch_id: int) -> bool:
    """Remove one of ``owner``'s entries; False if ``owner`` has no such entry."""
    with store.write() as conn:
        conn.execute(delete(watch_keys).where(watch_keys.c.owner == owner, watch_keys.c.watch_id == watch_id))
        removed = conn.execute(
            delete(watch_entries).where(watch_entries.c.owner == owner, watch_entries.c.id == watch_id)
        ).rowcount
    return bool(removed)


def _hit_rids(owner: str) -> Select[tuple[int]]:
    """The rids of records with an observable on ``owner``'s watch list."""
    return (
        select(observables.c.rid)
        .join(watch_keys, and_(watch_keys.c.type == observables.c.type, watch_keys.c.value == observables.c.value))
        .where(watch_keys.c.owner == owner)
    )


def hit_rids(store: Store, owner: str) -> set[int]:
    """The rids of every record with an observable on ``owner``'s watch list."""
    with store.engine.connect() as conn:
        return {int(row.rid) for row in conn.execute(_hit_rids(owner))}


def watch_hits(
    store: Store, owner: str, *, after: tuple[int, int] | None = None, received_after: int | None = None,
    audience_of: str | None = None, classifications: tuple[str, ...] | None = None,
    expired_before: int | None = None, unseen: bool = False,
) -> Iterator[StoredRecord]:
    """Candidate hits for ``owner``: active records received from partners with a watched
    observable, newest received first, strictly after position ``after`` (received_at, rid).
    ``expired_before``: leave out records whose validity ended before it (microseconds).

    The own agency's records are never hits, even if a partner relayed one back.
    """
    base = select_current(store).where(
        records.c.status == "active",
        records.c.originator != store.agency,
        log.c.received_from != store.agency,
        records.c.rid.in_(_hit_rids(owner)),
        *user_prefilter(audience_of, classifications),
        *shown_prefilter(expired_before, 0),
    )
    if received_after is not None:
        base = base.where(log.c.received_at >= received_after)
    if unseen:  # the current version not marked seen by ``owner``
        base = base.where(~select(watch_seen.c.version).where(
            watch_seen.c.owner == owner, watch_seen.c.originator == records.c.originator,
            watch_seen.c.record_id == records.c.record_id, watch_seen.c.version == records.c.version).exists())
    return newest_first(store, base, log.c.received_at, after)


def log_top(store: Store) -> int:
    """The last log position written (0: none)."""
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(log.c.seq), 0))).scalar_one())


def new_hits(
    store: Store, owner: str, watch_ids: Sequence[int], *, after_seq: int, upto_seq: int,
) -> dict[int, list[int]]:
    """Records whose current version entered the log in (``after_seq``, ``upto_seq``] with an
    observable that ``owner``'s entries ``watch_ids`` watch: rid -> those entries' ids.

    The notifier's incremental read (exchange/node/notify.py): it starts from the records new
    since its mark (``ix_records_seq``), so its cost is what is new, not every old hit.
    """
    if not watch_ids or upto_seq <= after_seq:
        return {}
    query = (
        select(records.c.rid, watch_keys.c.watch_id)
        .join(observables, observables.c.rid == records.c.rid)
        .join(watch_keys, and_(watch_keys.c.type == observables.c.type, watch_keys.c.value == observables.c.value))
        .where(records.c.seq > after_seq, records.c.seq <= upto_seq, watch_keys.c.owner == owner,
               watch_keys.c.watch_id.in_(sorted(set(watch_ids))))
        .distinct()
        .order_by(records.c.rid, watch_keys.c.watch_id)
    )
    found: dict[int, list[int]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            found.setdefault(int(row.rid), []).append(int(row.watch_id))
    return found


HIT_CHUNK = 500  # rids per read of hit records: a bounded IN list


def hit_records(
    store: Store, rids: Sequence[int], *, audience_of: str | None, classifications: tuple[str, ...] | None,
    expired_before: int | None,
) -> list[StoredRecord]:
    """The records ``rids`` that are hits as :func:`watch_hits` says (active, from a partner,
    within the user's prefilters, not expired), sealed-checked; candidates still."""
    found: list[StoredRecord] = []
    wanted = sorted(set(rids))
    for start in range(0, len(wanted), HIT_CHUNK):
        query = select_current(store).where(
            records.c.rid.in_(wanted[start:start + HIT_CHUNK]),
            records.c.status == "active",
            records.c.originator != store.agency,
            log.c.received_from != store.agency,
            *user_prefilter(audience_of, classifications),
            *shown_prefilter(expired_before, 0),
        ).order_by(records.c.rid)
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
        found.extend(sealed(store, rows))
    return found


def matched_watches(store: Store, owner: str, rids: Sequence[int]) -> dict[int, list[int]]:
    """For each record (by rid), the ids of ``owner``'s entries it matches, ascending."""
    if not rids:
        return {}
    query = (
        select(observables.c.rid, watch_keys.c.watch_id)
        .join(watch_keys, and_(watch_keys.c.type == observables.c.type, watch_keys.c.value == observables.c.value))
        .where(watch_keys.c.owner == owner, observables.c.rid.in_(rids))
        .distinct()
        .order_by(observables.c.rid, watch_keys.c.watch_id)
    )
    matched: dict[int, list[int]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            matched.setdefault(int(row.rid), []).append(int(row.watch_id))
    return matched


def mark_seen(store: Store, owner: str, versions: Sequence[VersionRef]) -> int:
    """Mark record versions seen by ``owner``; returns how many were not marked before."""
    marked = 0
    with store.write() as conn:
        for originator, record_id, version in sorted(set(versions)):
            held = conn.execute(select(watch_seen.c.at).where(
                watch_seen.c.owner == owner, watch_seen.c.originator == originator,
                watch_seen.c.record_id == record_id, watch_seen.c.version == version)).first()
            if held is None:
                conn.execute(insert(watch_seen).values(owner=owner, originator=originator, record_id=record_id,
                                                       version=version, at=now_us()))
                marked += 1
    return marked


def seen_versions(store: Store, owner: str, refs: Sequence[tuple[str, str]]) -> set[VersionRef]:
    """Which versions of these records ``owner`` marked seen."""
    found: set[VersionRef] = set()
    if not refs:
        return found
    with store.engine.connect() as conn:
        rows = conn.execute(select(watch_seen.c.originator, watch_seen.c.record_id, watch_seen.c.version).where(
            watch_seen.c.owner == owner, watch_seen.c.record_id.in_(sorted({r for _, r in refs}))))
        for o, r, v in rows:
            found.add((o, r, int(v)))
    return found
