"""Which record a STIX id comes from: the ``stix_ids`` table, brought up to date on demand.

An object's id is a UUIDv5 of (originator, record id, role) (exchange/stix/common.py): it
cannot be turned back into its record. So the ids each current version's objects carry are
written down, in log order, up to a mark kept in ``meta``; a lookup first indexes whatever
arrived since (the first lookup on a large node reads every record once), then reads one
row per id. The table is derived and unsealed on purpose: it only says where to look, and
the record found there is sealed-checked, judged by the decision and mapped again, so a
row edited in the database can hide an object but never show one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from google.protobuf.message import DecodeError
from sqlalchemy import delete, select

from exchange.stix.mapping import record_objects
from exchange.store import Store
from exchange.store.bulk import insert_many
from exchange.store.schema import log, meta, records, stix_ids
from exchange.v1 import records_pb2

__all__ = ["catch_up", "id_uuid", "rids_of"]

MARK = "taxii_ids_seq"  # meta key: the highest records.seq whose ids are indexed
BATCH = 500  # records indexed per write transaction
# A stand-in target, so that every link's relationship id is indexed whoever may see its target.
_ANY_TARGET = "threat-actor--00000000-0000-5000-8000-000000000000"


def id_uuid(stix_id: str) -> bytes | None:
    """The 16 bytes of ``type--UUID``, or None for something that is not a STIX id."""
    _, sep, rest = stix_id.partition("--")
    if not sep:
        return None
    try:
        return uuid.UUID(rest).bytes
    except ValueError:
        return None


def _ids(envelope_bytes: bytes) -> list[str]:
    envelope = records_pb2.Envelope.FromString(envelope_bytes)
    record = records_pb2.Record.FromString(envelope.payload)
    return [o["id"] for o in record_objects(record, envelope, lambda _o, _r: _ANY_TARGET)]


def catch_up(store: Store) -> None:
    """Index the ids of every current version added since the mark."""
    while True:
        with store.write(durable=False) as tx:
            raw = tx.execute(select(meta.c.value).where(meta.c.key == MARK)).scalar_one_or_none()
            mark = int(raw or 0)
            rows = tx.execute(
                select(records.c.rid, records.c.seq, log.c.envelope).join(log, log.c.seq == records.c.seq)
                .where(records.c.seq > mark).order_by(records.c.seq).limit(BATCH)
            ).all()
            if not rows:
                return
            pairs: dict[bytes, int] = {}
            for row in rows:
                try:
                    ids = _ids(bytes(row.envelope))
                except (DecodeError, ValueError):
                    continue  # a withdrawn (purged) or unreadable entry has no objects to find
                for stix_id in ids:
                    key = id_uuid(stix_id)
                    if key is not None:
                        pairs[key] = int(row.rid)
            keys = list(pairs)
            for start in range(0, len(keys), 500):  # a revised record's ids are already there
                tx.execute(delete(stix_ids).where(stix_ids.c.uuid.in_(keys[start:start + 500])))
            insert_many(tx, stix_ids, ("uuid", "rid"), list(pairs.items()))
            tx.execute(delete(meta).where(meta.c.key == MARK))
            tx.execute(meta.insert().values(key=MARK, value=str(int(rows[-1].seq)).encode()))
        if len(rows) < BATCH:
            return


def rids_of(store: Store, stix_ids_wanted: Iterable[str]) -> set[int]:
    """The records the given ids come from (after :func:`catch_up`)."""
    keys = [k for k in (id_uuid(i) for i in stix_ids_wanted) if k is not None]
    if not keys:
        return set()
    with store.engine.connect() as conn:
        return {int(r) for r in conn.execute(select(stix_ids.c.rid).where(stix_ids.c.uuid.in_(keys))).scalars()}
