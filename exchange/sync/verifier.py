"""Checking one served entry before anything of it is stored: size, signature over the
received bytes, this node's submission rules, what it may hold, whether the server could
pass it on. Runs in the pulling process or in its check processes (``exchange.sync.checkpool``).
"""

from __future__ import annotations

import datetime as dt

from exchange.config import Limits
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import Decision, holders, may_accept, may_hold
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, VerificationError, clip
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, content_hash, open_record, open_withdrawal
from exchange.records.validate import validate_received, validate_received_withdrawal
from exchange.store.received import Incoming
from exchange.store.refusals import Refusal
from exchange.store.rows import index_of
from exchange.store.store import marking_of
from exchange.v1 import records_pb2


class Verifier:
    """Checks one served entry: size, signature over the received bytes, this node's own
    submission rules, then what we may hold and whether the server could pass it on."""

    def __init__(self, agency: str, trust: Trust, limits: Limits | None = None) -> None:
        self._agency = agency
        self._trust = trust
        self._limits = limits or Limits()
        # Markings repeat across a partner's records: decide each (originator, marking, server)
        # once per manifest (a new manifest may change accreditations, partners or keys).
        self._decided_under: Manifest | None = None
        self._decisions: dict[tuple[str, Marking, str], tuple[Decision, Decision, frozenset[str]]] = {}

    def _hold(
        self, manifest: Manifest, originator: str, marking: Marking, served_by: str,
    ) -> tuple[Decision, Decision, frozenset[str]]:
        if self._decided_under is not manifest:
            self._decisions = {}
            self._decided_under = manifest
        key = (originator, marking, served_by)
        decisions = self._decisions
        found = decisions.get(key)
        if found is None:
            known = manifest.agencies
            accreditation = manifest.partner(self._agency).accreditation
            held = may_hold(agency=self._agency, accreditation=accreditation, originator=originator,
                            marking=marking, known_agencies=known)
            accepted = may_accept(agency=self._agency, accreditation=accreditation, originator=originator,
                                  served_by=served_by, marking=marking, known_agencies=known)
            accreditations = {code: p.accreditation for code, p in manifest.partners.items()}
            audience = holders(originator=originator, marking=marking, accreditations=accreditations)
            if len(decisions) > 10_000:
                decisions.clear()
            found = decisions[key] = (held, accepted, audience)
        return found

    def check(self, envelope: records_pb2.Envelope, served_by: str) -> Incoming | Refusal:
        """``served_by``: the partner whose node served it (rule 3 asks whether it may pass it on)."""
        manifest = self._trust.manifest  # one manifest for the whole check
        digest = content_hash(envelope.payload)
        if len(envelope.payload) > self._limits.max_record_bytes:  # before any work on it
            return Refusal(digest, f"record is {len(envelope.payload)} bytes, over the limit of "
                           f"{self._limits.max_record_bytes}", violation=False)
        try:
            if envelope.payload_type == WITHDRAWAL_TYPE:
                withdrawal = open_withdrawal(envelope, manifest)
                validate_received_withdrawal(withdrawal)
                return Incoming(envelope, digest, frozenset(), withdrawal=withdrawal)
            if envelope.payload_type != RECORD_TYPE:
                return Refusal(digest, f"unknown payload type {envelope.payload_type[:80]!r}", violation=False)
            record = open_record(envelope, manifest)
            validate_received(record, limits=self._limits, partners=manifest.agencies)
        except (VerificationError, InvalidInput) as error:
            return Refusal(digest, clip(str(error), 300), violation=False)
        except Exception as error:  # a malformed entry never blocks the rest of its batch
            return Refusal(digest, f"malformed entry: {clip(str(error), 300)}", violation=False)
        originator = record.ref.originator
        left = manifest.partner(originator).removed_at
        if left is not None and record.issued_at.ToDatetime(dt.UTC) > left:
            return Refusal(digest, f"{originator} left the federation at {left.isoformat(timespec='seconds')}; "
                           "this version was issued after", violation=True)
        marking = marking_of(record.content.marking)
        held, accepted, audience = self._hold(manifest, originator, marking, served_by or originator)
        if not held.allowed:
            return Refusal(digest, f"may not hold this record: {held.reason}", violation=True)
        if not accepted.allowed:  # docs/design.md rule 3: relayed against its marking
            return Refusal(digest, f"may not accept this record: {accepted.reason}", violation=True,
                           relay=served_by)
        return Incoming(envelope, digest, audience, record=record, index=index_of(record.content))
