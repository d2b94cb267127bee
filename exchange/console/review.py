"""What the review and sighting pages show, computed from the node's answers (plain text only:
the templates escape all of it).

A held draft is shown with the marking of the released version it changes beside its own:
that is what the node's ReviewService gives (``HeldDraft.released_marking``), and it is the
change a disclosure officer decides on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from exchange.console.views import LEVEL_CLASSES, fmt_time, marking_record
from exchange.v1 import liaison_pb2, records_pb2, review_pb2

__all__ = ["VERDICTS", "DraftRow", "MarkingChange", "SightingRow", "draft_records", "draft_rows", "marking_changes",
           "sighting_rows", "state_key"]

STATES = {review_pb2.DRAFT_STATE_HELD: "held", review_pb2.DRAFT_STATE_RELEASED: "released",
          review_pb2.DRAFT_STATE_REJECTED: "rejected"}
# The verdicts a person reports (ReportSighting refuses any other), by the form's value.
VERDICTS: dict[str, records_pb2.Verdict] = {
    "seen": records_pb2.VERDICT_SEEN,
    "confirmed": records_pb2.VERDICT_CONFIRMED,
    "false_positive": records_pb2.VERDICT_FALSE_POSITIVE,
}
_VERDICT_KEYS = {value: key for key, value in VERDICTS.items()}


def state_key(draft: review_pb2.HeldDraft) -> str:
    return STATES.get(draft.state, "held")


def handle_of(uri: str) -> str:
    """``urn:exchange:JPN-NPA:user:sato`` -> ``sato`` (the URI itself when it is not one)."""
    return uri.rsplit(":", 1)[-1] if uri.startswith("urn:exchange:") else uri


@dataclass(frozen=True)
class DraftRow:
    draft_id: str
    record: str  # ORIGINATOR/record-id
    base_version: int
    author: str
    submitted: str
    state: str
    approvals: int
    needed: int
    title: str
    classification: str
    banner_css: str
    reason: str

    @property
    def href(self) -> str:
        return f"/review/{self.draft_id}"


def draft_rows(drafts: Iterable[review_pb2.HeldDraft], zone: ZoneInfo) -> list[DraftRow]:
    return [DraftRow(
        draft_id=d.draft_id, record=f"{d.ref.originator}/{d.ref.record_id}", base_version=d.base_version,
        author=handle_of(d.author), submitted=fmt_time(d.submitted_at, zone), state=state_key(d),
        approvals=len(d.approvals), needed=d.approvals_needed, title=d.draft.title,
        classification=d.draft.marking.classification,
        banner_css="level-" + LEVEL_CLASSES.get(d.draft.marking.classification, "unknown"), reason=d.reason,
    ) for d in drafts]


def draft_records(drafts: Iterable[review_pb2.HeldDraft]) -> list[records_pb2.Record]:
    """Records carrying the drafts' markings and those of the versions they change, for the banner."""
    found = []
    for d in drafts:
        found.append(records_pb2.Record(ref=d.ref, content=d.draft))
        if d.HasField("released_marking"):
            found.append(marking_record(d.ref.originator, d.released_marking))
    return found


@dataclass(frozen=True)
class MarkingChange:
    name: str  # form.<name> labels it
    draft: str
    released: str
    changed: bool


def marking_changes(d: review_pb2.HeldDraft) -> list[MarkingChange]:
    """Each part of the marking, the draft's beside the released version's ("" when new)."""
    new, old = d.draft.marking, d.released_marking
    has_old = d.HasField("released_marking")

    def joined(values: Iterable[str]) -> str:
        return ", ".join(sorted(values))

    parts = [("classification", new.classification, old.classification),
             ("releasable_to", joined(new.releasable_to), joined(old.releasable_to)),
             ("tlp", new.tlp, old.tlp), ("caveats", joined(new.caveats), joined(old.caveats))]
    return [MarkingChange(name, mine, theirs if has_old else "", has_old and mine != theirs)
            for name, mine, theirs in parts]


@dataclass(frozen=True)
class SightingRow:
    reporter: str
    reported_by: str
    verdict: str  # verdict.<key> labels it
    note: str
    observed: str
    reported: str
    version: int


def sighting_rows(answer: liaison_pb2.SightingsResponse, zone: ZoneInfo) -> list[SightingRow]:
    # Relay reports (who holds the record beyond the own pulls) belong to Disclosures, not here.
    return [SightingRow(s.reporter, s.reported_by, _VERDICT_KEYS.get(s.verdict, "unknown"), s.note,
                        fmt_time(s.observed_at, zone), fmt_time(s.reported_at, zone), s.record_version)
            for s in answer.sightings if s.verdict != records_pb2.VERDICT_RELAYED]
