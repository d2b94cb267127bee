"""Who is calling: identity from the verified client certificate, and nothing else.

TLS has already checked that the certificate chains to one of the federation's
CAs and is within its validity. Here: exactly one SAN URI names the holder;
the agency it claims must be the agency whose CA issued it (an agency vouches
only for itself); users are served only by their own agency's node, with the
role and clearance this node's configuration grants; partner nodes get their
accreditation from the manifest. No field of a request takes part.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from exchange.config import UserEntry
from exchange.core.identity import Identity, Principal, Role, parse_identity_uri
from exchange.core.manifest import Manifest
from exchange.core.trust import Trust
from exchange.errors import IdentityError, PermissionDenied, clip

_CACHE_SIZE = 1024


def certificate_identity(cert: x509.Certificate) -> Identity:
    """The identity in a certificate's single SAN URI."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subject alternative name") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"certificate must name exactly one identity URI, found {len(uris)}")
    return parse_identity_uri(uris[0])


class _Vouching:
    """What one manifest says about certificates: each agency's CA, and the answers so far.

    Rebuilt when the manifest is replaced: a CA dropped or changed by the new manifest
    must not keep vouching through a cached answer."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.cas = {
            code: x509.load_pem_x509_certificate(p.ca_cert_pem.encode("ascii"))
            for code, p in manifest.partners.items() if p.active  # one that left vouches for no one
        }
        # certificate bytes -> (identity, not_before, not_after)
        self.identities: OrderedDict[bytes, tuple[Identity, dt.datetime, dt.datetime]] = OrderedDict()


class Authenticator:
    def __init__(self, *, agency: str, trust: Trust, users: Mapping[str, UserEntry]) -> None:
        self._agency = agency
        self._trust = trust
        self._users = users
        self._lock = threading.Lock()
        self._vouching = _Vouching(trust.manifest)

    def _current(self) -> _Vouching:
        manifest = self._trust.manifest
        with self._lock:
            if self._vouching.manifest is not manifest:
                self._vouching = _Vouching(manifest)
            return self._vouching

    def identity(self, cert_pem: bytes) -> Identity:
        """Parse and check a certificate once per manifest; remember the answer by its bytes."""
        vouching = self._current()
        with self._lock:
            cached = vouching.identities.get(cert_pem)
            if cached is not None:
                vouching.identities.move_to_end(cert_pem)
        if cached is None:
            cached = self._check(cert_pem, vouching)
            with self._lock:
                vouching.identities[cert_pem] = cached
                if len(vouching.identities) > _CACHE_SIZE:
                    vouching.identities.popitem(last=False)
        identity, not_before, not_after = cached
        # TLS checked validity at the handshake; a long-lived connection may outlive it.
        if not not_before <= dt.datetime.now(dt.UTC) <= not_after:
            raise IdentityError("client certificate is not valid now")
        return identity

    def _check(self, cert_pem: bytes, vouching: _Vouching) -> tuple[Identity, dt.datetime, dt.datetime]:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise IdentityError("unreadable client certificate") from None
        identity = certificate_identity(cert)
        ca = vouching.cas.get(identity.agency)
        if ca is None:
            raise IdentityError(f"{identity.agency} is not a federation agency")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise IdentityError(
                f"certificate claims {identity.agency} but was not issued by {identity.agency}'s CA"
            ) from None
        # The agency's revocation list in the manifest (gRPC Python has no CRL support). The
        # answer is cached with the manifest it came from, so adopting a manifest that revokes
        # a certificate refuses it from the next call on.
        revoked = vouching.manifest.partners[identity.agency].revokes(
            cert.serial_number, cert.fingerprint(hashes.SHA256()))
        if revoked is not None:
            raise IdentityError(f"certificate {cert.serial_number:x} of {identity.agency} is revoked"
                                + (f" ({clip(revoked.reason, 80)})" if revoked.reason else ""))
        return identity, cert.not_valid_before_utc, cert.not_valid_after_utc

    def recheck(self, cert_pem: bytes, admitted: Principal | None = None) -> str | None:
        """Why a caller admitted earlier may no longer be served (None: it still may): its
        certificate revoked, expired, or its agency or user gone from the current manifest
        or configuration; or, given the principal it was ``admitted`` as, another role or
        clearance now (a partner's accreditation lowered: what the stream decided by the old one
        must not go on). Asked of open streams, at each message and by the watchdog."""
        try:
            now = self.principal(cert_pem)
        except (IdentityError, PermissionDenied) as error:
            return str(error)
        if admitted is not None and (now.role, now.clearance) != (admitted.role, admitted.clearance):
            return (f"{now.identity.uri} is now {now.role.value} at {now.clearance}, not "
                    f"{admitted.role.value} at {admitted.clearance} as when the call began")
        return None

    def principal(self, cert_pem: bytes | None) -> Principal:
        if not cert_pem:
            raise IdentityError("no client certificate")
        identity = self.identity(cert_pem)
        if identity.handle is None:  # the agency's node
            if identity.agency == self._agency:
                # Only its operator holds the node's own key: the role table lets it ask
                # for health, nothing that discloses (a node never pulls from itself).
                return Principal(identity, Role.OPERATOR, "UNCLASSIFIED")
            partner = self._trust.manifest.partners.get(identity.agency)
            if partner is None or not partner.active:  # removed since the connection was opened
                raise IdentityError(f"{identity.agency} is not a federation agency")
            return Principal(identity, Role.NODE, partner.accreditation)
        if identity.agency != self._agency:
            # Rule 4: users talk only to their own agency's node.
            raise PermissionDenied(f"{identity.agency} users are served only by {identity.agency}'s node")
        user = self._users.get(identity.handle)
        if user is None:
            raise PermissionDenied(f"user {identity.handle} is not registered on this node")
        return Principal(identity, user.role, user.clearance)
