"""Marking vocabulary: classifications, TLP 2.0 labels, caveats.

Values arrive as strings (from a signed record, a config file or a request).
Anything not in these tables is *unknown*, and unknown denies (docs/design.md rule 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.errors import clip

# Ordered from least to most sensitive; the index is the level.
CLASSIFICATIONS: tuple[str, ...] = (
    "UNCLASSIFIED",
    "RESTRICTED",
    "CONFIDENTIAL",
    "SECRET",
    "TOP SECRET",
)
TLP_LABELS: frozenset[str] = frozenset({"CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"})
CAVEATS: frozenset[str] = frozenset({"ORCON"})

# Markings under which only the originator may serve a record (docs/design.md rule 3).
NO_RELAY_TLP: frozenset[str] = frozenset({"RED", "AMBER+STRICT"})
NO_RELAY_CAVEATS: frozenset[str] = frozenset({"ORCON"})


def classification_level(value: str) -> int | None:
    """The level of a classification, or None when the value is unknown."""
    try:
        return CLASSIFICATIONS.index(value)
    except ValueError:
        return None


def within_clearance(clearance: str) -> tuple[str, ...]:
    """The classifications a clearance covers (none for an unknown clearance)."""
    level = classification_level(clearance)
    return () if level is None else CLASSIFICATIONS[: level + 1]


@dataclass(frozen=True)
class Marking:
    """The dissemination marking carried inside a signed record."""

    classification: str
    releasable_to: frozenset[str]
    tlp: str
    caveats: frozenset[str]

    def unknown_values(self, known_agencies: frozenset[str]) -> list[str]:
        """Every value of this marking that is not in the vocabulary."""
        unknown: list[str] = []
        if classification_level(self.classification) is None:
            unknown.append(f"classification {clip(self.classification)!r}")
        if self.tlp not in TLP_LABELS:
            unknown.append(f"tlp {clip(self.tlp)!r}")
        unknown.extend(f"caveat {clip(c)!r}" for c in sorted(self.caveats - CAVEATS))
        unknown.extend(f"agency {clip(a)!r}" for a in sorted(self.releasable_to - known_agencies))
        return unknown

    @property
    def relay_allowed(self) -> bool:
        """Whether a node other than the originator may pass the record on."""
        return not (self.tlp in NO_RELAY_TLP or self.caveats & NO_RELAY_CAVEATS)

    def audience(self, originator: str) -> frozenset[str]:
        """The agencies that may receive the record (rule 1)."""
        return self.releasable_to | {originator}
