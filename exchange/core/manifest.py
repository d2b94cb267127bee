"""The federation manifest: partners, their CAs, accreditations and signing keys.

Each node holds its own copy as its trust root. This module only models and
validates it; reading the file is ``exchange.config``'s job.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exchange.core.identity import AGENCY_RE
from exchange.core.marking import classification_level
from exchange.errors import ConfigError, clip


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    public_key: bytes  # raw Ed25519 public key, 32 bytes
    not_before: dt.datetime
    not_after: dt.datetime
    # A compromised key invalidates every signature it ever made: a thief can
    # backdate, so no timestamp inside a payload is trusted to say otherwise.
    compromised_since: dt.datetime | None = None

    @property
    def compromised(self) -> bool:
        return self.compromised_since is not None


@dataclass(frozen=True)
class RevokedCertificate:
    """A certificate the agency has revoked, by serial number or SHA-256 fingerprint (hex)."""

    serial: int | None = None
    fingerprint: bytes | None = None  # SHA-256 of the DER certificate, 32 bytes
    reason: str = ""
    since: dt.datetime | None = None

    def matches(self, serial: int, fingerprint: bytes) -> bool:
        return (self.serial is not None and self.serial == serial) or (
            self.fingerprint is not None and self.fingerprint == fingerprint)


@dataclass(frozen=True)
class Partner:
    code: str
    name: str
    country: str
    address: str  # host:port of the agency's node
    accreditation: str  # highest classification its node may hold
    ca_cert_pem: str
    keys: tuple[SigningKey, ...]
    # Set when the agency left the federation (`exchange manifest propose --remove-partner`):
    # its CA no longer vouches for anyone, its node is neither served nor pulled from, no new
    # record may be released to it; what it signed before stays verifiable and readable.
    removed_at: dt.datetime | None = None
    # Certificates issued by this agency's CA that no node may accept any more (gRPC
    # Python has no CRL support: the guard checks every call against this list).
    revoked: tuple[RevokedCertificate, ...] = ()

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def revokes(self, serial: int, fingerprint: bytes) -> RevokedCertificate | None:
        """The entry revoking the certificate with this serial or fingerprint, if any."""
        return next((r for r in self.revoked if r.matches(serial, fingerprint)), None)

    def current_key(self, now: dt.datetime) -> SigningKey | None:
        """The key this agency signs with now: of its keys valid now and not compromised,
        the one that became valid last (a rotation publishes the new key with a later
        ``not_before``; the older ones are retired and still verify what they signed)."""
        # Of two published in the same second, the one listed last (a rotation appends).
        usable = [(k.not_before, i, k) for i, k in enumerate(self.keys)
                  if not k.compromised and k.not_before <= now <= k.not_after]
        return max(usable, key=lambda t: t[:2], default=(None, 0, None))[2]

    @property
    def server_name(self) -> str:
        """The DNS name in the node's certificate, checked by TLS clients."""
        return node_dns_name(self.code)


@dataclass(frozen=True)
class RootKey:
    """An agency's root key: it signs manifests, never records (docs/design.md "The manifest")."""

    agency: str
    public_key: bytes  # raw Ed25519 public key, 32 bytes

    @property
    def key_id(self) -> str:
        return root_key_id(self.public_key)


@dataclass(frozen=True)
class Manifest:
    version: int
    partners: Mapping[str, Partner]
    # A signed manifest (exchange/records/manifests.py) carries these; one built in code
    # (tests) may leave them out: no expiry, no root keys.
    expires: dt.datetime | None = None
    threshold: int = 1  # root signatures of distinct agencies a next version needs
    roots: tuple[RootKey, ...] = ()

    def root_key(self, key_id: str) -> RootKey | None:
        return next((r for r in self.roots if r.key_id == key_id), None)

    @functools.cached_property
    def agencies(self) -> frozenset[str]:
        """Every agency the manifest names, those that left included (markings may name them)."""
        return frozenset(self.partners)

    @property
    def active_agencies(self) -> frozenset[str]:
        """The agencies in the federation now: those that have not left."""
        return frozenset(code for code, p in self.partners.items() if p.active)

    @property
    def compromised_keys(self) -> frozenset[str]:
        """Ids of every signing key marked compromised: a store distrusts what they signed."""
        return frozenset(k.key_id for p in self.partners.values() for k in p.keys if k.compromised)

    def partner(self, code: str) -> Partner:
        try:
            return self.partners[code]
        except KeyError:
            raise ConfigError(f"agency {code!r} is not in the federation manifest") from None

    def signing_key(self, originator: str, key_id: str) -> SigningKey | None:
        """The key ``key_id`` if it belongs to ``originator``; None otherwise."""
        return self._signing_keys.get((originator, key_id))

    @functools.cached_property
    def _signing_keys(self) -> dict[tuple[str, str], SigningKey]:
        # Asked for every envelope verified: one lookup, made once per manifest (a manifest is
        # never changed, only replaced). Of two keys with one id, the first listed, as before.
        keys: dict[tuple[str, str], SigningKey] = {}
        for code, partner in self.partners.items():
            for key in partner.keys:
                keys.setdefault((code, key.key_id), key)
        return keys

    def supersedes(self, originator: str, new_key_id: str, held_key_id: str) -> bool:
        """Whether a signature by ``new_key_id`` should replace one by ``held_key_id`` over the
        same bytes of ``originator`` (a re-signed envelope): the new key must be one of the
        originator's and not compromised; it wins over a held key that is compromised or no
        longer published, and over a trusted one published before it (by ``not_before``, then
        the order of the list). Never the other way round, so two relays serving both
        envelopes cannot make a holder swap them back and forth."""
        new = self.signing_key(originator, new_key_id)
        if new is None or new.compromised:
            return False
        held = self.signing_key(originator, held_key_id)
        if held is None or held.compromised:
            return True
        order = {k.key_id: (k.not_before, i) for i, k in enumerate(self.partners[originator].keys)}
        return order[new_key_id] > order[held_key_id]


def root_key_id(public_key: bytes) -> str:
    """A root key's id: the first 16 bytes of SHA-256 over the raw public key, in hex (as TUF
    names keys by their hash: an id can't be claimed for another key)."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def node_dns_name(agency: str) -> str:
    return f"{agency.lower()}.node.exchange"


def _field(table: Mapping[str, Any], name: str, where: str, kind: type) -> Any:
    value = table.get(name)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{name}: expected {kind.__name__}, got {value!r}")
    return value


def _time(value: object, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, str):
        try:
            result = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: not an ISO 8601 time: {value!r}") from None
    else:
        raise ConfigError(f"{where}: expected a time, got {value!r}")
    if result.tzinfo is None:
        raise ConfigError(f"{where}: time without a timezone: {value!r}")
    return result


def _public_key(table: Mapping[str, Any], where: str) -> bytes:
    """The raw Ed25519 public key in ``table``'s base64 ``public_key`` field."""
    raw = _field(table, "public_key", where, str)
    try:
        public_key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ConfigError(f"{where}.public_key: not base64") from None
    if len(public_key) != 32:
        raise ConfigError(f"{where}.public_key: an Ed25519 key is 32 bytes, got {len(public_key)}")
    return public_key


def parse_key(table: Mapping[str, Any], where: str) -> SigningKey:
    public_key = _public_key(table, where)
    compromised = table.get("compromised_since")
    return SigningKey(
        key_id=_field(table, "key_id", where, str),
        public_key=public_key,
        not_before=_time(table.get("not_before"), f"{where}.not_before"),
        not_after=_time(table.get("not_after"), f"{where}.not_after"),
        compromised_since=None if compromised is None else _time(compromised, f"{where}.compromised_since"),
    )


def parse_revoked(table: Mapping[str, Any], where: str) -> RevokedCertificate:
    """A ``[[partners.revoked]]`` entry: ``serial`` (hex) or ``fingerprint`` (SHA-256, hex)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    serial_text, fingerprint_text = table.get("serial"), table.get("fingerprint")
    if serial_text is None and fingerprint_text is None:
        raise ConfigError(f"{where}: a revoked certificate needs a serial or a fingerprint")
    serial = None
    if serial_text is not None:
        if not isinstance(serial_text, str):
            raise ConfigError(f"{where}.serial: expected hex digits in a string, got {serial_text!r}")
        try:
            serial = int(serial_text.replace(":", ""), 16)
        except ValueError:
            raise ConfigError(f"{where}.serial: not hex digits: {serial_text!r}") from None
    fingerprint = None
    if fingerprint_text is not None:
        if not isinstance(fingerprint_text, str):
            raise ConfigError(f"{where}.fingerprint: expected hex digits in a string, got {fingerprint_text!r}")
        try:
            fingerprint = bytes.fromhex(fingerprint_text.replace(":", ""))
        except ValueError:
            raise ConfigError(f"{where}.fingerprint: not hex digits: {fingerprint_text!r}") from None
        if len(fingerprint) != 32:
            raise ConfigError(f"{where}.fingerprint: a SHA-256 fingerprint is 32 bytes, got {len(fingerprint)}")
    reason = table.get("reason", "")
    if not isinstance(reason, str):
        raise ConfigError(f"{where}.reason: expected str, got {reason!r}")
    since = table.get("since")
    return RevokedCertificate(serial=serial, fingerprint=fingerprint, reason=reason,
                              since=None if since is None else _time(since, f"{where}.since"))


def parse_manifest(data: Mapping[str, Any], *, require_keys: bool = True) -> Manifest:
    """Build a Manifest from parsed TOML; ConfigError names the bad field."""
    version = _field(data, "version", "manifest", int)
    tables = data.get("partners")
    if not isinstance(tables, list) or not tables:
        raise ConfigError("manifest.partners: expected a non-empty list of [[partners]]")
    partners: dict[str, Partner] = {}
    key_ids: dict[str, str] = {}  # signing key id -> the agency listing it
    for i, table in enumerate(tables):
        where = f"partners[{i}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        code = _field(table, "code", where, str)
        if not AGENCY_RE.match(code):
            raise ConfigError(f"{where}.code: malformed agency code {code!r}")
        if code in partners:
            raise ConfigError(f"{where}.code: {code} is listed twice")
        accreditation = _field(table, "accreditation", where, str)
        if classification_level(accreditation) is None:
            raise ConfigError(f"{where}.accreditation: unknown classification {accreditation!r}")
        keys_data = table.get("keys", [])
        if not isinstance(keys_data, list):
            raise ConfigError(f"{where}.keys: expected a list of tables")
        keys = tuple(parse_key(k, f"{where}.keys[{j}]") for j, k in enumerate(keys_data))
        for j, key in enumerate(keys):
            # Stores distrust entries by key id alone: one agency listing another's key id
            # (marked compromised) would hide what that other agency signed.
            if key.key_id in key_ids:
                raise ConfigError(f"{where}.keys[{j}].key_id: {clip(key.key_id, 80)} is listed twice "
                                  f"(already a key of {key_ids[key.key_id]})")
            key_ids[key.key_id] = code
        revoked_data = table.get("revoked", [])
        if not isinstance(revoked_data, list):
            raise ConfigError(f"{where}.revoked: expected a list of tables")
        revoked = tuple(parse_revoked(r, f"{where}.revoked[{j}]") for j, r in enumerate(revoked_data))
        ca_pem = table.get("ca_cert", "")
        if require_keys and (not keys or not isinstance(ca_pem, str) or "BEGIN CERTIFICATE" not in ca_pem):
            raise ConfigError(f"{where}: no CA certificate or signing keys (run `exchange pki init`)")
        partners[code] = Partner(
            code=code,
            name=_field(table, "name", where, str),
            country=_field(table, "country", where, str),
            address=_field(table, "address", where, str),
            accreditation=accreditation,
            ca_cert_pem=ca_pem if isinstance(ca_pem, str) else "",
            keys=keys,
            revoked=revoked,
            removed_at=None if table.get("removed_at") is None else _time(table["removed_at"], f"{where}.removed_at"),
        )
    return Manifest(version=version, partners=partners, **_trust_fields(data, partners))


def _trust_fields(data: Mapping[str, Any], partners: Mapping[str, Partner]) -> dict[str, Any]:
    """``expires``, ``threshold`` and ``[[roots]]``: what makes the manifest a signed document.

    Absent from an unsigned manifest (parsed as no expiry, threshold 1, no roots); the
    node requires them of any manifest it trusts (exchange/records/manifests.py)."""
    expires = data.get("expires")
    threshold = data.get("threshold", 1)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigError(f"manifest.threshold: expected a whole number of at least 1, got {threshold!r}")
    tables = data.get("roots", [])
    if not isinstance(tables, list):
        raise ConfigError("manifest.roots: expected a list of [[roots]] tables")
    roots: list[RootKey] = []
    for i, table in enumerate(tables):
        where = f"roots[{i}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        agency = _field(table, "agency", where, str)
        if agency not in partners:
            raise ConfigError(f"{where}.agency: {agency} is not a partner of this manifest")
        if not partners[agency].active:  # else it would go on counting toward every threshold
            raise ConfigError(f"{where}.agency: {agency} has left the federation: its root key signs nothing")
        public_key = _public_key(table, where)
        listed = next((r for r in roots if r.public_key == public_key), None)
        if listed is not None:  # it would count once, for the first agency only
            raise ConfigError(f"{where}.public_key: listed twice (already a root key of {listed.agency})")
        roots.append(RootKey(agency, public_key))
    if roots and threshold > len({r.agency for r in roots}):
        raise ConfigError(f"manifest.threshold: {threshold} signatures can never be reached: only "
                          f"{len({r.agency for r in roots})} agencies have root keys")
    return {
        "expires": None if expires is None else _time(expires, "manifest.expires"),
        "threshold": threshold,
        "roots": tuple(roots),
    }
