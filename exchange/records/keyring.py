"""A node's record-signing keys, and which of them signs now.

A node holds its current key (``signing.key``) and the keys a rotation retired
(``retired-signing-keys/*.key``, kept so that a rotation not yet published in the
manifest changes nothing). Which key signs is the manifest's to say, asked at every
signature: its agency's current key (``Partner.current_key``: valid now, not
compromised, the newest), if the node holds it; otherwise the newest published,
uncompromised key the node holds (a rotation whose manifest is not adopted yet). A
node that holds no such key signs nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.core.manifest import Manifest, SigningKey
from exchange.errors import ConfigError
from exchange.records.envelope import Signer
from exchange.v1 import records_pb2

__all__ = ["CURRENT_KEY", "RETIRED_KEYS", "KeyRing", "Seals", "raw_public_key"]

CURRENT_KEY = "signing.key"
RETIRED_KEYS = "retired-signing-keys"


class Seals(Protocol):
    """What signs a node's records: a :class:`Signer`, or a :class:`KeyRing` choosing one."""

    def seal(self, payload_type: str, payload: bytes) -> records_pb2.Envelope: ...


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: a record-signing key must be Ed25519")
    return key


class KeyRing:
    """The agency's private signing keys (by raw public key) and the manifest that picks one."""

    def __init__(self, agency: str, keys: Mapping[bytes, Ed25519PrivateKey], manifest: Callable[[], Manifest],
                 *, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 agency_dir: Path | None = None) -> None:
        self.agency = agency
        self._keys = dict(keys)
        self._manifest = manifest
        self._clock = clock
        self._agency_dir = agency_dir
        self._looked_for: set[bytes] = set()  # current keys not found on disk (looked for once each)

    @staticmethod
    def _read(agency_dir: Path) -> dict[bytes, Ed25519PrivateKey]:
        paths = [agency_dir / CURRENT_KEY, *sorted((agency_dir / RETIRED_KEYS).glob("*.key"))]
        keys = {}
        for path in paths:
            key = _load(path)
            keys[raw_public_key(key)] = key
        return keys

    @classmethod
    def load(cls, agency: str, agency_dir: Path, manifest: Callable[[], Manifest]) -> KeyRing:
        """``signing.key`` and every retired key beside it (read again when the manifest
        names a current key not among them: ``keys rotate`` ran while the node was up)."""
        return cls(agency, cls._read(agency_dir), manifest, agency_dir=agency_dir)

    def signer(self) -> Signer:
        """The signer of the key the manifest names current (ConfigError if none is held)."""
        partner = self._manifest().partner(self.agency)
        chosen: SigningKey | None = partner.current_key(self._clock())
        if (chosen is not None and chosen.public_key not in self._keys and self._agency_dir is not None
                and chosen.public_key not in self._looked_for):
            self._looked_for.add(chosen.public_key)
            # A key file mid-write or unreadable: sign with a held key, as below.
            with contextlib.suppress(ConfigError):
                self._keys = {**self._keys, **self._read(self._agency_dir)}
        if chosen is None or chosen.public_key not in self._keys:
            held = [(k.not_before, i, k) for i, k in enumerate(partner.keys)
                    if k.public_key in self._keys and not k.compromised]
            chosen = max(held, key=lambda t: t[:2], default=(None, 0, None))[2]
        if chosen is None:
            raise ConfigError(f"none of this node's signing keys is an uncompromised signing key of {self.agency} "
                              "in the manifest")
        return Signer(self.agency, chosen.key_id, self._keys[chosen.public_key])

    @property
    def key_id(self) -> str:
        return self.signer().key_id

    def seal(self, payload_type: str, payload: bytes) -> records_pb2.Envelope:
        return self.signer().seal(payload_type, payload)
