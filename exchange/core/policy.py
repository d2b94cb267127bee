"""The disclosure decision: the one place that says who may see what.

Every read path (get, search, pull, digest, export) and the acceptance check
on received records call :func:`decide`; nothing re-implements it. The rules
are docs/design.md's, numbered the same way. Deny is the default: a decision is
``allowed`` only when every rule has passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from exchange.core.identity import Identity, Principal, Role
from exchange.core.marking import Marking, classification_level
from exchange.errors import clip

MAX_NAMED = 5  # unknown marking values named in a reason; a record can carry thousands


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # for audit and security events; never shown to the caller


ALLOW = Decision(True, "allowed")


def decide(
    *,
    holder: str,
    principal: Principal,
    originator: str,
    marking: Marking,
    known_agencies: frozenset[str],
) -> Decision:
    """May node ``holder`` disclose a record of ``originator`` to ``principal``?

    ``marking`` must be the marking of the record's *current* version: an older
    version is never disclosed under rules its successor has narrowed.
    """
    # 5. Every marking value is known (and so is the caller's clearance).
    unknown = marking.unknown_values(known_agencies)
    level = classification_level(marking.classification)
    if unknown or level is None:
        return Decision(False, "unknown marking value: " + ", ".join(unknown[:MAX_NAMED]) +
                        (f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""))
    if originator not in known_agencies:
        return Decision(False, f"unknown originator {clip(originator)!r}")
    clearance = classification_level(principal.clearance)
    if clearance is None:
        return Decision(False, f"unknown clearance {clip(principal.clearance)!r}")

    # 4. A user is only ever served by their own agency's node.
    if principal.role is not Role.NODE and principal.agency != holder:
        return Decision(False, "users are served only by their own agency's node")

    # 1. The caller's agency is the originator or is in releasable_to.
    if principal.agency not in marking.audience(originator):
        return Decision(False, f"not releasable to {principal.agency}")

    # 2. The caller's clearance (or a node's accreditation) covers the classification.
    if clearance < level:
        return Decision(False, f"{marking.classification} above {principal.clearance}")

    # 3. Another agency's node, served by a node that is not the originator: a relay.
    relaying = principal.is_node and principal.agency != holder and holder != originator
    if relaying and not marking.relay_allowed:
        return Decision(False, "marking forbids relay (ORCON, TLP:RED or TLP:AMBER+STRICT)")

    return ALLOW


def may_hold(
    *,
    agency: str,
    accreditation: str,
    originator: str,
    marking: Marking,
    known_agencies: frozenset[str],
) -> Decision:
    """May ``agency``'s node hold this record at all (the acceptance check)?

    Asked as "could the originator disclose it to that node": rules 1, 2 and 5.
    """
    node = Principal(Identity(agency, None), Role.NODE, accreditation)
    return decide(
        holder=originator,
        principal=node,
        originator=originator,
        marking=marking,
        known_agencies=known_agencies,
    )


def may_accept(
    *,
    agency: str,
    accreditation: str,
    originator: str,
    served_by: str,
    marking: Marking,
    known_agencies: frozenset[str],
) -> Decision:
    """May ``agency``'s node store this record as ``served_by``'s node served it?

    Rules 1, 2 and 5 as :func:`may_hold`; then rule 3 asked of the server: could
    ``served_by`` disclose it to this node? A record whose marking forbids relay
    (ORCON, TLP:RED, TLP:AMBER+STRICT), served by a node other than its originator,
    was relayed against its marking; the reason names the relay.
    """
    held = may_hold(agency=agency, accreditation=accreditation, originator=originator, marking=marking,
                    known_agencies=known_agencies)
    if not held.allowed:
        return held
    node = Principal(Identity(agency, None), Role.NODE, accreditation)
    served = decide(holder=served_by, principal=node, originator=originator, marking=marking,
                    known_agencies=known_agencies)
    if not served.allowed:
        return Decision(False, f"relayed by {served_by}: {served.reason}")
    return ALLOW


def link_allowed(
    *,
    originator: str,
    marking: Marking,
    target_originator: str,
    target_marking: Marking,
) -> bool:
    """May a record link to a target without revealing the target exists?

    The target must be at least as widely releasable: everyone who may receive
    the linking record may receive the target (same or wider audience, same or
    lower classification), and the target must not be more restricted in relay.
    """
    level = classification_level(marking.classification)
    target_level = classification_level(target_marking.classification)
    if level is None or target_level is None:
        return False
    if not marking.audience(originator) <= target_marking.audience(target_originator):
        return False
    if target_level > level:
        return False
    return target_marking.relay_allowed or not marking.relay_allowed


def holders(*, originator: str, marking: Marking, accreditations: Mapping[str, str]) -> frozenset[str]:
    """Every agency whose node may hold a record with this marking (its audience)."""
    known = frozenset(accreditations)
    return frozenset(
        agency
        for agency, accreditation in accreditations.items()
        if may_hold(agency=agency, accreditation=accreditation, originator=originator, marking=marking,
                    known_agencies=known).allowed
    )


def decide_version(
    *,
    holder: str,
    principal: Principal,
    originator: str,
    current: Marking,
    version: Marking,
    known_agencies: frozenset[str],
) -> Decision:
    """May node ``holder`` serve one held *version* of a record to ``principal``?

    Both markings must allow it: the current one (an older version is never served
    under rules its successor narrowed) and the version's own (after a widening, an
    earlier version that was never released to the caller, or that forbade relay,
    stays that way).
    """
    for marking in (current, version):
        decision = decide(holder=holder, principal=principal, originator=originator, marking=marking,
                          known_agencies=known_agencies)
        if not decision.allowed:
            return decision
    return ALLOW


def withdrawal_releasable(*, principal: Principal, audience: frozenset[str]) -> Decision:
    """May a withdrawal be served to ``principal``?

    A withdrawal is content-free: it goes to every agency that was in an earlier
    audience, relayed whatever the caveats, so every holder purges. It is a
    node-to-node message; users never receive one.
    """
    if not principal.is_node:
        return Decision(False, "withdrawals are served to partner nodes only")
    if principal.agency not in audience:
        return Decision(False, f"{principal.agency} was not in an earlier audience")
    return ALLOW


def narrows(*, before: frozenset[str], after: frozenset[str], relay_before: bool, relay_after: bool) -> bool:
    """Does a new version drop an audience, so earlier versions must be withdrawn?

    Dropped: an agency that could hold an earlier version and cannot hold this
    one (removed from releasable_to, or classified above its accreditation), or
    relay newly forbidden (holders reached through a relay must purge).
    """
    return bool(before - after) or (relay_before and not relay_after)


class HeldEntry(Protocol):
    """A log entry as the decision sees it (``exchange.store``'s ``LogEntry`` is one)."""

    @property
    def originator(self) -> str: ...

    @property
    def is_withdrawal(self) -> bool: ...

    @property
    def audience(self) -> frozenset[str]: ...  # a withdrawal's: every earlier audience

    @property
    def current_marking(self) -> Marking | None: ...  # None: no current version held

    @property
    def version_marking(self) -> Marking | None: ...  # None for a withdrawal


def decide_entry(*, holder: str, principal: Principal, entry: HeldEntry, known_agencies: frozenset[str]) -> Decision:
    """May node ``holder`` serve one log entry (a record version or a withdrawal) to ``principal``?

    The rule of Pull and Digest, asked by both sides of a sync: the server of its entries
    for the caller, and a puller repairing of its own entries with the server as
    ``holder`` and itself as ``principal`` (what the server would release to it), so both
    summarise the same set.
    """
    if entry.is_withdrawal:
        return withdrawal_releasable(principal=principal, audience=entry.audience)
    if entry.current_marking is None or entry.version_marking is None:
        return Decision(False, "no current version held")  # nothing to serve
    # The current marking (an older version is never served under rules its successor
    # narrowed) and the version's own (nor under rules it widened).
    return decide_version(holder=holder, principal=principal, originator=entry.originator,
                          current=entry.current_marking, version=entry.version_marking,
                          known_agencies=known_agencies)


def sighting_releasable(
    *, principal: Principal, record_originator: str, released_to: frozenset[str], record: Decision | None,
) -> Decision:
    """May the reporting node serve one of its sightings to ``principal``'s node?

    A sighting goes to the record's originator; to another agency only if the reporter
    released it there (``released_to``, from the signed sighting) *and* that agency may
    hold the record itself (``record``: the decision on the record for that node, None
    when the reporter no longer holds it). A sighting is node-to-node: users read the
    sightings their own node holds (:func:`sighting_visible`).
    """
    if not principal.is_node:
        return Decision(False, "sightings are served to partner nodes only")
    if principal.agency == record_originator:
        return ALLOW
    if principal.agency not in released_to:
        return Decision(False, f"sighting not released to {principal.agency}")
    if record is None or not record.allowed:
        return Decision(False, f"{principal.agency} may not hold the record sighted")
    return ALLOW


def sighting_visible(*, holder: str, principal: Principal, record: Decision) -> Decision:
    """May ``holder``'s user see a sighting this node holds, next to the record?

    Only the own node's users, and only with the record itself (``record``: the decision
    on the record for this user). What the node holds was addressed to it: its own
    reports, and those whose acceptance checked they were released to it.
    """
    if principal.is_node or principal.agency != holder:
        return Decision(False, "users are served only by their own agency's node")
    return record


def sighting_acceptable(
    *, receiver: str, reporter: str, served_by: str, record_originator: str, released_to: frozenset[str],
    reporter_holds: Decision | None, receiver_holds: bool, relay_report: bool,
) -> Decision:
    """May ``receiver``'s node store a sighting served to it (the acceptance check)?

    Only the reporter serves its sightings; a receiver other than the record's originator
    must be among those it was released to and hold the record; and the reporter must be
    one that may hold the record at all (``reporter_holds``: the decision on the record for
    the reporter's node, None when the receiver does not know the record): a sighting on a
    record the reporter cannot have seen is forged. A relay report (``relay_report``: who holds
    the record through the reporter) is the originator's alone, whatever it claims to be
    released to: kept elsewhere it would put holders in another agency's Disclosures.
    """
    if served_by != reporter:
        return Decision(False, f"sighting of {reporter} served by {served_by}: sightings are never relayed")
    if relay_report and receiver != record_originator:
        return Decision(False, "a relay report goes to the record's originator only")
    if receiver != record_originator:
        if receiver not in released_to:
            return Decision(False, f"sighting not released to {receiver}")
        if not receiver_holds:
            return Decision(False, "sighting on a record this node does not hold")
    if reporter_holds is None:
        return Decision(False, "sighting on a record this node does not know")
    if not reporter_holds.allowed:
        return Decision(False, f"reporter may not hold the record: {reporter_holds.reason}")
    return ALLOW
