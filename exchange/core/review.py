"""Release review: how many disclosure officers must approve a draft before it is released.

Pure rules over markings (docs/design.md "Release review"); the node holds drafts and
counts approvals (exchange/node/review.py, exchange/store/review.py). The disclosure
decision (exchange/core/policy.py) still decides every disclosure of what is released:
an approval only lets a version into the log, it never widens what ``decide`` allows.

- A new record: one approval, unless its marking is pre-approved for every partner it
  names, or it names no partner (nothing leaves the agency).
- A revision that **widens** the released version's marking (a partner added to
  ``releasable_to``, a lower classification, a caveat removed, a less restrictive TLP
  label): two approvals by distinct officers, always (the two-person rule; a
  pre-approval does not lift it).
- A revision that does not widen: none if its content is the released content with a
  narrower or equal marking (narrowing takes effect at once), none if its marking is
  pre-approved, else one.
- A retraction is never held.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.core.marking import TLP_LABELS, Marking, classification_level

ANY_PARTNER = "*"
# TLP 2.0 from the widest audience to the narrowest: moving left widens.
TLP_ORDER: tuple[str, ...] = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")


@dataclass(frozen=True)
class Preapproval:
    """Markings an agency releases to ``partners`` without review (node.toml [[review.preapproved]])."""

    partners: frozenset[str]  # agency codes, or ANY_PARTNER
    max_classification: str
    tlp: frozenset[str]

    def covers(self, partner: str, marking: Marking) -> bool:
        if ANY_PARTNER not in self.partners and partner not in self.partners:
            return False
        level, ceiling = classification_level(marking.classification), classification_level(self.max_classification)
        return level is not None and ceiling is not None and level <= ceiling and marking.tlp in self.tlp


@dataclass(frozen=True)
class ReviewPolicy:
    """An agency's review rules: on when node.toml has a [review] table."""

    preapproved: tuple[Preapproval, ...] = ()


@dataclass(frozen=True)
class Requirement:
    """Approvals a draft needs (0: released at once) and why, in words for people."""

    approvals: int
    reason: str


def widenings(before: Marking, after: Marking) -> list[str]:
    """How ``after`` releases more than ``before`` did (empty: it does not widen)."""
    found = [f"releasable_to adds {code}" for code in sorted(after.releasable_to - before.releasable_to)]
    old, new = classification_level(before.classification), classification_level(after.classification)
    if old is None or new is None or new < old:
        found.append(f"classification lowered from {before.classification} to {after.classification}")
    found.extend(f"caveat {caveat} removed" for caveat in sorted(before.caveats - after.caveats))
    if before.tlp != after.tlp and (
        before.tlp not in TLP_ORDER or after.tlp not in TLP_ORDER
        or TLP_ORDER.index(after.tlp) < TLP_ORDER.index(before.tlp)
    ):
        found.append(f"TLP:{before.tlp} loosened to TLP:{after.tlp}")
    return found


def preapproved(policy: ReviewPolicy, marking: Marking) -> bool:
    """Whether every partner the marking names is covered by a pre-approval."""
    return all(any(rule.covers(partner, marking) for rule in policy.preapproved) for partner in marking.releasable_to)


def requirement(
    policy: ReviewPolicy, *, before: Marking | None, after: Marking, same_content: bool = False
) -> Requirement:
    """The approvals a draft with marking ``after`` needs; ``before``: the released version's
    marking (None for a new record); ``same_content``: the draft changes nothing but the marking."""
    if before is not None:
        widened = widenings(before, after)
        if widened:
            return Requirement(2, "widens the released version: " + "; ".join(widened))
        if same_content:
            return Requirement(0, "narrows or keeps the marking, content unchanged")
    if not after.releasable_to:
        return Requirement(0, "released to no partner")
    if preapproved(policy, after):
        return Requirement(0, "marking pre-approved for every partner named")
    return Requirement(1, "release to partners")


__all__ = ["ANY_PARTNER", "TLP_LABELS", "TLP_ORDER", "Preapproval", "Requirement", "ReviewPolicy",
           "preapproved", "requirement", "widenings"]
