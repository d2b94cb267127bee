"""Which signed manifest a node trusts: at start, and when a newer one is offered.

At start (``trusted_at_start``): the manifest file in the node's PKI folder is what its
operator installed. The first time, it must be signed by its own threshold of root keys;
it is kept in the store (exchange/store/manifests.py). After that the store's newest
version wins: the file's version must be among the stored ones, with the same content
(else the node refuses to start: two different manifests claim one version), and every
stored version after it must follow the one before (signatures checked again, so a row
planted in the database is not trusted). A file newer than the store is offered like a
partner's. Offered versions (``accept``: from the file while the node runs, or from a
partner through GetManifest) must each follow the trusted one (exchange/records/manifests.py);
a refusal is a security event and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from exchange.errors import ConfigError, ManifestRefused, clip
from exchange.records.manifests import (
    SignedManifest,
    canonical,
    parse_document,
    verify_chain,
    verify_first,
    verify_next,
)
from exchange.store import Store
from exchange.store.manifests import keep_manifest, manifest_event, stored_manifests

log = logging.getLogger("exchange.node")

FILE = "file"  # the source of a manifest installed by the operator


def _refused(store: Store, source: str, error: ManifestRefused, version: int | None) -> None:
    log.error("manifest refused (%s, from %s): %s", error.kind, source, error, extra={"peer": source})
    manifest_event(store, error.kind, source, {"reason": clip(str(error), 300), "version": version})


def trusted_at_start(store: Store, file_bytes: bytes, file_name: str, now: dt.datetime) -> SignedManifest:
    offered = parse_document(file_bytes, what=file_name)
    stored = {s.version: parse_document(s.document, what=f"stored manifest version {s.version}")
              for s in stored_manifests(store)}
    if not stored:
        try:
            verify_first(offered, now)
        except ManifestRefused as error:
            _refused(store, FILE, error, offered.version)
            raise ConfigError(f"{file_name}: {error}") from None
        keep_manifest(store, offered.version, file_bytes, FILE)
        return offered
    newest = max(stored)
    anchor = stored.get(offered.version)
    if anchor is None and offered.version < newest:
        raise ConfigError(f"{file_name}: version {offered.version} is not among the versions this node has "
                          f"trusted ({min(stored)} to {newest})")
    if anchor is not None and canonical(anchor.body) != canonical(offered.body):
        _refused(store, FILE, ManifestRefused("conflict", f"another manifest version {offered.version} than "
                                              "the one this node trusts"), offered.version)
        raise ConfigError(f"{file_name}: version {offered.version} differs from the version {offered.version} "
                          "this node trusts; a manifest version is never changed, a change is a new version")
    start = anchor if anchor is not None else stored[min(stored)]
    current = start
    for version in sorted(v for v in stored if v > start.version):
        try:
            verify_next(current, stored[version], now, check_expiry=False)
        except ManifestRefused as error:
            raise ConfigError(f"stored manifest version {version} does not follow version {current.version}: "
                              f"{error}") from None
        current = stored[version]
    if offered.version > current.version:  # the operator installed a newer one while it was stopped
        return accept(store, current, [file_bytes], FILE, now) or current
    return current


def accept(
    store: Store, trusted: SignedManifest, documents: Sequence[bytes], source: str, now: dt.datetime,
) -> SignedManifest | None:
    """The newest of ``documents`` if each follows ``trusted`` in turn; kept in the store.

    None if nothing newer is offered or the chain is refused (a security event, naming
    ``source``). The trusted version itself is ignored; an older version, or another
    document under the trusted version's number, is refused (rollback, conflict)."""
    parsed: list[SignedManifest] = []
    for data in documents:
        try:
            parsed.append(parse_document(data, what=f"manifest from {source}"))
        except ConfigError as error:
            _refused(store, source, ManifestRefused("malformed", str(error)), None)
            return None
    newer: list[SignedManifest] = []
    for document in parsed:
        if document.version > trusted.version:
            newer.append(document)
            continue
        try:  # the trusted version again is nothing new; an older or another one is refused
            verify_next(trusted, document, now)
        except ManifestRefused as error:
            if error.kind != "same":
                _refused(store, source, error, document.version)
                return None
    if not newer:
        return None
    try:
        newest = verify_chain(trusted, newer, now)
    except ManifestRefused as error:
        _refused(store, source, error, max(d.version for d in newer))
        return None
    by_version = {d.version: data for d, data in zip(parsed, documents, strict=True)}
    for document in sorted(newer, key=lambda d: d.version):
        keep_manifest(store, document.version, by_version[document.version], source)
    log.info("manifest version %d trusted (from %s)", newest.version, source, extra={"peer": source})
    return newest
