"""Review service: disclosure officers approve or reject the drafts analysts submit.

A draft is held in its own table (exchange/store/review.py), served to no partner. An
officer of the agency who is not its author and is cleared for its classification
approves it; when it has the approvals it needs (exchange/core/review.py: two for a
widening) the node signs it as the next version and stores it like any submission, in
the transaction of the last approval. From then on the disclosure decision
(exchange/core/policy.py) decides every disclosure of it, as for any record: an approval
never widens what ``decide`` allows. Analysts see their own drafts, and why one was rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exchange.config import UserEntry
from exchange.core.identity import Principal, Role, identity_uri
from exchange.core.marking import classification_level
from exchange.errors import InvalidInput, NotFound, PermissionDenied
from exchange.node.rpc import Method
from exchange.node.submission import SubmissionService
from exchange.store import Store
from exchange.store import review as held
from exchange.store.current import current_record
from exchange.store.rows import timestamp_of
from exchange.v1 import records_pb2, review_pb2

MAX_REASON_CHARS = 2000
_STATES = {held.HELD: review_pb2.DRAFT_STATE_HELD, held.RELEASED: review_pb2.DRAFT_STATE_RELEASED,
           held.REJECTED: review_pb2.DRAFT_STATE_REJECTED}



@dataclass
class ReviewService:
    agency: str
    submission: SubmissionService
    users: Mapping[str, UserEntry]

    def methods(self) -> list[Method]:
        return [
            Method("ListDrafts", review_pb2.ListDraftsRequest, self.list_drafts),
            Method("GetDraft", review_pb2.GetDraftRequest, self.get_draft),
            Method("ApproveDraft", review_pb2.ApproveDraftRequest, self.approve),
            Method("RejectDraft", review_pb2.RejectDraftRequest, self.reject),
        ]

    @property
    def _store(self) -> Store:
        return self.submission.store

    def list_drafts(self, request: review_pb2.ListDraftsRequest, caller: Principal) -> review_pb2.ListDraftsResponse:
        states = (held.HELD, held.RELEASED, held.REJECTED) if request.all else (held.HELD,)
        author = None if caller.role is Role.DISCLOSURE_OFFICER else caller.identity.handle
        rows = [r for r in held.drafts(self._store, author=author, states=states) if self._may_see(r, caller)]
        return review_pb2.ListDraftsResponse(drafts=[self._message(r) for r in rows])

    def get_draft(self, request: review_pb2.GetDraftRequest, caller: Principal) -> review_pb2.GetDraftResponse:
        return review_pb2.GetDraftResponse(draft=self._message(self._find(request.draft_id, caller)))

    def approve(self, request: review_pb2.ApproveDraftRequest, caller: Principal) -> review_pb2.ApproveDraftResponse:
        row = self._find(request.draft_id, caller)
        if row.author == caller.identity.handle:
            raise PermissionDenied("you wrote this draft: another disclosure officer must approve it")
        release = None
        if len(row.approvals) + 1 >= row.approvals_needed and row.state == held.HELD:
            author = self.submission.author_of(row, self._clearance(row.author, caller))
            release = self.submission.release_write(row, author)
        after = held.approve(self._store, row.draft_id, caller.identity.handle or "", actor=caller.identity.uri,
                             release=release, release_version=row.base_version + 1)
        response = review_pb2.ApproveDraftResponse(draft=self._message(after))
        if after.state == held.RELEASED and release is not None:
            response.receipt.CopyFrom(self.submission.receipt_of(release))
        return response

    def reject(self, request: review_pb2.RejectDraftRequest, caller: Principal) -> review_pb2.RejectDraftResponse:
        reason = request.reason.strip()
        if not reason:
            raise InvalidInput("reason", "say why (the analyst sees it)")
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidInput("reason", f"over {MAX_REASON_CHARS} characters")
        row = self._find(request.draft_id, caller)
        if row.author == caller.identity.handle:
            raise PermissionDenied("you wrote this draft: another disclosure officer reviews it")
        after = held.reject(self._store, row.draft_id, reason=reason, actor=caller.identity.uri)
        return review_pb2.RejectDraftResponse(draft=self._message(after))

    # --- steps ----------------------------------------------------------------------------

    def _find(self, draft_id: str, caller: Principal) -> held.DraftRow:
        if not draft_id or len(draft_id) > 36:
            raise InvalidInput("draft_id", "name a draft (its id, as `exchange review list` shows it)")
        row = held.get_draft(self._store, draft_id)
        if row is None or not self._may_see(row, caller):
            raise NotFound()  # identical whether absent or not the caller's to see
        return row

    def _may_see(self, row: held.DraftRow, caller: Principal) -> bool:
        """An analyst sees their own drafts; an officer every draft within their clearance: the
        draft's classification and, for a revision, the released version's (a downgrade is
        reviewed by officers who may read what it declassifies; its marking is in the answer)."""
        if caller.agency != self.agency:
            return False
        if caller.role is not Role.DISCLOSURE_OFFICER:
            return row.author == caller.identity.handle
        draft = records_pb2.RecordDraft.FromString(row.draft)
        clearance = classification_level(caller.clearance)
        markings = [draft.marking.classification]
        if row.base_version:
            current = current_record(self._store, row.originator, row.record_id)
            if current is not None:
                markings.append(current.marking.classification)
        levels = [classification_level(m) for m in markings]
        return clearance is not None and all(level is not None and level <= clearance for level in levels)

    def _clearance(self, author: str, officer: Principal) -> str:
        """The author's clearance from node.toml (the officer's if the author is no longer listed)."""
        user = self.users.get(author)
        return user.clearance if user is not None else officer.clearance

    def _message(self, row: held.DraftRow) -> review_pb2.HeldDraft:
        message = review_pb2.HeldDraft(
            draft_id=row.draft_id, ref=records_pb2.RecordRef(originator=row.originator, record_id=row.record_id),
            base_version=row.base_version, author=identity_uri(self.agency, row.author),
            draft=records_pb2.RecordDraft.FromString(row.draft), approvals_needed=row.approvals_needed,
            approvals=[review_pb2.Approval(officer=identity_uri(self.agency, who), at=timestamp_of(at))
                       for who, at in row.approvals],
            state=_STATES.get(row.state, review_pb2.DRAFT_STATE_UNSPECIFIED), rule=row.rule, reason=row.reason,
            submitted_at=timestamp_of(row.submitted_at), released_version=row.released_version or 0,
        )
        if row.base_version:
            current = current_record(self._store, row.originator, row.record_id)
            if current is not None:
                envelope = records_pb2.Envelope.FromString(current.envelope)
                message.released_marking.CopyFrom(records_pb2.Record.FromString(envelope.payload).content.marking)
        return message
