"""Submission service: analysts of the node's agency submit, revise and retract.

The node, not the analyst, gives a record its identity, version, timestamps
and originator; it serialises the record once, signs those bytes, and stores
the envelope verbatim.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exchange.config import Limits
from exchange.core.identity import Identity, Principal, Role
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import decide, holders, link_allowed, narrows
from exchange.core.review import Requirement, ReviewPolicy, requirement
from exchange.core.trust import Trust
from exchange.errors import Conflict, InvalidInput, NotFound, PermissionDenied, TooLarge, clip
from exchange.node.rpc import Method
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, content_hash
from exchange.records.keyring import KeyRing, Seals
from exchange.records.validate import validate_draft, validate_ref, validate_reference
from exchange.store import Store, StoredRecord
from exchange.store.current import current_record, current_records
from exchange.store.local import LocalWrite, Withdrawal, find_reference, find_references, put_local, put_local_many
from exchange.store.log import earlier_audience
from exchange.store.review import DraftRow, HeldWrite, find_held, hold, hold_in
from exchange.store.rows import timestamp_of
from exchange.store.store import marking_of, now_us
from exchange.v1 import records_pb2, submission_pb2

if TYPE_CHECKING:
    from sqlalchemy import Connection  # SubmitBulk's transaction, handed through to the store

# Submissions in one SubmitBulk call at most: a bounded request (500 drafts of a few KB) and
# a bounded transaction, yet one commit covers enough records to make its cost small.
MAX_BULK_SUBMISSIONS = 500
MAX_CACHED_AUDIENCES = 1024
MAX_REFUSAL_CHARS = 512  # as a status message (exchange/node/rpc.py MAX_STATUS_CHARS)
# Refusals of one submission's content: that submission's result in a bulk call.
BULK_REFUSALS = (InvalidInput, TooLarge, NotFound, Conflict)


def _without_marking(content: records_pb2.RecordDraft) -> bytes:
    """The draft's content but its marking, to tell a revision that only narrows the marking."""
    copy = records_pb2.RecordDraft()
    copy.CopyFrom(content)
    copy.ClearField("marking")
    return copy.SerializeToString(deterministic=True)



@dataclass
class _Call:
    """What a SubmitBulk call's drafts are all checked and signed with, read once for the call
    (a call is one moment, as a single Submit is): the partners a marking may name, and the
    key that signs, chosen when the first draft is signed (a rerun's call signs nothing)."""

    partners: frozenset[str]
    ring: Seals
    _chosen: Seals | None = None

    def signer(self) -> Seals:
        if self._chosen is None:
            self._chosen = self.ring.signer() if isinstance(self.ring, KeyRing) else self.ring
        return self._chosen


@dataclass
class SubmissionService:
    agency: str
    store: Store
    signer: Seals  # the node's KeyRing: the manifest's current key signs
    trust: Trust  # read at every call: the manifest may be replaced while the node runs
    limits: Limits
    # Release review (exchange/core/review.py): None releases every submission at once.
    review: ReviewPolicy | None = None
    # The audience of each marking met, under the manifest it was decided with (a new manifest
    # may change accreditations): a few dozen distinct markings in practice, bounded all the same.
    # One attribute, swapped whole: a thread still deciding under the old manifest writes into
    # the old table, never into the new one.
    _audiences: tuple[Manifest | None, dict[Marking, frozenset[str]]] = field(
        default=(None, {}), init=False, repr=False)

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def methods(self) -> list[Method]:
        return [
            Method("Submit", submission_pb2.SubmitRequest, self.submit),
            Method("SubmitBulk", submission_pb2.SubmitBulkRequest, self.submit_bulk),
            Method("Revise", submission_pb2.ReviseRequest, self.revise),
            Method("Retract", submission_pb2.RetractRequest, self.retract),
        ]

    # --- the three operations -------------------------------------------------------------

    def submit(self, request: submission_pb2.SubmitRequest, caller: Principal) -> submission_pb2.SubmitResponse:
        prepared = self._prepare(request, caller)
        if isinstance(prepared, submission_pb2.Receipt):
            return submission_pb2.SubmitResponse(receipt=prepared)
        held = self._hold([prepared], caller)
        if held:
            return submission_pb2.SubmitResponse(receipt=held[0])
        existing = put_local_many(self.store, [prepared])[0]
        return submission_pb2.SubmitResponse(receipt=self._stored(prepared, existing, caller))

    def submit_bulk(
        self, request: submission_pb2.SubmitBulkRequest, caller: Principal
    ) -> submission_pb2.SubmitBulkResponse:
        """Each submission as :meth:`submit` would make it; the new records in one transaction.

        A refusal of one submission's content is that submission's result, and the others
        go on; anything else (the store failing) fails the call, and nothing of it is stored.
        """
        if len(request.submissions) > MAX_BULK_SUBMISSIONS:
            raise TooLarge(f"submissions: {len(request.submissions)}, over the limit of {MAX_BULK_SUBMISSIONS} a call")
        results: list[submission_pb2.SubmitBulkResult] = []
        writes: list[tuple[int, LocalWrite]] = []
        # The call's references already known and the records they made, in two queries: a
        # rerun of a file is all of them, and its lines then cost no checking or signing (a
        # line's content is not even read: the reference names the record), nor a query each.
        record_ids = find_references(self.store, caller.identity.handle or "",
                                     [s.reference for s in request.submissions])
        held_now = current_records(self.store, self.agency, record_ids.values())
        known = {reference: held_now.get(record_id) for reference, record_id in record_ids.items()}
        now = _Call(self.manifest.active_agencies, self.signer)
        for i, submission in enumerate(request.submissions):
            try:
                prepared = self._prepare(submission, caller, known, now)
            except BULK_REFUSALS as exc:
                results.append(submission_pb2.SubmitBulkResult(refusal=clip(str(exc), MAX_REFUSAL_CHARS)))
                continue
            if isinstance(prepared, submission_pb2.Receipt):
                results.append(submission_pb2.SubmitBulkResult(receipt=prepared))
            else:
                results.append(submission_pb2.SubmitBulkResult())  # filled in once stored
                writes.append((i, prepared))
        # Release review, as for Submit: the drafts that need approval are held, the others
        # stored, all in the call's one transaction (a crash keeps all of it or none).
        needs = {i: self._needs(w, None) for i, w in writes}
        holding = [(i, self._held(w.record, caller, base_version=0, reference=w.reference, needs=needs[i]))
                   for i, w in writes if needs[i].approvals]
        writes = [(i, w) for i, w in writes if not needs[i].approvals]
        held: list[HeldWrite] = []

        def hold_too(tx: Connection) -> None:
            held[:] = hold_in(tx, [item for _, item in holding], actor=caller.identity.uri)

        stored: list[str | None] = []
        if writes or holding:  # a call of known references only (a rerun) writes nothing
            stored = put_local_many(self.store, [write for _, write in writes], also=hold_too if holding else None)
        for (i, _), item in zip(holding, held, strict=True):
            results[i].receipt.CopyFrom(self._held_receipt(item, created=item.created))
        for (i, write), existing in zip(writes, stored, strict=True):
            try:
                results[i].receipt.CopyFrom(self._stored(write, existing, caller))
            except NotFound:  # its reference named a record gone or not the caller's since: said per draft
                results[i].refusal = "its reference names a record this node no longer shows you"
        return submission_pb2.SubmitBulkResponse(results=results)

    def revise(self, request: submission_pb2.ReviseRequest, caller: Principal) -> submission_pb2.ReviseResponse:
        current = self._own_current(request.ref, request.base_version, caller)
        if not request.HasField("draft"):
            raise InvalidInput("draft", "missing")
        self._check_draft(request.draft, caller, own=request.ref)
        record = self._next_version(current, records_pb2.STATUS_ACTIVE, request.draft)
        envelope = self._sign(record)
        needs = self._needs(record, current)
        if needs.approvals:
            item = self._held(record, caller, base_version=request.base_version, reference="", needs=needs)
            return submission_pb2.ReviseResponse(receipt=self._held_receipt(hold(self.store, [item],
                                                                                 actor=caller.identity.uri)[0]))
        put_local(
            self.store, record, envelope, actor=caller.identity.uri, action="revise", audience=self._audience(record),
            base_version=request.base_version, withdrawal=self._withdrawal(record, current),
        )
        return submission_pb2.ReviseResponse(receipt=self._receipt(record, envelope, created=True))

    def retract(self, request: submission_pb2.RetractRequest, caller: Principal) -> submission_pb2.RetractResponse:
        current = self._own_current(request.ref, request.base_version, caller)
        if len(request.reason) > 2000:
            raise InvalidInput("reason", "over 2000 characters")
        previous = records_pb2.Record.FromString(
            records_pb2.Envelope.FromString(current.envelope).payload
        )
        # A retraction carries no content, only what routing needs: the kind and
        # the marking, so it reaches exactly the audience of the last version.
        content = records_pb2.RecordDraft(kind=previous.content.kind, marking=previous.content.marking)
        record = self._next_version(current, records_pb2.STATUS_RETRACTED, content)
        record.retraction_reason = request.reason
        envelope = self._sign(record)
        put_local(
            self.store, record, envelope, actor=caller.identity.uri, action="retract", audience=self._audience(record),
            base_version=request.base_version, withdrawal=self._withdrawal(record, current),
        )
        return submission_pb2.RetractResponse(receipt=self._receipt(record, envelope, created=True))

    # --- steps ----------------------------------------------------------------------------

    def _prepare(
        self, request: submission_pb2.SubmitRequest, caller: Principal,
        known: Mapping[str, StoredRecord | None] | None = None, call: _Call | None = None,
    ) -> submission_pb2.Receipt | LocalWrite:
        """The receipt of the record a known reference made, or the new record checked and signed;
        ``known``: the caller's references already looked up, each with the current version of
        the record it made (None: not held, or its row fails its seal), as SubmitBulk reads them."""
        validate_reference(request.reference)
        handle = caller.identity.handle or ""
        if request.reference:
            if known is None:
                existing = find_reference(self.store, handle, request.reference)
                if existing is not None:
                    return self._existing(existing, caller)
            elif request.reference in known:
                return self._receipt_of_current(known[request.reference], caller)
            waiting = find_held(self.store, handle, request.reference) if self.review is not None else None
            if waiting is not None:  # submitted again while held: the same draft, not another
                return self._held_receipt(waiting, created=False)
        if not request.HasField("draft"):
            raise InvalidInput("draft", "missing")
        self._check_draft(request.draft, caller, partners=call.partners if call is not None else None)
        now = now_us()
        record = records_pb2.Record(
            ref=records_pb2.RecordRef(originator=self.agency, record_id=str(uuid.uuid4())),
            version=1,
            status=records_pb2.STATUS_ACTIVE,
            created_at=timestamp_of(now),
            issued_at=timestamp_of(now),
            content=request.draft,
        )
        envelope = self._sign(record, call.signer() if call is not None else None)
        return LocalWrite(record, envelope, actor=caller.identity.uri, action="submit",
                          audience=self._audience(record), submitter=handle, reference=request.reference)

    def _stored(self, write: LocalWrite, existing: str | None, caller: Principal) -> submission_pb2.Receipt:
        """The receipt of a new record just stored, or of the one its reference named (a race lost)."""
        if existing is not None:
            return self._existing(existing, caller)
        return self._receipt(write.record, write.envelope, created=True)

    def _own_current(self, ref: records_pb2.RecordRef, base_version: int, caller: Principal) -> StoredRecord:
        validate_ref(ref, "ref")
        if base_version < 1:
            raise InvalidInput("base_version", "name the version being revised (1 or more)")
        current = current_record(self.store, ref.originator, ref.record_id)
        if current is None or not self._visible(current, caller):
            raise NotFound()  # identical whether absent or not the caller's to see
        if current.originator != self.agency:
            raise PermissionDenied(f"only {current.originator}'s analysts can change its records")
        if current.status != "active":
            raise Conflict(f"{ref.originator}/{ref.record_id} is retracted")
        if current.version != base_version:
            raise Conflict(f"version {base_version} is not current (the current version is {current.version})")
        return current

    def _visible(self, record: StoredRecord, caller: Principal) -> bool:
        return decide(
            holder=self.agency, principal=caller, originator=record.originator,
            marking=record.marking, known_agencies=self.manifest.agencies,
        ).allowed

    def _check_draft(
        self, draft: records_pb2.RecordDraft, caller: Principal, own: records_pb2.RecordRef | None = None,
        partners: frozenset[str] | None = None,
    ) -> None:
        """Validate a draft (``partners``: the agencies its marking may name, if read already)."""
        if partners is None:
            partners = self.manifest.active_agencies  # none that left
        validate_draft(draft, partners=partners, limits=self.limits)
        if not draft.related:
            return
        marking = marking_of(draft.marking)
        for i, ref in enumerate(draft.related):
            field = f"draft.related[{i}]"
            if own is not None and (ref.originator, ref.record_id) == (own.originator, own.record_id):
                raise InvalidInput(field, "a record cannot link to itself")
            target = current_record(self.store, ref.originator, ref.record_id)
            if target is None or not self._visible(target, caller):
                raise InvalidInput(field, f"no record {ref.originator}/{ref.record_id}")
            if not link_allowed(
                originator=self.agency, marking=marking,
                target_originator=target.originator, target_marking=target.marking,
            ):
                raise InvalidInput(
                    field,
                    "links to a record less widely releasable than this one; the link would "
                    "reveal it to partners that may not see it",
                )

    def _next_version(
        self, current: StoredRecord, status: records_pb2.Status, content: records_pb2.RecordDraft
    ) -> records_pb2.Record:
        previous = records_pb2.Record.FromString(records_pb2.Envelope.FromString(current.envelope).payload)
        return records_pb2.Record(
            ref=previous.ref,
            version=current.version + 1,
            status=status,
            created_at=previous.created_at,
            issued_at=timestamp_of(max(now_us(), current.issued_at + 1)),
            content=content,
        )

    def _audience(self, record: records_pb2.Record) -> frozenset[str]:
        marking = marking_of(record.content.marking)
        manifest = self.manifest
        under, table = self._audiences
        if under is not manifest:
            table = {}
            self._audiences = (manifest, table)
        found = table.get(marking)
        if found is None:  # markings repeat across a bulk file: each is decided once
            accreditations = {code: p.accreditation for code, p in manifest.partners.items()}
            found = holders(originator=self.agency, marking=marking, accreditations=accreditations)
            if len(table) >= MAX_CACHED_AUDIENCES:
                table.clear()
            table[marking] = found
        return found

    def _withdrawal(self, record: records_pb2.Record, current: StoredRecord) -> Withdrawal | None:
        """The signed withdrawal of earlier versions, if this version drops an audience or retracts."""
        earlier = earlier_audience(self.store, self.agency, record.ref.record_id)
        retracting = record.status == records_pb2.STATUS_RETRACTED
        if not retracting and not narrows(
            before=earlier, after=self._audience(record), relay_before=current.marking.relay_allowed,
            relay_after=marking_of(record.content.marking).relay_allowed,
        ):
            return None
        message = records_pb2.Withdrawal(ref=record.ref, version=record.version, issued_at=record.issued_at)
        envelope = self.signer.seal(WITHDRAWAL_TYPE, message.SerializeToString())
        return Withdrawal(message, envelope, earlier)

    # --- release review (exchange/node/review.py approves and rejects) ------------------------

    def _needs(self, item: LocalWrite | records_pb2.Record, current: StoredRecord | None) -> Requirement:
        """The approvals a new version needs before release (none with review off)."""
        if self.review is None:
            return Requirement(0, "review off")
        record = item.record if isinstance(item, LocalWrite) else item
        before = None
        same = False
        if current is not None:
            before = current.marking
            previous = records_pb2.Record.FromString(records_pb2.Envelope.FromString(current.envelope).payload)
            same = _without_marking(previous.content) == _without_marking(record.content)
        return requirement(self.review, before=before, after=marking_of(record.content.marking), same_content=same)

    def _held(
        self, record: records_pb2.Record, caller: Principal, *, base_version: int, reference: str, needs: Requirement
    ) -> HeldWrite:
        return HeldWrite(
            originator=self.agency, record_id=record.ref.record_id, base_version=base_version,
            author=caller.identity.handle or "", reference=reference, draft=record.content.SerializeToString(),
            approvals_needed=needs.approvals, rule=needs.reason,
        )

    def _hold(self, writes: list[LocalWrite], caller: Principal) -> list[submission_pb2.Receipt]:
        """Hold the new records that need review; their receipts (empty: none needed review)."""
        items = [(w, self._needs(w, None)) for w in writes]
        if not any(needs.approvals for _, needs in items):
            return []
        held = hold(self.store, [
            self._held(w.record, caller, base_version=0, reference=w.reference, needs=needs) for w, needs in items
        ], actor=caller.identity.uri)
        return [self._held_receipt(h, created=h.created) for h in held]

    def _held_receipt(self, item: HeldWrite | DraftRow, *, created: bool = True) -> submission_pb2.Receipt:
        return submission_pb2.Receipt(
            ref=records_pb2.RecordRef(originator=item.originator, record_id=item.record_id),
            version=item.base_version + 1, created=created, held_draft_id=item.draft_id,
            approvals_needed=item.approvals_needed,
        )

    def release_write(self, row: DraftRow, author: Principal) -> LocalWrite:
        """The version a held draft becomes once approved, checked again and signed now.

        The links and the base version are checked as at submission (a revision whose base
        is no longer current is a Conflict: reject it, and the analyst revises again).
        """
        draft = records_pb2.RecordDraft.FromString(row.draft)
        ref = records_pb2.RecordRef(originator=row.originator, record_id=row.record_id)
        self._check_draft(draft, author, own=ref if row.base_version else None)
        if row.base_version == 0:
            now = now_us()
            record = records_pb2.Record(ref=ref, version=1, status=records_pb2.STATUS_ACTIVE,
                                        created_at=timestamp_of(now), issued_at=timestamp_of(now), content=draft)
            return LocalWrite(record, self._sign(record), actor=author.identity.uri, action="submit",
                              audience=self._audience(record), submitter=row.author, reference=row.reference)
        current = self._own_current(ref, row.base_version, author)
        record = self._next_version(current, records_pb2.STATUS_ACTIVE, draft)
        return LocalWrite(record, self._sign(record), actor=author.identity.uri, action="revise",
                          audience=self._audience(record), base_version=row.base_version,
                          withdrawal=self._withdrawal(record, current))

    def receipt_of(self, write: LocalWrite) -> submission_pb2.Receipt:
        return self._receipt(write.record, write.envelope, created=True)

    def author_of(self, row: DraftRow, clearance: str) -> Principal:
        """The analyst who wrote a draft, as the checks at release see them."""
        return Principal(Identity(self.agency, row.author), Role.ANALYST, clearance)

    def _sign(self, record: records_pb2.Record, signer: Seals | None = None) -> records_pb2.Envelope:
        """``signer``: the key chosen for a whole call (else the key ring chooses, now)."""
        payload = record.SerializeToString()  # serialised once: these bytes are the record
        if len(payload) > self.limits.max_record_bytes:
            raise InvalidInput(
                "draft", f"record is {len(payload)} bytes, over the limit of {self.limits.max_record_bytes}"
            )
        return (signer or self.signer).seal(RECORD_TYPE, payload)

    def _receipt(
        self, record: records_pb2.Record, envelope: records_pb2.Envelope, *, created: bool
    ) -> submission_pb2.Receipt:
        return submission_pb2.Receipt(
            ref=record.ref, version=record.version, content_hash=content_hash(envelope.payload), created=created
        )

    def _existing(self, record_id: str, caller: Principal) -> submission_pb2.Receipt:
        return self._receipt_of_current(current_record(self.store, self.agency, record_id), caller)

    def _receipt_of_current(self, current: StoredRecord | None, caller: Principal) -> submission_pb2.Receipt:
        """The receipt (created False) of the record a known reference made, as held now."""
        # A reference names a stored record, unless it was withdrawn since; and what the record
        # is now (another analyst may have raised its marking) goes through the decision too.
        if current is None or not self._visible(current, caller):
            raise NotFound()
        envelope = records_pb2.Envelope.FromString(current.envelope)
        return submission_pb2.Receipt(
            ref=records_pb2.RecordRef(originator=self.agency, record_id=current.record_id),
            version=current.version,
            content_hash=content_hash(envelope.payload),
            created=False,
        )
