"""Checking one served entry before anything of it is stored: size, signature over the
received bytes, this node's submission rules, what it may hold, whether the server could
pass it on. Runs in the pulling process or in its check processes (``exchange.sync.checkpool``).
"""

from __future__ import annotations

from exchange.config import Limits
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import Decision, holders, may_accept, may_hold
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

    def __init__(self, agency: str, manifest: Manifest, limits: Limits | None = None) -> None:
        self._agency = agency
        self._manifest = manifest
        self._limits = limits or Limits()
        self._accreditation = manifest.partner(agency).accreditation
        self._accreditations = {code: p.accreditation for code, p in manifest.partners.items()}
        # Markings repeat across a partner's records: decide each (originator, marking, server) once.
        self._decisions: dict[tuple[str, Marking, str], tuple[Decision, Decision, frozenset[str]]] = {}

    def _hold(self, originator: str, marking: Marking, served_by: str) -> tuple[Decision, Decision, frozenset[str]]:
        key = (originator, marking, served_by)
        found = self._decisions.get(key)
        if found is None:
            known = self._manifest.agencies
            held = may_hold(agency=self._agency, accreditation=self._accreditation, originator=originator,
                            marking=marking, known_agencies=known)
            accepted = may_accept(agency=self._agency, accreditation=self._accreditation, originator=originator,
                                  served_by=served_by, marking=marking, known_agencies=known)
            audience = holders(originator=originator, marking=marking, accreditations=self._accreditations)
            if len(self._decisions) > 10_000:
                self._decisions.clear()
            found = self._decisions[key] = (held, accepted, audience)
        return found

    def check(self, envelope: records_pb2.Envelope, served_by: str) -> Incoming | Refusal:
        """``served_by``: the partner whose node served it (rule 3 asks whether it may pass it on)."""
        digest = content_hash(envelope.payload)
        if len(envelope.payload) > self._limits.max_record_bytes:  # before any work on it
            return Refusal(digest, f"record is {len(envelope.payload)} bytes, over the limit of "
                           f"{self._limits.max_record_bytes}", violation=False)
        try:
            if envelope.payload_type == WITHDRAWAL_TYPE:
                withdrawal = open_withdrawal(envelope, self._manifest)
                validate_received_withdrawal(withdrawal)
                return Incoming(envelope, digest, frozenset(), withdrawal=withdrawal)
            if envelope.payload_type != RECORD_TYPE:
                return Refusal(digest, f"unknown payload type {envelope.payload_type[:80]!r}", violation=False)
            record = open_record(envelope, self._manifest)
            validate_received(record, limits=self._limits, partners=self._manifest.agencies)
        except (VerificationError, InvalidInput) as error:
            return Refusal(digest, clip(str(error), 300), violation=False)
        except Exception as error:  # a malformed entry never blocks the rest of its batch
            return Refusal(digest, f"malformed entry: {clip(str(error), 300)}", violation=False)
        originator = record.ref.originator
        held, accepted, audience = self._hold(originator, marking_of(record.content.marking), served_by or originator)
        if not held.allowed:
            return Refusal(digest, f"may not hold this record: {held.reason}", violation=True)
        if not accepted.allowed:  # docs/design.md rule 3: relayed against its marking
            return Refusal(digest, f"may not accept this record: {accepted.reason}", violation=True,
                           relay=served_by)
        return Incoming(envelope, digest, audience, record=record, index=index_of(record.content))
