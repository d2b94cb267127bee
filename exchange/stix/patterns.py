"""STIX patterns and cyber-observables for Exchange's observable types.

Only the types STIX 2.1 has an SCO for are patterned; a pattern over a custom object would
not be one other tools can match, so phone numbers, company names, HS codes and the like
stay in Exchange's extension instead.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from exchange.v1 import records_pb2

__all__ = ["SCO_TYPES", "escape", "pattern_of", "sco_type"]

# Exchange observable type -> (STIX SCO type, the SCO property the value goes in).
_DIRECT = {
    "email": ("email-addr", "value"),
    "domain": ("domain-name", "value"),
    "url": ("url", "value"),
    "platform_handle": ("user-account", "account_login"),
}
SCO_TYPES = frozenset({"email-addr", "domain-name", "url", "user-account", "ipv4-addr", "ipv6-addr"})


def sco_type(observable: records_pb2.Observable) -> str | None:
    if observable.type in _DIRECT:
        return _DIRECT[observable.type][0]
    if observable.type == "ip":
        try:
            version = ipaddress.ip_network(observable.value, strict=False).version
        except ValueError:
            return None  # not an address STIX can hold: kept in the extension
        return f"ipv{version}-addr"
    return None


def _property(stix_type: str) -> str:
    return "account_login" if stix_type == "user-account" else "value"


def escape(value: str) -> str:
    """A value as a STIX pattern string literal's body: backslash and quote escaped."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def pattern_of(observables: Iterable[records_pb2.Observable]) -> str | None:
    """``[type:prop = 'v'] OR [...]`` over the patternable observables; None if there are none."""
    terms = []
    for observable in observables:
        stix_type = sco_type(observable)
        if stix_type is not None:
            terms.append(f"[{stix_type}:{_property(stix_type)} = '{escape(observable.value)}']")
    return " OR ".join(terms) if terms else None
