"""Who is calling: principals and the identity URIs certificates carry.

A certificate names its holder in exactly one subject alternative name URI:
``urn:exchange:<AGENCY>:node`` or ``urn:exchange:<AGENCY>:user:<handle>``.
Roles and clearances are not in the certificate: a user's come from their
node's configuration, a partner node's accreditation from the manifest.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from exchange.errors import IdentityError, clip

AGENCY_RE = re.compile(r"^[A-Z]{3}-[A-Z0-9]{2,12}$")
HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_URI_RE = re.compile(r"^urn:exchange:(?P<agency>[^:]+):(?P<kind>node|user)(?::(?P<handle>[^:]+))?$")


class Role(enum.Enum):
    ANALYST = "analyst"
    LIAISON = "liaison"
    # Reviews the agency's drafts before they are released to partners (exchange/node/review.py).
    DISCLOSURE_OFFICER = "disclosure_officer"
    NODE = "node"
    # The agency's own node certificate, used by its operator's commands on the node's host
    # (`exchange health`): operational calls only, never a disclosure (exchange/node/rpc.py).
    OPERATOR = "operator"


@dataclass(frozen=True)
class Identity:
    """What a verified certificate says: an agency, and a user handle or none for a node."""

    agency: str
    handle: str | None  # None: the agency's node

    @property
    def is_node(self) -> bool:
        return self.handle is None

    @property
    def uri(self) -> str:
        return identity_uri(self.agency, self.handle)

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class Principal:
    """An authenticated caller with the role and clearance the node grants it."""

    identity: Identity
    role: Role
    clearance: str  # a classification name; unknown values deny

    @property
    def agency(self) -> str:
        return self.identity.agency

    @property
    def is_node(self) -> bool:
        return self.role is Role.NODE


def identity_uri(agency: str, handle: str | None) -> str:
    if handle is None:
        return f"urn:exchange:{agency}:node"
    return f"urn:exchange:{agency}:user:{handle}"


def parse_identity_uri(uri: str) -> Identity:
    """Parse a SAN URI into an Identity, or raise IdentityError."""
    match = _URI_RE.match(uri)
    if match is None:
        raise IdentityError(f"not an Exchange identity URI: {clip(uri)!r}")
    agency, kind, handle = match["agency"], match["kind"], match["handle"]
    if not AGENCY_RE.match(agency):
        raise IdentityError(f"malformed agency code in {clip(uri)!r}")
    if kind == "node":
        if handle is not None:
            raise IdentityError(f"node identity with a handle: {clip(uri)!r}")
        return Identity(agency, None)
    if handle is None or not HANDLE_RE.match(handle):
        raise IdentityError(f"malformed user handle in {clip(uri)!r}")
    return Identity(agency, handle)
