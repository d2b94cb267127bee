"""Re-signed envelopes: the same signed bytes under a newer key of their originator.

After a key rotation, or once a key is marked compromised, the originator signs the
payload of each of its entries again (``exchange records resign``). The payload, and so
the content hash, is unchanged; only ``key_id`` and ``signature`` differ. Every node
replaces the envelope it holds the same way:

1. the new envelope becomes a **new log entry** (a new seq), so it travels to every
   partner by ordinary pulls, and relays pass it on as they pass on anything else;
2. the entry it replaces stays as a tombstone: purged (its envelope emptied), its payload
   type marked ``;replaced`` (so the log's unique key, which has no key id, admits the new
   entry, and nothing that looks for records or withdrawals finds the tombstone) and sealed
   again; a partner's cursor that points at it keeps its fingerprint (the content hash);
3. the record's current row, if it pointed at the replaced entry, points at the new
   one: the record is shown and served again as soon as the new key is trusted.

Only the same bytes may be re-signed: a different payload is another content hash
and goes through the ordinary rules (equivocation, versions). Which key wins is the
caller's to say (``supersedes``: the manifest knows which keys are newer and which
are compromised); the store only replaces, atomically, and never loses the record.
The caller has verified the new envelope before it gets here.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update

from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, content_hash
from exchange.store import integrity
from exchange.store.integrity import LOG_SEALED
from exchange.store.rows import LOG_COLUMNS, next_seq
from exchange.store.schema import log, records
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

__all__ = ["REPLACED", "Sign", "Supersedes", "replace_envelope", "resign_own"]

# (originator, new key id, held key id) -> whether the new signature should replace the held one.
Supersedes = Callable[[str, str, str], bool]

Outcome = Literal["replaced", "duplicate", "absent"]

REPLACED = ";replaced"  # appended to a replaced entry's payload type (at most 64 characters in all)


def replace_envelope(
    conn: Connection, originator: str, record_id: str, version: int, envelope: records_pb2.Envelope,
    content_hash: bytes, received_from: str, supersedes: Supersedes, *, refill: bool = False,
) -> Outcome:
    """Replace the held envelope of the same bytes by ``envelope``, inside the caller's write
    transaction. ``absent``: no entry of these bytes is held (store it the ordinary way);
    ``duplicate``: held already with this key, purged, or the held key is not superseded.
    ``refill``: a purged entry is replaced too; the caller says so only where what purged it
    was signed with a distrusted key (a thief's withdrawal: exchange/store/received.py)."""
    held = conn.execute(
        select(log.c.seq, *(log.c[name] for name in LOG_SEALED), log.c.mac, log.c.purged).where(
            log.c.originator == originator, log.c.record_id == record_id, log.c.version == version,
            log.c.payload_type == envelope.payload_type, log.c.content_hash == content_hash,
        )
    ).first()  # one at most: the log's unique key
    if held is None:
        return "absent"
    if (held.key_id == envelope.key_id or (held.purged and not refill)
            or not supersedes(originator, envelope.key_id, held.key_id)):
        return "duplicate"  # the same, withdrawn (never taken again), or signed with a key at least as good
    seal = integrity.of(conn)
    # The new entry copies the held one's audience and marking: they must be as sealed.
    if not seal.served_in(conn, originator, record_id, seal.log_row_problem(held)):
        return "duplicate"
    seq = next_seq(conn)
    values: dict[str, Any] = {name: getattr(held, name) for name in LOG_SEALED}
    values.update(key_id=envelope.key_id, envelope=envelope.SerializeToString(), received_from=received_from,
                  received_at=now_us(), purged=False, content_hash=bytes(held.content_hash))
    values = {name: values[name] for name in LOG_COLUMNS}
    values["mac"] = seal.log_mac_of(seq, values)  # integrity: sealed where written
    tombstone = {name: getattr(held, name) for name in LOG_SEALED}
    tombstone["payload_type"] = held.payload_type + REPLACED
    conn.execute(update(log).where(log.c.seq == held.seq).values(
        envelope=b"", purged=True, payload_type=tombstone["payload_type"],
        mac=seal.log_mac_of(held.seq, tombstone)))
    conn.execute(insert(log).values(seq=seq, **values))
    _repoint_current(conn, originator, record_id, held.seq, seq)
    return "replaced"


def _repoint_current(conn: Connection, originator: str, record_id: str, old_seq: int, new_seq: int) -> None:
    """Point the current row at the new entry if it pointed at the replaced one. Only ``seq``
    changes (and with it the seal, re-made only over a row whose seal holds)."""
    row = conn.execute(
        select(records).where(records.c.originator == originator, records.c.record_id == record_id,
                              records.c.seq == old_seq)
    ).first()
    if row is None:
        return
    seal = integrity.of(conn)
    sealed = {"version": row.version, "seq": row.seq, "status": row.status, "kind": row.kind,
              "classification": row.classification, "releasable_to": row.releasable_to, "tlp": row.tlp,
              "caveats": row.caveats}
    expected = seal.records_mac_of(originator, record_id, sealed)
    if row.mac is None or not hmac.compare_digest(bytes(row.mac), expected):
        seal.served_in(conn, originator, record_id, "its current-version row (records) does not match its seal")
        return
    sealed["seq"] = new_seq
    conn.execute(update(records).where(records.c.rid == row.rid).values(
        seq=new_seq, mac=seal.records_mac_of(originator, record_id, sealed)))


# (payload type, payload) -> the envelope the node's current key makes of them
Sign = Callable[[str, bytes], records_pb2.Envelope]


def resign_own(store: Store, sign: Sign, key_id: str, supersedes: Supersedes, *, chunk: int = 500) -> int:
    """Sign every unpurged entry of the node's own agency again with ``key_id`` (by ``sign``),
    where that key supersedes the one it is signed with; returns how many were re-signed.

    Entries signed with a compromised key are read too (the store's reads leave them out,
    this one must not): each is re-signed over the bytes stored, after the entry's seal is
    checked, so what is signed again is exactly what was signed before. Only entries this
    node wrote itself (``received_from`` its own agency): one of its agency's entries that
    came from a partner may be what a thief signed with the leaked key, and signing it again
    would make the forgery valid under the new key. Each chunk commits on its own; run
    again, it re-signs only what is left.

    Withdrawals are re-signed first, so they travel ahead of the versions: a partner that
    holds a version purged by a withdrawal signed with the compromised key takes the
    version back (exchange/store/received.py) unless the re-signed withdrawal is there.
    """
    done = 0
    for payload_type in (WITHDRAWAL_TYPE, RECORD_TYPE):
        done += _resign(store, sign, key_id, supersedes, payload_type, chunk)
    return done


def _resign(store: Store, sign: Sign, key_id: str, supersedes: Supersedes, payload_type: str, chunk: int) -> int:
    done = 0
    position = 0
    while True:
        with store.write() as tx:
            rows = tx.execute(
                select(log.c.seq, *(log.c[name] for name in LOG_SEALED), log.c.mac, log.c.envelope)
                .where(log.c.originator == store.agency, log.c.received_from == store.agency,
                       log.c.payload_type == payload_type, log.c.purged.is_(False), log.c.key_id != key_id,
                       log.c.seq > position)
                .order_by(log.c.seq).limit(chunk)
            ).all()
            seal = integrity.of(tx)
            for row in rows:
                if not supersedes(store.agency, key_id, row.key_id):
                    continue
                if not seal.served_in(tx, row.originator, row.record_id, seal.log_row_problem(row)):
                    continue
                held = records_pb2.Envelope.FromString(bytes(row.envelope))
                if not hmac.compare_digest(content_hash(held.payload), bytes(row.content_hash)):
                    seal.served_in(tx, row.originator, row.record_id,
                                   f"the envelope stored at log entry {row.seq} is not the one sealed")
                    continue
                envelope = sign(held.payload_type, held.payload)
                if replace_envelope(tx, row.originator, row.record_id, row.version, envelope,
                                    bytes(row.content_hash), store.agency, supersedes) == "replaced":
                    done += 1
        if len(rows) < chunk:
            return done
        position = rows[-1].seq
