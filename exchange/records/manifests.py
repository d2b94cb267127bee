"""The signed federation manifest: canonical encoding, root signatures, and whether a
manifest may replace the one a node trusts (TUF's root rotation, docs/design.md
"The manifest").

A manifest document is TOML: the manifest's tables plus ``[[signatures]]`` (``key_id``,
``signature``). What is signed is the canonical encoding of everything but
``signatures``: JSON with keys sorted, no insignificant white space, UTF-8, times as
ISO 8601 text, no floats; prefixed by ``MANIFEST_CONTEXT`` so that a root signature can
never be taken for any other signature. How the file is laid out (order, comments,
quoting) changes nothing signed.

Version n+1 is trusted only if signed by ``threshold`` agencies among version n's root
keys AND ``threshold`` agencies among its own (each agency counts once however many of
its keys signed), is not expired, and its version is exactly n+1. A node refuses an
older version (rollback), an expired one (freeze), one below threshold, and one whose
signatures are not by root keys (wrong signer, or a tampered byte).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.core.manifest import Manifest, parse_manifest, root_key_id
from exchange.errors import ConfigError, ManifestRefused, clip

MANIFEST_CONTEXT = b"exchange federation manifest v1\n"
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # a manifest of hundreds of partners is well under this


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes  # Ed25519, 64 bytes


@dataclass(frozen=True)
class SignedManifest:
    """A manifest document: its tables, the manifest they describe, and its signatures."""

    body: Mapping[str, Any]  # the tables, without ``signatures``
    manifest: Manifest
    signatures: tuple[Signature, ...]

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def signed_bytes(self) -> bytes:
        return MANIFEST_CONTEXT + canonical(self.body)

    def with_signature(self, signature: Signature) -> SignedManifest:
        kept = tuple(s for s in self.signatures if s.key_id != signature.key_id)
        return SignedManifest(self.body, self.manifest, (*kept, signature))

    def render(self) -> bytes:
        """The document as TOML (what is stored, served and written to files)."""
        import tomli_w

        document = dict(self.body)
        document["signatures"] = [
            {"key_id": s.key_id, "signature": base64.b64encode(s.signature).decode("ascii")}
            for s in self.signatures
        ]
        return tomli_w.dumps(document).encode("utf-8")


def _plain(value: Any, where: str) -> Any:
    """The JSON value a TOML value is signed as; floats are refused (no canonical form)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bool | int | str):
        return value
    raise ConfigError(f"{where}: a manifest holds no {type(value).__name__} values")


def canonical(body: Mapping[str, Any]) -> bytes:
    """The canonical encoding of a manifest's tables (``signatures`` never part of it)."""
    plain = _plain({k: v for k, v in body.items() if k != "signatures"}, "manifest")
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_document(data: bytes, *, what: str = "manifest") -> SignedManifest:
    """A manifest document from its TOML bytes; ConfigError names the problem."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{what}: {len(data)} bytes, over the limit of {MAX_DOCUMENT_BYTES}")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return from_tables(table, what=what)


def from_tables(table: Mapping[str, Any], *, what: str = "manifest") -> SignedManifest:
    body = {k: v for k, v in table.items() if k != "signatures"}
    canonical(body)  # refuses what has no canonical form, before anything else
    try:
        manifest = parse_manifest(body)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    raw = table.get("signatures", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{what}: signatures: expected a list of [[signatures]] tables")
    signatures: list[Signature] = []
    signed_by: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"{what}: signatures[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("key_id"), str) \
                or not isinstance(entry.get("signature"), str):
            raise ConfigError(f"{where}: expected key_id and signature (base64)")
        try:
            signature = base64.b64decode(entry["signature"], validate=True)
        except ValueError:
            raise ConfigError(f"{where}.signature: not base64") from None
        # One signature per key (``with_signature`` renews, never adds): a document repeating
        # a key's entry would cost a verification per copy, from whoever serves it.
        if entry["key_id"] in signed_by:
            raise ConfigError(f"{where}: root key {clip(entry['key_id'], 64)} signs twice")
        signed_by.add(entry["key_id"])
        signatures.append(Signature(entry["key_id"], signature))
    return SignedManifest(body, manifest, tuple(signatures))


def sign(document: SignedManifest, key: Ed25519PrivateKey) -> SignedManifest:
    """``document`` with a signature by the root key ``key`` added (or renewed)."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return document.with_signature(Signature(root_key_id(public), key.sign(document.signed_bytes)))


@dataclass(frozen=True)
class Tally:
    """Whose root signatures on a document verify, by the roots of one manifest."""

    agencies: frozenset[str]  # agencies with at least one valid signature
    foreign: tuple[str, ...]  # key ids not among those roots
    invalid: tuple[str, ...]  # key ids among them whose signature does not verify


def tally(document: SignedManifest, roots_of: Manifest) -> Tally:
    message = document.signed_bytes
    agencies: set[str] = set()
    foreign: list[str] = []
    invalid: list[str] = []
    for signature in document.signatures:
        root = roots_of.root_key(signature.key_id)
        if root is None:
            foreign.append(signature.key_id)
            continue
        try:
            Ed25519PublicKey.from_public_bytes(root.public_key).verify(signature.signature, message)
        except (InvalidSignature, ValueError):
            invalid.append(signature.key_id)
            continue
        agencies.add(root.agency)
    return Tally(frozenset(agencies), tuple(foreign), tuple(invalid))


def _require(document: SignedManifest, roots_of: Manifest, whose: str) -> None:
    counted = tally(document, roots_of)
    if len(counted.agencies) >= roots_of.threshold:
        return
    have = f"{len(counted.agencies)} of the {roots_of.threshold} agencies needed"
    if counted.invalid:
        raise ManifestRefused("signer", f"manifest version {document.version}: a signature by root key "
                              f"{counted.invalid[0]} does not verify (a changed byte?); {have} sign for {whose}")
    if counted.foreign and not counted.agencies:
        raise ManifestRefused("signer", f"manifest version {document.version} is signed by {counted.foreign[0]}, "
                              f"which is not a root key of {whose}")
    raise ManifestRefused("threshold", f"manifest version {document.version} is below threshold: {have} "
                          f"sign for {whose}")


def _fresh(document: SignedManifest, now: dt.datetime) -> None:
    expires = document.manifest.expires
    if expires is None:
        raise ManifestRefused("malformed", f"manifest version {document.version} has no expires")
    if expires <= now:
        raise ManifestRefused("expired", f"manifest version {document.version} expired at "
                              f"{expires.isoformat(timespec='seconds')}")
    _complete(document)


def _complete(document: SignedManifest) -> None:
    """What a signed manifest must state: root keys, and its threshold (never taken as 1 when
    left out: a proposal that dropped the line would let one agency sign every later version)."""
    if not document.manifest.roots:
        raise ManifestRefused("malformed", f"manifest version {document.version} names no root keys")
    if "threshold" not in document.body:
        raise ManifestRefused("malformed", f"manifest version {document.version} states no threshold")


def verify_first(document: SignedManifest, now: dt.datetime) -> None:
    """The first manifest a node trusts (installed by its operator): signed by its own threshold."""
    if not document.signatures:
        raise ManifestRefused("signer", f"manifest version {document.version} is not signed (a manifest made "
                              "before manifests were signed: make the PKI again with `exchange pki init`)")
    _fresh(document, now)
    _require(document, document.manifest, f"version {document.version} itself")


def verify_next(trusted: SignedManifest, candidate: SignedManifest, now: dt.datetime, *,
                check_expiry: bool = True) -> None:
    """Whether ``candidate`` may replace ``trusted``; ManifestRefused says why not.

    ``check_expiry`` is False only when re-checking a chain already adopted (a node's
    history is not refused for having aged)."""
    if candidate.version <= trusted.version:
        if candidate.version == trusted.version and canonical(candidate.body) == canonical(trusted.body):
            raise ManifestRefused("same", f"manifest version {candidate.version} is the one trusted")
        if candidate.version == trusted.version:
            raise ManifestRefused("conflict", f"another manifest version {candidate.version} than the one trusted")
        raise ManifestRefused("rollback", f"manifest version {candidate.version} is older than the trusted "
                              f"version {trusted.version}")
    if candidate.version != trusted.version + 1:
        raise ManifestRefused("gap", f"manifest version {candidate.version} does not follow the trusted version "
                              f"{trusted.version} (versions in between are needed)")
    if check_expiry:
        _fresh(candidate, now)
    else:
        _complete(candidate)
    _require(candidate, trusted.manifest, f"version {trusted.version}")
    _require(candidate, candidate.manifest, f"version {candidate.version} itself")


def verify_chain(trusted: SignedManifest, newer: Sequence[SignedManifest], now: dt.datetime) -> SignedManifest:
    """Walk ``newer`` in order of version from ``trusted``: each must follow the one before
    (``verify_next``, expiry checked for the last only: the versions in between are
    superseded by it). Returns the last; raises on the first that may not follow."""
    current = trusted
    ordered = sorted(newer, key=lambda d: d.version)
    for position, candidate in enumerate(ordered):
        verify_next(current, candidate, now, check_expiry=position == len(ordered) - 1)
        current = candidate
    return current
