"""Pulling a partner's sightings: verify each, decide acceptance, store each batch with its cursor.

After the log's pull, the puller asks the same partner for the sightings it reported
(``SyncService.PullSightings``). Every served sighting is checked before it is kept:

- signed by a valid key of the agency it names as reporter (``open_sighting``), and
  served by that reporter's own node (sightings are never relayed);
- :func:`exchange.core.policy.sighting_acceptable`: this node is the record's
  originator, or was released the sighting and holds the record; and the reporter
  may hold the record at all.

A refused sighting is a forgery or a misdirected one: it is not stored, and raises a
``sighting-refused`` security event. Each batch, its refusals' events and the cursor
after it commit in one transaction; a stream that does not end is cut at the pull's
bounds (``pull_max_entries``), and the next pull resumes from the cursor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from exchange.config import Limits
from exchange.core.manifest import Manifest
from exchange.core.policy import may_hold, sighting_acceptable
from exchange.errors import VerificationError, clip
from exchange.records.envelope import open_sighting
from exchange.store import Store
from exchange.store import sightings as stored
from exchange.store.current import current_record
from exchange.v1 import records_pb2, sync_pb2, sync_pb2_grpc

__all__ = ["SightingsReport", "check_sighting", "pull_sightings"]

log = logging.getLogger("exchange.sync")

_VERDICTS = frozenset(stored.VERDICTS)


@dataclass
class SightingsReport:
    stored: int = 0
    refused: int = 0
    batches: int = 0
    error: str = ""
    restarted: bool = False  # the peer refused the cursor (stale or not its own): pulled from the start


def check_sighting(
    store: Store, manifest: Manifest, limits: Limits, envelope: records_pb2.Envelope, served_by: str,
) -> tuple[records_pb2.Sighting, bytes] | stored.Refused:
    """One served sighting: accepted (with its envelope's bytes), or refused and why."""
    detail = {"key_id": clip(envelope.key_id, 140), "payload_type": clip(envelope.payload_type, 80)}
    if len(envelope.payload) > limits.max_record_bytes:
        return stored.Refused(f"sighting is {len(envelope.payload)} bytes, over the limit", detail)
    try:
        sighting = open_sighting(envelope, manifest)
    except VerificationError as error:
        return stored.Refused(clip(str(error), 300), detail)
    detail |= {"reporter": sighting.reporter, "originator": clip(sighting.ref.originator, 40),
               "record_id": clip(sighting.ref.record_id, 40)}
    if sighting.verdict not in _VERDICTS:
        return stored.Refused(f"unknown verdict {sighting.verdict}", detail)
    if len(sighting.sighting_id) != 36:
        return stored.Refused("malformed sighting id", detail)
    record = current_record(store, sighting.ref.originator, sighting.ref.record_id)
    reporter_holds = None
    if record is not None:
        accreditation = manifest.partner(sighting.reporter).accreditation
        reporter_holds = may_hold(agency=sighting.reporter, accreditation=accreditation,
                                  originator=record.originator, marking=record.marking,
                                  known_agencies=manifest.agencies)
    decision = sighting_acceptable(
        receiver=store.agency, reporter=sighting.reporter, served_by=served_by,
        record_originator=sighting.ref.originator, released_to=frozenset(sighting.releasable_to),
        reporter_holds=reporter_holds, receiver_holds=record is not None,
        relay_report=sighting.verdict == records_pb2.VERDICT_RELAYED,
    )
    if not decision.allowed:
        return stored.Refused(decision.reason, detail)
    return sighting, envelope.SerializeToString()


def pull_sightings(
    stub: sync_pb2_grpc.SyncServiceStub, store: Store, manifest: Manifest, limits: Limits, peer: str,
) -> SightingsReport:
    """Pull ``peer``'s sightings from this node's cursor until it has no more (or a bound is hit)."""
    report = SightingsReport()
    cursor = stored.sighting_cursor(store, peer)
    budget = limits.pull_max_entries
    max_calls = limits.pull_max_entries // max(1, limits.pull_batch_entries) + 2
    restarted = False
    while report.batches < max_calls:
        try:
            response = stub.PullSightings(
                sync_pb2.PullSightingsRequest(cursor=cursor, max_entries=limits.pull_batch_entries),
                timeout=limits.pull_deadline_seconds,
            )
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return report  # a node of an older version: no sightings to pull
            stale = code == grpc.StatusCode.FAILED_PRECONDITION
            if (code == grpc.StatusCode.INVALID_ARGUMENT or stale) and cursor and not restarted:
                # A cursor the peer cannot open, or one from before it was restored from an older
                # backup (its seqs reused): start over, once (sightings held are kept once).
                log.warning("%s refused our sightings cursor (%s); starting over", peer,
                            "stale" if stale else "not its own", extra={"peer": peer})
                cursor = b""
                restarted = True
                report.restarted = True
                stored.reset_cursor(store, peer)
                continue
            report.error = f"{code.name}: {clip(error.details(), 300)}"
            return report
        entries = list(response.entries)
        if len(entries) > limits.pull_batch_entries:
            report.error = (f"{peer} sent {len(entries)} sightings in one batch, "
                            f"over the {limits.pull_batch_entries} asked")
            return report  # nothing of it is stored, nor its cursor
        accepted: list[tuple[records_pb2.Sighting, bytes]] = []
        refused: list[stored.Refused] = []
        for envelope in entries:
            checked = check_sighting(store, manifest, limits, envelope, peer)
            if isinstance(checked, stored.Refused):
                refused.append(checked)
            else:
                accepted.append(checked)
        report.stored += stored.apply_sightings(store, peer, accepted, refused, response.cursor)
        report.refused += len(refused)
        report.batches += 1
        cursor = response.cursor
        budget -= len(entries)
        if not response.more or budget <= 0:
            break
    if report.refused:
        log.warning("refused %d sightings from %s", report.refused, peer, extra={"peer": peer})
    return report
