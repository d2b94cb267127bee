"""Filling a node's store with many signed records quickly (for crash tests and benchmarks).

Records are made exactly as the node makes them (serialised once, signed with the
agency's key from the PKI, stored with ``store.local.put_local``), without a gRPC round
trip per record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from exchange.core.manifest import Manifest
from exchange.core.policy import holders
from exchange.node.server import load_signer
from exchange.records.envelope import RECORD_TYPE, content_hash
from exchange.store import Store
from exchange.store.received import Incoming, apply_batch
from exchange.store.refusals import Refusal
from exchange.store.store import marking_of, now_us
from exchange.v1 import records_pb2


def make_record(
    agency: str, i: int, marking: records_pb2.Marking, summary: str = "", record_id: str | None = None
) -> records_pb2.Record:
    now = Timestamp()
    now.FromMicroseconds(now_us())
    return records_pb2.Record(
        ref=records_pb2.RecordRef(originator=agency, record_id=record_id or str(uuid.uuid4())),
        version=1,
        status=records_pb2.STATUS_ACTIVE,
        created_at=now,
        issued_at=now,
        content=records_pb2.RecordDraft(
            kind=records_pb2.KIND_ACTOR,
            title=f"フロント企業 {i} による半導体の迂回調達",
            summary=summary or f"Front company {i} procures microcontrollers via a third country; 第三国経由で輸出。",
            countries=["RUS"],
            sectors=["semiconductors"],
            observables=[
                records_pb2.Observable(type="company_name", value=f"Sample Trading {i} LLC"),
                records_pb2.Observable(type="hs_code", value="8542.31"),
            ],
            confidence=60,
            marking=marking,
        ),
    )


def fill(
    store: Store, manifest: Manifest, pki_dir: Path, agency: str, count: int,
    marking: records_pb2.Marking | None = None, chunk: int = 1000, summary: str = "", record_ids: Sequence[str] = (),
) -> list[records_pb2.RecordRef]:
    """Sign and store ``count`` records of ``agency`` (with ``summary``, if given, to make
    them large); returns their refs. The first records take their ids from ``record_ids``
    if given (e.g. ids that share a prefix); the rest are random."""
    signer = load_signer(agency, pki_dir / agency / "signing.key", manifest)
    marking = marking or records_pb2.Marking(
        classification="CONFIDENTIAL", releasable_to=[a for a in manifest.agencies if a != agency], tlp="GREEN"
    )
    accreditations = {code: p.accreditation for code, p in manifest.partners.items()}
    audience = holders(originator=agency, marking=marking_of(marking), accreditations=accreditations)
    refs = []
    for start in range(0, count, chunk):
        batch: list[Incoming | Refusal] = []
        for i in range(start, min(count, start + chunk)):
            record = make_record(agency, i, marking, summary, record_ids[i] if i < len(record_ids) else None)
            envelope = signer.seal(RECORD_TYPE, record.SerializeToString())
            batch.append(Incoming(envelope, content_hash(envelope.payload), audience, record=record))
            refs.append(record.ref)
        # The received-records path writes a whole chunk in one transaction; the node
        # stores its own records the same way (received_from is the agency itself).
        apply_batch(store, agency, batch, None)
    return refs


def refs_of(records: Iterable[records_pb2.Record]) -> set[tuple[str, str]]:
    return {(r.ref.originator, r.ref.record_id) for r in records}
