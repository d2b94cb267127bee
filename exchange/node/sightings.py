"""Sightings: partners tell an originator "we saw this too", "confirmed" or "false positive".

- ``ReportSighting`` (an analyst or liaison officer, on a partner's record the caller
  may see): the node signs a :class:`Sighting` with its record-signing key, as DSSE
  with its own payload type, and keeps it. It is addressed to the record's originator,
  and to the agencies the reporter names in ``releasable_to``, if any.
- ``PullSightings`` (partner nodes): this node's own sightings, oldest first, each
  passing :func:`exchange.core.policy.sighting_releasable` for the caller, read from
  the *signed* payload (checked against this node's key as it is served, so an edited
  row cannot widen a release). A batch is audited before it is sent, like a pull batch.
- ``Sightings`` (users): the sightings this node holds on a record the caller may see.
- Relay reports: when this node has passed a partner's record on to a third agency (a
  relay), ``PullSightings`` also tells the record's originator, as a sighting with
  ``VERDICT_RELAYED``, once per (record, holder), so the originator's Disclosures can list
  "GBR-NPSA via USA-DTSF" as reported by the relaying partner. They are derived when served
  from the pull disclosures this node's audit log already holds (``disclosure_index``),
  with an id fixed by (record, holder), so serving a pull writes nothing more, and a report
  served twice is one report.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from exchange.config import Limits
from exchange.core.identity import Principal
from exchange.core.manifest import Manifest
from exchange.core.policy import decide, sighting_releasable, sighting_visible
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, NotFound, StaleCursor, VerificationError, clip
from exchange.node.reads import visible
from exchange.node.rpc import Method
from exchange.node.tokens import Sealer
from exchange.records.envelope import SIGHTING_TYPE, claimed_originator, open_sighting
from exchange.records.keyring import Seals
from exchange.records.validate import validate_ref, validate_timestamp
from exchange.store import Store, audit, watch
from exchange.store import sightings as stored
from exchange.store.current import current_record
from exchange.store.rows import timestamp_of
from exchange.store.store import now_us
from exchange.v1 import liaison_pb2, records_pb2, sync_pb2

__all__ = ["MAX_NOTE_CHARS", "PULL_SIGHTINGS_ACTION", "SightingService", "held_on"]

log = logging.getLogger("exchange.node")

PULL_SIGHTINGS_ACTION = "pull_sightings"  # audit action of a served batch of sightings
MAX_NOTE_CHARS = 2000
# The log epoch (which database), the last scanned seq of this node's sightings, the
# position in its relays (audit seq, record id, version) of the caller's records, and the
# fingerprints of the rows at those seqs (exchange/store/sightings.py ``fingerprints``).
_CURSOR = ">16sqq36sI8s8s"
_RELAY_IDS = uuid.UUID("5b0c8f0e-3d6a-5a8e-9c53-7e1f2a4b6c8d")  # namespace of relay reports' ids
_PEOPLES = {records_pb2.VERDICT_SEEN, records_pb2.VERDICT_CONFIRMED, records_pb2.VERDICT_FALSE_POSITIVE}
# The integrity event's problem for a sightings row that is not what its signed envelope says.
EDITED_SIGHTING = "a sighting stored on this record is not the one its reporter signed"


def held_on(
    store: Store, manifest: Manifest, originator: str, record_id: str, *, relayed: bool,
) -> list[tuple[stored.StoredSighting, records_pb2.Sighting]]:
    """The sightings held on one record (people's, or relay reports), oldest first, each with
    what its reporter signed, which is what users are shown.

    The row is only where to look: the sightings table has no seal, so each envelope is verified
    again (its reporter's key, as when it was accepted) and must name this record, the verdict,
    holder and reporter its row claims. One edited in the database (moved to another record, made
    up, its columns changed) is left out and raises one ``integrity`` event for the record, as a
    record row that fails its seal does. One whose key the manifest no longer publishes, or marks
    compromised since, cannot be verified: it is left out quietly (nothing says it was edited;
    a record that key signed is hidden too once it is compromised)."""
    shown = []
    for row in stored.sightings_on(store, originator, record_id, relayed=relayed):
        try:
            envelope = records_pb2.Envelope.FromString(row.envelope)
            key = manifest.signing_key(claimed_originator(envelope), envelope.key_id)
            if key is None or key.compromised:
                continue  # no longer published, or leaked: unverifiable, not evidence of an edit
            sighting = open_sighting(envelope, manifest)
        except (DecodeError, VerificationError):
            sighting = None
        if sighting is None or (sighting.ref.originator, sighting.ref.record_id) != (originator, record_id) \
                or (sighting.reporter, stored.VERDICTS.get(sighting.verdict, "unknown"), sighting.holder) \
                != (row.reporter, row.verdict, row.holder):
            store.seal.served(originator, record_id, EDITED_SIGHTING)
            continue
        shown.append((row, sighting))
    return shown


@dataclass
class SightingService:
    agency: str
    store: Store
    trust: Trust  # read at every call: the manifest may be replaced while the node runs
    limits: Limits
    signer: Seals  # the node's KeyRing: the manifest's current key signs

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def __post_init__(self) -> None:
        # v2: cursors with an epoch and fingerprints; a v1 cursor does not open (INVALID_ARGUMENT)
        # and its puller starts over, keeping what it holds once.
        self._sealer = Sealer(self.store.token_key(), b"exchange sightings cursor v2")
        self._epoch = self.store.log_epoch()

    def sync_methods(self) -> list[Method]:
        return [Method("PullSightings", sync_pb2.PullSightingsRequest, self.pull_sightings)]

    def liaison_methods(self) -> list[Method]:
        return [
            Method("ReportSighting", liaison_pb2.ReportSightingRequest, self.report),
            Method("Sightings", liaison_pb2.SightingsRequest, self.sightings),
        ]

    # --- users ------------------------------------------------------------------------------

    def report(
        self, request: liaison_pb2.ReportSightingRequest, caller: Principal
    ) -> liaison_pb2.ReportSightingResponse:
        validate_ref(request.ref, "ref")
        if request.verdict not in _PEOPLES:
            raise InvalidInput("verdict", "expected seen, confirmed or false_positive")
        if len(request.note) > MAX_NOTE_CHARS:
            raise InvalidInput("note", f"at most {MAX_NOTE_CHARS} characters")
        if request.HasField("observed_at"):
            validate_timestamp(request.observed_at, "observed_at")
        released = sorted(set(request.releasable_to))
        for agency in released:
            if agency not in self.manifest.agencies:
                raise InvalidInput("releasable_to", f"unknown agency {clip(agency)!r}")
        record = current_record(self.store, request.ref.originator, request.ref.record_id)
        if record is None or not visible(self.agency, self.manifest, record, caller):
            raise NotFound()  # the same answer whether absent or not the caller's to see
        if record.originator == self.agency:
            raise InvalidInput("ref", "a sighting is feedback on a partner's record, not the own agency's")
        now = now_us()
        sighting = records_pb2.Sighting(
            sighting_id=str(uuid.uuid4()), reporter=self.agency, reported_by=caller.identity.handle or "",
            ref=records_pb2.RecordRef(originator=record.originator, record_id=record.record_id),
            record_version=record.version, verdict=request.verdict, note=request.note,
            observed_at=request.observed_at if request.HasField("observed_at") else timestamp_of(now),
            reported_at=timestamp_of(now),
            releasable_to=[a for a in released if a not in (record.originator, self.agency)],
        )
        envelope = self.signer.seal(SIGHTING_TYPE, sighting.SerializeToString())
        stored.add_own(self.store, [(sighting, envelope.SerializeToString())])
        audit.record(self.store, actor=caller.identity.uri, action="sighting",
                     detail={"sighting": sighting.sighting_id, "record": [record.originator, record.record_id],
                             "verdict": stored.VERDICTS[sighting.verdict]})
        return liaison_pb2.ReportSightingResponse(sighting=sighting)

    def sightings(self, request: liaison_pb2.SightingsRequest, caller: Principal) -> liaison_pb2.SightingsResponse:
        validate_ref(request.ref, "ref")
        record = current_record(self.store, request.ref.originator, request.ref.record_id)
        if record is None:
            raise NotFound()
        on_record = decide(holder=self.agency, principal=caller, originator=record.originator,
                           marking=record.marking, known_agencies=self.manifest.agencies)
        if not sighting_visible(holder=self.agency, principal=caller, record=on_record).allowed:
            raise NotFound()  # the same answer whether absent or not the caller's to see
        found = held_on(self.store, self.manifest, record.originator, record.record_id, relayed=False)
        return liaison_pb2.SightingsResponse(sightings=[sighting for _, sighting in found])

    # --- partners ---------------------------------------------------------------------------

    def _position(self, cursor: bytes, caller: Principal) -> tuple[int, watch.RelayPosition]:
        if not cursor:
            return 0, (0, "", 0)
        plain = self._sealer.open(cursor, caller.identity.uri.encode())
        if plain is None or len(plain) != struct.calcsize(_CURSOR):
            raise InvalidInput("cursor", "not a sightings cursor issued by this node to this partner")
        epoch, seq, audit_seq, record_id, version, own, relay = struct.unpack(_CURSOR, plain)
        # A database restored from an older backup (or another one) reuses seqs: a cursor
        # issued before the restore would skip sightings reported after it.
        if epoch != self._epoch or stored.fingerprints(self.store, seq, audit_seq) != (own, relay):
            raise StaleCursor("sightings cursor refers to sightings this node no longer has; pull from the start")
        return int(seq), (int(audit_seq), record_id.rstrip(b"\x00").decode("ascii"), int(version))

    def _cursor(self, caller: Principal, seq: int, relays: watch.RelayPosition) -> bytes:
        own, relay = stored.fingerprints(self.store, seq, relays[0])
        plain = struct.pack(_CURSOR, self._epoch, seq, relays[0], relays[1].encode("ascii"), relays[2], own, relay)
        return self._sealer.seal(plain, caller.identity.uri.encode())

    def _releasable(self, envelope: records_pb2.Envelope, caller: Principal) -> bool:
        try:
            sighting = open_sighting(envelope, self.manifest)  # our own signature, over the stored bytes
        except VerificationError as error:
            log.warning("own sighting fails verification, not served: %s", error)
            return False
        if sighting.reporter != self.agency:
            return False
        record = current_record(self.store, sighting.ref.originator, sighting.ref.record_id)
        on_record = None if record is None else decide(
            holder=self.agency, principal=caller, originator=record.originator, marking=record.marking,
            known_agencies=self.manifest.agencies)
        return sighting_releasable(principal=caller, record_originator=sighting.ref.originator,
                                   released_to=frozenset(sighting.releasable_to), record=on_record).allowed

    def pull_sightings(
        self, request: sync_pb2.PullSightingsRequest, caller: Principal
    ) -> sync_pb2.PullSightingsResponse:
        after, relays_after = self._position(request.cursor, caller)
        limit = min(request.max_entries or self.limits.pull_batch_entries, self.limits.pull_batch_entries)
        scanned = stored.own_after(self.store, after, limit)
        released: list[records_pb2.Envelope] = []
        for item in scanned:
            envelope = records_pb2.Envelope.FromString(item.envelope)
            if self._releasable(envelope, caller):
                released.append(envelope)
        relay_limit = max(1, limit - len(released))
        relays, relays_end = watch.first_relays(self.store, caller.agency, after=relays_after, limit=relay_limit)
        released += self._relay_reports(relays, caller)
        last = scanned[-1].seq if scanned else max(after, 0)
        if released:
            # A disclosure, audited before it is handed to gRPC (as a pull batch is).
            audit.record(self.store, actor=caller.identity.uri, action=PULL_SIGHTINGS_ACTION, detail={
                "partner": caller.agency,
                "sightings": [records_pb2.Sighting.FromString(e.payload).sighting_id for e in released],
            })
        more = len(scanned) == limit or relays_end != relays_after  # the next call says when it is all
        return sync_pb2.PullSightingsResponse(entries=released, cursor=self._cursor(caller, last, relays_end),
                                              more=more)

    def _relay_reports(self, relays: Sequence[watch.Relayed], caller: Principal) -> list[records_pb2.Envelope]:
        """Signed reports that this node passed ``caller``'s records on, each at its first disclosure
        to that agency; only to the originator (``caller``), and only while the record may still be
        disclosed to it (its own record: always, unless it is gone)."""
        reports = []
        for relay in relays:
            sighting = records_pb2.Sighting(
                sighting_id=str(uuid.uuid5(_RELAY_IDS, f"{self.agency}/{caller.agency}/{relay.record_id}/"
                                                        f"{relay.partner}")),
                reporter=self.agency, ref=records_pb2.RecordRef(originator=caller.agency, record_id=relay.record_id),
                record_version=relay.version, verdict=records_pb2.VERDICT_RELAYED,
                observed_at=timestamp_of(relay.at), reported_at=timestamp_of(relay.at), holder=relay.partner,
            )
            if sighting_releasable(principal=caller, record_originator=caller.agency, released_to=frozenset(),
                                   record=None).allowed:
                reports.append(self.signer.seal(SIGHTING_TYPE, sighting.SerializeToString()))
        return reports
