"""Hypothesis strategies for markings and principals, shared by the decision's property
tests and the differential tests of the SQL prefilters.

Values are mostly known (the vocabulary of exchange.core.marking and the federation's
four agencies), so most examples exercise rules 1 to 4 rather than stopping at rule 5;
an unknown value comes up in roughly one draw in ten.
"""

from __future__ import annotations

from hypothesis import strategies as st

from exchange.core.identity import Identity, Principal, Role
from exchange.core.marking import Marking

KNOWN = frozenset({"JPN-NPA", "USA-DTSF", "KOR-KNPA", "GBR-NPSA"})
LEVELS = ["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]
TLPS = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
OUTSIDER = "FRA-DGSI"  # a well-formed agency code outside the federation


def mostly(known: list[str], unknown: list[str], weight: int = 8) -> st.SearchStrategy[str]:
    """One of ``known`` about ``weight`` times as often as one of ``unknown``."""
    return st.sampled_from(known * weight + unknown)


agencies = mostly(sorted(KNOWN), [OUTSIDER], weight=3)
known_agencies = st.sampled_from(sorted(KNOWN))
classifications = mostly(LEVELS, ["COSMIC", ""], weight=4)
tlps = mostly(TLPS, ["WHITE", ""], weight=4)
caveat_sets = st.frozensets(mostly(["ORCON"], ["NOFORN"], weight=4), max_size=2)
releasable = st.frozensets(mostly(sorted(KNOWN), [OUTSIDER], weight=6), max_size=4)
markings = st.builds(Marking, classifications, releasable, tlps, caveat_sets)

users = st.builds(
    Principal, st.builds(Identity, agencies, st.just("someone")), st.sampled_from([Role.ANALYST, Role.LIAISON]),
    classifications,
)
nodes = st.builds(Principal, st.builds(Identity, agencies, st.none()), st.just(Role.NODE), classifications)
principals = st.one_of(users, nodes)
