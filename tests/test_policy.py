"""The disclosure decision against docs/design.md's rules, example by example and by property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exchange.core.identity import Identity, Principal, Role
from exchange.core.marking import Marking
from exchange.core.policy import decide, decide_version, link_allowed, may_accept, may_hold
from tests.markings import KNOWN, LEVELS, agencies, known_agencies, markings, nodes, principals


def marking(classification: str = "CONFIDENTIAL", rel: tuple[str, ...] = ("USA-DTSF",), tlp: str = "AMBER",
            caveats: tuple[str, ...] = ()) -> Marking:
    return Marking(classification, frozenset(rel), tlp, frozenset(caveats))


def user(agency: str, clearance: str = "SECRET", role: Role = Role.LIAISON) -> Principal:
    return Principal(Identity(agency, "someone"), role, clearance)


def node(agency: str, accreditation: str = "SECRET") -> Principal:
    return Principal(Identity(agency, None), Role.NODE, accreditation)


def allowed(holder: str, principal: Principal, originator: str, m: Marking) -> bool:
    return decide(holder=holder, principal=principal, originator=originator, marking=m,
                  known_agencies=KNOWN).allowed


def test_originator_users_see_their_own_records() -> None:
    assert allowed("JPN-NPA", user("JPN-NPA"), "JPN-NPA", marking(rel=()))


def test_rule1_partner_not_in_releasable_to_is_denied() -> None:
    assert allowed("JPN-NPA", node("USA-DTSF"), "JPN-NPA", marking(rel=("USA-DTSF",)))
    assert not allowed("JPN-NPA", node("GBR-NPSA"), "JPN-NPA", marking(rel=("USA-DTSF",)))


def test_rule2_clearance_below_classification_is_denied() -> None:
    assert not allowed("JPN-NPA", user("JPN-NPA", "RESTRICTED"), "JPN-NPA", marking("CONFIDENTIAL"))
    assert allowed("JPN-NPA", user("JPN-NPA", "CONFIDENTIAL"), "JPN-NPA", marking("CONFIDENTIAL"))
    assert not allowed("JPN-NPA", node("GBR-NPSA", "CONFIDENTIAL"), "JPN-NPA",
                       marking("SECRET", rel=("GBR-NPSA",)))


def test_rule3_relay_forbidden_for_orcon_red_and_amber_strict() -> None:
    for m in (marking(caveats=("ORCON",)), marking(tlp="RED"), marking(tlp="AMBER+STRICT")):
        rel = Marking(m.classification, frozenset({"JPN-NPA", "KOR-KNPA"}), m.tlp, m.caveats)
        # The originator serves it; a relay (JPN-NPA holding USA-DTSF's record) does not.
        assert allowed("USA-DTSF", node("KOR-KNPA"), "USA-DTSF", rel)
        assert not allowed("JPN-NPA", node("KOR-KNPA"), "USA-DTSF", rel)
        # The relay's own users still see what it holds.
        assert allowed("JPN-NPA", user("JPN-NPA"), "USA-DTSF", rel)
    relayable = marking(rel=("JPN-NPA", "KOR-KNPA"), tlp="GREEN")
    assert allowed("JPN-NPA", node("KOR-KNPA"), "USA-DTSF", relayable)


def test_rule4_users_only_served_by_their_own_node() -> None:
    m = marking(rel=("USA-DTSF",))
    assert not allowed("JPN-NPA", user("USA-DTSF"), "JPN-NPA", m)


def test_rule5_unknown_values_deny() -> None:
    for m in (marking(classification="COSMIC"), marking(tlp="WHITE"), marking(caveats=("NOFORN",)),
              marking(rel=("USA-DTSF", "FRA-DGSI"))):
        assert not allowed("JPN-NPA", user("JPN-NPA", "TOP SECRET"), "JPN-NPA", m)
    assert not allowed("JPN-NPA", user("JPN-NPA", "ULTRA"), "JPN-NPA", marking())
    assert not allowed("JPN-NPA", user("JPN-NPA"), "XXX-YYY", marking())


def test_may_hold_is_the_acceptance_check() -> None:
    assert may_hold(agency="USA-DTSF", accreditation="SECRET", originator="JPN-NPA",
                    marking=marking(rel=("USA-DTSF",)), known_agencies=KNOWN).allowed
    assert not may_hold(agency="GBR-NPSA", accreditation="SECRET", originator="JPN-NPA",
                        marking=marking(rel=("USA-DTSF",)), known_agencies=KNOWN).allowed
    assert not may_hold(agency="USA-DTSF", accreditation="CONFIDENTIAL", originator="JPN-NPA",
                        marking=marking("SECRET", rel=("USA-DTSF",)), known_agencies=KNOWN).allowed


ACCEPT_CASES = [
    # (served by, marking, accepted?, reason contains)
    ("JPN-NPA", marking(caveats=("ORCON",)), True, ""),  # from its originator: no relay
    ("KOR-KNPA", marking(tlp="GREEN"), True, ""),  # relay allowed
    ("KOR-KNPA", marking(caveats=("ORCON",)), False, "relayed by KOR-KNPA: marking forbids relay"),
    ("KOR-KNPA", marking(tlp="RED"), False, "relayed by KOR-KNPA"),
    ("KOR-KNPA", marking(tlp="AMBER+STRICT"), False, "relayed by KOR-KNPA"),
    ("KOR-KNPA", marking(rel=("GBR-NPSA",), caveats=("ORCON",)), False, "not releasable to USA-DTSF"),
]


def test_may_accept_adds_the_relay_rule_asked_of_the_server() -> None:
    for served_by, m, expected, reason in ACCEPT_CASES:
        decision = may_accept(agency="USA-DTSF", accreditation="SECRET", originator="JPN-NPA", served_by=served_by,
                              marking=m, known_agencies=KNOWN)
        assert decision.allowed is expected and reason in decision.reason, (served_by, m, decision)


@given(st.sampled_from(sorted(KNOWN)), st.sampled_from(sorted(KNOWN)), st.sampled_from(LEVELS),
       st.sampled_from(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]), st.booleans())
def test_may_accept_never_accepts_what_may_hold_refuses(
    originator: str, served_by: str, level: str, tlp: str, orcon: bool
) -> None:
    m = marking(level, rel=("USA-DTSF",), tlp=tlp, caveats=("ORCON",) if orcon else ())
    held = may_hold(agency="USA-DTSF", accreditation="SECRET", originator=originator, marking=m, known_agencies=KNOWN)
    accepted = may_accept(agency="USA-DTSF", accreditation="SECRET", originator=originator, served_by=served_by,
                          marking=m, known_agencies=KNOWN)
    assert not accepted.allowed or held.allowed
    # Served by its originator, or by this agency's own node (a replica), is not a relay.
    relayed = served_by not in (originator, "USA-DTSF") and (orcon or tlp in ("RED", "AMBER+STRICT"))
    assert accepted.allowed == (held.allowed and not relayed)


def test_links_only_to_records_at_least_as_widely_releasable() -> None:
    wide = marking("RESTRICTED", rel=("USA-DTSF", "KOR-KNPA", "GBR-NPSA"), tlp="GREEN")
    narrow = marking("SECRET", rel=("USA-DTSF",), tlp="AMBER")
    assert link_allowed(originator="JPN-NPA", marking=narrow, target_originator="JPN-NPA", target_marking=wide)
    assert not link_allowed(originator="JPN-NPA", marking=wide, target_originator="JPN-NPA",
                            target_marking=narrow)
    orcon = marking("RESTRICTED", rel=("USA-DTSF", "KOR-KNPA", "GBR-NPSA"), caveats=("ORCON",))
    assert not link_allowed(originator="JPN-NPA", marking=wide, target_originator="JPN-NPA",
                            target_marking=orcon)


# --- property: the decision equals the rules as docs/design.md states them --------------------

def oracle(holder: str, p: Principal, originator: str, m: Marking) -> bool:
    """docs/design.md "Who may see what", restated independently of the implementation."""
    every_value_known = (
        m.classification in LEVELS
        and m.tlp in {"CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"}
        and m.caveats <= {"ORCON"}
        and m.releasable_to <= KNOWN
        and originator in KNOWN
        and p.clearance in LEVELS
    )
    in_audience = p.agency == originator or p.agency in m.releasable_to
    cleared = LEVELS.index(p.clearance) >= LEVELS.index(m.classification) if every_value_known else False
    is_partner_node_via_relay = p.role is Role.NODE and p.agency != holder and holder != originator
    relay_ok = not ("ORCON" in m.caveats or m.tlp in ("RED", "AMBER+STRICT"))
    own_node_for_users = p.role is Role.NODE or p.agency == holder
    return (every_value_known and in_audience and cleared and own_node_for_users
            and (relay_ok or not is_partner_node_via_relay))


@given(holder=agencies, principal=principals, originator=agencies, m=markings)
def test_decision_matches_the_rules(holder: str, principal: Principal, originator: str, m: Marking) -> None:
    assert allowed(holder, principal, originator, m) == oracle(holder, principal, originator, m)


@given(principal=principals, originator=agencies, m=markings)
def test_narrowing_never_widens(principal: Principal, originator: str, m: Marking) -> None:
    """Removing an agency from releasable_to, or raising the classification, never grants more."""
    holder = originator
    before = allowed(holder, principal, originator, m)
    for agency in m.releasable_to & KNOWN:  # dropping an *unknown* code may make it valid
        narrower = Marking(m.classification, m.releasable_to - {agency}, m.tlp, m.caveats)
        assert allowed(holder, principal, originator, narrower) <= before
    if m.classification in LEVELS[:-1]:
        higher = LEVELS[LEVELS.index(m.classification) + 1]
        raised = Marking(higher, m.releasable_to, m.tlp, m.caveats)
        assert allowed(holder, principal, originator, raised) <= before


@given(holder=agencies, principal=principals, originator=agencies, current=markings, version=markings)
def test_a_version_is_served_only_if_both_markings_allow_it(
    holder: str, principal: Principal, originator: str, current: Marking, version: Marking
) -> None:
    served = decide_version(holder=holder, principal=principal, originator=originator, current=current,
                            version=version, known_agencies=KNOWN).allowed
    assert served == (oracle(holder, principal, originator, current) and oracle(holder, principal, originator, version))


@given(data=st.data(), m=markings)
def test_a_relay_serves_partners_only_what_the_marking_lets_travel(data: st.DataObject, m: Marking) -> None:
    """Holder is not the originator: a partner node gets it only if relay is allowed (rule 3),
    the holder's own users as rules 1 and 2 say, and both as the rules restated say."""
    originator = data.draw(known_agencies)
    holder = data.draw(known_agencies.filter(lambda a: a != originator))
    partner = data.draw(nodes.filter(lambda p: p.agency != holder))
    served = allowed(holder, partner, originator, m)
    assert served == oracle(holder, partner, originator, m)
    if served:
        assert m.relay_allowed and partner.agency in m.audience(originator)
    # The originator itself would serve the same partner whenever the relay may.
    assert served <= allowed(originator, partner, originator, m)
    user = data.draw(principals.filter(lambda p: not p.is_node))
    assert allowed(holder, user, originator, m) == oracle(holder, user, originator, m)
