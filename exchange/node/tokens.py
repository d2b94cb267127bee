"""Opaque tokens: page tokens (and, for sync, cursors) sealed by the node.

AES-GCM with a key that never leaves the node: the caller can neither read a
token (it would learn the position of records it cannot see) nor forge one.
The associated data binds a token to who asked and what they asked, so one
caller's token is worthless for another caller or another query.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange.errors import InvalidInput

_NONCE = 12


class Sealer:
    def __init__(self, key: bytes, purpose: bytes) -> None:
        self._aead = AESGCM(key)
        self._purpose = purpose

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, self._purpose + b"\x00" + context)

    def open(self, token: bytes, context: bytes) -> bytes | None:
        if len(token) < _NONCE + 16:
            return None
        try:
            return self._aead.decrypt(token[:_NONCE], token[_NONCE:], self._purpose + b"\x00" + context)
        except InvalidTag:
            return None


class PageTokens:
    """Search page tokens: the (issued_at, rid) of the last record a page showed."""

    _FORMAT = ">qq"

    def __init__(self, key: bytes) -> None:
        self._sealer = Sealer(key, b"exchange page token v1")

    def encode(self, position: tuple[int, int], context: bytes) -> str:
        sealed = self._sealer.seal(struct.pack(self._FORMAT, *position), context)
        return base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("=")

    def decode(self, token: str, context: bytes) -> tuple[int, int]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raw = b""
        plain = self._sealer.open(raw, context)
        if plain is None or len(plain) != struct.calcsize(self._FORMAT):
            raise InvalidInput("page_token", "not a page token issued for this query")
        issued_at, rid = struct.unpack(self._FORMAT, plain)
        return int(issued_at), int(rid)
